"""Tests for e2s_tf.embedders.onnx: small ONNX encoders built in the test."""

import json
import os
import re

import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper
import pytest

from e2s_tf import embedders
from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import onnx as onnx_embedder
from e2s_tf.embedders import savedmodel
from tests import data_testlib

CONFIG = spectral.StftConfig()
GRID = embedders.Grid.from_stft(CONFIG)
DIM = 16
SAMPLES = 4321  # an arbitrary length, not a whole number of hops
# Opset and IR version that onnxruntime 1.22 runs (onnx 1.18 writes newer).
OPSET = 17
IR_VERSION = 8
FLOAT = onnx.TensorProto.FLOAT


def _signal(num_samples, seed=0):
  """Noise plus a tone: [samples] float32."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_samples) / CONFIG.sample_rate
  x = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.1 * rng.standard_normal(
      num_samples)
  return x.astype(np.float32)


def _item(item_id="utt1"):
  return {"id": item_id, "audio": f"/data/{item_id}.wav"}


def _weights(frame_length, dim=DIM, seed=3):
  """The Conv kernel of the encoder: [dim, 1, frame_length] float32."""
  rng = np.random.default_rng(seed)
  return rng.normal(size=(dim, 1, frame_length)).astype(np.float32)


def _expected(x, weights, frame_length, frame_step, center=False):
  """NumPy framing and projection: frame t covers samples
  [t * frame_step, t * frame_step + frame_length) of the (padded) signal."""
  x = np.asarray(x, np.float64)
  if center:
    half = frame_length // 2
    x = np.pad(x, (half, half))
  count = max(0, 1 + (len(x) - frame_length) // frame_step)
  idx = (np.arange(count)[:, None] * frame_step +
         np.arange(frame_length)[None, :])
  return x[idx] @ weights[:, 0, :].T.astype(np.float64)


def _save(path, nodes, inputs, outputs, initializers=()):
  graph = helper.make_graph(nodes, "encoder", inputs, outputs,
                            initializer=list(initializers))
  model = helper.make_model(graph, ir_version=IR_VERSION,
                            opset_imports=[helper.make_opsetid("", OPSET)])
  # The checker wants every output's shape declared; some tests do not.
  if all(o.type.tensor_type.HasField("shape") for o in outputs):
    onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return str(path)


def _conv_encoder(path, frame_length=CONFIG.frame_length,
                  frame_step=CONFIG.frame_step, dim=DIM, center=False,
                  samples="samples", output_shape="declared",
                  output_name="embedding", scale=None, duplicate_batch=False,
                  hide_shape=False):
  """A framing encoder: [B, S] -> Unsqueeze [B, 1, S] -> (Pad) -> Conv
  (kernel frame_length, stride frame_step) -> Transpose [B, T, dim].

  Args:
    path: the .onnx file to write.
    frame_length, frame_step, dim: the Conv's kernel, stride and channels.
    center: pad frame_length // 2 zeros on both sides first.
    samples: the input's samples axis (a name: dynamic; an int: fixed).
    output_shape: "declared" ([batch, frames, dim]), "none" (no shape), or
      an explicit shape list.
    output_name: the name of the output.
    scale: multiply the output by this constant (NaN makes NaN outputs).
    duplicate_batch: concatenate the input with itself (output batch 2).
    hide_shape: Squeeze then Unsqueeze the output: the same values, but its
      rank (and so its dim) is unknown until the model runs.

  Returns:
    (path, the Conv weights).
  """
  weights = _weights(frame_length, dim)
  inits = [numpy_helper.from_array(weights, "w"),
           numpy_helper.from_array(np.array([1], np.int64), "axis1")]
  nodes = []
  x = "waveform"
  if duplicate_batch:
    nodes.append(helper.make_node("Concat", [x, x], ["twice"], axis=0))
    x = "twice"
  nodes.append(helper.make_node("Unsqueeze", [x, "axis1"], ["x3"]))
  x = "x3"
  if center:
    half = frame_length // 2
    inits.append(numpy_helper.from_array(
        np.array([0, 0, half, 0, 0, half], np.int64), "pads"))
    nodes.append(helper.make_node("Pad", [x, "pads"], ["padded"]))
    x = "padded"
  nodes.append(helper.make_node("Conv", [x, "w"], ["conv"],
                                kernel_shape=[frame_length],
                                strides=[frame_step]))
  last = "frames"
  nodes.append(helper.make_node("Transpose", ["conv"], [last], perm=[0, 2, 1]))
  if scale is not None:
    inits.append(numpy_helper.from_array(np.array(scale, np.float32), "scale"))
    nodes.append(helper.make_node("Mul", [last, "scale"], ["scaled"]))
    last = "scaled"
  if hide_shape:
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    nodes.append(helper.make_node("Squeeze", [last], ["squeezed"]))
    nodes.append(helper.make_node("Unsqueeze", ["squeezed", "axis0"],
                                  ["unsqueezed"]))
    last = "unsqueezed"
  nodes.append(helper.make_node("Identity", [last], [output_name]))
  if output_shape == "declared":
    output_shape = ["batch", "frames", dim]
  elif output_shape == "none":
    output_shape = None
  inputs = [helper.make_tensor_value_info("waveform", FLOAT,
                                          ["batch", samples])]
  outputs = [helper.make_tensor_value_info(output_name, FLOAT, output_shape)]
  return _save(path, nodes, inputs, outputs, inits), weights


def _identity_model(path, input_shape, output_shape, num_inputs=1,
                    op="Identity"):
  """A model whose output is `op` (Identity, Squeeze) of its first input."""
  inputs = [helper.make_tensor_value_info(f"x{i}", FLOAT, input_shape)
            for i in range(num_inputs)]
  outputs = [helper.make_tensor_value_info("y", FLOAT, output_shape)]
  return _save(path, [helper.make_node(op, ["x0"], ["y"])], inputs, outputs)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
  """The Conv encoder on the StftConfig's grid, declared by its own JSON."""
  path, weights = _conv_encoder(tmp_path_factory.mktemp("onnx") / "enc.onnx")
  onnx_embedder.write_embedder_json(path, DIM, GRID)
  return path, weights


def _refusal(path, **options):
  """The ValueError raised when loading `path`; it names the model."""
  with pytest.raises(ValueError) as info:
    embedders.get_embedder("onnx:" + path, CONFIG, **options)
  assert os.path.abspath(path) in str(info.value)
  return str(info.value)


def test_onnx_is_registered():
  assert "onnx" in embedders.available()
  assert embedders.embedder_class("onnx:x.onnx") is onnx_embedder.OnnxEmbedder


@pytest.mark.parametrize("num_samples", [CONFIG.frame_length, SAMPLES, 16000])
def test_onnx_reproduces_the_numpy_framing(encoder, num_samples):
  path, weights = encoder
  embedder = embedders.get_embedder("onnx:" + path, CONFIG)
  assert embedder.dim == DIM and embedder.grid == GRID
  x = _signal(num_samples, seed=num_samples)
  got = embedder.embed(x, _item())
  assert got.dtype == np.float32
  assert got.shape == (GRID.num_frames(num_samples), DIM)
  assert got.shape[0] == CONFIG.num_frames(num_samples)
  np.testing.assert_allclose(
      got, _expected(x, weights, CONFIG.frame_length, CONFIG.frame_step),
      rtol=1e-5, atol=1e-4)


def test_onnx_centred_grid_counts_padded_frames(tmp_path):
  length, step = 400, 160
  path, weights = _conv_encoder(tmp_path / "centred.onnx", length, step,
                                center=True)
  embedder = embedders.get_embedder("onnx:" + path, CONFIG, frame_length=length,
                                    frame_step=step, center=True)
  x = _signal(SAMPLES)
  got = embedder.embed(x, _item())
  assert got.shape[0] == embedder.grid.num_frames(SAMPLES)
  assert got.shape[0] > embedders.Grid(CONFIG.sample_rate, length,
                                       step).num_frames(SAMPLES)
  np.testing.assert_allclose(got, _expected(x, weights, length, step, True),
                             rtol=1e-5, atol=1e-4)


def test_onnx_runs_on_one_cpu_thread(encoder):
  embedder = embedders.get_embedder("onnx:" + encoder[0], CONFIG)
  # pylint: disable-next=protected-access
  session = embedder._session
  assert session.get_providers() == ["CPUExecutionProvider"]
  assert session.get_session_options().intra_op_num_threads == 1


def test_onnx_spec_and_options_rebuild_it(encoder, tmp_path, monkeypatch):
  path, _ = encoder
  embedder = embedders.get_embedder("onnx:" + path, CONFIG)
  d = embedder.describe()
  assert d["spec"] == "onnx:" + os.path.abspath(path)
  assert d["grid"] == GRID.to_dict() and d["dim"] == DIM
  assert d["options"] == {"dim": DIM, "frame_length": CONFIG.frame_length,
                          "frame_step": CONFIG.frame_step, "center": False}
  rebuilt = embedders.from_description(json.loads(json.dumps(d)), CONFIG)
  x = _signal(SAMPLES)
  np.testing.assert_array_equal(rebuilt.embed(x, _item()),
                                embedder.embed(x, _item()))
  # A relative path becomes absolute in the spec.
  monkeypatch.chdir(os.path.dirname(path))
  relative = embedders.get_embedder("onnx:" + os.path.basename(path), CONFIG)
  assert relative.spec == "onnx:" + os.path.abspath(path)


def test_onnx_path_given_once_as_argument_or_option(encoder):
  path, _ = encoder
  assert embedders.get_embedder("onnx", CONFIG, path=path).path == path
  with pytest.raises(ValueError, match="path is given twice"):
    embedders.get_embedder("onnx:" + path, CONFIG, path=path)
  with pytest.raises(ValueError, match=r"onnx needs a path.*onnx:PATH"):
    embedders.get_embedder("onnx", CONFIG)


def test_onnx_refuses_missing_folders_and_invalid_files(tmp_path):
  with pytest.raises(ValueError, match="no ONNX model file at"):
    embedders.get_embedder("onnx:" + str(tmp_path / "none.onnx"), CONFIG)
  assert "is a folder" in _refusal(str(tmp_path), frame_length=400,
                                   frame_step=160)
  garbage = tmp_path / "garbage.onnx"
  garbage.write_bytes(b"this is not a protobuf \x00\xff" * 8)
  message = _refusal(str(garbage), frame_length=400, frame_step=160)
  assert "is not a valid ONNX model" in message


def test_onnx_refuses_a_rank_1_input(tmp_path):
  path = _identity_model(tmp_path / "rank1.onnx", ["samples"],
                         ["batch", "frames", DIM])
  message = _refusal(path, frame_length=400, frame_step=160)
  assert "has shape [samples] (rank 1" in message
  assert "expected rank 2, [batch, samples]" in message


def test_onnx_refuses_two_inputs_and_a_fixed_batch(tmp_path):
  path = _identity_model(tmp_path / "two.onnx", ["batch", "samples"],
                         ["batch", "frames", DIM], num_inputs=2)
  assert "has 2 inputs ['x0', 'x1']: expected one" in _refusal(
      path, frame_length=400, frame_step=160)
  path = _identity_model(tmp_path / "batch4.onnx", [4, "samples"], None)
  assert "fixed batch of 4" in _refusal(path, frame_length=400, frame_step=160)


def test_onnx_refuses_a_rank_2_output(tmp_path):
  path = _identity_model(tmp_path / "out2.onnx", ["batch", "samples"],
                         ["batch", "samples"])
  message = _refusal(path, frame_length=400, frame_step=160)
  assert "output 'y' has shape [batch, samples] (rank 2)" in message
  assert "expected rank 3, [batch, frames, dim]" in message


def test_onnx_refuses_a_fixed_time_axis(tmp_path):
  path, _ = _conv_encoder(tmp_path / "fixed.onnx", samples=16000)
  onnx_embedder.write_embedder_json(path, DIM, GRID)
  message = _refusal(path)
  assert "no dynamic time axis" in message
  assert "fixed samples axis of 16000" in message


def test_onnx_nan_output_names_the_model_and_the_item(tmp_path):
  path, _ = _conv_encoder(tmp_path / "nan.onnx", scale=float("nan"))
  embedder = embedders.get_embedder("onnx:" + path, CONFIG,
                                    frame_length=CONFIG.frame_length,
                                    frame_step=CONFIG.frame_step)
  item = _item("spk1/utt7")
  with pytest.raises(embedders.EmbedderError) as info:
    embedder.embed(_signal(SAMPLES), item)
  e = info.value
  assert e.reason == base.NON_FINITE
  assert e.item_id == "spk1/utt7" and e.path == item["audio"]
  assert os.path.abspath(path) in e.detail and "non-finite" in e.detail
  assert "'spk1/utt7'" in str(e) and os.path.abspath(path) in str(e)


def test_onnx_run_time_batch_rank_and_failures_name_the_model(tmp_path):
  options = {"frame_length": CONFIG.frame_length,
             "frame_step": CONFIG.frame_step}
  # An output batch of 2 for one waveform.
  path, _ = _conv_encoder(tmp_path / "twice.onnx", duplicate_batch=True)
  twice = embedders.get_embedder("onnx:" + path, CONFIG, **options)
  with pytest.raises(embedders.EmbedderError,
                     match=re.escape(path) + r".*returned a batch of 2"):
    twice.embed(_signal(SAMPLES), _item())
  # An output rank unknown when loading (Squeeze of [batch, samples] is
  # [samples] for a batch of 1): found wrong on the output.
  path = _identity_model(tmp_path / "undeclared.onnx", ["batch", "samples"],
                         None, op="Squeeze")
  undeclared = embedders.get_embedder("onnx:" + path, CONFIG, **options)
  with pytest.raises(embedders.EmbedderError) as info:
    undeclared.embed(_signal(SAMPLES), _item())
  assert info.value.reason == base.WRONG_DIMENSION
  assert path in str(info.value)
  assert "has shape (4321,); expected [batch, frames, dim]" in str(info.value)
  # onnxruntime fails: fewer samples than the Conv's kernel.
  path, _ = _conv_encoder(tmp_path / "conv.onnx")
  conv = embedders.get_embedder("onnx:" + path, CONFIG, **options)
  assert conv.dim == DIM  # the size of the output's fixed last axis
  with pytest.raises(embedders.EmbedderError,
                     match=re.escape(path) + r".*onnxruntime failed on 100 "
                     "samples"):
    conv.embed(_signal(100), _item())


def test_onnx_without_grid_fails_clearly_and_options_fix_it(tmp_path):
  path, weights = _conv_encoder(tmp_path / "bare.onnx", 400, 200,
                                output_shape="none", hide_shape=True)
  message = _refusal(path)
  assert "declares no frame grid (missing ['frame_length', 'frame_step'])" in (
      message)
  assert "bare.e2s_embedder.json" in message and "e2s_embedder.json" in message
  assert "options frame_length and frame_step" in message
  embedder = embedders.get_embedder("onnx:" + path, CONFIG, frame_length=400,
                                    frame_step=200)
  assert embedder.dim is None  # the output's shape is unknown: learnt
  x = _signal(SAMPLES)
  np.testing.assert_allclose(embedder.embed(x, _item()),
                             _expected(x, weights, 400, 200),
                             rtol=1e-5, atol=1e-4)
  assert embedder.dim == DIM
  assert embedder.grid == embedders.Grid(CONFIG.sample_rate, 400, 200)


def test_onnx_options_override_the_json(tmp_path):
  length, step = 400, 320
  path, weights = _conv_encoder(tmp_path / "enc.onnx", length, step)
  # The folder's shared file declares the StftConfig's grid: wrong for it.
  savedmodel.write_embedder_json(str(tmp_path), DIM, GRID)
  from_json = embedders.get_embedder("onnx:" + path, CONFIG)
  assert from_json.grid == GRID
  embedder = embedders.get_embedder("onnx:" + path, CONFIG,
                                    frame_length=length, frame_step=step)
  assert embedder.grid == embedders.Grid(CONFIG.sample_rate, length, step)
  x = _signal(SAMPLES)
  got = embedder.embed(x, _item())
  assert got.shape[0] == embedder.grid.num_frames(SAMPLES)
  np.testing.assert_allclose(got, _expected(x, weights, length, step),
                             rtol=1e-5, atol=1e-4)
  # A dim other than the model's fixed one is refused when loading.
  message = _refusal(path, dim=DIM * 2)
  assert f"dim {DIM * 2} is declared" in message
  assert f"[batch, frames, {DIM}]: dim {DIM}" in message


def test_onnx_prefers_the_per_model_json(tmp_path):
  path_a, _ = _conv_encoder(tmp_path / "a.onnx")
  path_b, _ = _conv_encoder(tmp_path / "b.onnx", 400, 320)
  savedmodel.write_embedder_json(str(tmp_path), DIM, GRID)
  per_model = embedders.Grid(CONFIG.sample_rate, 400, 320)
  written = onnx_embedder.write_embedder_json(path_b, DIM, per_model)
  assert written == str(tmp_path / "b.e2s_embedder.json")
  assert onnx_embedder.embedder_json_path(path_a) == str(
      tmp_path / onnx_embedder.EMBEDDER_JSON)
  assert onnx_embedder.embedder_json_path(path_b) == written
  assert embedders.get_embedder("onnx:" + path_a, CONFIG).grid == GRID
  b = embedders.get_embedder("onnx:" + path_b, CONFIG)
  assert b.grid == per_model
  assert b.embed(_signal(SAMPLES), _item()).shape == (
      per_model.num_frames(SAMPLES), DIM)


def test_onnx_refuses_another_sample_rate_and_bad_json(tmp_path):
  path, _ = _conv_encoder(tmp_path / "enc.onnx")
  json_path = onnx_embedder.write_embedder_json(
      path, DIM, embedders.Grid(8000, CONFIG.frame_length, CONFIG.frame_step))
  message = _refusal(path)
  assert "expects 8000 Hz audio" in message
  assert "StftConfig's sample rate is 16000 Hz" in message
  with open(json_path, "w") as f:
    json.dump({"frame_length": "480", "frame_step": 160}, f)
  with pytest.raises(ValueError, match=re.escape(json_path) +
                     r": 'frame_length' must be an integer, got '480'"):
    embedders.get_embedder("onnx:" + path, CONFIG)
  with open(json_path, "w") as f:
    f.write("[1, 2")
  with pytest.raises(ValueError, match=re.escape(json_path) + ": cannot read"):
    embedders.get_embedder("onnx:" + path, CONFIG)


# ----------------------------------------------------------------------------
# An ONNX encoder at 20 ms through preprocess -> train -> export -> evaluate.


def test_onnx_encoder_through_the_whole_chain(speech_corpus, tmp_path):
  from e2s_tf import alignment  # pylint: disable=g-import-not-at-top
  from e2s_tf import audio as audio_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import evaluate_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import export_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import preprocess_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  grid = base.Grid(CONFIG.sample_rate, 400, 320)
  path, weights = _conv_encoder(tmp_path / "w2v_like.onnx", frame_length=400,
                                frame_step=320)
  onnx_embedder.write_embedder_json(path, DIM, grid)
  data_dir = str(tmp_path / "data")
  info = preprocess_lib.run_preprocess(
      speech_corpus, data_dir, "onnx:" + path, split_by="utterance",
      valid_fraction=0.0, test_fraction=0.25, num_workers=2, progress=False)
  assert info["embedder"]["spec"] == "onnx:" + path
  assert info["embedder"]["grid"] == grid.to_dict()
  assert info["rejected"]["count"] == 0
  assert info["frame_mapping"]["method"] == alignment.LINEAR
  # The records hold what the model computes from each item's audio (as
  # float16, the default storage: within its rounding).
  audio = {it["id"]: audio_lib.load_audio(it["audio"], CONFIG.sample_rate)
           for it in manifest_lib.read_manifest(speech_corpus)}
  for ex in records.read_examples(records.split_files(data_dir, "test")):
    np.testing.assert_allclose(
        ex["embedding"], _expected(audio[ex["id"]], weights, 400, 320),
        rtol=2.0 ** -10, atol=1e-3)

  export_dir = data_testlib.train_and_export("cnn", data_dir, str(tmp_path))
  assert export_lib.read_export_json(export_dir)["embedder"]["spec"] == (
      "onnx:" + path)
  result = evaluate_lib.evaluate(export_dir, data_dir, "test",
                                 str(tmp_path / "eval"), num_figures=0,
                                 num_audio=1, progress=False)
  n = info["splits"]["test"]["num_examples"]
  assert result["model"]["num_items"] == n
  assert np.isfinite(result["model"]["lsd_db"])
  assert result["oracle_griffin_lim"]["lsd_db"] < result["model"]["lsd_db"]
