"""What the benchmarks measure with: their sizes, the data they share, timing.

`Sizes` says how big each benchmark is (`SIZES["full"]`, `SIZES["quick"]`);
`Bench` holds the sizes, the scratch space and the data made once (the
espeak-ng corpus, its logmel dataset). `time_interleaved` and
`time_train_step` time calls; `input_wait_from_trace` reads a
`train_lib.train` profiler trace.

Frames are valid (unpadded) frames throughout, as `train_lib.train` counts
them. Times are best-of-N after a warm-up call; competing timings (ours and
librosa's) are interleaved so that a load change hits both.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import platform
import statistics
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf.configs import base as base_config
from e2s_tf.configs import testing as testing_config
from e2s_tf import audio as audio_lib
from e2s_tf import corpus
from e2s_tf import manifest as manifest_lib
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import train_lib

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
    phase_items: test items of the phase benchmark (0: all), evenly spread
      over the split.
    phase_zeros_iterations, phase_pghi_iterations, phase_librosa_iterations:
      the iteration counts of its methods (fast Griffin-Lim from zero phase,
      the reference `griffin_lim_iterations` always among them; from PGHI;
      librosa's).
    phase_repeats: its timed passes after the warm-up (best-of).
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
  phase_items: int
  phase_zeros_iterations: tuple[int, ...]
  phase_pghi_iterations: tuple[int, ...]
  phase_librosa_iterations: tuple[int, ...]
  phase_repeats: int


SIZES = {
    "full": Sizes(config="base", corpus_speakers=8, corpus_utterances=40,
                  split_by="speaker", valid_fraction=0.1, test_fraction=0.1,
                  speech_seconds=10.0, griffin_lim_iterations=32,
                  batch_sizes=(1, 8), repeats=5, pipeline_epochs=3,
                  step_batches=4, step_passes=3, profile_steps=(2, 7),
                  models=("cnn", "multiscale", "gan"),
                  xla_models=("cnn", "multiscale", "gan"), train_batches=1,
                  long_item_seconds=600.0, memory_train_steps=10,
                  phase_items=12, phase_zeros_iterations=(8, 16, 24, 48, 64),
                  phase_pghi_iterations=(0, 8, 16, 20, 22, 24, 32, 48),
                  phase_librosa_iterations=(8, 16, 32), phase_repeats=3),
    "quick": Sizes(config="testing", corpus_speakers=3, corpus_utterances=4,
                   split_by="utterance", valid_fraction=0.2,
                   test_fraction=0.2, speech_seconds=1.0,
                   griffin_lim_iterations=4, batch_sizes=(1, 2), repeats=1,
                   pipeline_epochs=1, step_batches=1, step_passes=1,
                   profile_steps=(1, 3), models=("cnn", "multiscale", "gan"),
                   xla_models=("cnn",), train_batches=1,
                   long_item_seconds=40.0, memory_train_steps=2,
                   phase_items=2, phase_zeros_iterations=(8,),
                   phase_pghi_iterations=(0, 8), phase_librosa_iterations=(8,),
                   phase_repeats=1),
}


class Bench:
  """What the benchmarks share: sizes, scratch space and the data (lazily).

  Attributes:
    sizes: a `Sizes`.
    work_dir: scratch space (the corpus, the dataset, exports, traces).
    options: options of single benchmarks (e.g. the phase benchmark's
      `phase_model`, an export, and `phase_curve`, a PNG to write).
  """

  def __init__(self, sizes: Sizes, work_dir: str,
               manifest: Optional[str] = None, data_dir: Optional[str] = None,
               options: Optional[Mapping[str, Any]] = None):
    self.sizes = sizes
    self.work_dir = work_dir
    self.options = dict(options or {})
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
        # The bench's own scratch folder: one of an older schema or other
        # sizes is rebuilt (the same settings are reused as they are).
        overwrite=True, progress=False)

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
      for ex in records.read_examples(files):
        pieces.append(ex["embedding"])
        have += pieces[-1].shape[0]
        if have >= frames:
          break
    return np.concatenate(pieces)[:frames]


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), or what `platform` knows."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return cpu


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


def step_inputs(batch: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {k: v for k, v in batch.items() if k in train_lib.STEP_KEYS}


def train_dataset(config: ml_collections.ConfigDict, data_dir: str,
                  seed: int = 0, deterministic: Optional[bool] = None
                  ) -> tf.data.Dataset:
  """One epoch of the train split, batched as `train_lib.train` batches it."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.seed = 0
  return train_lib.make_train_data(config, data_dir, epoch=seed,
                                   deterministic=deterministic)


def valid_frames(batch) -> int:
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
  frames = sum(valid_frames(b) for b in batches)
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
