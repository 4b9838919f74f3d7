"""The speaker-encoder trainer, built on the shared parts of e2s_tf/training.

`train(config, manifest, workdir)` trains on the speakers of a manifest
(utterances split per speaker into train and held-out), with checkpoints,
TensorBoard scalars and console progress. The same call on the same workdir
resumes at the last checkpoint with the optimiser state and the random
state; batch k is a function of (seed, k) alone, so a run of 3 steps then 3
more equals 6 straight.

What a run guarantees for its workdir (as the decoder trainer does):
- one run at a time: the workdir is locked (`fileio.FolderLock`); a second
  run fails at once naming the first, the lock of a killed run is free;
- a resume is checked before anything is written: another model or stft
  config, other speakers or a checkpoint that does not fit stop it with what
  differs, and the workdir stays as it was;
- config.json, speakers.json and evaluation.json are replaced whole; a
  checkpoint that cannot be written (full disk) leaves no file behind;
- a checkpoint is only written with finite weights whose loss is in line
  with the run's (`DivergenceMonitor`): a NaN/Inf loss or a finite
  divergence stops the run with the last good checkpoint kept.

The workdir's files are described in e2s_tf/speaker/workdir.py.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf import summaries
from e2s_tf.speaker import identification
from e2s_tf.speaker import network
from e2s_tf.speaker import sampling
from e2s_tf.speaker import workdir as workdir_lib
from e2s_tf.training import checkpoints
from e2s_tf.training import configio
from e2s_tf.training import distribution
from e2s_tf.training import monitor as monitor_lib
from e2s_tf.training import progress
from e2s_tf.training import schedule
from e2s_tf.training.errors import TrainingError

# The strategies this trainer runs under (config.distribution).
DISTRIBUTIONS = ("default",)


def evaluate(encoder: network.SpeakerEncoder,
             head: Optional[network.AdditiveMarginHead],
             train_set: Sequence[sampling.Utterance],
             heldout_set: Sequence[sampling.Utterance],
             vocabulary: Sequence[str],
             function: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
             enrolment: bool = True) -> dict[str, float]:
  """Utterance-level accuracies of whole held-out utterances.

  Returns:
    {"heldout_accuracy": by the head (when given), "heldout_enrolment_accuracy":
    nearest centroid of the training utterances' embeddings (when
    `enrolment`)}; NaN without held-out utterances.
  """
  function = function or identification.utterance_function(encoder)
  stft_config = encoder.stft_config
  out = {}
  if not heldout_set:
    return {"heldout_accuracy": float("nan"),
            "heldout_enrolment_accuracy": float("nan")}
  heldout = identification.embed_utterances(
      function, [u.audio for u in heldout_set], stft_config)
  labels = [u.speaker for u in heldout_set]
  if head is not None:
    predicted = np.argmax(head(tf.constant(heldout)).numpy(), axis=-1)
    out["heldout_accuracy"] = float(np.mean(
        [vocabulary[k] == t for k, t in zip(predicted, labels)]))
  if enrolment:
    train = identification.embed_utterances(
        function, [u.audio for u in train_set], stft_config)
    out["heldout_enrolment_accuracy"] = identification.identification_accuracy(
        heldout, labels, identification.enroll(
            train, [u.speaker for u in train_set]))
  return out


def train(config: ml_collections.ConfigDict, manifest: str, workdir: str,
          heldout_ids: Optional[Sequence[str]] = None,
          log: Callable[[str], None] = print,
          stop_at_step: Optional[int] = None) -> dict[str, Any]:
  """Trains (or resumes) the speaker encoder up to `config.train.num_steps`.

  Args:
    config: e2s_tf/configs/speaker_encoder.py's `get_config()` (or a variant).
    manifest: a manifest whose items have a `speaker`.
    workdir: checkpoints, TensorBoard, config.json, speakers.json; a workdir
      with checkpoints is resumed (same model config and speakers required).
    heldout_ids: hold out these item ids instead of
      `config.data.heldout_fraction` of each speaker's utterances.
    log: console progress.
    stop_at_step: end this call early at this step (with a checkpoint), as an
      interruption would; the learning-rate schedule still spans num_steps.

  Returns:
    {"step", "loss", "accuracy" (of the last log interval), "history": [{"step",
    "loss", "accuracy"} per log interval of this call], and the held-out
    accuracies of `evaluate` at the end}.

  Raises:
    TrainingError: a resume that does not fit the workdir; a non-finite loss
      or a finite divergence (the last good checkpoint is kept); a full disk;
      a `config.distribution` other than `default`.
    fileio.FolderInUse: another live run holds the workdir.
  """
  if config.distribution not in DISTRIBUTIONS:
    raise TrainingError(
        f"config.distribution={config.distribution!r}: the speaker-encoder "
        "trainer runs on one device only; use config.distribution='default'")
  stft_config = spectral.StftConfig.from_dict(config.stft.to_dict())
  crop_samples = int(round(config.data.crop_seconds * stft_config.sample_rate))
  if stft_config.num_frames(crop_samples) < 1:
    raise ValueError(f"data.crop_seconds={config.data.crop_seconds} is shorter "
                     "than one frame")
  with fileio.FolderLock(workdir, workdir_lib.LOCK_PROGRAM):
    run = _Run(config, stft_config, crop_samples, manifest, workdir,
               heldout_ids, log)
    return run.train(stop_at_step)


class _Run:
  """One call of `train` on a locked workdir: the data, the model restored,
  the steps traced, the loop (see `train`)."""

  def __init__(self, config, stft_config, crop_samples, manifest, workdir,
               heldout_ids, log):
    self.config, self.workdir, self.log = config, workdir, log
    t0 = time.time()
    utterances = sampling.load_utterances(
        manifest, stft_config.sample_rate, stft_config.frame_length, log)
    self.train_set, self.heldout_set = sampling.split_utterances(
        utterances, config.data.heldout_fraction, config.train.seed,
        heldout_ids)
    self.vocabulary = sorted({u.speaker for u in utterances})
    if len(self.vocabulary) < 2:
      raise ValueError(f"{manifest}: a speaker encoder needs at least 2 "
                       f"speakers, got {self.vocabulary}")
    log(f"{len(utterances)} utterances of {len(self.vocabulary)} speakers "
        f"loaded in {time.time() - t0:.1f} s: {len(self.train_set)} train, "
        f"{len(self.heldout_set)} held out")
    latest = workdir_lib.check_resume(workdir, config, self.vocabulary)
    label_of = {s: k for k, s in enumerate(self.vocabulary)}
    self.sampler = sampling.CropSampler(
        self.train_set, [label_of[u.speaker] for u in self.train_set],
        crop_samples, config.data.batch_size, config.data, config.train.seed)
    self.crop_samples = crop_samples

    keras.utils.set_random_seed(config.train.seed)
    t = config.train
    # Elapsed share of the wall-clock budget, followed by the LR decay.
    self.time_fraction = (tf.Variable(0.0, trainable=False,
                                      name="time_fraction")
                          if t.max_minutes else None)
    with distribution.make_strategy(config.distribution).scope():
      self.encoder, self.head = network.build_encoder(config,
                                                      len(self.vocabulary))
      self.optimizer = schedule.adam(t, t.learning_rate, self.time_fraction,
                                     weight_decay=t.weight_decay)
      self.variables = (self.encoder.trainable_variables +
                        self.head.trainable_variables)
      self.optimizer.build(self.variables)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    ckpt = workdir_lib.training_checkpoint(self.encoder, self.head,
                                           self.optimizer, self.step)
    if latest:
      restore_from = ckpt
      if workdir_lib.is_legacy(latest):
        restore_from = workdir_lib.training_checkpoint(
            self.encoder, self.head, self.optimizer, self.step, legacy=True)
      checkpoints.restore(restore_from, latest)
      log(f"resumed from {latest} at step {int(self.step)}")
    self.manager = tf.train.CheckpointManager(
        ckpt, workdir_lib.checkpoint_dir(workdir),
        max_to_keep=t.keep_checkpoints)
    self.monitor = monitor_lib.DivergenceMonitor(t.divergence_factor,
                                                 t.divergence_patience)
    self._trace_steps()

  def _trace_steps(self) -> None:
    config, encoder, head = self.config, self.encoder, self.head
    margin, scale = float(config.model.margin), float(config.model.scale)
    signature = [
        tf.TensorSpec([config.data.batch_size, self.crop_samples], tf.float32),
        tf.TensorSpec([config.data.batch_size], tf.int32)]
    variables, optimizer = self.variables, self.optimizer

    @tf.function(input_signature=signature)
    def train_step(waveform, labels):
      with tf.GradientTape() as tape:
        embedding = encoder(waveform, training=True)["embedding"]
        cos = head(embedding)
        loss = network.am_softmax_loss(cos, labels, margin, scale)
      optimizer.apply(tape.gradient(loss, variables), variables)
      correct = tf.equal(tf.argmax(cos, axis=-1, output_type=tf.int32), labels)
      return {"loss": loss,
              "accuracy": tf.reduce_mean(tf.cast(correct, tf.float32))}

    @tf.function(input_signature=signature)
    def probe_step(waveform, labels):
      # The training-mode loss of the current weights, as the logged losses
      # are, with the batch-norm statistics left as they are.
      out, _ = encoder.stateless_call(
          [v.value for v in encoder.trainable_variables],
          [v.value for v in encoder.non_trainable_variables], waveform,
          training=True)
      return network.am_softmax_loss(head(out["embedding"]), labels, margin,
                                     scale)

    self.train_step, self.probe_step = train_step, probe_step
    self.utterance_fn = identification.utterance_function(encoder)

  def _weights_finite(self) -> bool:
    """Whether every weight (batch-norm statistics too) is finite."""
    return all(bool(np.all(np.isfinite(v.numpy())))
               for v in self.encoder.weights + self.head.weights)

  def _kept(self) -> str:
    return monitor_lib.kept_message(self.manager.latest_checkpoint)

  def _probe_loss(self) -> float:
    """The loss of the current weights over the batches of the last log
    interval (regenerated: batch k is a function of (seed, k)), as noisy as a
    logged loss: the loss of one batch is too heavy-tailed to judge by."""
    s = int(self.step)
    losses = [float(self.probe_step(*map(tf.constant, self.sampler.batch(k))))
              for k in range(max(s - self.config.train.log_every, 0), s)]
    return float(np.mean(losses))

  def _save(self, final: bool = False) -> None:
    probe = self._probe_loss if int(self.step) > 0 else None
    checkpoints.save_if_good(self.manager, int(self.step),
                         self._weights_finite(), probe, self.monitor,
                         self.config.train.learning_rate, self.log, final)

  def _evaluate(self, enrolment: bool) -> dict[str, float]:
    return evaluate(self.encoder, self.head, self.train_set, self.heldout_set,
                    self.vocabulary, self.utterance_fn, enrolment=enrolment)

  def train(self, stop_at_step: Optional[int]) -> dict[str, Any]:
    # The checks passed: from here on the run writes into the workdir.
    config_path = os.path.join(self.workdir, workdir_lib.CONFIG_FILE)
    with checkpoints.no_space_message(config_path, self.manager):
      workdir_lib.write_run_files(self.workdir, self.config, self.vocabulary,
                                  self.train_set, self.heldout_set)
    with checkpoints.no_space_message(self.workdir, self.manager):
      return self._loop(stop_at_step)

  def _loop(self, stop_at_step: Optional[int]) -> dict[str, Any]:
    config, workdir, log, step = (self.config, self.workdir, self.log,
                                  self.step)
    heldout_set, monitor = self.heldout_set, self.monitor
    writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
    heldout_writer = tf.summary.create_file_writer(
        os.path.join(workdir, "heldout"))
    if int(step) == 0:
      with writer.as_default():
        summaries.write_config(configio.to_json(config))

    t = config.train
    num_steps = t.num_steps
    start_time = time.time()
    start_step = int(step)
    deadline = start_time + 60.0 * t.max_minutes if t.max_minutes else None
    last_log_time, last_log_step = start_time, start_step
    sums = np.zeros(2)
    history: list[dict[str, float]] = []
    values: dict[str, float] = {}

    while int(step) < num_steps:
      s = int(step)
      waves, labels = self.sampler.batch(s)
      out = self.train_step(tf.constant(waves), tf.constant(labels))
      loss, accuracy = float(out["loss"]), float(out["accuracy"])
      if self.time_fraction is not None:
        self.time_fraction.assign((time.time() - start_time) /
                                  (60.0 * t.max_minutes))
      if not math.isfinite(loss):
        raise TrainingError(monitor_lib.non_finite_message(
            s + 1, progress.format_values({"loss": loss,
                                           "accuracy": accuracy}),
            self._kept()))
      step.assign_add(1)
      s += 1
      sums += (loss, accuracy)
      if s == start_step + 1 and s % t.log_every:
        monitor.anchor(loss)
      asked = stop_at_step is not None and s >= stop_at_step
      stopping = (s >= num_steps or asked or
                  (deadline is not None and time.time() > deadline))
      if s % t.log_every == 0 or stopping:
        now = time.time()
        count = s - last_log_step
        values = {"loss": sums[0] / count, "accuracy": sums[1] / count}
        history.append({"step": s, **values})
        rate = count / max(now - last_log_time, 1e-9)
        lr = float(self.optimizer.learning_rate)
        with writer.as_default():
          tf.summary.scalar("losses/am_softmax", values["loss"], step=s)
          tf.summary.scalar("metrics/accuracy", values["accuracy"], step=s)
          tf.summary.scalar("learning_rate", lr, step=s)
          tf.summary.scalar("steps_per_sec", rate, step=s)
        log(f"step {s}/{num_steps} {progress.format_values(values)} "
            f"lr={lr:.2e} {rate:.2f} steps/s left "
            f"{progress.duration((num_steps - s) / max(rate, 1e-9))}")
        last_log_time, last_log_step, sums = now, s, np.zeros(2)
        if monitor.update(values["loss"]):
          raise TrainingError(monitor.diverged_message(
              s, values["loss"], "loss", self._kept(), t.learning_rate))
      if (s % t.eval_every == 0 or stopping) and heldout_set:
        heldout = self._evaluate(enrolment=False)
        with heldout_writer.as_default():
          tf.summary.scalar("metrics/accuracy", heldout["heldout_accuracy"],
                            step=s)
        log(f"held-out step {s}: accuracy={heldout['heldout_accuracy']:.4f} "
            f"({len(heldout_set)} utterances)")
      if s % t.checkpoint_every == 0 and not stopping:
        self._save()
      if stopping:
        if s < num_steps:
          log(f"stopping at step {s}" + (
              " as asked" if asked else ": config.train.max_minutes reached"))
        break
    if checkpoints.latest_number(self.manager) != int(step):
      self._save(final=True)
    results = {"step": int(step)}
    if heldout_set:
      results.update(self._evaluate(enrolment=True))
      with heldout_writer.as_default():
        for k, v in results.items():
          if k != "step":
            tf.summary.scalar(f"metrics/{k}", v, step=int(step))
      log(f"held-out step {int(step)}: " + progress.format_values(
          {k: v for k, v in results.items() if k != "step"}))
    workdir_lib.write_evaluation(workdir, results)
    writer.flush()
    heldout_writer.flush()
    total = time.time() - start_time
    log(f"done: step {int(step)} in {progress.duration(total)} "
        f"({(int(step) - start_step) / max(total, 1e-9):.2f} steps/s); "
        f"checkpoints in {self.manager.directory}")
    return {**values, **results, "history": history}
