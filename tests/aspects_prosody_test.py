"""Tests of e2s_tf.aspects.prosody on signals whose answers are known:
harmonic tones of set F0 (shifted by set intervals, glides, half silent)
and real espeak-ng speech against copies of itself."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import corpus
from e2s_tf import manifest as manifest_lib
from e2s_tf.aspects import prosody

SR = 16000
HARMONICS = 10
PEAK = 0.3
# pYIN's 20-cent bins are refined to well under a cent on a steady tone;
# an interval between two tones is measured within this.
CENTS_TOLERANCE = 2.0


def harmonic(f0_hz, seconds: float, sample_rate: int = SR) -> np.ndarray:
  """Sum of HARMONICS harmonics (amplitude 1/k, below Nyquist) of a constant
  or per-sample F0 `[samples]`, peak PEAK, float32."""
  n = int(round(seconds * sample_rate))
  f0 = np.broadcast_to(np.asarray(f0_hz, np.float64), [n])
  phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
  x = sum(np.where(k * f0 < sample_rate / 2, np.sin(k * phase), 0.0) / k
          for k in range(1, HARMONICS + 1))
  return (PEAK * x / np.max(np.abs(x))).astype(np.float32)


def shifted(f0_hz: float, cents: float) -> float:
  return f0_hz * 2.0 ** (cents / prosody.CENTS_PER_OCTAVE)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
  """One real espeak-ng utterance, float32 at 16 kHz."""
  path = corpus.make_corpus(str(tmp_path_factory.mktemp("prosody_corpus")),
                            speakers=1, utterances=1, seed=0, progress=False)
  audio, rate = sf.read(manifest_lib.read_manifest(path)[0]["audio"],
                        dtype="float32")
  assert rate == SR
  return audio


def test_track_f0_of_a_tone_is_its_f0_on_the_10ms_grid():
  audio = harmonic(150.0, 1.0)
  track = prosody.track_f0(audio, SR)
  assert len(track.f0_hz) == len(track.voiced) == 1 + len(audio) // 160
  assert np.mean(track.voiced) > 0.95
  cents = prosody.CENTS_PER_OCTAVE * np.log2(track.f0_hz[track.voiced] / 150.0)
  assert np.max(np.abs(cents)) < CENTS_TOLERANCE
  assert np.all(track.f0_hz[~track.voiced] == 0.0)


@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("cents", [25.0, 100.0])
def test_small_shift_gives_its_cents_and_no_gross_errors(sample_rate, cents):
  ref = harmonic(150.0, 1.0, sample_rate)
  est = harmonic(shifted(150.0, cents), 1.0, sample_rate)
  m = prosody.prosody_metrics(ref, est, sample_rate)
  assert m["f0_rmse_cents"] == pytest.approx(cents, abs=CENTS_TOLERANCE)
  assert m["gross_pitch_error"] == 0.0
  assert m["voicing_decision_error"] == pytest.approx(0.0, abs=0.02)


def test_shift_beyond_20_percent_is_all_gross_errors():
  ref = harmonic(150.0, 1.0)
  est = harmonic(shifted(150.0, 400.0), 1.0)  # ratio 1.26
  m = prosody.prosody_metrics(ref, est, SR)
  assert m["gross_pitch_error"] == 1.0
  assert m["f0_rmse_cents"] == pytest.approx(400.0, abs=CENTS_TOLERANCE)
  # Every frame is wrong in pitch, none in voicing: the frame error is 1.
  assert m["f0_frame_error"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("second_half", ["silence", "white_noise"])
def test_voicing_error_is_the_unvoiced_share_of_the_estimate(second_half):
  ref = harmonic(150.0, 1.0)
  est = ref.copy()
  half = len(est) // 2
  if second_half == "silence":
    est[half:] = 0.0
  else:
    est[half:] = 0.1 * np.random.default_rng(0).standard_normal(
        len(est) - half).astype(np.float32)
  m = prosody.prosody_metrics(ref, est, SR)
  assert m["voicing_decision_error"] == pytest.approx(0.5, abs=0.03)
  assert m["f0_frame_error"] == pytest.approx(m["voicing_decision_error"])
  # What is voiced in both is the same tone (the frame whose analysis spans
  # the tone and the noise is off by a fraction of a semitone).
  assert m["gross_pitch_error"] == 0.0
  if second_half == "silence":
    assert m["f0_rmse_cents"] < CENTS_TOLERANCE


def test_f0_correlation_of_a_glide_and_its_offset_copy_is_one():
  glide = np.geomspace(120.0, 240.0, SR)
  ref, est = harmonic(glide, 1.0), harmonic(glide + 20.0, 1.0)
  m = prosody.prosody_metrics(ref, est, SR)
  assert m["f0_correlation"] == pytest.approx(1.0, abs=1e-3)
  assert m["f0_correlation"] <= 1.0


def test_f0_correlation_of_a_steady_tone_is_none():
  m = prosody.prosody_metrics(harmonic(150.0, 1.0),
                              harmonic(shifted(150.0, 100.0), 1.0), SR)
  assert m["f0_correlation"] is None
  assert m["f0_rmse_cents"] is not None


def test_speech_against_itself_scores_perfectly(speech):
  m = prosody.prosody_metrics(speech, speech, SR)
  assert m == {"f0_rmse_cents": 0.0, "gross_pitch_error": 0.0,
               "voicing_decision_error": 0.0, "f0_frame_error": 0.0,
               "f0_correlation": pytest.approx(1.0, abs=1e-9),
               "energy_correlation": pytest.approx(1.0, abs=1e-9)}


def test_scaled_speech_keeps_prosody(speech):
  m = prosody.prosody_metrics(speech, 0.25 * speech, SR)
  assert m["energy_correlation"] == pytest.approx(1.0, abs=1e-6)
  assert m["f0_rmse_cents"] < CENTS_TOLERANCE
  assert m["gross_pitch_error"] == 0.0
  assert m["voicing_decision_error"] < 0.02
  assert m["f0_correlation"] > 0.999


def test_reversed_speech_loses_the_energy_contour(speech):
  m = prosody.prosody_metrics(speech, speech[::-1].copy(), SR)
  assert m["energy_correlation"] < 0.5


def test_the_longer_input_is_cropped(speech):
  padded = np.concatenate([speech, np.zeros(SR, np.float32)])
  assert (prosody.prosody_metrics(speech, padded, SR) ==
          prosody.prosody_metrics(speech, speech, SR))


def test_reference_track_is_reused(speech):
  est = 0.5 * speech
  assert (prosody.prosody_metrics(
      speech, est, SR, reference_track=prosody.track_f0(speech, SR)) ==
          prosody.prosody_metrics(speech, est, SR))


@pytest.mark.parametrize("case", ["silence", "too_short", "not_finite"])
def test_undefined_metrics_are_none(case):
  if case == "silence":
    ref = est = np.zeros(SR, np.float32)
  elif case == "too_short":  # 90 ms: fewer than MIN_FRAMES frames
    ref, est = harmonic(150.0, 0.09), harmonic(shifted(150.0, 100.0), 0.09)
  else:
    ref = harmonic(150.0, 1.0)
    est = ref.copy()
    est[100] = np.nan
  assert prosody.prosody_metrics(ref, est, SR) == dict.fromkeys(
      prosody.PROSODY_METRICS)


def test_unvoiced_estimate_has_no_f0_metrics_but_a_voicing_error():
  ref = harmonic(150.0, 1.0)
  m = prosody.prosody_metrics(ref, np.zeros_like(ref), SR)
  assert m["voicing_decision_error"] == pytest.approx(1.0, abs=0.02)
  # The frame error still counts what was lost.
  assert m["f0_frame_error"] == m["voicing_decision_error"]
  for name in ("f0_rmse_cents", "gross_pitch_error", "f0_correlation",
               "energy_correlation"):
    assert m[name] is None


def test_names_and_directions(speech):
  m = prosody.prosody_metrics(speech, speech, SR)
  assert tuple(m) == prosody.PROSODY_METRICS
  assert set(prosody.LOWER_IS_BETTER) == {
      "f0_rmse_cents", "gross_pitch_error", "voicing_decision_error",
      "f0_frame_error"}


def test_tone_track_truth_is_what_the_tracker_finds():
  from e2s_tf.benchmarks import pitch  # pylint: disable=g-import-not-at-top
  audio, truth = pitch.tone_track(SR)
  assert len(truth.f0_hz) == 1 + len(audio) // 160
  track = prosody.track_f0(audio, SR)
  assert prosody.gross_pitch_error(truth, track) == 0.0
  assert prosody.voicing_decision_error(truth, track) < 0.03
  # The steady note of TONE_SEGMENTS is exact; the glide lags by YIN's
  # half period.
  assert prosody.f0_rmse_cents(truth, track) < 10.0


def test_compare_trackers_reports_every_tracker_and_pair(tmp_path, speech):
  from e2s_tf.benchmarks import pitch  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "speech.wav")
  sf.write(path, speech, SR)
  names = ("dio+stonemask", "pyin/0.2+parabolic")
  results = pitch.compare_trackers([path], SR, trackers=names)
  assert set(results["trackers"]) == set(names)
  assert list(results["pairs"]) == ["dio+stonemask vs pyin/0.2+parabolic"]
  for r in results["trackers"].values():
    assert r["seconds_per_audio_second"] > 0.0
    assert r["tone"]["gpe"] == 0.0
  table = pitch.markdown(results)
  assert "| pyin/0.2+parabolic |" in table
