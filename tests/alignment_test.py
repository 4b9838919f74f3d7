"""Embedding grids onto STFT frames: counts, content and the whole chain.

The pairing is proven on content: a step at a known sample, seen through
embedders at 10 ms, 20 ms and 25 ms centred, lands on the STFT frame whose
centre first passes it, the frame where the STFT's own spectrum shows it.
"""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import alignment
from e2s_tf import audio as audio_lib
from e2s_tf import data as data_lib
from e2s_tf import evaluate_lib
from e2s_tf import export_lib
from e2s_tf import manifest as manifest_lib
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.preprocessing.errors import PreprocessError
from tests import data_testlib

CONFIG = spectral.StftConfig()
RATE = CONFIG.sample_rate
# (name, frame_length, frame_step, center): the grids the tests go through.
GRIDS = {"10ms": (480, 160, False), "20ms": (400, 320, False),
         "25ms_centred": (400, 160, True)}


def _mapping(name):
  length, step, center = GRIDS[name]
  return alignment.FrameMapping.between(
      base.Grid(RATE, length, step, center), CONFIG)


def _windows(signal, length, step, center):
  """`[frames, length]` windows of `signal` on a grid (centred: padded by
  length // 2 zeros on both sides), the framing of Grid.num_frames."""
  if center:
    signal = np.pad(signal, (length // 2, length // 2))
  count = spectral.frame_count(len(signal), length, step)
  index = np.arange(count)[:, None] * step + np.arange(length)[None]
  return signal[index]


# ----------------------------------------------------------------------------
# The mapping itself.


def test_same_grid_is_the_identity_and_others_are_interpolated():
  assert _mapping("10ms").identity
  for name in ("20ms", "25ms_centred"):
    assert _mapping(name).method == alignment.LINEAR
  # u(0) = (c_s(0) - c_e(0)) / H: 240 - 200 over 320; 240 - 0 over 160.
  assert _mapping("20ms").first_position == pytest.approx(0.125)
  assert _mapping("25ms_centred").first_position == pytest.approx(1.5)
  assert _mapping("25ms_centred").centre_offset_ms(RATE) == pytest.approx(-15)
  assert _mapping("25ms_centred").residual_offset_ms(RATE) == 0.0


def test_interpolation_puts_each_stft_frame_at_its_centre():
  """A feature that is the frame centre itself (in samples) comes out as the
  STFT frame centres, away from the clamped edges."""
  for name in GRIDS:
    mapping = _mapping(name)
    length, step, center = GRIDS[name]
    frames = 40
    centres = np.arange(frames) * step + length / 2 - (
        length // 2 if center else 0)
    got = mapping.map_one(centres[:, None].astype(np.float32))[:, 0]
    want = np.arange(len(got)) * CONFIG.frame_step + CONFIG.frame_length / 2
    inside = (want >= centres[0]) & (want <= centres[-1])
    assert inside.sum() > 0.9 * len(got) - 3, name
    np.testing.assert_allclose(got[inside], want[inside], atol=1e-3)
    # At the edges, the nearest frame.
    np.testing.assert_allclose(got[want < centres[0]], centres[0])


def test_counts_agree_with_the_audio_for_every_length():
  for name in GRIDS:
    mapping = _mapping(name)
    n = np.arange(480, 20000, 37)
    t_e = mapping.embedding_frames(n)
    np.testing.assert_array_equal(
        t_e, base.Grid(RATE, *GRIDS[name]).num_frames(n))
    kept = np.minimum(CONFIG.num_frames(n), mapping.stft_frames(t_e))
    # The embedding covers all but at most one trailing STFT frame, and the
    # export (embeddings alone) gives at most two more than the audio had.
    assert np.all(CONFIG.num_frames(n) - kept <= 1), name
    assert np.all(mapping.stft_frames(t_e) - CONFIG.num_frames(n) <= 2), name


def test_batched_mapping_respects_each_items_length():
  mapping = _mapping("20ms")
  a = np.random.default_rng(0).normal(size=(2, 9, 3)).astype(np.float32)
  a[1, 5:] = 0.0
  out, frames = mapping.to_stft_frames(a, np.array([9, 5]))
  frames = frames.numpy()
  assert list(frames) == [mapping.stft_frames(9), mapping.stft_frames(5)]
  np.testing.assert_allclose(out.numpy()[1, :frames[1]],
                             mapping.map_one(a[1, :5]), atol=1e-6)
  assert np.all(out.numpy()[1, frames[1]:] == 0)


def test_a_hop_that_is_not_whole_samples_is_refused():
  with pytest.raises(alignment.GridError, match="not a whole number"):
    alignment.FrameMapping.between(base.Grid(22050, 1024, 256), CONFIG)
  # 24 kHz, hop 480 = 320 samples at 16 kHz: accepted.
  mapping = alignment.FrameMapping.between(base.Grid(24000, 600, 480), CONFIG)
  assert (mapping.frame_step, mapping.frame_length) == (320, 400)


# ----------------------------------------------------------------------------
# Content through preprocessing: an onset lands on the same STFT frame.

ONSETS = (4100, 6020, 7345, 9990)


@pytest.fixture(scope="module")
def step_corpus(tmp_path_factory):
  """Items of silence then a constant level from a known sample on, with
  the energy embeddings of each grid beside them: {grid: manifest}."""
  root = tmp_path_factory.mktemp("steps")
  manifests = {}
  for name, (length, step, center) in GRIDS.items():
    items = []
    for k, onset in enumerate(ONSETS):
      signal = np.zeros(16000, np.float32)
      signal[onset:] = 0.5
      wav = root / f"step{k}.wav"
      if not wav.exists():
        sf.write(wav, signal, RATE, subtype="FLOAT")
      # Feature: the share of the frame's samples past the onset, and a
      # constant; crosses 0.5 where the frame's centre passes the onset.
      share = (_windows(signal, length, step, center) > 0).mean(1)
      emb = np.stack([share, np.ones_like(share)], 1).astype(np.float32)
      np.save(root / f"{name}_{k}.npy", emb)
      items.append({"id": f"step{k}", "audio": str(wav),
                    "embedding": str(root / f"{name}_{k}.npy"),
                    "speaker": "s"})
    path = root / f"{name}.jsonl"
    manifest_lib.write_manifest(items, str(path))
    manifests[name] = str(path)
  return root, manifests


def _first_frame_over_half(values):
  return int(np.argmax(values >= 0.5 * values.max()))


def test_an_onset_lands_on_the_same_stft_frame_through_every_grid(
    step_corpus):
  root, manifests = step_corpus
  # The STFT frame whose centre first passes the onset...
  want = [int(np.ceil((s - CONFIG.frame_length / 2) / CONFIG.frame_step))
          for s in ONSETS]
  landed = {}
  for name, manifest in manifests.items():
    length, step, center = GRIDS[name]
    out = str(root / f"data_{name}")
    preprocess_lib.run_preprocess(
        manifest, out, "npy", split_by="utterance", valid_fraction=0.0,
        test_fraction=0.0, num_workers=1, progress=False,
        embedder_options={"frame_length": length, "frame_step": step,
                          "center": center})
    info = records.read_dataset_info(out)
    assert info["frame_mapping"]["embedding_grid"] == {
        "frame_length": length, "frame_step": step, "center": center,
        "sample_rate": RATE}
    ds = data_lib.make_dataset(out, "train", batch_size=1, mode="bucket",
                               normalize=False, shuffle=False)
    for batch in ds:
      for b, item_id in enumerate(batch["id"].numpy()):
        k = int(item_id.decode()[len("step"):])
        n = int(batch["length"][b])
        share = batch["embedding"].numpy()[b, :n, 0]
        # ...which is also where the STFT itself shows the step (its DC bin
        # is the Hann-weighted share of samples past the onset).
        dc = np.exp(batch["log_stft"].numpy()[b, :n, 0])
        assert _first_frame_over_half(dc) == want[k]
        landed.setdefault(name, {})[k] = _first_frame_over_half(share)
  for name in GRIDS:
    assert [landed[name][k] for k in range(len(ONSETS))] == want, name


def test_pairing_frames_by_index_would_miss_the_onset(step_corpus):
  """The test above can fail: the 25 ms centred frames paired one to one
  with the STFT frames put the onset 1-2 frames late."""
  root, _ = step_corpus
  length, step, center = GRIDS["25ms_centred"]
  for k, onset in enumerate(ONSETS):
    emb = np.load(root / f"25ms_centred_{k}.npy")
    by_index = _first_frame_over_half(emb[:, 0])
    want = int(np.ceil((onset - CONFIG.frame_length / 2) / CONFIG.frame_step))
    assert by_index - want in (1, 2)


def test_a_declared_grid_the_arrays_do_not_match_is_rejected_per_item(
    step_corpus, tmp_path):
  root, manifests = step_corpus
  # The 10 ms arrays declared as 20 ms: twice the frames the grid gives.
  out = str(tmp_path / "out")
  with pytest.raises(PreprocessError):
    preprocess_lib.run_preprocess(
        manifests["10ms"], out, "npy", split_by="utterance",
        valid_fraction=0.0, test_fraction=0.0, num_workers=1, progress=False,
        embedder_options={"frame_length": 400, "frame_step": 320})
  with open(os.path.join(out, records.REJECTED_REPORT)) as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == len(ONSETS)
  for row in rows:
    assert row["reason"] == "length_mismatch"
    assert "embedding has 98 frames" in row["detail"]
    assert "(hop 320, window 400) gives 49 for the 16000 samples" in (
        row["detail"])


def test_preprocess_refuses_a_grid_off_the_stft_samples(step_corpus, tmp_path):
  _, manifests = step_corpus
  with pytest.raises(PreprocessError, match="not a whole number"):
    preprocess_lib.run_preprocess(
        manifests["10ms"], str(tmp_path / "out"), "npy", num_workers=1,
        progress=False, embedder_options={
            "frame_length": 1024, "frame_step": 256, "sample_rate": 22050})
  assert not os.path.exists(tmp_path / "out" / records.DATASET_INFO)


# ----------------------------------------------------------------------------
# 20 ms and 25 ms centred embeddings: preprocess -> train -> export ->
# evaluate.

_PROJECTION = np.random.default_rng(7).uniform(0, 1, (257, 12))


def _features(signal, length, step, center):
  """Log of a fixed random filterbank of the frames' power spectra."""
  frames = _windows(signal, length, step, center) * np.hanning(length)
  power = np.abs(np.fft.rfft(frames, 512)) ** 2
  return np.log(power @ _PROJECTION + 1e-6).astype(np.float32)


@pytest.mark.parametrize("name", ["20ms", "25ms_centred"])
def test_learned_grid_through_the_whole_chain(name, speech_corpus, tmp_path):
  length, step, center = GRIDS[name]
  items = manifest_lib.read_manifest(speech_corpus)
  samples = {}
  for it in items:
    signal = audio_lib.load_audio(it["audio"], RATE)
    samples[it["id"]] = len(signal)
    path = tmp_path / (it["id"].replace("/", "_") + ".npy")
    np.save(path, _features(signal, length, step, center))
    it["embedding"] = str(path)
  manifest = str(tmp_path / "manifest.jsonl")
  manifest_lib.write_manifest(items, manifest)
  data_dir = str(tmp_path / "data")
  info = preprocess_lib.run_preprocess(
      manifest, data_dir, "npy", split_by="utterance", valid_fraction=0.0,
      test_fraction=0.25, num_workers=1, progress=False,
      embedder_options={"frame_length": length, "frame_step": step,
                        "center": center})
  assert info["rejected"]["count"] == 0 and info["trimmed"]["count"] == 0
  assert info["frame_mapping"]["stft_frames_per_embedding_frame"] == (
      step / CONFIG.frame_step)
  mapping = alignment.FrameMapping.from_info(info)
  examples = list(records.read_examples(records.split_files(data_dir, "test"),
                                        with_audio=True))
  for ex in examples:
    # Records keep the frames of the embedder's grid.
    n = samples[ex["id"]]
    assert ex["embedding"].shape[0] == ex["embedding_length"] == (
        mapping.embedding_frames(n))
    assert ex["length"] == min(CONFIG.num_frames(n),
                               mapping.stft_frames(ex["embedding_length"]))

  export_dir = data_testlib.train_and_export("multiscale", data_dir,
                                             str(tmp_path))
  decoder = export_lib.LoadedDecoder(export_dir)
  assert decoder.meta["frame_mapping"] == info["frame_mapping"]
  # The endpoints take the embedder's frames and give the STFT's.
  emb = np.stack([ex["embedding"][:20] for ex in examples[:2]])
  lengths = np.array([20, 13], np.int32)
  log_stft = decoder.spectrogram(emb, lengths)
  frames = decoder.frame_lengths(lengths)
  assert list(frames) == [mapping.stft_frames(20), mapping.stft_frames(13)]
  assert log_stft.shape[1] == frames[0]
  assert np.all(log_stft[1, frames[1]:] == spectral.LOG_SILENCE)
  audio, audio_lengths = decoder.waveform(emb, lengths)
  assert list(audio_lengths) == list(CONFIG.num_samples(frames))
  # Audio of the right length: that of a signal these frames come from,
  # within two hops.
  for t_e, n in zip(lengths, audio_lengths):
    samples = np.arange(n - 2 * step, n + 2 * step)
    assert t_e in mapping.embedding_frames(samples)

  result = evaluate_lib.evaluate(export_dir, data_dir, "test",
                                 str(tmp_path / "eval"), num_figures=1,
                                 num_audio=0, progress=False)
  assert result["model"]["num_items"] == len(examples)
  oracle, model = result["oracle_griffin_lim"], result["model"]
  assert np.isfinite(model["lsd_db"]) and oracle["lsd_db"] < model["lsd_db"]


def test_pieces_of_a_long_item_cut_its_20ms_frames_on_both_grids(tmp_path):
  """A 40 s item with precomputed 20 ms frames, cut into pieces: every cut
  lies on both hops, and each piece's frames are the whole item's from the
  cut on, the count its grid gives for the piece's audio."""
  from e2s_tf import corpus  # pylint: disable=g-import-not-at-top
  length, step, center = GRIDS["20ms"]
  wav = corpus.speechlike_audio(40.0, seed=3)
  sf.write(tmp_path / "long.wav", wav, RATE, subtype="FLOAT")
  signal = audio_lib.load_audio(str(tmp_path / "long.wav"), RATE)
  full = _features(signal, length, step, center)
  np.save(tmp_path / "long.npy", full)
  manifest = str(tmp_path / "manifest.jsonl")
  manifest_lib.write_manifest(
      [{"id": "long", "audio": str(tmp_path / "long.wav"),
        "embedding": str(tmp_path / "long.npy")}], manifest)
  out = str(tmp_path / "data")
  info = preprocess_lib.run_preprocess(
      manifest, out, "npy", split_by="utterance", valid_fraction=0.0,
      test_fraction=0.0, num_workers=1, progress=False, max_item_seconds=16.0,
      embedder_options={"frame_length": length, "frame_step": step})
  assert info["pieces"]["count"] >= 3 and info["rejected"]["count"] == 0
  mapping = alignment.FrameMapping.from_info(info)
  with open(os.path.join(out, "pieces.jsonl")) as f:
    rows = {r["id"]: r for r in map(json.loads, f)}
  examples = list(records.read_examples(records.split_files(out, "train"),
                                        with_audio=True))
  assert sorted(ex["id"] for ex in examples) == sorted(rows)
  for ex in examples:
    start = int(round(rows[ex["id"]]["start"] * RATE))
    end = int(round(rows[ex["id"]]["end"] * RATE))
    assert start % step == 0 and start % CONFIG.frame_step == 0
    first = start // step
    want = mapping.embedding_frames(end - start)
    if end == len(signal):  # the last piece keeps the item's last frames
      want = len(full) - first
    np.testing.assert_array_equal(  # stored as float16, the default
        ex["embedding"],
        full[first:first + want].astype(np.float16).astype(np.float32))
    # A float file's audio is stored as 16 bits.
    np.testing.assert_array_equal(ex["audio"], records.stored_audio(
        signal[start:start + CONFIG.num_samples(ex["length"])]))
