r"""Preprocessing as an Apache Beam pipeline, on any Beam runner.

The same plan, per-item function, totals and finishing as the local path
(`preprocess_lib.run_preprocess`), so both write the same examples and the
same dataset_info.json:

    python -m e2s_tf.preprocess --manifest=M --out_dir=T --embedder=logmel \
        --runner=DirectRunner

The launcher (this process) checks the settings, the manifest, the embedder
and the split before it touches `out_dir` (`preprocess_lib.plan_preprocess`),
locks `out_dir` for the run (`preprocess_lib.open_output`; a local folder,
see `fileio.FolderLock`), and fixes the tasks (long items cut into pieces)
and the shard counts (`preprocess_lib.prepare`); the pipeline then runs

    Create(tasks) -> Reshuffle -> ParDo(process_item) --+-> <split> examples
        -> WriteToTFRecord(<split>-SSSSS-of-NNNNN.tfrecord.tmp), per split
                                                        +-> results without
        their example -> CombineGlobally(Summary) -> one-line JSON summary

and once it has finished the launcher reads the summary and runs
`preprocess_lib.finish`: the checks, the reports, and the replacement of the
previous dataset by the new one (`preprocess_lib.commit`), dataset_info.json
last. A failed or rejected run removes the temporary shards and leaves the
previous dataset as it was; only this program's files are ever deleted.

Runners other than the DirectRunner (Dataflow, Flink, Spark) take their own
pipeline options (project, region, temp_location, ...). Their workers need
the `e2s_tf` package and requirements.txt (e.g. a custom container via
`--sdk_container_image`), the audio (and .npy) paths must be readable from
them, and `out_dir` must be a filesystem shared with the launcher (e.g.
gs://, which needs apache-beam's `gcp` extra); the manifest is read by the
launcher.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.options import pipeline_options
import tensorflow as tf

from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral

DIRECT_RUNNER = "DirectRunner"
# The pipeline's summary, read back by the launcher and then removed.
SUMMARY_PREFIX = preprocess_lib.BEAM_SUMMARY[:-len(".json")]
SUMMARY_SUFFIX = ".json" + preprocess_lib.TMP
# Beam's shard template for records.shard_name: `-%05d-of-%05d`.
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
_MAIN = "results"


class ProcessItemsFn(beam.DoFn):
  """`(item, speaker_index)` -> the example on its split's tagged output, and
  the `ItemResult` without its example on the main output."""

  def __init__(self, embedder_spec: str, embedder_options: Mapping[str, Any],
               config_dict: Mapping[str, Any], frame_tolerance: int):
    super().__init__()
    self._args = (embedder_spec, dict(embedder_options), dict(config_dict),
                  frame_tolerance)
    self._processor = None
    self._accepted = beam.metrics.Metrics.counter("preprocess", "accepted")
    self._rejected = beam.metrics.Metrics.counter("preprocess", "rejected")

  def setup(self):
    # The embedder (possibly a SavedModel) is built once per DoFn instance.
    self._processor = preprocess_lib.ItemProcessor(*self._args)

  def process(self, task) -> Iterator[Union[preprocess_lib.ItemResult,
                                            beam.pvalue.TaggedOutput]]:
    r = self._processor(task)
    if r.ok:
      self._accepted.inc()
      yield beam.pvalue.TaggedOutput(r.split, r.example)
    else:
      self._rejected.inc()
    yield dataclasses.replace(r, example=None)


class SummaryCombineFn(beam.CombineFn):
  """Combines `ItemResult`s into one `preprocess_lib.Summary`.

  Counts and float64 sums / sums of squares merge exactly as the local path
  adds them (up to the order of float additions); lengths are kept per split
  for exact quantiles, which is cheap at one integer per item.
  """

  def create_accumulator(self) -> preprocess_lib.Summary:
    return preprocess_lib.Summary()

  def add_input(self, summary, result) -> preprocess_lib.Summary:
    return summary.add(result)

  def merge_accumulators(self, summaries) -> preprocess_lib.Summary:
    out = preprocess_lib.Summary()
    for s in summaries:
      out.merge(s)
    return out

  def extract_output(self, summary) -> preprocess_lib.Summary:
    return summary


def summary_path(out_dir: str) -> str:
  return os.path.join(out_dir, SUMMARY_PREFIX + SUMMARY_SUFFIX)


def build_pipeline(pipeline: beam.Pipeline, plan: preprocess_lib.Plan):
  """Adds the preprocessing of `plan` to `pipeline` (see the module doc)."""
  tasks = (pipeline
           | "Tasks" >> beam.Create(plan.tasks())
           # Spreads the items over the workers (Create alone may keep them
           # in one bundle).
           | "Spread" >> beam.Reshuffle())
  results = tasks | "Process" >> beam.ParDo(ProcessItemsFn(
      plan.embedder_spec, plan.embedder_options, plan.config.to_dict(),
      plan.frame_tolerance)).with_outputs(*plan.num_shards, main=_MAIN)
  for split, num_shards in plan.num_shards.items():
    _ = results[split] | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
        os.path.join(plan.out_dir, split),
        file_name_suffix=records.SHARD_SUFFIX + ".tmp",
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


def _remove_if_exists(path: str):
  try:
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  except (OSError, tf.errors.OpError):
    pass  # a temporary of this program's; it never looks complete


def run_beam_preprocess(manifest: str, out_dir: str,
                        embedder_spec: str = "logmel",
                        embedder_options: Optional[Mapping[str, Any]] = None,
                        config: spectral.StftConfig = spectral.DEFAULT,
                        split_by: str = "speaker",
                        valid_fraction: float = 0.1,
                        test_fraction: float = 0.1, seed: int = 0,
                        frame_tolerance: int = 0, items_per_shard: int = 64,
                        num_workers: Optional[int] = None,
                        max_rejected_fraction: float = 0.2,
                        overwrite: bool = False, progress: bool = True,
                        runner: str = DIRECT_RUNNER,
                        pipeline_args: Sequence[str] = (),
                        max_item_seconds: float = (
                            preprocess_lib.DEFAULT_MAX_ITEM_SECONDS)
                        ) -> dict[str, Any]:
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
  preprocess_lib.check_settings(split_by, valid_fraction, test_fraction,
                                frame_tolerance, items_per_shard,
                                max_item_seconds, max_rejected_fraction,
                                num_workers)
  plan = preprocess_lib.plan_preprocess(
      manifest, out_dir, embedder_spec, embedder_options, config, split_by,
      valid_fraction, test_fraction, seed, frame_tolerance, items_per_shard,
      progress, max_item_seconds)
  options = make_pipeline_options(runner, pipeline_args, num_workers)
  with preprocess_lib.open_output(plan, overwrite, progress):
    if plan.complete is not None:
      return plan.complete
    preprocess_lib.prepare(plan, progress)
    summary_file = summary_path(out_dir)
    _remove_if_exists(summary_file)
    start = time.time()
    try:
      with preprocess_lib.no_space_is_an_error(out_dir):
        if progress:
          print(f"preprocess: {len(plan.tasks())} items on the Beam {runner}")
        with beam.Pipeline(options=options) as pipeline:
          build_pipeline(pipeline, plan)
        if not tf.io.gfile.exists(summary_file):
          raise preprocess_lib.PreprocessError(
              f"the {runner} pipeline finished without writing "
              f"{summary_file}")
        with tf.io.gfile.GFile(summary_file) as f:
          summary = preprocess_lib.Summary.from_json(f.read())
    except BaseException:
      preprocess_lib.discard(out_dir)
      raise
    finally:
      _remove_if_exists(summary_file)
    return preprocess_lib.finish(plan, summary, start, max_rejected_fraction,
                                 progress)
