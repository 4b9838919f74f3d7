"""`logmel` (the default embedder): log-mel energies on the STFT grid.

features = ln(max(|X| @ W, 1e-5)), `|X|` the `[frames, bins]` magnitude of
`e2s_tf.spectral.stft` and `W` the `[bins, mel]` matrix of
`tf.signal.linear_to_mel_weight_matrix`. The frames are the STFT's frames, so
the embedding and the target spectrogram are aligned by construction.

The map is linear before the log, so it has a closed-form inverse up to the
bins the mel bands do not resolve: `invert_magnitude` finds a non-negative
magnitude whose mel energies are the given ones (non-negative least squares by
accelerated projected gradient, batched over frames).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf

from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import registry

NUM_MEL_BINS = 64
LOWER_EDGE_HERTZ = 20.0
# Projected-gradient iterations of `invert_magnitude`, and the relative mel
# residual (per frame) below which it stops early.
INVERSE_ITERATIONS = 500
INVERSE_TOLERANCE = 1e-6
_CHECK_EVERY = 25


def nearest_covered_bins(weights: np.ndarray) -> np.ndarray:
  """`[bins]` index of the nearest bin that some band of `weights` covers.

  `weights`: `[bins, bands]` filterbank. Covered bins map to themselves;
  `x[..., nearest_covered_bins(w)]` copies each uncovered bin (DC, Nyquist,
  below the lowest edge) from its nearest covered neighbour. The identity when
  every bin, or none, is covered.
  """
  w = np.asarray(weights)
  bins = np.arange(w.shape[0])
  covered = np.flatnonzero(w.sum(axis=1) > 0)
  if covered.size == 0 or covered.size == bins.size:
    return bins
  return covered[np.abs(bins[:, None] - covered[None, :]).argmin(axis=1)]


def nonnegative_least_squares(targets: np.ndarray, basis: np.ndarray,
                              num_iterations: int = INVERSE_ITERATIONS,
                              tolerance: float = INVERSE_TOLERANCE,
                              init: Optional[np.ndarray] = None) -> np.ndarray:
  """Solves min ||x @ basis - y||^2 s.t. x >= 0 for every row y of `targets`.

  Accelerated projected gradient (FISTA), all rows at once, started from the
  clipped pseudo-inverse solution (or `init`). For an under-determined basis it
  converges to a non-negative solution near the start point rather than the
  sparse vertex solution an active-set NNLS returns.

  Args:
    targets: `[rows, outputs]` y.
    basis: `[unknowns, outputs]`.
    num_iterations: maximum iterations.
    tolerance: stop when every row has ||x @ basis - y|| <= tolerance * ||y||.
    init: optional `[rows, unknowns]` start point (clipped at 0).

  Returns:
    `[rows, unknowns]` float64, non-negative.
  """
  y = np.asarray(targets, np.float64)
  a = np.asarray(basis, np.float64)
  if init is None:
    init = y @ np.linalg.pinv(a)
  x = np.maximum(np.asarray(init, np.float64), 0.0)
  if y.shape[0] == 0:
    return x
  lipschitz = float(np.linalg.norm(a, 2)) ** 2
  if lipschitz == 0.0:
    return np.zeros_like(x)
  gram = a @ a.T  # [unknowns, unknowns]
  y_basis = y @ a.T  # [rows, unknowns]
  y_norm = np.maximum(np.linalg.norm(y, axis=-1), np.finfo(np.float64).tiny)
  z, t = x.copy(), 1.0
  for i in range(num_iterations):
    x_next = np.maximum(z - (z @ gram - y_basis) / lipschitz, 0.0)
    t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
    z = x_next + ((t - 1.0) / t_next) * (x_next - x)
    x, t = x_next, t_next
    if (i + 1) % _CHECK_EVERY == 0:
      residual = np.linalg.norm(x @ a - y, axis=-1) / y_norm
      if np.all(residual <= tolerance):
        break
  return x


@registry.register("logmel")
class LogMelEmbedder(base.Embedder):
  """Log-mel energies `[frames, num_mel_bins]` on the STFT grid.

  Attributes:
    log_floor: the floor applied before the log (features >= ln(log_floor)).
  """

  analytic_inverse = True
  log_floor = spectral.MAGNITUDE_FLOOR

  def __init__(self, stft_config: spectral.StftConfig = spectral.DEFAULT,
               num_mel_bins: int = NUM_MEL_BINS,
               lower_edge_hertz: float = LOWER_EDGE_HERTZ,
               upper_edge_hertz: Optional[float] = None):
    """Builds the embedder.

    Args:
      stft_config: the frame grid and sample rate.
      num_mel_bins: mel bands M.
      lower_edge_hertz: lowest band edge.
      upper_edge_hertz: highest band edge; None = sample_rate / 2.
    """
    super().__init__(stft_config)
    nyquist = stft_config.sample_rate / 2.0
    if upper_edge_hertz is None:
      upper_edge_hertz = nyquist
    num_mel_bins = int(num_mel_bins)
    if num_mel_bins <= 0:
      raise base.OptionError(f"num_mel_bins must be positive, got {num_mel_bins}")
    if not 0.0 <= lower_edge_hertz < upper_edge_hertz <= nyquist:
      raise base.OptionError(
          f"need 0 <= lower_edge_hertz < upper_edge_hertz <= {nyquist}, got "
          f"{lower_edge_hertz}, {upper_edge_hertz}")
    self.num_mel_bins = num_mel_bins
    self.lower_edge_hertz = float(lower_edge_hertz)
    self.upper_edge_hertz = float(upper_edge_hertz)
    self._mel = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=num_mel_bins,
        num_spectrogram_bins=stft_config.num_bins,
        sample_rate=stft_config.sample_rate,
        lower_edge_hertz=self.lower_edge_hertz,
        upper_edge_hertz=self.upper_edge_hertz,
        dtype=tf.float32)  # [bins, mel]
    self._grid = base.Grid.from_stft(stft_config)
    self._compute = base.waveform_function(self.log_mel)

  @property
  def dim(self) -> int:
    return self.num_mel_bins

  @property
  def grid(self) -> base.Grid:
    return self._grid

  def options(self) -> dict[str, Any]:
    return {"num_mel_bins": self.num_mel_bins,
            "lower_edge_hertz": self.lower_edge_hertz,
            "upper_edge_hertz": self.upper_edge_hertz}

  def mel_matrix(self) -> np.ndarray:
    """The `[bins, mel]` weights W: mel energies = |X| @ W."""
    return self._mel.numpy()

  def filterbank(self) -> np.ndarray:
    """The mel weights: the frames are log(|X| @ W) (floored)."""
    return self.mel_matrix()

  def log_mel(self, audio: tf.Tensor) -> tf.Tensor:
    """`[..., samples]` waveform -> `[..., frames, mel]` log-mel energies."""
    magnitude = tf.abs(spectral.stft(audio, self.stft_config))
    mel = tf.tensordot(magnitude, self._mel, axes=1)
    return tf.math.log(tf.maximum(mel, self.log_floor))

  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    return self._compute(audio)

  def invert_magnitude(self, features: np.ndarray,
                       num_iterations: int = INVERSE_ITERATIONS) -> np.ndarray:
    """Log-mel `[frames, mel]` -> non-negative magnitude `[frames, bins]`.

    Solves |X| @ W = exp(features), |X| >= 0, frame by frame (all frames at
    once). Bins that no band covers (DC, Nyquist, below the lowest edge) are
    not observable: they take the value of the nearest covered bin.
    """
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[1] != self.num_mel_bins:
      raise ValueError(f"features must be [frames, {self.num_mel_bins}], got "
                       f"{features.shape}")
    w = self.mel_matrix().astype(np.float64)  # [bins, mel]
    magnitude = nonnegative_least_squares(np.exp(features), w,
                                          num_iterations=num_iterations)
    return magnitude[:, nearest_covered_bins(w)].astype(np.float32)
