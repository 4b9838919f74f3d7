"""Synthesis from .npy files, folders and DATA_DIR:split, with bad inputs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import fileio
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import synthesize_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
CONFIG = spectral.StftConfig()


def write_relabelled_split(data_dir, out_dir, ids, split="test"):
  """A copy of `data_dir` whose `split` holds its items under `ids`.

  The records are real ones of `data_dir` (cycled), rewritten with
  `records.serialize_example` under the given ids, in one shard, with
  dataset_info.json updated as preprocess writes it: how an old or foreign
  dataset with ids that are not valid looks.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  info = records.read_dataset_info(data_dir)
  source = [records.parse_example(raw, with_audio=True) for raw in
            records.iterate_records(records.split_files(data_dir, split))]
  os.makedirs(out_dir, exist_ok=True)
  name = records.shard_name(split, 0, 1)
  with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
    for k, item_id in enumerate(ids):
      ex = source[k % len(source)]
      writer.write(records.serialize_example(
          item_id, ex["embedding"].numpy(), ex["audio"].numpy(),
          int(ex["length"]), ex["speaker"].numpy().decode(),
          int(ex["speaker_index"]), embedding_dtype="float32"))
  info["splits"][split].update(num_examples=len(ids), num_shards=1,
                               files=[name])
  for other in set(info["splits"]) - {split}:
    for f in info["splits"][other]["files"]:
      shutil.copy(os.path.join(data_dir, f), out_dir)
  with open(os.path.join(out_dir, records.DATASET_INFO), "w") as f:
    json.dump(info, f, indent=1)
  return str(out_dir)


def _files(root):
  """Every file under `root`, relative, sorted."""
  return sorted(os.path.relpath(os.path.join(d, n), root)
                for d, _, names in os.walk(root) for n in names)


def _embeddings(speech_data, n=3):
  return [(ex["id"], ex["embedding"]) for ex in records.read_examples(
      records.split_files(speech_data, "test"))][:n]


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
  # they were batched, up to float32 rounding that Griffin-Lim's iterations
  # grow (measured: 55 dB SNR, at most 0.4 % of the peak; a transposed or
  # misnormalised input gives about 0 dB).
  a, _ = sf.read(tmp_path / "a" / "x.wav", dtype="int16")
  b, _ = sf.read(tmp_path / "b" / f"{item_id}.wav", dtype="int16")
  assert a.shape == b.shape
  a, b = a.astype(float), b.astype(float)
  snr_db = 10 * np.log10(np.sum(a ** 2) / max(np.sum((a - b) ** 2), 1e-9))
  assert snr_db > 40.0
  assert np.abs(a - b).max() <= 0.01 * np.abs(a).max()


def test_record_ids_never_write_outside_out_dir(speech_data, tiny_export,
                                               tmp_path):
  """Ids of old records are not trusted: bad ones are reported, not written."""
  escape = tmp_path / "escape"
  ids = ["../../escape", str(escape), "a/b", "ok", "ok", "x y"]
  data = write_relabelled_split(speech_data, tmp_path / "data", ids)
  out = tmp_path / "deep" / "out"
  result = synthesize_lib.synthesize(tiny_export, f"{data}:test", str(out),
                                     batch_size=4, progress=False)
  assert sorted(result["written"]) == [
      str(out / "a" / "b.wav"), str(out / "ok-2.wav"), str(out / "ok.wav")]
  assert [f for f in _files(out) if f.endswith(".wav")] == [
      "a/b.wav", "ok-2.wav", "ok.wav"]
  errors = "\n".join(result["errors"])
  for bad in ids[:2] + ["x y"]:
    assert f"invalid item id {bad!r}" in errors
  assert len(result["errors"]) == 3
  assert not os.path.exists(f"{escape}.wav")
  assert _files(tmp_path / "deep") == sorted(
      ["out/.e2s.lock", "out/a/b.wav", "out/ok.wav", "out/ok-2.wav"])


def test_cli_reports_errors_and_exit_code(tiny_export, speech_data, tmp_path):
  """One run of the program on a folder with good, colliding and bad files."""
  src = tmp_path / "npy"
  for sub in ("a", "b"):
    (src / sub).mkdir(parents=True)
  item_id, emb = _embeddings(speech_data, 1)[0]
  np.save(src / "good.npy", emb)
  np.save(src / "a" / "x.npy", emb)
  np.save(src / "b" / "x.npy", emb[:40])
  np.save(src / "my take (2).npy", emb)
  np.save(src / "bad.npy", emb[:, :3])
  np.savez(src / "archive.npz", emb=emb)
  os.replace(src / "archive.npz", src / "renamed.npy")
  np.save(src / "complex.npy", emb.astype(np.complex64))
  np.save(src / "inf.npy", np.full_like(emb, 1e300, dtype=np.float64))
  run = subprocess.run(
      [sys.executable, "-m", "e2s_tf.synthesize", f"--model={tiny_export}",
       f"--input={src}", f"--out_dir={tmp_path / 'out'}"], cwd=ROOT, env=ENV,
      capture_output=True, text=True, timeout=300)
  assert run.returncode == 1, run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  errors = [l for l in run.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 4, errors
  for name, reason in [("bad.npy", "embedding dimension 3"),
                       ("renamed.npy", ".npz archive"),
                       ("complex.npy", "real numbers, got dtype complex64"),
                       ("inf.npy", "non-finite")]:
    assert any(str(src / name) in l and reason in l for l in errors), (
        name, errors)
  wavs = [f for f in _files(tmp_path / "out") if f.endswith(".wav")]
  assert wavs == ["a/x.wav", "b/x.wav", "good.wav", "my_take_2_.wav"]
  assert f"wrote {len(wavs)} WAV files" in run.stdout
  assert "; 4 failed" in run.stdout
  # a/x and b/x are two files: each its own audio.
  a, _ = sf.read(tmp_path / "out" / "a" / "x.wav", dtype="int16")
  b, _ = sf.read(tmp_path / "out" / "b" / "x.wav", dtype="int16")
  assert a.shape == (CONFIG.num_samples(emb.shape[0]),)
  assert b.shape == (CONFIG.num_samples(40),)


def test_cli_names_a_truncated_shard(tiny_export, speech_data, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(speech_data, data)
  shard = records.split_files(str(data), "test")[0]
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)
  run = subprocess.run(
      [sys.executable, "-m", "e2s_tf.synthesize", f"--model={tiny_export}",
       f"--input={data}:test", f"--out_dir={tmp_path / 'out'}"], cwd=ROOT,
      env=ENV, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith(f"synthesize: error: {shard} is truncated or "
                         "corrupted (")
  assert "re-run e2s_tf.preprocess" in last
  assert "Traceback" not in run.stderr and "DataLossError" not in run.stderr


def test_an_out_dir_in_use_is_refused(speech_data, tiny_export, tmp_path):
  out = tmp_path / "out"
  item_id, emb = _embeddings(speech_data, 1)[0]
  np.save(tmp_path / "x.npy", emb)
  with fileio.FolderLock(str(out), "synthesize"):
    with pytest.raises(fileio.FolderInUse, match=f"pid {os.getpid()}"):
      synthesize_lib.synthesize(tiny_export, str(tmp_path / "x.npy"),
                                str(out), progress=False)
  assert os.listdir(out) == [fileio.LOCK_FILE]
