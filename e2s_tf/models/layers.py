"""Mask-aware building blocks shared by the decoders and the discriminator.

Convolutions here zero the padding frames of their input before convolving,
so with 'same' padding a valid frame near the end of an item never sees the
padding of a longer batch neighbour: an item's valid outputs are the same
padded in a batch as on its own. Masks are `[batch, frames]`, 1 = valid.
"""

from __future__ import annotations

import math

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

# The ways a speaker vector can condition a decoder.
SPEAKER_CONDITIONING = ("none", "film", "concat")


def expand_mask(mask: tf.Tensor, rank: int, dtype) -> tf.Tensor:
  """`[batch, frames]` -> `[batch, frames, 1, ...]` of `rank` dims, `dtype`."""
  mask = tf.cast(mask, dtype)
  return tf.reshape(mask, tf.concat(
      [tf.shape(mask), tf.ones([rank - 2], tf.int32)], axis=0))


def apply_mask(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Multiplies `[batch, frames, ...]` by the frame mask."""
  return x * expand_mask(mask, x.shape.rank, x.dtype)


def clean_padding(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Sets padding frames of `[batch, frames, ...]` to 0, even inf/NaN ones."""
  valid = expand_mask(mask, x.shape.rank, tf.float32) > 0
  return tf.where(valid, x, tf.zeros_like(x))


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


# Log units above the floor under which a band still counts as silent.
_SILENCE_TOLERANCE = 1e-3
# Bound of the per-band energy ratio of one projection step (keeps an
# untrained decoder's empty bands from producing huge factors).
_MAX_RATIO = 1e4


class FilterbankPrior(keras.layers.Layer):
  """A closed-form first guess of the spectrogram from a log-filterbank embedding.

  For an embedding `e = ln(max(|X| @ W, floor))` (`W`: `[bins, bands]`), the
  prior is `ln(max(exp(e) @ P, floor))` with `P` `[bands, bins]` initialised
  to a closed-form inverse of `W` and then learned (and exactly the log floor
  in frames where every band is at the floor, see `silent`), in the
  normalised units of the decoder: it undoes the embedding normalisation
  first and normalises the log-spectrogram after. The decoder adds its output
  to this guess, so it learns what a linear inverse of the filterbank cannot
  recover (harmonics inside a band, the phase-free detail of the envelope)
  and starts from a closed-form inverse instead of from nothing. `project`
  and `silent` serve the decoder's later stages (see models/multiscale.py).

  Call: `(x [batch, frames, >= bands] normalised embedding)` ->
  `[batch, frames, bins]` normalised log-magnitude.
  """

  def __init__(self, inverse: np.ndarray, embedding_mean, embedding_std,
               log_stft_mean, log_stft_std, floor: float = 1e-5,
               filterbank: Optional[np.ndarray] = None, **kwargs):
    # Always float32, also under mixed precision: exp() of a log amplitude
    # overflows float16.
    kwargs["dtype"] = "float32"
    super().__init__(**kwargs)
    self._inverse = np.asarray(inverse, np.float32)
    self.bands, self.bins = self._inverse.shape
    self._constants = [np.asarray(a, np.float32) for a in (
        embedding_mean, embedding_std, log_stft_mean, log_stft_std)]
    self.floor = float(floor)
    self._filterbank = (None if filterbank is None
                        else np.asarray(filterbank, np.float32))
    if self._filterbank is not None and self._filterbank.shape != (
        self.bins, self.bands):
      raise ValueError(f"{self.name}: filterbank must be [{self.bins}, "
                       f"{self.bands}], got {self._filterbank.shape}")

  def build(self, input_shape=None):
    self.inverse = self.add_weight(
        name="inverse", shape=(self.bands, self.bins),
        initializer=keras.initializers.Constant(self._inverse),
        trainable=True, dtype="float32")

  def _log_bands(self, x):
    """Normalised embedding -> `[batch, frames, bands]` float32 log bands."""
    # NumPy constants, made into graph constants where the call is traced.
    emb_mean, emb_std = self._constants[:2]
    e = tf.cast(x[..., :self.bands], tf.float32)
    return e * emb_std[:self.bands] + emb_mean[:self.bands]

  def _at_floor(self, log_bands):
    """`[..., bands]` bool: the band sits at the log floor."""
    return log_bands <= math.log(self.floor) + _SILENCE_TOLERANCE

  def silent(self, x):
    """`[batch, frames]` float32: 1 where every band sits at the log floor.

    The embedding proves such a frame (all but) empty: every band's energy is
    at or under the floor. The prior gives it the log floor in every bin,
    which is what digital silence has (on the demo corpus, 17-22 % of the
    frames, all of whose STFT bins sit at the floor), and a decoder may keep
    it unchanged. The tolerance absorbs the float32 round trip through the
    normalisation.
    """
    at_floor = self._at_floor(self._log_bands(x))
    return tf.cast(tf.reduce_all(at_floor, axis=-1), tf.float32)

  def call(self, x):
    log_mean, log_std = self._constants[2:]
    e = self._log_bands(x)
    # Bounded: a padding frame or an outlier can't overflow exp().
    amplitude = tf.exp(tf.minimum(e, 20.0))
    magnitude = tf.einsum("btm,mf->btf", amplitude,
                          tf.cast(self.inverse, tf.float32))
    magnitude = magnitude * (1.0 - self.silent(x))[..., None]
    log_magnitude = tf.math.log(tf.maximum(magnitude, self.floor))
    return (log_magnitude - log_mean) / log_std

  def project(self, spectrogram, x, steps: int):
    """Pulls a spectrogram toward the band energies the embedding states.

    The embedding gives each frame's filterbank energies `y = exp(e)`
    exactly (up to the floor), so a decoded magnitude `M` should satisfy
    `M @ W = y`. Each step is the multiplicative update that lowers the
    generalised KL divergence between `y` and `M @ W`,
    `M <- M * ((y / (M @ W)) @ W.T) / (1 @ W.T)`: a bin is rescaled by the
    filter-weighted ratio of stated to decoded energy of the bands that cover
    it. The fine structure inside a band (harmonics) is kept, the band
    energies move to the stated ones; bins that no band covers are left as
    they are, and a band at the floor is only allowed to shrink (its true
    energy is anywhere under the floor). Differentiable, no weights.

    Args:
      spectrogram: `[batch, frames, bins]` normalised log-magnitude.
      x: `[batch, frames, >= bands]` normalised embedding.
      steps: number of updates (0 returns `spectrogram`).

    Returns:
      The projected spectrogram, normalised, float32.
    """
    if steps <= 0 or self._filterbank is None:
      return spectrogram
    log_mean, log_std = self._constants[2:]
    w = self._filterbank
    weight_sum = w.sum(axis=1)
    covered = weight_sum > 0
    spread = w.T / np.maximum(weight_sum, 1e-12)  # [bands, bins]
    spectrogram = tf.cast(spectrogram, tf.float32)
    magnitude = tf.exp(tf.minimum(spectrogram * log_std + log_mean, 20.0))
    magnitude = tf.maximum(magnitude, self.floor)
    e = self._log_bands(x)
    stated = tf.exp(tf.minimum(e, 20.0))
    at_floor = self._at_floor(e)
    for _ in range(steps):
      decoded = tf.einsum("btf,fm->btm", magnitude, w)
      ratio = stated / tf.maximum(decoded, 1e-12)
      ratio = tf.where(at_floor, tf.minimum(ratio, 1.0), ratio)
      ratio = tf.clip_by_value(ratio, _MAX_RATIO ** -1, _MAX_RATIO)
      factor = tf.einsum("btm,mf->btf", ratio, spread)
      magnitude = magnitude * tf.where(covered, factor, 1.0)
    log_magnitude = tf.math.log(tf.maximum(magnitude, self.floor))
    return (log_magnitude - log_mean) / log_std
