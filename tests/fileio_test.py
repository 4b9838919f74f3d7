"""Tests of item ids, output paths and folder locks."""

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
