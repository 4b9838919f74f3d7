"""The training loop: data, model, checkpoints and resume, TensorBoard, profiling.

`train(config, data_dir, workdir)` trains the model of `config.model.name`
on `data_dir` (an output of e2s_tf.preprocess). The same call on the same
workdir resumes at the last checkpoint with the optimiser state, the data
position and the random state (dropout), so a run of 5 steps then 5 more, or
one killed and re-run, equals 10 straight (with `config.data.deterministic`).

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

import contextlib
import dataclasses
import glob
import json
import math
import os
import shutil
import time
from typing import Any, Optional, Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import data as data_lib
from e2s_tf import fileio
from e2s_tf import metrics as metrics_lib
from e2s_tf import models
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import summaries
from e2s_tf.models import prior as prior_lib
from e2s_tf.models import trainer

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# Batch keys the train step consumes (others, such as `id`, stay outside).
STEP_KEYS = ("embedding", "log_stft", "mask", "length", "speaker")


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss)."""


def resolve_config(config: ml_collections.ConfigDict,
                   info: dict[str, Any]) -> ml_collections.ConfigDict:
  """Fills the data-dependent fields of `config` from dataset_info."""
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  config.data.embedding_dim = int(info["embedder"]["dim"])
  config.data.num_bins = spectral.StftConfig.from_dict(info["stft"]).num_bins
  conditioning = config.model.get("speaker_conditioning", "none")
  if conditioning != "none":
    if not info.get("speakers"):
      raise ValueError(f"speaker_conditioning={conditioning!r} needs a dataset "
                       "with speakers; this one has none")
    config.model.num_speakers = len(info["speakers"])
    config.data.with_speaker = True
  return config


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=1, sort_keys=True, default=list)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    return ml_collections.ConfigDict(json.load(f))


DISTRIBUTIONS = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
  """`default` (one device), `mirrored` (the local GPUs, or CPUs) or
  `multi_worker` (MultiWorkerMirroredStrategy from TF_CONFIG)."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"config.distribution must be one of {DISTRIBUTIONS}, got "
                   f"{name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the worker that writes summaries and the real checkpoints."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0 and
      "chief" not in resolver.cluster_spec().as_dict())


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak`, then cosine decay to `final_fraction * peak`.

  The decay follows the larger of the step progress and `time_fraction` (a
  variable the loop sets to elapsed / `train.max_minutes`), so a run cut by
  its wall-clock budget still ends with a decayed learning rate.
  """

  def __init__(self, peak: float, warmup_steps: int, num_steps: int,
               final_fraction: float, time_fraction=None):
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.num_steps = int(num_steps)
    self.final_fraction = float(final_fraction)
    self.time_fraction = time_fraction

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(max(self.warmup_steps, 1))
    progress = (step - self.warmup_steps) / float(
        max(self.num_steps - self.warmup_steps, 1))
    if self.time_fraction is not None:
      progress = tf.maximum(progress, tf.cast(self.time_fraction, tf.float32))
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    decay = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (
        1.0 + tf.cos(math.pi * progress))
    warm = self.peak * (step + 1.0) / warmup
    return tf.where(step < self.warmup_steps, warm, self.peak * decay)

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps,
            "num_steps": self.num_steps, "final_fraction": self.final_fraction}


def _learning_rate(config, peak, time_fraction=None):
  t = config.train
  warmup = min(t.warmup_steps, max(t.num_steps - 1, 0))
  return WarmupCosine(peak, warmup, t.num_steps, t.final_lr_fraction,
                      time_fraction)


def _adam(config, peak, time_fraction=None):
  t = config.train
  return keras.optimizers.Adam(
      learning_rate=_learning_rate(config, peak, time_fraction),
      beta_1=t.adam_b1,
      beta_2=t.adam_b2, global_clipnorm=t.clip_norm or None)


def build_model(config: ml_collections.ConfigDict, info: dict[str, Any],
                compile_model: bool = True, time_fraction=None) -> keras.Model:
  """Builds (and compiles) the model of a resolved config.

  `time_fraction`: an optional float variable (elapsed share of
  `train.max_minutes`) that the learning-rate decay also follows.
  """
  stats = info["stats"]
  model = models.build(config.model.name, config,
                       np.asarray(stats["log_stft_mean"], np.float32),
                       np.asarray(stats["log_stft_std"], np.float32),
                       prior=(prior_lib.from_dataset_info(info) if config.model.get(
                           "filterbank_prior", False) else None))
  if compile_model:
    loss = dict(config.loss.to_dict(),
                stft_config=spectral.StftConfig.from_dict(info["stft"]))
    roles = getattr(model, "optimizer_roles", ("optimizer",))
    if roles == ("optimizer",):
      model.compile(_adam(config, config.train.learning_rate, time_fraction),
                    **loss)
    else:
      model.compile(_adam(config, config.train.learning_rate, time_fraction),
                    _adam(config, config.train.d_learning_rate,
                          time_fraction), **loss)
  return model


def _optimizers(model) -> dict[str, Any]:
  roles = getattr(model, "optimizer_roles", ("optimizer",))
  if roles == ("optimizer",):
    return {"optimizer": model.optimizer}
  return {"g_optimizer": model.g_optimizer, "d_optimizer": model.d_optimizer}


def checkpoint_weights(model) -> dict[str, Any]:
  """Every weight of `model` by its unique Keras path.

  Checkpointed explicitly: a Keras 3 model does not expose layers kept in
  Python lists to `tf.train.Checkpoint` dependency tracking, so
  `Checkpoint(model=model)` alone can miss weights.
  """
  out = {}
  for v in model.weights:
    key = v.path
    if key in out:
      raise ValueError(f"two weights share the path {key!r}")
    out[key] = v
  return out


def _network(model):
  return getattr(model, "network", None) or getattr(model, "generator")


def max_item_frames(config) -> int:
  """The longest item training batches whole (`config.data.max_item_frames`,
  0: `frames_per_batch`); longer ones are cut into windows."""
  d = config.data
  return int(d.get("max_item_frames", 0) or d.frames_per_batch)


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


def step_signature(element_spec) -> dict[str, tf.TensorSpec]:
  """The train/test step input signature: dynamic batch and frame
  dimensions, so batches of every mode and bucket share one trace."""
  return {k: tf.TensorSpec([None, None, v.shape[-1]] if v.shape.rank == 3
                           else [None] * v.shape.rank, v.dtype)
          for k, v in element_spec.items() if k in STEP_KEYS}


def _make_eval_data(config, data_dir, split="valid", with_audio=False):
  d = config.data
  return data_lib.make_dataset(
      data_dir, split, mode="bucket", frames_per_batch=d.frames_per_batch,
      max_frames=max_item_frames(config), with_speaker=d.with_speaker,
      shuffle=False, deterministic=True, with_audio=with_audio)


def _step_inputs(batch):
  return {k: v for k, v in batch.items() if k in STEP_KEYS}


def _fmt(values: dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4f}" for k, v in values.items())


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Evaluator:
  """Validation losses, metrics and summaries of fixed items."""

  def __init__(self, config, data_dir, info, model, step_fn, enabled=True):
    self.config = config
    self.info = info
    self.model = model
    self.stft = spectral.StftConfig.from_dict(info["stft"])
    self.normalizer = data_lib.Normalizer.from_info(info)
    self.step_fn = step_fn
    self.available = enabled and "valid" in info["splits"] and info[
        "splits"]["valid"]["num_examples"] > 0
    if not self.available:
      return
    self.dataset = _make_eval_data(config, data_dir)
    # A few fixed items for images and audio, each kept as a batch of one.
    self.fixed = []
    for batch in self.dataset:
      for b in range(int(batch["length"].shape[0])):
        if len(self.fixed) < config.train.summary_items:
          n = int(batch["length"][b])
          self.fixed.append({k: v[b:b + 1, :n] if v.shape.rank > 1 else
                             v[b:b + 1] for k, v in _step_inputs(batch).items()})
      if len(self.fixed) >= config.train.summary_items:
        break

  def run(self, step: int, writer) -> dict[str, float]:
    if not self.available:
      return {}
    self.model.reset_metrics()
    values = {}
    lsd = []
    for i, batch in enumerate(self.dataset):
      if self.config.train.eval_batches and i >= self.config.train.eval_batches:
        break
      values = {k: float(v) for k, v in self.step_fn(_step_inputs(batch)).items()}
      pred = _network(self.model)(batch["embedding"], batch["mask"],
                                  batch.get("speaker"), training=False)
      target = self.normalizer.denormalize_log_stft(batch["log_stft"])
      pred = self.normalizer.denormalize_log_stft(pred)
      for b in range(int(batch["length"].shape[0])):
        n = int(batch["length"][b])
        lsd.append(metrics_lib.lsd_db_from_log(target[b, :n].numpy(),
                                               pred[b, :n].numpy()))
    values["lsd_db"] = float(np.mean(lsd)) if lsd else float("nan")
    self.model.reset_metrics()
    with writer.as_default():
      for k, v in values.items():
        tf.summary.scalar(f"losses/{k}" if k != "lsd_db" else "metrics/lsd_db",
                          v, step=step)
      self._write_items(step)
    writer.flush()
    return values

  def _write_items(self, step):
    targets, predictions, waveforms = [], [], []
    for item in self.fixed:
      pred = _network(self.model)(item["embedding"], item["mask"],
                                  item.get("speaker"), training=False)
      targets.append(self.normalizer.denormalize_log_stft(
          item["log_stft"]).numpy()[0])
      predictions.append(self.normalizer.denormalize_log_stft(pred).numpy()[0])
      audio, _ = spectral.griffin_lim(
          np.exp(predictions[-1])[None], None, self.stft,
          num_iterations=self.config.train.griffin_lim_iterations)
      waveforms.append(audio.numpy()[0])
    summaries.write_spectrograms("spectrogram", targets, predictions, step)
    summaries.write_audio("griffin_lim", waveforms, self.stft.sample_rate, step)


# ----------------------------------------------------------------------------
# What a run checks before it writes: the config, the data and the checkpoint.


def model_config_problem(config: ml_collections.ConfigDict) -> Optional[str]:
  """Why `config.model` is not a config of `config.model.name`, or None.

  Overriding `--config.model.name` keeps the fields of the config file's
  model: `--config=multiscale` with `model.name=cnn` has `num_blocks` but no
  `num_layers`. A model is chosen by its config file instead.
  """
  name = config.model.get("name")
  try:
    expected = models.default_model_config(name)
  except ValueError as e:
    return str(e)
  have, want = set(config.model.keys()), set(expected.keys())
  missing, extra = sorted(want - have), sorted(have - want)
  if not missing and not extra:
    return None
  parts = []
  if missing:
    parts.append(f"lacks its fields {', '.join(missing)}")
  if extra:
    parts.append(f"has fields of another model ({', '.join(extra)})")
  return (f"config.model.name={name!r}, but config.model {' and '.join(parts)}"
          ": a model is chosen by its config file, not by overriding "
          f"config.model.name; use --config={name} (or "
          f"--config=testing:{name} for the tiny test model)")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix.rstrip("."): d}
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return out


def _differing(old: Any, new: Any, name: str) -> tuple[list[str], list[str]]:
  """The entries of two (nested) dicts that differ, as `name.key value`."""
  a, b = _flatten(old or {}), _flatten(new or {})
  keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  show = lambda d, k: f"{name}.{k} {d[k]!r}" if k in d else f"no {name}.{k}"  # pylint: disable=unnecessary-lambda-assignment
  return [show(a, k) for k in keys], [show(b, k) for k in keys]


def data_mismatch(old: dict[str, Any], new: dict[str, Any],
                  with_speakers: bool) -> Optional[tuple[str, str]]:
  """(what a run was trained on, what the new data has), or None if a model
  trained on `old` (a dataset_info) can go on training on `new`.

  The embedder (name, dim, grid, options) and the STFT must be equal, and the
  speaker vocabulary when the model is speaker-conditioned; other data of the
  same embedder (other items, other statistics) is allowed.
  """
  oe, ne = old.get("embedder") or {}, new.get("embedder") or {}
  was = [f"{oe.get('name', '?')} dim {oe.get('dim', '?')}"]
  now = [f"{ne.get('name', '?')} dim {ne.get('dim', '?')}"]
  differs = (oe.get("name"), oe.get("dim")) != (ne.get("name"), ne.get("dim"))
  # The embedder's settings matter when it is the same one.
  pairs = [] if differs else [_differing(oe.get(k), ne.get(k), f"embedder.{k}")
                              for k in ("grid", "options")]
  pairs.append(_differing(old.get("stft"), new.get("stft"), "stft"))
  for a, b in pairs:
    differs |= bool(a)
    was += a
    now += b
  if with_speakers and old.get("speakers") != new.get("speakers"):
    differs = True
    was.append(f"speakers {old.get('speakers')}")
    now.append(f"speakers {new.get('speakers')}")
  return (", ".join(was), ", ".join(now)) if differs else None


def check_resume(workdir: str, data_dir: str, config: ml_collections.ConfigDict,
                 info: dict[str, Any]) -> Optional[str]:
  """Refuses to resume a workdir's run with other data or another model.

  Reads the workdir's checkpoint state, config.json and dataset_info.json and
  writes nothing. Returns the latest checkpoint (None: a fresh start).

  Raises:
    TrainingError: what differs ("trained on logmel dim 64; this data_dir
      has mfcc dim 20", "model.channels 16 in the workdir, 32 now").
  """
  latest = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
  if latest is None:
    return None
  problems = []
  info_path = os.path.join(workdir, records.DATASET_INFO)
  if os.path.exists(info_path):
    with open(info_path) as f:
      old_info = json.load(f)
    mismatch = data_mismatch(
        old_info, info, config.model.get("speaker_conditioning",
                                         "none") != "none")
    if mismatch:
      problems.append(f"it was trained on {mismatch[0]}; this data_dir "
                      f"({data_dir}) has {mismatch[1]}")
  if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    old = load_config(workdir).model.to_dict()
    new = json.loads(config_to_json(config))["model"]
    was, now = _differing(old, new, "model")
    if was:
      problems.append("its model config differs: " + "; ".join(
          f"{a} in the workdir, {b.split(' ', 1)[-1]} now"
          for a, b in zip(was, now)))
  if problems:
    raise TrainingError(
        f"cannot resume {workdir} (at {os.path.basename(latest)}): "
        f"{'; '.join(problems)}. Resume it with the data_dir and config it "
        "was trained with, or use another --workdir; nothing in the workdir "
        "was changed")
  return latest


def random_state(model: keras.Model) -> dict[str, Any]:
  """The model's random state: the `keras.random.SeedGenerator` states of
  its layers (dropout), by their order in `model.variables`.

  Checkpointed with the weights, so that a resumed run draws the dropout
  masks a straight run would have drawn.
  """
  weights = {id(v) for v in model.weights}
  states = [v for v in model.variables if id(v) not in weights]
  return {f"seed_{i}": v for i, v in enumerate(states)}


def _checkpoint_has(path: str, key: str) -> bool:
  return any(name.startswith(key + "/")
             for name, _ in tf.train.list_variables(path))


def _restore(ckpt: tf.train.Checkpoint, path: str) -> None:
  """Restores a training checkpoint, or says why it does not fit."""
  try:
    status = ckpt.restore(path)
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    reason = str(getattr(e, "message", e)).strip().splitlines()[0]
    raise TrainingError(
        f"{path} does not fit the model of this config ({reason}); resume "
        "with the config it was trained with, or use another --workdir; "
        "nothing in the workdir was changed") from None


def _write_atomically(path: str, data: bytes) -> None:
  """Writes `path` whole or not at all (a temporary file, then a rename)."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def _remove_checkpoint_files(prefix: str) -> None:
  """Removes what a failed save of checkpoint `prefix` left behind."""
  for path in glob.glob(glob.escape(prefix) + ".*") + glob.glob(
      glob.escape(prefix) + "_temp*"):
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(path)


class DivergenceMonitor:
  """Tells a finite divergence from the noise and the warm-up of a run.

  A logged loss above `factor` x the median of the earlier logged losses is
  suspect; `patience` suspect logs in a row are a divergence. Suspect losses
  do not join the history, so a diverging run cannot raise its own median;
  the first log has no history and a run's high start only raises the
  median, so a warm-up never looks like a divergence. `factor` 0 disables.
  """

  def __init__(self, factor: float, patience: int):
    self.factor = float(factor)
    self.patience = max(int(patience), 1)
    self.history: list[float] = []
    self.streak = 0

  @property
  def median(self) -> float:
    return float(np.median(self.history)) if self.history else math.nan

  def too_high(self, loss: float) -> bool:
    """Whether `loss` is above `factor` x the median (never without one)."""
    return (self.factor > 0 and bool(self.history) and self.median > 0 and
            loss > self.factor * self.median)

  def anchor(self, loss: float) -> None:
    """Starts the history with the loss of a run's first step (before its
    first update), so a run that diverges before its first log is caught."""
    if self.factor > 0 and not self.history and math.isfinite(loss):
      self.history.append(loss)

  def update(self, loss: float) -> bool:
    """Records a logged loss; True when it completes a divergence."""
    if self.factor <= 0 or not math.isfinite(loss):
      return False
    if self.too_high(loss):
      self.streak += 1
      return self.streak >= self.patience
    self.streak = 0
    self.history.append(loss)
    return False


def _sentence(text: str) -> str:
  return text[:1].upper() + text[1:]


def _first_line(error: BaseException) -> str:
  text = str(getattr(error, "message", None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


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
  problem = model_config_problem(config)
  if problem:
    raise TrainingError(problem)
  profile = tuple(profile_steps or ())
  if profile and (len(profile) != 2 or profile[0] >= profile[1]):
    raise ValueError(f"profile_steps must be A,B with A < B, got {profile}")
  info = records.read_dataset_info(data_dir)
  config = resolve_config(config, info)
  strategy = make_strategy(config.distribution)
  chief = is_chief(strategy)
  # Workers of one multi-worker run share the workdir: the chief holds its
  # lock, the others write only their scratch checkpoints.
  lock = fileio.FolderLock(workdir, "train") if chief else None
  if lock:
    lock.acquire()
  try:
    return _train(config, info, data_dir, workdir, strategy, chief, profile,
                  log, stop_at_step)
  finally:
    if lock:
      lock.release()


def _train(config, info, data_dir, workdir, strategy, chief, profile, log,
           stop_at_step):
  """`train` once the workdir is locked (see there)."""
  latest = check_resume(workdir, data_dir, config, info) if chief else None
  replicas = strategy.num_replicas_in_sync
  if not chief:
    log = lambda *_: None  # pylint: disable=unnecessary-lambda-assignment
  if replicas > 1:
    log(f"{config.distribution}: {replicas} replicas; the global batch is "
        "split across them")
  keras.utils.set_random_seed(config.train.seed)
  keras.mixed_precision.set_global_policy(config.train.precision)
  # Elapsed share of the wall-clock budget, followed by the LR decay.
  time_fraction = (tf.Variable(0.0, trainable=False, name="time_fraction")
                   if config.train.max_minutes else None)
  try:
    with strategy.scope():
      model = build_model(config, info, time_fraction=time_fraction)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  # Bookkeeping on the host, outside the strategy.
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
  position = tf.Variable(0, dtype=tf.int64, trainable=False, name="position")

  randomness = random_state(model)
  ckpt = tf.train.Checkpoint(weights=checkpoint_weights(model), step=step,
                             epoch=epoch, position=position, random=randomness,
                             **_optimizers(model))
  # Every worker saves (the save is collective); only the chief's copy is
  # kept, the others write to a scratch directory removed at the end.
  checkpoint_dir = os.path.join(workdir, CHECKPOINT_DIR)
  if not chief:
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    checkpoint_dir = os.path.join(
        workdir, f".worker_{strategy.cluster_resolver.task_id}_checkpoints")
  if latest:
    restore_from = ckpt
    if randomness and not _checkpoint_has(latest, "random"):
      # A checkpoint of an older version: the dropout state starts afresh.
      restore_from = tf.train.Checkpoint(
          weights=ckpt.weights, step=step, epoch=epoch, position=position,
          **_optimizers(model))
      log(f"{latest} holds no random state: the resumed run draws other "
          "dropout masks than a straight run would")
    _restore(restore_from, latest)
    log(f"resumed from {latest} at step {int(step)}")
  manager = tf.train.CheckpointManager(
      ckpt, checkpoint_dir, max_to_keep=config.train.keep_checkpoints)

  # The checks passed: from here on the run writes into the workdir.
  config_path = os.path.join(workdir, CONFIG_FILE)
  if chief:
    with _no_space_message(config_path, manager):
      _write_atomically(config_path, config_to_json(config).encode())
      with open(os.path.join(data_dir, records.DATASET_INFO), "rb") as f:
        info_bytes = f.read()
      _write_atomically(os.path.join(workdir, records.DATASET_INFO),
                        info_bytes)
  try:
    return _loop(config, info, data_dir, workdir, strategy, chief, profile,
                 log, stop_at_step, model, step, epoch, position, manager,
                 time_fraction)
  except tf.errors.DataLossError as e:
    splits = [s for s in ("train", "valid") if s in info["splits"]]
    files = [f for s in splits for f in records.split_files(data_dir, s, info)]
    corrupt = records.find_corrupt_shard(files)
    what = str(corrupt) if corrupt else _first_line(e)
    raise TrainingError(
        f"{what}; training stopped at step {int(step)}, the last complete "
        f"checkpoint ({manager.latest_checkpoint or 'none'}) is kept"
    ) from None


@contextlib.contextmanager
def _no_space_message(path: str, manager):
  """Turns a full disk while writing `path` into a one-line TrainingError."""
  try:
    yield
  except (OSError, tf.errors.OpError) as e:
    if not fileio.is_no_space(e):
      raise
    raise TrainingError(
        f"no space left on {path}; the last complete checkpoint "
        f"({tf.train.latest_checkpoint(manager.directory) or 'none'}) is kept "
        "and nothing partial "
        "is left: free some space and re-run to resume") from None


def _loop(config, info, data_dir, workdir, strategy, chief, profile, log,
          stop_at_step, model, step, epoch, position, manager, time_fraction):
  """The training loop of `train`, once the model is restored."""
  replicas = strategy.num_replicas_in_sync
  checkpoint_dir = manager.directory
  # One trace for every batch shape (see step_signature).
  spec = step_signature(make_train_data(config, data_dir, 0).element_spec)

  def distributed(fn):
    if replicas == 1 and config.distribution == "default":
      return fn

    def run(batch):
      out = strategy.run(fn, args=(batch,))
      return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
              for k, v in out.items()}
    return run

  train_step = tf.function(distributed(model.train_step),
                           jit_compile=config.train.jit_compile and
                           replicas == 1,
                           input_signature=None if replicas > 1 else [spec])
  eval_step = tf.function(distributed(model.test_step),
                          input_signature=None if replicas > 1 else [spec])

  def probe_loss(batch):
    # The reconstruction loss of the current weights (after the update) on
    # a batch, in inference mode, without touching the metric trackers.
    embedding, mask, speaker, target = trainer.unpack_batch(batch)
    pred = _network(model)(embedding, mask, speaker, training=False)
    return {"loss": model.reconstruction_loss(target, pred, mask)["loss"]}

  probe_step = tf.function(distributed(probe_loss),
                           input_signature=None if replicas > 1 else [spec])

  if chief:
    writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
    valid_writer = tf.summary.create_file_writer(
        os.path.join(workdir, "valid"))
  else:
    writer = valid_writer = tf.summary.create_noop_writer()
  if int(step) == 0:
    with writer.as_default():
      summaries.write_config(config_to_json(config))
  # Periodic validation runs where it is cheap to keep consistent; with
  # several workers, evaluate the export instead (e2s_tf.evaluate).
  evaluator = _Evaluator(config, data_dir, info, model, eval_step,
                         enabled=config.distribution != "multi_worker")

  num_steps = config.train.num_steps
  start_time = time.time()
  start_step = int(step)
  last_log_time, last_log_step = start_time, start_step
  frames_since_log = 0
  frames_total = 0
  values: dict[str, float] = {}
  last_valid: dict[str, float] = {}
  profiling = False
  deadline = (start_time + 60.0 * config.train.max_minutes
              if config.train.max_minutes else None)
  optimizer = _optimizers(model)
  main_optimizer = next(iter(optimizer.values()))
  monitor = DivergenceMonitor(config.train.divergence_factor,
                              config.train.divergence_patience)
  last_batch = None

  @tf.function
  def weights_finite():
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                          for v in model.trainable_variables])

  def kept():
    if manager.latest_checkpoint is None:
      return "no checkpoint was written (none had good weights)"
    return f"the last good checkpoint ({manager.latest_checkpoint}) is kept"

  def diverged(s, loss, what):
    return TrainingError(
        f"training diverged at step {s}: {what} {loss:.4g} vs median "
        f"{monitor.median:.4g} of the earlier logged losses (more than "
        f"train.divergence_factor={monitor.factor:g} times); stopped. "
        f"{_sentence(kept())}: lower train.learning_rate (now "
        f"{config.train.learning_rate:g}) or check the data, then re-run to "
        "resume from it")

  def save(final=False):
    # A checkpoint is only written with finite weights whose loss is in line
    # with the logged ones: an update can blow them up after a normal loss,
    # and the last checkpoint must stay good.
    s = int(step)
    if not bool(weights_finite()):
      raise TrainingError(
          f"non-finite loss: the weights became non-finite at step {s}; "
          f"stopped without saving. {_sentence(kept())}: lower "
          "train.learning_rate or check the data, then re-run")
    if last_batch is not None and monitor.factor > 0 and monitor.history:
      loss = float(probe_step(last_batch)["loss"])
      if not math.isfinite(loss) or monitor.too_high(loss):
        if final:
          raise diverged(s, loss, "the loss of the weights to save is")
        log(f"checkpoint of step {s} not written: the loss of its weights "
            f"({loss:.4g}) is more than train.divergence_factor="
            f"{monitor.factor:g} times the median logged loss "
            f"({monitor.median:.4g})")
        return
    number = s
    previous = list(manager.checkpoints)
    with _no_space_message(checkpoint_dir, manager):
      try:
        manager.save(checkpoint_number=number)
      except BaseException:
        # Nothing that looks like a checkpoint may stay half written, and the
        # state file must not name one that is gone (the manager writes it
        # before it sweeps old checkpoints, so those are all still there).
        _remove_checkpoint_files(os.path.join(checkpoint_dir,
                                              f"ckpt-{number}"))
        if previous and tf.train.latest_checkpoint(checkpoint_dir) is None:
          try:
            tf.compat.v1.train.update_checkpoint_state(
                checkpoint_dir, previous[-1],
                all_model_checkpoint_paths=previous)
          except (OSError, tf.errors.OpError):
            pass  # the message names the last complete checkpoint anyway
        raise

  with _no_space_message(workdir, manager):
    while int(step) < num_steps:
      dataset = make_train_data(config, data_dir, int(epoch))
      resume_position = int(position)
      if resume_position:
        dataset = dataset.skip(resume_position)
      if replicas > 1 or config.distribution != "default":
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        dataset = strategy.experimental_distribute_dataset(
            dataset.with_options(options))
      got_batch = False
      for batch in dataset:
        got_batch = True
        s = int(step)
        if profile and s == profile[0]:
          tf.profiler.experimental.start(os.path.join(workdir, "train"))
          profiling = True
        with tf.profiler.experimental.Trace("train", step_num=s, _r=1):
          out = train_step(_step_inputs(batch))
        last_batch = _step_inputs(batch)
        values = {k: float(v) for k, v in out.items()}
        if time_fraction is not None:
          time_fraction.assign((time.time() - start_time) /
                               (60.0 * config.train.max_minutes))
        if not all(math.isfinite(v) for v in values.values()):
          if profiling:
            tf.profiler.experimental.stop()
          raise TrainingError(
              f"non-finite loss at step {s + 1}: {_fmt(values)}; stopped. "
              f"{_sentence(kept())}: lower train.learning_rate or check "
              "the data, then re-run to resume from it")
        step.assign_add(1)
        position.assign_add(1)
        lengths = batch["length"]
        if isinstance(lengths, tf.distribute.DistributedValues):
          lengths = tf.concat(strategy.experimental_local_results(lengths), 0)
        batch_frames = int(tf.reduce_sum(lengths))
        frames_since_log += batch_frames
        frames_total += batch_frames
        s = int(step)
        if s == start_step + 1 and s % config.train.log_every:
          monitor.anchor(values.get("loss", next(iter(values.values()))))
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
          lr = float(main_optimizer.learning_rate)
          with writer.as_default():
            for k, v in values.items():
              tf.summary.scalar(f"losses/{k}", v, step=s)
            tf.summary.scalar("learning_rate", lr, step=s)
            tf.summary.scalar("steps_per_sec", rate, step=s)
            tf.summary.scalar("frames_per_sec", fps, step=s)
          log(f"step {s}/{num_steps} {_fmt(values)} lr={lr:.2e} "
              f"{rate:.2f} steps/s {fps:.0f} frames/s left {_duration(left)}")
          last_log_time, last_log_step, frames_since_log = now, s, 0
          model.reset_metrics()
          loss = values.get("loss", next(iter(values.values())))
          if monitor.update(loss):
            if profiling:
              tf.profiler.experimental.stop()
            raise diverged(s, loss, "loss")
        if s % config.train.eval_every == 0 or s == num_steps:
          last_valid = evaluator.run(s, valid_writer)
          if last_valid:
            log(f"valid step {s}: {_fmt(last_valid)}")
        if s % config.train.checkpoint_every == 0 and s < num_steps:
          save()
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
          raise TrainingError(f"{data_dir}: the train split yields no batch")
        epoch.assign_add(1)
        position.assign(0)
    if profiling:
      tf.profiler.experimental.stop()
    if manager.latest_checkpoint is None or (
        int(manager.latest_checkpoint.rsplit("-", 1)[-1]) != int(step)):
      save(final=True)
    writer.flush()
    valid_writer.flush()
  if not chief:
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
  total = time.time() - start_time
  log(f"done: step {int(step)} in {_duration(total)} "
      f"({(int(step) - start_step) / max(total, 1e-9):.2f} steps/s); "
      f"checkpoints in {manager.directory}")
  return {**values, **{f"valid_{k}": v for k, v in last_valid.items()},
          "steps": int(step) - start_step, "wall_seconds": total,
          "frames": frames_total,
          "frames_per_sec": frames_total / max(total, 1e-9)}


def restore_network(workdir: str) -> tuple[keras.Model, ml_collections.ConfigDict,
                                           dict[str, Any]]:
  """The trained inference network of a workdir, at its latest checkpoint."""
  config = load_config(workdir)
  with open(os.path.join(workdir, records.DATASET_INFO)) as f:
    info = json.load(f)
  model = build_model(config, info)
  ckpt = tf.train.Checkpoint(weights=checkpoint_weights(model))
  latest = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
  if latest is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint; train first")
  ckpt.restore(latest).expect_partial().assert_existing_objects_matched()
  return _network(model), config, info
