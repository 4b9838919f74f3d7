"""The closed-form first guess a decoder starts from, when the embedder has one.

An embedder states what is known in closed form about it through
`Embedder.filterbank()`: for the log filterbanks (`logmel`) the `[bins,
bands]` weights W of `embedding = ln(max(|X| @ W, floor))`. From those the
decoder builds a `FilterbankPrior`, a non-negative inverse of W that it then
learns, and adds its own output to it (models/multiscale.py). An embedder
without a filterbank (mfcc, a learned encoder) gives no prior: the decoder
starts from nothing.

    prior = prior_lib.from_dataset_info(info, num_bins)  # FilterbankPrior|None
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from e2s_tf import spectral


def filterbank_interpolation(weights: np.ndarray) -> np.ndarray:
  """`[bins, bands]` filterbank -> `[bands, bins]` non-negative inverse.

  Each bin gets the mean amplitude of the bands that cover it, weighted by
  its filter weights (the band's mean amplitude is its output over its
  filter's area); a bin that no band covers (DC and Nyquist for the default
  logmel) copies the nearest covered bin, as `LogMel.invert_magnitude` does.
  Unlike the pseudo-inverse, it never goes negative, so the log of the guess
  stays informative. Spectrogram-domain LSD on 20 validation items of the demo
  corpus: 4.7 dB for this guess (7.8 dB without the fill of the two uncovered
  bins, which then sit at the log floor), 9.8 dB for the clipped
  pseudo-inverse, 5.2 dB for the non-negative least squares of
  `LogMel.invert_magnitude`, which is iterative.
  """
  from e2s_tf.embedders import logmel  # pylint: disable=g-import-not-at-top
  w = np.asarray(weights, np.float64)
  band_area = np.maximum(w.sum(axis=0), 1e-12)
  share = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
  inverse = share.T / band_area[:, None]
  return inverse[:, logmel.nearest_covered_bins(w)].astype(np.float32)


def embedder_filterbank(info: Mapping[str, Any]) -> Optional[np.ndarray]:
  """The `[bins, bands]` filterbank of a dataset's embedder, or None when
  its embedder offers none.

  The embedder is rebuilt on its own frame grid (a target STFT may be framed
  differently, e.g. by the framing experiment); its filterbank is over the
  target's bins. Nothing is built for an embedder that offers no filterbank.

  Raises:
    ValueError: the embedder cannot be rebuilt from the description, or its
      filterbank does not cover the target's bins.
  """
  from e2s_tf import embedders  # pylint: disable=g-import-not-at-top
  description = info["embedder"]
  if not embedders.embedder_class(description["spec"]).offers_filterbank():
    return None
  stft = spectral.StftConfig.from_dict(info["stft"])
  grid = description.get("grid") or {}
  embedder_stft = dataclasses.replace(
      stft, frame_length=int(grid.get("frame_length", stft.frame_length)),
      frame_step=int(grid.get("frame_step", stft.frame_step)))
  try:
    embedder = embedders.from_description(description, embedder_stft)
  except (OSError, embedders.EmbedderError) as e:
    raise ValueError(f"the prior needs the dataset's embedder "
                     f"{description['spec']!r}, which cannot be rebuilt: "
                     f"{e}") from e
  weights = embedder.filterbank()
  if weights is None:
    return None
  weights = np.asarray(weights, np.float32)
  if weights.ndim != 2 or weights.shape[0] != stft.num_bins:
    raise ValueError(f"embedder {description['spec']!r}: its filterbank is "
                     f"{weights.shape}, the target has {stft.num_bins} bins")
  return weights


def from_dataset_info(info: Mapping[str, Any]) -> Optional["FilterbankPrior"]:
  """The `FilterbankPrior` of a dataset (dataset_info.json), initialised to
  the closed-form inverse of its embedder's filterbank; None when the
  embedder offers no filterbank (see `embedder_filterbank`)."""
  weights = embedder_filterbank(info)
  if weights is None:
    return None
  stats = info["stats"]
  return FilterbankPrior(
      filterbank_interpolation(weights), stats["embedding_mean"],
      stats["embedding_std"], stats["log_stft_mean"], stats["log_stft_std"],
      floor=spectral.MAGNITUDE_FLOOR, filterbank=weights,
      name="filterbank_prior")

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
