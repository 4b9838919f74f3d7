r"""Runs the benchmark suite and writes its figures as JSON.

    python -m e2s_tf.bench [--only=griffin_lim,inference] [--quick] \
        [--work_dir=/tmp/e2s_bench] [--out=bench.json] \
        [--table=docs/performance_table.md] \
        [--phase_model=EXPORT_DIR] [--phase_curve=docs/phase_quality_vs_time.png] \
        [--evaluate_demo=DEMO_DIR] [--scale_manifest=MANIFEST]

Benchmarks (e2s_tf/benchmarks/cases.py): griffin_lim, input_pipeline, records, filler,
inference, training, preprocess, memory, evaluation, phase, scale. Each prints one line; `--out`
gets all the figures (with the load average around each benchmark), `--table`
the Markdown table of docs/performance.md (followed by the phase benchmark's
table of every method when it ran). The default corpus and its dataset are
made under --work_dir on the first run and reused. The phase benchmark also
reconstructs an export's predicted magnitudes (`--phase_model`) and plots
quality against time (`--phase_curve`). The scale benchmark
(e2s_tf/benchmarks/scale.py) runs the corpus of `--scale_manifest` (e.g. a
10-hour `make_corpus --hours=10`) through preprocess (the local pool and the
Beam DirectRunner, 2 workers) and one epoch of training, each a program of its
own, measuring wall time, audio seconds per second, bytes on disk and peak
memory; without `--scale_manifest` it is skipped (recorded as such), and
`--only=scale` without it is an error.
"""

import os
import sys

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import bench_lib
from e2s_tf.benchmarks import cases
# pylint: enable=g-import-not-at-top,wrong-import-position

_ONLY = flags.DEFINE_list(
    "only", [], f"Benchmarks to run (default all): {', '.join(cases.BENCHMARKS)}.")
_OUT = flags.DEFINE_string("out", "bench.json", "JSON file of the figures.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/e2s_bench",
                                "Scratch space (corpus, dataset, exports).")
_MANIFEST = flags.DEFINE_string(
    "manifest", "", "An existing corpus manifest (default: the espeak-ng "
    "corpus, made under --work_dir).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "Its preprocessed dataset (default: made under --work_dir).")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes (seconds; for tests).")
_TABLE = flags.DEFINE_string("table", "",
                             "Also write the Markdown performance table here.")
_PHASE_MODEL = flags.DEFINE_string(
    "phase_model", "", "phase benchmark: an export whose predicted magnitudes "
    "of the test items are reconstructed too (default: oracle magnitudes "
    "only).")
_EVALUATE_DEMO = flags.DEFINE_string(
    "evaluate_demo", "", "evaluation benchmark: a `make demo` folder whose "
    "export, test split, judges and floor are evaluated (default: the bench's "
    "data with an untrained export and floor, no judges).")
_SCALE_MANIFEST = flags.DEFINE_string(
    "scale_manifest", "", "scale benchmark (required by it): the corpus "
    "manifest to run through preprocess (local and Beam DirectRunner, 2 "
    "workers) and one epoch of training, under --work_dir/scale; without it "
    "the benchmark is skipped.")
_PHASE_CURVE = flags.DEFINE_string(
    "phase_curve", "", "phase benchmark: write the PNG of quality against "
    "time here (e.g. docs/phase_quality_vs_time.png).")


def main(argv):
  del argv
  command = " ".join(["python -m e2s_tf.bench"] + sys.argv[1:])
  if "scale" in _ONLY.value and not _SCALE_MANIFEST.value:
    raise SystemExit("bench: error: the scale benchmark needs "
                     "--scale_manifest=MANIFEST (the corpus to run, e.g. "
                     "python -m e2s_tf.make_corpus --out_dir=D --hours=10)")
  try:
    results = bench_lib.run(
        _WORK_DIR.value, _OUT.value, only=_ONLY.value, quick=_QUICK.value,
        manifest=_MANIFEST.value or None, data_dir=_DATA_DIR.value or None,
        command=command,
        options={"phase_model": _PHASE_MODEL.value or None,
                 "evaluate_demo": _EVALUATE_DEMO.value or None,
                 "phase_curve": _PHASE_CURVE.value or None,
                 "scale_manifest": _SCALE_MANIFEST.value or None})
  except ValueError as e:
    raise SystemExit(f"bench: error: {e}") from None
  if _TABLE.value:
    with open(_TABLE.value, "w") as f:
      f.write(bench_lib.performance_table(results) + "\n")
      phase_table = bench_lib.phase_table(results)
      if phase_table:
        f.write("\n" + phase_table + "\n")


def run():
  """The `e2s-bench` console script: `python -m e2s_tf.bench`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
