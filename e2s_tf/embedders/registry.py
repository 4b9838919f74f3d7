"""Embedder registry: names -> classes, and `get_embedder(spec, ...)`.

A spec is a registered name, optionally followed by ':' and an argument that
the class interprets (`savedmodel:PATH`). Options are keyword arguments of the
class constructor; unknown ones, and values of another type than the
constructor's annotation (`int`, `float`, `bool`, `str`, optionally None), are
an `OptionError` that names the option and lists the accepted ones.
"""

from __future__ import annotations

import inspect
import numbers
import typing
from typing import Any, Callable, Mapping, Optional, Type, TypeVar

from e2s_tf import spectral
from e2s_tf.embedders import base

_REGISTRY: dict[str, Type[base.Embedder]] = {}

_E = TypeVar("_E", bound=Type[base.Embedder])


OptionError = base.OptionError


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


# Annotation -> (test of a value, the type's name in messages). JSON numbers
# without a fraction are ints, so a float option takes them too; a bool is
# never a number here (True is not 1 mel band).
_CHECKS = {
    int: (lambda v: isinstance(v, numbers.Integral)
          and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, numbers.Real)
            and not isinstance(v, bool), "a number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _option_types(cls: Type[base.Embedder]) -> dict[str, tuple[Any, bool]]:
  """{option: (base type, None allowed)} for the constructor's annotated
  options of a type in `_CHECKS` (others are not checked)."""
  try:
    hints = typing.get_type_hints(cls.__init__)
  except Exception:  # pylint: disable=broad-except
    return {}  # annotations that do not resolve: no type checks
  out = {}
  for name, hint in hints.items():
    optional = False
    if typing.get_origin(hint) is typing.Union:
      args = [a for a in typing.get_args(hint) if a is not type(None)]
      optional = len(args) < len(typing.get_args(hint))
      if len(args) != 1:
        continue
      hint = args[0]
    if hint in _CHECKS:
      out[name] = (hint, optional)
  return out


def check_options(spec: str, options: Mapping[str, Any]) -> None:
  """Raises OptionError unless `options` are names and types that the
  embedder of `spec` takes; ValueError for an unknown embedder."""
  cls = embedder_class(spec)
  name = cls.name
  accepted = _accepted_options(cls)
  if accepted is not None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
      raise OptionError(f"embedder {name!r} does not accept option(s) "
                        f"{unknown}; accepted: {accepted}")
  types = _option_types(cls)
  for option, value in options.items():
    if option not in types:
      continue
    kind, optional = types[option]
    if value is None and optional:
      continue
    test, what = _CHECKS[kind]
    if not test(value):
      raise OptionError(
          f"embedder {name!r}: option {option!r} must be {what}"
          f"{' or null' if optional else ''}, got {value!r} "
          f"({type(value).__name__})")


def embedder_class(spec: str) -> Type[base.Embedder]:
  """The class a spec names (nothing is built); ValueError if unknown."""
  name, _ = _parse_spec(spec)
  if name not in _REGISTRY:
    raise ValueError(f"unknown embedder {name!r} (spec {spec!r}); known: "
                     f"{available()}")
  return _REGISTRY[name]


def get_embedder(spec: str, stft_config: spectral.StftConfig = spectral.DEFAULT,
                 **options: Any) -> base.Embedder:
  """Builds an embedder from its spec.

  Args:
    spec: `logmel`, `mfcc`, `npy`, `savedmodel:PATH` or `onnx:PATH` (any
      registered name, with ':' and an argument where the embedder takes
      one).
    stft_config: the project's frame grid (sample rate of the audio, default
      grid of the embeddings).
    **options: constructor options of the embedder (e.g. `num_mel_bins=64`).

  Returns:
    The embedder.

  Raises:
    OptionError: unknown options or options of the wrong type.
    ValueError: unknown name (the message lists the known ones), or values
      the embedder rejects.
  """
  check_options(spec, options)
  name, argument = _parse_spec(spec)
  return _REGISTRY[name].from_spec(argument, stft_config, **options)


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
