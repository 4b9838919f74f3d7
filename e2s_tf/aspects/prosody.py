"""Prosody metrics: how much of the pitch and loudness contours a
reconstruction keeps.

A reconstruction can be intelligible and still flatten the intonation or
lose the rhythm of loudness; these metrics measure that, between a reference
waveform and a reconstruction (mono, same sample rate, the longer cropped to
the shorter):

  f0_rmse_cents          RMSE of 1200 log2(f_est / f_ref) over the frames
                         voiced in both (lower is better);
  gross_pitch_error      share of the frames voiced in both where
                         |f_est / f_ref - 1| > 0.2 (lower is better);
  voicing_decision_error share of all frames whose voiced/unvoiced decisions
                         differ (lower is better);
  f0_frame_error         share of all frames with a voicing decision error
                         or a gross pitch error (FFE, Chu and Alwan 2009):
                         the one figure that counts both ways of losing the
                         pitch, defined wherever the reference is voiced,
                         so also for a reconstruction that has lost its
                         voicing (lower is better; the retention's);
  f0_correlation         Pearson correlation of F0 in Hz over the frames
                         voiced in both (higher is better);
  energy_correlation     Pearson correlation of the frame log-energy contours
                         in dB over all frames (higher is better).

Pitch tracker (`track_f0`): pYIN (librosa) with 0.2-semitone pitch bins,
60 to 600 Hz, one frame every 10 ms (frame k at k * 10 ms), its bin-centre
F0 refined by parabolic interpolation of the YIN difference function
(`refine_f0`). Picked by measurement (e2s_tf/benchmarks/pitch.py, run in
docs/experiments/pitch_tracker.md) among WORLD's DIO (with and without
StoneMask) and Harvest (pyworld) and pYIN variants, on espeak-ng and on
recorded speech:

- The deciding figure is the metrics' floor: each tracker's track of an
  item's oracle Griffin-Lim copy (the same magnitude, another phase) against
  its track of the item, i.e. what a perfect magnitude would score. pYIN's
  is no gross errors, 9-11 cents fine RMSE and 3 % voicing disagreement;
  DIO+StoneMask's 0.4-0.6 % gross errors, 24-28 cents and 6.5-12 %;
  Harvest's 4-4.5 %, 53 cents and 6-6.5 %. What DIO and StoneMask measure
  depends on the waveform's phase (DIO: intervals between zero crossings and
  peaks of band-passed signals; StoneMask: instantaneous frequency), and
  the phase is what Griffin-Lim replaces; YIN's difference function
  depends on it far less.
- Speed: 0.03 s per audio second (DIO+StoneMask 0.004, Harvest 0.11-0.16,
  pYIN at librosa's 0.1-semitone bins 0.09-0.11, on a shared 2-core
  machine): 40 items x 5 systems of 3 s (240 tracks) take ~25 s.
- On harmonic tones of known F0 it is within 0.1 cent RMS on a steady note
  and 6 cents on a fast glide (1.6 octaves/s, the half-period offset of YIN's
  window), without gross errors; the 20-cent bins alone would quantise an
  interval of 25 cents to 20 or 40.
Both waveforms of an item go through the same tracker, so what bias it has
mostly cancels in the comparison.

Energy contour: mean-square energy in dB (full scale 0 dB) of rectangular
frames on the project's grid (`audio.frame_energy_db`: 30 ms frames every
10 ms, frame t covering [t * hop, t * hop + frame), scaled to the sample
rate), floored at `ENERGY_RANGE_DB` below the contour's loudest frame (so
that digital silence and a quiet noise floor read the same, and a scaled copy
gives the same contour shifted).

A metric that cannot be computed on an item is None (n/a), never a silent 0:
the F0 metrics need `MIN_FRAMES` frames voiced in both; the voicing decision
error needs `MIN_FRAMES` frames and as many voiced frames in the reference
(without a pitch contour in the reference there is no prosody to keep, and
silence against silence would score a perfect 0); a correlation needs a
contour that is not constant (spread below `MIN_F0_SPREAD_CENTS` or
`MIN_ENERGY_SPREAD_DB`); non-finite audio makes every metric None.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple, Optional

import numpy as np

from e2s_tf import audio as audio_lib
from e2s_tf import spectral

PROSODY_METRICS = ("f0_rmse_cents", "gross_pitch_error",
                   "voicing_decision_error", "f0_frame_error",
                   "f0_correlation", "energy_correlation")
# Lower is better for these; higher for the others.
LOWER_IS_BETTER = ("f0_rmse_cents", "gross_pitch_error",
                   "voicing_decision_error", "f0_frame_error")

# The pitch tracker's hop: the project's (10 ms).
HOP_SECONDS = spectral.DEFAULT.hop_seconds
# pYIN's frame (64 ms; its YIN window is half of it, and must hold more than
# two periods at F0_FLOOR_HZ).
PYIN_FRAME_SECONDS = 0.064
# pYIN's pitch-bin width: twice librosa's default of 0.1 semitone (10
# cents), which makes its Viterbi decoding (the bulk of its time, quadratic in
# the number of bins) 3x faster at a quantisation of 20 cents.
PYIN_RESOLUTION_SEMITONES = 0.2
# pYIN frame k starts this fraction of a frame before k * hop (`track_f0`).
_PYIN_LEAD_FRACTION = 4
# `refine_f0`: lags either side of pYIN's period where the YIN difference is
# evaluated (the inner ones hold its minimum: half a bin is < 1 sample at
# F0_FLOOR_HZ), and voiced frames refined at a time (bounds the memory).
REFINE_LAGS = 3
_REFINE_CHUNK = 256
# Search range of the tracker: low male voices to high female and child ones.
F0_FLOOR_HZ = 60.0
F0_CEIL_HZ = 600.0
CENTS_PER_OCTAVE = 1200.0
CENTS_PER_SEMITONE = 100.0
# A frame's pitch is grossly wrong beyond this relative deviation (20 %).
GROSS_ERROR_THRESHOLD = 0.2
# Fewest frames (100 ms at the 10 ms hop) that a metric is computed on:
# statistics of fewer are noise.
MIN_FRAMES = 10
# A contour flatter than this (standard deviation) is constant: its
# correlation with anything measures the tracker's jitter, not prosody.
MIN_F0_SPREAD_CENTS = 1.0
MIN_ENERGY_SPREAD_DB = 0.1
# Frame energies are floored this far below the loudest frame of a contour.
ENERGY_RANGE_DB = 60.0


class PitchTrack(NamedTuple):
  """A pitch contour on the 10 ms grid.

  Attributes:
    f0_hz: `[frames]` float64, F0 of voiced frames, 0 for unvoiced ones.
    voiced: `[frames]` bool.
  """
  f0_hz: np.ndarray
  voiced: np.ndarray


def _mono(audio: np.ndarray) -> np.ndarray:
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f"expected mono audio [samples], got shape {audio.shape}")
  return np.ascontiguousarray(audio, np.float64)


def track_f0(audio: np.ndarray, sample_rate: int, *,
             resolution_semitones: float = PYIN_RESOLUTION_SEMITONES,
             refine: bool = True) -> PitchTrack:
  """F0 of a waveform: pYIN (librosa) on the 10 ms grid, refined.

  YIN compares the first half of a pYIN frame with its shifts by the period
  tau, so a frame describes the span [start, start + frame / 2 + tau). The
  frames are placed so that this span is centred on k * hop (up to half a
  period): frame k covers [k * hop - frame / 4, k * hop + 3 frame / 4), zeros
  outside the audio. (librosa's own centring, frame k covering
  [k * hop - frame / 2, k * hop + frame / 2), describes the audio ~12 ms
  before k * hop.)

  Args:
    audio: `[samples]` mono float audio, finite.
    sample_rate: samples per second.
    resolution_semitones: pYIN's pitch-bin width.
    refine: refine the bin-centre F0 (`refine_f0`).

  Returns:
    `PitchTrack(f0_hz, voiced)`, each `[1 + samples // hop]`, frame k at
    k * hop. Audio shorter than a pYIN frame (PYIN_FRAME_SECONDS) gives
    unvoiced frames.
  """
  x = _mono(audio)
  hop = int(round(HOP_SECONDS * sample_rate))
  frame = int(round(PYIN_FRAME_SECONDS * sample_rate))
  frames = 1 + len(x) // hop
  if len(x) < frame:
    return PitchTrack(np.zeros([frames]), np.zeros([frames], bool))
  lead = frame // _PYIN_LEAD_FRACTION
  x = np.pad(x, (lead, frame - lead))
  with warnings.catch_warnings():
    # librosa's lazy submodule imports; all-silent frames (0 / 0).
    warnings.simplefilter("ignore")
    import librosa  # pylint: disable=g-import-not-at-top
    f0, voiced, _ = librosa.pyin(
        x, fmin=F0_FLOOR_HZ, fmax=F0_CEIL_HZ, sr=sample_rate,
        frame_length=frame, hop_length=hop, center=False,
        resolution=resolution_semitones)
  f0, voiced = f0[:frames], np.asarray(voiced[:frames], bool)
  voiced &= np.isfinite(f0) & (f0 > 0.0)
  f0 = np.where(voiced, f0, 0.0)
  if refine:
    f0 = refine_f0(x, f0, voiced, sample_rate, resolution_semitones)
  return PitchTrack(f0, voiced)


def refine_f0(frames_audio: np.ndarray, f0_hz: np.ndarray,
              voiced: np.ndarray, sample_rate: int,
              resolution_semitones: float = PYIN_RESOLUTION_SEMITONES
              ) -> np.ndarray:
  """Refines pYIN's F0 (a bin centre) by parabolic interpolation of the YIN
  difference function around its period.

  For a voiced frame f (samples [k * hop, k * hop + frame) of
  `frames_audio`) of period tau0 = round(sample_rate / f0), the difference
  d(tau) = sum_{j < frame / 2} (f[j] - f[j + tau])^2 is computed at
  tau0 - REFINE_LAGS ... tau0 + REFINE_LAGS; a parabola through its lowest
  inner lag and their neighbours gives the period. The refined F0 is kept
  when it lies within one pitch bin of pYIN's (the bin it quantised), else
  pYIN's stays.

  Args:
    frames_audio: `[samples]` float64 mono audio as pYIN framed it
      (center=False).
    f0_hz: `[frames]` pYIN's F0, 0 where unvoiced.
    voiced: `[frames]` bool.
    sample_rate: samples per second.
    resolution_semitones: pYIN's pitch-bin width.

  Returns:
    `[frames]` float64 F0, 0 where unvoiced.
  """
  hop = int(round(HOP_SECONDS * sample_rate))
  half = int(round(PYIN_FRAME_SECONDS * sample_rate)) // 2
  out = np.array(f0_hz, np.float64)
  frames = np.flatnonzero(voiced)
  if frames.size == 0:
    return out
  deltas = np.arange(-REFINE_LAGS, REFINE_LAGS + 1)
  periods = np.rint(sample_rate / out[frames]).astype(np.int64)
  # Zeros past the end, for the last frames' longest shifts.
  reach = int(frames[-1]) * hop + int(periods.max()) + REFINE_LAGS + half
  padded = np.pad(np.asarray(frames_audio, np.float64),
                  (0, max(0, reach - len(frames_audio))))
  window = np.arange(half)
  bin_cents = resolution_semitones * CENTS_PER_SEMITONE
  for start in range(0, len(frames), _REFINE_CHUNK):
    chunk = frames[start:start + _REFINE_CHUNK]
    starts = chunk * hop
    lags = periods[start:start + _REFINE_CHUNK, None] + deltas  # [K, L]
    head = padded[starts[:, None] + window]  # [K, w]
    shifted = padded[(starts[:, None] + lags)[:, :, None] + window]  # [K, L, w]
    diff = np.sum(np.square(head[:, None, :] - shifted), axis=-1)  # [K, L]
    rows = np.arange(len(chunk))
    best = 1 + np.argmin(diff[:, 1:-1], axis=1)
    left, mid, right = (diff[rows, best - 1], diff[rows, best],
                        diff[rows, best + 1])
    curvature = left - 2.0 * mid + right
    shift = np.where(curvature > 0.0, 0.5 * (left - right) /
                     np.where(curvature > 0.0, curvature, 1.0), 0.0)
    refined = sample_rate / (lags[rows, best] + shift)
    moved = np.abs(CENTS_PER_OCTAVE * np.log2(refined / out[chunk]))
    out[chunk] = np.where(moved <= bin_cents, refined, out[chunk])
  return out


def _cropped(reference: PitchTrack, estimate: PitchTrack):
  n = min(len(reference.f0_hz), len(estimate.f0_hz))
  return (reference.f0_hz[:n], reference.voiced[:n], estimate.f0_hz[:n],
          estimate.voiced[:n])


def _both_voiced(reference: PitchTrack, estimate: PitchTrack
                 ) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """F0 of the frames voiced in both `([k], [k])`, None if k < MIN_FRAMES."""
  ref_f0, ref_voiced, est_f0, est_voiced = _cropped(reference, estimate)
  both = ref_voiced & est_voiced
  if np.count_nonzero(both) < MIN_FRAMES:
    return None
  return ref_f0[both], est_f0[both]


def f0_rmse_cents(reference: PitchTrack, estimate: PitchTrack
                  ) -> Optional[float]:
  """RMSE of 1200 log2(f_est / f_ref) over frames voiced in both, or None."""
  pair = _both_voiced(reference, estimate)
  if pair is None:
    return None
  cents = CENTS_PER_OCTAVE * np.log2(pair[1] / pair[0])
  return float(np.sqrt(np.mean(np.square(cents))))


def gross_pitch_error(reference: PitchTrack, estimate: PitchTrack
                      ) -> Optional[float]:
  """Share of frames voiced in both with |f_est / f_ref - 1| > 0.2, or None."""
  pair = _both_voiced(reference, estimate)
  if pair is None:
    return None
  return float(np.mean(np.abs(pair[1] / pair[0] - 1.0) > GROSS_ERROR_THRESHOLD))


def voicing_decision_error(reference: PitchTrack, estimate: PitchTrack
                           ) -> Optional[float]:
  """Share of all frames whose voicing decisions differ.

  None when there are fewer than MIN_FRAMES frames or the reference has
  fewer than MIN_FRAMES voiced frames.
  """
  _, ref_voiced, _, est_voiced = _cropped(reference, estimate)
  if (len(ref_voiced) < MIN_FRAMES or
      np.count_nonzero(ref_voiced) < MIN_FRAMES):
    return None
  return float(np.mean(ref_voiced != est_voiced))


def f0_frame_error(reference: PitchTrack, estimate: PitchTrack
                   ) -> Optional[float]:
  """Share of all frames with a voicing decision error or, voiced in both,
  |f_est / f_ref - 1| > 0.2; None where voicing_decision_error is."""
  ref_f0, ref_voiced, est_f0, est_voiced = _cropped(reference, estimate)
  if (len(ref_voiced) < MIN_FRAMES or
      np.count_nonzero(ref_voiced) < MIN_FRAMES):
    return None
  both = ref_voiced & est_voiced
  gross = np.zeros_like(both)
  gross[both] = np.abs(est_f0[both] / ref_f0[both] - 1.0) > (
      GROSS_ERROR_THRESHOLD)
  return float(np.mean((ref_voiced != est_voiced) | gross))


def _pearson(x: np.ndarray, y: np.ndarray, min_spread: float
             ) -> Optional[float]:
  """Pearson correlation, None when either contour's spread < min_spread."""
  if len(x) < MIN_FRAMES:
    return None
  x, y = x - np.mean(x), y - np.mean(y)
  sx, sy = np.sqrt(np.mean(np.square(x))), np.sqrt(np.mean(np.square(y)))
  if sx < min_spread or sy < min_spread:
    return None
  return float(np.clip(np.mean(x * y) / (sx * sy), -1.0, 1.0))


def f0_correlation(reference: PitchTrack, estimate: PitchTrack
                   ) -> Optional[float]:
  """Pearson correlation of F0 (Hz) over frames voiced in both, or None
  (too few such frames, or a contour of spread < MIN_F0_SPREAD_CENTS)."""
  pair = _both_voiced(reference, estimate)
  if pair is None:
    return None
  ref_cents, est_cents = (CENTS_PER_OCTAVE * np.log2(f) for f in pair)
  if min(np.std(ref_cents), np.std(est_cents)) < MIN_F0_SPREAD_CENTS:
    return None
  return _pearson(pair[0], pair[1], 0.0)


@functools.lru_cache(maxsize=8)
def frame_grid(sample_rate: int) -> spectral.StftConfig:
  """The project's frame grid (30 ms frames, 10 ms hop) at `sample_rate`."""
  base = spectral.DEFAULT
  if sample_rate == base.sample_rate:
    return base
  frame = int(round(base.frame_length * sample_rate / base.sample_rate))
  step = int(round(base.frame_step * sample_rate / base.sample_rate))
  fft = 1 << max(frame - 1, 1).bit_length()
  return spectral.StftConfig(sample_rate=sample_rate, frame_length=frame,
                             frame_step=step, fft_length=fft)


def energy_contour_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
  """Frame log-energy `[frames]` in dB (see the module docstring), floored
  ENERGY_RANGE_DB below its maximum; `[0]` when shorter than a frame."""
  energy = audio_lib.frame_energy_db(_mono(audio), frame_grid(sample_rate))
  if energy.size == 0:
    return energy
  return np.maximum(energy, np.max(energy) - ENERGY_RANGE_DB)


def energy_correlation(reference: np.ndarray, estimate: np.ndarray,
                       sample_rate: int) -> Optional[float]:
  """Pearson correlation of the energy contours over all frames, or None
  (fewer than MIN_FRAMES frames, or a contour of spread below
  MIN_ENERGY_SPREAD_DB, e.g. silence)."""
  n = min(len(reference), len(estimate))
  return _pearson(energy_contour_db(reference[:n], sample_rate),
                  energy_contour_db(estimate[:n], sample_rate),
                  MIN_ENERGY_SPREAD_DB)


def prosody_metrics(reference: np.ndarray, estimate: np.ndarray,
                    sample_rate: int,
                    reference_track: Optional[PitchTrack] = None
                    ) -> dict[str, Optional[float]]:
  """Every metric of PROSODY_METRICS for one item, None where n/a.

  Args:
    reference: `[samples]` mono reference audio.
    estimate: `[samples']` mono reconstruction at the same rate; the longer
      of the two is cropped to the shorter.
    sample_rate: samples per second of both.
    reference_track: `track_f0(reference)`, when already computed (an
      evaluation of several systems tracks each reference once); tracks are
      cropped to the shorter, so that of the uncropped reference will do.

  Returns:
    {name: float or None} over PROSODY_METRICS.
  """
  reference, estimate = _mono(reference), _mono(estimate)
  n = min(len(reference), len(estimate))
  reference, estimate = reference[:n], estimate[:n]
  if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(estimate))):
    return dict.fromkeys(PROSODY_METRICS)
  ref_track = (track_f0(reference, sample_rate) if reference_track is None
               else reference_track)
  est_track = track_f0(estimate, sample_rate)
  return {
      "f0_rmse_cents": f0_rmse_cents(ref_track, est_track),
      "gross_pitch_error": gross_pitch_error(ref_track, est_track),
      "voicing_decision_error": voicing_decision_error(ref_track, est_track),
      "f0_frame_error": f0_frame_error(ref_track, est_track),
      "f0_correlation": f0_correlation(ref_track, est_track),
      "energy_correlation": energy_correlation(reference, estimate,
                                               sample_rate),
  }
