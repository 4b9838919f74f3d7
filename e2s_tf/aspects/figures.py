"""The figures of the page to listen: retention by aspect, small spectrograms.

`retention_figure` draws, per aspect, where the model lies between the floor
system (0) and the oracle (1) on that aspect's metric: the one picture that
answers "how much of the signal does the embedding still carry, and of what".
A model below its floor or above its oracle is drawn where it is, outside
[0, 1], never clipped; an aspect that could not be computed says "n/a".

`spectrogram_figure` draws one waveform's log-magnitude STFT (on the
project's frame grid, e2s_tf.spectral) for the player rows of report.html:
small (6 x 2 inches at 80 dpi, 480 x 160 pixels) and quick, since the
evaluation draws one per system for each item it shows.

Both draw on a matplotlib `Figure` with the Agg canvas directly, without
pyplot: no global figure state, no backend switch, nothing left to close.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Optional

import numpy as np

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf.aspects import html_report

# The spectrogram's colour range below its maximum.
DYNAMIC_RANGE_DB = 80.0
SPECTROGRAM_SIZE_INCHES = (6.0, 2.0)
RETENTION_BAR_INCHES = 0.55  # height per aspect
DPI = 80
_DB = 20.0 / math.log(10.0)  # natural log of a magnitude -> dB


def _canvas_figure(size):
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  from matplotlib import figure as figure_lib  # pylint: disable=g-import-not-at-top
  fig = figure_lib.Figure(figsize=size, dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> str:
  """The PNG of `fig` written to `path` whole (`fileio.write_bytes`, on any
  file system; the folder is made if missing)."""
  png = io.BytesIO()
  fig.savefig(png, dpi=DPI, format="png")
  return fileio.write_bytes(path, png.getvalue())


def _finite(value: Any) -> Optional[float]:
  if value is None or isinstance(value, bool):
    return None
  try:
    value = float(value)
  except (TypeError, ValueError):
    return None
  return value if math.isfinite(value) else None


def retention_figure(retention: Mapping[str, Mapping[str, Any]],
                     path: str) -> str:
  """Saves a PNG of one horizontal bar per aspect: its retention.

  Args:
    retention: aspect -> {"metric": name, "model", "floor", "oracle",
      "retention": float or None}; retention = (model - floor) / (oracle -
      floor). Aspects in the order of html_report.ASPECTS, unknown ones
      after. May be empty: the figure then says that nothing was computed.
    path: the PNG to write (its folder is made if missing).

  Returns:
    `path`.
  """
  order = {a: i for i, a in enumerate(html_report.ASPECTS)}
  rows = sorted(retention.items(), key=lambda kv: order.get(kv[0], len(order)))
  fig = _canvas_figure((7.0, 1.2 + RETENTION_BAR_INCHES * max(len(rows), 1)))
  ax = fig.add_subplot(1, 1, 1)
  if not rows:
    ax.text(0.5, 0.5, "retention n/a: no floor system", ha="center",
            va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _save(fig, path)
  values = [_finite((row or {}).get("retention")) for _, row in rows]
  known = [v for v in values if v is not None]
  lo = min([0.0] + known)
  hi = max([1.0] + known)
  pad = 0.12 * (hi - lo)
  ax.set_xlim(lo - pad, hi + pad)
  y = np.arange(len(rows))[::-1]  # the first aspect on top
  labels = []
  for yi, (aspect, row), value in zip(y, rows, values):
    metric = (row or {}).get("metric") or "n/a"
    labels.append(f"{aspect}\n({metric})")
    if value is None:
      ax.text(0.0, yi, "  n/a", va="center", ha="left", color="0.4")
      continue
    ax.barh(yi, value, height=0.6,
            color="tab:blue" if 0.0 <= value <= 1.0 else "tab:orange")
    ax.text(value, yi, f" {value:.2f} ", va="center",
            ha="left" if value >= 0 else "right")
  ax.set_yticks(y)
  ax.set_yticklabels(labels, fontsize=8)
  ax.set_ylim(-0.6, len(rows) - 0.4)
  for x, name in ((0.0, "floor"), (1.0, "oracle")):
    ax.axvline(x, color="0.3", linestyle="--", linewidth=1)
    ax.text(x, 1.01, name, ha="center", va="bottom", fontsize=8,
            transform=ax.get_xaxis_transform())
  ax.set_xlabel("retention: 0 = floor, 1 = oracle")
  fig.tight_layout()
  return _save(fig, path)


def _grid(sample_rate: int) -> spectral.StftConfig:
  """The project's grid at `sample_rate`: the same window and hop in time."""
  base = spectral.DEFAULT
  if sample_rate == base.sample_rate:
    return base
  scale = sample_rate / base.sample_rate
  frame_length = max(2, round(base.frame_length * scale))
  return spectral.StftConfig(
      sample_rate=sample_rate, frame_length=frame_length,
      frame_step=max(1, round(base.frame_step * scale)),
      fft_length=1 << (frame_length - 1).bit_length())


def spectrogram_figure(audio: np.ndarray, sample_rate: int, path: str,
                       title: str,
                       stft: Optional[spectral.StftConfig] = None) -> str:
  """Saves a small PNG of one waveform's log-magnitude spectrogram.

  Args:
    audio: `[samples]` float waveform.
    sample_rate: its rate in Hz.
    path: the PNG to write (its folder is made if missing).
    title: shown above the image (e.g. "model: spk1/utt3").
    stft: the frame grid; default spectral.DEFAULT, or the same window and
      hop in seconds at another `sample_rate`.

  Returns:
    `path`.
  """
  config = stft or _grid(int(sample_rate))
  if config.sample_rate != int(sample_rate):
    raise ValueError(f"stft.sample_rate {config.sample_rate} != audio's "
                     f"{sample_rate}")
  audio = np.asarray(audio, np.float32).reshape(-1)
  db = spectral.numpy_log_stft(audio, config).T * _DB  # [bins, frames]
  fig = _canvas_figure(SPECTROGRAM_SIZE_INCHES)
  ax = fig.add_axes((0.08, 0.22, 0.9, 0.66))
  ax.set_title(title, fontsize=8, loc="left")
  ax.tick_params(labelsize=7)
  ax.set_ylabel("kHz", fontsize=7)
  ax.set_xlabel("seconds", fontsize=7, labelpad=1)
  if db.shape[1] == 0:
    ax.text(0.5, 0.5, "shorter than one frame", ha="center", va="center",
            transform=ax.transAxes, fontsize=8)
    ax.set_xlim(0, audio.shape[0] / sample_rate)
    ax.set_ylim(0, sample_rate / 2000.0)
    return _save(fig, path)
  vmax = float(db.max())
  extent = (0.0, db.shape[1] * config.hop_seconds, 0.0, sample_rate / 2000.0)
  ax.imshow(db, origin="lower", aspect="auto", extent=extent,
            vmin=vmax - DYNAMIC_RANGE_DB, vmax=vmax, cmap="magma",
            interpolation="nearest")
  return _save(fig, path)
