"""The benchmark suite: runs the benchmarks and reports their figures.

    results = bench_lib.run(work_dir="/tmp/e2s_bench", out="bench.json")

`run` runs the benchmarks of `benchmarks.cases.BENCHMARKS` (the stages
and what each costs against its target) at the sizes of
`benchmarks.harness.SIZES`, records every benchmark's figures with the
machine's load average around it in one JSON file and prints a line each;
`performance_table` turns the figures into the Markdown table of
docs/performance.md (`phase_table` the phase benchmark's table of every
method).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import tensorflow as tf

from e2s_tf import fileio
from e2s_tf.benchmarks import cases
from e2s_tf.benchmarks import harness
from e2s_tf.benchmarks import phase
from e2s_tf.benchmarks import scale
from e2s_tf.experiments import common


# ----------------------------------------------------------------------------
# The suite.


def run(work_dir: str, out: str, only: Optional[Sequence[str]] = None,
        quick: bool = False, manifest: Optional[str] = None,
        data_dir: Optional[str] = None, command: str = "",
        log: Callable[[str], None] = print,
        options: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
  """Runs the benchmarks `only` (default: all) and writes `out` (JSON).

  The JSON is rewritten after each benchmark, so a failure keeps the figures
  of those before it.

  Args:
    work_dir: scratch space; the corpus and its dataset made there are
      reused by later runs.
    out: the JSON file.
    only: names of `cases.BENCHMARKS`; None or empty: all, in registry order.
    quick: tiny sizes (`harness.SIZES["quick"]`), for tests.
    manifest: an existing corpus manifest (default: the espeak-ng corpus).
    data_dir: its preprocessed dataset (default: made from the manifest).
    command: the command line, recorded.
    log: where the one-line summaries go.
    options: options of single benchmarks (`harness.Bench.options`: the
      phase benchmark's `phase_model` and `phase_curve`, the scale
      benchmark's `scale_manifest`).

  Returns:
    the results written to `out`.
  """
  names = list(only or cases.BENCHMARKS)
  unknown = [n for n in names if n not in cases.BENCHMARKS]
  if unknown:
    raise ValueError(f"unknown benchmark(s) {unknown}; known: "
                     f"{', '.join(cases.BENCHMARKS)}")
  sizes = harness.SIZES["quick" if quick else "full"]
  os.makedirs(work_dir, exist_ok=True)
  bench = harness.Bench(sizes, work_dir, manifest, data_dir, options)
  results = {"command": command, "machine": common.machine(),
             "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
             "python": sys.version.split()[0],
             "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick,
             "sizes": dataclasses.asdict(sizes), "benchmarks": {}}
  start = time.perf_counter()
  for name in names:
    benchmark = cases.BENCHMARKS[name]
    load_before = os.getloadavg()
    began = time.perf_counter()
    figures = benchmark.run(bench)
    figures["seconds"] = time.perf_counter() - began
    figures["loadavg_before"] = list(load_before)
    figures["loadavg_after"] = list(os.getloadavg())
    results["benchmarks"][name] = figures
    results["total_seconds"] = time.perf_counter() - start
    fileio.write_json(out, results, default=float)
    target = ""
    if figures.get("target_met") is not None:
      target = (f" [target {figures['target']}: "
                f"{'met' if figures['target_met'] else 'MISSED'}]")
    log(f"{name}: {benchmark.line(figures)}{target} "
        f"({figures['seconds']:.0f} s, load {load_before[0]:.1f})")
  log(f"wrote {out} ({results['total_seconds']:.0f} s)")
  return results


# ----------------------------------------------------------------------------
# The performance table (docs/performance.md, README).


def performance_table(results: Mapping[str, Any]) -> str:
  """A Markdown table of the headline figures of `results` (run's output)."""
  rows = []
  b = results["benchmarks"]

  def add(benchmark, measure, value, target=""):
    rows.append(f"| {benchmark} | {measure} | {value} | {target} |")

  def target(f, bound):
    return f"{bound}: {'met' if f['target_met'] else 'missed'}"

  def per_batch(f, bound):
    """(size, figures, target cell) per batch size; the target is the
    smallest batch's."""
    smallest = str(min(int(k) for k in f["batches"]))
    return [(size, v, target(f, bound) if size == smallest else "")
            for size, v in f["batches"].items()]

  if "griffin_lim" in b:
    f = b["griffin_lim"]
    for size, v, met in per_batch(
        f, f"≥ {cases.TARGET_GRIFFIN_LIM_SPEEDUP:g}x"):
      add("griffin_lim", f"{f['speech_seconds']:g} s speech, batch {size}, "
          f"{f['iterations']} it.: e2s / librosa {f['librosa']}",
          f"{v['e2s_s']:.3f} s / {v['librosa_s']:.3f} s = "
          f"**{v['speedup']:.1f}x**", met)
  if "input_pipeline" in b:
    f = b["input_pipeline"]
    p = f["profile"]
    add("input_pipeline", f"make_dataset ({f['mode']}, "
        f"{f['frames_per_batch']} frames/batch) / {cases.DEFAULT_MODEL} "
        "train step",
        f"{f['pipeline_frames_per_sec']:,.0f} / "
        f"{f['train_frames_per_sec']:,.0f} frames/s = "
        f"**{f['headroom']:.1f}x**",
        target(f, f"≥ {cases.TARGET_PIPELINE_HEADROOM:g}x"))
    add("input_pipeline", f"profiler trace, steps {p['steps']}: input wait "
        "per step", f"{p['input_wait_ms']:.1f} ms of {p['step_ms']:.0f} ms "
        f"(**{p['input_wait_share']:.2%}**)")
  if "records" in b:
    f = b["records"]
    add("records", f"bytes on disk per audio second ({f['embedding_dim']}-dim "
        f"{f['embedding_dtype']} embedding, 16-bit audio; previous schema)",
        f"**{f['bytes_per_audio_second'] / 1000:.1f} KB** "
        f"({f['previous_schema_bytes_per_audio_second'] / 1000:.1f} KB)",
        target(f, f"≤ {cases.TARGET_BYTES_PER_AUDIO_SECOND / 1000:g} KB"))
  if "filler" in b:
    f = b["filler"]
    add("filler", "filler-frame share of one train epoch",
        ", ".join(f"{m} {v['filler_share']:.1%}"
                  for m, v in f["modes"].items()))
  if "inference" in b:
    f = b["inference"]
    for size, v, met in per_batch(f, f"≤ {cases.TARGET_INFERENCE_RTF:g}"):
      add("inference", f"waveform endpoint, {f['speech_seconds']:.1f} s, "
          f"batch {size}: RTF (decoder alone)",
          f"**{v['rtf']:.4f}** ({v['decoder_rtf']:.4f})", met)
  if "training" in b:
    for name, row in b["training"]["models"].items():
      cells = [f"{k} {row[k]['frames_per_sec']:,.0f}"
               for k in ("graph", "xla") if k in row]
      note = ""
      if "xla" in row:
        cells.append(f"XLA compile {row['xla']['compile_s_per_shape']:.1f} s "
                     f"per shape, {row['epoch_shapes']} shapes/epoch")
        note = (f"faster: {row['faster']} (default jit_compile="
                f"{row['default_jit_compile']})")
      add("training", f"{name}: frames/s", ", ".join(cells), note)
  if "preprocess" in b:
    f = b["preprocess"]
    add("preprocess", f"logmel, {f['items']} items, {f['workers']} workers",
        f"**{f['audio_seconds_per_sec']:.0f}** audio s per s")
  if "memory" in b:
    f = b["memory"]
    add("memory", f"preprocess one {f['item_seconds']:g} s item "
        f"(--max_item_seconds={f['max_item_seconds']:g}; in one piece)",
        f"**{f['preprocess_mib']:.0f} MiB** "
        f"({f['preprocess_whole_item_mib']:.0f} MiB)")
    add("memory", f"train {f['train_steps']} steps of {f['train_config']} "
        f"on it ({f['frames_per_batch']} frames/batch) / on short items",
        f"{f['train_long_item_mib']:.0f} / {f['train_short_items_mib']:.0f} "
        f"MiB = **{f['train_ratio']:.2f}x**")
  if "evaluation" in b:
    f = b["evaluation"]
    where = (f"demo {f['demo']}" if f["demo"] else
             "bench data, untrained export and floor, no judges")
    add("evaluation", f"evaluate, {f['items']} test items, "
        f"{len(f['systems'])} systems ({where}): wall time (per aspect)",
        f"**{f['wall_seconds']:.0f} s** (" + ", ".join(
            f"{a} {v:.0f} s" for a, v in f["aspect_seconds"].items()) + ")",
        (f"≤ {cases.TARGET_EVALUATION_SECONDS:g} s for 40 items: "
         f"{'met' if f['target_met'] else 'missed'}") if f["demo"] else "")
  if "phase" in b:
    f = b["phase"]
    for name, g in f["sources"].items():
      best, ref = g["methods"][g["best_at_reference_time"]], g["methods"][
          g["reference"]]
      add("phase", f"{name} magnitudes, {g['items']} test items, batch "
          f"{g['batch']}: {g['reference']} ({g['reference_ms']:.1f} ms/item) "
          f"/ best at its time, {g['best_at_reference_time']} "
          f"({best['ms'][str(g['batch'])]:.1f} ms/item)",
          f"SC {ref['sc']:.3f} / **{best['sc']:.3f}** "
          f"({-g['sc_reduction']:+.0%}), PESQ {ref['pesq_wb']:.2f} / "
          f"**{best['pesq_wb']:.2f}** ({g['pesq_gain']:+.2f}), classes worse: "
          f"{', '.join(g['classes_worse']) or 'none'}",
          target(f, f"SC ≥ {phase.TARGET_SC_REDUCTION:.0%} lower, PESQ "
                 f"≥ +{phase.TARGET_PESQ_GAIN:g}") if name == "oracle"
          else "")
  if "scale" in b:
    for measure, value in scale.table_rows(b["scale"]):
      add("scale", measure, value)
  head = ("| benchmark | measure | result | target |\n"
          "|---|---|---|---|")
  return "\n".join([head] + rows)


def phase_table(results: Mapping[str, Any]) -> str:
  """The phase benchmark's Markdown table of every method ("" without it)."""
  f = results["benchmarks"].get("phase")
  return phase.table(f) if f else ""
