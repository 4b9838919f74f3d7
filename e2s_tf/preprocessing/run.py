"""The four steps of a run, shared by the local and the Beam runner:

1. `plan.plan_preprocess` checks everything that can be checked without
   touching `out_dir`: the settings, the manifest, the embedder and its
   options, the split (a bad one fails here, and nothing is written or
   deleted).
2. `output.open_output` locks `out_dir` for the run (`fileio.FolderLock`: a
   second run fails at once, naming the first) and looks at what is there:
   the same manifest and settings already complete -> nothing to do; another
   dataset -> refused without `overwrite`.
3. `plan.prepare` learns what needs the data (an npy embedder's dimension),
   cuts items longer than `max_item_seconds` into pieces, and fixes the
   shards; then the runner processes the tasks (`items.ItemProcessor`) and
   writes the examples to shards under temporary names
   (`<split>-NNNNN-of-NNNNN.tfrecord.tmp`), adding every result to a
   `stats.Summary`.
4. `reports.finish` checks the run and writes the reports and
   dataset_info.json, also under temporary names; only then does it replace
   the previous dataset (`output.commit`): its dataset_info.json goes first,
   the new files take their names, files of this program's names that the
   new dataset does not list go, and the new dataset_info.json comes last.

A failed run (an error, a full disk, too many rejections) removes its
temporaries and leaves the previous dataset intact.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from e2s_tf.preprocessing import output
from e2s_tf.preprocessing import plan as plan_lib
from e2s_tf.preprocessing import reports
from e2s_tf.preprocessing import stats


def run_steps(manifest: str, out_dir: str, settings: plan_lib.Settings,
              write_shards: Callable[[plan_lib.Plan], stats.Summary]
              ) -> dict[str, Any]:
  """Runs the four steps (module doc); returns the dataset_info dict.

  Args:
    manifest, out_dir: the manifest.jsonl and the dataset's folder.
    settings: the run's settings.
    write_shards: step 3's work: processes `plan.tasks()` into the
      temporaries of `plan.shard_paths(split)` and returns their Summary.
  """
  plan = plan_lib.plan_preprocess(manifest, out_dir, settings)
  with output.open_output(plan, settings.overwrite, settings.progress):
    if plan.complete is not None:
      return plan.complete
    plan_lib.prepare(plan, settings.progress)
    start = time.time()
    try:
      with output.no_space_is_an_error(out_dir):
        summary = write_shards(plan)
    except BaseException:
      output.discard(out_dir)
      raise
    return reports.finish(plan, summary, start,
                          settings.max_rejected_fraction, settings.progress)
