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

Every file the programs read or write goes through this module (or through
TensorFlow's own writers and readers: TFRecords, checkpoints, SavedModels,
summaries), so that a path may name any file system TensorFlow has. A path
`scheme://...` (gs://, s3://, hdfs://, ram://, ...: `is_remote`) goes through
`tf.io.gfile`; any other path is a local one and goes through `os` exactly as
before (fsync, permissions, links, locks). TensorFlow is imported only for a
`scheme://` path, and its errors come out as the `OSError` a local call raises
(a `FileNotFoundError` for a missing file). The helpers: `exists`, `isdir`,
`isfile`, `getsize`, `makedirs`, `listdir`, `walk`, `glob`, `remove`,
`rmtree`, `copy`, `rename`, `open`, `read_bytes`, `read_text`, `read_json`,
`write_bytes` (atomic, as `write_json`), `load_npy` / `save_npy`
(`allow_pickle=False`), `read_audio` / `write_audio` (soundfile through a file
object), `local_copy` (for a library that opens a file by name), and the path
functions `normpath`, `abspath`, `realpath`, `isabs`, `relpath`, `dirname`.

What a non-local file system does not give: a lock (`FolderLock` does not lock
there), fsync and permissions (the file system's own), and atomic folder
replacement (`write_folder` moves file by file there, see its doc). A file is
still written under a temporary name and renamed (`tf.io.gfile.rename`), so a
reader sees the previous file or the new one whole where the file system's
rename of a file is atomic (local, HDFS; GCS and S3 copy the object, which
appears whole once copied).

ram:// (TensorFlow's in-memory file system, one per process: what the tests
run the chain on) has quirks of its own: a path exists, as a folder, when
another path starts with it (`x` when there is `x.tmp`; `x` lists `x_y` as
`_y`); only folders made with `makedirs` are listed, not ones a file's path
implies; writing a file that exists appends to it; renaming a folder moves its
entry and leaves its files where they were. Writing every file under a fresh
temporary name and renaming it, and `write_folder` moving file by file, are
not affected.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import datetime
import errno
import fcntl
import glob as glob_lib
import importlib
import io
import json
import os
import posixpath
import re
import shutil
import socket
import tempfile
from typing import IO, Any, Callable, Iterator, Optional, Sequence
import uuid

import numpy as np

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

  A `scheme://` folder has no links to follow: the same check is made on the
  normalised path alone.
  """
  check_item_id(item_id)
  if "/" in suffix or suffix in (".", ".."):
    raise ValueError(f"suffix {suffix!r} must not hold '/'")
  if is_remote(folder):
    root = normpath(folder)
    path = os.path.join(root, item_id + suffix)
    if not _inside_remote(normpath(path), root):
      raise InvalidItemId(f"item id {item_id!r}: {path} lies outside "
                          f"{folder}")
    return path
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


def write_bytes(path: str, data: bytes) -> str:
  """Writes `data` to `path` atomically (as `replacing`); returns `path`."""
  with replacing(path, binary=True) as f:
    f.write(data)
  return path


@contextlib.contextmanager
def replacing(path: str, binary: bool = False) -> Iterator[IO]:
  """A UTF-8 text file (bytes with `binary`) that replaces `path`
  atomically when the block ends.

      with fileio.replacing(manifest) as f:
        f.write(line)

  The file is a temporary one in the same folder (made if missing); at the
  end of the block it is flushed, synced to disk and renamed onto `path`
  (`os.replace`). If the block raises, or anything fails, the temporary file
  is removed and `path` is as it was. On a `scheme://` file system it is a
  `tf.io.gfile.GFile` renamed with `tf.io.gfile.rename(overwrite=True)` (no
  fsync; the file system's permissions), removed just the same on failure.
  """
  if is_remote(path):
    with _replacing_remote(path, binary) as f:
      yield f
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder,
                             prefix=f".{os.path.basename(path)}.tmp-")
  try:
    with (os.fdopen(fd, "wb") if binary else
          os.fdopen(fd, "w", encoding="utf-8")) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is not an output's
    os.replace(tmp, path)
  except BaseException:
    if os.path.lexists(tmp):
      os.remove(tmp)
    raise


@contextlib.contextmanager
def _replacing_remote(path: str, binary: bool) -> Iterator[IO]:
  """`replacing` on a `scheme://` file system (tf.io.gfile)."""
  gfile = _gfile(path)
  folder = dirname(path)
  makedirs(folder)
  tmp = os.path.join(folder, f".{posixpath.basename(path)}.tmp-"
                             f"{uuid.uuid4().hex[:8]}")
  try:
    with _as_os_error(tmp):
      f = gfile.GFile(tmp, "wb" if binary else "w")
      f.write(b"" if binary else "")  # the file exists from here on
    try:
      yield f
    finally:
      with _as_os_error(tmp):
        f.close()
    with _as_os_error(path):
      gfile.rename(tmp, path, overwrite=True)
  except BaseException:
    with contextlib.suppress(Exception):
      if gfile.exists(tmp):
        gfile.remove(tmp)
    raise


# ----------------------------------------------------------------------------
# Files on any file system TensorFlow has (see the module doc): a `scheme://`
# path through tf.io.gfile, a local one through os as before.

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# tf.errors.OpError class name -> the errno of the OSError it becomes.
_ERRNO = {"NotFoundError": errno.ENOENT, "AlreadyExistsError": errno.EEXIST,
          "PermissionDeniedError": errno.EACCES,
          "UnauthenticatedError": errno.EACCES,
          "UnimplementedError": errno.EOPNOTSUPP}


def is_remote(path: Any) -> bool:
  """Whether `path` names its file system by a scheme (`gs://b/x`,
  `ram://x`, also `file://`): it then goes through tf.io.gfile."""
  return bool(_SCHEME.match(os.fspath(path)))


# Schemes TensorFlow itself has; the others (s3://, hdfs://, az://, ...) come
# with tensorflow-io's file system plugins, loaded on first use.
_BUILT_IN_SCHEMES = ("gs", "ram", "file")
_PLUGINS = {}


def load_filesystem(path: str) -> None:
  """Makes TensorFlow able to open `path`: for a scheme TensorFlow does not
  have itself (s3://, hdfs://, ...), imports `tensorflow_io`, which
  registers its file systems. Called by every helper here; a program that
  hands a path straight to TensorFlow (TFRecordDataset, checkpoints) after
  one of them finds the scheme registered."""
  scheme = _split_scheme(os.fspath(path))[0][:-3].lower()
  if not scheme or scheme in _BUILT_IN_SCHEMES or scheme in _PLUGINS:
    return
  try:
    importlib.import_module("tensorflow_io")
    _PLUGINS[scheme] = True
  except ImportError:
    _PLUGINS[scheme] = False


def _gfile(path: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  load_filesystem(path)
  return tf.io.gfile


@contextlib.contextmanager
def _as_os_error(path: str) -> Iterator[None]:
  """A tf.errors.OpError of a gfile call as the OSError a local call raises
  (a FileNotFoundError for a missing file, ENOSPC for a full disk)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    yield
  except tf.errors.OpError as e:
    code = (errno.ENOSPC if is_no_space(e)
            else _ERRNO.get(type(e).__name__, errno.EIO))
    reason = e.message if code == errno.EIO else os.strerror(code)
    raise OSError(code, reason, path) from None


def _split_scheme(path: str) -> tuple[str, str]:
  """("gs://", "bucket/x") for "gs://bucket/x"; ("", path) for a local one."""
  match = _SCHEME.match(path)
  return (match.group(0), path[match.end():]) if match else ("", path)


def normpath(path: str) -> str:
  """`os.path.normpath`; for `scheme://` paths on the part after the
  scheme, so that `gs://b/x/../y/` is `gs://b/y` (not `gs:/b/y`), and
  within the bucket: `gs://b/../c` is `gs://b/c`."""
  scheme, rest = _split_scheme(os.fspath(path))
  if not scheme:
    return os.path.normpath(rest)
  if not rest.strip("/"):
    return scheme + rest[:1]
  # The first segment is the bucket (or the top folder): `..` stops there,
  # so `gs://b/../c/x` is `gs://b/c/x`, never another bucket's.
  lead = "/" if rest.startswith("/") else ""
  bucket, _, below = rest.strip("/").partition("/")
  below = posixpath.normpath("/" + below).lstrip("/")
  return scheme + lead + bucket + ("/" + below if below else "")


def abspath(path: str) -> str:
  """`os.path.abspath` of a local path; a `scheme://` one normalised."""
  return normpath(path) if is_remote(path) else os.path.abspath(path)


def realpath(path: str) -> str:
  """`os.path.realpath` of a local path; a `scheme://` one (no links)
  normalised. The folder `output_path` builds its paths on."""
  return normpath(path) if is_remote(path) else os.path.realpath(path)


def isabs(path: str) -> bool:
  """Whether `path` is absolute: a `scheme://` path always is."""
  return is_remote(path) or os.path.isabs(path)


def dirname(path: str) -> str:
  """`os.path.dirname`, keeping a `scheme://` root whole
  (`dirname("ram://x") == "ram://"`)."""
  scheme, rest = _split_scheme(os.fspath(path))
  return scheme + posixpath.dirname(rest) if scheme else os.path.dirname(rest)


def relpath(path: str, start: str) -> str:
  """`os.path.relpath`; `path` itself where no relative path leads there
  (another file system or bucket than `start`'s)."""
  (s1, r1), (s2, r2) = _split_scheme(normpath(path)), _split_scheme(
      normpath(start))
  if not s1 and not s2:
    return os.path.relpath(path, start)
  def top(rest: str) -> str:  # the bucket (or the first folder)
    return rest.lstrip("/").split("/", 1)[0]
  if s1 != s2 or top(r1) != top(r2):
    return path
  return posixpath.relpath("/" + r1.lstrip("/"), "/" + r2.lstrip("/"))


def _inside_remote(path: str, folder: str) -> bool:
  return path == folder or path.startswith(folder.rstrip("/") + "/")


def exists(path: str) -> bool:
  if not is_remote(path):
    return os.path.exists(path)
  with _as_os_error(path):
    return _gfile(path).exists(path)


def isdir(path: str) -> bool:
  if not is_remote(path):
    return os.path.isdir(path)
  with _as_os_error(path):
    return _gfile(path).isdir(path)


def isfile(path: str) -> bool:
  if not is_remote(path):
    return os.path.isfile(path)
  with _as_os_error(path):
    gfile = _gfile(path)
    return gfile.exists(path) and not gfile.isdir(path)


def getsize(path: str) -> int:
  if not is_remote(path):
    return os.path.getsize(path)
  with _as_os_error(path):
    return int(_gfile(path).stat(path).length)


def makedirs(path: str) -> None:
  """Makes the folder `path` and its parents; no error when it exists."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)
    return
  with _as_os_error(path):
    _gfile(path).makedirs(path)


def listdir(path: str) -> list[str]:
  """The names in folder `path` (no trailing `/` on sub-folders).

  On ram:// only folders made with `makedirs` are listed, not ones implied
  by a file's path (TensorFlow's in-memory file system keeps no others).
  """
  if not is_remote(path):
    return os.listdir(path)
  with _as_os_error(path):
    return [n.rstrip("/") for n in _gfile(path).listdir(path)]


def walk(top: str, followlinks: bool = False
         ) -> Iterator[tuple[str, list[str], list[str]]]:
  """`os.walk(top)`, top-down; pruning the sub-folder list in place skips
  them. A `top` that is not a folder yields nothing. (`followlinks`: local
  links to folders are followed, as `glob`'s `**` does.)"""
  if not is_remote(top):
    yield from os.walk(top, followlinks=followlinks)
    return
  try:
    names = listdir(top)
  except OSError:
    return
  folders, files = [], []
  for name in names:
    (folders if isdir(os.path.join(top, name)) else files).append(name)
  yield top, folders, files
  for name in folders:
    yield from walk(os.path.join(top, name))


def glob(pattern: str) -> list[str]:
  """`glob.glob(pattern)` (no `**`), on any file system."""
  if not is_remote(pattern):
    return glob_lib.glob(pattern)
  with _as_os_error(pattern):
    return list(_gfile(pattern).glob(pattern))


def remove(path: str) -> None:
  """Removes the file `path` (FileNotFoundError when there is none)."""
  if not is_remote(path):
    os.remove(path)
    return
  with _as_os_error(path):
    _gfile(path).remove(path)


def rmtree(path: str, ignore_errors: bool = False) -> None:
  """Removes the folder `path` with everything in it (`shutil.rmtree`)."""
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=ignore_errors)
    return
  try:
    with _as_os_error(path):
      _gfile(path).rmtree(path)
  except OSError:
    if not ignore_errors:
      raise


def copy(src: str, dst: str, overwrite: bool = False) -> None:
  """Copies the file `src` to `dst`, between any two file systems.

  Raises:
    FileExistsError: `dst` exists and not `overwrite`.
  """
  if not is_remote(src) and not is_remote(dst):
    if not overwrite and os.path.lexists(dst):
      raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    shutil.copyfile(src, dst)
    return
  with _as_os_error(dst):
    load_filesystem(dst)
    _gfile(src).copy(src, dst, overwrite=overwrite)


def rename(src: str, dst: str, overwrite: bool = False) -> None:
  """Renames the file `src` to `dst` (on one file system).

  Raises:
    FileExistsError: `dst` exists and not `overwrite`.
  """
  if not is_remote(src) and not is_remote(dst):
    if overwrite:
      os.replace(src, dst)
      return
    if os.path.lexists(dst):
      raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)
    return
  with _as_os_error(dst):
    _gfile(src).rename(src, dst, overwrite=overwrite)


def open(path: str, mode: str = "r") -> IO:  # pylint: disable=redefined-builtin
  """The file `path` opened: text is UTF-8. A `scheme://` path gives a
  `tf.io.gfile.GFile` (seek and tell work, so soundfile and numpy can read
  it); a missing one raises FileNotFoundError here, other errors of a GFile
  come as tf.errors.OpError on reading or writing.

  Writing with this is not atomic: use `replacing` or `write_bytes` for an
  output that a reader or a failed run must never see half written.
  """
  if not is_remote(path):
    if "b" in mode:
      return builtins.open(path, mode)
    return builtins.open(path, mode, encoding="utf-8")
  if "r" in mode and not exists(path):
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
  with _as_os_error(path):
    return _gfile(path).GFile(path, mode)


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f, _as_os_error_if_remote(path):
    return f.read()


def read_text(path: str) -> str:
  """The UTF-8 text of `path` (UnicodeDecodeError when it is not)."""
  return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
  """The JSON value of file `path` (ValueError when it is not JSON)."""
  return json.loads(read_text(path))


def load_npy(path: str) -> Any:
  """`np.load(path, allow_pickle=False)` of a file on any file system: an
  array, or an `NpzFile` for an .npz archive (the caller refuses it)."""
  if not is_remote(path):
    return np.load(path, allow_pickle=False)
  return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


def save_npy(path: str, array: Any) -> str:
  """Writes `array` as .npy to `path` atomically (`write_bytes`)."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array), allow_pickle=False)
  return write_bytes(path, buffer.getvalue())


def read_audio(path: str, dtype: str = "float32",
               always_2d: bool = False) -> tuple[np.ndarray, int]:
  """`soundfile.read` of a file on any file system: (samples, rate)."""
  import soundfile  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f, _as_os_error_if_remote(path):
    return soundfile.read(f, dtype=dtype, always_2d=always_2d)


def write_audio(path: str, audio: np.ndarray, sample_rate: int,
                subtype: str = "PCM_16", file_format: str = "WAV") -> str:
  """`soundfile.write` into memory, then `write_bytes` (atomic): `path` is
  absent or complete. Returns `path`."""
  import soundfile  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  soundfile.write(buffer, audio, int(sample_rate), subtype=subtype,
                  format=file_format)
  return write_bytes(path, buffer.getvalue())


def _as_os_error_if_remote(path: str):
  return _as_os_error(path) if is_remote(path) else contextlib.nullcontext()


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
  """A local file with the bytes of `path`, for a library that opens files
  by name (onnxruntime): `path` itself when it is local, else a temporary
  copy (same extension), removed on leaving."""
  if not is_remote(path):
    yield path
    return
  fd, tmp = tempfile.mkstemp(suffix=posixpath.splitext(path)[1],
                             prefix="e2s-")
  os.close(fd)
  try:
    copy(path, tmp, overwrite=True)
    yield tmp
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)


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
    if is_remote(self.folder):
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

  On a `scheme://` file system (gs://, ram://, ...) the same rules hold but
  less is atomic (`_write_folder_remote`): no lock, and the new folder is
  moved in file by file.

  Raises:
    FolderNotReplaceable: `folder` holds something else and not `overwrite`,
      or it holds a `protect` path; `folder` is as it was.
    FolderInUse: another run writes `folder`.
    OSError: writing failed; errno ENOSPC for a full disk, also when
      TensorFlow's writer reported it.
  """
  if is_remote(folder):
    _write_folder_remote(folder, write, marker, overwrite, program, protect)
    return
  target = os.path.abspath(folder)
  parent, name = os.path.split(target)
  if not name:
    raise FolderNotReplaceable(f"{folder} names no folder")
  real = os.path.realpath(target)
  for path in protect:
    if not is_remote(path) and _inside(os.path.realpath(path), real):
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
        _refuse_foreign(folder, program, target, tmp)
      _swap_in(tmp, target)
    except BaseException as e:
      _remove(tmp)
      if not isinstance(e, OSError) and is_no_space(e):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder
                      ) from None
      raise
    _remove(tmp)  # what was there before, exchanged into tmp


def _write_folder_remote(folder: str, write: Callable[[str], None],
                         marker: str, overwrite: bool, program: str,
                         protect: Sequence[str]) -> None:
  """`write_folder` on a `scheme://` file system, through tf.io.gfile.

  The same rules as locally: `write(tmp)` fills a fresh sibling
  `.<name>.tmp-XXXXXXXX`; only an empty folder or a previous output of this
  kind is replaced (else only with `overwrite`), an entry the new output does
  not have is never deleted without `overwrite`, `protect` is refused
  (compared by path alone). What is not the same, because these file systems
  have no atomic exchange of folders and `tf.io.gfile.rename` of a folder
  does not work everywhere (ram:// moves the folder's own entry and leaves
  its files behind; GCS copies object by object):

  - there is no lock: two runs writing one folder at once are not refused;
  - the new output is moved in file by file: the previous output's files go
    aside to `.<name>.old-XXXXXXXX`, then the new files take their places,
    then the old ones are removed. A reader in between may see the folder
    partly filled; a failure while moving puts the previous output back (as
    far as the file system lets it), and a failure while writing leaves it
    untouched. Each file appears whole (a file's rename is atomic on HDFS;
    GCS and S3 copy the object, which appears whole).
  """
  target = normpath(folder)
  parent, name = dirname(target), posixpath.basename(target)
  if not name:
    raise FolderNotReplaceable(f"{folder} names no folder")
  for path in protect:
    if is_remote(path) and _inside_remote(normpath(path), target):
      raise FolderNotReplaceable(f"{folder} holds {path}: choose another "
                                 "folder")
  makedirs(parent)
  if not overwrite and exists(target):
    entries = listdir(target) if isdir(target) else None
    if entries is None or (entries and marker not in entries):
      what = ("is a file" if entries is None else
              f"holds {len(entries)} entries and no {marker}")
      raise FolderNotReplaceable(
          f"{folder} exists and is not an output of this program ({what}); "
          "pass --overwrite to replace it, or choose another folder")
  tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
  try:
    makedirs(tmp)
    write(tmp)
    if not overwrite and isdir(target):
      _refuse_foreign(folder, program, target, tmp)
    _swap_in_remote(tmp, target)
  except BaseException as e:
    _remove(tmp)
    if not isinstance(e, OSError) and is_no_space(e):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder
                    ) from None
    raise
  _remove(tmp)  # its emptied folders


def _move_files(src: str, dst: str) -> None:
  """Moves every file under folder `src` to its place under `dst` (folders
  made as needed, empty ones too), one `rename` per file."""
  for top, _, files in walk(src):
    relative = top[len(src):].strip("/")
    here = os.path.join(dst, relative) if relative else dst
    makedirs(here)
    for name in files:
      rename(os.path.join(top, name), os.path.join(here, name),
             overwrite=True)


def _swap_in_remote(new: str, target: str) -> None:
  """Puts the files of folder `new` at `target` (see
  `_write_folder_remote`); what `target` held is removed."""
  if not exists(target):
    try:
      _move_files(new, target)
    except BaseException:
      _remove(target)  # only new files are there
      raise
    return
  aside = os.path.join(dirname(target),
                       f".{posixpath.basename(target)}.old-"
                       f"{uuid.uuid4().hex[:8]}")
  try:
    _move_files(target, aside)
    _remove(target)  # its emptied folders
  except BaseException:
    _move_files(aside, target)
    _remove(aside)
    raise
  try:
    _move_files(new, target)
  except BaseException:
    _remove(target)  # the new files moved so far
    _move_files(aside, target)
    _remove(aside)
    raise
  _remove(aside)


def _refuse_foreign(folder: str, program: str, target: str, tmp: str) -> None:
  """Raises FolderNotReplaceable when `target` holds entries that the new
  output in `tmp` does not have (someone else's files: never deleted)."""
  foreign = sorted(set(listdir(target)) - set(listdir(tmp)))
  if foreign:
    raise FolderNotReplaceable(
        f"{folder} holds entries that {program} does not write "
        f"({', '.join(foreign[:5])}); move them away or pass "
        "--overwrite to replace the folder with them")


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
  """Removes `path` (a file or a folder), if there; no error."""
  if is_remote(path):
    with contextlib.suppress(OSError):
      if isdir(path):
        rmtree(path)
      elif exists(path):
        remove(path)
    return
  if os.path.islink(path) or os.path.isfile(path):
    os.remove(path)
  elif os.path.isdir(path):
    shutil.rmtree(path, ignore_errors=True)
