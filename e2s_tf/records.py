"""The TFRecord example schema (documented in tfrecords/README.md).

One `tf.train.Example` per item. A record stores what cannot be recomputed,
compactly: the audio as 16-bit PCM, the embedding as raw little-endian
float16 or float32 bytes (shapes in int64 features, which parse much faster
than float lists), the text and the speaker. The aligned log-STFT is a
function of the audio and the StftConfig: `parse_example` computes it
(`spectral.log_stft`, the same function preprocessing used for the
statistics), so it costs no bytes on disk.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import spectral

DATASET_INFO = "dataset_info.json"
# The layout of dataset_info.json and of the records (tfrecords/README.md):
# 4 stores the audio as 16-bit PCM and the embedding as float16 or float32,
# and no log-STFT (computed from the audio when read); 3 added `text`; 2 the
# frame mapping.
SCHEMA_VERSION = 4
REJECTED_REPORT = "rejected.jsonl"
SPLITS = ("train", "valid", "test")
SHARD_SUFFIX = ".tfrecord"
# The embedding's storage types (`--embedding_dtype` of preprocess).
EMBEDDING_DTYPES = ("float16", "float32")
DEFAULT_EMBEDDING_DTYPE = "float16"
# One step of the 16-bit audio for audio within [-1, 1]: 16-bit PCM read as
# float (what soundfile gives) is stored without loss.
PCM_STEP = 1.0 / 32768.0

FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "speaker": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "speaker_index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    # Embedding frames on the embedder's own grid.
    "embedding_frames": tf.io.FixedLenFeature([], tf.int64),
    "embedding_dim": tf.io.FixedLenFeature([], tf.int64),
    "embedding_dtype": tf.io.FixedLenFeature([], tf.string),
    "num_samples": tf.io.FixedLenFeature([], tf.int64),
    "embedding": tf.io.FixedLenFeature([], tf.string),
    "audio": tf.io.FixedLenFeature([], tf.string),
    # The amplitude of one PCM step: sample = int16 value * audio_step.
    "audio_step": tf.io.FixedLenFeature([], tf.float32),
    # What was said (the manifest's `text`, UTF-8); empty when the manifest
    # has none and for a piece of a longer item.
    "text": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


class SchemaError(ValueError):
  """A dataset or record of another schema version; says how to rebuild."""


def _bytes(v: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def _float(v: float) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))


def quantize_audio(audio: np.ndarray) -> tuple[np.ndarray, float]:
  """`[N]` float audio -> (`[N]` int16 PCM, the amplitude of one step).

  Audio within [-1, 32767/32768] gets the step 2^-15 (16-bit PCM read as
  float comes back exactly, -32768 included); louder audio (a resampled or
  float file) the smallest power of two that keeps its peaks within 16
  bits, so nothing clips and quantising the stored audio again changes
  nothing.

  Raises:
    ValueError: NaN or Inf samples (preprocessing rejects them earlier).
  """
  audio = np.asarray(audio, np.float64).reshape(-1)
  if not np.all(np.isfinite(audio)):
    raise ValueError("audio with NaN/Inf samples cannot be quantised")
  high = float(np.max(audio)) if audio.size else 0.0
  low = float(np.min(audio)) if audio.size else 0.0
  step = PCM_STEP
  # 16 bits hold -32768 .. 32767 steps: a full-scale negative sample of a
  # 16-bit file (-1.0) fits at 2^-15.
  while high > 32767.0 * step or low < -32768.0 * step:
    step *= 2.0
  pcm = np.clip(np.rint(audio / step), -32768, 32767).astype("<i2")
  return pcm, step


def dequantize_audio(pcm: np.ndarray, step: float) -> np.ndarray:
  """The float32 audio a record's PCM stands for (as `parse_example`)."""
  return np.asarray(pcm, np.float32) * np.float32(step)


def stored_audio(audio: np.ndarray) -> np.ndarray:
  """`audio` as a record keeps it: quantised to 16 bits and back, float32.

  Preprocessing embeds and measures this, so the statistics and the
  embedding are those of the audio the pipeline reads.
  """
  return dequantize_audio(*quantize_audio(audio))


def stored_embedding(embedding: np.ndarray,
                     embedding_dtype: str = DEFAULT_EMBEDDING_DTYPE
                     ) -> np.ndarray:
  """`embedding` as a record of `embedding_dtype` gives it back (float32).

  Raises:
    ValueError: a value that `embedding_dtype` cannot hold (beyond float16's
      range), or an unknown `embedding_dtype`.
  """
  if embedding_dtype not in EMBEDDING_DTYPES:
    raise ValueError(f"embedding_dtype must be one of {EMBEDDING_DTYPES}, "
                     f"got {embedding_dtype!r}")
  embedding = np.asarray(embedding, np.float32)
  if embedding_dtype == "float32":
    return embedding
  half = embedding.astype(np.float16)
  if not np.all(np.isfinite(half)):
    raise ValueError(
        f"the embedding does not fit {embedding_dtype} (largest magnitude "
        f"{np.max(np.abs(embedding)):.4g}); preprocess with "
        "--embedding_dtype=float32")
  return half.astype(np.float32)


def serialize_example(item_id: str, embedding: np.ndarray, audio: np.ndarray,
                      num_frames: int, speaker: str = "",
                      speaker_index: int = -1, text: str = "",
                      embedding_dtype: str = DEFAULT_EMBEDDING_DTYPE) -> bytes:
  """Serialises one item. `embedding` [T_e, D] on the embedder's grid,
  `audio` [N] at the grid's sample rate, `num_frames` T its STFT frames.

  The audio is stored as 16-bit PCM (`quantize_audio`), the embedding as
  `embedding_dtype`. T_e equals T when the embedder's frames are the STFT's
  (identity mapping); otherwise the two counts are those of
  `alignment.FrameMapping`.
  """
  embedding = np.asarray(embedding, np.float32)
  if embedding.ndim != 2:
    raise ValueError(f"{item_id}: embedding must be 2-D, got "
                     f"{embedding.shape}")
  try:
    stored = stored_embedding(embedding, embedding_dtype).astype(
        "<f2" if embedding_dtype == "float16" else "<f4")
  except ValueError as e:
    raise ValueError(f"{item_id}: {e}") from None
  pcm, step = quantize_audio(audio)
  feature = {
      "id": _bytes(item_id.encode()),
      "speaker": _bytes((speaker or "").encode()),
      "speaker_index": _int(speaker_index),
      "num_frames": _int(num_frames),
      "embedding_frames": _int(embedding.shape[0]),
      "embedding_dim": _int(embedding.shape[1]),
      "embedding_dtype": _bytes(embedding_dtype.encode()),
      "num_samples": _int(pcm.shape[0]),
      "embedding": _bytes(np.ascontiguousarray(stored).tobytes()),
      "audio": _bytes(pcm.tobytes()),
      "audio_step": _float(step),
      "text": _bytes((text or "").encode("utf-8")),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def _decode_embedding(raw: tf.Tensor, dtype: tf.Tensor) -> tf.Tensor:
  return tf.cond(
      tf.equal(dtype, b"float16"),
      lambda: tf.cast(tf.io.decode_raw(raw, tf.float16, little_endian=True),
                      tf.float32),
      lambda: tf.io.decode_raw(raw, tf.float32, little_endian=True))


def parse_example(serialized: tf.Tensor,
                  stft_config: Optional[spectral.StftConfig] = None, *,
                  with_audio: bool = False) -> dict[str, tf.Tensor]:
  """Parses one serialised example into tensors.

  Args:
    serialized: a record of this schema version.
    stft_config: the dataset's StftConfig (`dataset_info.json["stft"]`):
      then the log-STFT is computed from the audio; None: no `log_stft`.
    with_audio: also return the audio.

  Returns:
    dict with `id` (string), `speaker` (string), `text` (string, empty when
    unknown), `speaker_index` (int32), `length` (int32 STFT frames T),
    `embedding_length` (int32 frames T_e of the embedding on its own grid),
    `embedding` [T_e, D] f32, `log_stft` [T, F] f32 (with `stft_config`:
    `spectral.log_stft` of the audio, ln(max(|X|, 1e-5))), and `audio` [N]
    f32 (with `with_audio`).
  """
  f = tf.io.parse_single_example(serialized, FEATURES)
  t = tf.cast(f["num_frames"], tf.int32)
  t_e = tf.cast(f["embedding_frames"], tf.int32)
  d = tf.cast(f["embedding_dim"], tf.int32)
  out = {
      "id": f["id"],
      "speaker": f["speaker"],
      "text": f["text"],
      "speaker_index": tf.cast(f["speaker_index"], tf.int32),
      "length": t,
      "embedding_length": t_e,
      "embedding": tf.reshape(
          _decode_embedding(f["embedding"], f["embedding_dtype"]),
          tf.stack([t_e, d])),
  }
  if stft_config is None and not with_audio:
    return out
  audio = tf.cast(tf.io.decode_raw(f["audio"], tf.int16, little_endian=True),
                  tf.float32) * f["audio_step"]
  if stft_config is not None:
    # The audio covers exactly the T frames: (T - 1) * hop + window samples.
    log_stft = spectral.log_stft(audio, stft_config)
    check = tf.debugging.Assert(
        tf.equal(tf.shape(log_stft)[0], t),
        ["record's audio does not cover its num_frames: item", f["id"]])
    with tf.control_dependencies([check]):
      out["log_stft"] = tf.identity(log_stft)
  if with_audio:
    out["audio"] = audio
  return out


def stft_config(info: Mapping[str, Any]) -> spectral.StftConfig:
  """The StftConfig of a dataset_info.json (`info["stft"]`)."""
  return spectral.StftConfig.from_dict(info["stft"])


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def read_dataset_info(data_dir: str) -> dict[str, Any]:
  """Loads `data_dir/dataset_info.json` with a clear error when absent."""
  path = os.path.join(data_dir, DATASET_INFO)
  fileio.load_filesystem(path)  # s3://, hdfs://: tensorflow-io's plugins
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} not found: is {data_dir!r} an output of e2s_tf.preprocess?")
  with tf.io.gfile.GFile(path) as f:
    info = json.load(f)
  check_version(info, data_dir)
  return info


def check_version(info: Mapping[str, Any], data_dir: str) -> None:
  """Refuses a dataset whose records are not of this schema version.

  Raises:
    SchemaError: names the folder, both versions, and the command that
      rebuilds it in place (with `--overwrite`: the fingerprint covers the
      version, so the folder counts as one of other settings; preprocess
      replaces only its own files there).
  """
  version = info.get("version", 1)
  if version == SCHEMA_VERSION:
    return
  manifest = info.get("manifest") or "MANIFEST"
  embedder = (info.get("embedder") or {}).get("spec") or "EMBEDDER"
  if isinstance(version, int) and version < SCHEMA_VERSION:
    why = (f"its records are of schema version {version}, which this version "
           f"of e2s_tf no longer reads (version {SCHEMA_VERSION} stores 16-bit "
           "audio and computes the log-STFT from it)")
  else:
    why = (f"its records are of schema version {version!r}, written by "
           f"another version of e2s_tf (this one reads {SCHEMA_VERSION})")
  raise SchemaError(
      f"{os.path.join(data_dir, DATASET_INFO)}: {why}; rebuild it with "
      f"`python -m e2s_tf.preprocess --manifest={manifest} --out_dir={data_dir} "
      f"--embedder={embedder} --overwrite` and the other settings it was made "
      "with (its dataset_info.json names them)")


def split_files(data_dir: str, split: str,
                info: Optional[Mapping[str, Any]] = None) -> list[str]:
  """Shard paths of `split`, as listed in dataset_info.json."""
  fileio.load_filesystem(data_dir)
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


def read_examples(paths: Sequence[str], with_audio: bool = False,
                  stft_config: Optional[spectral.StftConfig] = None
                  ) -> Iterator[dict[str, Any]]:
  """The examples of `paths`, in order, parsed into NumPy values.

  Args:
    paths: shards of this schema version.
    with_audio: also give `audio`.
    stft_config: the dataset's StftConfig (`stft_config(info)`): also give
      `log_stft`, computed from the audio.

  Yields:
    dicts as `parse_example`'s, with `id`, `speaker` and `text` as `str` (UTF-8,
    undecodable bytes replaced), `speaker_index` and `length` as `int`, and
    the arrays as `np.ndarray`.

  Raises:
    CorruptShardError: a shard is truncated or fails its CRC; names the file.
    SchemaError: a record of another schema version; names the file.
  """
  for path in paths:
    for raw in iterate_records([path]):
      try:
        ex = parse_example(raw, stft_config, with_audio=with_audio)
      except tf.errors.InvalidArgumentError as e:
        reason = str(getattr(e, "message", e)).splitlines()[0]
        raise SchemaError(
            f"{path}: a record cannot be parsed ({reason}): it is of another "
            f"schema version than {SCHEMA_VERSION} or damaged; re-run "
            "e2s_tf.preprocess into its folder to rebuild it") from None
      yield _to_numpy(ex)


def _to_numpy(ex: Mapping[str, tf.Tensor]) -> dict[str, Any]:
  out = {k: v.numpy() for k, v in ex.items()}
  for key in ("id", "speaker", "text"):
    out[key] = out[key].decode("utf-8", errors="replace")
  for key in ("speaker_index", "length", "embedding_length"):
    out[key] = int(out[key])
  return out


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
