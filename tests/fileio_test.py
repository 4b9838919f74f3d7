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
