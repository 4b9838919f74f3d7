"""`mfcc`: the first cepstral coefficients of the `logmel` features.

A lossier embedding than `logmel`: the DCT of the log-mel frame, truncated to
`num_coefficients` (20 by default), keeps the smooth spectral envelope and
drops the fine structure. Same grid as the STFT.

The DCT is linear and orthogonal up to a per-coefficient scale, so a truncated
cepstrum maps back to the smoothest log-mel frame with those coefficients,
which `invert_magnitude` passes to the log-mel inverse.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf

from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import logmel
from e2s_tf.embedders import registry

NUM_COEFFICIENTS = 20


@registry.register("mfcc")
class MfccEmbedder(base.Embedder):
  """MFCCs `[frames, num_coefficients]` on the STFT grid."""

  analytic_inverse = True

  def __init__(self, stft_config: spectral.StftConfig = spectral.DEFAULT,
               num_coefficients: int = NUM_COEFFICIENTS,
               num_mel_bins: int = logmel.NUM_MEL_BINS,
               lower_edge_hertz: float = logmel.LOWER_EDGE_HERTZ,
               upper_edge_hertz: Optional[float] = None):
    """Builds the embedder.

    Args:
      stft_config: the frame grid and sample rate.
      num_coefficients: cepstral coefficients kept, 1..num_mel_bins.
      num_mel_bins, lower_edge_hertz, upper_edge_hertz: the log-mel front end.
    """
    super().__init__(stft_config)
    self.log_mel_embedder = logmel.LogMelEmbedder(
        stft_config, num_mel_bins=num_mel_bins,
        lower_edge_hertz=lower_edge_hertz, upper_edge_hertz=upper_edge_hertz)
    num_coefficients = int(num_coefficients)
    if not 0 < num_coefficients <= self.log_mel_embedder.num_mel_bins:
      raise base.OptionError(f"num_coefficients must be in 1..num_mel_bins="
                       f"{self.log_mel_embedder.num_mel_bins}, got "
                       f"{num_coefficients}")
    self.num_coefficients = num_coefficients
    self._compute = base.waveform_function(self.mfcc)

  @property
  def dim(self) -> int:
    return self.num_coefficients

  @property
  def grid(self) -> base.Grid:
    return self.log_mel_embedder.grid

  def options(self) -> dict[str, Any]:
    return {"num_coefficients": self.num_coefficients,
            **self.log_mel_embedder.options()}

  def mfcc(self, audio: tf.Tensor) -> tf.Tensor:
    """`[..., samples]` waveform -> `[..., frames, num_coefficients]`."""
    log_mel = self.log_mel_embedder.log_mel(audio)
    coefficients = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)
    return coefficients[..., :self.num_coefficients]

  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    return self._compute(audio)

  def dct_matrix(self) -> np.ndarray:
    """The `[mel, num_coefficients]` map: mfcc = log_mel @ D."""
    eye = tf.eye(self.log_mel_embedder.num_mel_bins, dtype=tf.float64)
    full = tf.signal.mfccs_from_log_mel_spectrograms(eye).numpy()
    return full[:, :self.num_coefficients]

  def log_mel_from_mfcc(self, features: np.ndarray) -> np.ndarray:
    """`[frames, num_coefficients]` -> least-norm `[frames, mel]` log-mel."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[1] != self.num_coefficients:
      raise ValueError(f"features must be [frames, {self.num_coefficients}], "
                       f"got {features.shape}")
    return features @ np.linalg.pinv(self.dct_matrix())

  def invert_magnitude(self, features: np.ndarray) -> np.ndarray:
    """MFCC `[frames, num_coefficients]` -> magnitude `[frames, bins]`."""
    log_mel = self.log_mel_from_mfcc(features)
    # A truncated cepstrum can dip below the floor the features never cross.
    log_mel = np.maximum(log_mel, np.log(self.log_mel_embedder.log_floor))
    return self.log_mel_embedder.invert_magnitude(log_mel)
