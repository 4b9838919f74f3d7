"""The output folder of a run: which files are this program's, holding the
folder for the run, writing shards under temporary names, and replacing the
previous dataset by the new one (`commit`) or removing the temporaries of a
failed run (`discard`).

Only this program's files are ever deleted: shards by the names
`records.shard_name` makes, its reports and its temporaries (`is_own_file`).
A folder with a dataset_info.json is complete; until the new one is in place
the previous complete dataset stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Iterator, Sequence

import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import records
from e2s_tf.preprocessing.errors import PreprocessError
from e2s_tf.preprocessing.plan import Plan

# This program's files in out_dir besides the shards (see `is_own_file`).
PIECES_REPORT = "pieces.jsonl"
FAILED_REPORT = "rejected.failed.jsonl"
TMP = ".tmp"
_SHARD_PATTERN = re.compile(
    r"(%s)-\d{5,}-of-\d{5,}%s(%s)?" % ("|".join(records.SPLITS),
                                      re.escape(records.SHARD_SUFFIX),
                                      re.escape(TMP)))
# The Beam path's per-run totals (beam_preprocess.summary_path, a temporary).
BEAM_SUMMARY = "beam_summary.json"
_OWN_REPORTS = (records.DATASET_INFO, records.REJECTED_REPORT, PIECES_REPORT,
                FAILED_REPORT, BEAM_SUMMARY)


def is_own_file(name: str) -> bool:
  """Whether `name` (in out_dir) is one this program writes: a shard
  (`<split>-NNNNN-of-NNNNN.tfrecord`, or its `.tmp`), dataset_info.json, a
  report, or the temporary of one. Nothing else is ever deleted."""
  if _SHARD_PATTERN.fullmatch(name):
    return True
  base = name[:-len(TMP)] if name.endswith(TMP) else name
  return base in _OWN_REPORTS


def _read_previous(info_path: str) -> tuple[dict, str]:
  """The folder's dataset_info (or {}) and why it cannot be read ("")."""
  try:
    with tf.io.gfile.GFile(info_path) as f:
      old = json.load(f)
    if not isinstance(old, dict):
      raise ValueError(f"a JSON {type(old).__name__}, not an object")
  except ValueError as e:
    return {}, str(e).splitlines()[0]
  return old, ""


@contextlib.contextmanager
def open_output(plan: Plan, overwrite: bool,
                progress: bool = True) -> Iterator[Plan]:
  """Holds `plan.out_dir` for the run and checks what it holds.

      with open_output(plan, overwrite):
        if plan.complete is not None: ...  # nothing to do

  Takes the folder's lock (a second run fails at once with
  `fileio.FolderInUse`, which names this one; a lock left by a killed run is
  taken over), sets `plan.complete` when the folder already holds this
  manifest's result with these settings and `plan.previous` when it holds a
  complete dataset, and removes this program's temporaries of an interrupted
  run (they are never part of a complete dataset). The lock is released on
  leaving.

  Raises:
    fileio.FolderInUse: another live run holds the folder.
    PreprocessError: the folder holds another dataset and not `overwrite`.
  """
  lock = fileio.FolderLock(plan.out_dir, "preprocess")
  try:
    lock.acquire()
  except OSError as e:
    raise PreprocessError(fileio.describe_os_error(e, plan.out_dir)) from None
  try:
    info_path = os.path.join(plan.out_dir, records.DATASET_INFO)
    if tf.io.gfile.exists(info_path):
      old, unreadable = _read_previous(info_path)
      plan.previous = True
      if unreadable and not overwrite:
        raise PreprocessError(
            f"{info_path} cannot be read ({unreadable}): the dataset there is "
            "damaged; pass --overwrite to rebuild it, or choose another "
            "--out_dir")
      # The fingerprint covers the schema version; the version is compared
      # as well, so that a folder of another one is never taken as done.
      if (old.get("fingerprint") == plan.fingerprint and
          old.get("version") == records.SCHEMA_VERSION):
        if progress:
          print(f"{plan.out_dir}: already complete for this manifest and "
                "settings; nothing to do")
        plan.complete = old
      elif not overwrite:
        raise PreprocessError(
            f"{plan.out_dir} holds a dataset made from another manifest or "
            "other settings; pass --overwrite to replace it, or choose another "
            "--out_dir")
    if plan.complete is None:
      tf.io.gfile.makedirs(plan.out_dir)
      discard(plan.out_dir)
    yield plan
  finally:
    lock.release()


@contextlib.contextmanager
def no_space_is_an_error(out_dir: str) -> Iterator[None]:
  """Turns a full disk (an OSError or a TensorFlow error, however it comes)
  into a PreprocessError "no space left on <out_dir>"."""
  try:
    yield
  except PreprocessError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if fileio.is_no_space(e):
      raise PreprocessError(f"no space left on {out_dir}") from None
    raise


class ShardWriter:
  """Round-robin writer of one split's shards, under `.tmp` names until done."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)
    self._writers = []
    for p in self.paths:
      self._writers.append(tf.io.TFRecordWriter(p + TMP))
    self._next = 0

  def write(self, example: bytes) -> None:
    self._writers[self._next].write(example)
    self._next = (self._next + 1) % len(self._writers)

  def close(self) -> None:
    """Closes the files (flushing them); the first error is raised after all
    are closed. `commit` then renames them, `discard` removes them."""
    error = None
    for w in self._writers:
      try:
        w.close()
      except (OSError, tf.errors.OpError) as e:
        error = error or e
    if error is not None:
      raise error


def write_text_tmp(path: str, text: str) -> str:
  """Writes `text` to `path.tmp` (complete when this returns); returns path."""
  with tf.io.gfile.GFile(path + TMP, "w") as f:
    f.write(text)
  return path


def rename_tmp(path: str) -> None:
  """Gives `path.tmp` its name `path` (replacing what is there)."""
  tf.io.gfile.rename(path + TMP, path, overwrite=True)


def remove_if_exists(path: str) -> None:
  # Removing and ignoring "not found" asks the file system once, and does not
  # trust `exists`: ram:// says a path exists when another one starts with it
  # (`x` when there is `x.tmp`).
  try:
    tf.io.gfile.remove(path)
  except tf.errors.NotFoundError:
    pass


def discard(out_dir: str) -> None:
  """Removes this program's temporaries from `out_dir` (never anything else,
  and never a complete file)."""
  if not tf.io.gfile.isdir(out_dir):
    return
  for name in tf.io.gfile.listdir(out_dir):
    if name.endswith(TMP) and is_own_file(name):
      try:
        remove_if_exists(os.path.join(out_dir, name))
      except (OSError, tf.errors.OpError):
        pass  # best effort: a temporary never looks complete anyway


def commit(plan: Plan, new_files: Sequence[str]) -> None:
  """Replaces the previous dataset in `plan.out_dir` with the new one.

  Every file of the new dataset is complete under its temporary name
  (`<name>.tmp`, dataset_info.json's too) before this is called. In order:
  the old dataset_info.json goes (from here on the folder is not complete),
  the new files take their names, files of this program's names that the new
  dataset does not have go (old shards, reports), and dataset_info.json takes
  its name last. Renames need no space, so a full disk cannot stop this
  half-way.

  Raises:
    PreprocessError: a temporary file is missing (nothing is changed then).
  """
  info = os.path.join(plan.out_dir, records.DATASET_INFO)
  names = [os.path.basename(p) for p in new_files]
  missing = [p + TMP for p in new_files if not tf.io.gfile.exists(p + TMP)]
  if missing or not tf.io.gfile.exists(info + TMP):
    raise PreprocessError(f"files were not written: {missing[:3] or info}")
  remove_if_exists(info)
  for path in new_files:
    rename_tmp(path)
  keep = set(names) | {records.DATASET_INFO + TMP}
  for name in tf.io.gfile.listdir(plan.out_dir):
    if name not in keep and name != records.DATASET_INFO and is_own_file(name):
      remove_if_exists(os.path.join(plan.out_dir, name))
  rename_tmp(info)
