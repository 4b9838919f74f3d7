"""Preprocessing end to end on a tiny real espeak-ng corpus."""

import errno
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from e2s_tf import audio as audio_lib
from e2s_tf import corpus
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.benchmarks import memory as bench_memory
from e2s_tf.preprocessing import output
from e2s_tf.preprocessing import splits
from e2s_tf.preprocessing.errors import PreprocessError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = spectral.StftConfig()


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  out = tmp_path_factory.mktemp("corpus")
  manifest = corpus.make_corpus(str(out), speakers=3, utterances=2, seed=0,
                                progress=False)
  return manifest


def _assert_same_log_stft(stored, reference):
  """Equal to float32 precision: the logs where |X| > 1e-3, the magnitudes
  everywhere to 1e-6 of the frame's norm (float32 FFT rounding scales with
  the frame's energy, which moves the log of bins near the 1e-5 floor)."""
  assert stored.shape == reference.shape
  loud = reference > np.log(1e-3)
  np.testing.assert_allclose(stored[loud], reference[loud], atol=2e-3)
  err = np.abs(np.exp(stored) - np.exp(reference))
  frame_norm = np.linalg.norm(np.exp(reference), axis=1, keepdims=True)
  assert np.all(err <= 1e-6 * (1.0 + frame_norm)), err.max()


def _read_split(data_dir, split):
  info = records.read_dataset_info(data_dir)
  return {ex["id"]: ex for ex in records.read_examples(
      records.split_files(data_dir, split, info), with_audio=True,
      stft_config=records.stft_config(info))}


@pytest.fixture(scope="module")
def logmel_data(tiny_corpus, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tfrecords"))
  info = preprocess_lib.run_preprocess(
      tiny_corpus, out, "logmel", split_by="speaker", valid_fraction=0.34,
      test_fraction=0.34, seed=0, num_workers=1, progress=False)
  return out, info


def test_speaker_split_holds_out_whole_speakers(logmel_data):
  data_dir, info = logmel_data
  speakers = {}
  for split in records.SPLITS:
    for ex in _read_split(data_dir, split).values():
      speakers.setdefault(ex["speaker"], set()).add(split)
  assert len(speakers) == 3
  assert all(len(s) == 1 for s in speakers.values()), speakers
  assert info["speakers"] == sorted(speakers)
  assert {s: info["splits"][s]["num_examples"] for s in records.SPLITS} == {
      "train": 2, "valid": 2, "test": 2}


def test_pipeline_log_stft_equals_numpy_recomputation(logmel_data, tiny_corpus):
  data_dir, info = logmel_data
  assert info["stft"] == CONFIG.to_dict()
  items = {it["id"]: it for it in manifest_lib.read_manifest(tiny_corpus)}
  for split in records.SPLITS:
    for item_id, ex in _read_split(data_dir, split).items():
      t = int(ex["length"])
      assert ex["log_stft"].shape == (t, CONFIG.num_bins)
      assert ex["embedding"].shape == (t, 64)
      assert ex["audio"].shape == (CONFIG.num_samples(t),)
      _assert_same_log_stft(ex["log_stft"], spectral.numpy_log_stft(ex["audio"]))
      # What was said travels with the item (the content judge's targets).
      assert ex["text"] == items[item_id]["text"] and ex["text"]
      # The stored audio is the decoded (16-bit) file, without loss, cut to
      # the samples the frames cover.
      source = audio_lib.load_audio(items[item_id]["audio"], CONFIG.sample_rate)
      assert t == CONFIG.num_frames(source.shape[0])
      np.testing.assert_array_equal(ex["audio"], source[:ex["audio"].shape[0]])


def test_statistics_are_those_of_the_train_split(logmel_data):
  data_dir, info = logmel_data
  train = _read_split(data_dir, "train")
  stft = np.concatenate([e["log_stft"] for e in train.values()]).astype(
      np.float64)
  emb = np.concatenate([e["embedding"] for e in train.values()]).astype(
      np.float64)
  stats = info["stats"]
  np.testing.assert_allclose(stats["log_stft_mean"], stft.mean(0), atol=1e-4)
  np.testing.assert_allclose(stats["log_stft_std"],
                             np.maximum(stft.std(0), 1e-3), atol=1e-3)
  np.testing.assert_allclose(stats["embedding_mean"], emb.mean(0), atol=1e-4)
  np.testing.assert_allclose(stats["embedding_std"],
                             np.maximum(emb.std(0), 1e-3), atol=1e-3)
  lengths = sorted(int(e["length"]) for e in train.values())
  q = info["length_quantiles"]["train"]
  assert q["0.0"] == lengths[0] and q["1.0"] == lengths[-1]
  assert info["splits"]["train"]["num_frames"] == sum(lengths)
  assert info["embedder"]["name"] == "logmel" and info["embedder"]["dim"] == 64
  assert info["rejected"]["count"] == 0 and info["trimmed"]["count"] == 0


def test_rerun_skips_and_changed_settings_need_overwrite(logmel_data,
                                                         tiny_corpus):
  data_dir, info = logmel_data
  shard = os.path.join(data_dir, info["splits"]["train"]["files"][0])
  before = os.stat(shard).st_mtime_ns
  again = preprocess_lib.run_preprocess(
      tiny_corpus, data_dir, "logmel", split_by="speaker", valid_fraction=0.34,
      test_fraction=0.34, seed=0, num_workers=1, progress=False)
  assert again == info
  assert os.stat(shard).st_mtime_ns == before
  with pytest.raises(PreprocessError, match="overwrite"):
    preprocess_lib.run_preprocess(tiny_corpus, data_dir, "mfcc",
                                  num_workers=1, progress=False,
                                  valid_fraction=0.34, test_fraction=0.34)


def test_interrupted_run_leaves_nothing_that_looks_whole(tiny_corpus, tmp_path):
  out = tmp_path / "data"
  out.mkdir()
  # What an interrupted run leaves: a temporary shard and no dataset_info.
  (out / "train-00000-of-00001.tfrecord.tmp").write_bytes(b"partial")
  (out / "train-00000-of-00009.tfrecord").write_bytes(b"stale")
  preprocess_lib.run_preprocess(tiny_corpus, str(out), "mfcc",
                                split_by="utterance", valid_fraction=0.2,
                                test_fraction=0.2, num_workers=1,
                                progress=False)
  names = sorted(os.listdir(out))
  assert not [n for n in names if n.endswith(".tmp")]
  assert "train-00000-of-00009.tfrecord" not in names
  info = records.read_dataset_info(str(out))
  listed = {f for s in info["splits"].values() for f in s["files"]}
  assert listed == {n for n in names if n.endswith(".tfrecord")}
  assert info["embedder"]["name"] == "mfcc"


def _write_npy_case(tmp_path, tiny_corpus):
  """A manifest of good npy items plus one bad item of every kind."""
  from e2s_tf import embedders  # pylint: disable=g-import-not-at-top
  logmel = embedders.get_embedder("logmel", CONFIG)
  items = manifest_lib.read_manifest(tiny_corpus)
  lines, expected = [], {}
  for it in items:
    wav = audio_lib.load_audio(it["audio"], CONFIG.sample_rate)
    emb = logmel.embed(wav, it)
    path = tmp_path / f"{it['id']}.npy"
    np.save(path, emb)
    lines.append(dict(id=it["id"], audio=it["audio"], speaker=it["speaker"],
                      embedding=str(path)))
  good = items[0]
  wav = audio_lib.load_audio(good["audio"], CONFIG.sample_rate)
  emb = logmel.embed(wav, good)

  def add(item_id, reason, audio=None, embedding=None):
    p = tmp_path / f"{item_id}.npy"
    if embedding is not None:
      np.save(p, embedding)
    lines.append(dict(id=item_id, audio=audio or good["audio"], speaker="x",
                      embedding=str(p)))
    expected[item_id] = reason

  add("missing", "missing_audio", audio=str(tmp_path / "nope.wav"),
      embedding=emb)
  (tmp_path / "garbage.wav").write_bytes(b"RIFF....not audio at all" * 10)
  add("unreadable", "unreadable_audio", audio=str(tmp_path / "garbage.wav"),
      embedding=emb)
  sf.write(tmp_path / "empty.wav", np.zeros(0, np.int16), 16000)
  add("empty", "empty_audio", audio=str(tmp_path / "empty.wav"), embedding=emb)
  sf.write(tmp_path / "short.wav", np.ones(300, np.int16) * 100, 16000)
  add("short", "too_short", audio=str(tmp_path / "short.wav"), embedding=emb)
  bad = emb.copy()
  bad[3, 5] = np.nan
  add("nan_embedding", "non_finite", embedding=bad)
  nan_wav = wav.copy()
  nan_wav[100] = np.inf
  sf.write(tmp_path / "inf.wav", nan_wav, 16000, subtype="FLOAT")
  add("inf_audio", "non_finite", audio=str(tmp_path / "inf.wav"),
      embedding=emb)
  add("wrong_dim", "wrong_dimension", embedding=emb[:, :32])
  add("mismatch", "length_mismatch",
      embedding=np.concatenate([emb, emb[:5]]))
  # Within tolerance: trimmed and counted, not rejected.
  lines.append(dict(id="trim2", audio=good["audio"], speaker=good["speaker"],
                    embedding=str(tmp_path / "trim2.npy")))
  np.save(tmp_path / "trim2.npy", np.concatenate([emb, emb[:2]]))
  manifest = tmp_path / "manifest.jsonl"
  manifest.write_text("".join(json.dumps(l) + "\n" for l in lines))
  return str(manifest), expected, [it["id"] for it in items] + ["trim2"]


def test_rejected_report_catches_every_bad_item(tiny_corpus, tmp_path):
  manifest, expected, good_ids = _write_npy_case(tmp_path, tiny_corpus)
  out = str(tmp_path / "out")
  info = preprocess_lib.run_preprocess(
      manifest, out, "npy", split_by="utterance", valid_fraction=0.0,
      test_fraction=0.0, frame_tolerance=3, num_workers=2, progress=False,
      max_rejected_fraction=0.9)
  with open(os.path.join(out, records.REJECTED_REPORT)) as f:
    report = {r["id"]: r for r in map(json.loads, f)}
  assert {k: v["reason"] for k, v in report.items()} == expected
  assert all(v["detail"] for v in report.values())
  assert info["rejected"]["count"] == len(expected)
  assert sum(info["rejected"]["by_reason"].values()) == len(expected)
  assert info["trimmed"] == {"count": 1, "frames": 2}
  stored = _read_split(out, "train")
  assert sorted(stored) == sorted(good_ids)
  assert stored["trim2"]["length"] == stored[good_ids[0]]["length"]


def test_fails_when_too_much_is_rejected(tiny_corpus, tmp_path):
  manifest, expected, _ = _write_npy_case(tmp_path, tiny_corpus)
  out = tmp_path / "out"
  with pytest.raises(PreprocessError, match="rejected"):
    preprocess_lib.run_preprocess(
        manifest, str(out), "npy", split_by="utterance", valid_fraction=0.0,
        test_fraction=0.0, num_workers=1, progress=False,
        max_rejected_fraction=0.2)
  # The report is there, and no shard looks complete.
  assert os.path.exists(out / records.REJECTED_REPORT)
  assert not glob.glob(str(out / "*.tfrecord")) and not os.path.exists(
      out / records.DATASET_INFO)


def _save_embedder(path):
  """A real SavedModel embedder: frames on the grid, a fixed projection."""
  from e2s_tf.embedders import savedmodel  # pylint: disable=g-import-not-at-top
  proj = np.random.default_rng(0).standard_normal(
      (CONFIG.frame_length, 16)).astype(np.float32) * 0.05

  class Embed(tf.Module):

    def __init__(self):
      super().__init__()
      self.proj = tf.Variable(proj)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def __call__(self, waveform):
      frames = tf.signal.frame(waveform, CONFIG.frame_length, CONFIG.frame_step)
      return {"embedding": tf.tanh(tf.einsum("btn,nd->btd", frames,
                                             self.proj))}

  module = Embed()
  tf.saved_model.save(module, path,
                      signatures={"serving_default": module.__call__})
  savedmodel.write_embedder_json(path, 16, _grid())
  return proj


def _grid():
  from e2s_tf.embedders import base  # pylint: disable=g-import-not-at-top
  return base.Grid.from_stft(CONFIG)


def test_preprocess_through_a_savedmodel_embedder(tiny_corpus, tmp_path):
  path = str(tmp_path / "embedder")
  proj = _save_embedder(path)
  out = str(tmp_path / "out")
  info = preprocess_lib.run_preprocess(
      tiny_corpus, out, "savedmodel:" + path, split_by="utterance",
      valid_fraction=0.0, test_fraction=0.0, num_workers=1, progress=False)
  assert info["embedder"]["dim"] == 16
  for ex in _read_split(out, "train").values():
    a = ex["audio"]
    t = int(ex["length"])
    idx = (np.arange(t)[:, None] * CONFIG.frame_step +
           np.arange(CONFIG.frame_length)[None])
    # Stored as float16 (the default): within its rounding of the model's.
    np.testing.assert_allclose(ex["embedding"], np.tanh(a[idx] @ proj),
                               rtol=2.0 ** -11, atol=1e-4)


# ----------------------------------------------------------------------------
# What a failed, interrupted, concurrent or full-disk run leaves.

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _cli(*args, **kwargs):
  return subprocess.run([sys.executable, "-m", "e2s_tf.preprocess", *args],
                        cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=300, **kwargs)


def _error_line(run):
  """The run's one error line; fails unless it is exit 1, one line, no
  traceback."""
  assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
  assert "Traceback" not in run.stderr, run.stderr[-2000:]
  errors = [l for l in run.stderr.splitlines() if "error" in l.lower()
            and "cuda" not in l.lower() and not l.startswith("E0000")]
  assert len(errors) == 1 and errors[0].startswith("preprocess: error: "), (
      run.stderr[-2000:])
  return errors[0]


def _snapshot(folder):
  """{name: bytes} of the files in `folder` but the run lock's."""
  return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))
          if n != fileio.LOCK_FILE and (folder / n).is_file()}


def _write_lines(path, items):
  path.write_text("".join(json.dumps(it) + "\n" for it in items))
  return str(path)


def _count_records(data_dir):
  info = records.read_dataset_info(str(data_dir))
  return sum(1 for s in info["splits"]
             for _ in records.iterate_records(records.split_files(
                 str(data_dir), s, info)))


def test_failed_runs_leave_the_previous_dataset_and_other_files_intact(
    tiny_corpus, tmp_path):
  out = tmp_path / "data"
  out.mkdir()
  # Not this program's: never deleted, whatever the run does.
  (out / "notes.tfrecord").write_bytes(b"someone else's records")
  (out / "train-1-of-2.tfrecord").write_bytes(b"not a shard name of ours")
  (out / "README.txt").write_text("mine")
  settings = dict(split_by="utterance", valid_fraction=0.2,
                  test_fraction=0.2, num_workers=1, progress=False)
  info = preprocess_lib.run_preprocess(tiny_corpus, str(out), "logmel",
                                       **settings)
  before = _snapshot(out)
  assert "notes.tfrecord" in before and "train-1-of-2.tfrecord" in before
  items = manifest_lib.read_manifest(tiny_corpus)
  broken = tmp_path / "broken.jsonl"
  broken.write_text(json.dumps(items[0]) + "\n{\"id\": \"x\", \"audio\": \n")
  bad_split = dict(settings, split_by="speaker", valid_fraction=0.4,
                   test_fraction=0.5)
  gone = _write_lines(tmp_path / "gone.jsonl", [
      dict(it, audio=str(tmp_path / "nowhere.wav")) for it in items])
  cases = [
      ((str(broken), "logmel"), settings, manifest_lib.ManifestError,
       r":2: "),
      ((tiny_corpus, "logmell"), settings, PreprocessError,
       "--embedder: unknown embedder 'logmell'"),
      ((tiny_corpus, "logmel"), bad_split, ValueError, "too few"),
      ((tiny_corpus, "mfcc"), dict(settings, embedder_options={"bins": 3}),
       PreprocessError, r"--embedder_options: .*\['bins'\]"),
      ((gone, "mfcc"), settings, PreprocessError,
       "no usable training item.*" + output.FAILED_REPORT),
  ]
  for (manifest, spec), kwargs, error, match in cases:
    with pytest.raises(error, match=match):
      preprocess_lib.run_preprocess(manifest, str(out), spec, overwrite=True,
                                    **kwargs)
    after = _snapshot(out)
    failed = after.pop(output.FAILED_REPORT, None)
    assert after == before, (spec, match)
  # The rejected run's report is beside the intact dataset, not over its own.
  assert len(failed.decode().splitlines()) == len(items)
  assert records.read_dataset_info(str(out)) == info
  assert _count_records(out) == len(items)
  # A run that succeeds replaces this program's files only.
  new = preprocess_lib.run_preprocess(tiny_corpus, str(out), "mfcc",
                                      overwrite=True,
                                      **dict(settings, items_per_shard=1))
  names = set(os.listdir(out))
  listed = {f for s in new["splits"].values() for f in s["files"]}
  assert {n for n in names if n.endswith(".tfrecord")} == listed | {
      "notes.tfrecord", "train-1-of-2.tfrecord"}
  # The old train shard (one, now four) is gone; it was this program's.
  assert "train-00000-of-00001.tfrecord" in info["splits"]["train"]["files"]
  assert "train-00000-of-00001.tfrecord" not in names
  assert (out / "notes.tfrecord").read_bytes() == before["notes.tfrecord"]
  assert (out / "README.txt").read_text() == "mine"
  assert not [n for n in names if n.endswith(".tmp")]
  assert output.FAILED_REPORT not in names
  assert new["embedder"]["name"] == "mfcc" and _count_records(out) == len(items)


def test_a_folder_in_use_is_refused_and_a_killed_runs_lock_taken_over(
    tiny_corpus, tmp_path):
  out = tmp_path / "data"
  info = preprocess_lib.run_preprocess(
      tiny_corpus, str(out), "logmel", split_by="utterance",
      valid_fraction=0.2, test_fraction=0.2, num_workers=1, progress=False)
  before = _snapshot(out)
  # Run A blocks on an item whose audio is a named pipe nobody writes to: it
  # holds the folder, with its pool of workers, for as long as the test wants.
  fifo = tmp_path / "blocks.wav"
  os.mkfifo(fifo)
  items = manifest_lib.read_manifest(tiny_corpus)
  blocking = _write_lines(tmp_path / "blocking.jsonl", items + [
      {"id": "blocks", "audio": str(fifo), "start": 0.0, "end": 1.0}])
  a = subprocess.Popen(
      [sys.executable, "-m", "e2s_tf.preprocess", f"--manifest={blocking}",
       f"--out_dir={out}", "--split_by=utterance", "--overwrite",
       "--num_workers=2"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    lock = out / fileio.LOCK_FILE
    children = f"/proc/{a.pid}/task/{a.pid}/children"
    deadline = time.time() + 120
    while time.time() < deadline:
      text = lock.read_text() if lock.exists() else ""
      held = text.strip() and json.loads(text).get("pid") == a.pid
      # The pool's worker processes have started (they hold no lock).
      if held and len(open(children).read().split()) >= 2:
        break
      assert a.poll() is None, "run A ended before it held the folder"
      time.sleep(0.2)
    else:
      pytest.fail("run A never took the folder's lock and started its pool")
    b = _cli(f"--manifest={tiny_corpus}", f"--out_dir={out}", "--overwrite",
             "--embedder=mfcc", "--num_workers=1")
    line = _error_line(b)
    assert f"{out} is in use by another run (preprocess, pid {a.pid}" in line
    assert a.poll() is None
    # While A runs, the previous dataset is whole and readable.
    assert _snapshot(out).items() >= before.items()
    assert records.read_dataset_info(str(out)) == info
    assert _count_records(out) == len(items)
  finally:
    os.killpg(a.pid, signal.SIGKILL)  # A and its workers: its session
    a.wait()
  # Killed mid-run: the previous dataset as it was, the rest temporaries.
  after = _snapshot(out)
  assert {n: v for n, v in after.items() if not n.endswith(".tmp")} == before
  # The dead run's lock is taken over; this run replaces the dataset.
  c = _cli(f"--manifest={tiny_corpus}", f"--out_dir={out}", "--overwrite",
           "--embedder=mfcc", "--split_by=utterance", "--valid_fraction=0.2",
           "--test_fraction=0.2", "--num_workers=1")
  assert c.returncode == 0, c.stderr[-2000:]
  assert "wrote 6 examples" in c.stdout
  assert records.read_dataset_info(str(out))["embedder"]["name"] == "mfcc"
  assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_bad_embedder_options_are_one_line_and_write_nothing(tiny_corpus,
                                                             tmp_path):
  out = tmp_path / "never"
  for options, match in [
      ({"num_mel_bins": "many"}, r"--embedder_options: embedder 'logmel': "
       r"option 'num_mel_bins' must be an integer, got 'many' \(str\)"),
      ({"num_mel_bins": True}, "must be an integer, got True"),
      ({"upper_edge_hertz": "8k"}, "'upper_edge_hertz' must be a number or "
       "null"),
      ({"num_mel_bins": 0}, "--embedder_options: num_mel_bins must be "
       "positive"),
      ({"mel_bins": 80}, r"does not accept option\(s\) \['mel_bins'\]; "
       r"accepted: \['num_mel_bins'"),
      ([80], "must be a JSON object, got list")]:
    with pytest.raises(PreprocessError, match=match):
      preprocess_lib.run_preprocess(tiny_corpus, str(out), "logmel",
                                    embedder_options=options, progress=False)
  with pytest.raises(PreprocessError,
                     match="'transpose' must be true or false"):
    preprocess_lib.run_preprocess(tiny_corpus, str(out), "npy",
                                  embedder_options={"transpose": "yes"},
                                  progress=False)
  assert not out.exists()
  for flag, match in [
      ("--embedder_options={num_mel_bins: 80}",
       r"^preprocess: error: --embedder_options: not valid JSON \("),
      ('--embedder_options="80"',
       r"^preprocess: error: --embedder_options: must be a JSON object")]:
    line = _error_line(_cli(f"--manifest={tiny_corpus}", f"--out_dir={out}",
                            flag))
    assert re.search(match, line), line
  assert not out.exists()


def _mount_tmpfs(path, size_bytes, request):
  path.mkdir()
  try:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}",
                    "tmpfs", str(path)], check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError) as e:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {e}")
  request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(path)],
                                              capture_output=True))


def test_full_disk_is_one_line_and_keeps_the_previous_dataset(
    tiny_corpus, tmp_path, request):
  items = manifest_lib.read_manifest(tiny_corpus)
  one = _write_lines(tmp_path / "one.jsonl", items[:1])
  made = tmp_path / "made"
  preprocess_lib.run_preprocess(one, str(made), "logmel", split_by="utterance",
                                valid_fraction=0.0, test_fraction=0.0,
                                num_workers=1, progress=False)
  size = sum(f.stat().st_size for f in made.iterdir())
  # Room for that dataset and 1 MiB more; the new one needs ~6 MB.
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, size + (1 << 20), request)
  out = disk / "data"
  shutil.copytree(made, out)
  before = _snapshot(out)
  run = _cli(f"--manifest={tiny_corpus}", f"--out_dir={out}", "--overwrite",
             "--split_by=utterance", "--valid_fraction=0", "--test_fraction=0",
             "--num_workers=1")
  assert _error_line(run) == f"preprocess: error: no space left on {out}"
  assert run.stderr.strip().splitlines()[-1] == _error_line(run)
  # Nothing that looks complete or new: the previous dataset, byte for byte.
  assert _snapshot(out) == before
  assert _count_records(out) == 1


def test_a_failure_writing_the_reports_leaves_no_temporaries(
    tiny_corpus, tmp_path, monkeypatch):
  """The disk filling up after the shards, while the reports are written
  (injected: a tmpfs cannot be sized to fail exactly there)."""
  out = tmp_path / "out"
  (tmp_path / "out").mkdir()
  (out / "notes.txt").write_text("mine")

  def full(path, text):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

  monkeypatch.setattr(output, "write_text_tmp", full)
  with pytest.raises(PreprocessError,
                     match=f"^no space left on {out}$"):
    preprocess_lib.run_preprocess(tiny_corpus, str(out), "logmel",
                                  split_by="utterance", num_workers=1,
                                  progress=False)
  assert sorted(os.listdir(out)) == [".e2s.lock", "notes.txt"]


# ----------------------------------------------------------------------------
# Long items: pieces at pauses, in the item's split; memory of a piece.


@pytest.fixture(scope="module")
def long_case(tiny_corpus, tmp_path_factory):
  """The tiny corpus (items of 4-6 s) plus two speech-like items of 40 s and
  30 s (speakers of the corpus), their logmel as .npy, cut at 16 s: the cuts
  are searched in the last 3.2 s of each piece, longer than any burst of
  `speechlike_audio`, so that every search finds a pause."""
  from e2s_tf import embedders  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("long")
  logmel = embedders.get_embedder("logmel", CONFIG)
  items = manifest_lib.read_manifest(tiny_corpus)
  lines = []
  for it in items:
    np.save(root / f"{it['id']}.npy",
            logmel.embed(audio_lib.load_audio(it["audio"], 16000), it))
    lines.append(dict(it, embedding=str(root / f"{it['id']}.npy")))
  whole = {}
  for seed, (name, seconds, speaker) in enumerate(
      [("long_a", 40.0, items[0]["speaker"]),
       ("long_b", 30.0, items[-1]["speaker"])]):
    wav = corpus.speechlike_audio(seconds, seed=seed)
    sf.write(root / f"{name}.wav", wav, 16000, subtype="PCM_16")
    decoded = audio_lib.load_audio(str(root / f"{name}.wav"), 16000)
    np.save(root / f"{name}.npy", logmel.embed(decoded, {"id": name}))
    whole[name] = decoded
    lines.append({"id": name, "audio": str(root / f"{name}.wav"),
                  "speaker": speaker, "embedding": str(root / f"{name}.npy"),
                  "text": "the words of the whole item"})
  manifest = _write_lines(root / "manifest.jsonl", lines)
  settings = dict(split_by="speaker", valid_fraction=0.34, test_fraction=0.34,
                  seed=0, num_workers=1, progress=False, max_item_seconds=16.0)
  out = {spec: str(root / spec) for spec in ("logmel", "npy")}
  infos = {spec: preprocess_lib.run_preprocess(manifest, out[spec], spec,
                                               **settings)
           for spec in out}
  return manifest, whole, out, infos


def _pieces(data_dir):
  with open(os.path.join(data_dir, output.PIECES_REPORT)) as f:
    return [json.loads(line) for line in f]


def test_long_items_become_pieces_cut_at_pauses(long_case):
  manifest, whole, out, infos = long_case
  info, rows = infos["logmel"], _pieces(out["logmel"])
  assert info["pieces"] == {"max_item_seconds": 16.0, "split_items": 2,
                            "count": len(rows), "report": "pieces.jsonl"}
  for name, wav in whole.items():
    mine = [r for r in rows if r["source"] == name]
    assert [r["id"] for r in mine] == [f"{name}/part-{k:03d}"
                                       for k in range(len(mine))]
    assert len(mine) == -(-wav.size // int(0.8 * 16.0 * 16000)) == {
        "long_a": 4, "long_b": 3}[name]
    for r in mine:
      fileio.check_item_id(r["id"])
    # The pieces tile the item: from its start to its end, no gap, no overlap,
    # each at most 16 s and at least a fifth of that.
    assert mine[0]["start"] == 0.0 and mine[-1]["end"] == wav.size / 16000
    assert all(a["end"] == b["start"] for a, b in zip(mine, mine[1:]))
    assert all(3.2 <= r["end"] - r["start"] <= 16.0 for r in mine)
    # Every cut lies on the frame grid, inside a pause (the speech-like bursts
    # are ~-20 dB, their pauses faint noise at -80 dB).
    for r in mine[1:]:
      cut = int(round(r["start"] * 16000))
      assert cut % CONFIG.frame_step == 0
      energy = audio_lib.frame_energy_db(
          wav[cut - CONFIG.frame_length:cut + CONFIG.frame_length], CONFIG)
      assert energy.max() < -60, (r["id"], energy.max())
  assert info["num_items"] == 8
  assert sum(s["num_examples"] for s in info["splits"].values()) == 6 + len(
      rows)


def test_pieces_stay_in_their_items_split_and_frames(long_case):
  manifest, whole, out, infos = long_case
  items = {it["id"]: it for it in manifest_lib.read_manifest(manifest)}
  split_of = splits.assign_splits(list(items.values()), "speaker", 0.34,
                                  0.34, seed=0)
  rows = {r["id"]: r for r in _pieces(out["logmel"])}
  seen = set()
  for split in records.SPLITS:
    for item_id, ex in _read_split(out["logmel"], split).items():
      source = rows[item_id]["source"] if item_id in rows else item_id
      assert split_of[source] == split, item_id  # no piece leaks across splits
      seen.add(item_id)
      if item_id not in rows:
        continue
      assert ex["text"] == ""  # a piece's part of its item's text is unknown
      # A piece is the item's frames from its first sample's frame on.
      first = int(round(rows[item_id]["start"] * 16000))
      t = int(ex["length"])
      wav = whole[source]
      np.testing.assert_array_equal(ex["audio"],
                                    wav[first:first + CONFIG.num_samples(t)])
      reference = spectral.numpy_log_stft(wav, CONFIG)
      _assert_same_log_stft(ex["log_stft"], reference[
          first // CONFIG.frame_step:first // CONFIG.frame_step + t])
  assert seen == (set(items) - set(whole)) | set(rows)
  # Precomputed embeddings of the whole item are cut with it, frame-exact.
  npy = {}
  for split in records.SPLITS:
    npy.update(_read_split(out["npy"], split))
  assert sorted(npy) == sorted(seen)
  assert _pieces(out["npy"]) == _pieces(out["logmel"])
  for item_id, row in rows.items():
    full = np.load(items[row["source"]]["embedding"])
    first = int(round(row["start"] * 16000)) // CONFIG.frame_step
    t = int(npy[item_id]["length"])
    np.testing.assert_array_equal(
        npy[item_id]["embedding"],
        full[first:first + t].astype(np.float16).astype(np.float32))


def test_taken_piece_ids_are_refused_and_regions_cut_in_file_seconds(
    tmp_path):
  # A piece id taken by another item is refused before anything is written.
  wav = tmp_path / "a.wav"
  sf.write(wav, corpus.speechlike_audio(3.0), 16000, subtype="PCM_16")
  manifest = _write_lines(tmp_path / "m.jsonl", [
      {"id": "a", "audio": str(wav)}, {"id": "a/part-001", "audio": str(wav),
                                       "start": 0.0, "end": 1.0}])
  out = tmp_path / "out"
  with pytest.raises(PreprocessError,
                     match="'a/part-001' is taken by another item"):
    preprocess_lib.run_preprocess(manifest, str(out), split_by="utterance",
                                  valid_fraction=0, test_fraction=0,
                                  max_item_seconds=2.0, progress=False)
  assert not [n for n in os.listdir(out) if n != fileio.LOCK_FILE]
  # A long region of a file: its pieces tile the region, in file seconds.
  region = _write_lines(tmp_path / "region.jsonl", [
      {"id": "r", "audio": str(wav), "start": 0.5, "end": 2.9}])
  info = preprocess_lib.run_preprocess(
      region, str(out), split_by="utterance", valid_fraction=0,
      test_fraction=0, max_item_seconds=2.0, num_workers=1, progress=False)
  rows = _pieces(str(out))
  assert [r["id"] for r in rows] == ["r/part-000", "r/part-001"]
  assert (rows[0]["start"], rows[0]["end"], rows[1]["end"]) == (
      0.5, rows[1]["start"], 2.9)
  assert info["num_items"] == 1 and info["pieces"]["count"] == 2
  decoded = audio_lib.load_audio(str(wav), 16000)
  for item_id, ex in _read_split(str(out), "train").items():
    first = int(round(rows[int(item_id[-1])]["start"] * 16000))
    np.testing.assert_array_equal(
        ex["audio"], decoded[first:first + ex["audio"].size])


def test_memory_of_a_long_item_is_that_of_its_pieces(tmp_path):
  # Without pieces (and region decoding) 2 minutes cost ~250 MiB more than
  # 4 s; with them, what one 2 s piece costs.
  short = bench_memory.preprocess_memory(str(tmp_path), 4.0, 2.0)["peak_rss_mib"]
  long = bench_memory.preprocess_memory(str(tmp_path), 120.0, 2.0)["peak_rss_mib"]
  assert long < short + 40, (short, long)


def test_a_damaged_dataset_info_is_named_not_taken_for_other_settings(
    tiny_corpus, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / records.DATASET_INFO).write_text('{"fingerprint": ')
  with pytest.raises(PreprocessError,
                     match=r"dataset_info.json cannot be read .*damaged; pass "
                     "--overwrite to rebuild"):
    preprocess_lib.run_preprocess(tiny_corpus, str(out), "logmel",
                                  split_by="utterance", num_workers=1,
                                  progress=False)
  assert (out / records.DATASET_INFO).read_text() == '{"fingerprint": '
  info = preprocess_lib.run_preprocess(
      tiny_corpus, str(out), "logmel", split_by="utterance", num_workers=1,
      progress=False, overwrite=True)
  assert records.read_dataset_info(str(out)) == info


def test_an_older_schema_is_refused_and_the_printed_command_rebuilds_it(
    tiny_corpus, tmp_path):
  """A folder of schema version 3 (as a preprocess of an older e2s_tf left
  it) is refused by every reader with a command; that command, run as
  printed (plus the folder's own split settings), rebuilds it in place."""
  out = str(tmp_path / "data")
  settings = ["--split_by=speaker", "--valid_fraction=0.34",
              "--test_fraction=0.34", "--num_workers=1"]
  assert _cli(f"--manifest={tiny_corpus}", f"--out_dir={out}",
              *settings).returncode == 0
  path = os.path.join(out, records.DATASET_INFO)
  with open(path) as f:
    info = json.load(f)
  info["version"] = 3  # (its fingerprint still that of these settings)
  with open(path, "w") as f:
    json.dump(info, f)
  with pytest.raises(records.SchemaError) as e:
    records.read_dataset_info(out)
  command = re.search(r"`python -m e2s_tf\.preprocess ([^`]*)`",
                      str(e.value)).group(1).split()
  run = _cli(*command, *settings)
  assert run.returncode == 0, run.stderr[-2000:]
  rebuilt = records.read_dataset_info(out)
  assert rebuilt["version"] == records.SCHEMA_VERSION
  assert rebuilt["splits"]["train"]["num_examples"] == (
      info["splits"]["train"]["num_examples"])
