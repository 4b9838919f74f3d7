"""Manifest -> train/valid/test TFRecord shards + dataset_info.json.

One per-item function (`process_item`, held with its embedder by an
`ItemProcessor`) turns a manifest item, or a piece of one, into a serialised
example or a rejection. A run goes in four steps, shared by the local and the
Beam runner:

1. `plan_preprocess` checks everything that can be checked without touching
   `out_dir`: the settings, the manifest, the embedder and its options, the
   split (a bad one fails here, and nothing is written or deleted).
2. `open_output` locks `out_dir` for the run (`fileio.FolderLock`: a second
   run fails at once, naming the first) and looks at what is there: the same
   manifest and settings already complete -> nothing to do; another dataset
   -> refused without `overwrite`.
3. `prepare` learns what needs the data (an npy embedder's dimension), cuts
   items longer than `max_item_seconds` into pieces (`plan_pieces`), and
   fixes the shards. `run_preprocess` then runs the tasks over a process
   pool and writes the examples to shards under temporary names
   (`<split>-NNNNN-of-NNNNN.tfrecord.tmp`) while adding every result to a
   `Summary`.
4. `finish` checks the run and writes the reports and dataset_info.json,
   also under temporary names; only then does it replace the previous
   dataset (`commit`): its dataset_info.json goes first, the new files take
   their names, files of this program's names that the new dataset does not
   list go, and the new dataset_info.json comes last. A folder with a
   dataset_info.json is complete, and until the new one is in place the
   previous complete dataset stays as it was.

Only this program's files are ever deleted: shards by the names
`records.shard_name` makes, its reports and its temporaries (`is_own_file`).
A failed run (an error, a full disk, too many rejections) removes its
temporaries and leaves the previous dataset intact. `e2s_tf.beam_preprocess`
runs steps 3 and 4 as an Apache Beam pipeline.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import time
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tqdm

from e2s_tf import audio as audio_lib
from e2s_tf import embedders
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.embedders import registry as embedder_registry

QUANTILES = tuple(round(q, 2) for q in np.linspace(0.0, 1.0, 11))
SPLIT_MODES = ("speaker", "utterance")
# Rejection reasons (the keys of dataset_info["rejected"]["by_reason"]).
REASONS = ("missing_audio", "unreadable_audio", "empty_audio", "too_short", "non_finite",
           "embedding_error", "wrong_dimension", "length_mismatch")


# Items longer than this are cut into pieces at pauses (--max_item_seconds).
# 30 s is above nearly every utterance of the usual corpora (LibriSpeech and
# LibriTTS cut theirs at 35 s, most are under 20 s; VCTK and Common Voice
# under 15 s), so they stay whole, while a long recording costs what 30 s do:
# about 50 MiB above the program's own ~700 MiB, against 1.2 GiB more for a
# 10-minute item in one piece (measured with `peak_rss_mib`).
DEFAULT_MAX_ITEM_SECONDS = 30.0
# The shortest limit allowed (0 turns splitting off).
MIN_MAX_ITEM_SECONDS = 1.0
# Each cut is searched in the last fifth of its nominal piece.
CUT_WINDOW_FRACTION = 0.2
PIECE_SEPARATOR = "/part-"

# This program's files in out_dir besides the shards (see `is_own_file`).
PIECES_REPORT = "pieces.jsonl"
FAILED_REPORT = "rejected.failed.jsonl"
TMP = ".tmp"
_SHARD_PATTERN = re.compile(
    r"(%s)-\d{5,}-of-\d{5,}%s(%s)?" % ("|".join(records.SPLITS),
                                      re.escape(records.SHARD_SUFFIX),
                                      re.escape(TMP)))
# The Beam path's per-run totals (beam_preprocess.summary_path, a temporary).
BEAM_SUMMARY = "beam_summary.json"
_OWN_REPORTS = (records.DATASET_INFO, records.REJECTED_REPORT, PIECES_REPORT,
                FAILED_REPORT, BEAM_SUMMARY)


class PreprocessError(RuntimeError):
  """The run as a whole cannot produce a usable dataset."""


def is_own_file(name: str) -> bool:
  """Whether `name` (in out_dir) is one this program writes: a shard
  (`<split>-NNNNN-of-NNNNN.tfrecord`, or its `.tmp`), dataset_info.json, a
  report, or the temporary of one. Nothing else is ever deleted."""
  if _SHARD_PATTERN.fullmatch(name):
    return True
  base = name[:-len(TMP)] if name.endswith(TMP) else name
  return base in _OWN_REPORTS


@dataclasses.dataclass
class ItemResult:
  """What `process_item` returns for one manifest item."""
  item_id: str
  split: str = ""
  example: Optional[bytes] = None
  reason: Optional[str] = None        # one of REASONS when rejected
  detail: str = ""
  num_frames: int = 0
  num_samples: int = 0
  trimmed_frames: int = 0
  # For a piece of a longer item: the item's id and the piece's region (s).
  source: str = ""
  start: Optional[float] = None
  end: Optional[float] = None
  # Sufficient statistics (float64), filled for accepted items.
  embedding_sum: Optional[np.ndarray] = None
  embedding_sumsq: Optional[np.ndarray] = None
  log_stft_sum: Optional[np.ndarray] = None
  log_stft_sumsq: Optional[np.ndarray] = None

  @property
  def ok(self) -> bool:
    """Accepted (the Beam path drops `example` once it is written)."""
    return self.reason is None


def _reject(item, reason, detail) -> ItemResult:
  return ItemResult(item_id=str(item.get("id")), split=item.get("_split", ""),
                    reason=reason, detail=detail)


def process_item(item: Mapping[str, Any], embedder: embedders.Embedder,
                 config: spectral.StftConfig, frame_tolerance: int = 0,
                 speaker_index: int = -1) -> ItemResult:
  """Turns one manifest item into a serialised example, or a rejection.

  Args:
    item: manifest entry with absolute `audio` (and `embedding`) paths,
      optional `start`/`end` seconds and `speaker`.
    embedder: the embedder (declares its grid; must match `config`'s frames).
    config: the STFT grid.
    frame_tolerance: at most this many trailing frames may be trimmed from the
      longer stream when the embedding and STFT frame counts differ.
    speaker_index: the item's index in the speaker vocabulary, -1 if none.
  """
  item_id = str(item["id"])
  piece = item.get("_piece")
  try:
    if piece is not None:
      item = resolve_piece(item, config)
    audio = audio_lib.load_audio(item["audio"], config.sample_rate,
                                 item.get("start"), item.get("end"))
  except audio_lib.AudioError as e:
    text = str(e)
    if not os.path.exists(item["audio"]):
      reason = "missing_audio"
    elif "no samples" in text or "empty" in text.lower():
      reason = "empty_audio"
    else:
      reason = "unreadable_audio"
    return _reject(item, reason, text)
  if audio.size == 0:
    return _reject(item, "empty_audio", f"{item['audio']}: no samples")
  if not np.all(np.isfinite(audio)):
    return _reject(item, "non_finite", f"{item['audio']}: NaN/Inf samples")
  num_frames = config.num_frames(audio.shape[0])
  if num_frames == 0:
    return _reject(item, "too_short",
                   f"{item['audio']}: {audio.shape[0]} samples, shorter than "
                   f"one frame ({config.frame_length})")
  try:
    embedding = np.asarray(embedder.embed(audio, dict(item)), np.float32)
  except embedders.EmbedderError as e:
    text = str(e).lower()
    reason = "wrong_dimension" if "dim" in text else "embedding_error"
    if "finite" in text or "nan" in text:
      reason = "non_finite"
    return _reject(item, getattr(e, "reason", None) or reason, str(e))
  if embedding.ndim != 2 or embedding.shape[1] != embedder.dim:
    return _reject(item, "wrong_dimension",
                   f"embedding of shape {embedding.shape}, expected "
                   f"[T, {embedder.dim}]")
  if piece is not None and not embedder.needs_audio:
    # Precomputed embeddings belong to the whole item: this piece's frames
    # start at its first sample's frame (cuts lie on the frame grid).
    first = item["_piece"]["first_frame"]
    last = (None if piece["index"] == piece["count"] - 1 else
            first + int(embedder.grid.num_frames(audio.shape[0])))
    embedding = embedding[first:last]
  if not np.all(np.isfinite(embedding)):
    return _reject(item, "non_finite", "embedding has NaN/Inf values")
  log_stft = spectral.log_stft(audio, config).numpy()
  t_emb, t_stft = embedding.shape[0], log_stft.shape[0]
  trimmed = abs(t_emb - t_stft)
  if trimmed > frame_tolerance:
    return _reject(item, "length_mismatch",
                   f"embedding has {t_emb} frames, STFT has {t_stft} "
                   f"(--frame_tolerance={frame_tolerance})")
  frames = min(t_emb, t_stft)
  if frames == 0:
    return _reject(item, "too_short", "no frames left after trimming")
  embedding, log_stft = embedding[:frames], log_stft[:frames]
  audio = audio[:config.num_samples(frames)]
  e64, s64 = embedding.astype(np.float64), log_stft.astype(np.float64)
  return ItemResult(
      item_id=item_id, split=item.get("_split", ""),
      example=records.serialize_example(
          item_id, embedding, log_stft, audio,
          speaker=item.get("speaker") or "", speaker_index=speaker_index),
      num_frames=frames, num_samples=int(audio.shape[0]),
      trimmed_frames=trimmed,
      source=piece["source"] if piece is not None else "",
      start=item.get("start") if piece is not None else None,
      end=item.get("end") if piece is not None else None,
      embedding_sum=e64.sum(0), embedding_sumsq=np.square(e64).sum(0),
      log_stft_sum=s64.sum(0), log_stft_sumsq=np.square(s64).sum(0))


# ----------------------------------------------------------------------------
# Pieces of long items.


def piece_ids(item_id: str, count: int) -> list[str]:
  """The ids of the `count` pieces of `item_id`: `<id>/part-000`, ...

  Raises:
    fileio.InvalidItemId: a piece id is not a valid id (too long).
  """
  width = max(3, len(str(count - 1)))
  return [fileio.check_item_id(f"{item_id}{PIECE_SEPARATOR}{k:0{width}d}")
          for k in range(count)]


def plan_pieces(num_samples: int, max_item_seconds: float,
                config: spectral.StftConfig) -> Optional[dict[str, int]]:
  """How an item of `num_samples` samples is cut; None when it stays whole.

  An item longer than `max_item_seconds` (L) becomes `count` pieces, the
  fewest whose nominal length (`num_samples / count`) is at most 0.8 L. Cut j
  lies at the middle of the longest pause (`audio.quiet_cut_frame`) within
  the 0.2 L (`window`) before its nominal position j * num_samples / count,
  on the frame grid: every piece is at most L long, and at least 0.2 L.

  Returns:
    {"count", "length" (samples), "window" (samples)} or None.
  """
  if max_item_seconds <= 0:
    return None
  limit = int(max_item_seconds * config.sample_rate)
  if num_samples <= limit:
    return None
  window = int(CUT_WINDOW_FRACTION * limit)
  return {"count": -(-num_samples // (limit - window)),
          "length": int(num_samples), "window": window}


def _cut(item: Mapping[str, Any], j: int,
         config: spectral.StftConfig) -> int:
  """Samples from the item's start to cut j of its pieces.

  A function of cut j's own window of audio alone, so that the two pieces
  that meet there, processed apart (even on different machines), find the
  same cut.
  """
  p = item["_piece"]
  hop = config.frame_step
  nominal = j * p["length"] // p["count"]
  first = max(1, -(-(nominal - p["window"]) // hop))
  last = max(first, nominal // hop)
  lo, hi = first * hop, min(last * hop + config.frame_length, p["length"])
  rate = config.sample_rate
  stretch = audio_lib.load_audio(item["audio"], rate, (p["offset"] + lo) / rate,
                                 (p["offset"] + hi) / rate)
  return (first + audio_lib.quiet_cut_frame(stretch, config)) * hop


def resolve_piece(item: Mapping[str, Any],
                  config: spectral.StftConfig) -> dict[str, Any]:
  """A piece task's item with its own `start`/`end` (seconds).

  `item["_piece"]` (set by `prepare`) holds the source id, the piece's index
  and count, and the item's offset and length in samples; the cuts are found
  here, in the worker, by reading only their windows. Adds
  `_piece["first_frame"]`, the item frame at which the piece starts.

  Raises:
    audio.AudioError: the audio cannot be read.
  """
  p = dict(item["_piece"])
  k, count, rate = p["index"], p["count"], config.sample_rate
  first = _cut(item, k, config) if k > 0 else 0
  last = _cut(item, k + 1, config) if k + 1 < count else p["length"]
  p["first_frame"] = first // config.frame_step
  return dict(item, start=(p["offset"] + first) / rate,
              end=(p["offset"] + last) / rate, _piece=p)


# ----------------------------------------------------------------------------
# Splits.


def assign_splits(items: Sequence[Mapping[str, Any]], split_by: str,
                  valid_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, str]:
  """Deterministic split of item ids into train/valid/test.

  `speaker`: whole speakers are held out (at least one each for valid and test
  when their fraction is positive and there are enough speakers); a VAD
  region goes with its speaker. `utterance`: items are shuffled and cut.
  """
  if split_by not in SPLIT_MODES:
    raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
  if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or (
      valid_fraction + test_fraction >= 1):
    raise ValueError("need 0 <= valid_fraction, test_fraction and their sum < 1")
  rng = random.Random(seed)
  if split_by == "speaker":
    missing = [it["id"] for it in items if not it.get("speaker")]
    if missing:
      raise ValueError(
          f"--split_by=speaker needs a speaker for every item; {len(missing)} "
          f"have none (e.g. {missing[0]!r}); use --split_by=utterance")
    units = sorted({it["speaker"] for it in items})
    key = lambda it: it["speaker"]
  else:
    units = sorted(it["id"] for it in items)
    key = lambda it: it["id"]
  rng.shuffle(units)
  n = len(units)

  def count(fraction):
    if fraction <= 0:
      return 0
    return max(1, int(round(fraction * n))) if n >= 3 else 0

  n_test, n_valid = count(test_fraction), count(valid_fraction)
  if n_test + n_valid >= n:
    raise ValueError(f"{n} {split_by}s are too few for the valid/test "
                     f"fractions {valid_fraction}/{test_fraction}")
  unit_split = {}
  for i, unit in enumerate(units):
    unit_split[unit] = ("test" if i < n_test else
                        "valid" if i < n_test + n_valid else "train")
  return {it["id"]: unit_split[key(it)] for it in items}


# ----------------------------------------------------------------------------
# Running over items.


class ItemProcessor:
  """`process_item` with its embedder: what one worker holds.

  The local process pool builds one per worker process, the Beam pipeline one
  per DoFn instance (in `setup`); both call it on `(item, speaker_index)`
  tasks, so the two paths share the per-item function and its error handling.
  """

  def __init__(self, embedder_spec: str, embedder_options: Mapping[str, Any],
               config_dict: Mapping[str, Any], frame_tolerance: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
      # Parallelism comes from the workers; one op thread each avoids
      # oversubscribing the cores. Too late (and harmless) where TF already
      # runs, e.g. in the launcher of a one-process run.
      tf.config.threading.set_intra_op_parallelism_threads(1)
      tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
      pass
    self.config = spectral.StftConfig.from_dict(dict(config_dict))
    self.embedder = embedders.get_embedder(embedder_spec, self.config,
                                           **dict(embedder_options))
    self.frame_tolerance = frame_tolerance

  def __call__(self, task: tuple[Mapping[str, Any], int]) -> ItemResult:
    item, speaker_index = task
    try:
      return process_item(item, self.embedder, self.config,
                          self.frame_tolerance, speaker_index)
    except Exception as e:  # pylint: disable=broad-except
      # One broken item never takes the run down; it is reported by name.
      return _reject(item, "embedding_error", f"{type(e).__name__}: {e}")


_WORKER = {}


def _init_worker(embedder_spec, embedder_options, config_dict, frame_tolerance):
  _WORKER["processor"] = ItemProcessor(embedder_spec, embedder_options,
                                       config_dict, frame_tolerance)


def _work(task) -> ItemResult:
  return _WORKER["processor"](task)


def _iterate(tasks, embedder_spec, embedder_options, config, frame_tolerance,
             num_workers) -> Iterable[ItemResult]:
  init_args = (embedder_spec, embedder_options, config.to_dict(),
               frame_tolerance)
  if num_workers <= 1:
    _init_worker(*init_args)
    for task in tasks:
      yield _work(task)
    return
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(num_workers, initializer=_init_worker,
                initargs=init_args) as pool:
    yield from pool.imap(_work, tasks, chunksize=2)


# ----------------------------------------------------------------------------
# Totals: what dataset_info is made of, mergeable so that Beam combines them.

_SUM_KEYS = ("embedding_sum", "embedding_sumsq", "log_stft_sum",
             "log_stft_sumsq")
_COUNT_KEYS = ("num_examples", "num_frames", "num_samples")


class _Stats:
  """Running per-channel sums for mean/std (float64)."""

  def __init__(self):
    self.count = 0
    self.sums = {}

  def add(self, r: ItemResult):
    self.count += r.num_frames
    for k in _SUM_KEYS:
      v = getattr(r, k)
      self.sums[k] = self.sums.get(k, 0.0) + v

  def merge(self, other: "_Stats"):
    self.count += other.count
    for k, v in other.sums.items():
      self.sums[k] = self.sums.get(k, 0.0) + v

  def finish(self, min_std=1e-3) -> dict[str, list[float]]:
    out = {}
    for name in ("embedding", "log_stft"):
      mean = self.sums[f"{name}_sum"] / self.count
      var = np.maximum(self.sums[f"{name}_sumsq"] / self.count - mean ** 2, 0)
      out[f"{name}_mean"] = mean.astype(np.float32).tolist()
      out[f"{name}_std"] = np.maximum(np.sqrt(var), min_std).astype(
          np.float32).tolist()
    return out


class Summary:
  """Mergeable totals of `ItemResult`s, from which dataset_info is built.

  The local path `add`s every result in turn; the Beam pipeline uses the same
  object as the accumulator of a CombineFn (`add`, `merge`). It never holds
  the examples: per split the counts and the frame lengths (for exact
  quantiles), the train split's float64 sums and sums of squares, the trims,
  and one small record per rejected item.
  """

  def __init__(self):
    self.counts = {}      # split -> {num_examples, num_frames, num_samples}
    self.lengths = {}     # split -> [frames of each example]
    self.train_stats = _Stats()
    self.trimmed = {"count": 0, "frames": 0}
    self.rejected = []    # {"id", "split", "reason", "detail"}
    self.pieces = []      # {"id", "source", "start", "end"} per written piece

  def add(self, r: ItemResult) -> "Summary":
    if not r.ok:
      self.rejected.append({"id": r.item_id, "split": r.split,
                            "reason": r.reason, "detail": r.detail})
      return self
    c = self.counts.setdefault(r.split, dict.fromkeys(_COUNT_KEYS, 0))
    c["num_examples"] += 1
    c["num_frames"] += r.num_frames
    c["num_samples"] += r.num_samples
    self.lengths.setdefault(r.split, []).append(r.num_frames)
    if r.trimmed_frames:
      self.trimmed["count"] += 1
      self.trimmed["frames"] += r.trimmed_frames
    if r.split == "train":
      self.train_stats.add(r)
    if r.source:
      self.pieces.append({"id": r.item_id, "source": r.source,
                          "start": r.start, "end": r.end})
    return self

  def merge(self, other: "Summary") -> "Summary":
    for split, c in other.counts.items():
      mine = self.counts.setdefault(split, dict.fromkeys(_COUNT_KEYS, 0))
      for k in _COUNT_KEYS:
        mine[k] += c[k]
    for split, v in other.lengths.items():
      self.lengths.setdefault(split, []).extend(v)
    self.train_stats.merge(other.train_stats)
    for k in self.trimmed:
      self.trimmed[k] += other.trimmed[k]
    self.rejected.extend(other.rejected)
    self.pieces.extend(other.pieces)
    return self

  def num_examples(self, split: Optional[str] = None) -> int:
    if split is not None:
      return self.counts.get(split, {}).get("num_examples", 0)
    return sum(c["num_examples"] for c in self.counts.values())

  def to_json(self) -> str:
    """One line of JSON (float64 sums round-trip exactly)."""
    return json.dumps({
        "counts": self.counts, "lengths": self.lengths,
        "trimmed": self.trimmed, "rejected": self.rejected,
        "pieces": self.pieces, "train_count": self.train_stats.count,
        "train_sums": {k: np.asarray(v, np.float64).tolist()
                       for k, v in self.train_stats.sums.items()}})

  @classmethod
  def from_json(cls, text: str) -> "Summary":
    d = json.loads(text)
    out = cls()
    out.counts, out.lengths = d["counts"], d["lengths"]
    out.trimmed, out.rejected = d["trimmed"], d["rejected"]
    out.pieces = d.get("pieces", [])
    out.train_stats.count = d["train_count"]
    out.train_stats.sums = {k: np.asarray(v, np.float64)
                            for k, v in d["train_sums"].items()}
    return out


# ----------------------------------------------------------------------------
# Planning, locking and finishing, shared by the local and the Beam runners.


@dataclasses.dataclass
class Plan:
  """Everything decided before the first item is processed.

  `plan_preprocess` fills in the settings, items, embedder and splits;
  `open_output` sets `complete` (the existing dataset_info when `out_dir`
  already holds this manifest's result with these settings: nothing to do)
  and `previous` (whether `out_dir` holds a complete dataset); `prepare` the
  tasks (pieces included) and shard counts.
  """
  manifest: str
  out_dir: str
  fingerprint: str
  complete: Optional[dict[str, Any]] = None
  previous: bool = False
  config: spectral.StftConfig = spectral.DEFAULT
  embedder: Optional[embedders.Embedder] = None
  embedder_spec: str = ""
  embedder_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  split_by: str = "speaker"
  seed: int = 0
  frame_tolerance: int = 0
  items_per_shard: int = 64
  max_item_seconds: float = DEFAULT_MAX_ITEM_SECONDS
  centre_offset_ms: float = 0.0
  items: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  splits: dict[str, str] = dataclasses.field(default_factory=dict)
  speakers: list[str] = dataclasses.field(default_factory=list)
  num_shards: dict[str, int] = dataclasses.field(default_factory=dict)
  split_items: int = 0
  _tasks: Optional[list[tuple[dict[str, Any], int]]] = None

  def tasks(self) -> list[tuple[dict[str, Any], int]]:
    """`(item with its "_split" [and "_piece"], speaker_index)` per task, in
    manifest order, the pieces of an item in their order (after `prepare`).
    """
    if self._tasks is None:
      raise RuntimeError("Plan.tasks() before prepare()")
    return self._tasks

  def shard_names(self, split: str) -> list[str]:
    n = self.num_shards[split]
    return [records.shard_name(split, i, n) for i in range(n)]

  def shard_paths(self, split: str) -> list[str]:
    return [os.path.join(self.out_dir, n) for n in self.shard_names(split)]

  def all_shard_paths(self) -> list[str]:
    return [p for s in self.num_shards for p in self.shard_paths(s)]


class _ShardWriter:
  """Round-robin writer of one split's shards, under `.tmp` names until done."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)
    self._writers = []
    for p in self.paths:
      self._writers.append(tf.io.TFRecordWriter(p + TMP))
    self._next = 0

  def write(self, example: bytes):
    self._writers[self._next].write(example)
    self._next = (self._next + 1) % len(self._writers)

  def close(self):
    """Closes the files (flushing them); the first error is raised after all
    are closed. `commit` then renames them, `discard` removes them."""
    error = None
    for w in self._writers:
      try:
        w.close()
      except (OSError, tf.errors.OpError) as e:
        error = error or e
    if error is not None:
      raise error


def _remove(path: str):
  if tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def discard(out_dir: str):
  """Removes this program's temporaries from `out_dir` (never anything else,
  and never a complete file)."""
  if not tf.io.gfile.isdir(out_dir):
    return
  for name in tf.io.gfile.listdir(out_dir):
    if name.endswith(TMP) and is_own_file(name):
      try:
        _remove(os.path.join(out_dir, name))
      except (OSError, tf.errors.OpError):
        pass  # best effort: a temporary never looks complete anyway


def commit(plan: Plan, new_files: Sequence[str]):
  """Replaces the previous dataset in `plan.out_dir` with the new one.

  Every file of the new dataset is complete under its temporary name
  (`<name>.tmp`, dataset_info.json's too) before this is called. In order:
  the old dataset_info.json goes (from here on the folder is not complete),
  the new files take their names, files of this program's names that the new
  dataset does not have go (old shards, reports), and dataset_info.json takes
  its name last. Renames need no space, so a full disk cannot stop this
  half-way.

  Raises:
    PreprocessError: a temporary file is missing (nothing is changed then).
  """
  info = os.path.join(plan.out_dir, records.DATASET_INFO)
  names = [os.path.basename(p) for p in new_files]
  missing = [p + TMP for p in new_files if not tf.io.gfile.exists(p + TMP)]
  if missing or not tf.io.gfile.exists(info + TMP):
    raise PreprocessError(f"files were not written: {missing[:3] or info}")
  _remove(info)
  for path in new_files:
    tf.io.gfile.rename(path + TMP, path, overwrite=True)
  keep = set(names) | {records.DATASET_INFO + TMP}
  for name in tf.io.gfile.listdir(plan.out_dir):
    if name not in keep and name != records.DATASET_INFO and is_own_file(name):
      _remove(os.path.join(plan.out_dir, name))
  tf.io.gfile.rename(info + TMP, info, overwrite=True)


def _majority_dim(items, embedder, config, sample=16) -> int:
  dims = collections.Counter()
  for it in items[:sample * 4]:
    try:
      wav = audio_lib.load_audio(it["audio"], config.sample_rate,
                                 it.get("start"), it.get("end"))
      fresh = embedders.get_embedder(embedder.spec, config,
                                     **embedder.options())
      dims[int(fresh.embed(wav, dict(it)).shape[1])] += 1
    except (audio_lib.AudioError, embedders.EmbedderError, IndexError):
      continue
    if sum(dims.values()) >= sample:
      break
  if not dims:
    raise PreprocessError(
        f"embedder {embedder.name!r}: could not embed any of the first items "
        "to learn the embedding dimension; give it with --embedder_options")
  return dims.most_common(1)[0][0]


def _fingerprint(manifest_path, settings) -> str:
  h = hashlib.sha256()
  with open(manifest_path, "rb") as f:
    h.update(f.read())
  h.update(json.dumps(settings, sort_keys=True).encode())
  return h.hexdigest()[:16]


def _write_text_tmp(path, text) -> str:
  """Writes `text` to `path.tmp` (complete when this returns); returns path."""
  with tf.io.gfile.GFile(path + TMP, "w") as f:
    f.write(text)
  return path


def _jsonl(rows) -> str:
  return "".join(json.dumps(r) + "\n" for r in rows)


def check_settings(split_by: str, valid_fraction: float, test_fraction: float,
                   frame_tolerance: int, items_per_shard: int,
                   max_item_seconds: float,
                   max_rejected_fraction: float = 0.0,
                   num_workers: Optional[int] = None):
  """Raises PreprocessError for settings no run can use (named by flag)."""
  problems = []
  if split_by not in SPLIT_MODES:
    problems.append(f"--split_by must be one of {SPLIT_MODES}, got "
                    f"{split_by!r}")
  for flag, value in (("valid_fraction", valid_fraction),
                      ("test_fraction", test_fraction)):
    if not 0 <= value < 1:
      problems.append(f"--{flag} must be in [0, 1), got {value}")
  if valid_fraction + test_fraction >= 1:
    problems.append("--valid_fraction and --test_fraction must add up to "
                    f"less than 1, got {valid_fraction} + {test_fraction}")
  if frame_tolerance < 0:
    problems.append(f"--frame_tolerance must be >= 0, got {frame_tolerance}")
  if items_per_shard < 1:
    problems.append(f"--items_per_shard must be >= 1, got {items_per_shard}")
  if not 0 <= max_rejected_fraction <= 1:
    problems.append("--max_rejected_fraction must be in [0, 1], got "
                    f"{max_rejected_fraction}")
  if num_workers is not None and num_workers < 1:
    problems.append(f"--num_workers must be >= 1, got {num_workers}")
  if not (max_item_seconds == 0 or max_item_seconds >= MIN_MAX_ITEM_SECONDS
          ) or not math.isfinite(max_item_seconds):
    problems.append(f"--max_item_seconds must be 0 (no splitting) or at least "
                    f"{MIN_MAX_ITEM_SECONDS:g}, got {max_item_seconds}")
  if problems:
    raise PreprocessError("; ".join(problems))


def build_embedder(spec: str, config: spectral.StftConfig,
                   options: Mapping[str, Any]) -> embedders.Embedder:
  """The embedder, with errors that name the flag at fault.

  Raises:
    PreprocessError: `--embedder_options: ...` for options the embedder does
      not take (unknown names, wrong types) or that it refuses,
      `--embedder: ...` for an unknown name or a spec it cannot load.
  """
  if not isinstance(options, Mapping):
    raise PreprocessError("--embedder_options: must be a JSON object, got "
                          f"{type(options).__name__}")
  try:
    embedder_registry.check_options(spec, options)
  except embedder_registry.OptionError as e:
    raise PreprocessError(f"--embedder_options: {e}") from None
  except ValueError as e:
    raise PreprocessError(f"--embedder: {e}") from None
  try:
    return embedders.get_embedder(spec, config, **options)
  except (ValueError, TypeError, OSError, tf.errors.OpError) as e:
    lines = str(getattr(e, "message", e)).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    # A value the embedder refuses names its option ("num_mel_bins must be
    # positive"); anything else is about the spec (a model that is not there).
    flag = ("--embedder_options" if any(k in text for k in options)
            else "--embedder")
    raise PreprocessError(f"{flag}: {text}") from None


def plan_preprocess(manifest: str, out_dir: str, embedder_spec: str = "logmel",
                    embedder_options: Optional[Mapping[str, Any]] = None,
                    config: spectral.StftConfig = spectral.DEFAULT,
                    split_by: str = "speaker", valid_fraction: float = 0.1,
                    test_fraction: float = 0.1, seed: int = 0,
                    frame_tolerance: int = 0, items_per_shard: int = 64,
                    progress: bool = True,
                    max_item_seconds: float = DEFAULT_MAX_ITEM_SECONDS
                    ) -> Plan:
  """Checks the settings, the manifest, the embedder and the split.

  Reads the manifest (and builds the embedder, which may load a model), but
  neither reads nor writes `out_dir`: whatever is wrong fails here, before
  anything there is touched.

  Raises:
    PreprocessError: bad settings or embedder options, no items, an embedder
      whose hop differs from the STFT's.
    ValueError, FileNotFoundError: a malformed or missing manifest, a split
      the items cannot fill (e.g. no speaker left for train).
  """
  check_settings(split_by, valid_fraction, test_fraction, frame_tolerance,
                 items_per_shard, max_item_seconds)
  if embedder_options is not None and not isinstance(embedder_options,
                                                     Mapping):
    raise PreprocessError("--embedder_options: must be a JSON object, got "
                          f"{type(embedder_options).__name__}")
  embedder_options = dict(embedder_options or {})
  items = manifest_lib.read_manifest(manifest)
  if not items:
    raise PreprocessError(f"{manifest}: no items")
  settings = dict(embedder=embedder_spec, options=embedder_options,
                  stft=config.to_dict(), split_by=split_by,
                  valid_fraction=valid_fraction, test_fraction=test_fraction,
                  seed=seed, frame_tolerance=frame_tolerance,
                  items_per_shard=items_per_shard,
                  max_item_seconds=float(max_item_seconds))
  plan = Plan(manifest=manifest, out_dir=out_dir,
              fingerprint=_fingerprint(manifest, settings), config=config,
              embedder_spec=embedder_spec, split_by=split_by, seed=seed,
              frame_tolerance=frame_tolerance,
              items_per_shard=items_per_shard,
              max_item_seconds=float(max_item_seconds))
  # The embedder is built here: a bad spec or option fails before any work,
  # and its description goes into dataset_info.
  embedder = build_embedder(embedder_spec, config, embedder_options)
  grid = embedder.grid
  if (grid.frame_step, grid.sample_rate) != (config.frame_step,
                                             config.sample_rate):
    raise PreprocessError(
        f"embedder {embedder.name!r} has hop {grid.frame_step} at "
        f"{grid.sample_rate} Hz but the STFT grid has hop {config.frame_step} "
        f"at {config.sample_rate} Hz: frames cannot be paired one to one")
  # Same hop, but the windows may differ (e.g. 30 ms embeddings against the
  # original 32 ms STFT window): frame centres are then this far apart, and
  # the frame counts can differ by a frame (see --frame_tolerance).
  plan.centre_offset_ms = 1000.0 * (
      (config.frame_length - grid.frame_length) / 2.0 +
      (grid.frame_length // 2 if grid.center else 0)) / config.sample_rate
  if plan.centre_offset_ms and progress:
    print(f"note: embedder frames ({grid.to_dict()}) and STFT frames "
          f"(window {config.frame_length}) have centres "
          f"{plan.centre_offset_ms:+.2f} ms apart")
  plan.embedder, plan.embedder_options, plan.items = (embedder,
                                                      embedder_options, items)
  plan.splits = assign_splits(items, split_by, valid_fraction, test_fraction,
                              seed)
  plan.speakers = sorted({it["speaker"] for it in items if it.get("speaker")})
  return plan


@contextlib.contextmanager
def open_output(plan: Plan, overwrite: bool,
                progress: bool = True) -> Iterator[Plan]:
  """Holds `plan.out_dir` for the run and checks what it holds.

      with open_output(plan, overwrite):
        if plan.complete is not None: ...  # nothing to do

  Takes the folder's lock (a second run fails at once with
  `fileio.FolderInUse`, which names this one; a lock left by a killed run is
  taken over), sets `plan.complete` when the folder already holds this
  manifest's result with these settings and `plan.previous` when it holds a
  complete dataset, and removes this program's temporaries of an interrupted
  run (they are never part of a complete dataset). The lock is released on
  leaving.

  Raises:
    fileio.FolderInUse: another live run holds the folder.
    PreprocessError: the folder holds another dataset and not `overwrite`.
  """
  lock = fileio.FolderLock(plan.out_dir, "preprocess")
  try:
    lock.acquire()
  except OSError as e:
    raise PreprocessError(fileio.describe_os_error(e, plan.out_dir)) from None
  try:
    info_path = os.path.join(plan.out_dir, records.DATASET_INFO)
    if tf.io.gfile.exists(info_path):
      unreadable = None
      try:
        with tf.io.gfile.GFile(info_path) as f:
          old = json.load(f)
        if not isinstance(old, dict):
          raise ValueError(f"a JSON {type(old).__name__}, not an object")
      except ValueError as e:
        old, unreadable = {}, str(e).splitlines()[0]
      plan.previous = True
      if unreadable and not overwrite:
        raise PreprocessError(
            f"{info_path} cannot be read ({unreadable}): the dataset there is "
            "damaged; pass --overwrite to rebuild it, or choose another "
            "--out_dir")
      if old.get("fingerprint") == plan.fingerprint:
        if progress:
          print(f"{plan.out_dir}: already complete for this manifest and "
                "settings; nothing to do")
        plan.complete = old
      elif not overwrite:
        raise PreprocessError(
            f"{plan.out_dir} holds a dataset made from another manifest or "
            "other settings; pass --overwrite to replace it, or choose another "
            "--out_dir")
    if plan.complete is None:
      tf.io.gfile.makedirs(plan.out_dir)
      discard(plan.out_dir)
    yield plan
  finally:
    lock.release()


def _probe_length(item: Mapping[str, Any], rate: int) -> Optional[int]:
  """Samples of the item's region at `rate`, from its start/end or the
  file's header; None when unknown (the item is then processed whole, and a
  bad file rejected there)."""
  first = int(round(item["start"] * rate)) if "start" in item else 0
  if "end" in item:
    return int(round(item["end"] * rate)) - first
  try:
    return audio_lib.num_samples(item["audio"], rate) - first
  except audio_lib.AudioError:
    return None


def prepare(plan: Plan, progress: bool = True):
  """Decides what needs the data: the tasks (items longer than
  `plan.max_item_seconds` cut into pieces, in the item's split) and the
  shards, and an npy embedder's dimension when not given.

  Raises:
    PreprocessError: a piece id is not a valid id or is taken by an item.
  """
  config, embedder = plan.config, plan.embedder
  if embedder.dim is None:
    # Embedders that learn their dimension from the data (npy, a SavedModel
    # without a declared dim): fix it here, by majority over a sample of
    # items, so that every worker enforces the same one.
    dim = _majority_dim(plan.items, embedder, config)
    plan.embedder_options["dim"] = dim
    plan.embedder = embedders.get_embedder(plan.embedder_spec, config,
                                           **plan.embedder_options)
  index = {s: i for i, s in enumerate(plan.speakers)}
  ids = {it["id"] for it in plan.items}
  tasks, plan.split_items = [], 0
  items = plan.items
  if plan.max_item_seconds > 0 and progress and len(items) > 1000:
    items = tqdm.tqdm(items, desc="lengths", unit="item")
  for it in items:
    task = dict(it, _split=plan.splits[it["id"]])
    speaker = index.get(it.get("speaker"), -1)
    pieces = None
    if plan.max_item_seconds > 0:
      length = _probe_length(it, config.sample_rate)
      if length is not None:
        pieces = plan_pieces(length, plan.max_item_seconds, config)
    if pieces is None:
      tasks.append((task, speaker))
      continue
    try:
      names = piece_ids(it["id"], pieces["count"])
    except fileio.InvalidItemId as e:
      raise PreprocessError(
          f"item {it['id']!r} is longer than --max_item_seconds="
          f"{plan.max_item_seconds:g} but its pieces cannot be named: {e}"
      ) from None
    taken = ids.intersection(names)
    if taken:
      raise PreprocessError(
          f"item {it['id']!r} is longer than --max_item_seconds="
          f"{plan.max_item_seconds:g}, but the id of its piece "
          f"{sorted(taken)[0]!r} is taken by another item")
    plan.split_items += 1
    offset = int(round(it["start"] * config.sample_rate)) if "start" in it \
        else 0
    for k, name in enumerate(names):
      tasks.append((dict(task, id=name, _piece=dict(
          pieces, index=k, offset=offset, source=it["id"])), speaker))
  plan._tasks = tasks  # pylint: disable=protected-access
  planned = collections.Counter(t["_split"] for t, _ in tasks)
  plan.num_shards = {s: max(1, math.ceil(planned[s] / plan.items_per_shard))
                     for s in records.SPLITS if planned[s]}
  if plan.split_items and progress:
    print(f"cutting {plan.split_items} items longer than "
          f"{plan.max_item_seconds:g} s into pieces at pauses "
          f"({len(tasks) - len(plan.items) + plan.split_items} pieces)")


@contextlib.contextmanager
def no_space_is_an_error(out_dir: str) -> Iterator[None]:
  """Turns a full disk (an OSError or a TensorFlow error, however it comes)
  into a PreprocessError "no space left on <out_dir>"."""
  try:
    yield
  except PreprocessError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if fileio.is_no_space(e):
      raise PreprocessError(f"no space left on {out_dir}") from None
    raise


def _failure_report(plan: Plan) -> str:
  """Where a failed run's rejected report goes: rejected.jsonl, unless that
  belongs to a complete dataset in the folder (a failed run leaves it
  intact)."""
  name = FAILED_REPORT if plan.previous else records.REJECTED_REPORT
  return os.path.join(plan.out_dir, name)


def check_usable(plan: Plan, summary: Summary, report: str,
                 max_rejected_fraction: float):
  """Raises PreprocessError when the run cannot make a usable dataset."""
  num_tasks = len(plan.tasks())
  if summary.num_examples() == 0 or summary.num_examples("train") == 0:
    raise PreprocessError(
        f"no usable training item among {num_tasks}; see {report}")
  if len(summary.rejected) > max_rejected_fraction * num_tasks:
    raise PreprocessError(
        f"{len(summary.rejected)} of {num_tasks} items rejected, more than "
        f"--max_rejected_fraction={max_rejected_fraction}; see {report}")


def _rejected_rows(plan: Plan, summary: Summary) -> list[dict[str, Any]]:
  """The rejected items in task (manifest) order."""
  order = {t["id"]: i for i, (t, _) in enumerate(plan.tasks())}
  rows = sorted(summary.rejected, key=lambda r: order.get(r["id"], len(order)))
  return [{k: r[k] for k in ("id", "split", "reason", "detail")} for r in rows]


def _pieces_rows(plan: Plan, summary: Summary) -> list[dict[str, Any]]:
  order = {t["id"]: i for i, (t, _) in enumerate(plan.tasks())}
  audio = {it["id"]: it["audio"] for it in plan.items}
  rows = sorted(summary.pieces, key=lambda r: order.get(r["id"], len(order)))
  return [{"id": r["id"], "source": r["source"], "audio": audio[r["source"]],
           "start": r["start"], "end": r["end"]} for r in rows]


def build_dataset_info(plan: Plan, summary: Summary,
                       seconds: float) -> dict[str, Any]:
  """The dataset_info.json dict (layout in tfrecords/README.md)."""
  zeros = dict.fromkeys(_COUNT_KEYS, 0)
  by_reason = collections.Counter(r["reason"] for r in summary.rejected)
  return {
      "version": 1,
      "fingerprint": plan.fingerprint,
      "manifest": os.path.abspath(plan.manifest),
      "stft": plan.config.to_dict(),
      "embedder": plan.embedder.describe(),
      "split_by": plan.split_by,
      "seed": plan.seed,
      "frame_tolerance": plan.frame_tolerance,
      "centre_offset_ms": plan.centre_offset_ms,
      "speakers": plan.speakers,
      "splits": {
          s: {"num_examples": summary.counts.get(s, zeros)["num_examples"],
              "num_frames": summary.counts.get(s, zeros)["num_frames"],
              "num_audio_seconds": summary.counts.get(s, zeros)["num_samples"]
                                   / plan.config.sample_rate,
              "num_shards": n,
              "num_speakers": len({it["speaker"] for it in plan.items
                                   if plan.splits[it["id"]] == s and
                                   it.get("speaker")}),
              "files": plan.shard_names(s)}
          for s, n in plan.num_shards.items()},
      "stats": summary.train_stats.finish(),
      "length_quantiles": {
          s: {str(q): float(np.quantile(v, q)) for q in QUANTILES}
          for s, v in summary.lengths.items()},
      "rejected": {"count": len(summary.rejected), "by_reason": dict(by_reason),
                   "report": records.REJECTED_REPORT},
      "trimmed": dict(summary.trimmed),
      "pieces": {"max_item_seconds": plan.max_item_seconds,
                 "split_items": plan.split_items,
                 "count": len(summary.pieces),
                 "report": PIECES_REPORT if summary.pieces else None},
      "num_items": len(plan.items),
      "seconds": round(seconds, 2),
  }


def finish(plan: Plan, summary: Summary, start: float,
           max_rejected_fraction: float, progress: bool) -> dict[str, Any]:
  """Checks the run, writes its reports and dataset_info, and commits.

  The shards are complete under their `.tmp` names when this is called. On a
  PreprocessError (no usable item, too many rejected) the temporaries are
  removed and the rejected report is written (`_failure_report`); the
  folder's previous dataset stays as it was.
  """
  shards = plan.all_shard_paths()
  with no_space_is_an_error(plan.out_dir):
    report = _failure_report(plan)
    try:
      check_usable(plan, summary, report, max_rejected_fraction)
    except PreprocessError:
      discard(plan.out_dir)
      tf.io.gfile.rename(_write_text_tmp(report, _jsonl(
          _rejected_rows(plan, summary))) + TMP, report, overwrite=True)
      raise
    try:
      new_files = shards + [_write_text_tmp(
          os.path.join(plan.out_dir, records.REJECTED_REPORT),
          _jsonl(_rejected_rows(plan, summary)))]
      if summary.pieces:
        new_files.append(_write_text_tmp(
            os.path.join(plan.out_dir, PIECES_REPORT),
            _jsonl(_pieces_rows(plan, summary))))
      info = build_dataset_info(plan, summary, time.time() - start)
      _write_text_tmp(os.path.join(plan.out_dir, records.DATASET_INFO),
                      json.dumps(info, indent=1) + "\n")
      commit(plan, new_files)
    except BaseException:
      discard(plan.out_dir)  # e.g. the disk filled up writing the reports
      raise
  if progress:
    rejected = summary.rejected
    by_reason = info["rejected"]["by_reason"]
    trimmed = summary.trimmed
    per_split = ", ".join(f"{s} {summary.num_examples(s)}"
                          for s in plan.num_shards)
    report = os.path.join(plan.out_dir, records.REJECTED_REPORT)
    print(f"wrote {summary.num_examples()} examples ({per_split}) to "
          f"{plan.out_dir} in {info['seconds']:.1f}s; rejected {len(rejected)}"
          + (f" ({by_reason}), see {report}" if rejected else "")
          + (f"; trimmed {trimmed['count']} items by {trimmed['frames']} frames"
             if trimmed["count"] else "")
          + (f"; {plan.split_items} long items cut into "
             f"{len(summary.pieces)} pieces, see "
             f"{os.path.join(plan.out_dir, PIECES_REPORT)}"
             if summary.pieces else ""))
  return info


def run_preprocess(manifest: str, out_dir: str, embedder_spec: str = "logmel",
                   embedder_options: Optional[Mapping[str, Any]] = None,
                   config: spectral.StftConfig = spectral.DEFAULT,
                   split_by: str = "speaker", valid_fraction: float = 0.1,
                   test_fraction: float = 0.1, seed: int = 0,
                   frame_tolerance: int = 0, items_per_shard: int = 64,
                   num_workers: Optional[int] = None,
                   max_rejected_fraction: float = 0.2,
                   overwrite: bool = False,
                   progress: bool = True,
                   max_item_seconds: float = DEFAULT_MAX_ITEM_SECONDS
                   ) -> dict[str, Any]:
  """Runs the whole preprocessing locally; returns the dataset_info dict.

  Everything is checked before `out_dir` is touched (see the module doc); the
  folder is locked for the run. A re-run of a completed run with the same
  manifest and settings returns the existing dataset_info without work;
  anything else (an interrupted run, other settings with `overwrite`) writes
  a new dataset beside the previous one and replaces it once complete.
  Items longer than `max_item_seconds` (0: none) become pieces
  `<id>/part-NNN`, cut at pauses, in the item's split.

  Raises:
    PreprocessError: bad settings, no item or more than
      `max_rejected_fraction` of them usable (the rejected-items report is
      written), a full disk ("no space left on <out_dir>").
    fileio.FolderInUse: another run writes into `out_dir`.
    ValueError, FileNotFoundError: a malformed or missing manifest, a split
      the items cannot fill.
  """
  check_settings(split_by, valid_fraction, test_fraction, frame_tolerance,
                 items_per_shard, max_item_seconds, max_rejected_fraction,
                 num_workers)
  plan = plan_preprocess(manifest, out_dir, embedder_spec, embedder_options,
                         config, split_by, valid_fraction, test_fraction,
                         seed, frame_tolerance, items_per_shard, progress,
                         max_item_seconds)
  with open_output(plan, overwrite, progress):
    if plan.complete is not None:
      return plan.complete
    prepare(plan, progress)
    tasks = plan.tasks()
    summary = Summary()
    workers = num_workers or min(os.cpu_count() or 1, 8)
    start = time.time()
    try:
      with no_space_is_an_error(out_dir):
        writers = {s: _ShardWriter(plan.shard_paths(s))
                   for s in plan.num_shards}
        bar = tqdm.tqdm(total=len(tasks), desc="preprocess", unit="item",
                        disable=not progress)
        try:
          # Closed on any error, which stops the worker processes at once.
          with contextlib.closing(_iterate(
              tasks, plan.embedder_spec, plan.embedder_options, config,
              frame_tolerance, workers)) as results:
            for r in results:
              bar.update(1)
              if r.ok:
                writers[r.split].write(r.example)
              summary.add(r)
        finally:
          bar.close()  # before any error message, which gets its own line
          for w in writers.values():
            w.close()
    except BaseException:
      discard(out_dir)
      raise
    return finish(plan, summary, start, max_rejected_fraction, progress)
