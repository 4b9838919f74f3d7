"""Tests for e2s_tf.embedders: grid, registry and the four embedders."""

import json
import os
import pickle

import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from e2s_tf import embedders
from e2s_tf import spectral
from e2s_tf.embedders import logmel
from e2s_tf.embedders import savedmodel

CONFIG = spectral.StftConfig()
ORIGINAL = spectral.StftConfig.original()
SAMPLES = 4321  # an arbitrary length, not a whole number of hops


def _signal(num_samples, seed=0, sample_rate=CONFIG.sample_rate):
  """Two tones plus noise: [samples] float32."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / sample_rate
  x = (0.3 * np.sin(2 * np.pi * 220.0 * t) +
       0.2 * np.sin(2 * np.pi * 1830.0 * t) +
       0.05 * rng.standard_normal(num_samples))
  return x.astype(np.float32)


def _frames(x, frame_length, frame_step):
  """NumPy framing on the non-centred grid: [frames, frame_length]."""
  count = max(0, 1 + (len(x) - frame_length) // frame_step)
  idx = (np.arange(count)[:, None] * frame_step +
         np.arange(frame_length)[None, :])
  return np.asarray(x, np.float64)[idx]


def _numpy_mel_matrix(num_mel_bins, num_bins, sample_rate, lower, upper):
  """Independent HTK-mel triangular filterbank, [bins, mel], DC bin zero."""
  def mel(f):
    return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)
  bin_mel = mel(np.linspace(0.0, sample_rate / 2.0, num_bins))[1:]
  edges = np.linspace(mel(lower), mel(upper), num_mel_bins + 2)
  lo, center, hi = edges[:-2], edges[1:-1], edges[2:]
  rising = (bin_mel[:, None] - lo) / (center - lo)
  falling = (hi - bin_mel[:, None]) / (hi - center)
  w = np.maximum(0.0, np.minimum(rising, falling))
  return np.concatenate([np.zeros((1, num_mel_bins)), w], axis=0)


def _item(item_id="utt1", **fields):
  return {"id": item_id, "audio": f"/data/{item_id}.wav", **fields}


# ----------------------------------------------------------------- Grid


@pytest.mark.parametrize("config", [CONFIG, ORIGINAL], ids=["480", "512"])
def test_grid_frames_match_stft_config(config):
  grid = embedders.Grid.from_stft(config)
  lengths = np.array([0, 1, config.frame_length - 1, config.frame_length,
                      config.frame_length + config.frame_step - 1,
                      config.frame_length + config.frame_step, SAMPLES, 16000])
  np.testing.assert_array_equal(grid.num_frames(lengths),
                                config.num_frames(lengths))
  for n in lengths:
    assert grid.num_frames(int(n)) == config.num_frames(int(n))
    framed = tf.signal.frame(np.zeros(n, np.float32), config.frame_length,
                             config.frame_step)
    assert grid.num_frames(int(n)) == framed.shape[0]
  assert grid == embedders.Grid.from_stft(config)
  assert grid != embedders.Grid.from_stft(
      CONFIG if config is ORIGINAL else ORIGINAL)


def test_grid_centred_frames_count_padded_signal():
  grid = embedders.Grid(16000, frame_length=400, frame_step=160, center=True)
  for n in (0, 1, 159, 160, 161, SAMPLES):
    padded = n + 2 * 200 if n else 0
    expected = tf.signal.frame(np.zeros(padded, np.float32), 400, 160).shape[0]
    assert grid.num_frames(n) == expected, n
  assert grid.num_frames(SAMPLES) == 1 + SAMPLES // 160


def test_grid_dict_round_trip_and_validation():
  grid = embedders.Grid(8000, 200, 80, center=True)
  round_trip = json.loads(json.dumps(grid.to_dict()))
  assert embedders.Grid.from_dict(round_trip) == grid
  with pytest.raises(ValueError, match="unknown Grid fields"):
    embedders.Grid.from_dict({**grid.to_dict(), "fft_length": 256})
  with pytest.raises(ValueError, match="frame_step must be positive"):
    embedders.Grid(16000, 480, 0)


# ------------------------------------------------------------- registry


def test_registry_lists_the_six_embedders():
  assert embedders.available() == ["energy", "logmel", "mfcc", "npy", "onnx",
                                   "savedmodel"]


def test_unknown_embedder_names_the_known_ones():
  with pytest.raises(ValueError, match=r"unknown embedder 'wav2vec'.*logmel.*"
                     r"mfcc.*npy.*savedmodel"):
    embedders.get_embedder("wav2vec", CONFIG)


def test_registry_rejects_bad_options_and_arguments():
  with pytest.raises(ValueError, match=r"does not accept option\(s\) "
                     r"\['bands'\].*num_mel_bins"):
    embedders.get_embedder("logmel", CONFIG, bands=40)
  with pytest.raises(ValueError, match="takes no argument"):
    embedders.get_embedder("logmel:foo", CONFIG)
  with pytest.raises(ValueError, match="needs a path"):
    embedders.get_embedder("savedmodel", CONFIG)
  with pytest.raises(ValueError, match="no SavedModel at"):
    embedders.get_embedder("savedmodel:/nonexistent/model", CONFIG)


def test_register_refuses_a_second_class_under_a_taken_name():
  with pytest.raises(ValueError, match="already registered"):
    @embedders.register("logmel")
    class Other(logmel.LogMelEmbedder):  # pylint: disable=unused-variable
      pass


def test_embedder_error_names_item_and_file_and_pickles():
  error = embedders.EmbedderError("dim 3 != 4", item_id="utt7",
                                  path="/x/utt7.npy", reason="wrong_dimension")
  assert isinstance(error, ValueError)
  assert "utt7" in str(error) and "/x/utt7.npy" in str(error)
  assert "dim 3 != 4" in str(error) and error.detail == "dim 3 != 4"
  copy = pickle.loads(pickle.dumps(error))
  assert (copy.item_id, copy.path, copy.reason, str(copy)) == (
      "utt7", "/x/utt7.npy", "wrong_dimension", str(error))
  assert embedders.EmbedderError("x").reason == "embedding_error"
  with pytest.raises(ValueError, match="unknown EmbedderError reason"):
    embedders.EmbedderError("x", reason="bad luck")


# --------------------------------------------------------------- logmel


def test_logmel_mel_matrix_is_the_htk_filterbank():
  embedder = embedders.get_embedder("logmel", CONFIG)
  w = embedder.mel_matrix()
  assert w.shape == (CONFIG.num_bins, logmel.NUM_MEL_BINS)
  expected = _numpy_mel_matrix(logmel.NUM_MEL_BINS, CONFIG.num_bins,
                               CONFIG.sample_rate, logmel.LOWER_EDGE_HERTZ,
                               CONFIG.sample_rate / 2)
  np.testing.assert_allclose(w, expected, atol=1e-4)


@pytest.mark.parametrize("config", [CONFIG, ORIGINAL], ids=["480", "512"])
@pytest.mark.parametrize("num_samples", [0, 100, 480, 512, SAMPLES])
def test_logmel_equals_numpy_recomputation(config, num_samples):
  embedder = embedders.get_embedder("logmel", config)
  x = _signal(num_samples)
  features = embedder.embed(x, _item())
  assert features.dtype == np.float32
  assert features.shape == (config.num_frames(num_samples), 64)
  assert embedder.grid == embedders.Grid.from_stft(config)
  frames = _frames(x, config.frame_length, config.frame_step)
  magnitude = np.abs(np.fft.rfft(frames * spectral.numpy_window(config),
                                 n=config.fft_length, axis=-1))
  expected = np.log(np.maximum(magnitude @ embedder.mel_matrix(), 1e-5))
  np.testing.assert_allclose(features, expected, atol=2e-4)


def test_logmel_num_mel_bins_option_and_description():
  embedder = embedders.get_embedder("logmel", CONFIG, num_mel_bins=40)
  features = embedder.embed(_signal(SAMPLES), _item())
  assert embedder.dim == 40
  assert features.shape == (CONFIG.num_frames(SAMPLES), 40)
  d = embedder.describe()
  assert d["name"] == "logmel" and d["dim"] == 40
  assert d["grid"] == embedders.Grid.from_stft(CONFIG).to_dict()
  assert d["options"]["num_mel_bins"] == 40
  rebuilt = embedders.from_description(json.loads(json.dumps(d)), CONFIG)
  np.testing.assert_array_equal(rebuilt.embed(_signal(SAMPLES), _item()),
                                features)


def test_logmel_silence_is_the_log_floor():
  embedder = embedders.get_embedder("logmel", CONFIG)
  features = embedder.embed(np.zeros(SAMPLES, np.float32), _item())
  np.testing.assert_allclose(features, np.log(embedder.log_floor))
  assert embedder.log_floor == spectral.MAGNITUDE_FLOOR


def _speechlike_magnitude(num_frames, seed=0):
  """Harmonics under a formant-like envelope: [frames, bins], positive."""
  rng = np.random.default_rng(seed)
  freqs = np.arange(CONFIG.num_bins) * CONFIG.sample_rate / CONFIG.fft_length
  rows = []
  for t in range(num_frames):
    f0 = rng.uniform(100.0, 250.0)
    harmonics = np.exp(-0.5 * ((freqs[:, None] - f0 * np.arange(1, 60)) /
                               20.0) ** 2).sum(axis=1)
    envelope = np.exp(-freqs / 2000.0) * (1.0 + np.sin(freqs / 300.0 + t))
    rows.append(envelope * (harmonics + 0.01) + 1e-4)
  return np.array(rows)


def test_logmel_inverse_reproduces_features_better_than_pinv():
  embedder = embedders.get_embedder("logmel", CONFIG)
  w = embedder.mel_matrix().astype(np.float64)
  magnitude = _speechlike_magnitude(12)
  features = np.log(np.maximum(magnitude @ w, embedder.log_floor))

  estimate = embedder.invert_magnitude(features)
  naive = np.maximum(np.exp(features) @ np.linalg.pinv(w), 0.0)  # clipped pinv
  assert estimate.shape == magnitude.shape and np.all(estimate >= 0)

  def mel_error(m):  # max |log-mel(m) - features|
    log_mel = np.log(np.maximum(m @ w, embedder.log_floor))
    return np.abs(log_mel - features).max()

  def rel_error(m):
    return np.linalg.norm(m - magnitude) / np.linalg.norm(magnitude)

  assert mel_error(estimate) < 0.05 < 1.0 < mel_error(naive)
  assert rel_error(estimate) < 0.95 * rel_error(naive)


def test_logmel_inverse_recovers_a_mel_representable_spectrum():
  embedder = embedders.get_embedder("logmel", CONFIG)
  w = embedder.mel_matrix().astype(np.float64)
  rng = np.random.default_rng(1)
  magnitude = rng.uniform(0.1, 1.0, (6, w.shape[1])) @ w.T  # [frames, bins]
  features = np.log(magnitude @ w)
  estimate = embedder.invert_magnitude(features)
  covered = w.sum(axis=1) > 0
  np.testing.assert_allclose(estimate[:, covered], magnitude[:, covered],
                             atol=1e-3 * magnitude.max())


def test_nonnegative_least_squares_matches_an_active_set_solution():
  # Over-determined, so the solution is unique: compare with scipy's NNLS.
  scipy_optimize = pytest.importorskip("scipy.optimize")
  rng = np.random.default_rng(2)
  basis = rng.uniform(0.0, 1.0, (5, 12))
  targets = rng.normal(size=(3, 12))
  got = logmel.nonnegative_least_squares(targets, basis, num_iterations=5000,
                                         tolerance=0.0)
  for row, y in zip(got, targets):
    expected, _ = scipy_optimize.nnls(basis.T, y)
    np.testing.assert_allclose(row, expected, atol=1e-6)


# ----------------------------------------------------------------- mfcc


def test_energy_is_the_log_rms_magnitude_of_each_frame():
  x = _signal(SAMPLES)
  energy = embedders.get_embedder("energy", CONFIG)
  features = energy.embed(x, _item())
  assert energy.dim == 1 and energy.grid == embedders.Grid.from_stft(CONFIG)
  magnitude = np.exp(spectral.numpy_log_stft(x, CONFIG)).astype(np.float64)
  expected = np.log(np.sqrt(np.mean(np.square(magnitude), axis=-1)))
  assert features.shape == (CONFIG.num_frames(SAMPLES), 1)
  np.testing.assert_allclose(features[:, 0], expected, atol=1e-4)
  # Twice the amplitude is ln 2 more in every frame; silence sits at the floor.
  np.testing.assert_allclose(energy.embed(2 * x, _item()), features + np.log(2),
                             atol=1e-4)
  np.testing.assert_allclose(energy.embed(np.zeros(SAMPLES, np.float32),
                                          _item()), np.log(1e-5), atol=1e-6)
  assert not energy.analytic_inverse
  from e2s_tf import configs  # pylint: disable=g-import-not-at-top
  assert configs.embedder_kind({"embedder": energy.describe()}) == "learned"


def test_mfcc_is_the_truncated_dct_of_logmel():
  x = _signal(SAMPLES)
  mfcc = embedders.get_embedder("mfcc", CONFIG)
  log_mel = embedders.get_embedder("logmel", CONFIG).embed(x, _item())
  features = mfcc.embed(x, _item())
  assert mfcc.dim == 20 and features.shape == (CONFIG.num_frames(SAMPLES), 20)
  assert mfcc.grid == embedders.Grid.from_stft(CONFIG)
  expected = scipy.fft.dct(log_mel.astype(np.float64), type=2, axis=-1)
  expected = expected[:, :20] / np.sqrt(2.0 * log_mel.shape[1])
  np.testing.assert_allclose(features, expected, atol=1e-3)
  assert np.abs(features - log_mel[:, :20]).max() > 1.0


def test_mfcc_options_and_inverse():
  mfcc = embedders.get_embedder("mfcc", CONFIG, num_coefficients=64)
  x = _signal(SAMPLES)
  log_mel = embedders.get_embedder("logmel", CONFIG).embed(x, _item())
  features = mfcc.embed(x, _item())
  assert features.shape[1] == 64
  # All coefficients kept: the cepstrum maps back to the log-mel exactly.
  np.testing.assert_allclose(mfcc.log_mel_from_mfcc(features), log_mel,
                             atol=1e-4)
  magnitude = embedders.get_embedder("mfcc", CONFIG).invert_magnitude(
      features[:, :20])
  assert magnitude.shape == (features.shape[0], CONFIG.num_bins)
  assert np.all(magnitude >= 0)
  with pytest.raises(ValueError, match="num_coefficients"):
    embedders.get_embedder("mfcc", CONFIG, num_coefficients=65)


# ------------------------------------------------------------------ npy


@pytest.mark.parametrize("transpose", [False, True])
def test_npy_loads_both_orientations(tmp_path, transpose):
  rng = np.random.default_rng(3)
  embedding = rng.normal(size=(120, 64)).astype(np.float32)
  path = tmp_path / "utt1.npy"
  np.save(path, embedding.T if transpose else embedding)
  embedder = embedders.get_embedder("npy", CONFIG, transpose=transpose)
  assert not embedder.needs_audio and embedder.dim is None
  got = embedder.embed(_signal(SAMPLES), _item(embedding=str(path)))
  np.testing.assert_array_equal(got, embedding)
  assert embedder.dim == 64
  assert embedder.describe()["options"]["dim"] == 64
  assert embedder.grid == embedders.Grid.from_stft(CONFIG)


def test_npy_declared_grid_and_dim(tmp_path):
  path = tmp_path / "a.npy"
  np.save(path, np.ones((7, 3), np.float64))
  embedder = embedders.get_embedder("npy", CONFIG, dim=3, frame_length=400,
                                    frame_step=320)
  got = embedder.embed(np.zeros(10, np.float32), _item(embedding=str(path)))
  assert got.dtype == np.float32 and got.shape == (7, 3)
  assert embedder.grid == embedders.Grid(CONFIG.sample_rate, 400, 320)
  assert embedder.grid != embedders.Grid.from_stft(CONFIG)


def _npy_error(tmp_path, array=None, embedder=None, **item_fields):
  embedder = embedder or embedders.get_embedder("npy", CONFIG)
  if array is not None:
    np.save(tmp_path / "bad.npy", array)
    item_fields.setdefault("embedding", str(tmp_path / "bad.npy"))
  with pytest.raises(embedders.EmbedderError) as info:
    embedder.embed(_signal(SAMPLES), _item("utt9", **item_fields))
  assert "utt9" in str(info.value)
  return info.value


def test_npy_errors_name_the_item_and_file(tmp_path):
  error = _npy_error(tmp_path)
  assert "no 'embedding' field" in str(error)
  assert error.reason == "embedding_error"

  missing = str(tmp_path / "missing.npy")
  error = _npy_error(tmp_path, embedding=missing)
  assert "not found" in str(error) and missing in str(error)
  assert error.path == missing

  bad = str(tmp_path / "bad.npy")
  error = _npy_error(tmp_path, np.zeros((2, 3, 4), np.float32))
  assert "2-D" in str(error) and bad in str(error)
  assert error.reason == "wrong_dimension"

  error = _npy_error(tmp_path, np.array([[1.0, np.nan]], np.float32))
  assert "non-finite" in str(error) and bad in str(error)
  assert error.reason == "non_finite"

  error = _npy_error(tmp_path, np.zeros((5, 32), np.float32),
                     embedder=embedders.get_embedder("npy", CONFIG, dim=64))
  assert "dim 32 != expected 64" in str(error) and bad in str(error)
  assert "transpose=True" in str(error) and error.reason == "wrong_dimension"

  with open(bad, "wb") as f:
    f.write(b"not a numpy file")
  error = _npy_error(tmp_path, embedding=bad)
  assert "cannot read" in str(error) and bad in str(error)


def test_npy_refuses_archives_complex_overflow_and_bad_ids(tmp_path):
  """Each bad file is an EmbedderError naming item and file, never a crash."""
  bad = str(tmp_path / "bad.npy")
  np.savez(tmp_path / "archive.npz", a=np.zeros((5, 4), np.float32))
  os.replace(tmp_path / "archive.npz", bad)  # an .npz renamed .npy
  error = _npy_error(tmp_path, embedding=bad)
  assert ".npz archive" in str(error) and bad in str(error)

  error = _npy_error(tmp_path, np.ones((5, 4), np.complex64))
  assert "real numbers" in str(error) and "complex64" in str(error)
  error = _npy_error(tmp_path, np.ones((5, 4), bool))
  assert "real numbers" in str(error)

  # Finite in float64, infinite in float32: not silently cast.
  error = _npy_error(tmp_path, np.full((5, 4), 1e300))
  assert error.reason == "non_finite" and "float32" in str(error)

  for data in (b"", b"PK\x03\x04broken zip"):  # empty; a broken archive
    with open(bad, "wb") as f:
      f.write(data)
    error = _npy_error(tmp_path, embedding=bad)
    assert "cannot read" in str(error)

  np.save(bad, np.ones((5, 4), np.float32))
  embedder = embedders.get_embedder("npy", CONFIG)
  with pytest.raises(embedders.EmbedderError, match="invalid item id"):
    embedder.embed(_signal(SAMPLES), _item("../../x", embedding=bad))


def test_npy_enforces_the_first_files_dim(tmp_path):
  embedder = embedders.get_embedder("npy", CONFIG)
  np.save(tmp_path / "a.npy", np.zeros((5, 64), np.float32))
  embedder.embed(_signal(SAMPLES), _item(embedding=str(tmp_path / "a.npy")))
  error = _npy_error(tmp_path, np.zeros((64, 5), np.float32), embedder=embedder)
  assert "dim 5 != expected 64" in str(error)


# ----------------------------------------------------------- savedmodel

PROJECTION_DIM = 64


class _FramingProjection(tf.Module):
  """A toy embedder: frames on the grid and a fixed random projection."""

  def __init__(self, frame_length, frame_step, rank=2, seed=4):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.frame_length, self.frame_step = frame_length, frame_step
    self.projection = tf.Variable(
        rng.normal(size=(frame_length, PROJECTION_DIM)).astype(np.float32))
    shape = [None, None] if rank == 2 else [None]
    self.serve = tf.function(self._project,
                             input_signature=[tf.TensorSpec(shape, tf.float32)])

  def _project(self, waveform):
    frames = tf.signal.frame(waveform, self.frame_length, self.frame_step)
    return {"embedding": tf.tensordot(frames, self.projection, axes=1)}


def _expected_projection(module, x):
  return _frames(x, module.frame_length, module.frame_step) @ \
      module.projection.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def saved_projection(tmp_path_factory):
  """A SavedModel with a serving_default signature and e2s_embedder.json."""
  path = str(tmp_path_factory.mktemp("sm") / "projection")
  module = _FramingProjection(CONFIG.frame_length, CONFIG.frame_step)
  tf.saved_model.save(module, path,
                      signatures={"serving_default": module.serve})
  savedmodel.write_embedder_json(path, PROJECTION_DIM,
                                 embedders.Grid.from_stft(CONFIG))
  return path, module


def test_savedmodel_reproduces_the_projection(saved_projection):
  path, module = saved_projection
  embedder = embedders.get_embedder("savedmodel:" + path, CONFIG)
  assert embedder.dim == PROJECTION_DIM
  assert embedder.grid == embedders.Grid.from_stft(CONFIG)
  for n in (SAMPLES, 16000):
    x = _signal(n, seed=n)
    got = embedder.embed(x, _item())
    assert got.shape == (CONFIG.num_frames(n), PROJECTION_DIM)
    np.testing.assert_allclose(got, _expected_projection(module, x),
                               rtol=1e-5, atol=1e-4)
  d = embedder.describe()
  assert d["spec"] == "savedmodel:" + os.path.abspath(path)
  assert d["grid"] == embedders.Grid.from_stft(CONFIG).to_dict()
  assert embedders.from_description(d, CONFIG).grid == embedder.grid


def test_savedmodel_options_override_the_json(saved_projection):
  path, _ = saved_projection
  embedder = embedders.get_embedder("savedmodel:" + path, CONFIG,
                                    frame_step=320)
  assert embedder.grid == embedders.Grid(CONFIG.sample_rate,
                                         CONFIG.frame_length, 320)
  wrong_dim = embedders.get_embedder("savedmodel:" + path, CONFIG, dim=32)
  with pytest.raises(embedders.EmbedderError, match="dim 64 != expected 32"):
    wrong_dim.embed(_signal(SAMPLES), _item())


def test_savedmodel_rejects_another_sample_rate(saved_projection):
  path, _ = saved_projection
  with open(os.path.join(path, savedmodel.EMBEDDER_JSON)) as f:
    assert json.load(f)["sample_rate"] == CONFIG.sample_rate
  with pytest.raises(ValueError, match="expects 16000 Hz audio but the "
                     "StftConfig's sample rate is 8000 Hz"):
    embedders.get_embedder("savedmodel:" + path,
                           spectral.StftConfig(sample_rate=8000))


def test_savedmodel_without_grid_fails_clearly_and_flags_fix_it(tmp_path):
  path = str(tmp_path / "bare")
  module = _FramingProjection(400, 160, rank=1)
  tf.saved_model.save(module, path,
                      signatures={"serving_default": module.serve})
  with pytest.raises(ValueError, match=r"declares no frame grid.*"
                     r"e2s_embedder\.json.*frame_length and frame_step"):
    embedders.get_embedder("savedmodel:" + path, CONFIG)
  embedder = embedders.get_embedder("savedmodel:" + path, CONFIG,
                                    frame_length=400, frame_step=160)
  assert embedder.dim is None  # learnt from the first output
  x = _signal(SAMPLES)
  got = embedder.embed(x, _item())  # a rank-1 signature: called with [samples]
  np.testing.assert_allclose(got, _expected_projection(module, x),
                             rtol=1e-5, atol=1e-4)
  assert embedder.dim == PROJECTION_DIM
  assert embedder.grid == embedders.Grid(CONFIG.sample_rate, 400, 160)


def test_savedmodel_embed_attribute_without_signature(tmp_path):
  path = str(tmp_path / "method")
  module = _FramingProjection(CONFIG.frame_length, CONFIG.frame_step)
  module.embed = tf.function(module.serve.python_function)
  module.embed.get_concrete_function(tf.TensorSpec([None], tf.float32))
  tf.saved_model.save(module, path, signatures={})
  savedmodel.write_embedder_json(path, PROJECTION_DIM,
                                 embedders.Grid.from_stft(CONFIG))
  embedder = embedders.get_embedder("savedmodel:" + path, CONFIG)
  x = _signal(SAMPLES)
  # Only a [samples] trace exists: [batch, samples] fails, [samples] is used.
  np.testing.assert_allclose(embedder.embed(x, _item()),
                             _expected_projection(module, x),
                             rtol=1e-5, atol=1e-4)


def test_savedmodel_without_callable_fails_clearly(tmp_path):
  path = str(tmp_path / "empty")
  tf.saved_model.save(tf.Module(), path)
  savedmodel.write_embedder_json(path, 8, embedders.Grid.from_stft(CONFIG))
  with pytest.raises(ValueError, match="neither a 'serving_default' signature"):
    embedders.get_embedder("savedmodel:" + path, CONFIG)
