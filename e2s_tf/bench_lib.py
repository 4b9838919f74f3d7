"""The benchmark suite: what each stage costs, against its target.

    results = bench_lib.run(work_dir="/tmp/e2s_bench", out="bench.json")

Seven benchmarks (`BENCHMARKS`), each a function `(Bench) -> figures` whose
figures (a JSON object) land under `results["benchmarks"][name]` together
with the machine's load average around it, and whose one-line summary is
printed:

  griffin_lim      the project's Griffin-Lim (`spectral.griffin_lim` in a
                   `tf.function`) against `librosa.griffinlim` on the same
                   frame grid, iterations, momentum and float32, on real
                   speech, per batch size. Target: >= 2x faster at batch 1.
  input_pipeline   frames/s that `data.make_dataset` delivers alone against
                   the frames/s a training step of the default model consumes,
                   and the share of the step time spent waiting for input in a
                   profiler trace of `train_lib.train`. Target: >= 10x.
  filler           filler-frame (and discarded-frame) share of every batching
                   mode of `batching.MODES` over one train epoch.
  inference        real-time factor of the exported `waveform` endpoint
                   (decoder + Griffin-Lim), per batch size, and of the decoder
                   alone (`spectrogram`). Target: RTF <= 0.05 at batch 1.
  training         frames/s of a train step of every model, as a graph
                   (`tf.function`) and with XLA (`jit_compile=True`), with the
                   compile cost per batch shape, and which one is faster over
                   an epoch of bucketed batches.
  preprocess       audio seconds that `preprocess_lib.run_preprocess` (logmel)
                   prepares per wall second.
  memory           peak memory of preprocessing a 10-minute item (cut into
                   pieces at pauses, against in one piece) and of training on
                   it (cut into windows within the frame budget, against
                   short items).

Frames are valid (unpadded) frames throughout, as `train_lib.train` counts
them. Times are best-of-N after a warm-up call; competing timings (ours and
librosa's) are interleaved so that a load change hits both.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import ml_collections
import numpy as np
import soundfile
import tensorflow as tf

from e2s_tf.configs import base as base_config
from e2s_tf.configs import testing as testing_config
from e2s_tf import audio as audio_lib
from e2s_tf import batching
from e2s_tf import corpus
from e2s_tf import data as data_lib
from e2s_tf import export_lib
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import metrics
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import train_lib
from e2s_tf.experiments import common
from e2s_tf.preprocessing import pieces as preprocess_pieces

# Names of the events of a `train_lib.train` profiler trace (host plane,
# main thread): the step (train_lib's `Trace("train", step_num=...)`) and the
# main thread's wait for the next batch.
_STEP_EVENT = "train"
_INPUT_EVENT = "IteratorGetNextOp::DoCompute"
_PS_PER_SECOND = 1e12


@dataclasses.dataclass(frozen=True)
class Sizes:
  """How big each benchmark is.

  Attributes:
    config: "base" (e2s_tf/configs/base.py, the real models) or "testing" (tiny).
    corpus_speakers, corpus_utterances: the espeak-ng corpus made when no
      manifest is given.
    split_by, valid_fraction, test_fraction: its preprocessing.
    speech_seconds: speech (griffin_lim) and embeddings (inference) length.
    griffin_lim_iterations: iterations of both Griffin-Lims and the export.
    batch_sizes: batch sizes of griffin_lim and inference.
    repeats: timed calls after the warm-up (best-of).
    pipeline_epochs: epochs of make_dataset timed.
    step_batches: batches of the input_pipeline train-step timing.
    step_passes: timed passes over the batches after the compiling one.
    profile_steps: (A, B): the profiled steps of the input_pipeline trace.
    models: models of the training benchmark.
    xla_models: those of them also timed with XLA (`jit_compile=True`).
    train_batches: batches of the training benchmark (with XLA they are
      timed over one pass: on 2 cores a `gan` step compiles for about a
      minute and runs for as long).
    long_item_seconds: the long item of the memory benchmark.
    memory_train_steps: train steps of the memory benchmark.
  """
  config: str
  corpus_speakers: int
  corpus_utterances: int
  split_by: str
  valid_fraction: float
  test_fraction: float
  speech_seconds: float
  griffin_lim_iterations: int
  batch_sizes: tuple[int, ...]
  repeats: int
  pipeline_epochs: int
  step_batches: int
  step_passes: int
  profile_steps: tuple[int, int]
  models: tuple[str, ...]
  xla_models: tuple[str, ...]
  train_batches: int
  long_item_seconds: float
  memory_train_steps: int


SIZES = {
    "full": Sizes(config="base", corpus_speakers=8, corpus_utterances=40,
                  split_by="speaker", valid_fraction=0.1, test_fraction=0.1,
                  speech_seconds=10.0, griffin_lim_iterations=32,
                  batch_sizes=(1, 8), repeats=5, pipeline_epochs=3,
                  step_batches=4, step_passes=3, profile_steps=(2, 7),
                  models=("cnn", "multiscale", "gan"),
                  xla_models=("cnn", "multiscale", "gan"), train_batches=1,
                  long_item_seconds=600.0, memory_train_steps=10),
    "quick": Sizes(config="testing", corpus_speakers=3, corpus_utterances=4,
                   split_by="utterance", valid_fraction=0.2,
                   test_fraction=0.2, speech_seconds=1.0,
                   griffin_lim_iterations=4, batch_sizes=(1, 2), repeats=1,
                   pipeline_epochs=1, step_batches=1, step_passes=1,
                   profile_steps=(1, 3), models=("cnn", "multiscale", "gan"),
                   xla_models=("cnn",), train_batches=1,
                   long_item_seconds=40.0, memory_train_steps=2),
}

GRIFFIN_LIM_MOMENTUM = export_lib.GRIFFIN_LIM_MOMENTUM
# Targets of the issue (docs/performance.md).
TARGET_GRIFFIN_LIM_SPEEDUP = 2.0
TARGET_PIPELINE_HEADROOM = 10.0
TARGET_INFERENCE_RTF = 0.05
# The default (and only decoder) model of the pipeline and inference checks.
DEFAULT_MODEL = "multiscale"


# ----------------------------------------------------------------------------
# Shared state: data made once, timing helpers.


class Bench:
  """What the benchmarks share: sizes, scratch space and the data (lazily).

  Attributes:
    sizes: a `Sizes`.
    work_dir: scratch space (the corpus, the dataset, exports, traces).
  """

  def __init__(self, sizes: Sizes, work_dir: str,
               manifest: Optional[str] = None, data_dir: Optional[str] = None):
    self.sizes = sizes
    self.work_dir = work_dir
    self._manifest = manifest
    self._data_dir = data_dir
    self._info = None

  @property
  def manifest(self) -> str:
    """The corpus manifest (made under work_dir/corpus unless given)."""
    if self._manifest is None:
      s = self.sizes
      self._manifest = corpus.make_corpus(
          os.path.join(self.work_dir, "corpus"), speakers=s.corpus_speakers,
          utterances=s.corpus_utterances, progress=False)
    return self._manifest

  def preprocess(self, out_dir: str) -> dict[str, Any]:
    """The corpus through `logmel` into `out_dir`; returns dataset_info."""
    s = self.sizes
    return preprocess_lib.run_preprocess(
        self.manifest, out_dir, "logmel", split_by=s.split_by,
        valid_fraction=s.valid_fraction, test_fraction=s.test_fraction,
        progress=False)

  @property
  def data_dir(self) -> str:
    """The preprocessed corpus (made under work_dir/tfrecords unless given)."""
    if self._data_dir is None:
      out = os.path.join(self.work_dir, "tfrecords")
      self.preprocess(out)
      self._data_dir = out
    return self._data_dir

  @property
  def info(self) -> dict[str, Any]:
    if self._info is None:
      self._info = records.read_dataset_info(self.data_dir)
    return self._info

  @property
  def stft(self) -> spectral.StftConfig:
    return spectral.StftConfig.from_dict(self.info["stft"])

  def config(self, model: str) -> ml_collections.ConfigDict:
    """The resolved config of `model` at these sizes."""
    module = base_config if self.sizes.config == "base" else testing_config
    config = module.get_config(model)
    return train_lib.resolve_config(config, self.info)

  def speech(self, seconds: float) -> np.ndarray:
    """`[samples]` float32: corpus utterances end to end, cut to `seconds`."""
    rate = self.stft.sample_rate
    want = int(round(seconds * rate))
    pieces, have = [], 0
    items = manifest_lib.read_manifest(self.manifest)
    if not items:
      raise ValueError(f"{self.manifest}: no items to take speech from")
    while have < want:
      for item in items:
        pieces.append(audio_lib.load_audio(item["audio"], rate,
                                           item.get("start"), item.get("end")))
        have += pieces[-1].shape[0]
        if have >= want:
          break
    return np.concatenate(pieces)[:want]

  def embeddings(self, frames: int, split: str = "train") -> np.ndarray:
    """`[frames, dim]` raw embeddings of `split`'s items end to end."""
    files = records.split_files(self.data_dir, split, self.info)
    if not self.info["splits"].get(split, {}).get("num_frames"):
      raise ValueError(f"{self.data_dir}: split {split!r} has no frames")
    pieces, have = [], 0
    while have < frames:
      for serialized in tf.data.TFRecordDataset(files):
        pieces.append(records.parse_example(serialized)["embedding"].numpy())
        have += pieces[-1].shape[0]
        if have >= frames:
          break
    return np.concatenate(pieces)[:frames]


def _timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int
                     ) -> dict[str, dict[str, float]]:
  """Warm-up call of each, then `repeats` rounds calling each in turn.

  Returns:
    {name: {"best_s", "median_s"}}.
  """
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(max(repeats, 1)):
    for name, fn in fns.items():
      times[name].append(_timed(fn))
  return {name: {"best_s": min(t), "median_s": statistics.median(t)}
          for name, t in times.items()}


def _step_inputs(batch: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {k: v for k, v in batch.items() if k in train_lib.STEP_KEYS}


def train_dataset(config: ml_collections.ConfigDict, data_dir: str,
                  seed: int = 0, deterministic: Optional[bool] = None
                  ) -> tf.data.Dataset:
  """One epoch of the train split, batched as `train_lib.train` batches it."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.seed = 0
  return train_lib.make_train_data(config, data_dir, epoch=seed,
                                   deterministic=deterministic)


def _valid_frames(batch) -> int:
  return int(np.sum(batch["length"]))


def time_train_step(config: ml_collections.ConfigDict, info: Mapping[str, Any],
                    batches: Sequence[Mapping[str, tf.Tensor]],
                    jit_compile: bool, passes: int) -> dict[str, float]:
  """Frames/s of `model.train_step` in a `tf.function`, as train_lib runs it.

  The first pass over `batches` traces (and, with XLA, compiles every new
  batch shape); the following `passes` are timed.

  Returns:
    dict: `cold_s` (the first pass), `step_s` (mean step of the timed
    passes), `frames_per_sec`, `compile_s` (the first pass's extra time:
    tracing, and with XLA the compilation of every batch shape), `shapes`
    (distinct batch shapes in `batches`).
  """
  keras.utils.set_random_seed(0)
  model = train_lib.build_model(config, info)
  spec = train_lib.step_signature(
      {k: tf.TensorSpec.from_tensor(v) for k, v in batches[0].items()})
  step = tf.function(model.train_step, jit_compile=jit_compile,
                     input_signature=[spec])

  def one_pass():
    for batch in batches:
      out = step(batch)
    # Outputs are ready only when read: wait for the last step.
    float(next(iter(out.values())))

  cold = _timed(one_pass)
  warm = float(np.mean([_timed(one_pass) for _ in range(max(passes, 1))]))
  frames = sum(_valid_frames(b) for b in batches)
  shapes = {tuple(b["embedding"].shape[:2]) for b in batches}
  return {"cold_s": cold, "step_s": warm / len(batches),
          "frames_per_sec": frames / warm,
          "compile_s": max(cold - warm, 0.0), "shapes": len(shapes)}


def input_wait_from_trace(logdir: str) -> dict[str, Any]:
  """Step and input-wait times of a `train_lib.train` profiler trace.

  Reads the newest `*.xplane.pb` under `logdir/plugins/profile`: on the
  thread that runs the steps, the `train` step events and the
  `IteratorGetNext` waits between them.

  Returns:
    dict: `trace` (the file), `steps`, `step_ms` (mean), `input_wait_ms`
    (mean wait per step), `input_wait_share` (wait / (wait + step)).

  Raises:
    FileNotFoundError: no trace; ValueError: no step in it.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*",
                                        "*.xplane.pb")), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no profiler trace (*.xplane.pb) under {logdir}")
  space = xplane_pb2.XSpace()
  with open(paths[-1], "rb") as f:
    space.ParseFromString(f.read())
  # The main thread's line is named after the program; it is the one with
  # the step events.
  steps, waits = [], []
  for plane in space.planes:
    names = {k: m.name for k, m in plane.event_metadata.items()}
    for line in plane.lines:
      durations = {_STEP_EVENT: [], _INPUT_EVENT: []}
      for event in line.events:
        name = names.get(event.metadata_id)
        if name in durations:
          durations[name].append(event.duration_ps / _PS_PER_SECOND)
      if durations[_STEP_EVENT]:
        steps += durations[_STEP_EVENT]
        waits += durations[_INPUT_EVENT]
  if not steps:
    raise ValueError(f"{paths[-1]}: no '{_STEP_EVENT}' step event")
  step, wait = sum(steps), sum(waits)
  return {"trace": paths[-1], "steps": len(steps),
          "step_ms": 1e3 * step / len(steps),
          "input_wait_ms": 1e3 * wait / len(steps),
          "input_wait_share": wait / (wait + step)}


# ----------------------------------------------------------------------------
# The benchmarks.


def bench_griffin_lim(bench: Bench) -> dict[str, Any]:
  """`spectral.griffin_lim` against `librosa.griffinlim`, per batch size."""
  with warnings.catch_warnings():
    # librosa 0.10 loads its submodules lazily, one of them with a deprecated
    # importlib API: load the one used here inside the filter.
    warnings.simplefilter("ignore", DeprecationWarning)
    import librosa  # pylint: disable=g-import-not-at-top
    griffinlim = librosa.griffinlim
  s, stft = bench.sizes, bench.stft
  speech = bench.speech(s.speech_seconds)
  magnitude = np.abs(spectral.stft(speech[None], stft).numpy())  # [1, T, F]
  frames = magnitude.shape[1]
  # librosa centres a short window in the FFT frame; the StftConfig window
  # starts the frame. Handing librosa the zero-padded window itself (and
  # win_length = n_fft) puts both on exactly the same grid.
  librosa_window = np.zeros(stft.fft_length, np.float32)
  librosa_window[:stft.frame_length] = spectral.numpy_window(stft)
  ours = tf.function(
      lambda m, n: spectral.griffin_lim(m, n, stft, s.griffin_lim_iterations,
                                        GRIFFIN_LIM_MOMENTUM)[0],
      input_signature=[tf.TensorSpec([None, None, stft.num_bins], tf.float32),
                       tf.TensorSpec([None], tf.int32)])

  def theirs(m):
    return griffinlim(
        np.swapaxes(m, -1, -2), n_iter=s.griffin_lim_iterations,
        hop_length=stft.frame_step, win_length=stft.fft_length,
        n_fft=stft.fft_length, window=librosa_window, center=False,
        dtype=np.float32, momentum=GRIFFIN_LIM_MOMENTUM, init=None)

  def convergence(audio):
    """Spectral convergence of the first item's audio against the speech."""
    return metrics.spectral_convergence(speech, np.asarray(audio)[0], stft)

  figures = {"speech_seconds": s.speech_seconds, "frames": frames,
             "iterations": s.griffin_lim_iterations,
             "momentum": GRIFFIN_LIM_MOMENTUM, "librosa": librosa.__version__,
             "batches": {}}
  for b in s.batch_sizes:
    batch = np.repeat(magnitude, b, axis=0)
    tensor = tf.constant(batch)
    lengths = tf.fill([b], frames)
    times = time_interleaved({"e2s": lambda: ours(tensor, lengths).numpy(),
                              "librosa": lambda: theirs(batch)}, s.repeats)
    figures["batches"][str(b)] = {
        "e2s_s": times["e2s"]["best_s"], "librosa_s": times["librosa"]["best_s"],
        "e2s_median_s": times["e2s"]["median_s"],
        "librosa_median_s": times["librosa"]["median_s"],
        "speedup": times["librosa"]["best_s"] / times["e2s"]["best_s"],
        "e2s_spectral_convergence": convergence(ours(tensor, lengths)),
        "librosa_spectral_convergence": convergence(theirs(batch[:1])),
    }
  first = figures["batches"][str(s.batch_sizes[0])]
  figures["target"] = (f">= {TARGET_GRIFFIN_LIM_SPEEDUP:g}x faster than librosa "
                       f"at batch {s.batch_sizes[0]}")
  figures["target_met"] = first["speedup"] >= TARGET_GRIFFIN_LIM_SPEEDUP
  return figures


def _line_griffin_lim(f: Mapping[str, Any]) -> str:
  parts = [f"batch {b}: e2s {v['e2s_s']:.3f} s, librosa {v['librosa_s']:.3f} s"
           f" ({v['speedup']:.1f}x)" for b, v in f["batches"].items()]
  return (f"{f['speech_seconds']:g} s of speech, {f['iterations']} iterations; "
          + "; ".join(parts))


def bench_input_pipeline(bench: Bench) -> dict[str, Any]:
  """make_dataset alone vs a train step of the default model, + a trace."""
  s = bench.sizes
  config = bench.config(DEFAULT_MODEL)
  frames = seconds = 0.0
  batches = 0
  for epoch in range(s.pipeline_epochs):
    start = time.perf_counter()
    for batch in train_dataset(config, bench.data_dir, seed=epoch):
      frames += _valid_frames(batch)
      batches += 1
    seconds += time.perf_counter() - start
  pipeline_fps = frames / seconds

  steps = [_step_inputs(b) for b in train_dataset(
      config, bench.data_dir, deterministic=True).take(s.step_batches)]
  step = time_train_step(config, bench.info, steps,
                         config.train.jit_compile, s.step_passes)

  # The same default training run, profiled: does the step wait for input?
  workdir = os.path.join(bench.work_dir, "profile")
  shutil.rmtree(workdir, ignore_errors=True)
  profiled = ml_collections.ConfigDict(config.to_dict())
  t = profiled.train
  t.num_steps = s.profile_steps[1] + 1
  t.warmup_steps = min(t.warmup_steps, 1)
  t.log_every = t.eval_every = t.checkpoint_every = t.num_steps
  t.eval_batches, t.summary_items, t.griffin_lim_iterations = 1, 1, 1
  train_lib.train(profiled, bench.data_dir, workdir,
                  profile_steps=s.profile_steps, log=lambda *_: None)
  trace = input_wait_from_trace(os.path.join(workdir, "train"))
  headroom = pipeline_fps / step["frames_per_sec"]
  return {
      "frames_per_batch": config.data.frames_per_batch,
      "mode": config.data.mode, "epochs": s.pipeline_epochs,
      "batches": batches, "frames": int(frames),
      "pipeline_frames_per_sec": pipeline_fps,
      "train_frames_per_sec": step["frames_per_sec"],
      "train_step_s": step["step_s"], "jit_compile": config.train.jit_compile,
      "headroom": headroom, "profile": trace,
      "target": f"pipeline >= {TARGET_PIPELINE_HEADROOM:g}x training",
      "target_met": headroom >= TARGET_PIPELINE_HEADROOM,
  }


def _line_input_pipeline(f: Mapping[str, Any]) -> str:
  p = f["profile"]
  return (f"pipeline {f['pipeline_frames_per_sec']:.0f} frames/s, train step "
          f"{f['train_frames_per_sec']:.0f} frames/s ({f['headroom']:.1f}x); "
          f"trace: {p['input_wait_ms']:.1f} ms input wait per "
          f"{p['step_ms']:.0f} ms step ({p['input_wait_share']:.2%})")


def bench_filler(bench: Bench) -> dict[str, Any]:
  """filler_share of every batching mode over one train epoch."""
  config = bench.config(DEFAULT_MODEL)
  d = config.data
  modes = {}
  for mode in batching.MODES:
    share = data_lib.filler_share(
        bench.data_dir, "train", mode, frames_per_batch=d.frames_per_batch,
        batch_size=d.batch_size, crop_frames=d.crop_frames, deterministic=True)
    modes[mode] = {k: share[k] for k in (
        "filler_share", "discarded_share", "mean_batch_size", "num_batches",
        "delivered_frames", "real_frames")}
  return {"frames_per_batch": d.frames_per_batch, "batch_size": d.batch_size,
          "crop_frames": d.crop_frames, "modes": modes}


def _line_filler(f: Mapping[str, Any]) -> str:
  return ", ".join(f"{m} {v['filler_share']:.1%}"
                   for m, v in f["modes"].items())


def bench_inference(bench: Bench) -> dict[str, Any]:
  """RTF of the exported waveform (and spectrogram) endpoints."""
  s = bench.sizes
  config = bench.config(DEFAULT_MODEL)
  keras.utils.set_random_seed(0)
  # Untrained weights cost the same time as trained ones.
  model = train_lib.build_model(config, bench.info, compile_model=False)
  export_dir = os.path.join(bench.work_dir, "export")
  export_lib.export_network(model.network, config, bench.info, export_dir,
                            griffin_lim_iterations=s.griffin_lim_iterations)
  loaded = tf.saved_model.load(export_dir)
  stft = bench.stft
  frames = stft.num_frames(int(round(s.speech_seconds * stft.sample_rate)))
  embedding = bench.embeddings(frames)
  audio_seconds = stft.num_samples(frames) / stft.sample_rate
  figures = {"speech_seconds": audio_seconds, "frames": frames,
             "griffin_lim_iterations": s.griffin_lim_iterations,
             "batches": {}}
  for b in s.batch_sizes:
    x = tf.constant(np.repeat(embedding[None], b, axis=0))
    n = tf.fill([b], frames)
    times = time_interleaved(
        {"waveform": lambda: loaded.waveform(x, n)["audio"].numpy(),
         "spectrogram": lambda: loaded.spectrogram(x, n)["log_stft"].numpy()},
        s.repeats)
    total = b * audio_seconds
    figures["batches"][str(b)] = {
        "waveform_s": times["waveform"]["best_s"],
        "spectrogram_s": times["spectrogram"]["best_s"],
        "rtf": times["waveform"]["best_s"] / total,
        "decoder_rtf": times["spectrogram"]["best_s"] / total,
    }
  first = figures["batches"][str(s.batch_sizes[0])]
  figures["target"] = (f"RTF <= {TARGET_INFERENCE_RTF:g} at batch "
                       f"{s.batch_sizes[0]}")
  figures["target_met"] = first["rtf"] <= TARGET_INFERENCE_RTF
  return figures


def _line_inference(f: Mapping[str, Any]) -> str:
  return "; ".join(
      f"batch {b}: RTF {v['rtf']:.4f} (decoder alone {v['decoder_rtf']:.4f})"
      for b, v in f["batches"].items())


def bench_training(bench: Bench) -> dict[str, Any]:
  """Train-step frames/s per model, graph vs XLA, and the faster over an epoch.

  With XLA every new batch shape compiles; bucketed batches are padded to
  their longest item, so an epoch brings many shapes. The epoch estimate is
  frames / (frames/s) plus, for XLA, one compile per distinct shape of one
  train epoch (the first pass's extra time over the graph's, which only
  traces, per shape).
  """
  s = bench.sizes
  figures = {"models": {}}
  for name in s.models:
    config = bench.config(name)
    if "warmup_steps" in config.model:
      # Time the adversarial step (the warm-up step is the generator's alone).
      config.model.warmup_steps = 0
    epoch = [(tuple(b["mask"].shape), _valid_frames(b))
             for b in train_dataset(config, bench.data_dir).as_numpy_iterator()]
    epoch_frames = sum(f for _, f in epoch)
    epoch_shapes = len({shape for shape, _ in epoch})
    steps = [_step_inputs(b) for b in train_dataset(
        config, bench.data_dir, deterministic=True).take(s.train_batches)]
    row = {"epoch_frames": epoch_frames, "epoch_shapes": epoch_shapes,
           "default_jit_compile": bool(config.train.jit_compile)}
    row["graph"] = time_train_step(config, bench.info, steps, False,
                                   s.step_passes)
    if name in s.xla_models:
      row["xla"] = time_train_step(config, bench.info, steps, True, 1)
    for key in ("graph", "xla"):
      if key in row:
        row[key]["epoch_s"] = epoch_frames / row[key]["frames_per_sec"]
    if "xla" in row:
      # Both trace once; XLA adds a compile per batch shape.
      xla = row["xla"]
      extra = xla["compile_s"] - row["graph"]["compile_s"]
      xla["compile_s_per_shape"] = max(extra, 0.0) / xla["shapes"]
      xla["epoch_s"] += epoch_shapes * xla["compile_s_per_shape"]
      row["faster"] = "xla" if xla["epoch_s"] < row["graph"]["epoch_s"] else (
          "graph")
      row["default_is_faster"] = row["default_jit_compile"] == (
          row["faster"] == "xla")
    figures["models"][name] = row
  return figures


def _line_training(f: Mapping[str, Any]) -> str:
  parts = []
  for name, row in f["models"].items():
    cells = [f"{k} {row[k]['frames_per_sec']:.0f}" for k in ("graph", "xla")
             if k in row]
    if "xla" in row:
      cells.append(f"XLA compile {row['xla']['compile_s_per_shape']:.1f} s x "
                   f"{row['epoch_shapes']} shapes/epoch")
    parts.append(f"{name}: " + ", ".join(cells))
  return "frames/s " + "; ".join(parts)


def bench_preprocess(bench: Bench) -> dict[str, Any]:
  """Audio seconds through logmel preprocessing per wall second."""
  out = os.path.join(bench.work_dir, "preprocess")
  shutil.rmtree(out, ignore_errors=True)
  manifest = bench.manifest
  start = time.perf_counter()
  info = bench.preprocess(out)
  seconds = time.perf_counter() - start
  shutil.rmtree(out, ignore_errors=True)
  splits = info["splits"].values()
  audio = sum(split["num_audio_seconds"] for split in splits)
  return {"manifest": manifest, "items": sum(s["num_examples"] for s in splits),
          "audio_seconds": audio, "wall_seconds": seconds,
          "workers": min(os.cpu_count() or 1, 8),
          "audio_seconds_per_sec": audio / seconds}


def _line_preprocess(f: Mapping[str, Any]) -> str:
  return (f"{f['audio_seconds']:.0f} s of audio ({f['items']} items) in "
          f"{f['wall_seconds']:.1f} s: {f['audio_seconds_per_sec']:.0f} audio "
          "s per s")


# ----------------------------------------------------------------------------
# Peak memory of a program run.


# The launcher: a small process that starts the measured program and reports
# its rusage. Started straight from a large process (this one, after the other
# benchmarks), the program would count the large one's resident pages: Linux
# records the high-water RSS of the address space that `exec` leaves, and a
# child made by fork/vfork starts from its parent's.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
  fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"maxrss_kib": usage.ru_maxrss,
                  "returncode": os.waitstatus_to_exitcode(status)}))
"""


def run_measuring_memory(command: Sequence[str], log_path: str,
                         timeout: float = 1800.0) -> dict[str, Any]:
  """Runs `command` (from the repository root) and reads its peak memory.

  The peak is `ru_maxrss` of the program's process (with its descendants'
  that it waited for), from `os.wait4` in a small launcher process (see
  `_LAUNCHER`), so nothing of this process counts.

  Args:
    command: the program and its arguments; `command[0]` an absolute path
      (e.g. `sys.executable`).
    log_path: where its stdout and stderr go.
    timeout: seconds before it is killed.

  Returns:
    `peak_rss_mib`, `seconds`, `returncode` and `output_tail` (its last 3
    lines of output).

  Raises:
    TimeoutError: it ran past `timeout` seconds (then it is killed).
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  start = time.perf_counter()
  launcher = subprocess.Popen(
      [sys.executable, "-S", "-c", _LAUNCHER, log_path, *command], cwd=root,
      env=env, stdout=subprocess.PIPE, start_new_session=True)
  try:
    report, _ = launcher.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(launcher.pid, 9)
    launcher.wait()
    raise TimeoutError(f"{' '.join(command)} ran past {timeout:.0f} s"
                       ) from None
  usage = json.loads(report)
  with open(log_path, errors="replace") as f:
    tail = f.read().strip().splitlines()[-3:]
  return {"peak_rss_mib": usage["maxrss_kib"] / 1024.0,  # KiB on Linux
          "seconds": time.perf_counter() - start,
          "returncode": usage["returncode"], "output_tail": tail}


def _checked(run: dict[str, Any], what: str) -> dict[str, Any]:
  if run["returncode"] != 0:
    raise RuntimeError(f"{what} failed ({run['returncode']}): "
                       + " | ".join(run["output_tail"]))
  return run


def preprocess_memory(work_dir: str, audio_seconds: float,
                      max_item_seconds: float = (
                          preprocess_pieces.DEFAULT_MAX_ITEM_SECONDS)
                      ) -> dict[str, Any]:
  """Peak memory of `python -m e2s_tf.preprocess` on one long item.

  Writes a speech-like item of `audio_seconds` (`corpus.speechlike_audio`,
  16-bit WAV) and its manifest under `work_dir`, preprocesses it (logmel, one
  worker process, everything in the train split) into
  `work_dir/out-<seconds>-<max_item_seconds>` and returns
  `run_measuring_memory`'s figures plus `out_dir`.
  """
  os.makedirs(work_dir, exist_ok=True)
  wav = os.path.join(work_dir, f"long-{audio_seconds:g}.wav")
  soundfile.write(wav, corpus.speechlike_audio(audio_seconds), 16000,
                  subtype="PCM_16")
  manifest = os.path.join(work_dir, f"long-{audio_seconds:g}.jsonl")
  manifest_lib.write_manifest(
      [{"id": "long", "audio": wav, "speaker": "a"}], manifest)
  out_dir = os.path.join(work_dir,
                         f"out-{audio_seconds:g}-{max_item_seconds:g}")
  command = [sys.executable, "-m", "e2s_tf.preprocess",
             f"--manifest={manifest}", f"--out_dir={out_dir}",
             "--embedder=logmel", "--split_by=utterance",
             "--valid_fraction=0", "--test_fraction=0", "--num_workers=1",
             f"--max_item_seconds={max_item_seconds:g}", "--overwrite"]
  run = run_measuring_memory(command, out_dir + ".log")
  return {**_checked(run, " ".join(command)), "out_dir": out_dir}


def train_memory(data_dir: str, workdir: str, config: str,
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
  """Peak memory of `python -m e2s_tf.train` (a fresh `workdir`)."""
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, "-m", "e2s_tf.train", f"--config={config}",
             f"--data_dir={data_dir}", f"--workdir={workdir}", *overrides]
  run = run_measuring_memory(command, workdir + ".log")
  return _checked(run, " ".join(command))


def bench_memory(bench: Bench) -> dict[str, Any]:
  """Peak memory of preprocessing and training one long item.

  Preprocessing: a `long_item_seconds` item with the default
  `--max_item_seconds` (cut into pieces at pauses) against the same item in
  one piece (`--max_item_seconds=0`, what preprocessing did before).
  Training: the one-piece item's dataset (a single record of
  `long_item_seconds`, longer than the frame budget: cut into windows of at
  most `frames_per_batch` frames) against the corpus of short items, both
  `memory_train_steps` steps of the default model.
  """
  s = bench.sizes
  work = os.path.join(bench.work_dir, "memory")
  seconds = s.long_item_seconds
  default = preprocess_memory(work, seconds)
  whole = preprocess_memory(work, seconds, max_item_seconds=0)
  config = (DEFAULT_MODEL if s.config == "base"
            else f"testing:{DEFAULT_MODEL}")
  flags = [f"--config.train.num_steps={s.memory_train_steps}",
           "--config.train.eval_every=1000000",
           "--config.train.checkpoint_every=1000000",
           "--config.train.max_minutes=0"]
  budget = bench.config(DEFAULT_MODEL).data.frames_per_batch
  long_train = train_memory(whole["out_dir"], os.path.join(work, "train-long"),
                            config, flags)
  short_train = train_memory(bench.data_dir, os.path.join(work, "train-short"),
                             config, flags)
  return {
      "item_seconds": seconds,
      "max_item_seconds": preprocess_pieces.DEFAULT_MAX_ITEM_SECONDS,
      "preprocess_mib": default["peak_rss_mib"],
      "preprocess_whole_item_mib": whole["peak_rss_mib"],
      "train_config": config, "train_steps": s.memory_train_steps,
      "frames_per_batch": budget,
      "train_long_item_mib": long_train["peak_rss_mib"],
      "train_short_items_mib": short_train["peak_rss_mib"],
      "train_ratio": long_train["peak_rss_mib"] / short_train["peak_rss_mib"],
  }


def _line_memory(f: Mapping[str, Any]) -> str:
  return (f"{f['item_seconds']:g} s item: preprocess {f['preprocess_mib']:.0f}"
          f" MiB (in one piece {f['preprocess_whole_item_mib']:.0f} MiB); "
          f"train {f['train_long_item_mib']:.0f} MiB vs "
          f"{f['train_short_items_mib']:.0f} MiB on short items "
          f"({f['train_ratio']:.2f}x)")


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A benchmark: `run(bench) -> figures`, `line(figures) -> summary`."""
  name: str
  run: Callable[[Bench], dict[str, Any]]
  line: Callable[[Mapping[str, Any]], str]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b for b in (
        Benchmark("griffin_lim", bench_griffin_lim, _line_griffin_lim),
        Benchmark("input_pipeline", bench_input_pipeline, _line_input_pipeline),
        Benchmark("filler", bench_filler, _line_filler),
        Benchmark("inference", bench_inference, _line_inference),
        Benchmark("training", bench_training, _line_training),
        Benchmark("preprocess", bench_preprocess, _line_preprocess),
        Benchmark("memory", bench_memory, _line_memory),
    )
}


# ----------------------------------------------------------------------------
# The suite.


def run(work_dir: str, out: str, only: Optional[Sequence[str]] = None,
        quick: bool = False, manifest: Optional[str] = None,
        data_dir: Optional[str] = None, command: str = "",
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the benchmarks `only` (default: all) and writes `out` (JSON).

  The JSON is rewritten after each benchmark, so a failure keeps the figures
  of those before it.

  Args:
    work_dir: scratch space; the corpus and its dataset made there are
      reused by later runs.
    out: the JSON file.
    only: names of `BENCHMARKS`; None or empty: all, in registry order.
    quick: tiny sizes (`SIZES["quick"]`), for tests.
    manifest: an existing corpus manifest (default: the espeak-ng corpus).
    data_dir: its preprocessed dataset (default: made from the manifest).
    command: the command line, recorded.
    log: where the one-line summaries go.

  Returns:
    the results written to `out`.
  """
  names = list(only or BENCHMARKS)
  unknown = [n for n in names if n not in BENCHMARKS]
  if unknown:
    raise ValueError(f"unknown benchmark(s) {unknown}; known: "
                     f"{', '.join(BENCHMARKS)}")
  sizes = SIZES["quick" if quick else "full"]
  os.makedirs(work_dir, exist_ok=True)
  bench = Bench(sizes, work_dir, manifest, data_dir)
  results = {"command": command, "machine": common.machine(),
             "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
             "python": sys.version.split()[0],
             "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick,
             "sizes": dataclasses.asdict(sizes), "benchmarks": {}}
  start = time.perf_counter()
  for name in names:
    benchmark = BENCHMARKS[name]
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
    if "target_met" in figures:
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

  if "griffin_lim" in b:
    f = b["griffin_lim"]
    for size, v in f["batches"].items():
      met = ""
      if size == str(min(int(k) for k in f["batches"])):
        met = (f"≥ {TARGET_GRIFFIN_LIM_SPEEDUP:g}x: "
               f"{'met' if f['target_met'] else 'missed'}")
      add("griffin_lim", f"{f['speech_seconds']:g} s speech, batch {size}, "
          f"{f['iterations']} it.: e2s / librosa {f['librosa']}",
          f"{v['e2s_s']:.3f} s / {v['librosa_s']:.3f} s = "
          f"**{v['speedup']:.1f}x**", met)
  if "input_pipeline" in b:
    f = b["input_pipeline"]
    p = f["profile"]
    add("input_pipeline", f"make_dataset ({f['mode']}, "
        f"{f['frames_per_batch']} frames/batch) / {DEFAULT_MODEL} train step",
        f"{f['pipeline_frames_per_sec']:,.0f} / "
        f"{f['train_frames_per_sec']:,.0f} frames/s = "
        f"**{f['headroom']:.1f}x**",
        f"≥ {TARGET_PIPELINE_HEADROOM:g}x: "
        f"{'met' if f['target_met'] else 'missed'}")
    add("input_pipeline", f"profiler trace, steps {p['steps']}: input wait "
        "per step", f"{p['input_wait_ms']:.1f} ms of {p['step_ms']:.0f} ms "
        f"(**{p['input_wait_share']:.2%}**)")
  if "filler" in b:
    f = b["filler"]
    add("filler", "filler-frame share of one train epoch",
        ", ".join(f"{m} {v['filler_share']:.1%}"
                  for m, v in f["modes"].items()))
  if "inference" in b:
    f = b["inference"]
    for size, v in f["batches"].items():
      met = ""
      if size == str(min(int(k) for k in f["batches"])):
        met = (f"≤ {TARGET_INFERENCE_RTF:g}: "
               f"{'met' if f['target_met'] else 'missed'}")
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
  head = ("| benchmark | measure | result | target |\n"
          "|---|---|---|---|")
  return "\n".join([head] + rows)
