"""Mask-aware building blocks shared by the decoders and the discriminator.

Convolutions here zero the padding frames of their input before convolving,
so with 'same' padding a valid frame near the end of an item never sees the
padding of a longer batch neighbour: an item's valid outputs are the same
padded in a batch as on its own. Masks are `[batch, frames]`, 1 = valid.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf

from e2s_tf import masking

# The ways a speaker vector can condition a decoder.
SPEAKER_CONDITIONING = ("none", "film", "concat")


# The frame-mask helpers are e2s_tf.masking's (the losses mask with them too):
# `apply_mask` multiplies `[batch, frames, ...]` by the mask; `clean_padding`
# sets its padding frames to 0, even inf/NaN ones.
apply_mask = masking.apply_mask
clean_padding = masking.zero_padding


def lengths_from_mask(mask: tf.Tensor) -> tf.Tensor:
  """`[batch, frames]` prefix mask -> `[batch]` int32 lengths."""
  return tf.cast(tf.reduce_sum(tf.cast(mask > 0, tf.int32), axis=1), tf.int32)


class MaskedConv1D(keras.layers.Layer):
  """`Conv1D` over time ('same' padding) that ignores padding frames.

  Call: `(x [batch, frames, channels], mask [batch, frames])` ->
  `[batch, frames, filters]`.
  """

  def __init__(self, filters: int, kernel_size: int, dilation_rate: int = 1,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    self.conv = keras.layers.Conv1D(
        filters, kernel_size, dilation_rate=dilation_rate, padding="same",
        kernel_initializer=kernel_initializer, dtype=self.dtype_policy,
        name="conv")

  def build(self, input_shape):
    self.conv.build(input_shape)

  def call(self, x, mask):
    return self.conv(apply_mask(x, mask))


class MaskedConv2D(keras.layers.Layer):
  """`Conv2D` over `[batch, frames, bins, channels]` ignoring padding frames.

  Strides apply to the frequency axis only, so the time grid (and the mask)
  is kept. Call: `(x, mask [batch, frames])` ->
  `[batch, frames, bins', filters]`.
  """

  def __init__(self, filters: int, kernel_size: Sequence[int],
               frequency_stride: int = 1, kernel_initializer="glorot_uniform",
               **kwargs):
    super().__init__(**kwargs)
    self.conv = keras.layers.Conv2D(
        filters, tuple(kernel_size), strides=(1, frequency_stride),
        padding="same", kernel_initializer=kernel_initializer,
        dtype=self.dtype_policy, name="conv")

  def build(self, input_shape):
    self.conv.build(input_shape)

  def call(self, x, mask):
    return self.conv(apply_mask(x, mask))


class SpeakerTable(keras.layers.Layer):
  """Learned speaker vectors, with one extra row for "unknown speaker".

  `lookup(speaker [batch] int or None, batch_size)` -> `[batch, dim]`.
  Indices outside `[0, num_speakers)` (the records use -1 for "no speaker")
  and a missing `speaker` select the unknown-speaker row, so a conditioned
  model still runs on data without speaker labels.
  """

  def __init__(self, num_speakers: int, dim: int, **kwargs):
    super().__init__(**kwargs)
    if num_speakers <= 0 or dim <= 0:
      raise ValueError(f"SpeakerTable needs num_speakers > 0 and dim > 0, got "
                       f"{num_speakers} and {dim}")
    self.num_speakers = num_speakers
    self.table = keras.layers.Embedding(num_speakers + 1, dim,
                                        dtype=self.dtype_policy, name="table")

  def build(self, input_shape=None):
    self.table.build(None)

  def indices(self, speaker, batch_size) -> tf.Tensor:
    """`[batch]` table rows: the unknown row for missing/out-of-range ids."""
    unknown = tf.fill([batch_size], self.num_speakers)
    if speaker is None:
      return unknown
    speaker = tf.cast(tf.reshape(speaker, [-1]), tf.int32)
    known = (speaker >= 0) & (speaker < self.num_speakers)
    return tf.where(known, speaker, unknown)

  def call(self, indices):
    return self.table(indices)

  def lookup(self, speaker, batch_size) -> tf.Tensor:
    return self(self.indices(speaker, batch_size))


class FiLM(keras.layers.Layer):
  """Feature-wise scale and shift from a conditioning vector.

  Call: `(x [batch, frames, channels], condition [batch, dim])` ->
  `x * (1 + scale) + shift`. The projection starts at zero (identity).
  """

  def __init__(self, channels: int, **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.projection = keras.layers.Dense(
        2 * channels, kernel_initializer="zeros", dtype=self.dtype_policy,
        name="projection")

  def build(self, input_shape, condition_shape=None):
    del input_shape
    self.projection.build(condition_shape)

  def call(self, x, condition):
    scale, shift = tf.split(self.projection(condition), 2, axis=-1)
    return x * (1.0 + scale[:, tf.newaxis, :]) + shift[:, tf.newaxis, :]


class SpeakerConditioning(keras.layers.Layer):
  """A speaker table and the per-layer FiLMs of one decoder.

  `mode` is one of `SPEAKER_CONDITIONING`:
    none: no table; the speaker is ignored.
    concat: the speaker vector is appended to every input frame
      (`concat_input`).
    film: each of `film_channels` hidden layers gets its own FiLM
      (`film(i, x, vector)`).
  """

  def __init__(self, mode: str, num_speakers: int, dim: int,
               film_channels: Sequence[int] = (), **kwargs):
    super().__init__(**kwargs)
    if mode not in SPEAKER_CONDITIONING:
      raise ValueError(f"unknown speaker_conditioning {mode!r}; known: "
                       f"{SPEAKER_CONDITIONING}")
    if mode != "none" and num_speakers <= 0:
      raise ValueError(f"speaker_conditioning={mode!r} needs num_speakers > 0 "
                       f"(the train split's speaker vocabulary), got "
                       f"{num_speakers}")
    self.mode = mode
    self.dim = dim if mode != "none" else 0
    self.table = (SpeakerTable(num_speakers, dim, dtype=self.dtype_policy,
                               name="speakers") if mode != "none" else None)
    self.films = ([FiLM(c, dtype=self.dtype_policy, name=f"film_{i}")
                   for i, c in enumerate(film_channels)]
                  if mode == "film" else [])

  def build(self, input_shape=None):
    if self.table is not None:
      self.table.build()
    for film in self.films:
      film.build(None, (None, self.dim))

  @property
  def concat_dim(self) -> int:
    """Channels `concat_input` adds to every frame."""
    return self.dim if self.mode == "concat" else 0

  def vector(self, speaker, batch_size) -> Optional[tf.Tensor]:
    """`[batch, dim]` speaker vectors, or None when unconditioned."""
    if self.table is None:
      return None
    return self.table.lookup(speaker, batch_size)

  def concat_input(self, x, vector):
    if self.mode != "concat":
      return x
    vector = tf.cast(vector, x.dtype)
    tiled = tf.tile(vector[:, tf.newaxis, :], [1, tf.shape(x)[1], 1])
    return tf.concat([x, tiled], axis=-1)

  def film(self, index: int, x, vector):
    if self.mode != "film":
      return x
    return self.films[index](x, vector)


class SpectralRefiner(keras.layers.Layer):
  """Residual 2-D convolution stack over time x frequency.

  Call: `(log_stft [batch, frames, bins], mask)` -> `[batch, frames, bins]` =
  input + a correction from `num_layers` masked Conv2D layers on
  `[batch, frames, bins, 1]`. The last layer starts at zero (identity).
  """

  def __init__(self, channels: int, num_layers: int,
               kernel_size: Sequence[int], activation: str = "leaky_relu",
               **kwargs):
    super().__init__(**kwargs)
    if num_layers < 1:
      raise ValueError(
          f"SpectralRefiner needs num_layers >= 1, got {num_layers}")
    self.activation = keras.activations.get(activation)
    self.convs = [
        MaskedConv2D(channels, kernel_size, dtype=self.dtype_policy,
                     name=f"conv_{i}") for i in range(num_layers - 1)]
    self.convs.append(MaskedConv2D(1, kernel_size, kernel_initializer="zeros",
                                   dtype=self.dtype_policy,
                                   name=f"conv_{num_layers - 1}"))

  def build(self, input_shape):
    shape = tuple(input_shape) + (1,)
    for conv in self.convs:
      conv.build(shape)
      shape = shape[:-1] + (conv.conv.filters,)

  def call(self, x, mask):
    h = x[..., tf.newaxis]
    for i, conv in enumerate(self.convs):
      if i:
        # Masking between the convolution and the activation also keeps
        # grappler from fusing Conv2D+add+LeakyRelu, a fusion that breaks the
        # gradient graph ("remapper failed") on oneDNN CPU builds.
        h = self.activation(apply_mask(h, mask))
      h = conv(h, mask)
    return x + h[..., 0]
