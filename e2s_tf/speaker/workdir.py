"""A speaker-encoder workdir: its files, what its checkpoints hold, the
check before a resume, and the trained encoder read back.

Workdir layout:
    .e2s.lock          the run lock (names the run holding it)
    config.json        the resolved config
    speakers.json      the speaker vocabulary and the train / held-out item ids
    checkpoints/       ckpt-<step>, the last `keep_checkpoints`
    train/ heldout/    TensorBoard events
    evaluation.json    accuracies of the last checkpoint (written at the end)

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
from e2s_tf.speaker import network
from e2s_tf.speaker.sampling import Utterance
from e2s_tf.training import checkpoints
from e2s_tf.training import configio
from e2s_tf.training import resume

CONFIG_FILE = configio.CONFIG_FILE
SPEAKERS_FILE = "speakers.json"
EVALUATION_FILE = "evaluation.json"
CHECKPOINT_DIR = "checkpoints"
# The program named by the workdir's lock.
LOCK_PROGRAM = "train_embedder"
# Config sections a resumed run must share with the workdir's.
MODEL_SECTIONS = ("model", "stft")


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINT_DIR)


def read_json(path: str) -> Any:
  return fileio.read_json(path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The workdir's config.json (renamed fields under their new names)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not fileio.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a speaker "
                            "encoder workdir (e2s_tf.train_embedder)?")
  return configio.read(workdir)


def read_speakers(workdir: str) -> dict[str, Any]:
  """speakers.json: {"speakers", "train", "heldout"}."""
  return read_json(os.path.join(workdir, SPEAKERS_FILE))


def read_evaluation(workdir: str) -> dict[str, Any]:
  """evaluation.json, or {} when the run wrote none."""
  path = os.path.join(workdir, EVALUATION_FILE)
  return read_json(path) if fileio.exists(path) else {}


def write_run_files(workdir: str, config: ml_collections.ConfigDict,
                    vocabulary: Sequence[str], train_set: Sequence[Utterance],
                    heldout_set: Sequence[Utterance]) -> None:
  """config.json and speakers.json, each replaced whole."""
  configio.write(workdir, config)
  fileio.write_json(os.path.join(workdir, SPEAKERS_FILE),
                    {"speakers": list(vocabulary),
                     "train": [u.id for u in train_set],
                     "heldout": [u.id for u in heldout_set]},
                    indent=1, sort_keys=True)


def write_evaluation(workdir: str, results: dict[str, Any]) -> str:
  return fileio.write_json(os.path.join(workdir, EVALUATION_FILE), results,
                           indent=1, sort_keys=True)


def check_resume(workdir: str, config: ml_collections.ConfigDict,
                 vocabulary: Sequence[str]) -> Optional[str]:
  """Refuses to resume a workdir's run with another model or speakers.

  Reads the checkpoint state, config.json and speakers.json and writes
  nothing. Returns the latest checkpoint (None: a fresh start).

  Raises:
    TrainingError: what differs ("model.embedding_dim 16 in the workdir, 8
      now", "it was trained on speakers [...]; the manifest has [...]").
  """
  latest = tf.train.latest_checkpoint(checkpoint_dir(workdir))
  if latest is None:
    return None
  problems = []
  if fileio.exists(os.path.join(workdir, CONFIG_FILE)):
    old = configio.read(workdir).to_dict()
    new = json.loads(configio.to_json(config))
    for section in MODEL_SECTIONS:
      differences = resume.config_differences(old.get(section),
                                              new.get(section), section)
      if differences:
        problems.append(f"its {section} config differs: {differences}")
  if fileio.exists(os.path.join(workdir, SPEAKERS_FILE)):
    old_speakers = read_speakers(workdir).get("speakers")
    if old_speakers != list(vocabulary):
      problems.append(f"it was trained on speakers {old_speakers}; the "
                      f"manifest has {list(vocabulary)}")
  if problems:
    raise resume.refusal(workdir, latest, problems, "the manifest and config")
  return latest


def training_checkpoint(encoder: network.SpeakerEncoder,
                        head: network.AdditiveMarginHead,
                        optimizer: keras.optimizers.Optimizer,
                        step: tf.Variable,
                        legacy: bool = False) -> tf.train.Checkpoint:
  """What a training checkpoint holds: every weight of the encoder
  (`weights`) and of the head (`head`) by Keras path, the encoder's random
  state, the optimiser and the step.

  `legacy`: the object-graph layout of older runs (`encoder`, `head`,
  `optimizer`, `step`), for restoring their checkpoints.
  """
  if legacy:
    return tf.train.Checkpoint(encoder=encoder, head=head,
                               optimizer=optimizer, step=step)
  return tf.train.Checkpoint(weights=checkpoints.weights_of(encoder),
                             head=checkpoints.weights_of(head),
                             random=checkpoints.random_state(encoder),
                             optimizer=optimizer, step=step)


def is_legacy(path: str) -> bool:
  """Whether checkpoint `path` has the layout of older runs."""
  return not checkpoints.has(path, "weights")


@dataclasses.dataclass
class Trained:
  """The encoder of a workdir at its latest checkpoint.

  Attributes:
    encoder: the network with the checkpoint's weights.
    config: the workdir's config.json.
    speakers: speakers.json.
    checkpoint: the path of the checkpoint.
    step: its step.
  """

  encoder: network.SpeakerEncoder
  config: ml_collections.ConfigDict
  speakers: dict[str, Any]
  checkpoint: str

  @property
  def step(self) -> int:
    return int(self.checkpoint.rsplit("-", 1)[-1])


def restore_trained(workdir: str) -> Trained:
  """The encoder of `workdir` at its latest checkpoint (either layout).

  Raises:
    FileNotFoundError: not a speaker-encoder workdir, or no checkpoint.
  """
  config = load_config(workdir)
  speakers = read_speakers(workdir)
  encoder, _ = network.build_encoder(config)
  latest = tf.train.latest_checkpoint(checkpoint_dir(workdir))
  parts = ({"encoder": encoder} if latest and is_legacy(latest) else
           {"weights": checkpoints.weights_of(encoder)})
  latest = checkpoints.restore_for_inference(
      tf.train.Checkpoint(**parts), checkpoint_dir(workdir), workdir)
  return Trained(encoder, config, speakers, latest)


def restore_encoder(workdir: str) -> tuple[network.SpeakerEncoder,
                                           ml_collections.ConfigDict,
                                           dict[str, Any]]:
  """(encoder at the latest checkpoint, config, speakers.json) of a workdir."""
  trained = restore_trained(workdir)
  return trained.encoder, trained.config, trained.speakers
