"""Registry of trainable models by name.

A model registers a builder `(config, log_stft_mean, log_stft_std) ->
keras.Model` and a `default_config() -> ConfigDict` (the documented fields of
`config.model`). Every built model is callable as a decoder,
`model(embedding, mask, speaker) -> log_stft`, and trains with
`model.compile(...)` then `model.train_step(batch)` / `model.test_step(batch)`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Optional

import keras
import ml_collections
import numpy as np

Builder = Callable[..., keras.Model]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  builder: Builder
  default_config: Callable[[], ml_collections.ConfigDict]


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str,
             default_config: Callable[[], ml_collections.ConfigDict]):
  """Decorator registering `builder(config, log_stft_mean, log_stft_std)`."""

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


def build(name: str, config: ml_collections.ConfigDict,
          log_stft_mean: Optional[np.ndarray] = None,
          log_stft_std: Optional[np.ndarray] = None,
          **extras) -> keras.Model:
  """Builds model `name` from `config` with its variables created.

  Args:
    name: a registered name (usually `config.model.name`).
    config: experiment config with `config.model` (the model's fields) and
      `config.data.embedding_dim`, `config.data.num_bins`.
    log_stft_mean, log_stft_std: `[bins]` normalisation statistics of the
      spectrogram (train split), used by the losses on linear magnitude;
      mean 0 / std 1 when None.
    **extras: passed to builders that take them (e.g. `prior`, a
      `layers.FilterbankPrior` for decoders that add a closed-form guess).

  Returns:
    A `keras.Model` callable as `model(embedding, mask, speaker)`, with
    `compile`, `train_step` and `test_step`.
  """
  for section, field in (("data", "embedding_dim"), ("data", "num_bins")):
    if section not in config or field not in config[section]:
      raise ValueError(
          f"building {name!r}: config.{section}.{field} is missing")
  if "model" not in config:
    raise ValueError(f"building {name!r}: config.model is missing")
  builder = _spec(name).builder
  accepted = inspect.signature(builder).parameters
  extras = {k: v for k, v in extras.items() if k in accepted}
  return builder(config, log_stft_mean=log_stft_mean,
                 log_stft_std=log_stft_std, **extras)
