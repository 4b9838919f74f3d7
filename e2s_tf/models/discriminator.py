"""`SpectrogramDiscriminator`: multi-resolution 2-D conv critic of log-STFTs.

Each scale average-pools the `[batch, frames, bins, 1]` spectrogram by
`(time, frequency)` factors, then runs masked Conv2D layers (frequency strides
only, so each scale keeps its own time grid) down to a one-channel logits map.
A pooled frame is valid only when every frame it averages is valid; its mask
comes from the lengths (`floor(length / time_pool)` valid frames), so an item
is judged the same padded in a batch as on its own.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from e2s_tf.models import layers


class SubDiscriminator(keras.layers.Layer):
  """One scale: `(x [B, T, F, 1], mask [B, T])` -> (logits, [features]).

  Logits `[B, T', F', 1]` and features `[B, T', F_l, C_l]` are zero on the
  padding frames of the pooled mask `[B, T']` (see `pooled_mask`).
  """

  def __init__(self, time_pool: int, frequency_pool: int,
               channels: Sequence[int], kernel_size: Sequence[int],
               frequency_strides: Sequence[int], negative_slope: float = 0.2,
               **kwargs):
    super().__init__(**kwargs)
    if len(channels) != len(frequency_strides):
      raise ValueError(f"{self.name}: channels {tuple(channels)} and "
                       f"frequency_strides {tuple(frequency_strides)} differ "
                       "in length")
    if time_pool < 1 or frequency_pool < 1:
      raise ValueError(f"{self.name}: pools must be >= 1, got "
                       f"{(time_pool, frequency_pool)}")
    policy = self.dtype_policy
    self.time_pool = time_pool
    self.pool = (keras.layers.AveragePooling2D(
        (time_pool, frequency_pool), padding="same", dtype=policy, name="pool")
                 if time_pool * frequency_pool > 1 else None)
    self.convs = [layers.MaskedConv2D(c, kernel_size, frequency_stride=s,
                                      dtype=policy, name=f"conv_{i}")
                  for i, (c, s) in enumerate(zip(channels, frequency_strides))]
    self.logits = layers.MaskedConv2D(1, kernel_size, dtype=policy,
                                      name="logits")
    self.negative_slope = negative_slope

  def build(self, input_shape):
    shape = tuple(input_shape)
    if self.pool is not None:
      shape = tuple(self.pool.compute_output_shape(shape))
    for conv in self.convs + [self.logits]:
      conv.build(shape)
      shape = tuple(conv.conv.compute_output_shape(shape))

  def pooled_mask(self, mask: tf.Tensor) -> tf.Tensor:
    """`[B, T]` frame mask -> `[B, ceil(T / time_pool)]` at this scale."""
    frames = (tf.shape(mask)[1] + self.time_pool - 1) // self.time_pool
    return tf.sequence_mask(layers.lengths_from_mask(mask) // self.time_pool,
                            frames, dtype=tf.float32)

  def call(self, x, mask):
    x = layers.clean_padding(x, mask)
    if self.pool is not None:
      # Zero-pad time to a multiple of the pool first: 'same' pooling would
      # otherwise centre its windows differently for different batch lengths.
      extra = -tf.shape(x)[1] % self.time_pool
      x = self.pool(tf.pad(x, [[0, 0], [0, extra], [0, 0], [0, 0]]))
    mask = self.pooled_mask(mask)
    features = []
    for conv in self.convs:
      # Masked before the activation (leaky_relu(0) = 0 keeps it masked),
      # which also avoids a grappler Conv2D+LeakyRelu fusion that breaks
      # the gradient graph on oneDNN CPU builds.
      x = tf.nn.leaky_relu(layers.apply_mask(conv(x, mask), mask),
                           self.negative_slope)
      features.append(x)
    return layers.apply_mask(self.logits(x, mask), mask), features


class SpectrogramDiscriminator(keras.Model):
  """Several `SubDiscriminator`s at different (time, frequency) poolings.

  Call: `(log_stft [B, T, F] or [B, T, F, 1], frame_mask [B, T])` -> a list, one
  entry per scale, of `(logits [B, T_s, F_s, 1], [feature maps])`; logits and
  features are masked by `masks(mask)[s]` (`[B, T_s]`).
  """

  def __init__(self, pools: Sequence[Sequence[int]] = ((1, 1), (2, 2), (4, 4)),
               channels: Sequence[int] = (8, 16, 16),
               kernel_size: Sequence[int] = (3, 3),
               frequency_strides: Sequence[int] = (2, 2, 2), **kwargs):
    super().__init__(**kwargs)
    if not pools:
      raise ValueError(
          f"{self.name}: needs at least one (time, frequency) pool")
    self.scales = [
        SubDiscriminator(int(t), int(f), channels, kernel_size,
                         frequency_strides, dtype=self.dtype_policy,
                         name=f"scale_{i}")
        for i, (t, f) in enumerate(pools)]

  def masks(self, mask: tf.Tensor) -> list[tf.Tensor]:
    """The frame mask at each scale's time resolution."""
    return [scale.pooled_mask(tf.cast(mask, tf.float32))
            for scale in self.scales]

  def call(self, log_stft, frame_mask=None):
    log_stft = tf.convert_to_tensor(log_stft)
    if log_stft.shape.rank == 3:
      log_stft = log_stft[..., tf.newaxis]
    if frame_mask is None:
      frame_mask = tf.ones(tf.shape(log_stft)[:2], tf.float32)
    mask = tf.cast(frame_mask, tf.float32)
    return [scale(log_stft, mask) for scale in self.scales]
