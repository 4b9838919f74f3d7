"""Synthesis from .npy files, folders and DATA_DIR:split, with bad inputs."""

import os
import subprocess
import sys

import numpy as np
import soundfile as sf

from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import synthesize_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = spectral.StftConfig()


def _embeddings(speech_data, n=3):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = []
  for raw in tf.data.TFRecordDataset(records.split_files(speech_data, "test")):
    ex = records.parse_example(raw)
    out.append((ex["id"].numpy().decode(), ex["embedding"].numpy()))
  return out[:n]


def test_folder_with_bad_files_writes_the_good_ones(speech_data, tiny_export,
                                                    tmp_path):
  src = tmp_path / "npy"
  src.mkdir()
  good = _embeddings(speech_data)
  for item_id, emb in good:
    np.save(src / f"{item_id}.npy", emb)
  np.save(src / "transposed.npy", good[0][1].T)
  np.save(src / "wrong_dim.npy", good[0][1][:, :10])
  nan = good[0][1].copy()
  nan[2, 2] = np.nan
  np.save(src / "nan.npy", nan)
  np.save(src / "empty.npy", np.zeros((0, 64), np.float32))
  (src / "broken.npy").write_bytes(b"not numpy")
  out = tmp_path / "wav"
  result = synthesize_lib.synthesize(tiny_export, str(src), str(out),
                                     batch_size=2, progress=False)
  names = sorted(os.path.basename(p) for p in result["written"])
  assert names == sorted(f"{i}.wav" for i, _ in good)
  errors = "\n".join(result["errors"])
  for bad in ("transposed.npy", "wrong_dim.npy", "nan.npy", "empty.npy",
              "broken.npy"):
    assert bad in errors
  assert "--transpose" in errors and "NaN" in errors
  for item_id, emb in good:
    audio, sr = sf.read(out / f"{item_id}.wav", dtype="int16")
    assert sr == CONFIG.sample_rate
    assert audio.shape == (CONFIG.num_samples(emb.shape[0]),)
    assert np.abs(audio).max() > 0


def test_transposed_single_file_and_split_input(speech_data, tiny_export,
                                                tmp_path):
  item_id, emb = _embeddings(speech_data, 1)[0]
  np.save(tmp_path / "x.npy", emb.T)
  r = synthesize_lib.synthesize(tiny_export, str(tmp_path / "x.npy"),
                                str(tmp_path / "a"), transpose=True,
                                progress=False)
  assert not r["errors"] and len(r["written"]) == 1
  r2 = synthesize_lib.synthesize(tiny_export, f"{speech_data}:test",
                                 str(tmp_path / "b"), progress=False)
  info = records.read_dataset_info(speech_data)
  assert len(r2["written"]) == info["splits"]["test"]["num_examples"]
  # Same embeddings, same audio, whichever way they came in and however
  # they were batched (up to float32 rounding that Griffin-Lim's iterations
  # grow to a few LSBs of 16-bit audio).
  a, _ = sf.read(tmp_path / "a" / "x.wav", dtype="int16")
  b, _ = sf.read(tmp_path / "b" / f"{item_id}.wav", dtype="int16")
  assert a.shape == b.shape
  assert np.abs(a.astype(int) - b.astype(int)).max() <= 16


def test_cli_reports_errors_and_exit_code(tiny_export, speech_data, tmp_path):
  src = tmp_path / "npy"
  src.mkdir()
  item_id, emb = _embeddings(speech_data, 1)[0]
  np.save(src / "good.npy", emb)
  np.save(src / "bad.npy", emb[:, :3])
  run = subprocess.run(
      [sys.executable, "-m", "e2s_tf.synthesize", f"--model={tiny_export}",
       f"--input={src}", f"--out_dir={tmp_path / 'out'}"], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  assert "bad.npy" in run.stderr and "wrote 1 WAV" in run.stdout
  assert os.path.exists(tmp_path / "out" / "good.wav")
