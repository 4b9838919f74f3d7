"""The content judge's training data: a manifest's items with their audio
and espeak-ng phones, the train / held-out split, and length buckets.

    utterances, skipped = load_utterances(manifest, stft, frame_stack, "en-us")
    train, heldout = split_utterances(utterances, 0.2, seed)
    sampler = BucketSampler(train, phone_index, batch_size, jitter, seed)
    waves, lengths, labels, label_lengths = sampler.batch(k)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Mapping, Optional, Sequence

import numpy as np
import tqdm

from e2s_tf import audio as audio_lib
from e2s_tf import manifest as manifest_lib
from e2s_tf import spectral
from e2s_tf.content import g2p
from e2s_tf.content import network

# Why an item was not used (the keys of `load_utterances`' counts).
NO_TEXT = "no_text"
NO_PHONES = "no_phones"
TOO_SHORT = "too_short"


@dataclasses.dataclass
class Utterance:
  """One manifest item with its audio and phones.

  Attributes:
    id: the manifest id.
    audio: `[samples]` float32 at the config's sample rate.
    phones: espeak-ng's phones of the item's `text`.
    text: the item's `text`.
  """

  id: str
  audio: np.ndarray
  phones: list[str]
  text: str


def ctc_frames_needed(labels: Sequence[Hashable]) -> int:
  """The fewest CTC frames that can emit `labels`: one per label and one
  blank between each pair of equal neighbours."""
  return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def load_utterances(manifest: str, stft_config: spectral.StftConfig,
                    frame_stack: int, language: str,
                    log: Callable[[str], None] = print,
                    progress: bool = True
                    ) -> tuple[list[Utterance], dict[str, list[str]]]:
  """Loads the manifest's items that have a transcript (their `start`/`end`
  regions), with espeak-ng's phones of the `text`.

  Skipped, counted and logged (never an error): items without a `text` (or
  an empty one), texts without phones ("..."), and audio too short for its
  phones (fewer network frames than CTC needs).

  Returns:
    (utterances, {reason: [item ids]} of the skipped items).

  Raises:
    manifest.ManifestError: no item has a `text`.
    g2p.G2PUnavailable: espeak-ng has no G2P for `language` (before any
      audio is read).
    audio_lib.AudioError: unreadable audio (the message names the file).
    ValueError: no usable item.
  """
  items = manifest_lib.read_manifest(manifest)
  skipped: dict[str, list[str]] = {NO_TEXT: [], NO_PHONES: [], TOO_SHORT: []}
  texted = []
  for item in items:
    text = item.get("text")
    if isinstance(text, str) and text.strip():
      texted.append(item)
    else:
      skipped[NO_TEXT].append(item["id"])
  if not texted:
    raise manifest_lib.ManifestError(
        f"{manifest}: none of its {len(items)} items has a 'text': the "
        "content judge trains on transcripts (the phones of each item's "
        "'text')")
  phones = g2p.batch_phonemes([item["text"] for item in texted], language)
  out = []
  for item, item_phones in zip(
      tqdm.tqdm(texted, desc="load", unit="item", disable=not progress),
      phones):
    if not item_phones:
      skipped[NO_PHONES].append(item["id"])
      continue
    audio = audio_lib.load_audio(item["audio"], stft_config.sample_rate,
                                 item.get("start"), item.get("end"))
    frames = network.output_frames(audio.shape[0], stft_config, frame_stack)
    if frames < ctc_frames_needed(item_phones):
      skipped[TOO_SHORT].append(item["id"])
      continue
    out.append(Utterance(item["id"], audio, item_phones, item["text"]))
  reasons = {NO_TEXT: "without a 'text'", NO_PHONES: "whose text has no "
             "phones", TOO_SHORT: "too short for their phones"}
  for reason, ids in skipped.items():
    if ids:
      log(f"skipped {len(ids)} item(s) {reasons[reason]}: {ids[:5]}"
          f"{' ...' if len(ids) > 5 else ''}")
  if not out:
    raise ValueError(f"{manifest}: no usable items (all {len(items)} were "
                     "skipped)")
  return out, skipped


def split_utterances(utterances: Sequence[Utterance], heldout_fraction: float,
                     seed: int, heldout_ids: Optional[Sequence[str]] = None
                     ) -> tuple[list[Utterance], list[Utterance]]:
  """Splits utterances into (train, held-out), deterministically.

  Args:
    utterances: the items.
    heldout_fraction: round(fraction * n) items are held out, chosen by
      `seed` (at most n - 1: one stays for training).
    seed: seed of the choice.
    heldout_ids: the held-out item ids instead (ids absent from
      `utterances` are an error; one must stay for training).

  Returns:
    (train, held-out), each sorted by id.
  """
  ordered = sorted(utterances, key=lambda u: u.id)
  if heldout_ids is not None:
    wanted = set(heldout_ids)
    missing = sorted(wanted - {u.id for u in ordered})
    if missing:
      raise ValueError(f"held-out ids not among the usable items: "
                       f"{missing[:5]}")
    chosen = {i for i, u in enumerate(ordered) if u.id in wanted}
  else:
    if not 0.0 <= heldout_fraction < 1.0:
      raise ValueError(f"heldout_fraction must be in [0, 1), got "
                       f"{heldout_fraction}")
    count = min(int(round(heldout_fraction * len(ordered))), len(ordered) - 1)
    order = np.random.default_rng(seed).permutation(len(ordered))
    chosen = set(order[:count].tolist())
  train = [u for i, u in enumerate(ordered) if i not in chosen]
  if not train:
    raise ValueError("no training item left after holding out "
                     f"{len(chosen)} items")
  return train, [u for i, u in enumerate(ordered) if i in chosen]


def phone_inventory(utterances: Sequence[Utterance]) -> list[str]:
  """The sorted phones of the utterances (class i + 1 of the network)."""
  return sorted({p for u in utterances for p in u.phones})


def pad_waveforms(waveforms: Sequence[np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Waveforms `[samples_i]` -> (`[batch, max samples]` float32 padded with
  0, `[batch]` int32 lengths)."""
  lengths = np.array([w.shape[0] for w in waveforms], np.int32)
  out = np.zeros([len(waveforms), int(lengths.max(initial=0))], np.float32)
  for i, w in enumerate(waveforms):
    out[i, :w.shape[0]] = w
  return out, lengths


def pad_labels(labels: Sequence[Sequence[int]]
               ) -> tuple[np.ndarray, np.ndarray]:
  """Label sequences -> (`[batch, max length]` int32 padded with 0,
  `[batch]` int32 lengths)."""
  lengths = np.array([len(x) for x in labels], np.int32)
  out = np.zeros([len(labels), int(lengths.max(initial=0))], np.int32)
  for i, x in enumerate(labels):
    out[i, :len(x)] = x
  return out, lengths


class BucketSampler:
  """Batches of whole utterances of similar length, padded to the longest.

  Each epoch sorts the utterances by length times a random factor in
  [1 - jitter, 1 + jitter], cuts the order into batches of `batch_size`
  (the last may be smaller) and shuffles the batches. Batch `k` is a pure
  function of (seed, k): a resumed run sees the batches an uninterrupted one
  would have.
  """

  def __init__(self, utterances: Sequence[Utterance],
               phone_index: Mapping[str, int], batch_size: int,
               jitter: float, seed: int):
    if batch_size < 1:
      raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= jitter < 1.0:
      raise ValueError(f"data.bucket_jitter must be in [0, 1), got {jitter}")
    self.audio = [u.audio for u in utterances]
    self.labels = [[phone_index[p] + 1 for p in u.phones] for u in utterances]
    self.lengths = np.array([a.shape[0] for a in self.audio], np.float64)
    self.batch_size = min(int(batch_size), len(utterances))
    self.jitter = float(jitter)
    self.seed = int(seed)
    self.batches_per_epoch = -(-len(utterances) // self.batch_size)
    self._epoch: Optional[tuple[int, list[np.ndarray]]] = None

  def _plan(self, epoch: int) -> list[np.ndarray]:
    if self._epoch is None or self._epoch[0] != epoch:
      rng = np.random.default_rng([self.seed, int(epoch)])
      keys = self.lengths * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter,
                                        self.lengths.shape)
      order = np.argsort(keys, kind="stable")
      batches = [order[i:i + self.batch_size]
                 for i in range(0, order.size, self.batch_size)]
      self._epoch = (epoch, [batches[i]
                             for i in rng.permutation(len(batches))])
    return self._epoch[1]

  def batch(self, step: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch `step`: (`[B, S]` float32 waveforms, `[B]` int32 lengths,
    `[B, L]` int32 labels (phone index + 1), `[B]` int32 label lengths)."""
    epoch, k = divmod(int(step), self.batches_per_epoch)
    indices = self._plan(epoch)[k]
    waves, lengths = pad_waveforms([self.audio[i] for i in indices])
    labels, label_lengths = pad_labels([self.labels[i] for i in indices])
    return waves, lengths, labels, label_lengths
