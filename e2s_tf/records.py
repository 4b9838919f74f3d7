"""The TFRecord example schema (documented in tfrecords/README.md).

One `tf.train.Example` per item. Arrays are stored as raw little-endian
float32 bytes with their shapes in int64 features, which parses much faster
than float lists.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

DATASET_INFO = "dataset_info.json"
# The layout of dataset_info.json and of the records (tfrecords/README.md):
# 3 adds `text` to the records; 2 added the frame mapping.
SCHEMA_VERSION = 3
REJECTED_REPORT = "rejected.jsonl"
SPLITS = ("train", "valid", "test")
SHARD_SUFFIX = ".tfrecord"

FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "speaker": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "speaker_index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    # Embedding frames on the embedder's own grid; absent (-1) in records
    # written before the frame mapping: then equal to num_frames.
    "embedding_frames": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "embedding_dim": tf.io.FixedLenFeature([], tf.int64),
    "num_bins": tf.io.FixedLenFeature([], tf.int64),
    "num_samples": tf.io.FixedLenFeature([], tf.int64),
    "embedding": tf.io.FixedLenFeature([], tf.string),
    "log_stft": tf.io.FixedLenFeature([], tf.string),
    "audio": tf.io.FixedLenFeature([], tf.string),
    # What was said (the manifest's `text`, UTF-8); empty when the manifest
    # has none, for a piece of a longer item, and in records written before
    # dataset_info.json version 3.
    "text": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


def _bytes(v: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def _raw(a: np.ndarray) -> bytes:
  return np.ascontiguousarray(a, dtype="<f4").tobytes()


def serialize_example(item_id: str, embedding: np.ndarray, log_stft: np.ndarray,
                      audio: np.ndarray, speaker: str = "",
                      speaker_index: int = -1, text: str = "") -> bytes:
  """Serialises one item. `embedding` [T_e, D] on the embedder's grid,
  `log_stft` [T, F], `audio` [N].

  T_e equals T when the embedder's frames are the STFT's (identity
  mapping); otherwise the two counts are those of `alignment.FrameMapping`.
  """
  embedding = np.asarray(embedding, np.float32)
  log_stft = np.asarray(log_stft, np.float32)
  audio = np.asarray(audio, np.float32).reshape(-1)
  if embedding.ndim != 2 or log_stft.ndim != 2:
    raise ValueError(f"{item_id}: embedding and log_stft must be 2-D, got "
                     f"{embedding.shape} and {log_stft.shape}")
  feature = {
      "id": _bytes(item_id.encode()),
      "speaker": _bytes((speaker or "").encode()),
      "speaker_index": _int(speaker_index),
      "num_frames": _int(log_stft.shape[0]),
      "embedding_frames": _int(embedding.shape[0]),
      "embedding_dim": _int(embedding.shape[1]),
      "num_bins": _int(log_stft.shape[1]),
      "num_samples": _int(audio.shape[0]),
      "embedding": _bytes(_raw(embedding)),
      "log_stft": _bytes(_raw(log_stft)),
      "audio": _bytes(_raw(audio)),
      "text": _bytes((text or "").encode("utf-8")),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized: tf.Tensor, with_audio: bool = False
                  ) -> dict[str, tf.Tensor]:
  """Parses one serialised example into tensors.

  Returns:
    dict with `id` (string), `speaker` (string), `text` (string, empty when
    unknown), `speaker_index` (int32),
    `length` (int32 STFT frames T), `embedding_length` (int32 frames T_e of
    the embedding on its own grid), `embedding` [T_e, D] f32, `log_stft`
    [T, F] f32, and `audio` [N] f32 when `with_audio`.
  """
  f = tf.io.parse_single_example(serialized, FEATURES)
  t = tf.cast(f["num_frames"], tf.int32)
  t_e = tf.cast(f["embedding_frames"], tf.int32)
  t_e = tf.where(t_e < 0, t, t_e)
  d = tf.cast(f["embedding_dim"], tf.int32)
  b = tf.cast(f["num_bins"], tf.int32)
  out = {
      "id": f["id"],
      "speaker": f["speaker"],
      "text": f["text"],
      "speaker_index": tf.cast(f["speaker_index"], tf.int32),
      "length": t,
      "embedding_length": t_e,
      "embedding": tf.reshape(
          tf.io.decode_raw(f["embedding"], tf.float32, little_endian=True),
          tf.stack([t_e, d])),
      "log_stft": tf.reshape(
          tf.io.decode_raw(f["log_stft"], tf.float32, little_endian=True),
          tf.stack([t, b])),
  }
  if with_audio:
    out["audio"] = tf.io.decode_raw(f["audio"], tf.float32, little_endian=True)
  return out


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def read_dataset_info(data_dir: str) -> dict[str, Any]:
  """Loads `data_dir/dataset_info.json` with a clear error when absent."""
  path = os.path.join(data_dir, DATASET_INFO)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} not found: is {data_dir!r} an output of e2s_tf.preprocess?")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def split_files(data_dir: str, split: str,
                info: Optional[Mapping[str, Any]] = None) -> list[str]:
  """Shard paths of `split`, as listed in dataset_info.json."""
  info = info or read_dataset_info(data_dir)
  if split not in info["splits"]:
    raise ValueError(f"split {split!r} not in {data_dir}; have "
                     f"{sorted(info['splits'])}")
  files = [os.path.join(data_dir, f) for f in info["splits"][split]["files"]]
  missing = [f for f in files if not tf.io.gfile.exists(f)]
  if missing:
    raise FileNotFoundError(f"shards listed in dataset_info.json are missing: "
                            f"{missing[:3]}")
  return files


def split_lengths(data_dir: str, split: str,
                  info: Optional[Mapping[str, Any]] = None) -> np.ndarray:
  """`[items]` int frame counts of a split, read from its shards."""
  files = split_files(data_dir, split, info)
  feature = {"num_frames": FEATURES["num_frames"]}
  ds = tf.data.TFRecordDataset(files).map(
      lambda s: tf.io.parse_single_example(s, feature)["num_frames"],
      num_parallel_calls=tf.data.AUTOTUNE)
  return np.fromiter(ds.as_numpy_iterator(), np.int64)


class CorruptShardError(ValueError):
  """A shard that cannot be read to its end; the message names the file."""


def _shard_error(path: str, error: Exception) -> CorruptShardError:
  reason = str(getattr(error, "message", error)).splitlines()[0]
  # TensorFlow wraps the reason in the op's name: keep what a user can read.
  reason = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "", reason).strip(" '")
  return CorruptShardError(
      f"{path} is truncated or corrupted ({reason}); re-run "
      "e2s_tf.preprocess into its folder to rebuild it")


def iterate_records(paths: Sequence[str]) -> Iterator[tf.Tensor]:
  """The serialized records of `paths`, in order, one shard at a time.

  Raises:
    CorruptShardError: a shard is truncated or fails its CRC; names the file.
  """
  for path in paths:
    try:
      for raw in tf.data.TFRecordDataset(path):
        yield raw
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise _shard_error(path, e) from None


def read_examples(paths: Sequence[str], with_audio: bool = False
                  ) -> Iterator[dict[str, Any]]:
  """The examples of `paths`, in order, parsed into NumPy values.

  Yields:
    dicts as `parse_example`'s, with `id`, `speaker` and `text` as `str` (UTF-8,
    undecodable bytes replaced), `speaker_index` and `length` as `int`, and
    the arrays as `np.ndarray`.

  Raises:
    CorruptShardError: a shard is truncated or fails its CRC; names the file.
  """
  for raw in iterate_records(paths):
    ex = parse_example(raw, with_audio=with_audio)
    out = {k: v.numpy() for k, v in ex.items()}
    for key in ("id", "speaker", "text"):
      out[key] = out[key].decode("utf-8", errors="replace")
    for key in ("speaker_index", "length", "embedding_length"):
      out[key] = int(out[key])
    yield out


def find_corrupt_shard(paths: Sequence[str]) -> Optional[CorruptShardError]:
  """Reads every shard of `paths` to its end: the first corrupt one's error.

  For a `tf.errors.DataLossError` raised inside a tf.data pipeline (which
  does not say which file), to tell the user which shard it was.
  """
  try:
    for _ in iterate_records(paths):
      pass
  except CorruptShardError as e:
    return e
  return None
