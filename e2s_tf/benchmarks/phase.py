"""The phase benchmark: what each start of Griffin-Lim buys per millisecond.

Magnitudes (`sources`): the oracle |STFT| of the test split's stored audio,
and, given an export (`phase_model`), the decoder's predicted magnitudes of
the same items (exp of its `spectrogram` endpoint). Methods (`Method`): fast
Griffin-Lim (`spectral.griffin_lim`, momentum 0.99) from zero phase and from
`spectral.pghi_phase` at several iteration counts, and `librosa.griffinlim`
(the same grid, momentum and zero start).

Each method is timed per item at every batch size of the sizes (one
`tf.function` per start, traced once with the iteration count as an input;
the items sorted by length and cut into batches of that size, padded and
length-aware; the warm-up pass excluded; best of `phase_repeats` interleaved
passes) and scored on the batch-1 output of every item:

  sc        spectral convergence of the re-analysed audio against the
            magnitude given (`spectral.spectral_convergence`): what
            Griffin-Lim minimises;
  sc_audio  the same against the stored audio's magnitude (equal to `sc`
            for the oracle; for the decoder, its error and the phase's);
  pesq_wb, stoi  against the stored audio (e2s_tf.metrics).

`sc` is also pooled per frame class of the stored audio (`frame_classes`):
silence (more than `SILENCE_DB` below the item's loudest frame), voiced (a
normalised autocorrelation peak of at least `VOICED_CORRELATION` at a pitch
lag of 60 to 400 Hz) and unvoiced (the rest).

The reference is zero phase at the sizes' `griffin_lim_iterations` (32: the
default of export and evaluation before PGHI). `best_at_reference_time` is the method of
lowest mean `sc` among those no slower at batch 1 than the reference (within
`TIME_TOLERANCE`, the noise of timing on a shared machine).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from e2s_tf import export_lib
from e2s_tf import metrics
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.benchmarks import harness

MOMENTUM = export_lib.GRIFFIN_LIM_MOMENTUM
STARTS = ("zeros", "pghi")
LIBROSA = "librosa"
# A method within this share of the reference's time runs "at its time".
TIME_TOLERANCE = 0.05
# Targets of the issue, on oracle magnitudes at the reference's wall time.
TARGET_SC_REDUCTION = 0.15
TARGET_PESQ_GAIN = 0.15
# Frame classes of the stored audio.
CLASSES = ("silence", "voiced", "unvoiced")
SILENCE_DB = 40.0
VOICED_CORRELATION = 0.5
PITCH_HZ = (60.0, 400.0)


@dataclasses.dataclass(frozen=True)
class Method:
  """A phase reconstruction: `start` ("zeros", "pghi" or "librosa", whose
  start is zero phase) and `iterations`."""
  start: str
  iterations: int

  @property
  def name(self) -> str:
    return f"{self.start}/{self.iterations}"


def methods_of(sizes: harness.Sizes) -> list[Method]:
  """The methods of `sizes`, the reference (zero phase at
  `griffin_lim_iterations`) among them."""
  zeros = sorted(set(sizes.phase_zeros_iterations) |
                 {sizes.griffin_lim_iterations})
  return ([Method("zeros", n) for n in zeros] +
          [Method("pghi", n) for n in sorted(set(sizes.phase_pghi_iterations))]
          + [Method(LIBROSA, n)
             for n in sorted(set(sizes.phase_librosa_iterations))])


def frame_classes(audio: np.ndarray, frames: int,
                  config: spectral.StftConfig) -> np.ndarray:
  """The class (an index of CLASSES) of each of the first `frames` STFT
  frames of `audio`: silence, voiced or unvoiced (see the module doc)."""
  audio = np.asarray(audio, np.float64)
  frames = min(frames, config.num_frames(audio.shape[0]))
  index = (np.arange(frames)[:, None] * config.frame_step +
           np.arange(config.frame_length)[None])
  x = audio[index]
  energy = np.sum(np.square(x * spectral.numpy_window(config)), axis=1)
  level = 10.0 * np.log10(np.maximum(energy, 1e-20) /
                          max(float(np.max(energy, initial=0.0)), 1e-20))
  x = x - np.mean(x, axis=1, keepdims=True)
  lags = range(int(config.sample_rate / PITCH_HZ[1]),
               min(int(config.sample_rate / PITCH_HZ[0]),
                   config.frame_length // 2) + 1)
  peak = np.zeros(frames)
  for lag in lags:
    a, b = x[:, :-lag], x[:, lag:]
    r = np.sum(a * b, 1) / np.sqrt(np.maximum(
        np.sum(a * a, 1) * np.sum(b * b, 1), 1e-20))
    peak = np.maximum(peak, r)
  return np.where(level < -SILENCE_DB, 0,
                  np.where(peak >= VOICED_CORRELATION, 1, 2)).astype(np.int32)


def _magnitude(audio: np.ndarray, config: spectral.StftConfig) -> np.ndarray:
  return np.abs(spectral.stft(np.asarray(audio, np.float32)[None],
                              config).numpy()[0]).astype(np.float64)


def _convergence(reference: np.ndarray, estimate: np.ndarray) -> float:
  n = min(reference.shape[0], estimate.shape[0])
  return float(spectral.spectral_convergence(reference[None, :n],
                                             estimate[None, :n])[0])


@dataclasses.dataclass
class Source:
  """Magnitudes to reconstruct, with the stored audio to score against.

  Attributes:
    name: "oracle" or "decoder".
    ids: item ids.
    magnitudes: `[T_i, F]` float32 per item.
    references: the stored audio per item.
    reference_magnitudes: |STFT| of the stored audio per item (float64).
    classes: `[T_i]` frame classes per item (`frame_classes`).
  """
  name: str
  ids: list[str]
  magnitudes: list[np.ndarray]
  references: list[np.ndarray]
  reference_magnitudes: list[np.ndarray]
  classes: list[np.ndarray]


def read_items(data_dir: str, split: str, count: int) -> list[dict[str, Any]]:
  """`count` items of `split` (all when 0), sorted by id and evenly spread
  over them."""
  info = records.read_dataset_info(data_dir)
  items = sorted(records.read_examples(records.split_files(data_dir, split,
                                                           info),
                                       with_audio=True,
                                       stft_config=records.stft_config(info)),
                 key=lambda it: it["id"])
  if not items:
    raise ValueError(f"{data_dir}: split {split!r} has no items")
  if count and count < len(items):
    items = [items[(i * len(items)) // count] for i in range(count)]
  return items


def make_sources(items: Sequence[Mapping[str, Any]],
                 config: spectral.StftConfig,
                 export_dir: Optional[str] = None) -> list[Source]:
  """The oracle source of `items`, and the decoder's when `export_dir`."""
  refs = [np.asarray(it["audio"], np.float32) for it in items]
  ref_mags = [_magnitude(a, config)[:it["length"]]
              for a, it in zip(refs, items)]
  classes = [frame_classes(a, m.shape[0], config)
             for a, m in zip(refs, ref_mags)]
  ids = [it["id"] for it in items]
  sources = [Source("oracle", ids, [m.astype(np.float32) for m in ref_mags],
                    refs, ref_mags, classes)]
  if export_dir:
    decoder = export_lib.LoadedDecoder(export_dir)
    if decoder.stft != config:
      raise ValueError(f"{export_dir}: the export's STFT grid "
                       f"{decoder.stft} is not the dataset's {config}")
    predicted = []
    for it in items:
      emb = np.asarray(it["embedding"], np.float32)[None]
      lengths = np.array([emb.shape[1]], np.int32)
      speaker = (np.array([max(int(it["speaker_index"]), 0)], np.int32)
                 if decoder.with_speaker else None)
      frames = int(decoder.frame_lengths(lengths)[0])
      log = decoder.spectrogram(emb, lengths, speaker)[0, :frames]
      predicted.append(np.exp(log).astype(np.float32))
    sources.append(Source("decoder", ids, predicted, refs, ref_mags, classes))
  return sources


class Reconstructor:
  """The methods as callables `(magnitude [B, T, F], lengths [B]) -> audio
  [B, N]` (NumPy), the TensorFlow ones traced once per start."""

  def __init__(self, config: spectral.StftConfig):
    self.config = config
    spec = [tf.TensorSpec([None, None, config.num_bins], tf.float32),
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)]
    self._tf = {
        start: tf.function(
            lambda m, n, k, start=start: spectral.griffin_lim(
                m, n, config, k, MOMENTUM, init=start)[0],
            input_signature=spec)
        for start in STARTS}
    with warnings.catch_warnings():
      # librosa 0.10 loads its submodules lazily, one of them with a
      # deprecated importlib API: load the one used here inside the filter.
      warnings.simplefilter("ignore", DeprecationWarning)
      import librosa  # pylint: disable=g-import-not-at-top
    self.librosa = librosa
    # The grid's window zero-padded to the FFT frame (as bench_griffin_lim:
    # librosa would centre a shorter window).
    self._librosa_window = np.zeros(config.fft_length, np.float32)
    self._librosa_window[:config.frame_length] = spectral.numpy_window(config)

  def traces(self) -> dict[str, int]:
    """How often each TensorFlow method was traced (1 once used)."""
    return {start: fn.experimental_get_tracing_count()
            for start, fn in self._tf.items()}

  def tensors(self, magnitude: np.ndarray, lengths: np.ndarray):
    """The inputs of a TensorFlow method, made once outside the timing."""
    return tf.constant(magnitude), tf.constant(lengths, tf.int32)

  def call(self, method: Method, magnitude, lengths, tensors) -> np.ndarray:
    if method.start == LIBROSA:
      c = self.config
      return self.librosa.griffinlim(
          np.swapaxes(magnitude, -1, -2), n_iter=method.iterations,
          hop_length=c.frame_step, win_length=c.fft_length,
          n_fft=c.fft_length, window=self._librosa_window, center=False,
          dtype=np.float32, momentum=MOMENTUM, init=None)
    return self._tf[method.start](
        *tensors, tf.constant(method.iterations, tf.int32)).numpy()


def batches_of(lengths: Sequence[int], size: int) -> list[list[int]]:
  """Item indices sorted by length, cut into batches of `size` (the last one
  filled up with the first items again, so every batch has `size` items)."""
  order = sorted(range(len(lengths)), key=lambda i: lengths[i])
  count = math.ceil(len(order) / size)
  slots = [order[i % len(order)] for i in range(count * size)]
  return [slots[i:i + size] for i in range(0, len(slots), size)]


def _pad(magnitudes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.array([m.shape[0] for m in magnitudes], np.int32)
  out = np.zeros((len(magnitudes), int(lengths.max()), magnitudes[0].shape[1]),
                 np.float32)
  for i, m in enumerate(magnitudes):
    out[i, :m.shape[0]] = m
  return out, lengths


def time_methods(source: Source, methods: Sequence[Method],
                 reconstructor: Reconstructor, batch_sizes: Sequence[int],
                 repeats: int) -> tuple[dict[str, dict[str, float]],
                                        dict[str, list[np.ndarray]]]:
  """ms per item of every method at every batch size; batch 1's audio.

  Returns:
    ({method name: {str(batch size): ms per item}}, {method name: [audio
    of each item at batch 1, cut to its length]}).
  """
  config = reconstructor.config
  lengths = [m.shape[0] for m in source.magnitudes]
  times = {m.name: {} for m in methods}
  audio = {}
  for size in batch_sizes:
    batches = []
    for indices in batches_of(lengths, size):
      magnitude, n = _pad([source.magnitudes[i] for i in indices])
      batches.append((indices, magnitude, n, reconstructor.tensors(magnitude,
                                                                   n)))

    def run(method: Method, batches=batches, size=size) -> None:
      out = [None] * len(lengths)
      for indices, magnitude, n, tensors in batches:
        result = reconstructor.call(method, magnitude, n, tensors)
        if size == 1:
          out[indices[0]] = result[0, :config.num_samples(int(n[0]))]
      if size == 1:
        audio[method.name] = out

    fns: dict[str, Callable[[], None]] = {
        m.name: (lambda m=m: run(m)) for m in methods}
    slots = sum(len(b[0]) for b in batches)
    for name, t in harness.time_interleaved(fns, repeats).items():
      times[name][str(size)] = 1e3 * t["best_s"] / slots
  if not audio:
    for m in methods:
      audio[m.name] = [reconstructor.call(
          m, s[None], np.array([s.shape[0]], np.int32),
          reconstructor.tensors(s[None], np.array([s.shape[0]], np.int32))
      )[0, :config.num_samples(s.shape[0])] for s in source.magnitudes]
  return times, audio


def score(source: Source, audio: Sequence[np.ndarray],
          config: spectral.StftConfig) -> dict[str, Any]:
  """Per-item scores of one method's audio, and `sc` pooled per class.

  Returns:
    {"items": [{"id", "sc", "sc_audio", "pesq_wb", "stoi"}], "class_sc":
    {class: sc}, "class_frames": {class: frames}}.
  """
  rows = []
  error = np.zeros(len(CLASSES))
  power = np.zeros(len(CLASSES))
  frames = np.zeros(len(CLASSES), np.int64)
  rate = config.sample_rate
  for i, out in enumerate(audio):
    target = source.magnitudes[i].astype(np.float64)
    estimate = _magnitude(out, config)[:target.shape[0]]
    n = estimate.shape[0]
    reference = source.references[i]
    rows.append({
        "id": source.ids[i],
        "sc": _convergence(target, estimate),
        "sc_audio": _convergence(source.reference_magnitudes[i], estimate),
        "pesq_wb": metrics.pesq_wb(reference, out, rate),
        "stoi": metrics.stoi(reference, out, rate),
    })
    classes = source.classes[i][:n]
    per_frame_error = np.sum(np.square(target[:len(classes)] -
                                       estimate[:len(classes)]), axis=1)
    per_frame_power = np.sum(np.square(target[:len(classes)]), axis=1)
    for c in range(len(CLASSES)):
      chosen = classes == c
      error[c] += np.sum(per_frame_error[chosen])
      power[c] += np.sum(per_frame_power[chosen])
      frames[c] += int(np.sum(chosen))
  return {
      "items": rows,
      "class_sc": {name: (float(np.sqrt(error[c] / power[c])) if power[c] > 0
                          else float("nan"))
                   for c, name in enumerate(CLASSES)},
      "class_frames": {name: int(frames[c]) for c, name in enumerate(CLASSES)},
  }


def _nanmean(values) -> float:
  values = [v for v in values if np.isfinite(v)]
  return float(np.mean(values)) if values else float("nan")


def _nanmin(values) -> float:
  values = [v for v in values if np.isfinite(v)]
  return float(np.min(values)) if values else float("nan")


def summarise(rows: Mapping[str, Mapping[str, Any]], reference: str
              ) -> dict[str, Any]:
  """Means, minima and the comparison with `reference` of every method, and
  the best at the reference's batch-1 time (`best_at_reference_time`).

  Args:
    rows: {method name: {"ms": {batch: ms}, "items": [...], "class_sc",
      ...}} (updated in place with the summary figures).
    reference: the reference method's name.
  """
  ref = rows[reference]
  ref_items = ref["items"]
  for row in rows.values():
    items = row["items"]
    row["sc"] = _nanmean([r["sc"] for r in items])
    row["sc_audio"] = _nanmean([r["sc_audio"] for r in items])
    row["pesq_wb"] = _nanmean([r["pesq_wb"] for r in items])
    row["stoi"] = _nanmean([r["stoi"] for r in items])
    row["max_sc"] = float(np.max([r["sc"] for r in items]))
    row["min_pesq_wb"] = _nanmin([r["pesq_wb"] for r in items])
    row["min_stoi"] = _nanmin([r["stoi"] for r in items])
    row["items_worse_sc"] = sum(
        r["sc"] > q["sc"] for r, q in zip(items, ref_items))
    row["items_worse_pesq"] = sum(
        r["pesq_wb"] < q["pesq_wb"] for r, q in zip(items, ref_items))
    row["classes_worse"] = [c for c in CLASSES
                            if row["class_sc"][c] > ref["class_sc"][c]]
  first = min(ref["ms"], key=int)
  limit = ref["ms"][first] * (1.0 + TIME_TOLERANCE)
  within = [name for name, row in rows.items() if row["ms"][first] <= limit]
  best = min(within, key=lambda name: rows[name]["sc"])
  by_pesq = max(within, key=lambda name: (
      rows[name]["pesq_wb"] if np.isfinite(rows[name]["pesq_wb"]) else -1e9))
  b = rows[best]
  return {
      "reference": reference, "reference_ms": ref["ms"][first],
      "batch": int(first), "time_limit_ms": limit,
      "within_time": within, "best_at_reference_time": best,
      "best_by_pesq_at_reference_time": by_pesq,
      "sc_reduction": 1.0 - b["sc"] / ref["sc"],
      "pesq_gain": b["pesq_wb"] - ref["pesq_wb"],
      "stoi_gain": b["stoi"] - ref["stoi"],
      "classes_worse": b["classes_worse"],
  }


def run_source(source: Source, methods: Sequence[Method],
               reconstructor: Reconstructor, sizes: harness.Sizes
               ) -> dict[str, Any]:
  """Times and scores every method on one source."""
  config = reconstructor.config
  times, audio = time_methods(source, methods, reconstructor,
                              sizes.batch_sizes, sizes.phase_repeats)
  rows = {}
  for m in methods:
    rows[m.name] = {"start": m.start, "iterations": m.iterations,
                    "ms": times[m.name], **score(source, audio[m.name],
                                                 config)}
  reference = Method("zeros", sizes.griffin_lim_iterations).name
  summary = summarise(rows, reference)
  return {"items": len(source.ids),
          "audio_seconds": float(sum(len(a) for a in source.references)
                                 / config.sample_rate),
          "frames": int(sum(m.shape[0] for m in source.magnitudes)),
          "methods": rows, **summary}


def plot_curve(figures: Mapping[str, Any], path: str) -> None:
  """Quality (SC, PESQ) against ms per item at batch 1, one line per start,
  a row per source, into the PNG `path`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  sources = figures["sources"]
  fig, axes = plt.subplots(len(sources), 2, figsize=(11, 4 * len(sources)),
                           squeeze=False)
  labels = {"zeros": "fast Griffin-Lim, zero phase",
            "pghi": "fast Griffin-Lim from PGHI",
            LIBROSA: "librosa.griffinlim, zero phase"}
  for row, (name, f) in zip(axes, sources.items()):
    batch = str(f["batch"])
    for ax, key, title in ((row[0], "sc", "spectral convergence (lower is "
                            "better)"),
                           (row[1], "pesq_wb", "PESQ wide-band (higher is "
                            "better)")):
      for start in ("zeros", "pghi", LIBROSA):
        points = sorted((m["ms"][batch], m[key], m["iterations"])
                        for m in f["methods"].values() if m["start"] == start)
        if not points:
          continue
        xs, ys, ns = zip(*points)
        ax.plot(xs, ys, marker="o", label=labels[start])
        for x, y, n in points:
          ax.annotate(str(n), (x, y), textcoords="offset points",
                      xytext=(3, 3), fontsize=7)
      ax.axvline(f["reference_ms"], color="grey", linestyle="--", linewidth=1,
                 label=f"time of {f['reference']}")
      ax.set_xlabel(f"ms per item at batch {batch} "
                    f"({f['items']} items, {f['audio_seconds']:.0f} s)")
      ax.set_title(f"{name} magnitudes: {title}", fontsize=10)
      ax.grid(alpha=0.3)
    row[0].legend(fontsize=8)
  fig.suptitle("Griffin-Lim phase: quality against time (labels: "
               "iterations)", fontsize=11)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def bench_phase(bench: harness.Bench) -> dict[str, Any]:
  """Every method on every source; the target on the oracle's."""
  s, config = bench.sizes, bench.stft
  items = read_items(bench.data_dir, "test", s.phase_items)
  export_dir = bench.options.get("phase_model") or None
  methods = methods_of(s)
  reconstructor = Reconstructor(config)
  figures = {
      "split": "test", "items": len(items), "momentum": MOMENTUM,
      "librosa": reconstructor.librosa.__version__,
      "batch_sizes": list(s.batch_sizes), "repeats": s.phase_repeats,
      "time_tolerance": TIME_TOLERANCE, "phase_model": export_dir,
      "methods": [m.name for m in methods], "classes": list(CLASSES),
      "sources": {},
  }
  for source in make_sources(items, config, export_dir):
    figures["sources"][source.name] = run_source(source, methods,
                                                 reconstructor, s)
  figures["traces"] = reconstructor.traces()
  oracle = figures["sources"]["oracle"]
  figures["target"] = (
      f"at the time of {oracle['reference']} on oracle magnitudes: SC >= "
      f"{TARGET_SC_REDUCTION:.0%} lower, PESQ >= +{TARGET_PESQ_GAIN:g}, no "
      "frame class worse")
  figures["target_met"] = bool(
      oracle["sc_reduction"] >= TARGET_SC_REDUCTION and
      oracle["pesq_gain"] >= TARGET_PESQ_GAIN and not oracle["classes_worse"])
  curve = bench.options.get("phase_curve")
  if curve:
    plot_curve(figures, curve)
    figures["curve"] = curve
  return figures


def line(f: Mapping[str, Any]) -> str:
  """The one-line summary: the best method at the reference's time."""
  parts = []
  for name, g in f["sources"].items():
    best, ref = g["methods"][g["best_at_reference_time"]], g["methods"][
        g["reference"]]
    worse = ", ".join(g["classes_worse"]) or "none"
    parts.append(
        f"{name}: best at {g['reference']}'s {g['reference_ms']:.1f} ms/item "
        f"is {g['best_at_reference_time']} ({best['ms'][str(g['batch'])]:.1f}"
        f" ms): SC {ref['sc']:.3f} -> {best['sc']:.3f} "
        f"({-g['sc_reduction']:+.0%}), PESQ {ref['pesq_wb']:.2f} -> "
        f"{best['pesq_wb']:.2f} ({g['pesq_gain']:+.2f}), classes worse: "
        f"{worse}")
  return f"{f['items']} test items; " + "; ".join(parts)


def table(f: Mapping[str, Any]) -> str:
  """A Markdown table of every method on every source."""
  sizes = [str(b) for b in f["batch_sizes"]]
  head = ("| magnitudes | method | iterations | "
          + " | ".join(f"ms/item, batch {b}" for b in sizes)
          + " | SC | SC vs audio | PESQ | STOI | worst SC | min PESQ | "
          "items worse (SC / PESQ) | SC silence / voiced / unvoiced |")
  rule = "|" + "---|" * (head.count("|") - 1)
  lines = [head, rule]
  for name, g in f["sources"].items():
    for method, r in g["methods"].items():
      mark = ("**" if method == g["best_at_reference_time"] else "")
      label = f"{mark}{r['start']}{mark}" + (
          " (reference)" if method == g["reference"] else "")
      lines.append(
          f"| {name} | {label} | {r['iterations']} | "
          + " | ".join(f"{r['ms'][b]:.1f}" for b in sizes)
          + f" | {r['sc']:.4f} | {r['sc_audio']:.4f} | {r['pesq_wb']:.3f} | "
          f"{r['stoi']:.3f} | {r['max_sc']:.4f} | {r['min_pesq_wb']:.3f} | "
          f"{r['items_worse_sc']} / {r['items_worse_pesq']} of {g['items']} | "
          + " / ".join(f"{r['class_sc'][c]:.4f}" for c in CLASSES) + " |")
  return "\n".join(lines)
