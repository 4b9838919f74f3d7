"""A run's config.json: written whole, read back with renamed fields mapped.

    configio.write(workdir, config)   # config.json, atomically
    config = configio.read(workdir)   # ConfigDict
"""

from __future__ import annotations

import json
import os

import ml_collections

from e2s_tf import fileio

CONFIG_FILE = "config.json"

# Fields renamed since a run could have written its config.json:
# (section, old name, new name).
RENAMED_FIELDS = (
    ("train", "warmup_steps", "lr_warmup_steps"),
    ("model", "warmup_steps", "adversarial_start_step"),
)


# Fields added since: (section, a field that was there before it, the new
# field, the value that gives a run without it its old behaviour).
ADDED_FIELDS = (
    # The multiscale decoder (and the gan's generator) clip their input
    # since the decoders-for-learned-embeddings change; older runs did not.
    ("model", "projection_steps", "input_clip", 0.0),
)


def to_json(config: ml_collections.ConfigDict) -> str:
  """The config as the JSON text of config.json (sorted keys)."""
  return json.dumps(config.to_dict(), indent=1, sort_keys=True, default=list)


def upgrade(values: dict) -> dict:
  """A config dict of an older run with its renamed fields under their new
  names and its later-added fields at their old behaviour (in place;
  returns it)."""
  for section, old, new in RENAMED_FIELDS:
    part = values.get(section)
    if isinstance(part, dict) and old in part and new not in part:
      part[new] = part.pop(old)
  for section, marker, new, value in ADDED_FIELDS:
    part = values.get(section)
    if isinstance(part, dict) and marker in part and new not in part:
      part[new] = value
  return values


def read(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a workdir."""
  return ml_collections.ConfigDict(upgrade(fileio.read_json(
      os.path.join(workdir, CONFIG_FILE))))


def write(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Replaces the workdir's config.json whole; returns its path."""
  return fileio.write_json(os.path.join(workdir, CONFIG_FILE),
                           config.to_dict(), indent=1, sort_keys=True,
                           default=list)
