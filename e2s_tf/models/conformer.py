"""`conformer`: a decoder with sequence-wide context for learned embeddings.

    embedding ─▶ clip ─▶ input conv ─▶ N x Conformer block ─▶ LayerNorm
    ─▶ output projection to bins (starts at 0) + linear skip (starts at 0)
    ─▶ residual Conv2D refiner over time x frequency

A Conformer block (Gulati et al., 2020) is

    x + ½·FFN(x) ─▶ + self-attention ─▶ + convolution module ─▶ + ½·FFN ─▶ LN

each sub-layer pre-normalised (per-frame LayerNorm) and residual: the
attention sees the whole utterance (or a band of `attention_window` frames
either side), the convolution module (pointwise + GLU, depthwise conv of
`conv_kernel_size` frames, LayerNorm, swish, pointwise) the local detail and
the relative position that plain attention lacks. A learned encoder's frame
is a distributed code whose meaning depends on its neighbours, often far ones
(a causal encoder puts a phone's evidence after it); `multiscale`'s fixed
receptive field of about a quarter of a second, tuned for logmel where a
filterbank prior does most of the work, reaches less.

Masking: convolutions zero the padding first (layers.MaskedConv1D), and the
attention's keys are the valid frames only, so an item gives the same output
padded in a batch as alone. `attention_heads = 0` drops the attention (the
convolution-only block: the ablation's "context off").

A stable start for any embedder: the normalised embedding is clipped to
±`input_clip` (one outlying dimension of a learned encoder, several standard
deviations out, otherwise dominates the first steps), and the output and
the skip start at zero, so the untrained decoder outputs 0 in normalised
units, the train split's mean log-spectrum, and the first steps move from
there rather than from a random spectrogram of large error.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import keras
import ml_collections
import tensorflow as tf

from e2s_tf.models import base
from e2s_tf.models import layers
from e2s_tf.models import registry
from e2s_tf.models import trainable


def default_config() -> ml_collections.ConfigDict:
  """Documented defaults of `config.model` for 'conformer'."""
  config = ml_collections.ConfigDict()
  # Registry name of the model.
  config.name = "conformer"
  # Width of the blocks (the attention's model dimension).
  config.channels = 128
  # Kernel size (frames) of the input convolution.
  config.input_kernel_size = 3
  # Number of Conformer blocks.
  config.num_blocks = 4
  # Attention heads per block (channels must divide by it); 0 = no attention
  # (convolution-only blocks).
  config.attention_heads = 4
  # Frames either side that a frame attends to (0 = the whole utterance).
  config.attention_window = 0
  # Hidden width of each feed-forward module, as a multiple of channels.
  config.ffn_multiplier = 2
  # Kernel size (frames) of the depthwise convolution of the conv module.
  config.conv_kernel_size = 15
  # Dropout rate on every residual branch.
  config.dropout = 0.1
  # The normalised embedding is clipped to [-input_clip, input_clip] before
  # the network (0 disables).
  config.input_clip = 6.0
  # A linear 1x1 path from the embedding straight to the bins, added to the
  # output (starts at zero).
  config.linear_skip = True
  # Channels of the 2-D refiner over [frames, bins] (0 disables the refiner).
  config.refine_channels = 8
  # Conv2D layers of the refiner (the last one maps back to 1 channel).
  config.refine_layers = 3
  # Refiner kernel (frames, bins).
  config.refine_kernel_size = (3, 3)
  # Seed of the dropout masks.
  config.seed = 0
  base.speaker_fields(config)
  return config


class FeedForward(keras.layers.Layer):
  """Pre-norm feed-forward module: LN, Dense(m·C), swish, dropout, Dense(C)."""

  def __init__(self, channels: int, multiplier: int, dropout: float,
               seed: int, **kwargs):
    super().__init__(**kwargs)
    policy = self.dtype_policy
    self.norm = keras.layers.LayerNormalization(dtype=policy, name="norm")
    self.inner = keras.layers.Dense(multiplier * channels, activation="silu",
                                    dtype=policy, name="inner")
    self.outer = keras.layers.Dense(channels, dtype=policy, name="outer")
    self.dropout = keras.layers.Dropout(dropout, seed=seed, dtype=policy)

  def build(self, input_shape):
    self.norm.build(input_shape)
    self.inner.build(input_shape)
    self.outer.build(tuple(input_shape[:-1]) + (self.inner.units,))

  def call(self, x, training=False):
    h = self.dropout(self.inner(self.norm(x)), training=training)
    return self.dropout(self.outer(h), training=training)


class ConvolutionModule(keras.layers.Layer):
  """Pre-norm conv module: LN, pointwise 2C + GLU, masked depthwise conv,
  LN, swish, pointwise C, dropout. LayerNorm (per frame) stands where the
  original has batch norm, whose batch statistics would mix the padding of
  other items into an item's output."""

  def __init__(self, channels: int, kernel_size: int, dropout: float,
               seed: int, **kwargs):
    super().__init__(**kwargs)
    policy = self.dtype_policy
    self.channels = channels
    self.norm = keras.layers.LayerNormalization(dtype=policy, name="norm")
    self.expand = keras.layers.Dense(2 * channels, dtype=policy, name="expand")
    self.depthwise = keras.layers.DepthwiseConv1D(
        kernel_size, padding="same", dtype=policy, name="depthwise")
    self.inner_norm = keras.layers.LayerNormalization(dtype=policy,
                                                      name="inner_norm")
    self.project = keras.layers.Dense(channels, dtype=policy, name="project")
    self.dropout = keras.layers.Dropout(dropout, seed=seed, dtype=policy)

  def build(self, input_shape):
    shape = tuple(input_shape)
    self.norm.build(shape)
    self.expand.build(shape)
    self.depthwise.build(shape)
    self.inner_norm.build(shape)
    self.project.build(shape)

  def call(self, x, mask, training=False):
    value, gate = tf.split(self.expand(self.norm(x)), 2, axis=-1)
    h = value * tf.sigmoid(gate)
    h = self.depthwise(layers.apply_mask(h, mask))
    h = tf.nn.silu(self.inner_norm(h))
    return self.dropout(self.project(h), training=training)


def attention_allowed(mask: tf.Tensor, window: int) -> tf.Tensor:
  """`[B, T]` frame mask -> `[B, 1, 1 or T, T]` bool: query t may attend to
  key s when s is a valid frame (and |t - s| <= window, for window > 0).
  Bool, not an additive float bias: Keras would cast a float argument to
  float16 under mixed precision, where -1e9 is -inf."""
  allowed = (mask > 0)[:, tf.newaxis, tf.newaxis, :]
  if window > 0:
    positions = tf.range(tf.shape(mask)[1])
    near = (tf.abs(positions[:, tf.newaxis] - positions[tf.newaxis, :])
            <= window)
    allowed = tf.logical_and(allowed, near[tf.newaxis, tf.newaxis])
  return allowed


class SelfAttention(keras.layers.Layer):
  """Multi-head scaled dot-product self-attention over frames.

  Call: `(x [B, T, C], allowed [B, 1, 1 or T, T] bool, see
  attention_allowed)` -> `[B, T, C]`. The logits and their softmax are float32 under any dtype
  policy. Written out (one fused projection to queries, keys and values, two
  batched matmuls, a key mask that broadcasts) rather than
  keras.layers.MultiHeadAttention with a `[B, T, T]` mask: on 2 CPU cores,
  for a 6000-frame batch of the default conformer, the attention's share of
  a training step fell from 0.31 s (of 0.62 s) to 0.23 s (of 0.54 s).
  """

  def __init__(self, channels: int, heads: int, **kwargs):
    super().__init__(**kwargs)
    self.channels, self.heads = channels, heads
    self.depth = channels // heads
    policy = self.dtype_policy
    self.qkv = keras.layers.Dense(3 * channels, dtype=policy, name="qkv")
    self.output_projection = keras.layers.Dense(channels, dtype=policy,
                                                name="output")

  def build(self, input_shape):
    self.qkv.build(input_shape)
    self.output_projection.build(input_shape)

  def call(self, x, allowed):
    bias = tf.where(allowed, 0.0, -1e9)  # float32 whatever the policy
    batch, frames = tf.shape(x)[0], tf.shape(x)[1]
    qkv = tf.reshape(self.qkv(x),
                     [batch, frames, 3, self.heads, self.depth])
    qkv = tf.transpose(qkv, [2, 0, 3, 1, 4])  # [3, B, H, T, d]
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = tf.matmul(tf.cast(q, tf.float32), tf.cast(k, tf.float32),
                       transpose_b=True) * (self.depth ** -0.5)
    weights = tf.cast(tf.nn.softmax(logits + bias, axis=-1), v.dtype)
    out = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])
    return self.output_projection(
        tf.reshape(out, [batch, frames, self.channels]))


class ConformerBlock(keras.layers.Layer):
  """½FFN, self-attention (optional), conv module, ½FFN, LayerNorm; every
  branch residual. Call: `(x [B, T, C], mask [B, T], allowed:
  attention_allowed or None)` -> `[B, T, C]`, zero on padding frames."""

  def __init__(self, channels: int, heads: int, ffn_multiplier: int,
               conv_kernel_size: int, dropout: float, seed: int, **kwargs):
    super().__init__(**kwargs)
    policy = self.dtype_policy
    self.ffn_in = FeedForward(channels, ffn_multiplier, dropout, seed,
                              dtype=policy, name="ffn_in")
    self.attention = None
    if heads:
      self.attention_norm = keras.layers.LayerNormalization(
          dtype=policy, name="attention_norm")
      self.attention = SelfAttention(channels, heads, dtype=policy,
                                     name="attention")
      self.attention_dropout = keras.layers.Dropout(dropout, seed=seed,
                                                    dtype=policy)
    self.conv = ConvolutionModule(channels, conv_kernel_size, dropout, seed,
                                  dtype=policy, name="conv")
    self.ffn_out = FeedForward(channels, ffn_multiplier, dropout, seed,
                               dtype=policy, name="ffn_out")
    self.norm = keras.layers.LayerNormalization(dtype=policy, name="norm")

  def build(self, input_shape):
    shape = tuple(input_shape)
    self.ffn_in.build(shape)
    if self.attention is not None:
      self.attention_norm.build(shape)
      self.attention.build(shape)
    self.conv.build(shape)
    self.ffn_out.build(shape)
    self.norm.build(shape)

  def call(self, x, mask, allowed=None, training=False):
    x = x + 0.5 * self.ffn_in(x, training=training)
    if self.attention is not None:
      h = self.attention(self.attention_norm(x), allowed)
      x = x + self.attention_dropout(h, training=training)
    x = x + self.conv(x, mask, training=training)
    x = x + 0.5 * self.ffn_out(x, training=training)
    return layers.apply_mask(self.norm(x), mask)


class ConformerDecoder(base.SequenceDecoder):
  """Conformer blocks + 2-D refiner: `[B, T, D]` -> `[B, T, F]`."""

  def __init__(self, embedding_dim: int, num_bins: int, *, channels: int,
               input_kernel_size: int, num_blocks: int, attention_heads: int,
               attention_window: int, ffn_multiplier: int,
               conv_kernel_size: int, dropout: float, input_clip: float,
               linear_skip: bool, refine_channels: int, refine_layers: int,
               refine_kernel_size, seed: int, speaker_conditioning: str,
               num_speakers: int, speaker_dim: int, **kwargs):
    if channels < 1 or num_blocks < 0 or attention_heads < 0:
      raise ValueError(
          f"conformer: need channels >= 1, num_blocks >= 0 and "
          f"attention_heads >= 0, got {channels}, {num_blocks} and "
          f"{attention_heads}")
    if attention_heads and channels % attention_heads:
      raise ValueError(f"conformer: channels ({channels}) must be a multiple "
                       f"of attention_heads ({attention_heads})")
    if attention_window < 0 or ffn_multiplier < 1 or conv_kernel_size < 1:
      raise ValueError(
          f"conformer: need attention_window >= 0, ffn_multiplier >= 1 and "
          f"conv_kernel_size >= 1, got {attention_window}, {ffn_multiplier} "
          f"and {conv_kernel_size}")
    super().__init__(embedding_dim, num_bins,
                     speaker_conditioning=speaker_conditioning,
                     num_speakers=num_speakers, speaker_dim=speaker_dim,
                     film_channels=[channels] * num_blocks, **kwargs)
    policy = self.dtype_policy
    self.input_clip = float(input_clip)
    self.attention_window = int(attention_window)
    self.with_attention = attention_heads > 0
    self.input_conv = layers.MaskedConv1D(channels, input_kernel_size,
                                          dtype=policy, name="input")
    self.blocks = [
        ConformerBlock(channels, attention_heads, ffn_multiplier,
                       conv_kernel_size, dropout, seed + i, dtype=policy,
                       name=f"block_{i}") for i in range(num_blocks)]
    self.output_norm = keras.layers.LayerNormalization(dtype=policy,
                                                       name="output_norm")
    self.output_dense = keras.layers.Dense(
        num_bins, kernel_initializer="zeros", dtype=policy, name="output")
    self.skip = (layers.MaskedConv1D(num_bins, 1, kernel_initializer="zeros",
                                     dtype=policy, name="linear_skip")
                 if linear_skip else None)
    self.refiner = (
        layers.SpectralRefiner(refine_channels, refine_layers,
                               refine_kernel_size, "leaky_relu", dtype=policy,
                               name="refiner") if refine_channels > 0 else None)

  def decode(self, x, mask, speaker_vector, training):
    if self.input_clip > 0:
      x = tf.clip_by_value(x, -self.input_clip, self.input_clip)
    h = layers.apply_mask(self.input_conv(x, mask), mask)
    allowed = (attention_allowed(mask, self.attention_window)
               if self.with_attention else None)
    for i, block in enumerate(self.blocks):
      h = block(h, mask, allowed, training=training)
      h = self.speaker.film(i, h, speaker_vector)
    spectrogram = self.output_dense(self.output_norm(h))
    if self.skip is not None:
      spectrogram = spectrogram + self.skip(x, mask)
    if self.refiner is not None:
      spectrogram = self.refiner(spectrogram, mask)
    return spectrogram


def conformer_decoder(config: ml_collections.ConfigDict,
                      name: str = "conformer_decoder",
                      exclude=()) -> ConformerDecoder:
  """A `ConformerDecoder` from `config.model` and `config.data`, variables
  created. `exclude`: fields of `config.model` that are not the decoder's."""
  decoder = ConformerDecoder(config.data.embedding_dim, config.data.num_bins,
                             name=name,
                             **base.constructor_fields(config.model, *exclude))
  return base.initialize(decoder, config.data.embedding_dim)


@registry.register("conformer", default_config)
def build_conformer(config, info: Optional[Mapping[str, Any]] = None
                    ) -> trainable.TrainableDecoder:
  model = trainable.TrainableDecoder(conformer_decoder(config),
                                     *registry.normalisation(info),
                                     name="conformer")
  return base.initialize(model, config.data.embedding_dim)
