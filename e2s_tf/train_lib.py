"""The decoder trainer: data, model, checkpoints and resume, TensorBoard,
profiling.

`train(config, data_dir, workdir)` trains the model of `config.model.name`
on `data_dir` (an output of e2s_tf.preprocess). The same call on the same
workdir resumes at the last checkpoint with the optimiser state, the data
position and the random state (dropout), so a run of 5 steps then 5 more, or
one killed and re-run, equals 10 straight (with `config.data.deterministic`).
The parts it is built from (schedule, checkpoints, distribution, the
divergence stop, resume checks, validation) are in e2s_tf/training/.

What a run guarantees for its workdir:
- one run at a time: the workdir is locked (`fileio.FolderLock`); a second
  run fails at once naming the first, the lock of a killed run is free;
- a resume is checked before anything is written: data of another embedder
  or grid, another model config or a checkpoint that does not fit stop it
  with what differs, and the workdir stays as it was;
- config.json and dataset_info.json are replaced whole; a checkpoint that
  cannot be written (full disk) leaves no file behind and the last complete
  one stays the latest;
- a checkpoint is only written with finite weights whose loss is in line
  with the run's (`DivergenceMonitor`): a NaN/Inf loss or a finite
  divergence stops the run with the last good checkpoint kept.

Workdir layout:
    .e2s.lock             the run lock (names the run holding it)
    config.json           the resolved config
    dataset_info.json     the dataset's (normalisation stats, grid, embedder)
    checkpoints/          ckpt-<step>, the last `keep_checkpoints`
    train/ valid/         TensorBoard events (profile traces under train/plugins/profile)
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Optional, Sequence

import keras
import ml_collections
import tensorflow as tf

from e2s_tf import data as data_lib
from e2s_tf import fileio
from e2s_tf import models
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import summaries
from e2s_tf.training import checkpoints
from e2s_tf.training import configio
from e2s_tf.training import distribution
from e2s_tf.training import monitor as monitor_lib
from e2s_tf.training import progress
from e2s_tf.training import resume
from e2s_tf.training import schedule
from e2s_tf.training import validation
from e2s_tf.training.errors import TrainingError  # noqa: F401  (re-exported)

CONFIG_FILE = configio.CONFIG_FILE
CHECKPOINT_DIR = "checkpoints"
STEP_KEYS = validation.STEP_KEYS


def resolve_config(config: ml_collections.ConfigDict,
                   info: dict[str, Any]) -> ml_collections.ConfigDict:
  """Fills the data-dependent fields of `config` from dataset_info."""
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  config.data.embedding_dim = int(info["embedder"]["dim"])
  config.data.num_bins = spectral.StftConfig.from_dict(info["stft"]).num_bins
  conditioning = config.model.speaker_conditioning
  if conditioning != "none":
    if not info.get("speakers"):
      raise ValueError(f"speaker_conditioning={conditioning!r} needs a dataset "
                       "with speakers; this one has none")
    config.model.num_speakers = len(info["speakers"])
    config.data.with_speaker = True
  return config


def build_model(config: ml_collections.ConfigDict, info: dict[str, Any],
                compile_model: bool = True, time_fraction=None) -> keras.Model:
  """Builds (and compiles) the `TrainableDecoder` of a resolved config.

  `time_fraction`: an optional float variable (elapsed share of
  `train.max_minutes`) that the learning-rate decay also follows.
  """
  model = models.build(config, info)
  if compile_model:
    t = config.train
    model.compile(
        schedule.adam(t, t.learning_rate, time_fraction),
        schedule.adam(t, t.d_learning_rate, time_fraction),
        stft_config=spectral.StftConfig.from_dict(info["stft"]),
        **config.loss.to_dict())
  return model


def max_item_frames(config) -> int:
  """The longest item training batches whole (`config.data.max_item_frames`,
  0: `frames_per_batch`); longer ones are cut into windows."""
  d = config.data
  return int(d.max_item_frames or d.frames_per_batch)


def make_train_data(config, data_dir, epoch: int = 0,
                    deterministic=None) -> tf.data.Dataset:
  """One epoch of the train split, batched as training batches it (the
  shuffle seed follows `config.train.seed` and the epoch; items longer than
  `max_item_frames` cut into windows)."""
  d = config.data
  return data_lib.make_dataset(
      data_dir, "train", mode=d.mode, frames_per_batch=d.frames_per_batch,
      batch_size=d.batch_size, crop_frames=d.crop_frames,
      max_frames=max_item_frames(config),
      with_speaker=d.with_speaker, shuffle=True,
      shuffle_buffer=d.shuffle_buffer, repeat=False,
      deterministic=d.deterministic if deterministic is None else
      deterministic, seed=config.train.seed * 1000 + epoch)


def make_eval_data(config, data_dir, split="valid") -> tf.data.Dataset:
  """A split batched for validation: buckets, in order, no shuffle."""
  d = config.data
  return data_lib.make_dataset(
      data_dir, split, mode="bucket", frames_per_batch=d.frames_per_batch,
      max_frames=max_item_frames(config), with_speaker=d.with_speaker,
      shuffle=False, deterministic=True)


def step_signature(element_spec) -> dict[str, tf.TensorSpec]:
  """The train/test step input signature: dynamic batch and frame
  dimensions, so batches of every mode and bucket share one trace."""
  return {k: tf.TensorSpec([None, None, v.shape[-1]] if v.shape.rank == 3
                           else [None] * v.shape.rank, v.dtype)
          for k, v in element_spec.items() if k in STEP_KEYS}


def train(config: ml_collections.ConfigDict, data_dir: str, workdir: str,
          profile_steps: Optional[Sequence[int]] = None,
          log=print, stop_at_step: Optional[int] = None) -> dict[str, float]:
  """Trains (or resumes) up to `config.train.num_steps`; returns last metrics.

  `stop_at_step` ends this call early (with a checkpoint), as an interruption
  would; the learning-rate schedule still spans `num_steps`.

  The workdir is locked for the run (`fileio.FolderLock`: a second run into
  it fails at once; the lock of a killed run is free). Before anything is
  written there, a resume is checked against the workdir's run (data, model
  config, checkpoint). config.json and dataset_info.json are replaced whole,
  a checkpoint that fails to save leaves no file behind, and the checkpoint
  holds the random state, so a resume (after a kill, too) continues the
  straight run exactly (with `config.data.deterministic`).

  Raises:
    TrainingError: a resume that does not fit the workdir; a non-finite loss
      or a finite divergence (the last good checkpoint is kept); a corrupt
      shard (named); a full disk ("no space left on <path>", the last
      complete checkpoint kept).
    fileio.FolderInUse: another live run holds the workdir.
  """
  problem = models.model_config_problem(config)
  if problem:
    raise TrainingError(problem)
  profile = tuple(profile_steps or ())
  if profile and (len(profile) != 2 or profile[0] >= profile[1]):
    raise ValueError(f"profile_steps must be A,B with A < B, got {profile}")
  # A workdir of a file system TensorFlow has through tensorflow-io's plugins
  # (s3://, hdfs://) needs them loaded before the checkpoint manager runs.
  fileio.load_filesystem(workdir)
  info = records.read_dataset_info(data_dir)
  config = resolve_config(config, info)
  strategy = distribution.make_strategy(config.distribution)
  chief = distribution.is_chief(strategy)
  # Workers of one multi-worker run share the workdir: the chief holds its
  # lock, the others write only their scratch checkpoints.
  lock = fileio.FolderLock(workdir, "train") if chief else None
  if lock:
    lock.acquire()
  try:
    run = _Run(config, info, data_dir, workdir, strategy, chief,
               log if chief else (lambda *_: None))
    return run.train(profile, stop_at_step)
  finally:
    if lock:
      lock.release()


class _Run:
  """One call of `train` on a locked workdir: the model restored, the steps
  traced, the loop (see `train`)."""

  def __init__(self, config, info, data_dir, workdir, strategy, chief, log):
    self.config, self.info, self.data_dir = config, info, data_dir
    self.workdir, self.strategy, self.chief, self.log = (workdir, strategy,
                                                         chief, log)
    self.checkpoint_dir = os.path.join(workdir, CHECKPOINT_DIR)
    latest = (resume.check_resume(workdir, self.checkpoint_dir, data_dir,
                                  config, info) if chief else None)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
      log(f"{config.distribution}: {replicas} replicas; the global batch is "
          "split across them")
    keras.utils.set_random_seed(config.train.seed)
    keras.mixed_precision.set_global_policy(config.train.precision)
    # Elapsed share of the wall-clock budget, followed by the LR decay.
    self.time_fraction = (
        tf.Variable(0.0, trainable=False, name="time_fraction")
        if config.train.max_minutes else None)
    try:
      with strategy.scope():
        self.model = build_model(config, info,
                                 time_fraction=self.time_fraction)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    # Bookkeeping on the host, outside the strategy.
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    self.position = tf.Variable(0, dtype=tf.int64, trainable=False,
                                name="position")
    self.manager = self._restore(latest)
    self.monitor = monitor_lib.DivergenceMonitor(
        config.train.divergence_factor, config.train.divergence_patience)
    self.last_batch = None

  def _restore(self, latest) -> tf.train.CheckpointManager:
    model, config = self.model, self.config
    randomness = checkpoints.random_state(model)
    parts = dict(weights=checkpoints.weights_of(model), step=self.step,
                 epoch=self.epoch, position=self.position,
                 **model.optimizers())
    ckpt = tf.train.Checkpoint(random=randomness, **parts)
    # Every worker saves (the save is collective); only the chief's copy is
    # kept, the others write to a scratch directory removed at the end.
    if not self.chief:
      latest = tf.train.latest_checkpoint(self.checkpoint_dir)
      self.checkpoint_dir = os.path.join(
          self.workdir,
          f".worker_{self.strategy.cluster_resolver.task_id}_checkpoints")
    if latest:
      restore_from = ckpt
      if randomness and not checkpoints.has(latest, "random"):
        # A checkpoint of an older version: the dropout state starts afresh.
        restore_from = tf.train.Checkpoint(**parts)
        self.log(f"{latest} holds no random state: the resumed run draws "
                 "other dropout masks than a straight run would")
      checkpoints.restore(restore_from, latest)
      self.log(f"resumed from {latest} at step {int(self.step)}")
    return tf.train.CheckpointManager(
        ckpt, self.checkpoint_dir, max_to_keep=config.train.keep_checkpoints)

  def _write_run_files(self) -> None:
    """config.json and dataset_info.json, each replaced whole."""
    config_path = os.path.join(self.workdir, CONFIG_FILE)
    with checkpoints.no_space_message(config_path, self.manager):
      configio.write(self.workdir, self.config)
      fileio.write_json(os.path.join(self.workdir, records.DATASET_INFO),
                        self.info, indent=1)

  def train(self, profile, stop_at_step) -> dict[str, float]:
    # The checks passed: from here on the run writes into the workdir.
    if self.chief:
      self._write_run_files()
    try:
      return self._loop(profile, stop_at_step)
    except tf.errors.DataLossError as e:
      splits = [s for s in ("train", "valid") if s in self.info["splits"]]
      files = [f for s in splits
               for f in records.split_files(self.data_dir, s, self.info)]
      corrupt = records.find_corrupt_shard(files)
      what = str(corrupt) if corrupt else progress.first_line(e)
      raise TrainingError(
          f"{what}; training stopped at step {int(self.step)}, the last "
          f"complete checkpoint ({self.manager.latest_checkpoint or 'none'}) "
          "is kept") from None

  # -- the steps, traced once for every batch shape --------------------------

  def _trace_steps(self) -> None:
    config, strategy, model = self.config, self.strategy, self.model
    replicas = strategy.num_replicas_in_sync
    distributed = replicas > 1 or config.distribution != "default"
    spec = step_signature(make_train_data(config, self.data_dir,
                                          0).element_spec)
    signature = None if replicas > 1 else [spec]
    on_replicas = lambda fn: distribution.on_replicas(fn, strategy,  # pylint: disable=unnecessary-lambda-assignment
                                                      distributed)
    self.train_step = tf.function(
        on_replicas(model.train_step),
        jit_compile=config.train.jit_compile and replicas == 1,
        input_signature=signature)
    self.probe_step = tf.function(
        on_replicas(lambda batch: {"loss": model.probe_loss(batch)}),
        input_signature=signature)
    self.validation_step = tf.function(model.validation_step,
                                       input_signature=signature)

  @tf.function
  def _weights_finite(self):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                          for v in self.model.trainable_variables])

  def _kept(self) -> str:
    return monitor_lib.kept_message(self.manager.latest_checkpoint)

  def _diverged(self, s, loss, what) -> TrainingError:
    return TrainingError(self.monitor.diverged_message(
        s, loss, what, self._kept(), self.config.train.learning_rate))

  def _save(self, final=False) -> None:
    """A checkpoint, only with finite weights whose loss is in line with the
    logged ones: an update can blow them up after a normal loss, and the
    last checkpoint must stay good (`checkpoints.save_if_good`)."""
    batch = self.last_batch
    checkpoints.save_if_good(
        self.manager, int(self.step), bool(self._weights_finite()),
        None if batch is None else
        (lambda: self.probe_step(batch)["loss"]),
        self.monitor, self.config.train.learning_rate, self.log, final=final)

  def _epoch_data(self):
    """The rest of the current epoch, from the saved position."""
    dataset = make_train_data(self.config, self.data_dir, int(self.epoch))
    if int(self.position):
      dataset = dataset.skip(int(self.position))
    if (self.strategy.num_replicas_in_sync > 1 or
        self.config.distribution != "default"):
      options = tf.data.Options()
      options.experimental_distribute.auto_shard_policy = (
          tf.data.experimental.AutoShardPolicy.DATA)
      dataset = self.strategy.experimental_distribute_dataset(
          dataset.with_options(options))
    return dataset

  def _batch_frames(self, batch) -> int:
    lengths = batch["length"]
    if isinstance(lengths, tf.distribute.DistributedValues):
      lengths = tf.concat(self.strategy.experimental_local_results(lengths), 0)
    return int(tf.reduce_sum(lengths))

  def _loop(self, profile, stop_at_step) -> dict[str, float]:
    config, workdir, log, step = (self.config, self.workdir, self.log,
                                  self.step)
    self._trace_steps()
    if self.chief:
      writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
      valid_writer = tf.summary.create_file_writer(
          os.path.join(workdir, "valid"))
    else:
      writer = valid_writer = tf.summary.create_noop_writer()
    if int(step) == 0:
      with writer.as_default():
        summaries.write_config(configio.to_json(config))
    # Periodic validation runs where it is cheap to keep consistent; with
    # several workers, evaluate the export instead (e2s_tf.evaluate).
    splits = self.info["splits"]
    validator = (validation.Validation(
        config, self.info, self.model,
        make_eval_data(config, self.data_dir), self.validation_step)
                 if config.distribution != "multi_worker" and
                 splits.get("valid", {}).get("num_examples", 0) > 0 else None)

    num_steps = config.train.num_steps
    start_time = time.time()
    start_step = int(step)
    last_log_time, last_log_step = start_time, start_step
    frames_since_log = frames_total = 0
    values: dict[str, float] = {}
    last_valid: dict[str, float] = {}
    profiling = False
    deadline = (start_time + 60.0 * config.train.max_minutes
                if config.train.max_minutes else None)
    monitor = self.monitor

    def stop_profiler():
      if profiling:
        tf.profiler.experimental.stop()

    with checkpoints.no_space_message(workdir, self.manager):
      while int(step) < num_steps:
        resume_position = int(self.position)
        got_batch = False
        for batch in self._epoch_data():
          got_batch = True
          s = int(step)
          if profile and s == profile[0]:
            tf.profiler.experimental.start(os.path.join(workdir, "train"))
            profiling = True
          inputs = validation.step_inputs(batch)
          with tf.profiler.experimental.Trace("train", step_num=s, _r=1):
            out = self.train_step(inputs)
          self.last_batch = inputs
          values = {k: float(v) for k, v in out.items()}
          if self.time_fraction is not None:
            self.time_fraction.assign((time.time() - start_time) /
                                      (60.0 * config.train.max_minutes))
          if not all(math.isfinite(v) for v in values.values()):
            stop_profiler()
            raise TrainingError(monitor_lib.non_finite_message(
                s + 1, progress.format_values(values), self._kept()))
          step.assign_add(1)
          self.position.assign_add(1)
          batch_frames = self._batch_frames(batch)
          frames_since_log += batch_frames
          frames_total += batch_frames
          s = int(step)
          if s == start_step + 1 and s % config.train.log_every:
            monitor.anchor(values["loss"])
          if profiling and s >= profile[1]:
            tf.profiler.experimental.stop()
            profiling = False
            log(f"profiler trace of steps {profile[0]}-{profile[1]} written "
                f"under {workdir}/train/plugins/profile")
          if s % config.train.log_every == 0 or s == num_steps:
            now = time.time()
            rate = (s - last_log_step) / max(now - last_log_time, 1e-9)
            fps = frames_since_log / max(now - last_log_time, 1e-9)
            left = (num_steps - s) / max(rate, 1e-9)
            lr = float(self.model.optimizer.learning_rate)
            with writer.as_default():
              for k, v in values.items():
                tf.summary.scalar(f"losses/{k}", v, step=s)
              tf.summary.scalar("learning_rate", lr, step=s)
              tf.summary.scalar("steps_per_sec", rate, step=s)
              tf.summary.scalar("frames_per_sec", fps, step=s)
            log(f"step {s}/{num_steps} {progress.format_values(values)} "
                f"lr={lr:.2e} {rate:.2f} steps/s {fps:.0f} frames/s left "
                f"{progress.duration(left)}")
            last_log_time, last_log_step, frames_since_log = now, s, 0
            self.model.reset_metrics()
            if monitor.update(values["loss"]):
              stop_profiler()
              raise self._diverged(s, values["loss"], "loss")
          if validator and (s % config.train.eval_every == 0 or
                            s == num_steps):
            last_valid = validator.run(s, valid_writer)
            log(f"valid step {s}: {progress.format_values(last_valid)}")
          if s % config.train.checkpoint_every == 0 and s < num_steps:
            self._save()
          if s >= num_steps:
            break
          if stop_at_step is not None and s >= stop_at_step:
            log(f"stopping at step {s} as asked")
            num_steps = s
            break
          if deadline and time.time() > deadline:
            log(f"stopping at step {s}: config.train.max_minutes reached")
            num_steps = s
            break
        else:
          if not got_batch and not resume_position:
            raise TrainingError(
                f"{self.data_dir}: the train split yields no batch")
          self.epoch.assign_add(1)
          self.position.assign(0)
      stop_profiler()
      if checkpoints.latest_number(self.manager) != int(step):
        self._save(final=True)
      writer.flush()
      valid_writer.flush()
    if not self.chief:
      fileio.rmtree(self.checkpoint_dir, ignore_errors=True)
    total = time.time() - start_time
    log(f"done: step {int(step)} in {progress.duration(total)} "
        f"({(int(step) - start_step) / max(total, 1e-9):.2f} steps/s); "
        f"checkpoints in {self.manager.directory}")
    return {**values, **{f"valid_{k}": v for k, v in last_valid.items()},
            "steps": int(step) - start_step, "wall_seconds": total,
            "frames": frames_total,
            "frames_per_sec": frames_total / max(total, 1e-9)}


def restore_network(workdir: str) -> tuple[keras.Model, ml_collections.ConfigDict,
                                           dict[str, Any]]:
  """The trained inference network of a workdir, at its latest checkpoint."""
  config = configio.read(workdir)
  info = fileio.read_json(os.path.join(workdir, records.DATASET_INFO))
  model = build_model(config, info)
  checkpoints.restore_for_inference(
      tf.train.Checkpoint(weights=checkpoints.weights_of(model)),
      os.path.join(workdir, CHECKPOINT_DIR), workdir)
  return model.network, config, info
