"""A content-judge workdir: its files, what its checkpoints hold, the check
before a resume, and the trained network read back.

Workdir layout:
    .e2s.lock          the run lock (names the run holding it)
    config.json        the resolved config
    judge.json         phone inventory, language, train / held-out item ids,
                       the skipped items
    checkpoints/       ckpt-<step>, the last `keep_checkpoints` (weights,
                       random state, optimiser, step, best held-out PER)
    best/              ckpt-<step>: the weights of the lowest held-out PER
                       seen at an evaluation
    train/ heldout/    TensorBoard events
    evaluation.json    held-out PER of the last and of the best weights
                       (written at the end)

Nothing here but `write_run_files` and `write_evaluation` writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

import keras
import ml_collections
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf.content import network
from e2s_tf.training import checkpoints
from e2s_tf.training import configio
from e2s_tf.training import resume

CONFIG_FILE = configio.CONFIG_FILE
JUDGE_FILE = "judge.json"
EVALUATION_FILE = "evaluation.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
# The program named by the workdir's lock.
LOCK_PROGRAM = "train_content_judge"
# Config sections (and fields) a resumed run must share with the workdir's.
MODEL_SECTIONS = ("model", "stft", "language")
# Which weights of a workdir: the lowest held-out PER, or the last step.
WEIGHTS = ("best", "last")


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINT_DIR)


def best_dir(workdir: str) -> str:
  return os.path.join(workdir, BEST_DIR)


def read_json(path: str) -> Any:
  return fileio.read_json(path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The workdir's config.json."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not fileio.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a content "
                            "judge workdir (e2s_tf.train_content_judge)?")
  return configio.read(workdir)


def read_judge(workdir: str) -> dict[str, Any]:
  """judge.json: {"phones", "language", "train", "heldout", "skipped"}."""
  return read_json(os.path.join(workdir, JUDGE_FILE))


def read_evaluation(workdir: str) -> dict[str, Any]:
  """evaluation.json, or {} when the run wrote none."""
  path = os.path.join(workdir, EVALUATION_FILE)
  return read_json(path) if fileio.exists(path) else {}


def write_run_files(workdir: str, config: ml_collections.ConfigDict,
                    phones: Sequence[str], train_ids: Sequence[str],
                    heldout_ids: Sequence[str],
                    skipped: dict[str, list[str]]) -> None:
  """config.json and judge.json, each replaced whole."""
  configio.write(workdir, config)
  fileio.write_json(os.path.join(workdir, JUDGE_FILE),
                    {"phones": list(phones), "language": config.language,
                     "train": list(train_ids), "heldout": list(heldout_ids),
                     "skipped": skipped}, indent=1, sort_keys=True)


def write_evaluation(workdir: str, results: dict[str, Any]) -> str:
  return fileio.write_json(os.path.join(workdir, EVALUATION_FILE), results,
                           indent=1, sort_keys=True)


def check_resume(workdir: str, config: ml_collections.ConfigDict,
                 phones: Sequence[str]) -> Optional[str]:
  """Refuses to resume a workdir's run with another model or phones.

  Reads the checkpoint state, config.json and judge.json and writes nothing.
  Returns the latest checkpoint (None: a fresh start).

  Raises:
    TrainingError: what differs ("model.channels 96 in the workdir, 128
      now", "it was trained on the phones [...]; the manifest has [...]").
  """
  latest = tf.train.latest_checkpoint(checkpoint_dir(workdir))
  if latest is None:
    return None
  problems = []
  if fileio.exists(os.path.join(workdir, CONFIG_FILE)):
    old = configio.read(workdir).to_dict()
    new = json.loads(configio.to_json(config))
    for section in MODEL_SECTIONS:
      differences = resume.config_differences(
          {section: old.get(section)}, {section: new.get(section)}, "config")
      if differences:
        problems.append(f"its {section} config differs: {differences}")
  if fileio.exists(os.path.join(workdir, JUDGE_FILE)):
    old_phones = read_judge(workdir).get("phones")
    if old_phones != list(phones):
      problems.append(f"it was trained on the phones {old_phones}; the "
                      f"manifest's training items have {list(phones)}")
  if problems:
    raise resume.refusal(workdir, latest, problems, "the manifest and config")
  return latest


def training_checkpoint(net: network.ContentJudgeNetwork,
                        optimizer: keras.optimizers.Optimizer,
                        step: tf.Variable, best_per: tf.Variable,
                        best_step: tf.Variable) -> tf.train.Checkpoint:
  """What a training checkpoint holds: every weight by Keras path, the
  network's random state (dropout, SpecAugment), the optimiser, the step and
  the best held-out PER so far (and its step)."""
  return tf.train.Checkpoint(weights=checkpoints.weights_of(net),
                             random=checkpoints.random_state(net),
                             optimizer=optimizer, step=step,
                             best_per=best_per, best_step=best_step)


def weights_checkpoint(net: network.ContentJudgeNetwork) -> tf.train.Checkpoint:
  """What `best/` holds: the weights alone."""
  return tf.train.Checkpoint(weights=checkpoints.weights_of(net))


@dataclasses.dataclass
class Trained:
  """The network of a workdir at one of its checkpoints.

  Attributes:
    network: with the checkpoint's weights.
    config: the workdir's config.json.
    judge: judge.json.
    checkpoint: the path of the checkpoint.
    weights: "best" or "last".
  """

  network: network.ContentJudgeNetwork
  config: ml_collections.ConfigDict
  judge: dict[str, Any]
  checkpoint: str
  weights: str

  @property
  def step(self) -> int:
    return int(self.checkpoint.rsplit("-", 1)[-1])


def restore_trained(workdir: str, weights: str = "best") -> Trained:
  """The network of `workdir` at its best checkpoint (the lowest held-out
  PER; the last one when the run held nothing out) or at its last.

  Raises:
    ValueError: `weights` is neither "best" nor "last".
    FileNotFoundError: not a content-judge workdir, or no checkpoint.
  """
  if weights not in WEIGHTS:
    raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
  config = load_config(workdir)
  judge = read_judge(workdir)
  net = network.build_network(config, len(judge["phones"]))
  directory = checkpoint_dir(workdir)
  best = best_checkpoint(workdir) if weights == "best" else None
  if best is None:
    weights = "last"
    latest = checkpoints.restore_for_inference(weights_checkpoint(net),
                                               directory, workdir)
  else:
    weights_checkpoint(net).restore(best).expect_partial(
    ).assert_existing_objects_matched()
    latest = best
  return Trained(net, config, judge, latest, weights)


def best_checkpoint(workdir: str) -> Optional[str]:
  """The `best/` checkpoint that the latest training checkpoint names (its
  `best_step`), or None: no evaluation yet, or none held out. A `best/`
  checkpoint of another step (left by an interrupted run) is never used."""
  latest = tf.train.latest_checkpoint(checkpoint_dir(workdir))
  if latest is None:
    return None
  reader = tf.compat.v1.train.NewCheckpointReader(latest)  # see checkpoints.has
  key = "best_step/.ATTRIBUTES/VARIABLE_VALUE"
  if not reader.has_tensor(key) or int(reader.get_tensor(key)) < 0:
    return None
  path = os.path.join(best_dir(workdir), f"ckpt-{int(reader.get_tensor(key))}")
  return path if tf.io.gfile.exists(path + ".index") else None
