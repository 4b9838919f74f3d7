"""Speech reconstruction metrics: small pure functions over one item.

All spectral metrics compare the reconstruction with the reference on the
project's frame grid (the same frames, so no time warping is needed).

- `lsd_db`: log-spectral distance, sqrt(mean over bins of (20 log10 |X| -
  20 log10 |Y|)^2), averaged over frames (magnitudes floored at 1e-5).
- `spectral_convergence`: ||X| - |Y||_F / ||X||_F.
- `mcd_db`: mel-cepstral distortion, (10 / ln 10) sqrt(2 sum_d (c_d - c'_d)^2)
  over cepstra c1..c24 (orthonormal DCT) of the natural-log amplitude of an
  80-band mel spectrum, averaged over frames.
- `stoi`, `estoi`: (extended) short-time objective intelligibility (pystoi).
- `pesq_wb`: wide-band PESQ (ITU-T P.862.2, the `pesq` package), MOS-LQO.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Optional

import numpy as np
import scipy.fft

from e2s_tf import spectral

METRIC_NAMES = ("lsd_db", "spectral_convergence", "mcd_db", "stoi", "estoi",
                "pesq_wb", "rtf")
# Lower is better for these; higher for the others.
LOWER_IS_BETTER = ("lsd_db", "spectral_convergence", "mcd_db", "rtf")
_DB = 20.0 / math.log(10.0)
_MCD_MEL_BANDS = 80
_MCD_COEFFS = 24


def _magnitude(audio: np.ndarray, config: spectral.StftConfig) -> np.ndarray:
  return np.exp(spectral.numpy_log_stft(audio, config)).astype(np.float64)


def lsd_db_from_log(ref_log: np.ndarray, est_log: np.ndarray) -> float:
  """LSD in dB between two natural-log magnitudes `[frames, bins]`."""
  d = _DB * (np.asarray(ref_log, np.float64) - np.asarray(est_log, np.float64))
  return float(np.mean(np.sqrt(np.mean(np.square(d), axis=-1))))


def lsd_db(reference: np.ndarray, estimate: np.ndarray,
           config: spectral.StftConfig = spectral.DEFAULT) -> float:
  n = min(len(reference), len(estimate))
  return lsd_db_from_log(spectral.numpy_log_stft(reference[:n], config),
                         spectral.numpy_log_stft(estimate[:n], config))


def spectral_convergence(reference: np.ndarray, estimate: np.ndarray,
                         config: spectral.StftConfig = spectral.DEFAULT
                         ) -> float:
  """`spectral.spectral_convergence` of two waveforms' magnitudes (float64)."""
  n = min(len(reference), len(estimate))
  x, y = _magnitude(reference[:n], config), _magnitude(estimate[:n], config)
  return float(spectral.spectral_convergence(x[None], y[None])[0])


@functools.lru_cache(maxsize=8)
def _mel_matrix(sample_rate: int, fft_length: int, bands: int) -> np.ndarray:
  """Triangular mel filterbank `[bins, bands]`: HTK mel scale, 0 Hz to
  Nyquist, unnormalised peaks of 1 (`librosa.filters.mel`), float64."""
  with warnings.catch_warnings():
    # librosa 0.10 loads its submodules lazily, one of them with a deprecated
    # importlib API.
    warnings.simplefilter("ignore", DeprecationWarning)
    import librosa.filters  # pylint: disable=g-import-not-at-top
  matrix = librosa.filters.mel(
      sr=sample_rate, n_fft=fft_length, n_mels=bands, fmin=0.0,
      fmax=sample_rate / 2, htk=True, norm=None, dtype=np.float64).T
  matrix.setflags(write=False)
  return matrix


def mel_cepstrum(audio: np.ndarray, config: spectral.StftConfig = spectral.DEFAULT
                 ) -> np.ndarray:
  """Mel cepstra `[frames, 24]` (c1..c24) of a waveform."""
  power = np.square(_magnitude(audio, config))
  mel = power @ _mel_matrix(config.sample_rate, config.fft_length,
                            _MCD_MEL_BANDS)
  log_amplitude = 0.5 * np.log(np.maximum(mel, 1e-10))
  ceps = scipy.fft.dct(log_amplitude, type=2, norm="ortho", axis=-1)
  return ceps[:, 1:_MCD_COEFFS + 1]


def mcd_db(reference: np.ndarray, estimate: np.ndarray,
           config: spectral.StftConfig = spectral.DEFAULT) -> float:
  n = min(len(reference), len(estimate))
  a, b = mel_cepstrum(reference[:n], config), mel_cepstrum(estimate[:n], config)
  dist = (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum(np.square(a - b), -1))
  return float(np.mean(dist))


def stoi(reference, estimate, sample_rate, extended=False) -> float:
  import pystoi  # pylint: disable=g-import-not-at-top
  n = min(len(reference), len(estimate))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return float(pystoi.stoi(np.asarray(reference[:n], np.float64),
                             np.asarray(estimate[:n], np.float64),
                             sample_rate, extended=extended))


def pesq_wb(reference, estimate, sample_rate) -> float:
  """Wide-band PESQ; NaN when PESQ finds no utterance (e.g. silence)."""
  import pesq as pesq_lib  # pylint: disable=g-import-not-at-top
  if sample_rate != 16000:
    raise ValueError(f"wide-band PESQ needs 16 kHz audio, got {sample_rate}")
  n = min(len(reference), len(estimate))
  try:
    return float(pesq_lib.pesq(sample_rate, np.asarray(reference[:n], np.float32),
                               np.asarray(estimate[:n], np.float32), "wb"))
  except pesq_lib.PesqError:
    return float("nan")


def all_metrics(reference: np.ndarray, estimate: np.ndarray,
                config: spectral.StftConfig = spectral.DEFAULT,
                rtf: Optional[float] = None) -> dict[str, float]:
  """Every metric of METRIC_NAMES for one item (rtf as given)."""
  sr = config.sample_rate
  return {
      "lsd_db": lsd_db(reference, estimate, config),
      "spectral_convergence": spectral_convergence(reference, estimate, config),
      "mcd_db": mcd_db(reference, estimate, config),
      "stoi": stoi(reference, estimate, sr),
      "estoi": stoi(reference, estimate, sr, extended=True),
      "pesq_wb": pesq_wb(reference, estimate, sr),
      "rtf": float("nan") if rtf is None else float(rtf),
  }
