"""The content-judge trainer, built on the shared parts of e2s_tf/training.

`train(config, manifest, workdir)` trains the CTC phone recogniser on the
items of a manifest that have a `text` (a held-out fraction of them scores
the phone error rate, PER, of greedy decoding), with checkpoints, TensorBoard
scalars and console progress. The same call on the same workdir resumes at
the last checkpoint with the optimiser state and the random state; batch k
is a function of (seed, k) alone, so a run of 3 steps then 3 more equals 6
straight.

What a run guarantees for its workdir (as the other trainers do):
- one run at a time: the workdir is locked (`fileio.FolderLock`); a second
  run fails at once naming the first, the lock of a killed run is free;
- a resume is checked before anything is written: another model, stft or
  language config, or other phones, stop it with what differs, and the
  workdir stays as it was;
- config.json, judge.json and evaluation.json are replaced whole; a
  checkpoint that cannot be written (full disk) leaves no file behind;
- a checkpoint is only written with finite weights: a NaN/Inf loss or a
  finite divergence stops the run with the last good checkpoint kept;
- `best/` holds the weights of the lowest held-out PER seen at an
  evaluation (every `train.eval_every` steps and at the end).

The workdir's files are described in e2s_tf/content/workdir.py.
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
from e2s_tf.content import data
from e2s_tf.content import decoding
from e2s_tf.content import g2p
from e2s_tf.content import network
from e2s_tf.content import workdir as workdir_lib
from e2s_tf.training import checkpoints
from e2s_tf.training import configio
from e2s_tf.training import distribution
from e2s_tf.training import monitor as monitor_lib
from e2s_tf.training import progress
from e2s_tf.training import schedule
from e2s_tf.training.errors import TrainingError

# The strategies this trainer runs under (config.distribution).
DISTRIBUTIONS = ("default",)


def inference_function(net: network.ContentJudgeNetwork) -> Callable:
  """`(waveform [B, S], lengths [B]) -> (logits, frames)` of the network in
  inference mode, traced once for all shapes."""

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                tf.TensorSpec([None], tf.int32)])
  def infer(waveform, lengths):
    return net(waveform, lengths, training=False)

  return lambda w, n: tuple(t.numpy() for t in infer(w, n))


def evaluate(function: Callable, utterances: Sequence[data.Utterance],
             inventory: Sequence[str],
             stft_config: spectral.StftConfig) -> dict[str, Any]:
  """Held-out PER of greedy decoding of whole utterances.

  Returns:
    {"heldout_per": corpus-level PER (NaN without utterances),
     "heldout_items": their count}.
  """
  if not utterances:
    return {"heldout_per": float("nan"), "heldout_items": 0}
  hypotheses = decoding.transcribe(function, [u.audio for u in utterances],
                                   inventory, stft_config)
  per = decoding.phone_error_rate([u.phones for u in utterances], hypotheses)
  return {"heldout_per": float(per), "heldout_items": len(utterances)}


def train(config: ml_collections.ConfigDict, manifest: str, workdir: str,
          heldout_ids: Optional[Sequence[str]] = None,
          log: Callable[[str], None] = print,
          stop_at_step: Optional[int] = None,
          progress_bar: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the content judge up to `config.train.num_steps`
  (or `config.train.max_minutes`).

  Args:
    config: e2s_tf/configs/content_judge.py's `get_config()` (or a variant).
    manifest: a manifest whose items have a `text` (items without one are
      skipped and counted).
    workdir: checkpoints, TensorBoard, config.json, judge.json; a workdir
      with checkpoints is resumed (same model config and phones required).
    heldout_ids: hold out these item ids instead of
      `config.data.heldout_fraction` of the items.
    log: console progress.
    stop_at_step: end this call early at this step (with a checkpoint), as an
      interruption would; the learning-rate schedule still spans num_steps.
    progress_bar: a tqdm bar while the audio loads.

  Returns:
    {"step", "loss" (of the last log interval), "history": [{"step", "loss"}
    per log interval of this call], "heldout_per" of the last weights,
    "best_per" and "best_step" (the best evaluation so far), "heldout_items",
    "skipped": {reason: count}}.

  Raises:
    TrainingError: a resume that does not fit the workdir; a non-finite loss
      or a finite divergence (the last good checkpoint is kept); a full disk;
      a `config.distribution` other than `default`.
    g2p.G2PUnavailable: espeak-ng has no G2P for `config.language`.
    manifest.ManifestError: no item has a `text`.
    audio.AudioError: unreadable audio (naming the file).
    fileio.FolderInUse: another live run holds the workdir.
  """
  if config.distribution not in DISTRIBUTIONS:
    raise TrainingError(
        f"config.distribution={config.distribution!r}: the content-judge "
        "trainer runs on one device only; use config.distribution='default'")
  g2p.check_language(config.language)
  with fileio.FolderLock(workdir, workdir_lib.LOCK_PROGRAM):
    run = _Run(config, manifest, workdir, heldout_ids, log, progress_bar)
    return run.train(stop_at_step)


class _Run:
  """One call of `train` on a locked workdir: the data, the model restored,
  the step traced, the loop (see `train`)."""

  def __init__(self, config, manifest, workdir, heldout_ids, log,
               progress_bar):
    self.config, self.workdir, self.log = config, workdir, log
    self.stft_config = spectral.StftConfig.from_dict(config.stft.to_dict())
    t0 = time.time()
    utterances, self.skipped = data.load_utterances(
        manifest, self.stft_config, int(config.model.frame_stack),
        config.language, log, progress_bar)
    self.train_set, self.heldout_set = data.split_utterances(
        utterances, config.data.heldout_fraction, config.train.seed,
        heldout_ids)
    self.inventory = data.phone_inventory(self.train_set)
    index = {p: k for k, p in enumerate(self.inventory)}
    # Held-out phones the training items never have cannot be recognised;
    # they stay in the references (and count as errors).
    unseen = sorted({p for u in self.heldout_set for p in u.phones} -
                    set(index))
    seconds = sum(u.audio.shape[0] for u in self.train_set) / (
        self.stft_config.sample_rate)
    log(f"{len(utterances)} utterances with {len(self.inventory)} phones "
        f"loaded in {time.time() - t0:.1f} s: {len(self.train_set)} train "
        f"({seconds:.0f} s of audio), {len(self.heldout_set)} held out"
        + (f"; held-out phones never seen in training: {unseen}"
           if unseen else ""))
    latest = workdir_lib.check_resume(workdir, config, self.inventory)
    self.sampler = data.BucketSampler(
        self.train_set, index, config.data.batch_size,
        config.data.bucket_jitter, config.train.seed)

    keras.utils.set_random_seed(config.train.seed)
    t = config.train
    # Elapsed share of the wall-clock budget, followed by the LR decay.
    self.time_fraction = (tf.Variable(0.0, trainable=False,
                                      name="time_fraction")
                          if t.max_minutes else None)
    with distribution.make_strategy(config.distribution).scope():
      self.net = network.build_network(config, len(self.inventory))
      self.optimizer = schedule.adam(t, t.learning_rate, self.time_fraction,
                                     weight_decay=t.weight_decay)
      self.variables = self.net.trainable_variables
      self.optimizer.build(self.variables)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.best_per = tf.Variable(math.inf, dtype=tf.float64, trainable=False,
                                name="best_per")
    self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                 name="best_step")
    ckpt = workdir_lib.training_checkpoint(self.net, self.optimizer,
                                           self.step, self.best_per,
                                           self.best_step)
    if latest:
      checkpoints.restore(ckpt, latest)
      log(f"resumed from {latest} at step {int(self.step)}")
    self.manager = tf.train.CheckpointManager(
        ckpt, workdir_lib.checkpoint_dir(workdir),
        max_to_keep=t.keep_checkpoints)
    self.best_manager = tf.train.CheckpointManager(
        workdir_lib.weights_checkpoint(self.net),
        workdir_lib.best_dir(workdir), max_to_keep=1)
    self.monitor = monitor_lib.DivergenceMonitor(t.divergence_factor,
                                                 t.divergence_patience)
    self._trace_step()
    self.infer = inference_function(self.net)

  def _trace_step(self) -> None:
    net, variables, optimizer = self.net, self.variables, self.optimizer
    signature = [tf.TensorSpec([None, None], tf.float32),
                 tf.TensorSpec([None], tf.int32),
                 tf.TensorSpec([None, None], tf.int32),
                 tf.TensorSpec([None], tf.int32)]

    @tf.function(input_signature=signature)
    def train_step(waveform, lengths, labels, label_lengths):
      with tf.GradientTape() as tape:
        logits, frames = net(waveform, lengths, training=True)
        loss = network.ctc_loss(logits, frames, labels, label_lengths)
      optimizer.apply(tape.gradient(loss, variables), variables)
      return loss

    self.train_step = train_step

  def _weights_finite(self) -> bool:
    return all(bool(np.all(np.isfinite(v.numpy()))) for v in self.net.weights)

  def _kept(self) -> str:
    return monitor_lib.kept_message(self.manager.latest_checkpoint)

  def _save(self, final: bool = False) -> None:
    checkpoints.save_if_good(self.manager, int(self.step),
                             self._weights_finite(), None, self.monitor,
                             self.config.train.learning_rate, self.log, final)

  def _evaluate(self, writer) -> dict[str, Any]:
    """Held-out PER of the current weights; keeps them in best/ when lower
    than every earlier evaluation's."""
    s = int(self.step)
    out = evaluate(self.infer, self.heldout_set, self.inventory,
                   self.stft_config)
    per = out["heldout_per"]
    if per < float(self.best_per) and self._weights_finite():
      checkpoints.save(self.best_manager, s)
      self.best_per.assign(per)
      self.best_step.assign(s)
    with writer.as_default():
      tf.summary.scalar("metrics/per", per, step=s)
      tf.summary.scalar("metrics/best_per", float(self.best_per), step=s)
    self.log(f"held-out step {s}: PER={per:.4f} (best "
             f"{float(self.best_per):.4f} at step {int(self.best_step)}; "
             f"{len(self.heldout_set)} utterances)")
    return out

  def train(self, stop_at_step: Optional[int]) -> dict[str, Any]:
    # The checks passed: from here on the run writes into the workdir.
    config_path = os.path.join(self.workdir, workdir_lib.CONFIG_FILE)
    with checkpoints.no_space_message(config_path, self.manager):
      workdir_lib.write_run_files(
          self.workdir, self.config, self.inventory,
          [u.id for u in self.train_set], [u.id for u in self.heldout_set],
          self.skipped)
    with checkpoints.no_space_message(self.workdir, self.manager):
      return self._loop(stop_at_step)

  def _loop(self, stop_at_step: Optional[int]) -> dict[str, Any]:
    config, workdir, log, step = (self.config, self.workdir, self.log,
                                  self.step)
    monitor = self.monitor
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
    loss_sum = 0.0
    history: list[dict[str, float]] = []
    values: dict[str, float] = {}
    last_eval = None  # (step, held-out PER) of this call's last evaluation

    while int(step) < num_steps:
      s = int(step)
      batch = self.sampler.batch(s)
      loss = float(self.train_step(*map(tf.constant, batch)))
      if self.time_fraction is not None:
        self.time_fraction.assign((time.time() - start_time) /
                                  (60.0 * t.max_minutes))
      if not math.isfinite(loss):
        raise TrainingError(monitor_lib.non_finite_message(
            s + 1, progress.format_values({"loss": loss}), self._kept()))
      step.assign_add(1)
      s += 1
      loss_sum += loss
      if s == start_step + 1 and s % t.log_every:
        monitor.anchor(loss)
      asked = stop_at_step is not None and s >= stop_at_step
      stopping = (s >= num_steps or asked or
                  (deadline is not None and time.time() > deadline))
      if s % t.log_every == 0 or stopping:
        now = time.time()
        count = s - last_log_step
        values = {"loss": loss_sum / count}
        history.append({"step": s, **values})
        rate = count / max(now - last_log_time, 1e-9)
        lr = float(self.optimizer.learning_rate)
        with writer.as_default():
          tf.summary.scalar("losses/ctc", values["loss"], step=s)
          tf.summary.scalar("learning_rate", lr, step=s)
          tf.summary.scalar("steps_per_sec", rate, step=s)
        log(f"step {s}/{num_steps} {progress.format_values(values)} "
            f"lr={lr:.2e} {rate:.2f} steps/s left "
            f"{progress.duration((num_steps - s) / max(rate, 1e-9))}")
        last_log_time, last_log_step, loss_sum = now, s, 0.0
        if monitor.update(values["loss"]):
          raise TrainingError(monitor.diverged_message(
              s, values["loss"], "loss", self._kept(), t.learning_rate))
      if (s % t.eval_every == 0 or stopping) and self.heldout_set:
        last_eval = (s, self._evaluate(heldout_writer)["heldout_per"])
      if s % t.checkpoint_every == 0 and not stopping:
        self._save()
      if stopping:
        if s < num_steps:
          log(f"stopping at step {s}" + (
              " as asked" if asked else ": config.train.max_minutes reached"))
        break
    if checkpoints.latest_number(self.manager) != int(step):
      self._save(final=True)
    results: dict[str, Any] = {"step": int(step)}
    if self.heldout_set:
      if last_eval is not None and last_eval[0] == int(step):
        per = last_eval[1]
      else:  # a resume with no step left to train
        per = evaluate(self.infer, self.heldout_set, self.inventory,
                       self.stft_config)["heldout_per"]
      results.update(heldout_per=per, best_per=float(self.best_per),
                     best_step=int(self.best_step),
                     heldout_items=len(self.heldout_set))
    else:
      results.update(heldout_per=None, best_per=None, best_step=None,
                     heldout_items=0)
    results["skipped"] = {k: len(v) for k, v in self.skipped.items()}
    workdir_lib.write_evaluation(workdir, results)
    writer.flush()
    heldout_writer.flush()
    total = time.time() - start_time
    log(f"done: step {int(step)} in {progress.duration(total)} "
        f"({(int(step) - start_step) / max(total, 1e-9):.2f} steps/s); "
        + (f"held-out PER {results['heldout_per']:.4f} (best "
           f"{results['best_per']:.4f} at step {results['best_step']}); "
           if self.heldout_set else "no held-out items; ")
        + f"checkpoints in {self.manager.directory}")
    return {**values, **results, "history": history}
