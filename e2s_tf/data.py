"""Input pipeline: TFRecord shards -> normalised, batched training examples.

`make_dataset` reads the shards of one split written by `e2s_tf.preprocess`,
parses them with `records.parse_example` (which computes each item's log-STFT
from its 16-bit audio, in the parallel map, before batching), groups items into batches with one of
the batching modes of `batching.MODES`, and normalises both streams with the
train-split
statistics of `dataset_info.json`. Every batch is a dict:

  embedding     [batch, frames, dim]   f32 normalised, padded with 0 (the mean)
  log_stft      [batch, frames, bins]  f32 normalised, padded with normalised
                                       log-silence (spectral.LOG_SILENCE)
  mask          [batch, frames]        f32, 1 on valid frames
  length        [batch]                i32 valid frames (= mask.sum(-1))
  id            [batch]                string item ids
  speaker       [batch]                i32 speaker_index   (with_speaker=True)
  audio         [batch, samples]       f32, 0 where padded (with_audio=True)
  audio_length  [batch]                i32                 (with_audio=True)

With `map_frames=False` (mode `bucket` only) the embedding stays on the
embedder's own grid, as the records keep it: `embedding` is then
`[batch, embedding_frames, dim]`, and the batch adds

  embedding_length  [batch]                   i32 the embedding's frames
  embedding_mask    [batch, embedding_frames] f32, 1 on valid frames

while `log_stft`, `mask` and `length` stay on the STFT frames.

The batching modes (`bucket`, the default; `crop`; the original
`repeat_longest`, `crop_shortest`, `mean_length`) are in `e2s_tf.batching`
(`batching.MODES`; docs/batching.md says what each costs). With
`max_frames`, an item longer than that is first cut into consecutive windows
of at most `max_frames` frames (as equal as possible, every frame in exactly
one window), each batched as an item of its own: one long item can then not
make a batch larger than the frame budget (`bucket` with
`max_frames <= frames_per_batch` keeps every batch within
`frames_per_batch` frames, padding included).

The statistics are used as dataset_info.json holds them (preprocessing
floors every standard deviation, `preprocessing.stats.MIN_STD`); a standard
deviation that is not positive is refused.

`filler_share` runs one epoch of a mode and counts the frames it delivers that
are padding or repetition, and the source frames it throws away.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from e2s_tf import alignment
from e2s_tf import batching
from e2s_tf import records
from e2s_tf import spectral

AUTOTUNE = tf.data.AUTOTUNE
# Modes that batch the two streams of an item independently (each padded to
# its batch's longest), so an embedding off the STFT grid can pass unmapped.
NATIVE_GRID_MODES = ("bucket",)
# The schema's parser, re-exported: tfrecords/README.md names it here.
parse_example = records.parse_example


# ----------------------------------------------------------------------------
# Normalisation.


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Per-dimension / per-bin standardisation with the train-split statistics.

  Works on NumPy arrays and on tensors (eager or in a graph: the statistics
  become constants, so an exported model has them baked in).

  Attributes:
    embedding_mean, embedding_std: `[dim]` float32.
    log_stft_mean, log_stft_std: `[bins]` float32 (std positive).
  """

  embedding_mean: np.ndarray
  embedding_std: np.ndarray
  log_stft_mean: np.ndarray
  log_stft_std: np.ndarray

  @classmethod
  def from_info(cls, info: Mapping[str, Any], source: str = "dataset_info.json"
                ) -> "Normalizer":
    """Builds the normaliser from a loaded dataset_info.json (its `stats`)."""
    stats = info.get("stats")
    keys = ("embedding_mean", "embedding_std", "log_stft_mean", "log_stft_std")
    if not stats or any(k not in stats for k in keys):
      raise ValueError(f"{source}: `stats` must hold {', '.join(keys)}")
    arrays = {k: np.asarray(stats[k], np.float32).reshape(-1) for k in keys}
    for stream in ("embedding", "log_stft"):
      mean, std = arrays[f"{stream}_mean"], arrays[f"{stream}_std"]
      if mean.shape != std.shape:
        raise ValueError(f"{source}: {stream}_mean has {mean.size} values but "
                         f"{stream}_std has {std.size}")
      if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise ValueError(f"{source}: non-finite {stream} statistics")
      if np.any(std <= 0):
        index = int(np.argmax(std <= 0))
        raise ValueError(
            f"{source}: {stream}_std must be positive, got {std[index]} at "
            f"index {index}; re-run e2s_tf.preprocess to recompute the "
            "statistics")
    return cls(**arrays)

  @classmethod
  def from_data_dir(cls, data_dir: str) -> "Normalizer":
    return cls.from_info(records.read_dataset_info(data_dir),
                         source=f"{data_dir}/{records.DATASET_INFO}")

  @property
  def embedding_dim(self) -> int:
    return int(self.embedding_mean.shape[0])

  @property
  def num_bins(self) -> int:
    return int(self.log_stft_mean.shape[0])

  def normalize_embedding(self, x):
    """`[..., dim]` raw -> normalised."""
    return (x - self.embedding_mean) / self.embedding_std

  def denormalize_embedding(self, x):
    """`[..., dim]` normalised -> raw."""
    return x * self.embedding_std + self.embedding_mean

  def normalize_log_stft(self, x):
    """`[..., bins]` raw log-magnitude -> normalised."""
    return (x - self.log_stft_mean) / self.log_stft_std

  def denormalize_log_stft(self, x):
    """`[..., bins]` normalised -> raw log-magnitude."""
    return x * self.log_stft_std + self.log_stft_mean

  @property
  def log_silence(self) -> np.ndarray:
    """`[bins]` float32: normalised log-silence, the padding of `log_stft`."""
    silence = np.full_like(self.log_stft_mean, spectral.LOG_SILENCE)
    return self.normalize_log_stft(silence).astype(np.float32)


# ----------------------------------------------------------------------------
# The pipeline.


def _dims(info: Mapping[str, Any], source: str
          ) -> tuple[int, int, spectral.StftConfig]:
  """(embedding dim, bins, StftConfig) declared by dataset_info.json."""
  try:
    stft = spectral.StftConfig.from_dict(info["stft"])
    dim = int(info["embedder"]["dim"])
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{source}: needs `stft` (a StftConfig) and "
                     f"`embedder.dim`: {e}") from e
  return dim, stft.num_bins, stft


def _finish(batch: dict[str, tf.Tensor], normalizer: Optional[Normalizer],
            keep: Sequence[str], map_frames: bool = True
            ) -> dict[str, tf.Tensor]:
  """Mask, padding values and normalisation of a zero-padded batch
  (`map_frames=False`: the embedding masked by its own `embedding_length`)."""
  frames = tf.shape(batch["embedding" if map_frames else "log_stft"])[1]
  mask = spectral.frame_mask(batch["length"], frames)
  valid = mask[:, :, tf.newaxis] > 0
  embedding_valid = valid
  if not map_frames:
    embedding_mask = spectral.frame_mask(batch["embedding_length"],
                                         tf.shape(batch["embedding"])[1])
    embedding_valid = embedding_mask[:, :, tf.newaxis] > 0
  embedding, log_stft = batch["embedding"], batch["log_stft"]
  if normalizer is None:
    silence = tf.constant(spectral.LOG_SILENCE, tf.float32)
  else:
    embedding = normalizer.normalize_embedding(embedding)
    log_stft = normalizer.normalize_log_stft(log_stft)
    silence = tf.constant(normalizer.log_silence)
  out = {
      "embedding": tf.where(embedding_valid, embedding, 0.0),
      "log_stft": tf.where(valid, log_stft, silence),
      "mask": mask,
      "length": batch["length"],
  }
  if not map_frames:
    out["embedding_length"] = batch["embedding_length"]
    out["embedding_mask"] = embedding_mask
  for key in keep:
    out[key] = batch[key]
  return out


def make_dataset(data_dir: str,
                 split: str,
                 *,
                 mode: str = "bucket",
                 frames_per_batch: int = 8192,
                 batch_size: int = 32,
                 crop_frames: int = 128,
                 max_buckets: Optional[int] = 32,
                 mean_frames: Optional[int] = None,
                 max_frames: Optional[int] = None,
                 with_speaker: bool = False,
                 with_audio: bool = False,
                 shuffle: Optional[bool] = None,
                 shuffle_buffer: int = 1024,
                 repeat: bool = False,
                 deterministic: bool = False,
                 seed: int = 0,
                 normalize: bool = True,
                 num_parallel_reads: int = AUTOTUNE,
                 cache: Union[bool, str] = False,
                 drop_remainder: bool = False,
                 with_frame_counts: bool = False,
                 map_frames: bool = True) -> tf.data.Dataset:
  """Batched, normalised examples of one split (see the module docstring).

  Args:
    data_dir: output of `e2s_tf.preprocess` (dataset_info.json and shards).
    split: "train", "valid" or "test" (any split dataset_info.json lists).
    mode: a key of `batching.MODES`.
    frames_per_batch: `bucket`: frame budget of a batch (batch * frames).
    batch_size: items per batch of the fixed-size modes.
    crop_frames: `crop`: window length in frames.
    max_buckets: `bucket`: buckets at most, at equal steps of the train
      length quantiles (None: the steps of dataset_info["length_quantiles"]),
      merged until each expects a full batch per epoch
      (`bucket_upper_bounds`).
    mean_frames: `mean_length`: target length; None: the train split's mean.
    max_frames: items longer than this are cut into consecutive windows of
      at most this many frames before batching
      (`batching.cut_into_windows`); None
      keeps every item whole.
    with_speaker: add `speaker` [batch] int32; the dataset must have speakers.
    with_audio: add `audio` [batch, samples] and `audio_length` [batch].
    shuffle: shuffle shards and items; None: only for the train split.
    shuffle_buffer: items in the shuffle buffer.
    repeat: repeat forever.
    deterministic: fixed element order (tf.data determinism); with `seed`,
      shuffles and random crops are then reproducible.
    seed: seed of the shuffles and the random windows.
    normalize: standardise with the train-split stats; False: raw values.
    num_parallel_reads: shards read at once.
    cache: True caches parsed items in memory, a path caches them to a file.
    drop_remainder: drop short batches.
    with_frame_counts: add `source_frames` [batch] (distinct source frames
      delivered) and `original_length` [batch] (frames of the source item);
      used by `filler_share`.
    map_frames: map the embedding onto the STFT frames (the dataset's
      `frame_mapping`); False keeps it on the embedder's grid and adds
      `embedding_length` and `embedding_mask` (module docstring); only with
      the modes of `NATIVE_GRID_MODES` and without `max_frames`.

  Returns:
    a `tf.data.Dataset` of dicts (module docstring), prefetched.
  """
  if mode not in batching.MODES:
    known = "; ".join(f"{m.name}: {m.summary}"
                      for m in batching.MODES.values())
    raise ValueError(f"unknown batching mode {mode!r}; known: {known}")
  strategy = batching.MODES[mode]
  source = f"{data_dir}/{records.DATASET_INFO}"
  info = records.read_dataset_info(data_dir)
  files = records.split_files(data_dir, split, info)
  if not files:
    raise ValueError(f"{source}: split {split!r} has no shards")
  dim, bins, stft = _dims(info, source)
  if with_speaker and not info.get("speakers"):
    raise ValueError(f"{source}: with_speaker=True but the dataset lists no "
                     "speakers (was the manifest without `speaker`?)")
  if with_audio and not strategy.supports_audio:
    raise ValueError(f"with_audio=True is not supported by mode {mode!r}: "
                     "its repeated frames have no audio")
  if not map_frames and mode not in NATIVE_GRID_MODES:
    raise ValueError(
        f"map_frames=False is not supported by mode {mode!r}: it cuts, tiles "
        "or crops both streams at the same frames, which an embedding on its "
        f"own grid does not share; use one of {NATIVE_GRID_MODES}")
  if not map_frames and max_frames:
    raise ValueError(
        "map_frames=False does not combine with max_frames: cutting windows "
        "takes the same frames of both streams, and the embedding is not on "
        "the STFT frames")
  normalizer = Normalizer.from_info(info, source) if normalize else None
  if normalizer and (normalizer.embedding_dim,
                     normalizer.num_bins) != (dim, bins):
    raise ValueError(
        f"{source}: stats are for dim {normalizer.embedding_dim} and "
        f"{normalizer.num_bins} bins, the dataset has dim {dim} and "
        f"{bins} bins")
  if shuffle is None:
    shuffle = split == "train"

  mapping = alignment.FrameMapping.from_info(info)

  def parse(serialized):
    # The log-STFT is computed here, per item and unpadded, in the parallel
    # map (records keep only the audio; docs/scaling.md says why here).
    item = records.parse_example(serialized, stft, with_audio=with_audio)
    if map_frames and not mapping.identity:
      # Records keep the embedding on its own grid; the decoder sees it at
      # the STFT frames (the same mapping as the export's).
      mapped, _ = mapping.to_stft_frames(
          item["embedding"][tf.newaxis], item["embedding_length"][tf.newaxis],
          item["length"][tf.newaxis])
      item["embedding"] = mapped[0]
    # tf.debugging.Assert prints its data: the message and the item's id.
    checks = [
        tf.debugging.Assert(
            tf.equal(tf.shape(item["embedding"])[1], dim),
            [f"{source}: embedding_dim differs from embedder.dim={dim} in item",
             item["id"]]),
        tf.debugging.Assert(
            tf.equal(tf.shape(item["log_stft"])[1], bins),
            [f"{source}: num_bins differs from the stft's {bins} in item",
             item["id"]]),
    ]
    if with_speaker:
      checks.append(tf.debugging.Assert(
          item["speaker_index"] >= 0,
          [f"{source}: with_speaker=True but speaker_index is -1 in item",
           item["id"]]))
    with tf.control_dependencies(checks):
      out = {
          "id": tf.identity(item["id"]),
          "length": item["length"],
          "original_length": item["length"],
          "source_frames": item["length"],
          "embedding": tf.ensure_shape(item["embedding"], [None, dim]),
          "log_stft": tf.ensure_shape(item["log_stft"], [None, bins]),
      }
    if not map_frames:
      out["embedding_length"] = item["embedding_length"]
    if with_speaker:
      out["speaker"] = item["speaker_index"]
    if with_audio:
      out["audio"] = item["audio"]
      out["audio_length"] = tf.shape(item["audio"])[0]
    return out

  shards = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    shards = shards.shuffle(len(files), seed=seed)
  items = shards.interleave(
      tf.data.TFRecordDataset, cycle_length=num_parallel_reads,
      num_parallel_calls=AUTOTUNE, deterministic=deterministic)
  items = items.map(parse, num_parallel_calls=AUTOTUNE,
                    deterministic=deterministic)
  if cache:
    items = items.cache("" if cache is True else cache)
  if max_frames:
    items = batching.cut_into_windows(items, max_frames, stft, with_audio)
  if shuffle:
    items = items.shuffle(shuffle_buffer, seed=seed)
  if repeat:
    items = items.repeat()

  ctx = batching.BatchContext(
      data_dir=data_dir, split=split, info=info, stft=stft,
      batch_size=batch_size, frames_per_batch=frames_per_batch,
      crop_frames=crop_frames, max_buckets=max_buckets,
      mean_frames=mean_frames, max_frames=max_frames,
      drop_remainder=drop_remainder, with_audio=with_audio, seed=seed)
  batches = strategy.batch(items, ctx)

  keep = ["id"]
  keep += ["speaker"] if with_speaker else []
  keep += ["audio", "audio_length"] if with_audio else []
  keep += ["source_frames", "original_length"] if with_frame_counts else []
  batches = batches.map(lambda b: _finish(b, normalizer, keep, map_frames),
                        num_parallel_calls=AUTOTUNE,
                        deterministic=deterministic)
  options = tf.data.Options()
  options.deterministic = deterministic
  return batches.with_options(options).prefetch(AUTOTUNE)


# ----------------------------------------------------------------------------
# Filler accounting.


def filler_share(data_dir: str, split: str, mode: str,
                 **kwargs) -> dict[str, Any]:
  """Runs one epoch of `mode` and counts what its batches are made of.

  Args:
    data_dir, split, mode: as for `make_dataset`.
    **kwargs: further `make_dataset` arguments (not `repeat`).

  Returns:
    dict: `mode`, `num_batches`, `num_items`, `delivered_frames` (all frame
    slots of all batches: batch * frames), `real_frames` (distinct source
    frames delivered), `filler_frames` (padding and repeated frames),
    `filler_share` (= filler / delivered), `source_frames` (frames of the
    items read), `discarded_frames` (source frames never delivered: crops),
    `discarded_share` (= discarded / source), `mean_batch_size`.
  """
  if kwargs.get("repeat"):
    raise ValueError("filler_share runs one epoch: repeat must be False")
  kwargs.update(repeat=False, with_frame_counts=True, with_audio=False,
                normalize=False)
  ds = make_dataset(data_dir, split, mode=mode, **kwargs)
  batches = items = delivered = real = source = 0
  for batch in ds.as_numpy_iterator():
    b, t = batch["mask"].shape
    batches += 1
    items += b
    delivered += b * t
    real += int(batch["source_frames"].sum())
    source += int(batch["original_length"].sum())
  filler = delivered - real
  discarded = source - real
  return {
      "mode": mode,
      "num_batches": batches,
      "num_items": items,
      "delivered_frames": delivered,
      "real_frames": real,
      "filler_frames": filler,
      "filler_share": filler / delivered if delivered else 0.0,
      "source_frames": source,
      "discarded_frames": discarded,
      "discarded_share": discarded / source if source else 0.0,
      "mean_batch_size": items / batches if batches else 0.0,
  }
