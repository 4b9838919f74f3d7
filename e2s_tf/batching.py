"""Batching modes: how parsed items of different lengths become batches.

`MODES` holds the strategies `data.make_dataset` offers (see docs/batching.md
for what each costs):

  bucket          items grouped by length (bucket bounds from the train length
                  quantiles, merged until each fills a batch per epoch), batch
                  size per bucket from a frame budget, padded to the batch's
                  longest item. The default.
  crop            a random window of `crop_frames` frames, the same window in
                  both streams; shorter items padded and masked.
  repeat_longest  (original) items tiled up to the batch's longest item.
  crop_shortest   (original) items cut to the batch's shortest item.
  mean_length     (original) items cut or tiled to the dataset's mean length.

`cut_into_windows` first cuts items longer than `max_frames` into
consecutive windows, each batched as an item of its own, so that one long
item cannot make a batch larger than the frame budget.

A mode takes and gives dicts with `embedding` `[frames, dim]`, `log_stft`
`[frames, bins]`, `length`, `source_frames`, `original_length` (batched:
with a leading `[batch]` axis), zero-padded; `data.make_dataset` masks,
fixes the padding values and normalises afterwards.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from e2s_tf import records
from e2s_tf import spectral

AUTOTUNE = tf.data.AUTOTUNE
# Entries of dataset_info.json["length_quantiles"]: levels 0, 0.1, ..., 1.
_QUANTILE_TABLE_SIZE = 11


# ----------------------------------------------------------------------------
# Bucket bounds.


def _table_levels(n: int) -> np.ndarray:
  return np.linspace(0.0, 1.0, n)


def _quantile_table(info: Mapping[str, Any]
                    ) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """(levels, values) of the train split's length quantiles, None when absent.

  dataset_info["length_quantiles"] is, as preprocess writes it, per split a
  mapping {level: frames} ({"train": {"0.0": 61, "0.1": 80, ..., "1.0": 598}});
  a bare mapping {level: frames} or a list at evenly spaced levels 0, ..., 1
  is taken as the train split's.
  """
  table = info.get("length_quantiles")
  if isinstance(table, Mapping) and table and all(
      isinstance(v, Mapping) for v in table.values()):
    table = table.get("train")
  if not table:
    return None
  if isinstance(table, Mapping):
    pairs = sorted((float(q), float(v)) for q, v in table.items())
    levels, values = (np.asarray(x) for x in zip(*pairs))
  else:
    values = np.asarray(table, np.float64).reshape(-1)
    levels = _table_levels(values.size)
  if values.size < 2 or np.any(np.diff(values) < 0):
    raise ValueError(f"dataset_info.json: length_quantiles must be >= 2 "
                     f"non-decreasing values, got {table}")
  return levels, values


def length_quantiles(lengths: Sequence[int],
                     num: int = _QUANTILE_TABLE_SIZE) -> list[float]:
  """Frame counts at levels 0, 1/(num-1), ..., 1 (the schema's table)."""
  lengths = np.asarray(lengths, np.float64)
  if lengths.size == 0:
    raise ValueError("no lengths to take quantiles of")
  return [float(v) for v in np.quantile(lengths, _table_levels(num))]


def bucket_upper_bounds(quantiles: Sequence[float],
                        max_buckets: Optional[int] = None,
                        levels: Optional[Sequence[float]] = None,
                        *,
                        num_items: Optional[int] = None,
                        frames_per_batch: Optional[int] = None) -> list[int]:
  """Inclusive upper length bound of each bucket, increasing.

  Buckets hold equal shares of the items (quantile steps). With `num_items`
  and `frames_per_batch`, adjacent buckets are merged, from the shortest up,
  until each expects at least one full batch per epoch (its share of
  `num_items` >= its batch size `frames_per_batch // bound`): otherwise a
  bucket of short items, whose batches are large, would fill its batches with
  the same few items seen over several epochs.

  Args:
    quantiles: frame counts at the quantile `levels`.
    max_buckets: buckets before merging; the quantile function is
      interpolated linearly between the table's levels. None: one bucket per
      table step.
    levels: increasing quantile levels from 0 to 1; None: evenly spaced.
    num_items: items of the split the quantiles describe.
    frames_per_batch: the frame budget of a batch.

  Returns:
    distinct bounds; the last is the longest length of the table.
  """
  values = np.asarray(quantiles, np.float64)
  levels = (_table_levels(values.size) if levels is None
            else np.asarray(levels, np.float64))
  if levels.shape != values.shape or values.size < 2:
    raise ValueError(f"need >= 2 quantiles at as many levels, got "
                     f"{values.size} quantiles and {levels.size} levels")
  if max_buckets is not None:
    if max_buckets < 1:
      raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
    grid = _table_levels(max_buckets + 1)
    values, levels = np.interp(grid, levels, values), grid
  bounds = np.maximum(np.ceil(values), 1).astype(np.int64)
  if num_items is None or frames_per_batch is None:
    return [int(b) for b in np.unique(bounds[1:])]

  def fills_a_batch(share, bound):
    return num_items * share >= max(1, frames_per_batch // int(bound))

  kept, start = [], levels[0]
  for level, bound in zip(levels[1:], bounds[1:]):
    if fills_a_batch(level - start, bound):
      kept.append((level, int(bound)))
      start = level
  if start < levels[-1]:
    # The longest items left over: they join the previous bucket unless they
    # fill a batch on their own, and that bucket's bound becomes the longest.
    if kept and not fills_a_batch(levels[-1] - start, bounds[-1]):
      kept.pop()
    kept.append((levels[-1], int(bounds[-1])))
  return sorted({bound for _, bound in kept})


def bucket_batch_sizes(upper_bounds: Sequence[int],
                       frames_per_batch: int) -> list[int]:
  """Batch size per bucket: items of the bucket's bound that fit the budget."""
  return [max(1, frames_per_batch // int(b)) for b in upper_bounds]


def _train_bounds(data_dir: str, info: Mapping[str, Any],
                  max_buckets: Optional[int],
                  frames_per_batch: Optional[int] = None) -> list[int]:
  """Bucket bounds from the train split (its quantile table, else its data)."""
  table = _quantile_table(info)
  num_items = info.get("splits", {}).get("train", {}).get("num_examples")
  if table is None or not num_items:
    lengths = records.split_lengths(data_dir, "train", info)
    num_items = lengths.size
    levels, values = None, length_quantiles(lengths)
  if table is not None:
    levels, values = table
  return bucket_upper_bounds(values, max_buckets, levels, num_items=num_items,
                             frames_per_batch=frames_per_batch)


# ----------------------------------------------------------------------------
# Batching modes.


@dataclasses.dataclass(frozen=True)
class BatchContext:
  """What a batching mode needs besides the dataset of parsed items."""
  data_dir: str
  split: str
  info: Mapping[str, Any]
  stft: spectral.StftConfig
  batch_size: int
  frames_per_batch: int
  crop_frames: int
  max_buckets: Optional[int]
  mean_frames: Optional[int]
  max_frames: Optional[int]
  drop_remainder: bool
  with_audio: bool
  seed: int


@dataclasses.dataclass(frozen=True)
class BatchingMode:
  """A batching strategy.

  Attributes:
    name: registry key.
    batch: `(items, context) -> batches`. Items and batches carry `embedding`,
      `log_stft`, `length` (valid frames), `source_frames` (distinct source
      frames delivered), `original_length` and the pass-through keys; batches
      are padded with zeros (fixed up and normalised afterwards).
    supports_audio: whether batches can carry the matching audio.
    summary: one line for docs and errors.
  """
  name: str
  batch: Callable[[tf.data.Dataset, BatchContext], tf.data.Dataset]
  supports_audio: bool
  summary: str


def _with_item_seeds(items: tf.data.Dataset, seed: int) -> tf.data.Dataset:
  """Pairs each item with a stateless seed `[2]` drawn from a seeded stream."""
  seeds = tf.data.Dataset.random(seed=seed).batch(2)
  return tf.data.Dataset.zip((items, seeds))


def _random_offset(seed: tf.Tensor, max_offset: tf.Tensor) -> tf.Tensor:
  """Uniform int32 in [0, max_offset]."""
  return tf.random.stateless_uniform(
      [], seed=seed, minval=0, maxval=max_offset + 1, dtype=tf.int32)


def _num_samples(frames: tf.Tensor, stft: spectral.StftConfig) -> tf.Tensor:
  """Samples that `frames` frames cover: `StftConfig.num_samples` on tensors."""
  return tf.where(frames > 0,
                  (frames - 1) * stft.frame_step + stft.frame_length, 0)


def _take_frames(item: dict[str, tf.Tensor], index: tf.Tensor
                 ) -> dict[str, tf.Tensor]:
  """Gathers frames `index` `[n]` of both streams."""
  out = dict(item)
  out["embedding"] = tf.gather(item["embedding"], index)
  out["log_stft"] = tf.gather(item["log_stft"], index)
  return out


def _window_audio(item: dict[str, tf.Tensor], start: tf.Tensor,
                  frames: tf.Tensor, ctx: BatchContext) -> dict[str, tf.Tensor]:
  """Cuts `item["audio"]` to the samples of frames [start, start + frames)."""
  begin = start * ctx.stft.frame_step
  size = _num_samples(frames, ctx.stft)
  audio = item["audio"][begin:begin + size]
  return dict(item, audio=audio, audio_length=tf.shape(audio)[0])


def _padded_shapes(items: tf.data.Dataset, frames=None, samples=None):
  """padded_shapes for `items`, with the frame/sample axes fixed when given."""
  shapes = {k: s.shape for k, s in items.element_spec.items()}
  for key in ("embedding", "log_stft"):
    shapes[key] = tf.TensorShape([frames]).concatenate(shapes[key][1:])
  if "audio" in shapes:
    shapes["audio"] = tf.TensorShape([samples])
  return shapes


def _batch_bucket(items: tf.data.Dataset, ctx: BatchContext) -> tf.data.Dataset:
  bounds = _train_bounds(ctx.data_dir, ctx.info, ctx.max_buckets,
                         ctx.frames_per_batch)
  if ctx.max_frames:
    # Items are at most max_frames long: the last bucket ends there (its
    # batch size then holds for every item, however long the train split's
    # longest was).
    bounds = sorted({min(b, ctx.max_frames) for b in bounds} |
                    {ctx.max_frames})
  sizes = bucket_batch_sizes(bounds, ctx.frames_per_batch)
  # bucket_by_sequence_length takes exclusive boundaries; the last bucket is
  # open-ended.
  boundaries = [b + 1 for b in bounds[:-1]]
  return items.bucket_by_sequence_length(
      element_length_func=lambda item: item["length"],
      bucket_boundaries=boundaries,
      bucket_batch_sizes=sizes,
      padded_shapes=_padded_shapes(items),
      drop_remainder=ctx.drop_remainder)


def _batch_crop(items: tf.data.Dataset, ctx: BatchContext) -> tf.data.Dataset:
  if ctx.crop_frames < 1:
    raise ValueError(f"crop_frames must be >= 1, got {ctx.crop_frames}")

  def crop(item, seed):
    frames = tf.minimum(item["length"], ctx.crop_frames)
    start = _random_offset(seed, item["length"] - frames)
    item = _take_frames(item, start + tf.range(frames))
    if ctx.with_audio:
      item = _window_audio(item, start, frames, ctx)
    return dict(item, length=frames, source_frames=frames)

  cropped = _with_item_seeds(items, ctx.seed).map(
      crop, num_parallel_calls=AUTOTUNE)
  samples = ctx.stft.num_samples(ctx.crop_frames)
  return cropped.padded_batch(
      ctx.batch_size,
      padded_shapes=_padded_shapes(cropped, ctx.crop_frames, samples),
      drop_remainder=ctx.drop_remainder)


def _batch_repeat_longest(items: tf.data.Dataset,
                          ctx: BatchContext) -> tf.data.Dataset:
  def tile(batch):
    frames = tf.shape(batch["embedding"])[1]
    # Frame t of item b is its frame t mod length[b]: the item repeated.
    index = tf.range(frames)[tf.newaxis, :] % tf.maximum(
        batch["length"], 1)[:, tf.newaxis]
    out = dict(batch)
    out["embedding"] = tf.gather(batch["embedding"], index, batch_dims=1)
    out["log_stft"] = tf.gather(batch["log_stft"], index, batch_dims=1)
    out["length"] = tf.fill(tf.shape(batch["length"]), frames)
    return out

  return items.padded_batch(
      ctx.batch_size, padded_shapes=_padded_shapes(items),
      drop_remainder=ctx.drop_remainder).map(tile, num_parallel_calls=AUTOTUNE)


def _batch_crop_shortest(items: tf.data.Dataset,
                         ctx: BatchContext) -> tf.data.Dataset:
  def cut(batch):
    frames = tf.reduce_min(batch["length"])
    out = dict(batch)
    out["embedding"] = batch["embedding"][:, :frames]
    out["log_stft"] = batch["log_stft"][:, :frames]
    out["length"] = tf.fill(tf.shape(batch["length"]), frames)
    out["source_frames"] = out["length"]
    if ctx.with_audio:
      samples = _num_samples(frames, ctx.stft)
      out["audio"] = batch["audio"][:, :samples]
      out["audio_length"] = tf.minimum(batch["audio_length"], samples)
    return out

  return items.padded_batch(
      ctx.batch_size, padded_shapes=_padded_shapes(items),
      drop_remainder=ctx.drop_remainder).map(cut, num_parallel_calls=AUTOTUNE)


def _mean_frames(ctx: BatchContext) -> int:
  """The dataset's mean item length: of the train split, else of `ctx.split`."""
  if ctx.mean_frames is not None:
    return int(ctx.mean_frames)
  splits = ctx.info.get("splits", {})
  for name in ("train", ctx.split):
    split = splits.get(name, {})
    if split.get("num_examples") and split.get("num_frames"):
      return max(1, int(round(split["num_frames"] / split["num_examples"])))
  lengths = records.split_lengths(ctx.data_dir, ctx.split, ctx.info)
  if lengths.size == 0:
    raise ValueError(f"{ctx.data_dir}: split {ctx.split!r} is empty")
  return max(1, int(round(lengths.mean())))


def _batch_mean_length(items: tf.data.Dataset,
                       ctx: BatchContext) -> tf.data.Dataset:
  target = _mean_frames(ctx)

  def fit(item, seed):
    # Longer items: a random window of `target` frames; shorter ones: tiled.
    length = tf.maximum(item["length"], 1)
    start = _random_offset(seed, tf.maximum(length - target, 0))
    item = _take_frames(item, (start + tf.range(target)) % length)
    return dict(item, length=tf.constant(target, tf.int32),
                source_frames=tf.minimum(item["length"], target))

  fitted = _with_item_seeds(items, ctx.seed).map(
      fit, num_parallel_calls=AUTOTUNE)
  return fitted.padded_batch(
      ctx.batch_size, padded_shapes=_padded_shapes(fitted, target),
      drop_remainder=ctx.drop_remainder)


MODES: dict[str, BatchingMode] = {
    mode.name: mode for mode in (
        BatchingMode("bucket", _batch_bucket, True,
                     "length buckets from train quantiles, frame budget"),
        BatchingMode("crop", _batch_crop, True,
                     "random window of crop_frames, same in both streams"),
        BatchingMode("repeat_longest", _batch_repeat_longest, False,
                     "(original) items tiled to the batch's longest"),
        BatchingMode("crop_shortest", _batch_crop_shortest, True,
                     "(original) items cut to the batch's shortest"),
        BatchingMode("mean_length", _batch_mean_length, False,
                     "(original) items cut or tiled to the mean length"),
    )
}


# ----------------------------------------------------------------------------
# Long items.


def cut_into_windows(items: tf.data.Dataset, max_frames: int,
                     stft: spectral.StftConfig,
                     with_audio: bool = False) -> tf.data.Dataset:
  """Items longer than `max_frames` as consecutive windows of at most that.

  An item of `length` frames becomes `n = ceil(length / max_frames)` windows,
  window k holding frames `[k * length // n, (k + 1) * length // n)` of both
  streams (and, with audio, the samples those frames cover); shorter items
  pass unchanged. A window keeps the item's `id` and the other pass-through
  keys; its `length`, `source_frames` and `original_length` are its own.
  """
  if max_frames < 1:
    raise ValueError(f"max_frames must be >= 1, got {max_frames}")

  def windows(item):
    length = item["length"]
    count = tf.maximum((length + max_frames - 1) // max_frames, 1)
    k = tf.range(count)
    starts, ends = k * length // count, (k + 1) * length // count

    def window(start, end):
      frames = end - start
      out = dict(item, length=frames, source_frames=frames,
                 original_length=frames)
      out["embedding"] = item["embedding"][start:end]
      out["log_stft"] = item["log_stft"][start:end]
      if with_audio:
        begin = start * stft.frame_step
        out["audio"] = item["audio"][begin:begin + _num_samples(frames, stft)]
        out["audio_length"] = tf.shape(out["audio"])[0]
      return out

    return tf.data.Dataset.from_tensor_slices((starts, ends)).map(window)

  return items.flat_map(windows)
