"""Tests of e2s_tf.audio: decoding, resampling, WAV output, energy VAD."""

import os
import struct

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import audio
from e2s_tf import spectral

CONFIG = spectral.StftConfig()
SR = CONFIG.sample_rate


def _tone(seconds, rate, freq=440.0, amplitude=0.5):
  t = np.arange(int(round(seconds * rate))) / rate
  return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --------------------------------------------------------------------------
# Decoding.

# (file name, soundfile subtype, tolerance of the decoded samples).
_FORMATS = [
    ("pcm16.wav", "PCM_16", 1 / 32768),
    ("pcm24.wav", "PCM_24", 1e-6),
    ("pcm32.wav", "PCM_32", 1e-7),  # tfio returns these as raw bits in float32
    ("float.wav", "FLOAT", 0.0),
    ("u8.wav", "PCM_U8", 1 / 128),
    ("pcm16.flac", "PCM_16", 1 / 32768),
    ("pcm24.flac", "PCM_24", 1e-6),
    ("pcm8.flac", "PCM_S8", 1 / 128),
]


@pytest.mark.parametrize("name,subtype,tolerance", _FORMATS)
def test_decodes_lossless_formats_exactly(tmp_path, name, subtype, tolerance):
  signal = _tone(0.25, SR)
  path = str(tmp_path / name)
  sf.write(path, signal, SR, subtype=subtype)
  decoded = audio.load_audio(path, SR)
  assert decoded.dtype == np.float32
  assert decoded.shape == signal.shape
  np.testing.assert_allclose(decoded, signal, atol=tolerance + 1e-7)


def test_decodes_32_bit_wav_with_a_chunk_before_fmt(tmp_path):
  # The 32-bit integer fix-up reads the WAV header itself: chunks before "fmt "
  # (odd-sized ones are padded) must not hide the format.
  signal = _tone(0.1, SR)
  path = str(tmp_path / "pcm32.wav")
  sf.write(path, signal, SR, subtype="PCM_32")
  with open(path, "rb") as f:
    data = f.read()
  junk = b"JUNK" + struct.pack("<I", 5) + b"abcde\0"
  with open(path, "wb") as f:
    f.write(data[:4] + struct.pack("<I", len(data) - 8 + len(junk)) +
            data[8:12] + junk + data[12:])
  np.testing.assert_allclose(audio.load_audio(path, SR), signal, atol=1e-7)


def test_decodes_ogg_vorbis(tmp_path):
  signal = _tone(0.5, SR)
  path = str(tmp_path / "tone.ogg")
  sf.write(path, signal, SR, subtype="VORBIS")
  decoded = audio.load_audio(path, SR)
  assert decoded.shape == signal.shape
  # Lossy, but the same tone: high correlation and equal level.
  assert np.corrcoef(decoded, signal)[0, 1] > 0.99
  assert np.std(decoded) == pytest.approx(np.std(signal), rel=0.05)


@pytest.mark.parametrize("name,subtype", [("stereo.wav", "PCM_16"),
                                          ("stereo.flac", "PCM_16"),
                                          ("stereo.ogg", "VORBIS")])
def test_downmixes_channels_to_their_mean(tmp_path, name, subtype):
  left = _tone(0.5, SR, 440.0)
  right = _tone(0.5, SR, 660.0, amplitude=0.25)
  path = str(tmp_path / name)
  sf.write(path, np.stack([left, right], axis=1), SR, subtype=subtype)
  decoded = audio.load_audio(path, SR)
  expected = 0.5 * (left + right)
  if subtype == "VORBIS":
    assert np.corrcoef(decoded, expected)[0, 1] > 0.99
  else:
    np.testing.assert_allclose(decoded, expected, atol=1.5 / 32768)


@pytest.mark.parametrize("rate,ext,subtype", [(44100, "wav", "PCM_16"),
                                              (8000, "wav", "PCM_16"),
                                              (48000, "flac", "PCM_24"),
                                              (44100, "ogg", "VORBIS")])
def test_resamples_to_the_requested_rate_without_delay(tmp_path, rate, ext,
                                                       subtype):
  seconds = 0.5
  path = str(tmp_path / f"tone.{ext}")
  sf.write(path, _tone(seconds, rate), rate, subtype=subtype)
  decoded = audio.load_audio(path, SR)
  assert decoded.shape == (int(seconds * SR),)
  # The tone at 16 kHz, starting at t = 0: a delayed resampler (tfio's Speex
  # one shifts by 2 ms) would be off by up to the full amplitude.
  expected = _tone(seconds, SR)
  middle = slice(200, -200)
  tolerance = 0.05 if ext == "ogg" else 0.01
  np.testing.assert_allclose(decoded[middle], expected[middle], atol=tolerance)


@pytest.mark.parametrize("rate_in,rate_out", [(44100, 16000), (22050, 16000),
                                              (8000, 16000), (48000, 16000),
                                              (11025, 16000), (16000, 22050)])
def test_resample_keeps_amplitude_and_phase_of_tones(rate_in, rate_out):
  # Tones up to 75% of the lower Nyquist frequency, sampled at both rates: the
  # resampled signal must be the same tones at the output times (no delay).
  nyquist = 0.5 * min(rate_in, rate_out)
  freqs = nyquist * np.array([0.05, 0.21, 0.47, 0.75])

  def tones(rate, num):
    t = np.arange(num) / rate
    return sum(np.sin(2 * np.pi * f * t + f) for f in freqs) / len(freqs)

  out = audio.resample(tones(rate_in, rate_in).astype(np.float32), rate_in,
                       rate_out)
  assert out.shape == (rate_out,)  # ceil(samples * rate_out / rate_in)
  expected = tones(rate_out, rate_out)
  error = out[200:-200] - expected[200:-200]
  assert np.sqrt(np.mean(error**2) / np.mean(expected**2)) < 0.01


@pytest.mark.parametrize("rate_in", [44100, 8000])
def test_resample_keeps_impulses_in_place_up_to_the_last_sample(rate_in):
  # Impulses at input times that are whole output samples, the last one a
  # single such period before the end: each peaks at its own output sample.
  step = rate_in // np.gcd(rate_in, SR)
  x = np.zeros([step * 400], np.float32)
  positions = [step * 20, step * 200, step * 399]
  x[positions] = 1.0
  out = audio.resample(x, rate_in, SR)
  for p in positions:
    q = p * SR // rate_in
    assert np.argmax(out[q - 10:q + 11]) == 10, (p, q)
  assert out.size == 400 * step * SR // rate_in


def test_resample_length_is_the_ceiling_of_the_ratio():
  for num in (1, 2, 441, 1000, 4411):
    out = audio.resample(np.ones([num], np.float32), 44100, 16000)
    assert out.shape == (-(-num * 16000 // 44100),)


def test_resample_is_identity_at_equal_rates():
  x = _tone(0.1, SR)
  np.testing.assert_array_equal(audio.resample(x, SR, SR), x)


# --------------------------------------------------------------------------
# Errors.

def _write_bytes(path, data):
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def _error_cases(tmp_path):
  good = str(tmp_path / "good.wav")
  sf.write(good, _tone(0.5, SR), SR, subtype="PCM_16")
  with open(good, "rb") as f:
    wav_bytes = f.read()
  flac = str(tmp_path / "good.flac")
  sf.write(flac, _tone(0.5, SR), SR, subtype="PCM_16")
  with open(flac, "rb") as f:
    flac_bytes = f.read()
  empty_audio = str(tmp_path / "no_samples.wav")
  sf.write(empty_audio, np.zeros([0], np.float32), SR, subtype="PCM_16")
  double = str(tmp_path / "double.wav")
  sf.write(double, _tone(0.1, SR), SR, subtype="DOUBLE")
  ulaw = str(tmp_path / "ulaw.wav")
  sf.write(ulaw, _tone(0.1, SR), SR, subtype="ULAW")
  os.mkdir(tmp_path / "folder.wav")
  return {
      "missing": (str(tmp_path / "missing.wav"), "no such file"),
      "directory": (str(tmp_path / "folder.wav"), "directory"),
      "empty file": (_write_bytes(tmp_path / "empty.wav", b""),
                     "cannot decode"),
      "text": (_write_bytes(tmp_path / "text.wav", b"not audio " * 20),
               "unsupported or unrecognised"),
      "truncated wav": (_write_bytes(tmp_path / "cut.wav",
                                     wav_bytes[:len(wav_bytes) // 2]),
                        "cannot decode"),
      "corrupt flac": (_write_bytes(tmp_path / "bad.flac",
                                    flac_bytes[:4] + bytes(300)),
                       "cannot decode"),
      "truncated flac": (_write_bytes(tmp_path / "cut.flac",
                                      flac_bytes[:len(flac_bytes) // 2]),
                         "cannot decode"),
      "fake mp3": (_write_bytes(tmp_path / "x.mp3",
                                b"\xff\xfb\x90" + bytes(99)),
                   "unsupported or unrecognised"),
      "64-bit float": (double, "cannot decode"),
      "mu-law": (ulaw, "cannot decode"),
      "no samples": (empty_audio, "no samples"),
  }


def test_load_audio_errors_name_the_file_and_reason(tmp_path):
  for case, (path, reason) in _error_cases(tmp_path).items():
    with pytest.raises(audio.AudioError) as info:
      audio.load_audio(path, SR)
    message = str(info.value)
    assert path in message, case
    assert reason in message, (case, message)
    assert info.value.path == path


def test_load_audio_rejects_a_bad_sample_rate(tmp_path):
  path = str(tmp_path / "a.wav")
  sf.write(path, _tone(0.1, SR), SR)
  with pytest.raises(ValueError, match="sample_rate"):
    audio.load_audio(path, 0)


@pytest.mark.parametrize("start,end", [(0.6, None), (0.2, 0.6), (0.3, 0.3),
                                       (0.4, 0.2), (-0.1, 0.2)])
def test_load_audio_rejects_regions_outside_the_audio(tmp_path, start, end):
  path = str(tmp_path / "half_second.wav")
  sf.write(path, _tone(0.5, SR), SR, subtype="PCM_16")
  with pytest.raises(audio.AudioError, match="outside the audio"):
    audio.load_audio(path, SR, start, end)


def test_load_audio_cuts_regions_in_output_samples(tmp_path):
  signal = _tone(0.5, SR)
  path = str(tmp_path / "tone.wav")
  sf.write(path, signal, SR, subtype="FLOAT")
  np.testing.assert_array_equal(audio.load_audio(path, SR, 0.1, 0.2),
                                signal[1600:3200])
  np.testing.assert_array_equal(audio.load_audio(path, SR, start=0.25),
                                signal[4000:])
  np.testing.assert_array_equal(audio.load_audio(path, SR, end=0.01),
                                signal[:160])


@pytest.mark.parametrize("rate,ext", [(SR, "wav"), (SR, "flac"),
                                      (8000, "wav"), (22050, "flac"),
                                      (44100, "wav"), (48000, "wav")])
def test_a_region_is_the_whole_files_samples_cut(tmp_path, rate, ext):
  # Regions are decoded on their own (with a margin for the resampler); the
  # samples must be those of the whole file's decoding, to the bit.
  rng = np.random.default_rng(rate)
  signal = (0.3 * rng.standard_normal(3 * rate)).astype(np.float32)
  path = str(tmp_path / f"noise.{ext}")
  sf.write(path, signal, rate, subtype="PCM_16")
  whole = audio.load_audio(path, SR)
  assert audio.num_samples(path, SR) == whole.size == -(-3 * rate * SR // rate)
  n = whole.size
  for first, last in [(0, 7), (1, n), (5, 4805), (12345, 23456),
                      (n - 700, n), (n // 2, n // 2 + 1)]:
    cut = audio.load_audio(path, SR, first / SR, last / SR)
    np.testing.assert_array_equal(cut, whole[first:last], err_msg=(first,
                                                                   last))


def test_num_samples_reads_the_header_and_names_bad_files(tmp_path):
  path = str(tmp_path / "tone.wav")
  sf.write(path, _tone(1.5, 22050), 22050, subtype="PCM_16")
  assert audio.num_samples(path, 22050) == 33075
  assert audio.num_samples(path, SR) == 24000
  with pytest.raises(audio.AudioError, match="no such file"):
    audio.num_samples(str(tmp_path / "gone.wav"), SR)
  (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
  with pytest.raises(audio.AudioError, match="junk.wav: cannot decode"):
    audio.num_samples(str(tmp_path / "junk.wav"), SR)


def test_audio_errors_carry_their_kind_across_processes(tmp_path):
  import pickle  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "tone.wav")
  sf.write(path, _tone(0.5, SR), SR, subtype="PCM_16")
  (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
  sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), SR)
  cases = [(lambda: audio.load_audio(str(tmp_path / "gone.wav"), SR),
            audio.MISSING),
           (lambda: audio.load_audio(str(tmp_path / "junk.wav"), SR),
            audio.UNREADABLE),
           (lambda: audio.load_audio(str(tmp_path), SR), audio.UNREADABLE),
           (lambda: audio.load_audio(str(tmp_path / "empty.wav"), SR),
            audio.EMPTY),
           (lambda: audio.load_audio(path, SR, start=1.0, end=2.0),
            audio.EMPTY)]
  for load, kind in cases:
    with pytest.raises(audio.AudioError) as info:
      load()
    assert info.value.kind == kind, (str(info.value), kind)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.kind, str(again)) == (kind, str(info.value))


# --------------------------------------------------------------------------
# save_wav.

def test_save_wav_writes_clipped_16_bit_pcm(tmp_path):
  path = str(tmp_path / "a" / "b" / "out.wav")
  signal = np.array([0.0, 0.5, -0.5, 1.5, -2.0, 0.25], np.float32)
  audio.save_wav(path, signal, SR)
  info = sf.info(path)
  assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
  data, _ = sf.read(path, dtype="int16")
  np.testing.assert_array_equal(data, [0, 16384, -16384, 32767, -32768, 8192])
  assert os.listdir(os.path.dirname(path)) == ["out.wav"]  # no temporary left
  np.testing.assert_allclose(audio.load_audio(path, SR),
                             np.clip(signal, -1, 1), atol=1 / 32768)


# --------------------------------------------------------------------------
# Energy VAD.

HOP = CONFIG.frame_step
WINDOW = CONFIG.frame_length


def _bursts(total_hops, bursts, amplitude=0.5):
  """Silence with tone bursts on hop boundaries, [(start, end)] in hops."""
  x = np.zeros([total_hops * HOP], np.float32)
  for start, end in bursts:
    x[start * HOP:end * HOP] = _tone((end - start) * HOP / SR, SR,
                                     amplitude=amplitude)
  return x


def _expected_run(start_hop, end_hop):
  """Frames that overlap a burst of samples [start_hop*hop, end_hop*hop)."""
  first = -(-(start_hop * HOP - WINDOW + 1) // HOP)
  return max(first, 0), end_hop  # frame t < end_hop starts inside the burst


def test_vad_finds_bursts_separated_by_silence():
  x = _bursts(300, [(50, 150), (200, 260)])
  hangover = 8
  (a0, a1), (b0, b1) = _expected_run(50, 150), _expected_run(200, 260)
  assert (a0, a1, b0, b1) == (48, 150, 198, 260)
  regions = audio.vad_regions(x, CONFIG, hangover_frames=hangover)
  assert regions == [(a0, a1 + hangover), (b0, b1 + hangover)]
  # Without hangover the regions are exactly the overlapping frames.
  assert audio.vad_regions(x, CONFIG, hangover_frames=0) == [(48, 150),
                                                             (198, 260)]


def test_vad_hangover_is_clipped_to_the_signal():
  x = _bursts(100, [(40, 100)])
  num_frames = CONFIG.num_frames(x.size)
  assert audio.vad_regions(x, CONFIG, hangover_frames=8) == [(38, num_frames)]


def test_vad_of_silence_is_empty():
  assert audio.vad_regions(np.zeros([SR], np.float32), CONFIG) == []
  # Faint noise far below the absolute floor is not speech either.
  noise = 1e-5 * np.random.default_rng(0).standard_normal(SR)
  assert audio.vad_regions(noise.astype(np.float32), CONFIG) == []
  # Shorter than one frame: no frames at all.
  assert audio.vad_regions(_tone(0.01, SR), CONFIG) == []


def test_vad_drops_short_blips():
  x = _bursts(300, [(20, 120), (200, 210)])
  # The 10-hop blip covers 12 frames, 20 with the hangover: below 30.
  assert audio.vad_regions(x, CONFIG, hangover_frames=8,
                           min_region_frames=30) == [(18, 128)]
  assert audio.vad_regions(x, CONFIG, hangover_frames=8,
                           min_region_frames=20) == [(18, 128), (198, 218)]


@pytest.mark.parametrize("gap_hops,merged", [(6, True), (10, True),
                                             (11, False), (30, False)])
def test_vad_hangover_merges_close_bursts(gap_hops, merged):
  # Bursts [20, 100) and [100 + gap, 180 + gap) hops. The second burst's first
  # frame is (100 + gap) - 2, so the frame gap is gap - 2, and a hangover of 8
  # bridges gaps of up to 8 frames.
  x = _bursts(300, [(20, 100), (100 + gap_hops, 180 + gap_hops)])
  regions = audio.vad_regions(x, CONFIG, hangover_frames=8)
  if merged:
    assert regions == [(18, 188 + gap_hops)]
  else:
    assert regions == [(18, 108), (98 + gap_hops, 188 + gap_hops)]


def test_vad_min_gap_merges_longer_gaps():
  x = _bursts(300, [(20, 100), (130, 210)])  # frame gap 28 after the burst
  assert len(audio.vad_regions(x, CONFIG, hangover_frames=0)) == 2
  assert audio.vad_regions(x, CONFIG, hangover_frames=0,
                           min_gap_frames=29) == [(18, 210)]
  assert len(audio.vad_regions(x, CONFIG, hangover_frames=0,
                               min_gap_frames=28)) == 2


def test_vad_threshold_is_relative_to_the_loudest_frame():
  loud = _bursts(300, [(20, 100)], amplitude=0.5)
  quiet = _bursts(300, [(150, 250)], amplitude=0.5 * 10**(-40 / 20))
  assert audio.vad_regions(loud + quiet, CONFIG) == [(18, 108)]
  assert audio.vad_regions(loud + quiet, CONFIG, threshold_db=-45.0) == [
      (18, 108), (148, 258)]
  # Alone, the quiet burst is the loudest frame: it is speech.
  assert audio.vad_regions(quiet, CONFIG) == [(148, 258)]


def test_frames_to_seconds_values():
  assert audio.frames_to_seconds((48, 158), CONFIG) == (
      48 * HOP / SR, (157 * HOP + WINDOW) / SR)
  assert audio.frames_to_seconds((0, 1), CONFIG) == (0.0, WINDOW / SR)
  with pytest.raises(ValueError):
    audio.frames_to_seconds((5, 5), CONFIG)


@pytest.mark.parametrize("config", [CONFIG, spectral.StftConfig.original()])
def test_vad_region_round_trip_gives_the_same_frames(tmp_path, config):
  rng = np.random.default_rng(1)
  hop = config.frame_step
  x = np.zeros([SR * 2], np.float32)
  for start, end in [(1000, 9000), (13000, 17777), (23000, 30000)]:
    x[start:end] = 0.3 * rng.standard_normal(end - start)
  path = str(tmp_path / "noise.wav")
  audio.save_wav(path, x, SR)
  whole = audio.load_audio(path, SR)
  whole_stft = spectral.numpy_log_stft(whole, config)
  regions = audio.vad_regions(whole, config)
  assert len(regions) == 3
  for start_frame, end_frame in regions:
    start, end = audio.frames_to_seconds((start_frame, end_frame), config)
    cut = audio.load_audio(path, SR, start, end)
    assert config.num_frames(cut.size) == end_frame - start_frame
    assert cut.size == config.num_samples(end_frame - start_frame)
    np.testing.assert_array_equal(cut, whole[start_frame * hop:
                                             start_frame * hop + cut.size])
    np.testing.assert_array_equal(spectral.numpy_log_stft(cut, config),
                                  whole_stft[start_frame:end_frame])


def test_quiet_cut_frame_is_the_middle_of_the_longest_pause():
  # Bursts at hops [0, 40), [55, 120), [150, 200): pauses of 15 and 30 hops
  # (frames that lie wholly in the second pause: 123..146).
  x = _bursts(200, [(0, 40), (55, 120), (150, 200)])
  x += np.random.default_rng(0).standard_normal(x.size).astype(
      np.float32) * 1e-4
  frame = audio.quiet_cut_frame(x, CONFIG)
  assert 130 <= frame <= 140, frame
  first_pause = audio.quiet_cut_frame(x[:100 * HOP], CONFIG)
  assert 40 <= first_pause <= 52, first_pause
  # Digital silence: one pause, the whole stretch; its middle.
  silence = np.zeros([100 * HOP], np.float32)
  assert audio.quiet_cut_frame(silence, CONFIG) == (
      CONFIG.num_frames(silence.size) - 1) // 2
  with pytest.raises(ValueError, match="at least one frame"):
    audio.quiet_cut_frame(np.zeros([10], np.float32), CONFIG)
