"""Frame masks on padded batches: the one low-level home of the mask helpers.

A mask is `[batch, frames]`, 1 = a valid frame, 0 = padding (made from the
lengths by `spectral.frame_mask`). The losses, the spectral metrics and the
models' layers all mask through these three functions.
"""

from __future__ import annotations

import tensorflow as tf


def expand_mask(mask: tf.Tensor, rank: int, dtype=tf.float32) -> tf.Tensor:
  """`[batch, frames]` -> `[batch, frames, 1, ...]` of `rank` dims, `dtype`."""
  mask = tf.cast(mask, dtype)
  return tf.reshape(mask, tf.concat(
      [tf.shape(mask), tf.ones([rank - 2], tf.int32)], axis=0))


def apply_mask(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """`[batch, frames, ...]` times the frame mask (in `values`' dtype)."""
  return values * expand_mask(mask, values.shape.rank, values.dtype)


def zero_padding(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """`[batch, frames, ...]` with every padding frame set to 0, even an inf
  or NaN one (`tf.where`, so neither the value nor a gradient sees it)."""
  valid = expand_mask(mask, values.shape.rank) > 0
  return tf.where(valid, values, tf.zeros_like(values))
