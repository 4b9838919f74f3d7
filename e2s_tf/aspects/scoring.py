"""Scores every system's audio on the aspects: content, prosody, identity,
naturalness (e2s_tf.aspects.profile says what each metric means).

`score(items, audios, ...)` takes the evaluated items (their original
`audio`, `speaker`, `text`) and each system's reconstruction of each item,
and returns per system and item a dict of metric values, None where a
metric does not apply to that item (e.g. no voiced frame in common, audio
shorter than DNSMOS's minimum, no text to take phone targets from). The
originals are scored as the `reference` system where that means something:
what the judges make of the originals (their phone error rate, DNSMOS, the
speaker judge's level), not their distance to themselves.

Every judge and model is loaded once per call: the content judge (a CTC
phone recogniser, e2s_tf.train_content_judge), PocketSphinx (English words;
`word_judge="pocketsphinx"`), the speaker judge (e2s_tf.train_embedder) and
DNSMOS.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tqdm

from e2s_tf.aspects import identity
from e2s_tf.aspects.profile import REFERENCE

# The aspects `score` computes, in order.
ASPECT_NAMES = ("content", "prosody", "identity", "naturalness")
WORD_JUDGES = ("pocketsphinx",)


@dataclasses.dataclass
class Judges:
  """Who scores the aspects that need a judge.

  Attributes:
    content: export of e2s_tf.train_content_judge (phone error rates), or
      None.
    words: "pocketsphinx" (English word and character error rates), or None.
    speaker: export of e2s_tf.train_embedder (speaker cosine, identification,
      EER), or None.
  """
  content: Optional[str] = None
  words: Optional[str] = None
  speaker: Optional[str] = None


def _bar(total: int, desc: str, progress: bool):
  return tqdm.tqdm(total=total, desc=desc, unit="item", disable=not progress,
                   leave=False)


def _content(items, audios, judges: Judges, sample_rate: int, progress: bool,
             rows) -> None:
  """Phone (and word) error rates against the text's phones (n/a where an
  item has no text), and against the judge's transcript of the original
  (for every item: the only content metric of an item without text)."""
  from e2s_tf.aspects import content as content_lib  # pylint: disable=g-import-not-at-top
  systems = [REFERENCE] + list(audios)
  waves = {REFERENCE: [it["audio"] for it in items], **audios}
  if judges.content:
    from e2s_tf.content import export as judge_export  # pylint: disable=g-import-not-at-top
    from e2s_tf.content import g2p  # pylint: disable=g-import-not-at-top
    judge = judge_export.load_judge(judges.content)
    targets = []
    for it in items:
      try:
        targets.append(judge.phonemes(it["text"]) if it.get("text") else None)
      except g2p.G2PUnavailable:  # no G2P for the judge's language: n/a
        targets.append(None)
    with _bar(len(systems), "content: phones", progress) as bar:
      heard = {}
      for system in systems:
        heard[system] = judge.transcribe(waves[system])
        bar.update(1)
    for system in systems:
      for k, hyp in enumerate(heard[system]):
        row = rows[system][k]
        row["phone_error_rate"] = (content_lib.error_rate(targets[k], hyp)
                                   if targets[k] is not None else None)
        if system != REFERENCE:
          row["phone_error_rate_vs_original"] = content_lib.error_rate(
              heard[REFERENCE][k], hyp)
  if judges.words:
    if judges.words not in WORD_JUDGES:
      raise ValueError(f"--word_judge={judges.words}: unknown; have "
                       f"{list(WORD_JUDGES)}")
    recogniser = content_lib.PocketSphinx()
    heard = {}
    with _bar(len(items) * len(systems), "content: words", progress) as bar:
      for system in systems:
        heard[system] = []
        for wave in waves[system]:
          heard[system].append(recogniser.transcribe(wave, sample_rate))
          bar.update(1)
    for system in systems:
      for k, text in enumerate(heard[system]):
        row, said = rows[system][k], items[k].get("text") or ""
        rows[system][k]["transcript"] = text
        if said:
          row["word_error_rate"] = content_lib.word_error_rate(said, text)
          row["char_error_rate"] = content_lib.char_error_rate(said, text)
        else:
          row["word_error_rate"] = row["char_error_rate"] = None
        if system != REFERENCE:
          original = heard[REFERENCE][k]
          row["word_error_rate_vs_original"] = (
              content_lib.word_error_rate(original, text)
              if original else None)


def _prosody(items, audios, sample_rate, progress, rows) -> None:
  from e2s_tf.aspects import prosody  # pylint: disable=g-import-not-at-top
  with _bar(len(items) * (len(audios) + 1), "prosody", progress) as bar:
    tracks = []
    for it in items:  # each original is tracked once, for every system
      tracks.append(prosody.track_f0(it["audio"], sample_rate)
                    if np.all(np.isfinite(it["audio"])) else None)
      bar.update(1)
    for system, waves in audios.items():
      for k, (it, wave) in enumerate(zip(items, waves)):
        rows[system][k].update(prosody.prosody_metrics(
            it["audio"], wave, sample_rate, reference_track=tracks[k]))
        bar.update(1)


def _naturalness(items, audios, sample_rate, progress, rows) -> None:
  from e2s_tf.aspects import naturalness  # pylint: disable=g-import-not-at-top
  model = naturalness.Dnsmos()
  waves = {REFERENCE: [it["audio"] for it in items], **audios}
  with _bar(len(items) * len(waves), "naturalness", progress) as bar:
    for system, ws in waves.items():
      for k, wave in enumerate(ws):
        rows[system][k].update(model.score(wave, sample_rate))
        bar.update(1)


def _identity(items, audios, judge, enrol_items, rows) -> dict[str, Any]:
  per_system = identity.speaker_metrics(judge, enrol_items(), items, audios)
  eer = {}
  for system, values in per_system.items():
    for k, (cos, ok) in enumerate(zip(values["speaker_cosine"],
                                      values["speaker_id_correct"])):
      rows[system][k]["speaker_cosine"] = cos
      rows[system][k]["speaker_id_correct"] = ok
    eer[system] = values["speaker_eer"]
  return eer


def score(items: Sequence[Mapping[str, Any]],
          audios: Mapping[str, Sequence[np.ndarray]], sample_rate: int,
          judges: Judges, aspects: Sequence[str],
          enrol_items: Callable[[], Sequence[Mapping[str, Any]]],
          progress: bool = True) -> tuple[dict[str, list[dict[str, Any]]],
                                          dict[str, Any]]:
  """Scores `aspects` of every system (and of the originals).

  Args:
    items: the evaluated items (`audio`, `speaker`, `text`).
    audios: {system: [waveform per item]}, same item order.
    sample_rate: of every waveform.
    judges: the judges (an aspect whose judge is missing is not scored).
    aspects: a subset of ASPECT_NAMES.
    enrol_items: returns the train split's items (the speaker judge's
      enrolment), called only when identity is scored.
    progress: tqdm bars.

  Returns:
    (rows, extra): rows[system][k] the metric values of item k ("reference"
    included where an aspect scores the originals); extra = {"seconds":
    {aspect: wall seconds}, "speaker_eer": {system: EER or None}}.
  """
  unknown = sorted(set(aspects) - set(ASPECT_NAMES))
  if unknown:
    raise ValueError(f"unknown aspects {unknown}; have {list(ASPECT_NAMES)}")
  rows = {s: [{} for _ in items] for s in [REFERENCE] + list(audios)}
  seconds, extra = {}, {}
  for aspect in ASPECT_NAMES:
    if aspect not in aspects:
      continue
    start = time.perf_counter()
    if aspect == "content" and (judges.content or judges.words):
      _content(items, audios, judges, sample_rate, progress, rows)
    elif aspect == "prosody":
      _prosody(items, audios, sample_rate, progress, rows)
    elif aspect == "naturalness":
      _naturalness(items, audios, sample_rate, progress, rows)
    elif aspect == "identity" and judges.speaker:
      extra["speaker_eer"] = _identity(items, audios, judges.speaker,
                                       enrol_items, rows)
    else:
      continue
    seconds[aspect] = round(time.perf_counter() - start, 2)
  extra["seconds"] = seconds
  return rows, extra
