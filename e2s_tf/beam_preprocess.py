r"""Preprocessing as an Apache Beam pipeline, on any Beam runner.

The same plan, per-item function, totals and finishing as the local path
(`preprocess_lib.run_preprocess`), all from `e2s_tf.preprocessing`, so both
write the same examples and the same dataset_info.json:

    python -m e2s_tf.preprocess --manifest=M --out_dir=T --embedder=logmel \
        --runner=DirectRunner

The launcher (this process) runs the steps of `preprocessing.run`: it checks
the settings, the manifest, the embedder and the split before it touches
`out_dir` (`plan.plan_preprocess`), locks `out_dir` for the run
(`output.open_output`; a local folder, see `fileio.FolderLock`), and fixes the
tasks (long items cut into pieces) and the shard counts (`plan.prepare`); the
pipeline then runs

    Create(tasks) -> Reshuffle -> ParDo(ItemProcessor) -+-> <split> examples
        -> WriteToTFRecord(<split>-SSSSS-of-NNNNN.tfrecord.tmp), per split
                                                        +-> results without
        their example -> CombineGlobally(Summary) -> one-line JSON summary

and once it has finished the launcher reads the summary and runs
`reports.finish`: the checks, the reports, and the replacement of the
previous dataset by the new one (`output.commit`), dataset_info.json last.
A failed or rejected run removes the temporary shards and leaves the previous
dataset as it was; only this program's files are ever deleted.

Runners other than the DirectRunner (Dataflow, Flink, Spark) take their own
pipeline options (project, region, temp_location, ...). Their workers need
the `e2s_tf` package and requirements.txt (e.g. a custom container via
`--sdk_container_image`), the audio (and .npy) paths must be readable from
them, and `out_dir` must be a filesystem shared with the launcher (e.g.
gs://, which needs apache-beam's `gcp` extra); the manifest is read by the
launcher. `out_dir` must be on a file system Beam has
(`check_beam_filesystem`: not ram://), and inputs on ram:// (TensorFlow's
in-memory file system, one per process) are seen only by the DirectRunner's
in-process mode (`num_workers=1`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.options import pipeline_options
import tensorflow as tf

from e2s_tf import records
from e2s_tf.preprocessing import items
from e2s_tf.preprocessing import output
from e2s_tf.preprocessing import plan as plan_lib
from e2s_tf.preprocessing import run
from e2s_tf.preprocessing import stats
from e2s_tf.preprocessing.errors import PreprocessError

DIRECT_RUNNER = "DirectRunner"
# The pipeline's summary, read back by the launcher and then removed.
SUMMARY_PREFIX = output.BEAM_SUMMARY[:-len(".json")]
SUMMARY_SUFFIX = ".json" + output.TMP
# Beam's shard template for records.shard_name: `-%05d-of-%05d`.
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
_MAIN = "results"


class ProcessItemsFn(beam.DoFn):
  """`(item, speaker_index)` -> the example on its split's tagged output, and
  the `ItemResult` without its example on the main output."""

  def __init__(self, embedder_spec: str, embedder_options: Mapping[str, Any],
               config_dict: Mapping[str, Any], frame_tolerance: int,
               embedding_dtype: str):
    super().__init__()
    self._args = (embedder_spec, dict(embedder_options), dict(config_dict),
                  frame_tolerance, embedding_dtype)
    self._processor = None
    self._accepted = beam.metrics.Metrics.counter("preprocess", "accepted")
    self._rejected = beam.metrics.Metrics.counter("preprocess", "rejected")

  def setup(self):
    # The embedder (possibly a SavedModel) is built once per DoFn instance.
    self._processor = items.ItemProcessor(*self._args)

  def process(self, task) -> Iterator[Union[items.ItemResult,
                                            beam.pvalue.TaggedOutput]]:
    r = self._processor(task)
    if r.ok:
      self._accepted.inc()
      yield beam.pvalue.TaggedOutput(r.split, r.example)
    else:
      self._rejected.inc()
    yield dataclasses.replace(r, example=None)


class SummaryCombineFn(beam.CombineFn):
  """Combines `ItemResult`s into one `stats.Summary`.

  Counts and float64 sums / sums of squares merge exactly as the local path
  adds them (up to the order of float additions); lengths are kept per split
  for exact quantiles, which is cheap at one integer per item.
  """

  def create_accumulator(self) -> stats.Summary:
    return stats.Summary()

  def add_input(self, summary, result) -> stats.Summary:
    return summary.add(result)

  def merge_accumulators(self, summaries) -> stats.Summary:
    out = stats.Summary()
    for s in summaries:
      out.merge(s)
    return out

  def extract_output(self, summary) -> stats.Summary:
    return summary


def summary_path(out_dir: str) -> str:
  return os.path.join(out_dir, SUMMARY_PREFIX + SUMMARY_SUFFIX)


def build_pipeline(pipeline: beam.Pipeline, plan: plan_lib.Plan):
  """Adds the preprocessing of `plan` to `pipeline` (see the module doc)."""
  tasks = (pipeline
           | "Tasks" >> beam.Create(plan.tasks())
           # Spreads the items over the workers (Create alone may keep them
           # in one bundle).
           | "Spread" >> beam.Reshuffle())
  results = tasks | "Process" >> beam.ParDo(ProcessItemsFn(
      plan.embedder_spec, plan.embedder_options, plan.config.to_dict(),
      plan.frame_tolerance, plan.embedding_dtype)).with_outputs(
          *plan.num_shards, main=_MAIN)
  for split, num_shards in plan.num_shards.items():
    _ = results[split] | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
        os.path.join(plan.out_dir, split),
        file_name_suffix=records.SHARD_SUFFIX + output.TMP,
        num_shards=num_shards, shard_name_template=SHARD_TEMPLATE)
  _ = (results[_MAIN]
       | "Summarise" >> beam.CombineGlobally(SummaryCombineFn())
       | "ToJson" >> beam.Map(lambda s: s.to_json())
       | "WriteSummary" >> beam.io.WriteToText(
           os.path.join(plan.out_dir, SUMMARY_PREFIX),
           file_name_suffix=SUMMARY_SUFFIX, num_shards=1,
           shard_name_template=""))


def make_pipeline_options(runner: str, pipeline_args: Sequence[str] = (),
                          num_workers: Optional[int] = None
                          ) -> pipeline_options.PipelineOptions:
  """Beam options: `runner`, then `pipeline_args` as given.

  The DirectRunner gets `num_workers` worker processes (default: the cores,
  at most 8; `multi_processing` mode) unless `pipeline_args` set
  `--direct_num_workers` or `--direct_running_mode` themselves.
  """
  args = [f"--runner={runner}"] + list(pipeline_args)
  direct = runner.split(".")[-1] in (DIRECT_RUNNER, "BundleBasedDirectRunner")
  if direct and not any(a.startswith(("--direct_num_workers",
                                      "--direct_running_mode"))
                        for a in pipeline_args):
    workers = num_workers or min(os.cpu_count() or 1, 8)
    args += [f"--direct_num_workers={workers}",
             "--direct_running_mode=" + ("multi_processing" if workers > 1
                                         else "in_memory")]
  return pipeline_options.PipelineOptions(args)


def check_beam_filesystem(out_dir: str) -> None:
  """Refuses an `out_dir` that Beam's writers cannot write, before anything
  is done.

  The shards are written by Beam (`WriteToTFRecord`), through Beam's own
  file systems: local, gs:// (apache-beam's `gcp` extra), s3:// (`aws`),
  hdfs:// (`hadoop`); not TensorFlow's alone (ram://, or gs:// without the
  extra), which the local path (`preprocess_lib`) writes.

  Raises:
    PreprocessError: saying so.
  """
  from apache_beam.io import filesystems  # pylint: disable=g-import-not-at-top
  try:
    filesystems.FileSystems.get_filesystem(out_dir)
  except (ValueError, OSError) as e:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise PreprocessError(
        f"--out_dir={out_dir}: the Beam pipeline cannot write there (Beam "
        f"has no file system for it: {reason}); preprocess without --runner, "
        "or choose a folder on a file system Beam has") from None


def _remove_if_exists(path: str):
  try:
    output.remove_if_exists(path)
  except (OSError, tf.errors.OpError):
    pass  # a temporary of this program's; it never looks complete


def _run_pipeline(plan: plan_lib.Plan, options, runner: str,
                  progress: bool) -> stats.Summary:
  """Runs the pipeline of `plan`; the Summary it wrote."""
  summary_file = summary_path(plan.out_dir)
  _remove_if_exists(summary_file)
  try:
    if progress:
      print(f"preprocess: {len(plan.tasks())} items on the Beam {runner}")
    with beam.Pipeline(options=options) as pipeline:
      build_pipeline(pipeline, plan)
    if not tf.io.gfile.exists(summary_file):
      raise PreprocessError(f"the {runner} pipeline finished without writing "
                            f"{summary_file}")
    with tf.io.gfile.GFile(summary_file) as f:
      return stats.Summary.from_json(f.read())
  finally:
    _remove_if_exists(summary_file)


def run_beam_preprocess(manifest: str, out_dir: str,
                        embedder_spec: str = "logmel", *,
                        runner: str = DIRECT_RUNNER,
                        pipeline_args: Sequence[str] = (),
                        **settings: Any) -> dict[str, Any]:
  """`preprocess_lib.run_preprocess` as a Beam pipeline on `runner`.

  Arguments as `run_preprocess` (the same settings give the same fingerprint,
  so either path recognises the other's complete result), plus the Beam
  `runner` and extra `pipeline_args` (e.g. `["--project=p",
  "--region=europe-west1", "--temp_location=gs://b/tmp"]`); `num_workers` sets
  the DirectRunner's worker processes (see `make_pipeline_options`).

  Returns:
    The dataset_info dict.

  Raises:
    PreprocessError: as `run_preprocess`; the pipeline's own errors propagate
      after the temporary shards and summary are removed (a full disk as
      "no space left on <out_dir>").
    fileio.FolderInUse: another run writes into `out_dir`.
  """
  s = plan_lib.Settings(embedder_spec=embedder_spec, **settings)
  check_beam_filesystem(out_dir)
  options = make_pipeline_options(runner, pipeline_args, s.num_workers)
  return run.run_steps(
      manifest, out_dir, s,
      lambda plan: _run_pipeline(plan, options, runner, s.progress))
