"""The tiny speaker-encoder runs the speaker tests share."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from e2s_tf.configs import speaker_encoder as encoder_config

NUM_STEPS = 30


def config(**overrides):
  """The `testing` config for NUM_STEPS steps, with `section.field` values."""
  c = encoder_config.get_config("testing")
  c.train.num_steps = NUM_STEPS
  for key, value in overrides.items():
    section, field = key.split(".")
    c[section][field] = value
  return c


def checkpoint_values(workdir: str) -> dict[str, np.ndarray]:
  """Every variable of a workdir's latest checkpoint (weights, optimiser
  moments, step) by checkpoint key, but the count of saves of the run."""
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  reader = tf.train.load_checkpoint(latest)
  return {name: reader.get_tensor(name)
          for name, _ in tf.train.list_variables(latest)
          if not name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH",
                                  "save_counter/"))}


def files(folder: str) -> dict[str, bytes]:
  """{name: content} of the files of a folder."""
  out = {}
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
      out[name] = f.read()
  return out
