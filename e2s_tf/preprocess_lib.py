"""Manifest -> train/valid/test TFRecord shards + dataset_info.json, on a
local process pool.

`run_preprocess` runs the steps of `preprocessing.run` (the same as the Beam
runner, `e2s_tf.beam_preprocess`): everything is checked before `out_dir` is
touched, the folder is locked for the run, and the new dataset replaces the
previous one only once it is complete. Step 3 here is a process pool of
`items.ItemProcessor`s (one per worker process) whose results are written,
in task order, to the shards' temporaries.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
from typing import Any, Iterable

import tqdm

from e2s_tf.preprocessing import items
from e2s_tf.preprocessing import output
from e2s_tf.preprocessing import plan as plan_lib
from e2s_tf.preprocessing import run
from e2s_tf.preprocessing import stats

_WORKER = {}


def _init_worker(embedder_spec, embedder_options, config_dict, frame_tolerance,
                 embedding_dtype):
  _WORKER["processor"] = items.ItemProcessor(embedder_spec, embedder_options,
                                             config_dict, frame_tolerance,
                                             embedding_dtype)


def _work(task) -> items.ItemResult:
  return _WORKER["processor"](task)


# TensorFlow's in-memory file system is per process: the pool's workers,
# spawned, start with an empty one and would not find its files.
_PER_PROCESS_FILESYSTEM = "ram://"


def _reads_per_process_files(plan: plan_lib.Plan) -> bool:
  """Whether the workers would read files on ram:// (audio, .npy, the
  embedder's model): then the items are processed in this process."""
  paths = [plan.embedder_spec.split(":", 1)[-1]] + [
      str(task.get(key) or "") for task, _ in plan.tasks()
      for key in ("audio", "embedding")]
  return any(p.startswith(_PER_PROCESS_FILESYSTEM) for p in paths)


def _iterate(plan: plan_lib.Plan,
             num_workers: int) -> Iterable[items.ItemResult]:
  """The results of `plan`'s tasks, in task order: in `num_workers` spawned
  processes, or in this one for one worker or inputs on ram:// (which a
  spawned process cannot see)."""
  init_args = (plan.embedder_spec, plan.embedder_options,
               plan.config.to_dict(), plan.frame_tolerance,
               plan.embedding_dtype)
  if num_workers <= 1 or _reads_per_process_files(plan):
    _init_worker(*init_args)
    for task in plan.tasks():
      yield _work(task)
    return
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(num_workers, initializer=_init_worker,
                initargs=init_args) as pool:
    yield from pool.imap(_work, plan.tasks(), chunksize=2)


def _write_shards(plan: plan_lib.Plan, settings: plan_lib.Settings
                  ) -> stats.Summary:
  """Processes every task into the shards' temporaries; their Summary."""
  summary = stats.Summary()
  workers = settings.num_workers or min(os.cpu_count() or 1, 8)
  writers = {s: output.ShardWriter(plan.shard_paths(s))
             for s in plan.num_shards}
  bar = tqdm.tqdm(total=len(plan.tasks()), desc="preprocess", unit="item",
                  disable=not settings.progress)
  try:
    # Closed on any error, which stops the worker processes at once.
    with contextlib.closing(_iterate(plan, workers)) as results:
      for r in results:
        bar.update(1)
        if r.ok:
          writers[r.split].write(r.example)
        summary.add(r)
  finally:
    bar.close()  # before any error message, which gets its own line
    for w in writers.values():
      w.close()
  return summary


def run_preprocess(manifest: str, out_dir: str, embedder_spec: str = "logmel",
                   **settings: Any) -> dict[str, Any]:
  """Runs the whole preprocessing locally; returns the dataset_info dict.

  Everything is checked before `out_dir` is touched (see
  `preprocessing.run`); the folder is locked for the run. A re-run of a
  completed run with the same manifest and settings returns the existing
  dataset_info without work; anything else (an interrupted run, other
  settings with `overwrite`) writes a new dataset beside the previous one and
  replaces it once complete.
  Items longer than `max_item_seconds` (0: none) become pieces
  `<id>/part-NNN`, cut at pauses, in the item's split.

  Args:
    manifest: the manifest.jsonl.
    out_dir: the dataset's folder.
    embedder_spec: logmel | mfcc | npy | savedmodel:PATH | onnx:PATH.
    **settings: the other fields of `preprocessing.plan.Settings`
      (embedder_options, config, split_by, valid_fraction, test_fraction,
      seed, frame_tolerance, items_per_shard, embedding_dtype, num_workers,
      max_rejected_fraction, overwrite, progress, max_item_seconds).

  Raises:
    PreprocessError: bad settings, no item or more than
      `max_rejected_fraction` of them usable (the rejected-items report is
      written), a full disk ("no space left on <out_dir>").
    fileio.FolderInUse: another run writes into `out_dir`.
    ValueError, FileNotFoundError: a malformed or missing manifest, a split
      the items cannot fill.
    TypeError: a setting that `Settings` does not have.
  """
  s = plan_lib.Settings(embedder_spec=embedder_spec, **settings)
  return run.run_steps(manifest, out_dir, s,
                       functools.partial(_write_shards, settings=s))
