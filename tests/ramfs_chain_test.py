"""The whole chain on TensorFlow's in-memory file system (`ram://`).

preprocess -> train -> export -> synthesize -> evaluate, with every input and
output on ram://: what a gs:// / s3:// / hdfs:// path goes through too
(`fileio`, tf.io.gfile and TensorFlow's own writers). Nothing may land on the
local disk: the test runs in a fresh working directory (where a `ram://x`
taken for a local path would become `ram:/x`) with Python's temporary folder
moved into it, and both must stay as the test left them.

ram:// is per process: preprocessing's spawned worker processes would start
with an empty one, so with inputs on ram:// preprocessing processes the items
in this process even when asked for two workers (`preprocess_lib`). The
Beam path reads a corpus on ram:// in its in-process DirectRunner, but its
writers have no ram://: it refuses such an out_dir up front.
"""

import json
import math
import os
import tempfile
import uuid

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import beam_preprocess
from e2s_tf import evaluate_lib
from e2s_tf import export_lib
from e2s_tf import fileio
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import synthesize_lib
from e2s_tf import train_lib
from e2s_tf.configs import testing as testing_config
from e2s_tf.preprocessing.errors import PreprocessError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(split_by="utterance", valid_fraction=0.25, test_fraction=0.25,
                seed=0, progress=False)


@pytest.fixture
def ram_root():
  """A fresh folder on ram://, removed after the test.

  ram:// takes a path for a folder when another path starts with it (`x`
  when there is `x.tmp`, and lists `x_y` in `x` as `_y`): the folders of a
  test are named so that none starts with another's name.
  """
  root = f"ram://e2s-chain-{uuid.uuid4().hex[:8]}"
  yield root
  if tf.io.gfile.exists(root):
    tf.io.gfile.rmtree(root)


@pytest.fixture
def no_local_files(tmp_path, monkeypatch):
  """Runs the test in an empty working directory with the temporary folder
  inside it; fails unless both are as the test left them (but for the
  Python files AutoGraph converts functions into)."""
  work, temp = tmp_path / "cwd", tmp_path / "tmp"
  work.mkdir()
  temp.mkdir()
  monkeypatch.chdir(work)
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  yield
  assert sorted(os.listdir(tmp_path)) == ["cwd", "tmp"]
  assert os.listdir(work) == []
  # TensorFlow's AutoGraph writes the code it converts there; nothing else.
  assert [n for n in os.listdir(temp)
          if not n.startswith("__autograph_generated_file")] == []
  # (The repository's own folder may change meanwhile: only this is ours.)
  assert not os.path.exists(os.path.join(ROOT, "ram:"))


def _copy_corpus(manifest: str, folder: str) -> str:
  """The corpus of `manifest` (relative audio paths) copied to `folder`."""
  local = os.path.dirname(manifest)
  with open(manifest, encoding="utf-8") as f:
    items = [json.loads(line) for line in f if line.strip()]
  for it in items:
    assert not os.path.isabs(it["audio"])
    target = os.path.join(folder, it["audio"])
    fileio.makedirs(fileio.dirname(target))
    fileio.copy(os.path.join(local, it["audio"]), target)
  path = os.path.join(folder, "manifest.jsonl")
  fileio.copy(manifest, path)
  return path


def _ram_files(folder: str) -> set[str]:
  return {fileio.relpath(os.path.join(top, name), folder)
          for top, _, names in fileio.walk(folder) for name in names}


def _finite_wav(path: str, sample_rate: int) -> np.ndarray:
  audio, rate = fileio.read_audio(path)
  assert rate == sample_rate and audio.ndim == 1 and audio.size > 0
  assert np.all(np.isfinite(audio))
  return audio


def test_the_whole_chain_runs_on_ram(tiny_corpus_manifest, ram_root,
                                     no_local_files):
  del no_local_files
  manifest = _copy_corpus(tiny_corpus_manifest, f"{ram_root}/corpus")
  data, work = f"{ram_root}/data", f"{ram_root}/work"
  export, evaluation = f"{ram_root}/export", f"{ram_root}/eval"

  # Preprocess: two workers asked, the items processed here (ram:// inputs).
  info = preprocess_lib.run_preprocess(manifest, data, "logmel",
                                       num_workers=2, items_per_shard=1,
                                       **SETTINGS)
  counts = {s: v["num_examples"] for s, v in info["splits"].items()}
  assert counts == {"train": 2, "valid": 1, "test": 1}
  assert info["rejected"]["count"] == 0 and info["num_items"] == 4
  assert info["manifest"] == manifest
  assert records.read_dataset_info(data) == info
  shards = {f for v in info["splits"].values() for f in v["files"]}
  assert _ram_files(data) == shards | {records.DATASET_INFO,
                                       records.REJECTED_REPORT}
  # A re-run finds the complete dataset there and does nothing.
  assert preprocess_lib.run_preprocess(manifest, data, "logmel",
                                       num_workers=1, items_per_shard=1,
                                       **SETTINGS) == info

  # Train two steps, then resume for a third (read back from ram://).
  config = testing_config.get_config("multiscale")
  config.train.num_steps = 2
  config.train.eval_every = 100
  first = train_lib.train(config, data, work, log=lambda *_: None)
  assert first["steps"] == 2 and math.isfinite(first["loss"])
  config.train.num_steps = 3
  assert train_lib.train(config, data, work, log=lambda *_: None)["steps"] == 1
  latest = tf.train.latest_checkpoint(f"{work}/checkpoints")
  assert latest == f"{work}/checkpoints/ckpt-3"
  assert fileio.read_json(f"{work}/dataset_info.json") == info
  assert fileio.read_json(f"{work}/config.json")["train"]["num_steps"] == 3
  assert tf.io.gfile.glob(f"{work}/train/events.out.tfevents.*")

  # Export, twice: the second replaces the first, moved in file by file.
  meta = export_lib.export(work, export, griffin_lim_iterations=4)
  first_files = _ram_files(export)
  assert {export_lib.EXPORT_JSON, "saved_model.pb"} <= first_files
  assert export_lib.export(work, export, griffin_lim_iterations=4) == meta
  assert _ram_files(export) == first_files
  # No temporary or set-aside folder is left beside it.
  assert sorted(fileio.listdir(ram_root)) == ["corpus", "data", "export",
                                              "work"]
  stft = records.stft_config(info)
  module = tf.saved_model.load(export)
  frames = 37
  embeddings = np.random.default_rng(0).normal(
      size=(1, frames, meta["embedding_dim"])).astype(np.float32)
  out = module.signatures["waveform"](
      embeddings=tf.constant(embeddings),
      lengths=tf.constant([frames], tf.int32))
  expected = (frames - 1) * stft.frame_step + stft.frame_length
  assert int(out["audio_lengths"][0]) == expected
  assert out["audio"].shape[1] >= expected
  assert np.all(np.isfinite(out["audio"].numpy()))

  # Synthesize from the test split and from a folder of .npy files.
  result = synthesize_lib.synthesize(export, f"{data}:test",
                                     f"{ram_root}/synth_test", progress=False)
  assert result["errors"] == [] and len(result["written"]) == 1
  _finite_wav(result["written"][0], stft.sample_rate)
  fileio.save_npy(f"{ram_root}/embeddings/a/x.npy", embeddings[0])
  result = synthesize_lib.synthesize(export, f"{ram_root}/embeddings",
                                     f"{ram_root}/synth_npy", progress=False)
  assert result["written"] == [f"{ram_root}/synth_npy/a/x.wav"]
  assert _finite_wav(result["written"][0], stft.sample_rate).size == expected

  # Evaluate: metrics.json, the reports and the media, all on ram://.
  evaluate_lib.evaluate(export, data, "test", evaluation, num_figures=1,
                        num_audio=1, progress=False, aspects=("prosody",))
  metrics = fileio.read_json(f"{evaluation}/{evaluate_lib.METRICS_FILE}")
  assert {"model", "oracle_griffin_lim", "analytic"} <= set(metrics)
  for system in ("model", "oracle_griffin_lim", "analytic"):
    assert metrics[system]["num_items"] == 1
    for name in ("lsd_db", "spectral_convergence", "mcd_db"):
      assert math.isfinite(metrics[system][name]), (system, name)
  assert metrics["oracle_griffin_lim"]["lsd_db"] < metrics["model"]["lsd_db"]
  [item_id] = [row["id"] for row in metrics["model"]["items"]]
  written = _ram_files(evaluation)
  assert {evaluate_lib.METRICS_FILE, evaluate_lib.PROFILE_FILE,
          evaluate_lib.REPORT_FILE, "report.html",
          f"figures/{item_id}.png", f"audio/model/{item_id}.wav",
          f"audio/reference/{item_id}.wav",
          f"spectrograms/model/{item_id}.png"} <= written
  assert fileio.read_bytes(
      f"{evaluation}/figures/{item_id}.png").startswith(b"\x89PNG")
  _finite_wav(f"{evaluation}/audio/model/{item_id}.wav", stft.sample_rate)
  assert not [f for f in written if ".tmp-" in f]


def test_beam_reads_ram_inputs_in_process(tiny_corpus_manifest, ram_root,
                                          tmp_path):
  """The Beam DoFns read the audio through TensorFlow's file systems: a
  corpus on ram:// (seen by the in-process DirectRunner), into a local
  out_dir (Beam's writers have no ram://)."""
  manifest = _copy_corpus(tiny_corpus_manifest, f"{ram_root}/corpus")
  out = str(tmp_path / "beam")
  info = beam_preprocess.run_beam_preprocess(manifest, out, "logmel",
                                             num_workers=1, **SETTINGS)
  assert {s: v["num_examples"] for s, v in info["splits"].items()} == {
      "train": 2, "valid": 1, "test": 1}
  assert info["rejected"]["count"] == 0 and info["manifest"] == manifest
  assert records.read_dataset_info(out) == info


def test_beam_refuses_an_out_dir_beam_cannot_write(tiny_corpus_manifest,
                                                   ram_root):
  with pytest.raises(PreprocessError, match="Beam has no file system"):
    beam_preprocess.run_beam_preprocess(tiny_corpus_manifest,
                                        f"{ram_root}/data", "logmel",
                                        num_workers=1, **SETTINGS)
  assert not tf.io.gfile.exists(ram_root)
