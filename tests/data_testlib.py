"""Tiny TFRecord datasets for tests, written with the real schema.

`write_tiny_dataset` writes shards with `records.serialize_example` and a
consistent dataset_info.json (stats, length quantiles, splits, speakers, ...)
as tfrecords/README.md lists, so the input pipeline and everything after it
can run on a few kilobytes of data made inside the test.

Frames are labelled so tests can check which frames arrive where: in the
embedding, column 0 holds the frame index `t` and column 1 the item number
(its position in `TinyDataset.items[split]`, counted over all splits); the
other columns are seeded noise. The audio is seeded noise of each item's own
(as the records keep it: 16-bit), so a window of frames `[a, b)` must come
with the samples `item.audio[a * frame_step:]`, and the log-STFT is the one
the records give: `spectral.log_stft` of that audio, which differs from frame
to frame and from item to item.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from e2s_tf import export_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import train_lib
from e2s_tf.configs import testing as testing_config
from e2s_tf.preprocessing import stats as preprocess_stats

FRAME_COLUMN = 0
ITEM_COLUMN = 1
QUANTILE_LEVELS = tuple(round(q, 2) for q in np.linspace(0.0, 1.0, 11))


@dataclasses.dataclass(frozen=True)
class TinyItem:
  """One written item, raw (not normalised)."""
  id: str
  number: int
  embedding: np.ndarray  # [frames, dim]
  log_stft: np.ndarray  # [frames, bins], spectral.log_stft of the audio
  audio: np.ndarray  # [samples], as stored (16-bit)
  speaker: str
  speaker_index: int

  @property
  def length(self) -> int:
    return self.embedding.shape[0]


@dataclasses.dataclass(frozen=True)
class TinyDataset:
  data_dir: str
  info: dict
  items: dict[str, list[TinyItem]]
  stft: spectral.StftConfig

  def by_id(self) -> dict[str, TinyItem]:
    return {item.id: item for items in self.items.values() for item in items}


def tiny_stft(bins: int) -> spectral.StftConfig:
  """A grid with `bins` bins; the project default for the default count."""
  if bins == spectral.DEFAULT.num_bins:
    return spectral.DEFAULT
  if bins < 2:
    raise ValueError(f"need at least 2 bins, got {bins}")
  fft = 2 * (bins - 1)
  return spectral.StftConfig(frame_length=fft, frame_step=max(1, fft // 2),
                             fft_length=fft)


def lognormal_lengths(count: int, low: int = 60, high: int = 600,
                      seed: int = 0) -> list[int]:
  """`count` frame counts, log-normal, clipped to [low, high].

  The geometric mean sits midway (in log) between the bounds, and the bounds
  are two standard deviations away: lengths as varied as speech regions.
  """
  rng = np.random.default_rng(seed)
  mu = 0.5 * (np.log(low) + np.log(high))
  sigma = (np.log(high) - np.log(low)) / 4.0
  lengths = np.clip(np.round(np.exp(rng.normal(mu, sigma, count))), low, high)
  return [int(n) for n in lengths]


def _make_item(split: str, index: int, number: int, length: int, dim: int,
               stft: spectral.StftConfig, speakers: Sequence[str],
               rng: np.random.Generator) -> TinyItem:
  t = np.arange(length, dtype=np.float32)
  embedding = rng.normal(0.5, 2.0, (length, dim)).astype(np.float32)
  embedding[:, FRAME_COLUMN] = t
  embedding[:, ITEM_COLUMN] = number
  audio = records.stored_audio(
      rng.uniform(-0.9, 0.9, stft.num_samples(length)))
  log_stft = spectral.log_stft(audio, stft).numpy()
  assert log_stft.shape[0] == length
  speaker = speakers[number % len(speakers)] if speakers else ""
  return TinyItem(id=f"{split}-{index:04d}", number=number, embedding=embedding,
                  log_stft=log_stft, audio=audio, speaker=speaker,
                  speaker_index=speakers.index(speaker) if speakers else -1)


def write_tiny_dataset(tmp_path: Union[str, os.PathLike],
                       lengths_by_split: Mapping[str, Sequence[int]],
                       dim: int = 8,
                       bins: int = 9,
                       speakers: Union[int, Sequence[str], None] = None,
                       seed: int = 0,
                       num_shards: int = 2,
                       stft: Optional[spectral.StftConfig] = None
                       ) -> TinyDataset:
  """Writes shards and dataset_info.json for items of the given lengths.

  Args:
    tmp_path: output directory (created).
    lengths_by_split: e.g. {"train": [5, 9], "valid": [7]}: frames per item.
    dim: embedding dimensions (>= 2).
    bins: log-STFT bins (>= 2); 257 gives the project's default grid.
    speakers: a count (names spk0, spk1, ...) or names; items are dealt to
      them round-robin. None: no speakers.
    seed: seed of the noise columns.
    num_shards: shards per split (fewer when a split has fewer items).
    stft: the grid; default `tiny_stft(bins)`.

  Returns:
    the TinyDataset: directory, dataset_info, items per split, grid.
  """
  if dim < 2:
    raise ValueError(f"dim must be >= 2 (frame and item columns), got {dim}")
  stft = stft or tiny_stft(bins)
  if isinstance(speakers, int):
    speakers = [f"spk{i}" for i in range(speakers)]
  speakers = list(speakers or [])
  data_dir = os.fspath(tmp_path)
  os.makedirs(data_dir, exist_ok=True)
  rng = np.random.default_rng(seed)

  items, splits, number = {}, {}, 0
  for split, lengths in lengths_by_split.items():
    items[split] = []
    for index, length in enumerate(lengths):
      items[split].append(_make_item(split, index, number, int(length), dim,
                                     stft, speakers, rng))
      number += 1
    count = max(1, min(num_shards, len(lengths)))
    files = [records.shard_name(split, i, count) for i in range(count)]
    writers = [tf.io.TFRecordWriter(os.path.join(data_dir, f))
               for f in files]
    for i, item in enumerate(items[split]):
      writers[i % count].write(records.serialize_example(
          item.id, item.embedding, item.audio, item.length, item.speaker,
          item.speaker_index, embedding_dtype="float32"))
    for writer in writers:
      writer.close()
    frames = int(sum(lengths))
    splits[split] = {
        "num_examples": len(lengths),
        "num_frames": frames,
        "num_shards": count,
        "num_speakers": len({i.speaker for i in items[split] if i.speaker}),
        "num_audio_seconds": float(
            sum(stft.num_samples(int(n)) for n in lengths) / stft.sample_rate),
        "files": files,
    }

  train = items.get("train") or next(iter(items.values()))
  embedding = np.concatenate([i.embedding for i in train]).astype(np.float64)
  log_stft = np.concatenate([i.log_stft for i in train]).astype(np.float64)
  # As preprocess computes them: std floored (a one-item split has a constant
  # item column).
  embedding_mean, embedding_std = preprocess_stats.mean_and_std(
      embedding.sum(0), np.square(embedding).sum(0), embedding.shape[0])
  log_stft_mean, log_stft_std = preprocess_stats.mean_and_std(
      log_stft.sum(0), np.square(log_stft).sum(0), log_stft.shape[0])
  info = {
      "version": records.SCHEMA_VERSION,
      "record_format": {"audio": "pcm16", "embedding": "float32"},
      "stft": stft.to_dict(),
      "embedder": {"name": "tiny", "spec": "tiny", "dim": dim,
                   "grid": {"sample_rate": stft.sample_rate,
                            "frame_length": stft.frame_length,
                            "frame_step": stft.frame_step, "center": False},
                   "options": {}},
      "split_by": "utterance",
      "seed": seed,
      "speakers": speakers,
      "splits": splits,
      "stats": {
          "embedding_mean": embedding_mean.tolist(),
          "embedding_std": embedding_std.tolist(),
          "log_stft_mean": log_stft_mean.tolist(),
          "log_stft_std": log_stft_std.tolist(),
      },
      # As preprocess writes it: per split, {"0.0": frames, "0.1": ..., "1.0"}.
      "length_quantiles": {
          split: {str(q): float(np.quantile([i.length for i in split_items], q))
                  for q in QUANTILE_LEVELS}
          for split, split_items in items.items() if split_items},
      "rejected": {"count": 0, "by_reason": {},
                   "report": records.REJECTED_REPORT},
      "trimmed": {"count": 0, "frames": 0},
  }
  with open(os.path.join(data_dir, records.DATASET_INFO), "w") as f:
    json.dump(info, f, indent=1)
  return TinyDataset(data_dir=data_dir, info=info, items=items, stft=stft)


def train_and_export(model: str, data_dir: str, root, steps: int = 2,
                     griffin_lim_iterations: int = 4) -> str:
  """Trains the `testing:<model>` config `steps` steps on `data_dir` into
  `root/work` (no validation) and exports it to `root/export`; returns the
  export's path."""
  config = testing_config.get_config(model)
  config.train.num_steps = steps
  config.train.eval_every = 100
  work, export_dir = os.path.join(root, "work"), os.path.join(root, "export")
  train_lib.train(config, data_dir, work, log=lambda *_: None)
  export_lib.export(work, export_dir,
                    griffin_lim_iterations=griffin_lim_iterations)
  return export_dir
