"""Tests of item ids, output paths and folder locks."""

import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from e2s_tf import fileio


@pytest.mark.parametrize("item_id", [
    "a", "spk1_utt-03.seg2", "a/b", "LibriSpeech/84/121123/84-121123-0000",
    "x" * 200, "..a", "a..b"])
def test_valid_ids_pass(item_id):
  assert fileio.check_item_id(item_id) == item_id


@pytest.mark.parametrize("item_id, reason", [
    ("", "empty"), ("../../x", "'..'"), ("/abs/x", "start with '/'"),
    ("a/./b", "'.'"), ("a//b", "empty segment"), ("a/", "empty segment"),
    ("a\\b", "'\\\\'"), ("a b", "' '"), ("x" * 201, "at most 200"),
    ("é", "'é'"), (7, "string"), ("a\x00b", "letters")])
def test_invalid_ids_say_why(item_id, reason):
  with pytest.raises(fileio.InvalidItemId, match="invalid item id") as e:
    fileio.check_item_id(item_id)
  assert reason in str(e.value)


def test_output_path_stays_inside_folder(tmp_path):
  out = tmp_path / "out"
  assert fileio.output_path(str(out), "a/b", ".wav") == str(out / "a" / "b.wav")
  for bad in ("../x", "/tmp/x", "a/../../x"):
    with pytest.raises(fileio.InvalidItemId):
      fileio.output_path(str(out), bad, ".wav")
  with pytest.raises(ValueError):
    fileio.output_path(str(out), "a", "/../x")


def test_output_path_refuses_a_link_out_of_the_folder(tmp_path):
  out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
  out.mkdir()
  elsewhere.mkdir()
  os.symlink(elsewhere, out / "link")
  with pytest.raises(fileio.InvalidItemId, match="resolves outside"):
    fileio.output_path(str(out), "link/x", ".wav")


def test_unique_output_path_never_collides(tmp_path):
  taken = set()
  paths = [fileio.unique_output_path(str(tmp_path), "x", ".wav", taken)
           for _ in range(3)]
  assert [os.path.basename(p) for p in paths] == ["x.wav", "x-2.wav",
                                                   "x-3.wav"]
  # A repeated id of the longest length still gets a valid name.
  long = "y" * fileio.MAX_ID_LENGTH
  first, second = (fileio.unique_output_path(str(tmp_path), long, ".wav",
                                             taken) for _ in range(2))
  assert os.path.basename(second) == "y" * 198 + "-2.wav" != first


def test_describe_os_error_names_a_full_disk():
  error = OSError(28, "No space left on device", "/data/x.tmp")
  assert fileio.describe_os_error(error) == "no space left on /data/x.tmp"
  assert fileio.is_no_space(error)
  assert not fileio.is_no_space(OSError(2, "No such file", "/x"))


_HOLDER = textwrap.dedent("""
    import sys, time
    from e2s_tf import fileio
    lock = fileio.FolderLock(sys.argv[1], "holder").acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def _start_holder(folder):
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, folder],
                          stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_run_is_refused_naming_the_holder(tmp_path):
  proc = _start_holder(str(tmp_path))
  try:
    with pytest.raises(fileio.FolderInUse) as e:
      fileio.FolderLock(str(tmp_path), "train").acquire()
    assert f"holder, pid {proc.pid}" in str(e.value)
    assert str(tmp_path) in str(e.value)
  finally:
    proc.kill()
    proc.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
  proc = _start_holder(str(tmp_path))
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  with fileio.FolderLock(str(tmp_path), "train") as lock:
    assert lock.path == str(tmp_path / fileio.LOCK_FILE)
    # Held: a second lock in this process (another open file) is refused.
    with pytest.raises(fileio.FolderInUse, match=f"pid {os.getpid()}"):
      fileio.FolderLock(str(tmp_path), "again").acquire()
  # Released on exit: free again.
  fileio.FolderLock(str(tmp_path), "later").acquire().release()


def _fill(content):
  def write(tmp):
    for name, text in content.items():
      with open(os.path.join(tmp, name), "w") as f:
        f.write(text)
  return write


def test_write_folder_replaces_only_its_own_kind(tmp_path):
  target = tmp_path / "out"
  fileio.write_folder(str(target), _fill({"meta.json": "1"}), "meta.json")
  assert (target / "meta.json").read_text() == "1"
  # A previous output of this kind is replaced whole.
  fileio.write_folder(str(target), _fill({"meta.json": "2", "b": "x"}),
                      "meta.json")
  assert sorted(os.listdir(target)) == ["b", "meta.json"]
  assert (target / "meta.json").read_text() == "2"
  # Something else is refused unless asked, and stays as it was.
  other = tmp_path / "corpus"
  other.mkdir()
  (other / "manifest.jsonl").write_text("data")
  (tmp_path / "corpus.tmp").mkdir()  # someone's folder, never touched
  with pytest.raises(fileio.FolderNotReplaceable, match="--overwrite"):
    fileio.write_folder(str(other), _fill({"meta.json": "3"}), "meta.json")
  assert os.listdir(other) == ["manifest.jsonl"]
  fileio.write_folder(str(other), _fill({"meta.json": "3"}), "meta.json",
                      overwrite=True)
  assert os.listdir(other) == ["meta.json"]
  assert (tmp_path / "corpus.tmp").is_dir()
  leftovers = [n for n in os.listdir(tmp_path) if ".tmp-" in n]
  assert leftovers == []


def test_write_folder_keeps_the_previous_output_when_writing_fails(tmp_path):
  target = tmp_path / "out"
  fileio.write_folder(str(target), _fill({"meta.json": "1"}), "meta.json")

  def fail(tmp):
    _fill({"meta.json": "half"})(tmp)
    raise OSError(28, "No space left on device", tmp)

  with pytest.raises(OSError) as e:
    fileio.write_folder(str(target), fail, "meta.json")
  assert fileio.describe_os_error(e.value).startswith("no space left on ")
  assert os.listdir(target) == ["meta.json"]
  assert (target / "meta.json").read_text() == "1"
  assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []


def test_write_folder_never_deletes_an_added_file_or_a_protected_folder(
    tmp_path):
  target = tmp_path / "out"
  fileio.write_folder(str(target), _fill({"meta.json": "1"}), "meta.json")
  (target / "my notes.txt").write_text("mine")
  with pytest.raises(fileio.FolderNotReplaceable, match="my notes.txt"):
    fileio.write_folder(str(target), _fill({"meta.json": "2"}), "meta.json")
  assert sorted(os.listdir(target)) == ["meta.json", "my notes.txt"]
  assert (target / "meta.json").read_text() == "1"
  assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []
  # A folder holding a protected one is refused even with overwrite.
  work = target / "run"
  work.mkdir()
  for folder in (target, work):
    with pytest.raises(fileio.FolderNotReplaceable, match="holds"):
      fileio.write_folder(str(folder), _fill({"meta.json": "3"}), "meta.json",
                          overwrite=True, protect=[str(work)])
  assert work.is_dir() and (target / "meta.json").read_text() == "1"


def test_write_folder_without_an_atomic_exchange(tmp_path, monkeypatch):
  """Where renameat2 is missing, the old folder is moved aside and back."""
  monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
  target = tmp_path / "out"
  fileio.write_folder(str(target), _fill({"meta.json": "1"}), "meta.json")
  fileio.write_folder(str(target), _fill({"meta.json": "2"}), "meta.json")
  assert os.listdir(target) == ["meta.json"]
  assert (target / "meta.json").read_text() == "2"
  assert sorted(os.listdir(tmp_path)) == [".out.lock", "out"]


def test_write_json_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "sub" / "x.json"
  assert fileio.write_json(str(path), {"b": 1, "a": [2]}, sort_keys=True,
                           indent=None) == str(path)
  assert path.read_text() == '{"a": [2], "b": 1}\n'
  assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~fileio._umask())
  fileio.write_json(str(path), (1.5,), default=list)
  assert path.read_text() == "[\n 1.5\n]\n"
  assert os.listdir(path.parent) == ["x.json"]


def test_write_json_failure_keeps_the_previous_file(tmp_path):
  path = tmp_path / "x.json"
  fileio.write_json(str(path), {"old": 1})
  with pytest.raises(TypeError):
    fileio.write_json(str(path), {"new": object()})
  assert path.read_text() == '{\n "old": 1\n}\n'
  assert os.listdir(tmp_path) == ["x.json"]


def test_replacing_an_unfinished_block_keeps_the_previous_file(tmp_path):
  path = tmp_path / "m.jsonl"
  with fileio.replacing(str(path)) as f:
    f.write("caf\u00e9\n")
  assert path.read_text(encoding="utf-8") == "caf\u00e9\n"
  with pytest.raises(KeyboardInterrupt):
    with fileio.replacing(str(path)) as f:
      f.write("half")
      raise KeyboardInterrupt
  assert path.read_text(encoding="utf-8") == "caf\u00e9\n"
  assert os.listdir(tmp_path) == ["m.jsonl"]


# ----------------------------------------------------------------------------
# The same on a non-local file system: TensorFlow's in-memory ram://.


@pytest.fixture
def ram(request):
  """A fresh folder on ram://, removed after the test."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  root = f"ram://fileio-{request.node.name[:40]}-{os.getpid()}"
  yield root
  if tf.io.gfile.exists(root):
    tf.io.gfile.rmtree(root)


def test_remote_paths_are_told_apart_and_normalised():
  assert fileio.is_remote("gs://b/x") and fileio.is_remote("ram://x")
  assert not fileio.is_remote("/tmp/gs://x") and not fileio.is_remote("x")
  assert fileio.normpath("gs://b/x/../y/") == "gs://b/y"
  assert fileio.abspath("ram://a//b") == "ram://a/b"
  assert fileio.dirname("ram://x") == "ram://"
  assert fileio.dirname("gs://b/x/y.wav") == "gs://b/x"
  assert fileio.isabs("s3://b/x") and not fileio.isabs("x")
  assert fileio.relpath("gs://b/x/y.wav", "gs://b") == "x/y.wav"
  assert fileio.relpath("gs://b/x", "gs://c/y") == "gs://b/x"  # no way there
  assert fileio.relpath("/data/x", "gs://b") == "/data/x"
  assert fileio.relpath("/data/x/y", "/data") == "x/y"


def test_remote_output_path_stays_inside_folder(ram):
  out = f"{ram}/out/"
  assert fileio.output_path(out, "a/b", ".wav") == f"{ram}/out/a/b.wav"
  for bad in ("../x", "/tmp/x", "a/../../x"):
    with pytest.raises(fileio.InvalidItemId):
      fileio.output_path(out, bad, ".wav")
  taken = set()
  assert [fileio.unique_output_path(out, "x", ".wav", taken)
          for _ in range(2)] == [f"{ram}/out/x.wav", f"{ram}/out/x-2.wav"]


def test_remote_files_are_written_whole_and_read_back(ram):
  path = f"{ram}/sub/x.json"
  assert fileio.write_json(path, {"a": [1]}, indent=None) == path
  assert fileio.read_text(path) == '{"a": [1]}\n'
  with pytest.raises(TypeError):
    fileio.write_json(path, {"new": object()})
  assert fileio.read_json(path) == {"a": [1]}
  with pytest.raises(KeyboardInterrupt):
    with fileio.replacing(path) as f:
      f.write("half")
      raise KeyboardInterrupt
  assert fileio.read_json(path) == {"a": [1]}
  assert fileio.listdir(f"{ram}/sub") == ["x.json"]  # no temporary left
  fileio.write_bytes(f"{ram}/b.bin", b"\x00\x01")
  assert fileio.read_bytes(f"{ram}/b.bin") == b"\x00\x01"
  assert fileio.getsize(f"{ram}/b.bin") == 2
  assert fileio.isfile(f"{ram}/b.bin") and not fileio.isdir(f"{ram}/b.bin")
  assert fileio.isdir(f"{ram}/sub") and not fileio.isfile(f"{ram}/sub")


def test_remote_errors_are_os_errors(ram):
  missing = f"{ram}/nothing.json"
  for read in (fileio.read_bytes, fileio.read_json, fileio.load_npy,
               fileio.remove, fileio.listdir, fileio.getsize):
    with pytest.raises(FileNotFoundError):
      read(missing)
  fileio.write_bytes(f"{ram}/a", b"a")
  fileio.write_bytes(f"{ram}/b", b"b")
  with pytest.raises(FileExistsError):
    fileio.rename(f"{ram}/a", f"{ram}/b")
  with pytest.raises(FileExistsError):
    fileio.copy(f"{ram}/a", f"{ram}/b")
  # (Not copied onto "b": ram:// appends to a file written again.)
  fileio.copy(f"{ram}/a", f"{ram}/c")
  fileio.rename(f"{ram}/c", f"{ram}/d")
  fileio.rename(f"{ram}/d", f"{ram}/b", overwrite=True)
  assert sorted(fileio.listdir(ram)) == ["a", "b"]
  assert fileio.read_bytes(f"{ram}/b") == b"a"


def test_remote_arrays_and_audio_round_trip(ram, tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  array = np.arange(6, dtype=np.float32).reshape(2, 3)
  fileio.save_npy(f"{ram}/e/x.npy", array)
  np.testing.assert_array_equal(fileio.load_npy(f"{ram}/e/x.npy"), array)
  pickled = io.BytesIO()
  np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
  fileio.write_bytes(f"{ram}/e/p.npy", pickled.getvalue())
  with pytest.raises(ValueError, match="allow_pickle"):
    fileio.load_npy(f"{ram}/e/p.npy")  # never unpickled
  audio = (0.5 * np.sin(np.arange(800) / 5.0)).astype(np.float32)
  fileio.write_audio(f"{ram}/w/a.wav", audio, 16000)
  back, rate = fileio.read_audio(f"{ram}/w/a.wav")
  assert rate == 16000 and back.shape == audio.shape
  np.testing.assert_allclose(back, audio, atol=1.0 / 32768)
  with fileio.local_copy(f"{ram}/e/x.npy") as local:
    assert not fileio.is_remote(local)
    np.testing.assert_array_equal(np.load(local), array)
  assert not os.path.exists(local)
  with fileio.local_copy(str(tmp_path)) as same:
    assert same == str(tmp_path)


def test_remote_walk_lists_made_folders(ram):
  fileio.write_bytes(f"{ram}/t/a/x.npy", b"")
  fileio.write_bytes(f"{ram}/t/y.npy", b"")
  assert [(fileio.relpath(top, f"{ram}/t"), sorted(d), sorted(f))
          for top, d, f in fileio.walk(f"{ram}/t")] == [
              (".", ["a"], ["y.npy"]), ("a", [], ["x.npy"])]
  assert list(fileio.walk(f"{ram}/none")) == []
  assert fileio.glob(f"{ram}/t/*.npy") == [f"{ram}/t/y.npy"]
  fileio.rmtree(f"{ram}/t")
  assert not fileio.exists(f"{ram}/t/y.npy")
  fileio.rmtree(f"{ram}/t", ignore_errors=True)  # gone: no error


def _fill_any(content):
  def write(tmp):
    for name, text in content.items():
      path = os.path.join(tmp, name)
      fileio.makedirs(fileio.dirname(path))
      with fileio.open(path, "w") as f:
        f.write(text)
  return write


def _tree(folder):
  return {fileio.relpath(os.path.join(top, n), folder):
          fileio.read_text(os.path.join(top, n))
          for top, _, names in fileio.walk(folder) for n in names}


def test_remote_write_folder_replaces_only_its_own_kind(ram):
  target = f"{ram}/out"
  fileio.write_folder(target, _fill_any({"meta.json": "1", "v/w": "x"}),
                      "meta.json")
  assert _tree(target) == {"meta.json": "1", "v/w": "x"}
  fileio.write_folder(target, _fill_any({"meta.json": "2", "v/w": "y"}),
                      "meta.json")
  assert _tree(target) == {"meta.json": "2", "v/w": "y"}
  assert sorted(fileio.listdir(ram)) == ["out"]  # nothing left beside it
  # An added entry is never deleted without overwrite; with it, it goes.
  fileio.write_bytes(f"{target}/notes.txt", b"mine")
  with pytest.raises(fileio.FolderNotReplaceable, match="notes.txt"):
    fileio.write_folder(target, _fill_any({"meta.json": "3", "v/w": "z"}),
                        "meta.json")
  assert _tree(target)["meta.json"] == "2"
  fileio.write_folder(target, _fill_any({"meta.json": "3"}), "meta.json",
                      overwrite=True)
  assert _tree(target) == {"meta.json": "3"}
  # Something else is refused, and a protected folder even with overwrite.
  fileio.write_bytes(f"{ram}/corpus/manifest.jsonl", b"data")
  with pytest.raises(fileio.FolderNotReplaceable, match="--overwrite"):
    fileio.write_folder(f"{ram}/corpus", _fill_any({"meta.json": "4"}),
                        "meta.json")
  with pytest.raises(fileio.FolderNotReplaceable, match="holds"):
    fileio.write_folder(ram, _fill_any({"meta.json": "4"}), "meta.json",
                        overwrite=True, protect=[f"{ram}/corpus"])
  assert _tree(f"{ram}/corpus") == {"manifest.jsonl": "data"}
  assert sorted(fileio.listdir(ram)) == ["corpus", "out"]


def test_remote_write_folder_keeps_the_previous_output_on_failure(
    ram, monkeypatch):
  target = f"{ram}/out"
  fileio.write_folder(target, _fill_any({"meta.json": "1", "v/w": "x"}),
                      "meta.json")

  def fail(tmp):
    _fill_any({"meta.json": "half"})(tmp)
    raise OSError(28, "No space left on device", tmp)

  with pytest.raises(OSError) as e:
    fileio.write_folder(target, fail, "meta.json")
  assert fileio.describe_os_error(e.value).startswith("no space left on ")
  assert _tree(target) == {"meta.json": "1", "v/w": "x"}
  assert sorted(fileio.listdir(ram)) == ["out"]
  # A failure while the new files are moved in puts the old ones back.
  rename, moved = fileio.rename, []

  def rename_then_fail(src, dst, overwrite=False):
    if ".out.tmp-" in src:
      moved.append(dst)
      if len(moved) == 2:
        raise OSError(5, "Input/output error", dst)
    rename(src, dst, overwrite)

  monkeypatch.setattr(fileio, "rename", rename_then_fail)
  with pytest.raises(OSError, match="Input/output"):
    fileio.write_folder(target, _fill_any({"meta.json": "2", "v/w": "y"}),
                        "meta.json")
  monkeypatch.setattr(fileio, "rename", rename)
  assert _tree(target) == {"meta.json": "1", "v/w": "x"}
  assert sorted(fileio.listdir(ram)) == ["out"]


def test_remote_folders_are_not_locked(ram):
  with fileio.FolderLock(f"{ram}/w", "train"):
    with fileio.FolderLock(f"{ram}/w", "again"):
      pass
  assert not fileio.exists(f"{ram}/w/{fileio.LOCK_FILE}")


def test_local_helpers_keep_the_os_behaviour(tmp_path):
  path = tmp_path / "a" / "x.bin"
  fileio.write_bytes(str(path), b"123")
  assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~fileio._umask())
  assert os.listdir(path.parent) == ["x.bin"]
  assert fileio.getsize(str(path)) == 3 and fileio.isfile(str(path))
  with pytest.raises(FileExistsError):
    fileio.copy(str(path), str(path))
  fileio.copy(str(path), str(tmp_path / "y.bin"))
  with pytest.raises(FileExistsError):
    fileio.rename(str(tmp_path / "y.bin"), str(path))
  fileio.rename(str(tmp_path / "y.bin"), str(path), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["a"]
  with pytest.raises(FileNotFoundError):
    fileio.read_json(str(tmp_path / "none.json"))
  assert fileio.abspath("x") == os.path.abspath("x")
  assert fileio.realpath(str(tmp_path)) == os.path.realpath(tmp_path)


def test_a_scheme_tensorflow_lacks_comes_from_tensorflow_io(tmp_path):
  """hdfs:// is not built into TensorFlow: fileio loads tensorflow-io's
  plugins for it (in a fresh process, where nothing loaded them yet), so a
  missing file reads as missing, not as an unimplemented file system."""
  code = ("import tensorflow as tf\n"
          "from e2s_tf import fileio\n"
          "try:\n"
          "  tf.io.gfile.exists('hdfs://localhost:1/x')\n"
          "except tf.errors.UnimplementedError:\n"
          "  print('before: not implemented')\n"
          "print('after:', fileio.exists('hdfs://localhost:1/x'))\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=str(tmp_path), timeout=120,
                       env=dict(os.environ, PYTHONPATH=root,
                                TF_CPP_MIN_LOG_LEVEL="3"))
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.splitlines() == ["before: not implemented",
                                     "after: False"]


def test_remote_normpath_never_leaves_the_bucket():
  assert fileio.normpath("gs://b/x/../y/") == "gs://b/y"
  assert fileio.normpath("gs://bucket/../other/x") == "gs://bucket/other/x"
  assert fileio.normpath("s3://b/a/b/../../..") == "s3://b"
  assert fileio.normpath("ram://") == "ram://"
  assert fileio.normpath("gs://b/./c//d") == "gs://b/c/d"
