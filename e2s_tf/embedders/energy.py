"""`energy`: one number per STFT frame, its log energy; the retention floor.

features = ln(max(sqrt(mean_k |X_k|^2), 1e-5)), `[frames, 1]`, `|X|` the
magnitude of `e2s_tf.spectral.stft` on the STFT grid (the frame's RMS
magnitude over its bins, on the same natural-log scale as the log-STFT).

It carries when and how loud someone speaks and nothing of what, how or who:
a decoder trained on it (`evaluate --floor=EXPORT`) is the floor of the
evaluation's retention table, the score that frame energy alone earns, so
that a model's score reads as a position between that floor and the oracle.
No closed-form inverse: one number per frame says nothing of the spectrum's
shape.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import registry


@registry.register("energy")
class EnergyEmbedder(base.Embedder):
  """Log RMS magnitude `[frames, 1]` on the STFT grid."""

  log_floor = spectral.MAGNITUDE_FLOOR

  def __init__(self, stft_config: spectral.StftConfig = spectral.DEFAULT):
    """Builds the embedder on the grid of `stft_config` (no options)."""
    super().__init__(stft_config)
    self._grid = base.Grid.from_stft(stft_config)
    self._compute = base.waveform_function(self.log_energy)

  @property
  def dim(self) -> int:
    return 1

  @property
  def grid(self) -> base.Grid:
    return self._grid

  def options(self) -> dict[str, Any]:
    return {}

  def log_energy(self, audio: tf.Tensor) -> tf.Tensor:
    """`[..., samples]` waveform -> `[..., frames, 1]` log RMS magnitude."""
    magnitude = tf.abs(spectral.stft(audio, self.stft_config))
    rms = tf.sqrt(tf.reduce_mean(tf.square(magnitude), axis=-1, keepdims=True))
    return tf.math.log(tf.maximum(rms, self.log_floor))

  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    return self._compute(audio)
