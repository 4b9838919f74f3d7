"""TensorBoard summaries: spectrogram images (target | prediction | error) and audio.

Images are coloured with a small built-in perceptual colour ramp so that
training needs no plotting library; frequency runs upwards.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

# Anchor colours of a dark-blue -> teal -> yellow ramp (viridis-like).
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98],
                  [253, 231, 37]], np.float32) / 255.0


def colorize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
  """`[H, W]` values -> `[H, W, 3]` uint8 through the colour ramp.

  Non-finite values (a diverging model's) take the ends of the ramp: NaN and
  -inf the low end, +inf the high end.
  """
  if not (np.isfinite(vmin) and np.isfinite(vmax)):
    vmin, vmax = 0.0, 1.0
  values = np.nan_to_num(np.asarray(values, np.float32), nan=vmin,
                         posinf=vmax, neginf=vmin)
  x = np.clip((values - vmin) / max(vmax - vmin, 1e-6),
              0.0, 1.0) * (len(_RAMP) - 1)
  lo = np.floor(x).astype(int)
  hi = np.minimum(lo + 1, len(_RAMP) - 1)
  frac = (x - lo)[..., None]
  rgb = _RAMP[lo] * (1.0 - frac) + _RAMP[hi] * frac
  return (rgb * 255.0 + 0.5).astype(np.uint8)


def spectrogram_panel(target_log: np.ndarray, prediction_log: np.ndarray,
                      separator: int = 4) -> np.ndarray:
  """Target | prediction | |error| side by side: `[bins, 3 * frames + 2s, 3]`.

  Args:
    target_log, prediction_log: `[frames, bins]` natural-log magnitudes of the
      valid frames of one item.
  """
  target = np.asarray(target_log, np.float32)
  prediction = np.asarray(prediction_log, np.float32)
  vmax = float(np.max(target))
  vmin = max(float(np.min(target)), vmax - 10.0)  # ~87 dB of range
  error = np.abs(target - prediction)
  panels = [colorize(target.T[::-1], vmin, vmax),
            colorize(prediction.T[::-1], vmin, vmax),
            colorize(error.T[::-1], 0.0, 3.0)]
  gap = np.full((target.shape[1], separator, 3), 255, np.uint8)
  return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def write_spectrograms(name: str, targets: Sequence[np.ndarray],
                       predictions: Sequence[np.ndarray], step: int):
  """One image per item under `name/<k>` in the default summary writer."""
  for k, (t, p) in enumerate(zip(targets, predictions)):
    tf.summary.image(f"{name}/{k}", spectrogram_panel(t, p)[None], step=step,
                     description="target | prediction | |error| (log-STFT)")


def write_audio(name: str, waveforms: Sequence[np.ndarray], sample_rate: int,
                step: int):
  for k, w in enumerate(waveforms):
    w = np.clip(np.nan_to_num(np.asarray(w, np.float32)), -1.0, 1.0)
    tf.summary.audio(f"{name}/{k}", w[None, :, None], sample_rate, step=step)


def write_config(config_text: str, step: int = 0):
  tf.summary.text("config", "```\n" + config_text + "\n```", step=step)
