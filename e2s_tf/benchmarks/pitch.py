"""Which pitch tracker the prosody metrics use: speed and agreement, measured.

`e2s_tf.aspects.prosody` needs F0 tracks of every reference and every
reconstruction of an evaluation (40 items x 5 systems of ~3 s each: 720
audio seconds), so the tracker must be fast, and it must agree with the
careful ones. This module measures the candidates (`TRACKERS`), all on the
10 ms grid of `prosody.HOP_SECONDS` (frame k centred at k * hop) and the
search range `prosody.F0_FLOOR_HZ` to `prosody.F0_CEIL_HZ`:

  dio                 WORLD's DIO (pyworld), its raw estimate;
  dio+stonemask       DIO refined by StoneMask (instantaneous frequency);
  harvest             WORLD's Harvest (pyworld), slower and more robust;
  pyin/0.1            probabilistic YIN (librosa), Viterbi-decoded pitch and
                      voicing, librosa's 0.1-semitone pitch bins;
  pyin/0.2            the same with 0.2-semitone bins (3x faster decoding);
  pyin/0.2+stonemask  that, refined by StoneMask;
  pyin/0.2+parabolic  that, refined by parabolic interpolation of the YIN
                      difference (`prosody.track_f0`, the pick).

`compare_trackers` reports, per tracker, the seconds per audio second (wall
time, the trackers interleaved item by item so that a change of the machine's
load hits all of them, after a warm-up call) and its share of voiced frames;
per tracker the gross pitch error, F0 RMSE in cents (all frames voiced in
both, and "fine": those without a gross error) and voicing decision error
against `tone_track`, a harmonic-rich synthetic signal of known F0 (an
exponential glide and a steady note between silences), and of its track of
each item's Griffin-Lim copy (`griffin_lim_copy`, the `oracle_griffin_lim`
system of an evaluation: same magnitude, other phase) against its track of
the item: the floor of the prosody metrics, which a tracker insensitive to
phase keeps near 0; and the same four for every pair of trackers, one
against the other. Errors pool the frames of all items.

  python -m e2s_tf.bench_pitch --manifest=PATH [--max_items=N]

prints the tables in markdown (docs/experiments/pitch_tracker.md has a run).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from e2s_tf import audio as audio_lib
from e2s_tf import spectral
from e2s_tf.aspects import prosody

_MS_PER_SECOND = 1000.0
# librosa's default pitch-bin width in semitones (10 cents).
PYIN_DEFAULT_RESOLUTION = 0.1
# The synthetic signal: (kind, seconds, start Hz, end Hz) segments.
TONE_SEGMENTS = (("silence", 0.3, 0.0, 0.0), ("tone", 1.0, 100.0, 300.0),
                 ("silence", 0.3, 0.0, 0.0), ("tone", 1.0, 220.0, 220.0),
                 ("silence", 0.3, 0.0, 0.0))
TONE_HARMONICS = 10  # with amplitudes 1/k, below Nyquist
TONE_PEAK = 0.3
TONE_NOISE_RMS = 1e-4  # a recording's noise floor (-80 dB)
TONE_SEED = 0


def _dio(audio: np.ndarray, sample_rate: int, refine: bool
         ) -> prosody.PitchTrack:
  import pyworld  # pylint: disable=g-import-not-at-top
  x = np.ascontiguousarray(audio, np.float64)
  f0, times = pyworld.dio(x, sample_rate, f0_floor=prosody.F0_FLOOR_HZ,
                          f0_ceil=prosody.F0_CEIL_HZ,
                          frame_period=prosody.HOP_SECONDS * _MS_PER_SECOND)
  if refine:
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
  return prosody.PitchTrack(np.maximum(f0, 0.0), f0 > 0.0)


def _harvest(audio: np.ndarray, sample_rate: int) -> prosody.PitchTrack:
  import pyworld  # pylint: disable=g-import-not-at-top
  f0, _ = pyworld.harvest(
      np.ascontiguousarray(audio, np.float64), sample_rate,
      f0_floor=prosody.F0_FLOOR_HZ, f0_ceil=prosody.F0_CEIL_HZ,
      frame_period=prosody.HOP_SECONDS * _MS_PER_SECOND)
  return prosody.PitchTrack(np.maximum(f0, 0.0), f0 > 0.0)


def _pyin_stonemask(audio: np.ndarray, sample_rate: int
                    ) -> prosody.PitchTrack:
  """pYIN's unrefined track (`prosody.track_f0`), refined by StoneMask."""
  import pyworld  # pylint: disable=g-import-not-at-top
  track = prosody.track_f0(audio, sample_rate, refine=False)
  x = np.ascontiguousarray(audio, np.float64)
  hop = int(round(prosody.HOP_SECONDS * sample_rate))
  f0 = pyworld.stonemask(x, track.f0_hz,
                         np.arange(len(track.f0_hz)) * hop / sample_rate,
                         sample_rate)
  voiced = track.voiced & (f0 > 0.0)
  return prosody.PitchTrack(np.where(voiced, f0, 0.0), voiced)


TRACKERS: Mapping[str, Callable[[np.ndarray, int], prosody.PitchTrack]] = {
    "dio": lambda x, sr: _dio(x, sr, refine=False),
    "dio+stonemask": lambda x, sr: _dio(x, sr, refine=True),
    "harvest": _harvest,
    "pyin/0.1": lambda x, sr: prosody.track_f0(
        x, sr, resolution_semitones=PYIN_DEFAULT_RESOLUTION, refine=False),
    "pyin/0.2": lambda x, sr: prosody.track_f0(x, sr, refine=False),
    "pyin/0.2+stonemask": _pyin_stonemask,
    "pyin/0.2+parabolic": prosody.track_f0,
}


def tone_track(sample_rate: int) -> tuple[np.ndarray, prosody.PitchTrack]:
  """The synthetic signal of TONE_SEGMENTS and its true track.

  Returns:
    `([samples] float32 audio, PitchTrack)`: a frame is voiced when its
    centre (k * hop) lies in a tone segment, with the F0 there.
  """
  f0_parts, tone_parts = [], []
  for kind, seconds, start_hz, end_hz in TONE_SEGMENTS:
    n = int(round(seconds * sample_rate))
    if kind == "tone":
      f0_parts.append(start_hz * (end_hz / start_hz) ** (np.arange(n) / n))
    else:
      f0_parts.append(np.zeros(n))
    tone_parts.append(np.full(n, kind == "tone"))
  f0 = np.concatenate(f0_parts)
  phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
  signal = np.zeros_like(f0)
  for k in range(1, TONE_HARMONICS + 1):
    below_nyquist = k * f0 < sample_rate / 2
    signal += np.where(below_nyquist, np.sin(k * phase), 0.0) / k
  signal *= TONE_PEAK / np.max(np.abs(signal))
  signal *= np.concatenate(tone_parts)
  rng = np.random.default_rng(TONE_SEED)
  signal += TONE_NOISE_RMS * rng.standard_normal(signal.shape)
  hop = prosody.HOP_SECONDS * sample_rate
  centres = np.round(np.arange(1 + int(len(f0) // hop)) * hop).astype(int)
  centres = np.minimum(centres, len(f0) - 1)
  truth_f0 = f0[centres]
  return signal.astype(np.float32), prosody.PitchTrack(truth_f0, truth_f0 > 0)


def _pooled(pairs: Sequence[tuple[prosody.PitchTrack, prosody.PitchTrack]]
            ) -> tuple[prosody.PitchTrack, prosody.PitchTrack]:
  """Concatenates (reference, estimate) tracks, each pair cropped to its
  shorter, so that the metrics pool frames over items."""
  refs, ests = [], []
  for ref, est in pairs:
    n = min(len(ref.f0_hz), len(est.f0_hz))
    refs.append((ref.f0_hz[:n], ref.voiced[:n]))
    ests.append((est.f0_hz[:n], est.voiced[:n]))
  join = lambda parts: prosody.PitchTrack(
      np.concatenate([p[0] for p in parts]),
      np.concatenate([p[1] for p in parts]))
  return join(refs), join(ests)


def _fine_rmse_cents(ref: prosody.PitchTrack, est: prosody.PitchTrack):
  """F0 RMSE in cents over the frames voiced in both without a gross error:
  the trackers' fine disagreement, which octave errors would swamp."""
  n = min(len(ref.f0_hz), len(est.f0_hz))
  both = ref.voiced[:n] & est.voiced[:n]
  ratio = est.f0_hz[:n][both] / ref.f0_hz[:n][both]
  fine = ratio[np.abs(ratio - 1.0) <= prosody.GROSS_ERROR_THRESHOLD]
  if len(fine) < prosody.MIN_FRAMES:
    return None
  return float(np.sqrt(np.mean(np.square(
      prosody.CENTS_PER_OCTAVE * np.log2(fine)))))


def _agreement(ref: prosody.PitchTrack, est: prosody.PitchTrack
               ) -> dict[str, Any]:
  return {
      "gpe": prosody.gross_pitch_error(ref, est),
      "rmse_cents": prosody.f0_rmse_cents(ref, est),
      "fine_rmse_cents": _fine_rmse_cents(ref, est),
      "vde": prosody.voicing_decision_error(ref, est),
  }


def griffin_lim_copy(audio: np.ndarray, sample_rate: int) -> np.ndarray:
  """The audio resynthesised from its own |STFT| by the project's default
  phase reconstruction (`spectral.griffin_lim`, PHASE_INIT start,
  PHASE_ITERATIONS iterations): the `oracle_griffin_lim` system."""
  config = prosody.frame_grid(sample_rate)
  magnitude = np.exp(spectral.numpy_log_stft(audio, config))
  out, _ = spectral.griffin_lim(
      magnitude[None], config=config, num_iterations=spectral.PHASE_ITERATIONS,
      init=spectral.PHASE_INIT)
  return out.numpy()[0]


def compare_trackers(wav_paths: Sequence[str], sample_rate: int,
                     trackers: Sequence[str] = tuple(TRACKERS)
                     ) -> dict[str, Any]:
  """Speed and agreement of the pitch trackers on some audio files.

  Args:
    wav_paths: audio files (any format `audio_lib.load_audio` reads; loaded
      as mono at `sample_rate`).
    sample_rate: rate to analyse at.
    trackers: names of TRACKERS to compare.

  Returns:
    {"items", "audio_seconds", "load_average" (1-minute, before and after),
     "trackers": {name: {"seconds_per_audio_second", "voiced_share",
                         "tone": A, "griffin_lim": A}},
     "pairs": {"a vs b": A}} with A = {"gpe", "rmse_cents",
    "fine_rmse_cents", "vde"} of the second track against the first (of b
    against a; of the tracker against the tone's truth; of its track of the
    Griffin-Lim copy against its track of the audio), pooled over items;
    None where a metric is n/a.
  """
  if not wav_paths:
    raise ValueError("no audio files to compare the trackers on")
  audios = [audio_lib.load_audio(p, sample_rate) for p in wav_paths]
  audio_seconds = sum(len(a) for a in audios) / sample_rate
  load_before = os.getloadavg()[0]
  for name in trackers:  # warm-up: imports, caches
    TRACKERS[name](audios[0], sample_rate)
  seconds = dict.fromkeys(trackers, 0.0)
  tracks = {name: [] for name in trackers}
  for audio in audios:
    for name in trackers:
      start = time.perf_counter()
      track = TRACKERS[name](audio, sample_rate)
      seconds[name] += time.perf_counter() - start
      tracks[name].append(track)
  load_after = os.getloadavg()[0]
  copies = [griffin_lim_copy(a, sample_rate) for a in audios]
  tone, truth = tone_track(sample_rate)
  results = {"items": len(audios), "audio_seconds": audio_seconds,
             "load_average": [load_before, load_after], "trackers": {},
             "pairs": {}}
  for name in trackers:
    voiced = np.concatenate([t.voiced for t in tracks[name]])
    results["trackers"][name] = {
        "seconds_per_audio_second": seconds[name] / audio_seconds,
        "voiced_share": float(np.mean(voiced)),
        "tone": _agreement(truth, TRACKERS[name](tone, sample_rate)),
        "griffin_lim": _agreement(*_pooled([
            (track, TRACKERS[name](copy, sample_rate))
            for track, copy in zip(tracks[name], copies)])),
    }
  for a, b in itertools.combinations(trackers, 2):
    results["pairs"][f"{a} vs {b}"] = _agreement(
        *_pooled(list(zip(tracks[a], tracks[b]))))
  return results


def _cell(value, fmt: str) -> str:
  return "n/a" if value is None else format(value, fmt)


def _agreement_cells(a: Mapping[str, Any]) -> str:
  return " | ".join([
      _cell(a["gpe"], ".3f"), _cell(a["rmse_cents"], ".1f"),
      _cell(a["fine_rmse_cents"], ".1f"), _cell(a["vde"], ".3f")])


def markdown(results: Mapping[str, Any]) -> str:
  """The results of `compare_trackers` as three markdown tables."""
  columns = ("GPE", "RMSE (cents)", "fine RMSE (cents)", "VDE")
  def header(*first):
    names = list(first) + list(columns)
    return ["| " + " | ".join(names) + " |", "|---" * len(names) + "|"]
  lines = [
      f"{results['items']} items, {results['audio_seconds']:.1f} audio s, "
      "load average {:.2f} -> {:.2f}".format(*results["load_average"]), "",
      "Speed, and each tracker against the synthetic tone's true F0:", ""]
  lines += header("tracker", "s per audio s", "voiced share")
  for name, r in results["trackers"].items():
    lines.append(f"| {name} | {r['seconds_per_audio_second']:.4f} | "
                 f"{r['voiced_share']:.3f} | {_agreement_cells(r['tone'])} |")
  lines += ["", "Each tracker on the Griffin-Lim copy against the audio:", ""]
  lines += header("tracker")
  for name, r in results["trackers"].items():
    lines.append(f"| {name} | {_agreement_cells(r['griffin_lim'])} |")
  lines += ["", "Trackers against each other (the second against the first):",
            ""]
  lines += header("pair")
  for pair, r in results["pairs"].items():
    lines.append(f"| {pair} | {_agreement_cells(r)} |")
  return "\n".join(lines)
