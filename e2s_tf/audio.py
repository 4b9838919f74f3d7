"""Audio input/output and voice-activity regions on the frame grid.

`load_audio` decodes WAV, FLAC and Ogg/Vorbis files with tensorflow-io, mixes
them down to mono float32 in [-1, 1), resamples them to the project's rate and
optionally cuts a region given in seconds. A region is decoded on its own (with
a margin for the resampler's filter), so its cost does not grow with the file;
the samples are those of the whole file's decoding, cut. `num_samples` reads
a file's length from its header. `save_wav` writes 16-bit PCM.

`vad_regions` is a small energy voice-activity detector whose regions are
half-open frame ranges `[start_frame, end_frame)` on the `StftConfig` grid;
`frames_to_seconds` turns one into the exact sample span those frames cover,
so that `load_audio(path, sr, *frames_to_seconds(region, config))` has exactly
`end_frame - start_frame` frames, aligned with the frames of the whole file.
`quiet_cut_frame` finds the middle of the longest pause in a stretch of audio,
where preprocessing cuts an item that is too long.

Two quirks of tensorflow-io 0.37 are handled here:
  * 32-bit integer PCM WAV files come back as float32 tensors holding the raw
    integer bits; they are reinterpreted (bit-cast) as int32.
  * `tfio.audio.resample` (the Speex resampler) delays its output by half its
    filter length (2 ms at 16 kHz) and drops that many trailing samples. The
    delay is measured once per rate pair with an impulse and compensated
    exactly, so resampled audio stays aligned with the original.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import struct
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_io as tfio

from e2s_tf import fileio
from e2s_tf import spectral

# Extensions of the audio files that manifest builders look for.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


# Kinds of `AudioError`: the file is not there; it is there but cannot be
# decoded; it (or the asked region) holds no samples.
MISSING = "missing"
UNREADABLE = "unreadable"
EMPTY = "empty"
KINDS = (MISSING, UNREADABLE, EMPTY)


class AudioError(ValueError):
  """An audio file cannot be used; the message names the file and the reason.

  Attributes:
    path: the file.
    reason: why, in words.
    kind: one of `KINDS`, for counting (preprocessing's rejection reasons).
  """

  def __init__(self, path: str, reason: str, kind: str = UNREADABLE):
    if kind not in KINDS:
      raise ValueError(f"unknown AudioError kind {kind!r}; known: {KINDS}")
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason
    self.kind = kind

  def __reduce__(self):
    # Keeps the fields when the error crosses a process boundary.
    return self.__class__, (self.path, self.reason, self.kind)


# --------------------------------------------------------------------------
# Decoding.

def _uint8_to_float(x: np.ndarray) -> np.ndarray:
  # Offset binary: 128 is zero (8-bit WAV and tfio's 8-bit FLAC).
  return (x.astype(np.float32) - 128.0) / 128.0


def _int_to_float(bits: int) -> Callable[[np.ndarray], np.ndarray]:
  # Dividing by a power of two is exact, so rounding the integer to float32
  # first gives the float64 route's result without its copy of 8 bytes a
  # sample.
  scale = np.float32(2 ** (bits - 1))
  return lambda x: x.astype(np.float32) / scale


# tensorflow-io sample dtype -> conversion to float32 in [-1, 1). 24-bit files
# arrive left-aligned in int32, so they share the int32 full scale.
_TO_FLOAT = {
    tf.uint8: _uint8_to_float,
    tf.int16: _int_to_float(16),
    tf.int32: _int_to_float(32),
    tf.float32: lambda x: x.astype(np.float32),
}

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_RIFF_CHUNK_HEADER = struct.Struct("<4sI")


def _wav_sample_format(path: str) -> Optional[tuple[int, int]]:
  """(format tag, bits per sample) of a RIFF/WAVE file, None for other files."""
  with tf.io.gfile.GFile(path, "rb") as f:
    if f.read(12)[8:12] != b"WAVE":
      return None
    while True:
      header = f.read(_RIFF_CHUNK_HEADER.size)
      if len(header) < _RIFF_CHUNK_HEADER.size:
        return None
      chunk_id, size = _RIFF_CHUNK_HEADER.unpack(header)
      if chunk_id != b"fmt ":
        f.seek(size + (size & 1), 1)  # chunks are padded to even sizes
        continue
      body = f.read(size)
      if len(body) < 16:
        return None
      tag = struct.unpack_from("<H", body, 0)[0]
      bits = struct.unpack_from("<H", body, 14)[0]
      if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack_from("<H", body, 24)[0]  # SubFormat GUID start
      return tag, bits


def _op_message(error: tf.errors.OpError) -> str:
  """The useful part of a TensorFlow op error message."""
  message = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message)
  return re.sub(r"\s*\[Op:[^\]]*\].*$", "", message).strip()


def _open(path: str) -> tuple[tfio.audio.AudioIOTensor, int, int]:
  """The lazily decoded file, its sample rate and its length in samples.

  Only the header is read here; `_read` decodes the samples asked for.
  """
  if not tf.io.gfile.exists(path):
    raise AudioError(path, "no such file", MISSING)
  if tf.io.gfile.isdir(path):
    raise AudioError(path, "is a directory, not an audio file")
  try:
    io_tensor = tfio.audio.AudioIOTensor(path)
    rate = int(io_tensor.rate.numpy())
    length = int(io_tensor.shape[0].numpy())
  except tf.errors.OpError as e:
    reason = _op_message(e)
    if "unknown file type" in reason:
      reason = ("unsupported or unrecognised audio format (WAV, FLAC, "
                "Ogg/Vorbis)")
    raise AudioError(path, f"cannot decode: {reason}") from None
  if rate <= 0:
    raise AudioError(path, f"invalid sample rate {rate}")
  return io_tensor, rate, length


def _read(io_tensor: tfio.audio.AudioIOTensor, path: str,
          first: Optional[int] = None, last: Optional[int] = None
          ) -> np.ndarray:
  """Samples `[first, last)` (all by default) as mono float32 `[samples]`."""
  try:
    if first is None and last is None:
      samples = io_tensor.to_tensor()
    else:
      samples = io_tensor[first:last]
  except tf.errors.OpError as e:
    raise AudioError(path, f"cannot decode: {_op_message(e)}") from None
  if samples.dtype == tf.float32 and _wav_sample_format(path) == (
      _WAVE_FORMAT_PCM, 32):
    samples = tf.bitcast(samples, tf.int32)
  to_float = _TO_FLOAT.get(samples.dtype)
  if to_float is None:
    raise AudioError(path, f"unsupported sample type {samples.dtype.name}")
  samples = to_float(samples.numpy())
  if samples.shape[1] == 1:
    return np.ascontiguousarray(samples[:, 0])
  return samples.mean(axis=1, dtype=np.float32)


# --------------------------------------------------------------------------
# Resampling.

def _speex_resample_fn(rate_in: int, rate_out: int):
  """tfio's resampler traced once for `[samples, 1]` float32 input."""
  fn = tf.function(
      lambda x: tfio.audio.resample(x, rate_in=rate_in, rate_out=rate_out),
      input_signature=[tf.TensorSpec([None, 1], tf.float32)])
  return fn.get_concrete_function()


# Input samples before the impulse that measures the resampler's delay.
_IMPULSE_POSITION = 4096


@functools.lru_cache(maxsize=None)
def _resampler(rate_in: int, rate_out: int):
  """tfio's resampler for a rate pair and how to undo its delay.

  The Speex resampler delays its output by a whole number `delay` of input
  samples (half its filter). It is measured with an impulse. Prepending
  `lead` zeros makes the total delay `delay + lead` a whole number `skip` of
  output samples as well, which are then dropped: the result is aligned
  exactly.

  Returns:
    (resample function of `[samples, 1]` float32, lead, skip).
  """
  fn = _speex_resample_fn(rate_in, rate_out)
  g = math.gcd(rate_in, rate_out)
  step_in, step_out = rate_in // g, rate_out // g
  # An impulse at an input position that maps to an integer output position,
  # far enough from the start for the whole filter response.
  position = step_in * max(1, -(-_IMPULSE_POSITION // step_in))
  impulse = np.zeros([3 * position, 1], np.float32)
  impulse[position] = 1.0
  response = fn(tf.constant(impulse)).numpy()[:, 0]
  peak = int(np.argmax(np.abs(response)))
  left, mid, right = response[peak - 1:peak + 2]
  curvature = left - 2.0 * mid + right
  offset = 0.5 * (left - right) / curvature if curvature else 0.0
  delay_out = peak + offset - position * step_out / step_in
  delay = int(round(delay_out * rate_in / rate_out))
  periods = -(-delay // step_in)
  return fn, periods * step_in - delay, periods * step_out


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Resamples `[samples]` float32 audio with tensorflow-io, delay compensated.

  Returns:
    `[ceil(samples * rate_out / rate_in)]` float32; output sample `j` is the
    signal at time `j / rate_out`, like `scipy.signal.resample_poly`.
  """
  audio = np.asarray(audio, np.float32).reshape(-1)
  rate_in, rate_out = int(rate_in), int(rate_out)
  if rate_in == rate_out:
    return audio
  fn, lead, skip = _resampler(rate_in, rate_out)
  num_out = -(-audio.shape[0] * rate_out // rate_in)
  # Trailing zeros so that the filter tail and the last outputs flush out.
  tail = -(-(skip + 2) * rate_in // rate_out) + 2
  padded = np.concatenate([np.zeros([lead], np.float32), audio,
                           np.zeros([tail], np.float32)])
  out = fn(tf.constant(padded[:, None])).numpy()[:, 0]
  return np.ascontiguousarray(out[skip:skip + num_out])


# --------------------------------------------------------------------------
# Public I/O.

def _resample_margin(rate_in: int, rate_out: int) -> int:
  """Input samples around a region that the resampler's filter needs: a
  whole number of rate periods, as far as the impulse `_resampler` measures
  its delay with (beyond the filter's reach)."""
  step_in = rate_in // math.gcd(rate_in, rate_out)
  return step_in * max(1, -(-_IMPULSE_POSITION // step_in))


def num_samples(path: str, sample_rate: int) -> int:
  """Samples of the file at `sample_rate` (what `load_audio` returns), from
  its header alone.

  Raises:
    AudioError: missing, unreadable or unsupported file.
  """
  _, rate, length = _open(path)
  return -(-length * int(sample_rate) // rate)


def load_audio(path: str, sample_rate: int, start: Optional[float] = None,
               end: Optional[float] = None) -> np.ndarray:
  """Loads a WAV/FLAC/Ogg file as mono float32 at `sample_rate`.

  Channels are averaged; integer samples are scaled to [-1, 1). The region
  `[start, end)` in seconds (either may be None) is cut after resampling:
  samples `[round(start * sample_rate), round(end * sample_rate))`. Only the
  region is decoded (plus the resampler's margin on either side, which makes
  the samples equal to those of the whole file, cut), so a short region of a
  long file costs what the region does.

  Returns:
    `[samples]` float32.

  Raises:
    AudioError: missing, unreadable, corrupt or unsupported file, a file
      without samples, or a region outside the audio.
  """
  if sample_rate <= 0:
    raise ValueError(f"sample_rate must be positive, got {sample_rate}")
  io_tensor, rate, length = _open(path)
  if length == 0:
    raise AudioError(path, "contains no samples", EMPTY)
  if start is None and end is None:
    return resample(_read(io_tensor, path), rate, sample_rate)
  n = -(-length * sample_rate // rate)
  first = 0 if start is None else int(round(start * sample_rate))
  last = n if end is None else int(round(end * sample_rate))
  if not 0 <= first < last <= n:
    raise AudioError(
        path, f"region [{start}, {end}) s is empty or outside the audio "
        f"(duration {n / sample_rate:.4f} s at {sample_rate} Hz)", EMPTY)
  if rate == sample_rate:
    return _read(io_tensor, path, first, last)
  # The decoded stretch starts on a whole rate period (so that its output
  # samples fall on the whole file's) and reaches past the filter on both
  # sides; resampling it gives the whole file's samples there exactly.
  g = math.gcd(rate, sample_rate)
  step_in, step_out = rate // g, sample_rate // g
  margin = _resample_margin(rate, sample_rate)
  lo = max(0, (first * step_in // step_out - margin) // step_in * step_in)
  hi = min(length, -(-last * step_in // step_out) + margin)
  out = resample(_read(io_tensor, path, lo, hi), rate, sample_rate)
  offset = lo // step_in * step_out
  return np.ascontiguousarray(out[first - offset:last - offset])


def save_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
  """Writes `[samples]` audio as 16-bit PCM WAV, clipped to [-1, 1].

  Parent directories are created; the file is written under a temporary name
  and renamed (`fileio.write_audio`, on any file system), so `path` is
  either absent or complete.
  """
  audio = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
  fileio.write_audio(path, audio, int(sample_rate), subtype="PCM_16",
                     file_format="WAV")


# --------------------------------------------------------------------------
# Voice activity.

@dataclasses.dataclass(frozen=True)
class VadOptions:
  """Settings of `vad_regions` (see there)."""

  threshold_db: float = -35.0
  min_region_frames: int = 30
  hangover_frames: int = 8
  min_gap_frames: int = 0
  floor_db: float = -70.0


def frame_energy_db(audio: np.ndarray,
                    config: spectral.StftConfig = spectral.DEFAULT
                    ) -> np.ndarray:
  """Mean-square energy of each grid frame (rectangular window) in dB.

  Full scale (a square wave of amplitude 1) is 0 dB.

  Returns:
    `[config.num_frames(samples)]` float64.
  """
  audio = np.asarray(audio, np.float64).reshape(-1)
  num_frames = config.num_frames(audio.shape[0])
  if num_frames == 0:
    return np.zeros([0])
  cumulative = np.concatenate([[0.0], np.cumsum(np.square(audio))])
  starts = np.arange(num_frames) * config.frame_step
  power = (cumulative[starts + config.frame_length] - cumulative[starts]
           ) / config.frame_length
  return 10.0 * np.log10(np.maximum(power, 1e-20))


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
  """Half-open index ranges of the True runs of a boolean vector."""
  edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
  return list(zip(np.flatnonzero(edges == 1).tolist(),
                  np.flatnonzero(edges == -1).tolist()))


def vad_regions(audio: np.ndarray,
                config: spectral.StftConfig = spectral.DEFAULT,
                threshold_db: float = VadOptions.threshold_db,
                min_region_frames: int = VadOptions.min_region_frames,
                hangover_frames: int = VadOptions.hangover_frames,
                min_gap_frames: int = VadOptions.min_gap_frames,
                floor_db: float = VadOptions.floor_db) -> list[tuple[int, int]]:
  """Voice-active regions of `audio` as frame ranges on the grid.

  A frame (samples `[t * frame_step, t * frame_step + frame_length)`) is speech
  when its energy is within `-threshold_db` dB of the loudest frame and above
  the absolute `floor_db` (so digital silence has no regions). Each speech run
  is extended by `hangover_frames` after it ends (clipped to the signal), which
  merges runs separated by at most `hangover_frames` frames; runs whose
  remaining gap is shorter than `min_gap_frames` merge too. Regions shorter
  than `min_region_frames` are dropped.

  Args:
    audio: `[samples]` float waveform at `config.sample_rate`.
    config: the frame grid.

  Returns:
    Sorted, disjoint half-open `[start_frame, end_frame)` tuples.
  """
  if threshold_db > 0:
    raise ValueError(f"threshold_db is relative to the loudest frame and must "
                     f"be <= 0, got {threshold_db}")
  if min(min_region_frames, hangover_frames, min_gap_frames) < 0:
    raise ValueError("frame counts of vad_regions must be >= 0")
  energy = frame_energy_db(audio, config)
  if energy.size == 0:
    return []
  threshold = max(energy.max() + threshold_db, floor_db)
  num_frames = energy.shape[0]
  regions: list[list[int]] = []
  for start, end in _runs(energy >= threshold):
    end = min(end + hangover_frames, num_frames)
    if regions and start - regions[-1][1] < max(min_gap_frames, 1):
      regions[-1][1] = max(regions[-1][1], end)
    else:
      regions.append([start, end])
  return [(s, e) for s, e in regions if e - s >= max(min_region_frames, 1)]


def frames_to_seconds(region: tuple[int, int],
                      config: spectral.StftConfig = spectral.DEFAULT
                      ) -> tuple[float, float]:
  """(start_s, end_s) of the samples that frames `[start, end)` cover.

  start = start_frame * hop / sr and
  end = ((end_frame - 1) * hop + window) / sr, so cutting those seconds with
  `load_audio` yields `end_frame - start_frame` frames.
  """
  start, end = int(region[0]), int(region[1])
  if not 0 <= start < end:
    raise ValueError(f"invalid frame region {region}")
  first = start * config.frame_step
  last = first + config.num_samples(end - start)
  return first / config.sample_rate, last / config.sample_rate


def quiet_cut_frame(audio: np.ndarray,
                    config: spectral.StftConfig = spectral.DEFAULT,
                    tolerance_db: float = 6.0) -> int:
  """The grid frame in the middle of the longest pause of `audio`.

  A pause is a run of frames whose energy (`frame_energy_db`) is within
  `tolerance_db` of the quietest frame's: in a stretch of speech, the longest
  voice-inactive run, and in continuous sound its quietest stretch. Ties go to
  the earliest run. Cutting a signal at sample `frame * frame_step` keeps the
  frames of both parts on the grid of the whole.

  Args:
    audio: `[samples]` waveform with at least one frame.
    config: the frame grid.
    tolerance_db: how far above the quietest frame a frame still counts as
      part of a pause.

  Returns:
    A frame index in `[0, config.num_frames(len(audio)))`.
  """
  energy = frame_energy_db(audio, config)
  if energy.size == 0:
    raise ValueError(f"need at least one frame ({config.frame_length} "
                     f"samples), got {np.asarray(audio).size} samples")
  runs = _runs(energy <= energy.min() + tolerance_db)
  start, end = max(runs, key=lambda r: r[1] - r[0])
  return (start + end - 1) // 2
