"""Tests of e2s_tf.aspects.naturalness (DNSMOS P.835) on real espeak-ng
speech: clean against noisy, the n/a cases, the reference procedure, and one
model load for all scores."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import corpus
from e2s_tf import manifest as manifest_lib
from e2s_tf.aspects import naturalness

SR = naturalness.SAMPLE_RATE
# Measured on these utterances: clean - noisy (white noise, 0 dB SNR) is
# 1.0-1.1 for OVR and 2.2-2.3 for BAK.
OVR_MARGIN = 0.5
BAK_MARGIN = 1.0
ROUND_TRIP_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
  """Three real espeak-ng utterances, float32 at 16 kHz."""
  path = corpus.make_corpus(str(tmp_path_factory.mktemp("dnsmos_corpus")),
                            speakers=1, utterances=3, seed=0, progress=False)
  out = []
  for item in manifest_lib.read_manifest(path):
    audio, rate = sf.read(item["audio"], dtype="float32")
    assert rate == SR
    out.append(audio)
  return out


@pytest.fixture(scope="module")
def dnsmos():
  return naturalness.Dnsmos()


def with_white_noise(audio: np.ndarray, snr_db: float) -> np.ndarray:
  noise = np.random.default_rng(0).standard_normal(len(audio))
  noise *= np.sqrt(np.mean(np.square(audio)) / np.mean(np.square(noise)) /
                   10.0 ** (snr_db / 10.0))
  return (audio + noise).astype(np.float32)


def test_clean_speech_beats_speech_in_white_noise(utterances, dnsmos):
  for audio in utterances:
    clean = dnsmos.score(audio, SR)
    noisy = dnsmos.score(with_white_noise(audio, 0.0), SR)
    assert clean["dnsmos_ovr"] - noisy["dnsmos_ovr"] > OVR_MARGIN
    assert clean["dnsmos_bak"] - noisy["dnsmos_bak"] > BAK_MARGIN
    for scores in (clean, noisy):
      assert tuple(scores) == naturalness.DNSMOS_METRICS
      assert all(1.0 <= v <= 5.0 for v in scores.values()), scores


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # librosa, in speechmos
def test_matches_the_reference_implementation(utterances, dnsmos):
  """Every repeat scored, as the reference: the same scores; the default
  (the first window of a short item's repeated copy) close to it."""
  from speechmos import dnsmos as reference  # pylint: disable=g-import-not-at-top
  audio = utterances[0]
  assert len(audio) < naturalness.WINDOW_SECONDS * SR  # repeated to fill
  ours = naturalness.Dnsmos(every_repeat=True).score(audio, SR)
  theirs = reference.run(audio, SR)
  fast = dnsmos.score(audio, SR)
  for mine, key in [("dnsmos_sig", "sig_mos"), ("dnsmos_bak", "bak_mos"),
                    ("dnsmos_ovr", "ovrl_mos")]:
    assert ours[mine] == pytest.approx(theirs[key], abs=1e-4)
    assert fast[mine] == pytest.approx(theirs[key], abs=0.25)
    assert fast[mine] != ours[mine]  # one window, not the mean of three


def test_short_audio_is_repeated_into_the_reference_windows(utterances):
  three_seconds = utterances[0][:3 * SR]
  windows = naturalness.windows(three_seconds)
  # 3 s -> 6 s -> 12 s: windows at 0, 1 and 2 s.
  assert windows.shape == (3, int(naturalness.WINDOW_SECONDS * SR))
  np.testing.assert_array_equal(windows[1][:2 * SR], three_seconds[SR:])
  first = naturalness.windows(three_seconds, every_repeat=False)
  np.testing.assert_array_equal(first, windows[:1])


@pytest.mark.parametrize("case", ["too_short", "silence", "not_finite"])
def test_undefined_scores_are_none(utterances, dnsmos, case):
  audio = utterances[0].copy()
  if case == "too_short":
    audio = audio[SR:SR + SR // 5]  # 0.2 s of speech
  elif case == "silence":
    audio = np.zeros_like(audio)
  else:
    audio[SR] = np.inf
  assert dnsmos.score(audio, SR) == dict.fromkeys(naturalness.DNSMOS_METRICS)


def test_loud_audio_scores_as_its_clipped_copy(utterances, dnsmos):
  loud = 4.0 * utterances[1]
  assert np.max(np.abs(loud)) > 1.0
  assert dnsmos.score(loud, SR) == dnsmos.score(np.clip(loud, -1.0, 1.0), SR)


def test_other_rates_are_resampled(utterances, dnsmos):
  from e2s_tf import audio as audio_lib  # pylint: disable=g-import-not-at-top
  audio = utterances[2]
  at_22k = audio_lib.resample(audio, SR, 22050)
  scores = dnsmos.score(at_22k, 22050)
  assert scores == dnsmos.score(audio_lib.resample(at_22k, 22050, SR), SR)
  # The round trip's filters change the band edge near 8 kHz, which DNSMOS
  # hears: up to 0.1 measured (scipy's resample_poly alike).
  for name, value in dnsmos.score(audio, SR).items():
    assert scores[name] == pytest.approx(value, abs=ROUND_TRIP_TOLERANCE)


def test_the_model_is_loaded_once(utterances, dnsmos):
  session = dnsmos.session
  first = dnsmos.score(utterances[0], SR)
  second = dnsmos.score(utterances[0], SR)
  assert dnsmos.session is session
  assert first == second
  assert dnsmos.model_path.endswith(naturalness.MODEL_FILE)
