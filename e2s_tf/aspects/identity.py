"""Identity: does a reconstruction still sound like its speaker?

Scored by a *judge*, a speaker encoder exported by e2s_tf.train_embedder
(`evaluate --speaker_judge=EXPORT`; by default the dataset's embedder when it
is such an encoder). Per system and item:

- `speaker_cosine`: cosine between the judge's utterance embeddings of the
  original and of the reconstruction;
- `speaker_id_correct`: closed-set identification of the reconstruction
  against per-speaker centroids enrolled from the train split's originals
  (its mean is `speaker_id_accuracy`); None (n/a) for an item without a
  speaker or whose speaker the train split does not have (a split by
  speaker holds them out: there is no centroid to find).

Per system, `speaker_eer`: the equal error rate of verification trials
"reconstruction of item i against the original of item j", a target trial
when the two speakers are the same (i = j included: the pair the attack on
an embedding cares most about) and a non-target trial otherwise, scored by
the judge's cosine. For the originals (`reference`) the trials are the pairs
i != j of originals: the judge's own level on this split.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from e2s_tf.aspects.profile import REFERENCE


def equal_error_rate(target_scores: Sequence[float],
                     nontarget_scores: Sequence[float]) -> Optional[float]:
  """The EER of a verification score: where false rejections of targets and
  false acceptances of non-targets are equally frequent.

  The threshold sweeps every score; between the two thresholds where the
  miss rate crosses the false-alarm rate the EER is the mean of the two rates
  at the crossing (linear interpolation of the ROC's steps). None when either
  set is empty or a score is not finite.
  """
  target = np.asarray(target_scores, np.float64).reshape(-1)
  nontarget = np.asarray(nontarget_scores, np.float64).reshape(-1)
  if target.size == 0 or nontarget.size == 0 or not (
      np.all(np.isfinite(target)) and np.all(np.isfinite(nontarget))):
    return None
  thresholds = np.unique(np.concatenate([target, nontarget]))
  # Accept when score >= threshold; one more threshold above every score.
  thresholds = np.append(thresholds, np.inf)
  miss = np.searchsorted(np.sort(target), thresholds, side="left") / target.size
  false_alarm = 1.0 - np.searchsorted(np.sort(nontarget), thresholds,
                                      side="left") / nontarget.size
  # miss rises and false_alarm falls with the threshold: find the crossing.
  k = int(np.argmax(miss >= false_alarm))
  if k == 0:
    return float(0.5 * (miss[0] + false_alarm[0]))
  # Between thresholds k-1 (miss < fa) and k (miss >= fa): the rates' means
  # at both ends, whichever pair is closer to equal.
  before = (miss[k - 1], false_alarm[k - 1])
  after = (miss[k], false_alarm[k])
  best = min((before, after), key=lambda p: abs(p[0] - p[1]))
  return float(0.5 * (best[0] + best[1]))


def trial_scores(system_embeddings: np.ndarray,
                 original_embeddings: np.ndarray, labels: Sequence[Any],
                 same_item: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Target and non-target cosine scores of every (system i, original j).

  Args:
    system_embeddings: `[items, E]` the judge's embeddings of one system's
      audio.
    original_embeddings: `[items, E]` of the originals, same item order.
    labels: `[items]` speakers.
    same_item: include the pairs i = j (False for originals vs originals).

  Items without a speaker ("") take part only in their own pair i = j.
  """
  a = _unit(system_embeddings)
  b = _unit(original_embeddings)
  scores = a @ b.T
  labels = np.asarray([str(x) for x in labels])
  n = len(labels)
  # An item without a speaker ("") is in no trial but its own (i = j): two
  # unlabelled items may or may not share a voice.
  known = labels != ""
  both_known = known[:, None] & known[None, :]
  diagonal = np.eye(n, dtype=bool)
  target = (labels[:, None] == labels[None, :]) & both_known & ~diagonal
  if same_item:
    target |= diagonal
  nontarget = (labels[:, None] != labels[None, :]) & both_known
  return scores[target], scores[nontarget]


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def speaker_metrics(judge_dir: str, enrol_items: Sequence[Mapping[str, Any]],
                    items: Sequence[Mapping[str, Any]],
                    audios: Mapping[str, Sequence[np.ndarray]]
                    ) -> dict[str, dict[str, Any]]:
  """Every system's speaker metrics (see the module docstring).

  Args:
    judge_dir: the speaker encoder export (e2s_tf.train_embedder).
    enrol_items: the train split's items (with `audio` and `speaker`), which
      enrol the speakers.
    items: the evaluated items (with `audio` and `speaker`).
    audios: {system: [waveform per item]}.

  Returns:
    {system: {"speaker_cosine": [per item], "speaker_id_correct": [per item],
    "speaker_eer": float or None}}, with "reference" (the originals) first.
  """
  from e2s_tf.speaker import export as speaker_export  # pylint: disable=g-import-not-at-top
  from e2s_tf.speaker import identification  # pylint: disable=g-import-not-at-top
  encoder = speaker_export.load_encoder(judge_dir)
  enrol_items = [it for it in enrol_items if it.get("speaker")]
  if not enrol_items:
    raise ValueError("identity: the train split has no item with a speaker "
                     "to enrol; leave identity out (--aspects) or give "
                     "speakers in the manifest")
  enrolment = identification.enroll(
      encoder.utterance_embeddings([it["audio"] for it in enrol_items]),
      [it["speaker"] for it in enrol_items])
  labels = [it["speaker"] for it in items]
  enrolled = {str(it["speaker"]) for it in enrol_items}
  reference = encoder.utterance_embeddings([it["audio"] for it in items])
  out = {}
  for system, waves in [(REFERENCE, None)] + list(audios.items()):
    emb = reference if waves is None else encoder.utterance_embeddings(waves)
    predicted = identification.identify(emb, enrolment)
    target, nontarget = trial_scores(emb, reference, labels,
                                     same_item=waves is not None)
    out[system] = {
        "speaker_cosine": [float(c) for c in
                           identification.cosine(reference, emb)],
        "speaker_id_correct": [
            float(p == l) if l and str(l) in enrolled else None
            for p, l in zip(predicted, labels)],
        "speaker_eer": equal_error_rate(target, nontarget)}
  return out
