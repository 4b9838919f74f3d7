"""The rate experiment and the input pipeline's `map_frames=False`.

A tiny 20 ms embedder (window 400, hop 320: a fixed random filterbank of the
frames' power spectra, as tests/alignment_test.py makes it) on the shared
3 x 4 speech corpus, preprocessed with `npy`.
"""

import json
import math
import os

import numpy as np
import pytest

from e2s_tf import alignment
from e2s_tf import audio as audio_lib
from e2s_tf import data as data_lib
from e2s_tf import manifest as manifest_lib
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.configs import testing
from e2s_tf.embedders import base
from e2s_tf.experiments import rate_lib

STFT = spectral.StftConfig()
LENGTH, STEP = 400, 320
DIM = 8


def _features(signal, projection):
  count = spectral.frame_count(len(signal), LENGTH, STEP)
  index = np.arange(count)[:, None] * STEP + np.arange(LENGTH)[None]
  frames = signal[index] * np.hanning(LENGTH)
  power = np.abs(np.fft.rfft(frames, 512)) ** 2
  return np.log(power @ projection + 1e-6).astype(np.float32)


@pytest.fixture(scope="module")
def data_20ms(speech_corpus, tmp_path_factory):
  root = tmp_path_factory.mktemp("rate_data")
  projection = np.abs(np.random.default_rng(0).normal(size=(257, DIM)))
  items = manifest_lib.read_manifest(speech_corpus)
  for it in items:
    signal = audio_lib.load_audio(it["audio"], STFT.sample_rate)
    path = root / (it["id"].replace("/", "_") + ".npy")
    np.save(path, _features(signal, projection))
    it["embedding"] = str(path)
  manifest = str(root / "manifest.jsonl")
  manifest_lib.write_manifest(items, manifest)
  data_dir = str(root / "data")
  preprocess_lib.run_preprocess(
      manifest, data_dir, "npy", split_by="utterance", valid_fraction=0.25,
      test_fraction=0.0, num_workers=1, progress=False,
      embedder_options={"frame_length": LENGTH, "frame_step": STEP})
  return data_dir


def test_unmapped_batches_hold_the_records_embeddings(data_20ms):
  info = records.read_dataset_info(data_20ms)
  assert not alignment.FrameMapping.from_info(info).identity
  stored = {ex["id"]: ex for ex in records.read_examples(
      records.split_files(data_20ms, "train"))}
  kwargs = dict(mode="bucket", frames_per_batch=1500, shuffle=False,
                deterministic=True, normalize=False)
  native = list(data_lib.make_dataset(data_20ms, "train", map_frames=False,
                                      **kwargs).as_numpy_iterator())
  mapped = list(data_lib.make_dataset(data_20ms, "train",
                                      **kwargs).as_numpy_iterator())
  assert len(native) == len(mapped) > 1
  seen = 0
  for nb, mb in zip(native, mapped):
    # The STFT stream is the mapped pipeline's, frame for frame.
    np.testing.assert_array_equal(nb["id"], mb["id"])
    for key in ("log_stft", "mask", "length"):
      np.testing.assert_array_equal(nb[key], mb[key])
    assert nb["embedding_mask"].shape == nb["embedding"].shape[:2]
    for b, item_id in enumerate(nb["id"]):
      ex = stored[item_id.decode()]
      n = ex["embedding_length"]
      assert nb["embedding_length"][b] == n == ex["embedding"].shape[0]
      np.testing.assert_array_equal(nb["embedding"][b, :n], ex["embedding"])
      assert np.all(nb["embedding"][b, n:] == 0)
      np.testing.assert_array_equal(
          nb["embedding_mask"][b], np.arange(nb["embedding"].shape[1]) < n)
      # ~half the STFT frames: a 320 hop against 160.
      assert abs(2 * n - nb["length"][b]) <= 2
      seen += 1
  assert seen == len(stored)


def test_unmapped_batches_are_normalised_and_refused_where_frames_are_cut(
    data_20ms):
  normalizer = data_lib.Normalizer.from_data_dir(data_20ms)
  stored = {ex["id"]: ex for ex in records.read_examples(
      records.split_files(data_20ms, "valid"))}
  batch = next(data_lib.make_dataset(data_20ms, "valid", map_frames=False,
                                     shuffle=False).as_numpy_iterator())
  for b, item_id in enumerate(batch["id"]):
    ex = stored[item_id.decode()]
    np.testing.assert_allclose(
        batch["embedding"][b, :ex["embedding_length"]],
        normalizer.normalize_embedding(ex["embedding"]), rtol=1e-5, atol=1e-5)
  for mode in ("crop", "repeat_longest", "crop_shortest", "mean_length"):
    with pytest.raises(ValueError, match="map_frames=False.*" + mode):
      data_lib.make_dataset(data_20ms, "train", mode=mode, map_frames=False)
  with pytest.raises(ValueError, match="max_frames"):
    data_lib.make_dataset(data_20ms, "train", max_frames=100,
                          map_frames=False)


# s = 2·u(0) + 1/2 upsampled frames; the offset rounds it (half up).
@pytest.mark.parametrize("length,offset,residual_ms", [
    (400, 1, 2.5),  # u(0) = 0.125, s = 0.75: a quarter hop left over
    (640, 0, 0.0),  # pairs of 480/160 frames: u(0) = -0.25, s = 0, exact
    (480, 1, 5.0),  # u(0) = 0, s = 0.5: half a hop, the worst case
])
def test_integer_placement_and_its_residual_offset(length, offset,
                                                   residual_ms):
  mapping = alignment.FrameMapping.between(
      base.Grid(STFT.sample_rate, length, STEP, False), STFT)
  placement = rate_lib.IntegerPlacement.of(mapping, STFT.sample_rate)
  assert placement.ratio == 2
  assert placement.offset == offset
  assert placement.residual_ms == pytest.approx(residual_ms)


def test_transposed_upsampler_centres_its_frames_on_the_input_frame():
  layer = rate_lib.RateUpsampler(1, 2, "transposed")
  layer.build((1, 5, 1))
  kernel = np.array([1.0, 2.0, 2.0, 1.0], np.float32).reshape(4, 1, 1)
  layer.conv.set_weights([kernel, np.zeros(1, np.float32)])
  x = np.zeros((1, 5, 1), np.float32)
  x[0, 2, 0] = 1.0
  out = np.asarray(layer(x, np.ones((1, 5), np.float32)))[0, :, 0]
  # Frame 2 gives upsampled frames 4 and 5, symmetric about 4.5.
  np.testing.assert_array_equal(out, [0, 0, 0, 1, 2, 2, 1, 0, 0, 0])


def test_rate_experiment_runs_both_arms(data_20ms, tmp_path):
  out = str(tmp_path / "rate")
  config = testing.get_config("multiscale")
  results = rate_lib.run(data_20ms, out, config, steps=2, seeds=[0],
                         split="valid", max_items=2, command="test",
                         log=lambda *_: None)
  assert results["placement"]["residual_centre_offset_ms"] == pytest.approx(
      2.5)
  run = results["runs"][0]
  assert run["same_batches"] and run["same_initial_decoder"]
  for arm in rate_lib.ARMS:
    scores = run["scores"][arm]
    assert scores["steps"] == 2 and scores["num_items"] == 2
    assert scores["frames_match"]
    for key in ("valid_loss", "spec_lsd_db", "spec_spectral_convergence",
                "lsd_db", "spectral_convergence", "mcd_db", "stoi",
                "train_seconds", "final_train_loss"):
      assert math.isfinite(scores[key]), (arm, key)
    assert scores["params"] > 0
  assert (run["scores"]["upsampled"]["params"] >
          run["scores"]["interpolated"]["params"])
  assert (run["scores"]["upsampled"]["decoder_params"] ==
          run["scores"]["interpolated"]["decoder_params"])
  with open(os.path.join(out, rate_lib.RESULTS_FILE)) as f:
    assert json.load(f)["runs"][0]["seed"] == 0
  report = open(os.path.join(out, rate_lib.REPORT_FILE)).read()
  assert "- command: `test`" in report and "+2.50 ms" in report
  assert report.count("| interpolated |") == report.count("| upsampled |") == 1
