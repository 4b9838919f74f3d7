"""Manifest -> train/valid/test TFRecord shards + dataset_info.json.

One per-item function (`process_item`, held with its embedder by an
`ItemProcessor`) turns a manifest item into a serialised example or a
rejection. `plan_preprocess` decides the splits, speakers and shards;
`run_preprocess` runs the items over a process pool, writes shards under
temporary names and adds every result to a `Summary` (counts, lengths, train
statistics, rejections); `finish` writes the rejected report, checks the run,
renames the shards and writes `dataset_info.json` last. A directory with a
`dataset_info.json` is complete. `e2s_tf.beam_preprocess` runs the same plan,
per-item function, `Summary` (as a Beam combiner) and `finish` as an Apache
Beam pipeline.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import random
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tqdm

from e2s_tf import audio as audio_lib
from e2s_tf import corpus
from e2s_tf import embedders
from e2s_tf import records
from e2s_tf import spectral

QUANTILES = tuple(round(q, 2) for q in np.linspace(0.0, 1.0, 11))
SPLIT_MODES = ("speaker", "utterance")
# Rejection reasons (the keys of dataset_info["rejected"]["by_reason"]).
REASONS = ("missing_audio", "unreadable_audio", "empty_audio", "too_short", "non_finite",
           "embedding_error", "wrong_dimension", "length_mismatch")


class PreprocessError(RuntimeError):
  """The run as a whole cannot produce a usable dataset."""


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
  try:
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
      embedding_sum=e64.sum(0), embedding_sumsq=np.square(e64).sum(0),
      log_stft_sum=s64.sum(0), log_stft_sumsq=np.square(s64).sum(0))


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
        "train_count": self.train_stats.count,
        "train_sums": {k: np.asarray(v, np.float64).tolist()
                       for k, v in self.train_stats.sums.items()}})

  @classmethod
  def from_json(cls, text: str) -> "Summary":
    d = json.loads(text)
    out = cls()
    out.counts, out.lengths = d["counts"], d["lengths"]
    out.trimmed, out.rejected = d["trimmed"], d["rejected"]
    out.train_stats.count = d["train_count"]
    out.train_stats.sums = {k: np.asarray(v, np.float64)
                            for k, v in d["train_sums"].items()}
    return out


# ----------------------------------------------------------------------------
# Planning and finishing, shared by the local and the Beam runners.


@dataclasses.dataclass
class Plan:
  """Everything decided before the first item is processed.

  `complete` holds the existing dataset_info when `out_dir` already has the
  result of this manifest and settings (then nothing else is filled in and
  there is nothing to do).
  """
  manifest: str
  out_dir: str
  fingerprint: str
  complete: Optional[dict[str, Any]] = None
  config: spectral.StftConfig = spectral.DEFAULT
  embedder: Optional[embedders.Embedder] = None
  embedder_spec: str = ""
  embedder_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  split_by: str = "speaker"
  seed: int = 0
  frame_tolerance: int = 0
  centre_offset_ms: float = 0.0
  items: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  splits: dict[str, str] = dataclasses.field(default_factory=dict)
  speakers: list[str] = dataclasses.field(default_factory=list)
  num_shards: dict[str, int] = dataclasses.field(default_factory=dict)

  def tasks(self) -> list[tuple[dict[str, Any], int]]:
    """`(item with its "_split", speaker_index)` per item, manifest order."""
    index = {s: i for i, s in enumerate(self.speakers)}
    return [(dict(it, _split=self.splits[it["id"]]),
             index.get(it.get("speaker"), -1)) for it in self.items]

  def shard_names(self, split: str) -> list[str]:
    n = self.num_shards[split]
    return [records.shard_name(split, i, n) for i in range(n)]

  def shard_paths(self, split: str) -> list[str]:
    return [os.path.join(self.out_dir, n) for n in self.shard_names(split)]


class _ShardWriter:
  """Round-robin writer of one split's shards, under `.tmp` names until done."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)
    self._writers = [tf.io.TFRecordWriter(p + ".tmp") for p in self.paths]
    self._next = 0

  def write(self, example: bytes):
    self._writers[self._next].write(example)
    self._next = (self._next + 1) % len(self._writers)

  def close(self):
    """Closes the files; `commit_shards` then renames or removes them."""
    for w in self._writers:
      w.close()


def commit_shards(paths: Sequence[str], commit: bool):
  """Renames each `<path>.tmp` to `<path>` (commit) or removes it.

  Raises:
    PreprocessError: committing, and a temporary shard is missing.
  """
  if commit:
    missing = [p + ".tmp" for p in paths if not tf.io.gfile.exists(p + ".tmp")]
    if missing:
      raise PreprocessError(f"shards were not written: {missing[:3]}")
  for p in paths:
    if commit:
      tf.io.gfile.rename(p + ".tmp", p, overwrite=True)
    elif tf.io.gfile.exists(p + ".tmp"):
      tf.io.gfile.remove(p + ".tmp")


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


def _atomic_write_text(path, text):
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    f.write(text)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def _atomic_write_json(path, obj):
  _atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def plan_preprocess(manifest: str, out_dir: str, embedder_spec: str = "logmel",
                    embedder_options: Optional[Mapping[str, Any]] = None,
                    config: spectral.StftConfig = spectral.DEFAULT,
                    split_by: str = "speaker", valid_fraction: float = 0.1,
                    test_fraction: float = 0.1, seed: int = 0,
                    frame_tolerance: int = 0, items_per_shard: int = 64,
                    overwrite: bool = False, progress: bool = True) -> Plan:
  """Checks the settings, prepares `out_dir` and decides splits and shards.

  Returns a Plan whose `complete` is the existing dataset_info when `out_dir`
  already holds this manifest's result with these settings. Otherwise the
  directory is cleared of an earlier run's dataset_info (first, so that a
  half-rewritten directory never looks complete) and shards.

  Raises:
    PreprocessError: `out_dir` holds another dataset and not `overwrite`, no
      items, an embedder whose hop differs from the STFT's.
    ValueError, FileNotFoundError: bad split settings, a missing manifest.
  """
  embedder_options = dict(embedder_options or {})
  settings = dict(embedder=embedder_spec, options=embedder_options,
                  stft=config.to_dict(), split_by=split_by,
                  valid_fraction=valid_fraction, test_fraction=test_fraction,
                  seed=seed, frame_tolerance=frame_tolerance,
                  items_per_shard=items_per_shard)
  plan = Plan(manifest=manifest, out_dir=out_dir,
              fingerprint=_fingerprint(manifest, settings), config=config,
              embedder_spec=embedder_spec, split_by=split_by, seed=seed,
              frame_tolerance=frame_tolerance)
  info_path = os.path.join(out_dir, records.DATASET_INFO)
  if tf.io.gfile.exists(info_path):
    with tf.io.gfile.GFile(info_path) as f:
      old = json.load(f)
    if old.get("fingerprint") == plan.fingerprint:
      if progress:
        print(f"{out_dir}: already complete for this manifest and settings; "
              "nothing to do")
      plan.complete = old
      return plan
    if not overwrite:
      raise PreprocessError(
          f"{out_dir} holds a dataset made from another manifest or other "
          "settings; pass --overwrite to replace it, or choose another --out_dir")
  tf.io.gfile.makedirs(out_dir)
  # The info file goes first so that a half-rewritten directory never looks
  # complete; stale shards and temporaries of an earlier run go too.
  for name in tf.io.gfile.listdir(out_dir):
    if name == records.DATASET_INFO or name.endswith(
        (records.SHARD_SUFFIX, records.SHARD_SUFFIX + ".tmp")):
      tf.io.gfile.remove(os.path.join(out_dir, name))

  items = corpus.read_manifest(manifest)
  if not items:
    raise PreprocessError(f"{manifest}: no items")
  # The embedder is built here too: a bad spec fails before any work, and its
  # description goes into dataset_info.
  embedder = embedders.get_embedder(embedder_spec, config, **embedder_options)
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
  if embedder.dim is None:
    # Embedders that learn their dimension from the data (npy, a SavedModel
    # without a declared dim): fix it here, by majority over a sample of
    # items, so that every worker enforces the same one.
    dim = _majority_dim(items, embedder, config)
    embedder_options["dim"] = dim
    embedder = embedders.get_embedder(embedder_spec, config,
                                      **embedder_options)
  plan.embedder, plan.embedder_options, plan.items = (embedder,
                                                      embedder_options, items)
  plan.splits = assign_splits(items, split_by, valid_fraction, test_fraction,
                              seed)
  plan.speakers = sorted({it["speaker"] for it in items if it.get("speaker")})
  planned = collections.Counter(plan.splits.values())
  plan.num_shards = {s: max(1, math.ceil(planned[s] / items_per_shard))
                     for s in records.SPLITS if planned[s]}
  return plan


def write_rejected_report(plan: Plan, summary: Summary) -> str:
  """Writes rejected.jsonl (manifest order); returns its path."""
  order = {it["id"]: i for i, it in enumerate(plan.items)}
  rows = sorted(summary.rejected, key=lambda r: order.get(r["id"], len(order)))
  report = os.path.join(plan.out_dir, records.REJECTED_REPORT)
  _atomic_write_text(report, "".join(
      json.dumps({k: r[k] for k in ("id", "split", "reason", "detail")}) + "\n"
      for r in rows))
  return report


def check_usable(plan: Plan, summary: Summary, report: str,
                 max_rejected_fraction: float):
  """Raises PreprocessError when the run cannot make a usable dataset."""
  num_items = len(plan.items)
  if summary.num_examples() == 0 or summary.num_examples("train") == 0:
    raise PreprocessError(
        f"no usable training item among {num_items}; see {report}")
  if len(summary.rejected) > max_rejected_fraction * num_items:
    raise PreprocessError(
        f"{len(summary.rejected)} of {num_items} items rejected, more than "
        f"--max_rejected_fraction={max_rejected_fraction}; see {report}")


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
      "num_items": len(plan.items),
      "seconds": round(seconds, 2),
  }


def finish(plan: Plan, summary: Summary, start: float,
           max_rejected_fraction: float, progress: bool) -> dict[str, Any]:
  """Reports, checks, commits the `.tmp` shards and writes dataset_info last.

  On a PreprocessError the temporary shards are removed and no
  dataset_info.json is written (the rejected report is).
  """
  paths = [p for s in plan.num_shards for p in plan.shard_paths(s)]
  committed = False
  try:
    report = write_rejected_report(plan, summary)
    check_usable(plan, summary, report, max_rejected_fraction)
    commit_shards(paths, commit=True)
    committed = True
  finally:
    if not committed:
      commit_shards(paths, commit=False)
  info = build_dataset_info(plan, summary, time.time() - start)
  _atomic_write_json(os.path.join(plan.out_dir, records.DATASET_INFO), info)
  if progress:
    rejected = summary.rejected
    by_reason = info["rejected"]["by_reason"]
    trimmed = summary.trimmed
    per_split = ", ".join(f"{s} {summary.num_examples(s)}"
                          for s in plan.num_shards)
    print(f"wrote {summary.num_examples()} examples ({per_split}) to "
          f"{plan.out_dir} in {info['seconds']:.1f}s; rejected {len(rejected)}"
          + (f" ({by_reason}), see {report}" if rejected else "")
          + (f"; trimmed {trimmed['count']} items by {trimmed['frames']} frames"
             if trimmed["count"] else ""))
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
                   progress: bool = True) -> dict[str, Any]:
  """Runs the whole preprocessing locally; returns the dataset_info dict.

  A re-run of a completed run with the same manifest and settings returns the
  existing dataset_info without work; anything else (an interrupted run, other
  settings with `overwrite`) rewrites the shards. Raises PreprocessError when
  no item, or more than `max_rejected_fraction` of them, is usable (the
  rejected-items report is written first). `e2s_tf.beam_preprocess` runs the
  same plan, per-item function and totals as an Apache Beam pipeline.
  """
  plan = plan_preprocess(manifest, out_dir, embedder_spec, embedder_options,
                         config, split_by, valid_fraction, test_fraction,
                         seed, frame_tolerance, items_per_shard, overwrite,
                         progress)
  if plan.complete is not None:
    return plan.complete
  tasks = plan.tasks()
  summary = Summary()
  workers = num_workers or min(os.cpu_count() or 1, 8)
  start = time.time()
  writers = {s: _ShardWriter(plan.shard_paths(s)) for s in plan.num_shards}
  done = False
  try:
    bar = tqdm.tqdm(total=len(tasks), desc="preprocess", unit="item",
                    disable=not progress)
    for r in _iterate(tasks, plan.embedder_spec, plan.embedder_options,
                      config, frame_tolerance, workers):
      bar.update(1)
      if r.ok:
        writers[r.split].write(r.example)
      summary.add(r)
    bar.close()
    done = True
  finally:
    for w in writers.values():
      w.close()
    if not done:
      commit_shards([p for w in writers.values() for p in w.paths],
                    commit=False)
  return finish(plan, summary, start, max_rejected_fraction, progress)
