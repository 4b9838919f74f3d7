"""Writing and loading exports: what is replaced, full disks, foreign models."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import export_lib
from e2s_tf import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(tiny_export):
  """The training workdir the session's tiny export was made from."""
  path = os.path.join(os.path.dirname(tiny_export), "work")
  assert os.path.isdir(path), "tests/conftest.py: tiny_export trains in work/"
  return path


def _digest(folder):
  """{relative path: sha256} of every file under `folder`."""
  out = {}
  for directory, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


def _leftovers(parent, name):
  """Entries of `parent` made by an export into `parent/name` but itself."""
  return sorted(e for e in os.listdir(parent)
                if e.startswith(f".{name}.") and e != f".{name}.lock")


def test_export_refuses_a_folder_that_is_not_an_export(workdir, tmp_path):
  """A corpus folder given as --export_dir stays as it was."""
  target = tmp_path / "corpus"
  (target / "wav").mkdir(parents=True)
  (target / "manifest.jsonl").write_text('{"id": "a", "audio": "a.wav"}\n')
  (target / "wav" / "a.wav").write_bytes(b"RIFF....")
  before = _digest(target)
  with pytest.raises(fileio.FolderNotReplaceable,
                     match=r"corpus exists and is not an output of this "
                     r"program .*--overwrite"):
    export_lib.export(workdir, str(target), griffin_lim_iterations=2)
  assert _digest(target) == before
  assert _leftovers(tmp_path, "corpus") == []
  # Asked for explicitly, it is replaced.
  export_lib.export(workdir, str(target), griffin_lim_iterations=2,
                    overwrite=True)
  assert not (target / "manifest.jsonl").exists()
  assert export_lib.LoadedDecoder(str(target)).dim == 64
  assert _leftovers(tmp_path, "corpus") == []


def test_export_replaces_a_previous_export_and_nothing_else(
    tiny_export, workdir, tmp_path):
  target = tmp_path / "export"
  shutil.copytree(tiny_export, target)
  # Someone's folder that happens to be called like the old temporary one.
  (tmp_path / "export.tmp").mkdir()
  (tmp_path / "export.tmp" / "keep.txt").write_text("not the exporter's")
  meta = export_lib.export(workdir, str(target), griffin_lim_iterations=2)
  assert meta["griffin_lim"]["iterations"] == 2
  with open(target / export_lib.EXPORT_JSON) as f:
    assert json.load(f)["griffin_lim"]["iterations"] == 2
  assert (tmp_path / "export.tmp" / "keep.txt").read_text() == (
      "not the exporter's")
  assert _leftovers(tmp_path, "export") == []
  # An export is readable by others like any folder tf.saved_model.save
  # makes (the temporary folder it was written in was private).
  assert os.stat(target).st_mode & 0o055 == 0o055 & ~_umask()


def _umask():
  mask = os.umask(0o22)
  os.umask(mask)
  return mask


def test_export_refuses_a_second_run_and_the_workdir(workdir, tmp_path):
  target = tmp_path / "export"
  with fileio.FolderLock(str(tmp_path / ".export.lock"), "export"):
    with pytest.raises(fileio.FolderInUse, match="in use by another run"):
      export_lib.export(workdir, str(target), griffin_lim_iterations=2)
  assert not target.exists() and _leftovers(tmp_path, "export") == []
  # The workdir, or a folder holding it, is never replaced.
  parent = os.path.dirname(workdir)
  before = _digest(parent)
  for folder in (workdir, parent):
    with pytest.raises(fileio.FolderNotReplaceable, match="holds .*work"):
      export_lib.export(workdir, folder, overwrite=True)
  assert _digest(parent) == before


def test_full_disk_keeps_the_previous_export(tiny_export, workdir, tmp_path):
  size = sum(os.path.getsize(os.path.join(d, n))
             for d, _, names in os.walk(tiny_export) for n in names)
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", f"size={size * 3 // 2}", "tmpfs",
       str(disk)], capture_output=True, text=True, check=False)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
  try:
    target = disk / "export"
    shutil.copytree(tiny_export, target)  # the previous export
    before = _digest(target)
    run = _run("e2s_tf.export", f"--workdir={workdir}",
               f"--export_dir={target}", "--griffin_lim_iterations=2")
    assert run.returncode == 1, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last == f"export: error: no space left on {target}"
    assert "Traceback" not in run.stderr
    assert _digest(target) == before
    assert _leftovers(disk, "export") == []
  finally:
    subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------ foreign models


class _Foreign(tf.Module):
  """Not a decoder: a SavedModel with some other functions."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def serve(self, x):
    return {"y": 2.0 * x}


def _foreign(tmp_path, tiny_export, module, signatures):
  path = str(tmp_path / "foreign")
  tf.saved_model.save(module, path, signatures=signatures)
  shutil.copy(os.path.join(tiny_export, export_lib.EXPORT_JSON), path)
  return path


def _endpoint(inputs, outputs):
  """A tf.function of the given input specs returning the named outputs."""

  @tf.function(input_signature=inputs)
  def fn(*args):
    x = tf.reduce_sum(tf.cast(args[0], tf.float32))
    return {name: tf.cast(tf.fill([2] * rank, x), dtype)
            for name, (dtype, rank) in outputs.items()}
  return fn


EMB = tf.TensorSpec([None, None, 64], tf.float32, name="embeddings")
LEN = tf.TensorSpec([None], tf.int32, name="lengths")
GOOD_OUT = {"spectrogram": {"log_stft": (tf.float32, 3)},
            "waveform": {"audio": (tf.float32, 2),
                         "audio_lengths": (tf.int32, 1)}}


@pytest.mark.parametrize("inputs,outputs,message", [
    (None, None, r"has no endpoint 'spectrogram' \(its signatures: "
     r"serving_default\)"),
    ([EMB], GOOD_OUT,
     r"endpoint 'spectrogram' takes \(embeddings\), expected \(embeddings, "
     r"lengths\)"),
    ([tf.TensorSpec([None, None, 3], tf.float32, name="embeddings"), LEN],
     GOOD_OUT, r"endpoint 'spectrogram' input 'embeddings' is float32 "
     r"\[None,None,3\], expected float32 \[None,None,64\]"),
    ([EMB, tf.TensorSpec([None], tf.float32, name="lengths")], GOOD_OUT,
     r"input 'lengths' is float32 \[None\], expected int32 \[None\]"),
    ([EMB, LEN], {"spectrogram": {"x": (tf.float32, 3)},
                  "waveform": GOOD_OUT["waveform"]},
     r"endpoint 'spectrogram' gives no 'log_stft' \(it gives x\)"),
    ([EMB, LEN], {"spectrogram": {"log_stft": (tf.float32, 2)},
                  "waveform": GOOD_OUT["waveform"]},
     r"output 'log_stft' is float32 \[2,2\], expected float32 of rank 3 "
     r"with 257 bins"),
], ids=["other_functions", "missing_input", "wrong_dim", "wrong_dtype",
        "missing_output", "wrong_rank"])
def test_a_foreign_savedmodel_is_refused_before_it_is_loaded(
    tiny_export, tmp_path, inputs, outputs, message):
  module = _Foreign()
  if inputs is None:
    signatures = {"serving_default": module.serve}
  else:
    module.spectrogram = _endpoint(inputs, outputs["spectrogram"])
    module.waveform = _endpoint(inputs, outputs["waveform"])
    signatures = {"spectrogram": module.spectrogram,
                  "waveform": module.waveform}
  path = _foreign(tmp_path, tiny_export, module, signatures)
  with pytest.raises(export_lib.ExportError, match=message):
    export_lib.LoadedDecoder(path)


def test_export_json_without_a_savedmodel_or_fields(tiny_export, tmp_path):
  shutil.copy(os.path.join(tiny_export, export_lib.EXPORT_JSON), tmp_path)
  with pytest.raises(export_lib.ExportError, match="no saved_model.pb"):
    export_lib.LoadedDecoder(str(tmp_path))
  (tmp_path / export_lib.EXPORT_JSON).write_text('{"stft": {}}')
  with pytest.raises(export_lib.ExportError, match="not a valid export"):
    export_lib.LoadedDecoder(str(tmp_path))


def test_synthesize_with_a_foreign_export_fails_clearly(
    tiny_export, tmp_path):
  """The real program: one line naming what is wrong, exit status 1."""
  path = _foreign(tmp_path, tiny_export, _Foreign(),
                  {"serving_default": _Foreign().serve})
  np.save(tmp_path / "x.npy", np.zeros((20, 64), np.float32))
  run = _run("e2s_tf.synthesize", f"--model={path}",
             f"--input={tmp_path / 'x.npy'}", f"--out_dir={tmp_path / 'out'}")
  assert run.returncode == 1
  assert run.stderr.strip().splitlines()[-1] == (
      f"synthesize: error: {path} is not an e2s_tf export (wrong "
      f"{export_lib.EXPORT_JSON}?): it has no endpoint 'spectrogram' (its "
      "signatures: serving_default)")
  assert "Traceback" not in run.stderr
  assert not (tmp_path / "out").exists()
