"""Manifest -> train/valid/test TFRecord shards + dataset_info.json.

One per-item function (`process_item`) turns a manifest item into a
serialised example or a rejection; `run_preprocess` plans the splits, runs the
items over a process pool, writes shards under temporary names, renames them
when complete, accumulates the train statistics and writes
`dataset_info.json` last. A directory with a `dataset_info.json` is complete.
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
    return self.example is not None


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

_WORKER = {}


def _init_worker(embedder_spec, embedder_options, config_dict, frame_tolerance):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError:
    pass
  config = spectral.StftConfig.from_dict(config_dict)
  _WORKER["config"] = config
  _WORKER["embedder"] = embedders.get_embedder(embedder_spec, config,
                                               **embedder_options)
  _WORKER["frame_tolerance"] = frame_tolerance


def _work(args) -> ItemResult:
  item, speaker_index = args
  try:
    return process_item(item, _WORKER["embedder"], _WORKER["config"],
                        _WORKER["frame_tolerance"], speaker_index)
  except Exception as e:  # pylint: disable=broad-except
    # One broken item never takes the run down; it is reported by name.
    return _reject(item, "embedding_error", f"{type(e).__name__}: {e}")


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
# Writing.


class _ShardWriter:
  """Round-robin writer of one split's shards, under `.tmp` names until done."""

  def __init__(self, out_dir, split, num_shards):
    self.names = [records.shard_name(split, i, num_shards)
                  for i in range(num_shards)]
    self.paths = [os.path.join(out_dir, n) for n in self.names]
    self._writers = [tf.io.TFRecordWriter(p + ".tmp") for p in self.paths]
    self._next = 0

  def write(self, example: bytes):
    self._writers[self._next].write(example)
    self._next = (self._next + 1) % len(self._writers)

  def close(self, commit: bool):
    for w in self._writers:
      w.close()
    for p in self.paths:
      if commit:
        os.replace(p + ".tmp", p)
      elif os.path.exists(p + ".tmp"):
        os.remove(p + ".tmp")


class _Stats:
  """Running per-channel sums for mean/std (float64)."""

  def __init__(self):
    self.count = 0
    self.sums = {}

  def add(self, r: ItemResult):
    self.count += r.num_frames
    for k in ("embedding_sum", "embedding_sumsq", "log_stft_sum",
              "log_stft_sumsq"):
      v = getattr(r, k)
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


def _atomic_write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
    f.write("\n")
  os.replace(tmp, path)


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
  """Runs the whole preprocessing; returns the dataset_info dict.

  A re-run of a completed run with the same manifest and settings returns the
  existing dataset_info without work; anything else (an interrupted run, other
  settings with `overwrite`) rewrites the shards. Raises PreprocessError when
  no item, or more than `max_rejected_fraction` of them, is usable (the
  rejected-items report is written first).
  """
  embedder_options = dict(embedder_options or {})
  settings = dict(embedder=embedder_spec, options=embedder_options,
                  stft=config.to_dict(), split_by=split_by,
                  valid_fraction=valid_fraction, test_fraction=test_fraction,
                  seed=seed, frame_tolerance=frame_tolerance,
                  items_per_shard=items_per_shard)
  fingerprint = _fingerprint(manifest, settings)
  info_path = os.path.join(out_dir, records.DATASET_INFO)
  if os.path.exists(info_path):
    with open(info_path) as f:
      old = json.load(f)
    if old.get("fingerprint") == fingerprint:
      if progress:
        print(f"{out_dir}: already complete for this manifest and settings; "
              "nothing to do")
      return old
    if not overwrite:
      raise PreprocessError(
          f"{out_dir} holds a dataset made from another manifest or other "
          "settings; pass --overwrite to replace it, or choose another --out_dir")
  os.makedirs(out_dir, exist_ok=True)
  # The info file goes first so that a half-rewritten directory never looks
  # complete; stale shards and temporaries of an earlier run go too.
  for name in os.listdir(out_dir):
    if name == records.DATASET_INFO or name.endswith(
        (records.SHARD_SUFFIX, records.SHARD_SUFFIX + ".tmp")):
      os.remove(os.path.join(out_dir, name))

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
  centre_offset_ms = 1000.0 * (
      (config.frame_length - grid.frame_length) / 2.0 +
      (grid.frame_length // 2 if grid.center else 0)) / config.sample_rate
  if centre_offset_ms and progress:
    print(f"note: embedder frames ({grid.to_dict()}) and STFT frames "
          f"(window {config.frame_length}) have centres {centre_offset_ms:+.2f} "
          "ms apart")
  if embedder.dim is None:
    # Embedders that learn their dimension from the data (npy, a SavedModel
    # without a declared dim): fix it here, by majority over a sample of
    # items, so that every worker enforces the same one.
    dim = _majority_dim(items, embedder, config)
    embedder_options["dim"] = dim
    embedder = embedders.get_embedder(embedder_spec, config,
                                      **embedder_options)
  splits = assign_splits(items, split_by, valid_fraction, test_fraction, seed)
  speakers = sorted({it["speaker"] for it in items if it.get("speaker")})
  speaker_index = {s: i for i, s in enumerate(speakers)}
  planned = collections.Counter(splits.values())
  writers = {s: _ShardWriter(out_dir, s,
                             max(1, math.ceil(planned[s] / items_per_shard)))
             for s in records.SPLITS if planned[s]}
  tasks = []
  for it in items:
    it = dict(it, _split=splits[it["id"]])
    tasks.append((it, speaker_index.get(it.get("speaker"), -1)))

  counts = {s: collections.Counter() for s in writers}
  lengths = collections.defaultdict(list)
  train_stats = _Stats()
  rejected = []
  trimmed = collections.Counter()
  workers = num_workers or min(os.cpu_count() or 1, 8)
  start = time.time()
  committed = False
  try:
    bar = tqdm.tqdm(total=len(tasks), desc="preprocess", unit="item",
                    disable=not progress)
    for r in _iterate(tasks, embedder_spec, embedder_options, config,
                      frame_tolerance, workers):
      bar.update(1)
      if not r.ok:
        rejected.append(r)
        continue
      writers[r.split].write(r.example)
      c = counts[r.split]
      c["num_examples"] += 1
      c["num_frames"] += r.num_frames
      c["num_samples"] += r.num_samples
      lengths[r.split].append(r.num_frames)
      if r.trimmed_frames:
        trimmed["count"] += 1
        trimmed["frames"] += r.trimmed_frames
      if r.split == "train":
        train_stats.add(r)
    bar.close()
    usable = sum(c["num_examples"] for c in counts.values())
    report = os.path.join(out_dir, records.REJECTED_REPORT)
    with open(report + ".tmp", "w") as f:
      for r in rejected:
        f.write(json.dumps({"id": r.item_id, "split": r.split,
                            "reason": r.reason, "detail": r.detail}) + "\n")
    os.replace(report + ".tmp", report)
    if usable == 0 or counts.get("train", {}).get("num_examples", 0) == 0:
      raise PreprocessError(
          f"no usable training item among {len(items)}; see {report}")
    if len(rejected) > max_rejected_fraction * len(items):
      raise PreprocessError(
          f"{len(rejected)} of {len(items)} items rejected, more than "
          f"--max_rejected_fraction={max_rejected_fraction}; see {report}")
    committed = True
  finally:
    for w in writers.values():
      w.close(commit=committed)

  by_reason = collections.Counter(r.reason for r in rejected)
  info = {
      "version": 1,
      "fingerprint": fingerprint,
      "manifest": os.path.abspath(manifest),
      "stft": config.to_dict(),
      "embedder": embedder.describe(),
      "split_by": split_by,
      "seed": seed,
      "frame_tolerance": frame_tolerance,
      "centre_offset_ms": centre_offset_ms,
      "speakers": speakers,
      "splits": {
          s: {"num_examples": counts[s]["num_examples"],
              "num_frames": counts[s]["num_frames"],
              "num_audio_seconds": counts[s]["num_samples"] / config.sample_rate,
              "num_shards": len(writers[s].names),
              "num_speakers": len({it["speaker"] for it in items
                                   if splits[it["id"]] == s and
                                   it.get("speaker")}),
              "files": writers[s].names}
          for s in writers},
      "stats": train_stats.finish(),
      "length_quantiles": {
          s: {str(q): float(np.quantile(v, q)) for q in QUANTILES}
          for s, v in lengths.items()},
      "rejected": {"count": len(rejected), "by_reason": dict(by_reason),
                   "report": records.REJECTED_REPORT},
      "trimmed": {"count": trimmed["count"], "frames": trimmed["frames"]},
      "num_items": len(items),
      "seconds": round(time.time() - start, 2),
  }
  _atomic_write_json(info_path, info)
  if progress:
    total = sum(c["num_examples"] for c in counts.values())
    per_split = ", ".join(f"{s} {counts[s]['num_examples']}" for s in counts)
    print(f"wrote {total} examples ({per_split}) to {out_dir} in "
          f"{info['seconds']:.1f}s; rejected {len(rejected)}"
          + (f" ({dict(by_reason)}), see {report}" if rejected else "")
          + (f"; trimmed {trimmed['count']} items by {trimmed['frames']} frames"
             if trimmed["count"] else ""))
  return info
