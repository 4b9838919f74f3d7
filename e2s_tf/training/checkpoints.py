"""What a training checkpoint holds, and its save, restore and repair.

    ckpt = tf.train.Checkpoint(weights=checkpoints.weights_of(model),
                               random=checkpoints.random_state(model), ...)
    checkpoints.restore(ckpt, path)          # TrainingError if it does not fit
    checkpoints.save(manager, step)          # nothing half written on failure

Keras 3 models do not expose layers kept in Python lists to
`tf.train.Checkpoint` dependency tracking, so `Checkpoint(model=model)` alone
can miss weights: every weight is checkpointed by its unique Keras path.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Optional

import keras
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf.training import monitor as monitor_lib
from e2s_tf.training import progress
from e2s_tf.training.errors import TrainingError


def weights_of(model: keras.Model) -> dict[str, Any]:
  """Every weight of `model` by its unique Keras path."""
  out = {}
  for v in model.weights:
    key = v.path
    if key in out:
      raise ValueError(f"two weights share the path {key!r}")
    out[key] = v
  return out


def random_state(model: keras.Model) -> dict[str, Any]:
  """The model's random state: the `keras.random.SeedGenerator` states of
  its layers (dropout), by their order in `model.variables`.

  Checkpointed with the weights, so that a resumed run draws the dropout
  masks a straight run would have drawn.
  """
  weights = {id(v) for v in model.weights}
  states = [v for v in model.variables if id(v) not in weights]
  return {f"seed_{i}": v for i, v in enumerate(states)}


def has(path: str, key: str) -> bool:
  """Whether the checkpoint `path` holds objects under `key`."""
  # The reader itself, not `tf.train.list_variables`, which first asks
  # whether `path` is a folder: on ram:// `ckpt-2` is one, since `ckpt-2.index`
  # starts with its name.
  reader = tf.compat.v1.train.NewCheckpointReader(path)
  return any(name.startswith(key + "/")
             for name in reader.get_variable_to_shape_map())


def restore(ckpt: tf.train.Checkpoint, path: str) -> None:
  """Restores a training checkpoint, or says why it does not fit.

  Raises:
    TrainingError: the checkpoint's objects do not match (another model).
  """
  try:
    status = ckpt.restore(path)
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    reason = str(getattr(e, "message", e)).strip().splitlines()[0]
    raise TrainingError(
        f"{path} does not fit the model of this config ({reason}); resume "
        "with the config it was trained with, or use another --workdir; "
        "nothing in the workdir was changed") from None


def restore_for_inference(ckpt: tf.train.Checkpoint, directory: str,
                          workdir: str) -> str:
  """Restores the latest checkpoint of `directory` into `ckpt` (whose
  objects are a part of the training ones); returns its path.

  Raises:
    FileNotFoundError: the workdir has no checkpoint.
  """
  latest = tf.train.latest_checkpoint(directory)
  if latest is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint; train first")
  ckpt.restore(latest).expect_partial().assert_existing_objects_matched()
  return latest


def remove_files(prefix: str) -> None:
  """Removes what a failed save of checkpoint `prefix` left behind
  (`<prefix>.*`, `<prefix>_temp*`), on any file system."""
  folder, stem = os.path.split(prefix)
  try:
    names = fileio.listdir(folder)
  except OSError:
    return
  for name in names:
    if not name.startswith((stem + ".", stem + "_temp")):
      continue
    path = os.path.join(folder, name)
    with contextlib.suppress(OSError):
      if fileio.isdir(path):
        fileio.rmtree(path)
      else:
        fileio.remove(path)


def latest_number(manager: tf.train.CheckpointManager) -> Optional[int]:
  """The step number of the manager's latest checkpoint (None: none)."""
  latest = manager.latest_checkpoint
  return None if latest is None else int(latest.rsplit("-", 1)[-1])


@contextlib.contextmanager
def no_space_message(path: str, manager: tf.train.CheckpointManager):
  """Turns a full disk while writing `path` into a one-line TrainingError
  that names the last complete checkpoint."""
  try:
    yield
  except (OSError, tf.errors.OpError) as e:
    if not fileio.is_no_space(e):
      raise
    raise TrainingError(
        f"no space left on {path}; the last complete checkpoint "
        f"({tf.train.latest_checkpoint(manager.directory) or 'none'}) is kept "
        "and nothing partial is left: free some space and re-run to resume"
    ) from None


def save(manager: tf.train.CheckpointManager, number: int) -> None:
  """Saves checkpoint `ckpt-<number>` whole or not at all.

  On any failure nothing that looks like a checkpoint stays half written,
  and the state file names the last complete checkpoint (the manager writes
  it before it sweeps old checkpoints, so those are all still there). A full
  disk raises a one-line TrainingError.
  """
  directory = manager.directory
  previous = list(manager.checkpoints)
  with no_space_message(directory, manager):
    try:
      manager.save(checkpoint_number=number)
    except BaseException:
      remove_files(os.path.join(directory, f"ckpt-{number}"))
      if previous and tf.train.latest_checkpoint(directory) is None:
        try:
          tf.compat.v1.train.update_checkpoint_state(
              directory, previous[-1], all_model_checkpoint_paths=previous)
        except (OSError, tf.errors.OpError):
          pass  # the message names the last complete checkpoint anyway
      raise


def save_if_good(manager: tf.train.CheckpointManager, step: int,
                         weights_finite: bool,
                         probe_loss: Optional[Callable[[], float]],
                         monitor: monitor_lib.DivergenceMonitor,
                         learning_rate: float, log: Callable[[str], None],
                         final: bool = False) -> bool:
  """Saves `ckpt-<step>` only when its weights are good; True if saved.

  Weights that are not finite stop the run (TrainingError). With a history
  in `monitor`, `probe_loss()` (the loss of the weights to save on the last
  batch) must be finite and not too high: else the checkpoint is skipped
  (logged), or, for the `final` one, the run stops as diverged. The last
  checkpoint thus stays good.
  """
  kept = monitor_lib.kept_message(manager.latest_checkpoint)
  if not weights_finite:
    raise TrainingError(
        f"non-finite loss: the weights became non-finite at step {step}; "
        f"stopped without saving. {progress.sentence(kept)}: lower "
        "train.learning_rate or check the data, then re-run")
  if probe_loss is not None and monitor.factor > 0 and monitor.history:
    loss = float(probe_loss())
    if not math.isfinite(loss) or monitor.too_high(loss):
      if final:
        raise TrainingError(monitor.diverged_message(
            step, loss, "the loss of the weights to save is", kept,
            learning_rate))
      log(f"checkpoint of step {step} not written: the loss of its weights "
          f"({loss:.4g}) is more than train.divergence_factor="
          f"{monitor.factor:g} times the median logged loss "
          f"({monitor.median:.4g})")
      return False
  save(manager, step)
  return True
