"""Naturalness: DNSMOS P.835 scores of one waveform, no reference needed.

A reconstruction can keep the words and the pitch and still sound buzzy or
phasey; DNSMOS (Reddy et al., ICASSP 2022) predicts what listeners of a
P.835 test would rate it, on 1 (bad) to 5 (excellent):

  dnsmos_sig  speech signal quality (distortion of the voice itself);
  dnsmos_bak  background (noise and artefacts around the speech);
  dnsmos_ovr  overall quality.

Higher is better for all three. The model is Microsoft's non-personalised
P.835 network (`sig_bak_ovr.onnx`, shipped in the `speechmos` wheel), run on
onnxruntime's CPU provider; the P.808 model next to it (`model_v8.onnx`) is
not loaded: it gives a fourth, single score, and would double the cost.

`Dnsmos.score` follows the reference procedure (DNS-Challenge's
dnsmos_local.py): audio shorter than the 9.01 s input window is repeated
(appended to itself) until it fills it; the model scores every 9.01 s window
at a 1 s hop; each window's raw scores go through the P.835 polynomial
mapping, and the mapped scores are averaged over the windows. One departure
by default: of an item shorter than a window only the first window of its
repeated copy is scored (the others are the same clip from another start;
`every_repeat=True` scores them all, as the reference): 2.8x faster (0.22
against 0.61 s per item) on 20 espeak-ng items of 2-5 s, whose scores it
moves by 0.025 MOS on average (at most 0.19 on one item) and their means by
less than 0.01, with no bias (mean signed change +0.004 to +0.007).

An item gets None for all three scores when its audio is shorter than
`MIN_SECONDS` (1 s: the reference would repeat 0.3 s of sound 30 times into
a buzz that is not speech, and score that; an utterance shorter than a
second is rare, and a second holds a few syllables), not finite, or
all-zero (silence has no speech quality). Samples outside [-1, 1] are
clipped, as `audio.save_wav` clips what it writes: the score is that of the
file a listener would get. The model takes 16 kHz audio; other rates are
resampled with the project's resampler (`audio.resample`, the one
`audio.load_audio` uses), so that an array scores as its file would.
"""

from __future__ import annotations

import importlib.resources
import os
from typing import Optional

import numpy as np

DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovr")
# Higher is better for all three.
LOWER_IS_BETTER = ()

SAMPLE_RATE = 16000
WINDOW_SECONDS = 9.01
HOP_SECONDS = 1.0
MIN_SECONDS = 1.0
# The model inside the speechmos wheel (package, folder, file).
MODEL_PACKAGE = "speechmos"
MODEL_DIR = "dnsmos_models"
MODEL_FILE = "sig_bak_ovr.onnx"
_INPUT_NAME = "input_1"
# The P.835 mapping of the non-personalised model, raw score -> MOS, highest
# power first (the reference's numpy.poly1d coefficients).
SIG_POLYNOMIAL = (-0.08397278, 1.22083953, 0.0052439)
BAK_POLYNOMIAL = (-0.13166888, 1.60915514, -0.39604546)
OVR_POLYNOMIAL = (-0.06766283, 1.11546468, 0.04602535)
# Windows per onnxruntime call: bounds the memory on a long item (each
# window is 9.01 s of float32 audio).
_WINDOWS_PER_RUN = 8


def default_model_path() -> str:
  """The path of `sig_bak_ovr.onnx` in the installed speechmos package."""
  path = importlib.resources.files(MODEL_PACKAGE) / MODEL_DIR / MODEL_FILE
  return str(path)


def available_threads() -> int:
  """CPU cores this process may run on (its affinity mask where the
  platform has one, which honours taskset and container limits)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not on Linux
    return max(1, os.cpu_count() or 1)


def windows(audio: np.ndarray, every_repeat: bool = True) -> np.ndarray:
  """The reference's 9.01 s windows at a 1 s hop of 16 kHz audio.

  Audio shorter than a window is appended to itself until it fills one;
  window i is samples [i * hop, i * hop + window) for
  i < int(floor(seconds) - 9.01) + 1, as in the reference.

  Args:
    audio: `[samples]` float32 16 kHz audio, non-empty.
    every_repeat: False keeps only the first window of audio shorter than a
      window: the others hold the same clip repeated from another starting
      point (a 3 s item becomes 12 s and 3 windows), so they cost 3x and
      say little more (module docstring: 0.025 MOS per item on average).
      Audio of a window or longer gets every window.

  Returns:
    `[windows, 144160]` float32.

  Raises:
    ValueError: empty audio.
  """
  if len(audio) == 0:
    raise ValueError("no samples to cut into DNSMOS windows")
  length = int(WINDOW_SECONDS * SAMPLE_RATE)
  hop = int(HOP_SECONDS * SAMPLE_RATE)
  short = len(audio) < length
  while len(audio) < length:
    audio = np.concatenate([audio, audio])
  count = int(np.floor(len(audio) / SAMPLE_RATE) - WINDOW_SECONDS) + 1
  if short and not every_repeat:
    count = 1
  starts = [i * hop for i in range(count) if i * hop + length <= len(audio)]
  return np.stack([audio[s:s + length] for s in starts]).astype(np.float32)


class Dnsmos:
  """DNSMOS P.835 with its ONNX session loaded once.

  Attributes:
    session: the onnxruntime InferenceSession, shared by every `score`.
    model_path: the ONNX file loaded.
  """

  def __init__(self, model_path: Optional[str] = None,
               num_threads: Optional[int] = None,
               every_repeat: bool = False):
    """Loads the model.

    Args:
      model_path: the P.835 ONNX model; default `default_model_path()`.
      num_threads: onnxruntime intra-op threads; default
        `available_threads()`.
      every_repeat: score every window of the repeated-to-fill audio of an
        item shorter than a window, as the reference does (`windows`); the
        default scores its first window only, 3x faster on 3 s items.

    Raises:
      FileNotFoundError: no model at `model_path` (speechmos not installed).
    """
    import onnxruntime  # pylint: disable=g-import-not-at-top
    self.every_repeat = every_repeat
    self.model_path = model_path or default_model_path()
    if not os.path.isfile(self.model_path):
      raise FileNotFoundError(
          f"DNSMOS model {self.model_path} not found: install speechmos "
          "(pip install speechmos==0.0.1.1), which ships it")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or available_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL)
    self.session = onnxruntime.InferenceSession(
        self.model_path, sess_options=options,
        providers=["CPUExecutionProvider"])

  def raw_scores(self, batch: np.ndarray) -> np.ndarray:
    """The network's unmapped (SIG, BAK, OVR) `[windows, 3]` of
    `[windows, 144160]` float32 windows."""
    parts = [
        self.session.run(None, {_INPUT_NAME: batch[i:i + _WINDOWS_PER_RUN]})[0]
        for i in range(0, len(batch), _WINDOWS_PER_RUN)]
    return np.concatenate(parts).astype(np.float64)

  def score(self, audio: np.ndarray, sample_rate: int
            ) -> dict[str, Optional[float]]:
    """DNSMOS P.835 of one waveform.

    Args:
      audio: `[samples]` mono float audio.
      sample_rate: its rate; not 16 kHz is resampled.

    Returns:
      {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovr"}: MOS (about 1 to 5), or
      None for all three when the audio is shorter than MIN_SECONDS, not
      finite or all-zero.

    Raises:
      ValueError: audio that is not 1-D, or a sample rate <= 0.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
      raise ValueError(f"expected mono audio [samples], got {audio.shape}")
    if sample_rate <= 0:
      raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    none = dict.fromkeys(DNSMOS_METRICS)
    if (len(audio) < MIN_SECONDS * sample_rate or
        not np.all(np.isfinite(audio)) or not np.any(audio)):
      return none
    audio = np.clip(audio.astype(np.float32), -1.0, 1.0)
    if sample_rate != SAMPLE_RATE:
      from e2s_tf import audio as audio_lib  # pylint: disable=g-import-not-at-top
      audio = audio_lib.resample(audio, sample_rate, SAMPLE_RATE)
    raw = self.raw_scores(windows(audio, self.every_repeat))
    mapped = [np.polyval(p, raw[:, i]) for i, p in enumerate(
        (SIG_POLYNOMIAL, BAK_POLYNOMIAL, OVR_POLYNOMIAL))]
    return {name: float(np.mean(m)) for name, m in zip(DNSMOS_METRICS, mapped)}
