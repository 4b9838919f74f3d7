"""Registry of trainable models by name.

A model registers a builder `(config, info) -> TrainableDecoder` and a
`default_config() -> ConfigDict`: the documented fields of `config.model`,
and the only place their defaults live. A config whose model fields are not
exactly those of its model is an error (`model_config_problem`). Every built
model is callable as a decoder, `model(embedding, mask, speaker) ->
log_stft`, and trains with `model.compile(...)` then `model.train_step(batch)`
(see models/trainable.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import keras
import ml_collections
import numpy as np

Builder = Callable[[ml_collections.ConfigDict, Optional[Mapping[str, Any]]],
                   keras.Model]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  builder: Builder
  default_config: Callable[[], ml_collections.ConfigDict]


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str,
             default_config: Callable[[], ml_collections.ConfigDict]):
  """Decorator registering `builder(config, info)` as model `name`."""

  def decorator(builder: Builder) -> Builder:
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelSpec(name, builder, default_config)
    return builder

  return decorator


def _spec(name: str) -> ModelSpec:
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; available: {available()}")
  return _REGISTRY[name]


def available() -> tuple[str, ...]:
  """Registered model names, sorted."""
  return tuple(sorted(_REGISTRY))


def default_model_config(name: str) -> ml_collections.ConfigDict:
  """A fresh copy of the documented default `config.model` of `name`."""
  return _spec(name).default_config()


def model_config_problem(config: ml_collections.ConfigDict) -> Optional[str]:
  """Why `config.model` is not a config of `config.model.name`, or None.

  Overriding `--config.model.name` keeps the fields of the config file's
  model: `--config=multiscale` with `model.name=cnn` has `num_blocks` but no
  `num_layers`. A model is chosen by its config file instead.
  """
  name = config.model.get("name")
  try:
    expected = default_model_config(name)
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


def normalisation(info: Optional[Mapping[str, Any]]):
  """`(log_stft_mean, log_stft_std)` `[bins]` of a dataset_info (None, None
  without one: the losses then take mean 0 / std 1)."""
  if info is None:
    return None, None
  stats = info["stats"]
  return (np.asarray(stats["log_stft_mean"], np.float32),
          np.asarray(stats["log_stft_std"], np.float32))


def build(config: ml_collections.ConfigDict,
          info: Optional[Mapping[str, Any]] = None) -> keras.Model:
  """Builds the model of `config.model.name` with its variables created.

  Args:
    config: experiment config with `config.model` (exactly the fields of its
      model) and `config.data.embedding_dim`, `config.data.num_bins`.
    info: the dataset's dataset_info.json: the spectrogram statistics
      (train split) that the losses use on linear magnitude, and the embedder
      a decoder may build its closed-form prior from (models/prior.py).
      None: mean 0 / std 1 and no prior.

  Returns:
    A `TrainableDecoder`.

  Raises:
    ValueError: an unknown model, a config.model that is not its model's,
      missing data fields.
  """
  if "model" not in config:
    raise ValueError("building a model: config.model is missing")
  name = config.model.get("name")
  for section, field in (("data", "embedding_dim"), ("data", "num_bins")):
    if section not in config or field not in config[section]:
      raise ValueError(
          f"building {name!r}: config.{section}.{field} is missing")
  problem = model_config_problem(config)
  if problem:
    raise ValueError(problem)
  return _spec(name).builder(config, info)
