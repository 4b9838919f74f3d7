"""Embedder registry: names -> classes, and `get_embedder(spec, ...)`.

A spec is a registered name, optionally followed by ':' and an argument that
the class interprets (`savedmodel:PATH`). Options are keyword arguments of the
class constructor; unknown ones are an error that lists the accepted ones.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional, Type, TypeVar

from e2s_tf import spectral
from e2s_tf.embedders import base

_REGISTRY: dict[str, Type[base.Embedder]] = {}

_E = TypeVar("_E", bound=Type[base.Embedder])


def register(name: str) -> Callable[[_E], _E]:
  """Class decorator: makes an `Embedder` subclass available as `name`."""
  if not name or ":" in name:
    raise ValueError(f"invalid embedder name {name!r}")

  def decorator(cls: _E) -> _E:
    if not (isinstance(cls, type) and issubclass(cls, base.Embedder)):
      raise TypeError(f"{cls!r} is not an Embedder subclass")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
      raise ValueError(f"embedder {name!r} is already registered by "
                       f"{_REGISTRY[name].__qualname__}")
    cls.name = name
    _REGISTRY[name] = cls
    return cls

  return decorator


def available() -> list[str]:
  """Registered embedder names, sorted."""
  return sorted(_REGISTRY)


def _parse_spec(spec: str) -> tuple[str, Optional[str]]:
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"embedder spec must be a non-empty string, got {spec!r}; "
                     f"known: {available()}")
  name, sep, argument = spec.strip().partition(":")
  return name, (argument if sep else None)


def _accepted_options(cls: Type[base.Embedder]) -> Optional[list[str]]:
  """Keyword options of the constructor (None when it takes **kwargs)."""
  params = list(inspect.signature(cls.__init__).parameters.values())[2:]
  if any(p.kind is p.VAR_KEYWORD for p in params):
    return None
  return [p.name for p in params
          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def get_embedder(spec: str, stft_config: spectral.StftConfig = spectral.DEFAULT,
                 **options: Any) -> base.Embedder:
  """Builds an embedder from its spec.

  Args:
    spec: `logmel`, `mfcc`, `npy` or `savedmodel:PATH` (any registered name,
      with ':' and an argument where the embedder takes one).
    stft_config: the project's frame grid (sample rate of the audio, default
      grid of the embeddings).
    **options: constructor options of the embedder (e.g. `num_mel_bins=64`).

  Returns:
    The embedder.

  Raises:
    ValueError: unknown name (the message lists the known ones), unknown
      options, or options the embedder rejects.
  """
  name, argument = _parse_spec(spec)
  if name not in _REGISTRY:
    raise ValueError(f"unknown embedder {name!r} (spec {spec!r}); known: "
                     f"{available()}")
  cls = _REGISTRY[name]
  accepted = _accepted_options(cls)
  if accepted is not None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
      raise ValueError(f"embedder {name!r} does not accept option(s) "
                       f"{unknown}; accepted: {accepted}")
  return cls.from_spec(argument, stft_config, **options)


def from_description(description: Mapping[str, Any],
                     stft_config: spectral.StftConfig) -> base.Embedder:
  """Rebuilds an embedder from `Embedder.describe()` (dataset_info.json)."""
  if "spec" not in description:
    raise ValueError(f"embedder description has no 'spec': {dict(description)}")
  embedder = get_embedder(description["spec"], stft_config,
                          **description.get("options", {}))
  grid = description.get("grid")
  if grid is not None and base.Grid.from_dict(grid) != embedder.grid:
    raise ValueError(f"rebuilt embedder {description['spec']!r} has grid "
                     f"{embedder.grid}, the description says {grid}")
  return embedder
