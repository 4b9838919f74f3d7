"""What keeps the programs' files safe: item ids, output paths, run locks.

Three rules of DESIGN.md meet here:

- An item id becomes a file name, so it must be one: 1-200 characters of
  letters, digits, `.`, `_`, `-` and `/` between non-empty segments, no
  segment `.` or `..`, no leading `/` (`check_item_id`).
- No output ever lands outside its output folder: every writer that names a
  file after an item builds the path with `output_path`, which refuses an id
  that is not valid (even one from an old record) and any path that would
  resolve outside the folder (a symbolic link inside it, for instance).
- An output folder in use by another run is refused: `FolderLock` holds an
  advisory lock (`fcntl.flock`) on `<folder>/.e2s.lock` for as long as a run
  writes there. The kernel drops the lock when its process dies, however it
  dies, so a stale lock is taken over without a question; the file itself
  names the holder (program, pid, host, start) for the message a second run
  prints.

`write_folder` writes an output that is a whole folder (an export) so that
the folder always holds a complete one: built in a temporary sibling, then
swapped in; only a previous output of the same kind is replaced.

`write_json` writes a JSON file atomically, `replacing` any text file (a
manifest): a reader sees the previous file or the new one whole, never a
part.

`describe_os_error` turns an `OSError` into the one line a main prints, with
"no space left on <path>" for a full disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Callable, Iterator, Optional, Sequence, TextIO

MAX_ID_LENGTH = 200
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
LOCK_FILE = ".e2s.lock"


class InvalidItemId(ValueError):
  """An item id that cannot be a file name inside an output folder."""


class FolderInUse(RuntimeError):
  """Another live process holds the folder's lock."""


class FolderNotReplaceable(ValueError):
  """An output folder that holds something this program did not write."""


def item_id_problem(item_id: Any) -> Optional[str]:
  """Why `item_id` is not a valid id, or None when it is."""
  if not isinstance(item_id, str):
    return f"an id must be a string, got {type(item_id).__name__}"
  if not item_id:
    return "an id must not be empty"
  if len(item_id) > MAX_ID_LENGTH:
    return (f"an id has at most {MAX_ID_LENGTH} characters, this one "
            f"{len(item_id)}")
  if item_id.startswith("/"):
    return "an id must not start with '/'"
  for segment in item_id.split("/"):
    if not segment:
      return "an id must not have an empty segment ('//' or a trailing '/')"
    if segment in (".", ".."):
      return f"an id must not have a segment {segment!r}"
    if not _SEGMENT.fullmatch(segment):
      bad = sorted({c for c in segment if not _SEGMENT.fullmatch(c)})
      return ("an id may hold only letters, digits, '.', '_', '-' and '/', "
              f"not {''.join(bad)!r}")
  return None


def check_item_id(item_id: Any) -> str:
  """Returns `item_id` if valid, else raises InvalidItemId saying why."""
  problem = item_id_problem(item_id)
  if problem:
    raise InvalidItemId(f"invalid item id {item_id!r}: {problem}")
  return item_id


def _inside(path: str, folder: str) -> bool:
  return os.path.commonpath([path, folder]) == folder


def output_path(folder: str, item_id: Any, suffix: str = "") -> str:
  """The path `<folder>/<item_id><suffix>`, which never leaves `folder`.

  Args:
    folder: the output folder (need not exist yet).
    item_id: a valid item id (`check_item_id`); its `/` make sub-folders.
    suffix: appended to the last segment, e.g. ".wav"; no `/` in it.

  Raises:
    InvalidItemId: `item_id` is not valid, or the path would resolve outside
      `folder` (through a symbolic link already there).
  """
  check_item_id(item_id)
  if "/" in suffix or suffix in (".", ".."):
    raise ValueError(f"suffix {suffix!r} must not hold '/'")
  root = os.path.realpath(folder)
  path = os.path.join(root, item_id + suffix)
  # realpath follows links already on disk: one inside the folder that points
  # out of it is caught here, before anything is written through it.
  if not _inside(os.path.realpath(path), root):
    raise InvalidItemId(f"item id {item_id!r}: {path} resolves outside "
                        f"{folder}")
  return path


def unique_output_path(folder: str, item_id: Any, suffix: str,
                       taken: set[str]) -> str:
  """`output_path`, with `-2`, `-3`, ... appended until not in `taken`.

  The chosen path is added to `taken`, so names collected over one run
  never collide (e.g. `a/x.npy` and `b/x.npy` written to one flat folder).
  """
  path = output_path(folder, item_id, suffix)
  number = 1
  while path in taken:
    number += 1
    tail = f"-{number}"
    # Room for the tail within MAX_ID_LENGTH; the last segment keeps at least
    # one character (a 200-character id of one segment has room).
    stem = item_id[:MAX_ID_LENGTH - len(tail)]
    if stem.endswith("/") or stem.endswith("/.") or stem.endswith("/.."):
      stem = stem.rstrip("/.") or "x"
    path = output_path(folder, stem + tail, suffix)
  taken.add(path)
  return path


def write_json(path: str, value: Any, *, indent: Optional[int] = 1,
               sort_keys: bool = False,
               default: Optional[Callable[[Any], Any]] = None) -> str:
  """Writes `value` as JSON to `path` atomically, ending in a newline.

  The text goes to a temporary file in the same folder (made if missing),
  flushed and synced to disk, which then replaces `path` in one
  `os.replace`: a kill or a full disk leaves `path` as it was, and the
  temporary file is removed on any failure.

  Args:
    path: the JSON file.
    value: what `json.dump` writes.
    indent, sort_keys, default: as in `json.dump`.

  Returns:
    `path`.
  """
  with replacing(path) as f:
    json.dump(value, f, indent=indent, sort_keys=sort_keys, default=default)
    f.write("\n")
  return path


@contextlib.contextmanager
def replacing(path: str) -> Iterator[TextIO]:
  """A UTF-8 text file that replaces `path` atomically when the block ends.

      with fileio.replacing(manifest) as f:
        f.write(line)

  The file is a temporary one in the same folder (made if missing); at the
  end of the block it is flushed, synced to disk and renamed onto `path`
  (`os.replace`). If the block raises, or anything fails, the temporary file
  is removed and `path` is as it was.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder,
                             prefix=f".{os.path.basename(path)}.tmp-")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is not an output's
    os.replace(tmp, path)
  except BaseException:
    if os.path.lexists(tmp):
      os.remove(tmp)
    raise


def describe_os_error(error: OSError, path: Optional[str] = None) -> str:
  """One line for an OSError: "no space left on <path>" for a full disk."""
  where = path or error.filename or "?"
  if error.errno in (errno.ENOSPC, errno.EDQUOT):
    return f"no space left on {where}"
  reason = error.strerror or str(error)
  return f"{where}: {reason}"


def is_no_space(error: BaseException) -> bool:
  """Whether `error` (an OSError or a TensorFlow error) means a full disk."""
  if isinstance(error, OSError):
    return error.errno in (errno.ENOSPC, errno.EDQUOT)
  return "No space left on device" in str(error)


class FolderLock:
  """An exclusive lock on an output folder for one run.

      with FolderLock(workdir, "train"):
        ...  # a second run into workdir fails at once with FolderInUse

  The lock is `flock` on `<folder>/.e2s.lock`: released by the kernel when the
  process exits or is killed, so a lock left by a dead process is free. The
  file stays (it is this program's file; removing it could let two runs hold
  two different inodes). Folders on non-local file systems (`gs://`, ...) are
  not locked.
  """

  def __init__(self, folder: str, program: str):
    self.folder = folder
    self.program = program
    self.path = os.path.join(folder, LOCK_FILE)
    self._fd: Optional[int] = None

  def acquire(self) -> "FolderLock":
    if "://" in self.folder:
      return self
    os.makedirs(self.folder, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise FolderInUse(
          f"{self.folder} is in use by another run ({holder}); wait for it to "
          "finish or stop it, or choose another folder") from None
    except BaseException:
      os.close(fd)
      raise
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    info = {"program": self.program, "pid": os.getpid(),
            "host": socket.gethostname(), "started": started}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "FolderLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):
    info = {}
  if not info:
    return "its details are not written yet"
  return (f"{info.get('program', '?')}, pid {info.get('pid', '?')} on "
          f"{info.get('host', '?')}, started {info.get('started', '?')}")


# ----------------------------------------------------------------------------
# Folders written whole.


def write_folder(folder: str, write: Callable[[str], None], marker: str,
                 overwrite: bool = False, program: str = "export",
                 protect: Sequence[str] = ()) -> None:
  """Writes `folder` whole: `write(tmp)` fills a temporary sibling, which
  then takes `folder`'s place in one atomic exchange.

  `folder` may be replaced when it does not exist, is empty, or is a previous
  output of this kind: it holds `marker` and no entry that the new output
  does not have (a file someone added is never deleted); anything else only
  with `overwrite`. A `folder` that is or holds one of `protect` (e.g. the
  training workdir) is refused even then. A second writer of the same folder is refused (`FolderLock` on
  the sibling `.<name>.lock`). On any failure only the temporary folder is
  removed and `folder` is as it was; a pre-existing `<folder>.tmp` or other
  sibling is never touched.

  Raises:
    FolderNotReplaceable: `folder` holds something else and not `overwrite`,
      or it holds a `protect` path; `folder` is as it was.
    FolderInUse: another run writes `folder`.
    OSError: writing failed; errno ENOSPC for a full disk, also when
      TensorFlow's writer reported it.
  """
  target = os.path.abspath(folder)
  parent, name = os.path.split(target)
  if not name:
    raise FolderNotReplaceable(f"{folder} names no folder")
  real = os.path.realpath(target)
  for path in protect:
    if _inside(os.path.realpath(path), real):
      raise FolderNotReplaceable(f"{folder} holds {path}: choose another "
                                 "folder")
  os.makedirs(parent, exist_ok=True)
  with FolderLock(os.path.join(parent, f".{name}.lock"), program):
    _check_replaceable(target, folder, marker, overwrite)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
    try:
      os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 is not an output's
      write(tmp)
      if not overwrite and os.path.isdir(target):
        foreign = sorted(set(os.listdir(target)) - set(os.listdir(tmp)))
        if foreign:
          raise FolderNotReplaceable(
              f"{folder} holds entries that {program} does not write "
              f"({', '.join(foreign[:5])}); move them away or pass "
              "--overwrite to replace the folder with them")
      _swap_in(tmp, target)
    except BaseException as e:
      _remove(tmp)
      if not isinstance(e, OSError) and is_no_space(e):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder
                      ) from None
      raise
    _remove(tmp)  # what was there before, exchanged into tmp


def _umask() -> int:
  mask = os.umask(0o22)
  os.umask(mask)
  return mask


def _check_replaceable(target: str, shown: str, marker: str,
                       overwrite: bool) -> None:
  if overwrite or not os.path.lexists(target):
    return
  if os.path.isdir(target) and not os.path.islink(target):
    entries = os.listdir(target)
    if not entries or marker in entries:
      return
    what = f"holds {len(entries)} entries and no {marker}"
  else:
    what = "is a file or a link"
  raise FolderNotReplaceable(
      f"{shown} exists and is not an output of this program ({what}); pass "
      "--overwrite to replace it, or choose another folder")


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
  """Swaps the paths `a` and `b` atomically (Linux renameat2); False when
  this system or file system cannot."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                        ctypes.c_char_p, ctypes.c_uint]
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
               _RENAME_EXCHANGE) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False
  raise OSError(code, os.strerror(code), b)


def _swap_in(new: str, target: str) -> None:
  """Puts folder `new` at `target`; what `target` held is then at `new`."""
  if not os.path.lexists(target):
    os.rename(new, target)
    return
  if _exchange(new, target):
    return
  # No atomic exchange: move the old one aside into `new`, then rename.
  parent, name = os.path.split(target)
  aside = tempfile.mkdtemp(dir=parent, prefix=f".{name}.old-")
  os.rename(target, os.path.join(aside, name))
  try:
    os.rename(new, target)
  except BaseException:
    os.rename(os.path.join(aside, name), target)
    os.rmdir(aside)
    raise
  os.rename(aside, new)


def _remove(path: str) -> None:
  if os.path.islink(path) or os.path.isfile(path):
    os.remove(path)
  elif os.path.isdir(path):
    shutil.rmtree(path, ignore_errors=True)
