"""The training data of the speaker encoder: a manifest's utterances with
their speakers, the per-speaker train / held-out split, and random crops.

    utterances = load_utterances(manifest, sample_rate, min_samples)
    train, heldout = split_utterances(utterances, 0.2, seed)
    waves, labels = CropSampler(train, labels, crop, batch, data, seed).batch(k)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import ml_collections
import numpy as np

from e2s_tf import audio as audio_lib
from e2s_tf import manifest as manifest_lib


@dataclasses.dataclass
class Utterance:
  """One manifest item with its audio.

  Attributes:
    id: the manifest id.
    speaker: the speaker name.
    audio: `[samples]` float32 at the config's sample rate.
  """

  id: str
  speaker: str
  audio: np.ndarray


def load_utterances(manifest: str, sample_rate: int, min_samples: int,
                    log: Callable[[str], None] = print) -> list[Utterance]:
  """Loads the manifest's items (their `start`/`end` regions) with speakers.

  Items shorter than `min_samples` are skipped (and counted in the log).

  Raises:
    manifest.ManifestError: an item without a `speaker`.
    audio_lib.AudioError: unreadable audio (the message names the file).
  """
  items = manifest_lib.read_manifest(manifest)
  out, short = [], []
  for item in items:
    speaker = item.get("speaker")
    if not isinstance(speaker, str) or not speaker:
      raise manifest_lib.ManifestError(
          f"{manifest}: item {item['id']!r} has no 'speaker': the speaker "
          "encoder trains on speaker labels")
    audio = audio_lib.load_audio(item["audio"], sample_rate, item.get("start"),
                                 item.get("end"))
    if audio.shape[0] < min_samples:
      short.append(item["id"])
      continue
    out.append(Utterance(item["id"], speaker, audio))
  if short:
    log(f"skipped {len(short)} item(s) shorter than {min_samples} samples: "
        f"{short[:5]}{' ...' if len(short) > 5 else ''}")
  if not out:
    raise ValueError(f"{manifest}: no usable items")
  return out


def split_utterances(utterances: Sequence[Utterance], heldout_fraction: float,
                     seed: int, heldout_ids: Optional[Sequence[str]] = None
                     ) -> tuple[list[Utterance], list[Utterance]]:
  """Splits utterances per speaker into (train, held-out), deterministically.

  Args:
    utterances: the items.
    heldout_fraction: of each speaker's utterances, round(fraction * n) are
      held out, at most n - 1 (every speaker keeps one for training).
    seed: seed of the per-speaker choice.
    heldout_ids: the held-out item ids instead (every speaker must keep a
      training item); ids absent from `utterances` are an error.

  Returns:
    (train, held-out), each sorted by id.
  """
  by_speaker: dict[str, list[Utterance]] = {}
  for u in sorted(utterances, key=lambda u: u.id):
    by_speaker.setdefault(u.speaker, []).append(u)
  if heldout_ids is not None:
    wanted = set(heldout_ids)
    missing = sorted(wanted - {u.id for u in utterances})
    if missing:
      raise ValueError(f"held-out ids not among the usable items: "
                       f"{missing[:5]}")
    train = [u for u in utterances if u.id not in wanted]
    heldout = [u for u in utterances if u.id in wanted]
    empty = sorted(set(by_speaker) - {u.speaker for u in train})
    if empty:
      raise ValueError(f"speakers {empty} have no training utterance left")
  else:
    if not 0.0 <= heldout_fraction < 1.0:
      raise ValueError(f"heldout_fraction must be in [0, 1), got "
                       f"{heldout_fraction}")
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for speaker in sorted(by_speaker):
      group = by_speaker[speaker]
      order = rng.permutation(len(group))
      count = min(int(round(heldout_fraction * len(group))), len(group) - 1)
      chosen = set(order[:count].tolist())
      for i, u in enumerate(group):
        (heldout if i in chosen else train).append(u)
  return (sorted(train, key=lambda u: u.id),
          sorted(heldout, key=lambda u: u.id))


class CropSampler:
  """Random training crops, balanced over speakers, with gain and noise.

  Batch `k` is a pure function of (seed, k): a resumed run sees the batches
  an uninterrupted one would have.
  """

  def __init__(self, utterances: Sequence[Utterance], labels: Sequence[int],
               crop_samples: int, batch_size: int,
               data_config: ml_collections.ConfigDict, seed: int):
    self.audio = [u.audio for u in utterances]
    self.labels = np.asarray(labels, np.int32)
    self.by_label = [np.flatnonzero(self.labels == k)
                     for k in range(int(self.labels.max()) + 1)]
    self.by_label = [idx for idx in self.by_label if idx.size]
    self.crop_samples = int(crop_samples)
    self.batch_size = int(batch_size)
    self.data_config = data_config
    self.seed = int(seed)

  def _crop(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = self.crop_samples
    if audio.shape[0] < n:  # tile short utterances
      audio = np.tile(audio, -(-n // audio.shape[0]))
    start = int(rng.integers(0, audio.shape[0] - n + 1))
    return audio[start:start + n]

  def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(`[batch, crop_samples]` float32, `[batch]` int32 labels) of step k."""
    d = self.data_config
    rng = np.random.default_rng([self.seed, int(step)])
    waves = np.empty([self.batch_size, self.crop_samples], np.float32)
    labels = np.empty([self.batch_size], np.int32)
    for b in range(self.batch_size):
      group = self.by_label[int(rng.integers(len(self.by_label)))]
      index = int(group[int(rng.integers(group.size))])
      crop = self._crop(self.audio[index], rng)
      if d.gain_db:
        crop = crop * 10.0 ** (rng.uniform(-d.gain_db, d.gain_db) / 20.0)
      if rng.uniform() < d.noise_probability:
        rms = float(np.sqrt(np.mean(np.square(crop)))) or 1e-3
        snr = rng.uniform(*d.noise_snr_db)
        crop = crop + rng.normal(0.0, rms * 10.0 ** (-snr / 20.0), crop.shape)
      waves[b] = crop
      labels[b] = self.labels[index]
    return waves, labels
