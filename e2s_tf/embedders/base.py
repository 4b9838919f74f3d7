"""The embedder interface: a waveform in, frame-level embeddings `[T, D]` out.

Every embedder declares the frame grid its frames live on (`Grid`). Frame `t`
of a non-centred grid covers samples `[t * frame_step, t * frame_step +
frame_length)`, exactly like `e2s_tf.spectral.StftConfig`; preprocessing
compares the two grids and never silently misaligns them.

Subclasses implement `_embed` (and the `dim` / `grid` properties); the public
`embed` validates what comes out (2-D, the declared dimension, finite values)
so that every embedder reports a bad item the same way: an `EmbedderError`
that names the item and the file.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import spectral


# Categories of `EmbedderError.reason` (rejection reasons of preprocessing).
EMBEDDING_ERROR = "embedding_error"
WRONG_DIMENSION = "wrong_dimension"
NON_FINITE = "non_finite"
REASONS = (EMBEDDING_ERROR, WRONG_DIMENSION, NON_FINITE)


class OptionError(ValueError):
  """Options an embedder does not take: an unknown name, a wrong type, or a
  value it refuses (the option at fault is the user's, not the spec)."""


class EmbedderError(ValueError):
  """One item could not be embedded: names the item id, the file and why.

  Attributes:
    detail: what went wrong, in words.
    item_id: the manifest item's id (None when unknown).
    path: the file concerned (the .npy, or the audio).
    reason: a category among `REASONS`, for counting rejections.
  """

  def __init__(self, detail: str, item_id: Optional[str] = None,
               path: Optional[str] = None, reason: str = EMBEDDING_ERROR):
    if reason not in REASONS:
      raise ValueError(f"unknown EmbedderError reason {reason!r}; known: "
                       f"{REASONS}")
    self.detail = detail
    self.item_id = item_id
    self.path = path
    self.reason = reason
    where = " ".join(
        p for p in (f"item {item_id!r}" if item_id is not None else "",
                    f"({path})" if path else "") if p)
    super().__init__(f"{where}: {detail}" if where else detail)

  def __reduce__(self):
    # Keeps the fields when the error crosses a process boundary.
    return self.__class__, (self.detail, self.item_id, self.path, self.reason)


@dataclasses.dataclass(frozen=True)
class Grid:
  """The frame grid of an embedder.

  Attributes:
    sample_rate: samples per second of the waveform the frames refer to.
    frame_length: samples seen by one frame (its analysis window).
    frame_step: hop between consecutive frames in samples.
    center: False ("snip edges"): frame t starts at sample t * frame_step.
      True: frame t is centred on sample t * frame_step, the signal being
      padded by frame_length // 2 samples on both sides.
  """

  sample_rate: int
  frame_length: int
  frame_step: int
  center: bool = False

  def __post_init__(self):
    for field in ("sample_rate", "frame_length", "frame_step"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"Grid.{field} must be an integer, got {value!r}")
      if value <= 0:
        raise ValueError(f"Grid.{field} must be positive, got {value}")
    if not isinstance(self.center, (bool, np.bool_)):
      raise ValueError(f"Grid.center must be a bool, got {self.center!r}")

  @classmethod
  def from_stft(cls, config: spectral.StftConfig) -> "Grid":
    """The grid of the STFT of `config`."""
    return cls(sample_rate=config.sample_rate,
               frame_length=config.frame_length,
               frame_step=config.frame_step, center=config.center)

  def num_frames(self, num_samples):
    """Frames of a signal of `num_samples` samples (int or integer array).

    Non-centred: `1 + (N - frame_length) // frame_step`, 0 when
    `N < frame_length` (the formula of `StftConfig.num_frames`). Centred: the
    same on the signal padded by `frame_length // 2` on both sides, 0 for an
    empty signal.
    """
    n = np.asarray(num_samples)
    if self.center:
      n = np.where(n > 0, n + 2 * (self.frame_length // 2), 0)
    return spectral.frame_count(n, self.frame_length, self.frame_step)

  def to_dict(self) -> dict[str, Any]:
    return {"sample_rate": int(self.sample_rate),
            "frame_length": int(self.frame_length),
            "frame_step": int(self.frame_step),
            "center": bool(self.center)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Grid":
    return spectral.dataclass_from_dict(cls, d)


def waveform_function(fn: Callable[[tf.Tensor], tf.Tensor]
                      ) -> Callable[[np.ndarray], np.ndarray]:
  """`fn` of a `[samples]` float32 waveform tensor, traced once
  (`tf.function`), as a function of a NumPy waveform to a NumPy array."""
  traced = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.float32)])
  return lambda audio: traced(tf.convert_to_tensor(audio, tf.float32)).numpy()


class Embedder(abc.ABC):
  """Turns one waveform into frame-level embeddings on a declared grid.

  Attributes:
    name: the registry name (set by `registry.register`).
    needs_audio: False when the embeddings are not computed from the waveform
      (precomputed arrays); the waveform is still passed to `embed`.
    analytic_inverse: True when `invert_magnitude` maps embeddings back to a
      linear magnitude spectrogram in closed form.
  """

  name: str = ""
  needs_audio: bool = True
  analytic_inverse: bool = False

  def __init__(self, stft_config: spectral.StftConfig):
    self.stft_config = stft_config

  @classmethod
  def from_spec(cls, argument: Optional[str],
                stft_config: spectral.StftConfig, **options) -> "Embedder":
    """Builds the embedder from the part of the spec after ':' and options."""
    if argument is not None:
      raise ValueError(f"embedder {cls.name!r} takes no argument after ':', "
                       f"got {argument!r}")
    return cls(stft_config, **options)

  @property
  @abc.abstractmethod
  def dim(self) -> Optional[int]:
    """Embedding dimension D (None until known, for embedders that learn it)."""

  @property
  @abc.abstractmethod
  def grid(self) -> Grid:
    """The frame grid of the embeddings."""

  @property
  def spec(self) -> str:
    """The `--embedder` value that builds this embedder (with `options()`)."""
    return self.name

  def options(self) -> dict[str, Any]:
    """Keyword options that rebuild this embedder with `get_embedder`."""
    return {}

  def describe(self) -> dict[str, Any]:
    """JSON-ready description for dataset_info.json.

    Returns:
      {"name", "spec", "dim", "grid": Grid.to_dict(), "options"}; the embedder
      is rebuilt by `get_embedder(d["spec"], stft_config, **d["options"])`.
    """
    return {"name": self.name, "spec": self.spec, "dim": self.dim,
            "grid": self.grid.to_dict(), "options": self.options()}

  @abc.abstractmethod
  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    """Computes the raw embeddings; `embed` validates them."""

  def _source(self, item: Mapping[str, Any]) -> Optional[str]:
    """The file that errors about `item` should name."""
    return item.get("audio")

  def embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    """Embeds one item.

    Args:
      audio: `[samples]` float32 mono waveform at `stft_config.sample_rate`.
      item: the manifest entry (paths absolute); errors name `item["id"]`.

    Returns:
      `[frames, dim]` float32 on `self.grid`.

    Raises:
      EmbedderError: the item cannot be embedded or the result is not a finite
        `[frames, dim]` array.
    """
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
      raise self.error(item, f"audio must be 1-D [samples], got {audio.shape}")
    out = np.asarray(self._embed(audio, item))
    if out.ndim != 2:
      raise self.error(item, f"embedding must be 2-D [frames, dim], got shape "
                       f"{out.shape}", reason=WRONG_DIMENSION)
    if not np.issubdtype(out.dtype, np.number):
      raise self.error(item, f"embedding must be numeric, got {out.dtype}")
    out = out.astype(np.float32, copy=False)
    self._check_dim(out.shape[1], item)
    if not np.all(np.isfinite(out)):
      bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
      raise self.error(item, f"embedding has {bad} non-finite values",
                       reason=NON_FINITE)
    return out

  def _check_dim(self, dim: int, item: Mapping[str, Any]) -> None:
    if self.dim is None:
      self._learn_dim(dim)
    elif dim != self.dim:
      raise self.error(item, f"embedding dim {dim} != expected {self.dim}"
                       f"{self._dim_hint()}", reason=WRONG_DIMENSION)

  def _learn_dim(self, dim: int) -> None:
    """Adopts the first item's dim (embedders whose `dim` may be None)."""
    raise NotImplementedError(
        f"{type(self).__name__}.dim is None but it does not learn its dim")

  def _dim_hint(self) -> str:
    """Appended to dim-mismatch errors."""
    return ""

  def error(self, item: Mapping[str, Any], detail: str,
            path: Optional[str] = None,
            reason: str = EMBEDDING_ERROR) -> EmbedderError:
    """An `EmbedderError` about `item` (names `path` or the item's file)."""
    return EmbedderError(f"{self.name}: {detail}", item_id=item.get("id"),
                         path=path if path is not None else self._source(item),
                         reason=reason)

  def filterbank(self) -> Optional[np.ndarray]:
    """What is known in closed form about the embedder, for decoders to
    start from: the `[bins, dim]` weights W when its frames are the log of
    a filterbank of the STFT magnitude (embedding = log(|X| @ W)); None
    when no such closed form exists (the default).
    """
    return None

  @classmethod
  def offers_filterbank(cls) -> bool:
    """Whether `filterbank()` can return weights (without building one)."""
    return cls.filterbank is not Embedder.filterbank

  def invert_magnitude(self, features: np.ndarray) -> np.ndarray:
    """Closed-form inverse `[frames, dim]` -> `[frames, bins]` magnitude."""
    raise NotImplementedError(f"embedder {self.name!r} has no analytic inverse")

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim}, "
            f"grid={self.grid})")


class DeclaredEmbedder(Embedder):
  """An embedder whose dim and grid are declared to it, not computed (.npy
  arrays, SavedModels): the subclass sets `self._grid` and `self._dim`
  (None: learnt from the first item, then enforced)."""

  _dim: Optional[int] = None
  _grid: Grid

  @property
  def dim(self) -> Optional[int]:
    return self._dim

  @property
  def grid(self) -> Grid:
    return self._grid

  def _learn_dim(self, dim: int) -> None:
    self._dim = int(dim)


# Keys of a model's grid file (`e2s_embedder.json`) and the type of each.
GRID_JSON_KEYS = {"dim": int, "sample_rate": int, "frame_length": int,
                  "frame_step": int, "center": bool}


def read_grid_json(json_path: str) -> dict[str, Any]:
  """The declared keys of a grid file (null values left out), type-checked.

  Raises:
    ValueError: the file cannot be read, is not a JSON object, or a value is
      not of its key's type (a JSON `true` is no frame length, 480.0 no
      declared integer); the message names the file.
  """
  try:
    declared = fileio.read_json(json_path)
  except (OSError, ValueError) as e:
    raise ValueError(f"{json_path}: cannot read: {e}") from e
  if not isinstance(declared, dict):
    raise ValueError(f"{json_path}: expected a JSON object with keys "
                     f"{list(GRID_JSON_KEYS)}")
  out = {}
  for key, kind in GRID_JSON_KEYS.items():
    value = declared.get(key)
    if value is None:
      continue
    if (isinstance(value, bool) != (kind is bool) or
        not isinstance(value, kind)):
      raise ValueError(f"{json_path}: {key!r} must be "
                       f"{'true or false' if kind is bool else 'an integer'}"
                       f", got {value!r}")
    out[key] = value
  return out


class ModelFileEmbedder(DeclaredEmbedder):
  """An embedder that runs a model file (`savedmodel:PATH`, `onnx:PATH`):
  the spec names the path, the grid and dim come from a grid file beside
  the model (`read_grid_json`) with the options `frame_length`,
  `frame_step`, `center` and `dim` overriding it.

  Subclasses set `what` (the model's kind in messages), `self.path` and
  call `_declare`.
  """

  what: str = "model"
  path: str = ""

  @classmethod
  def from_spec(cls, argument: Optional[str],
                stft_config: spectral.StftConfig,
                **options) -> "ModelFileEmbedder":
    if "path" in options:
      if argument:
        raise ValueError(f"{cls.name}: the path is given twice ({argument!r} "
                         f"and path={options['path']!r})")
      argument = options.pop("path")
    if not argument:
      raise ValueError(f"{cls.name} needs a path: --embedder={cls.name}:PATH"
                       f"{cls._path_hint()}")
    return cls(stft_config, path=argument, **options)

  @classmethod
  def _path_hint(cls) -> str:
    """Appended to the missing-path error (what PATH is)."""
    return ""

  def _grid_file_hint(self) -> str:
    """How to declare the grid, for the no-grid error."""
    raise NotImplementedError

  def _declare(self, json_path: Optional[str],
               stft_config: spectral.StftConfig, **overrides: Any) -> None:
    """Sets the grid and dim from `json_path` (None: no file) and the
    non-None `overrides`.

    Raises:
      ValueError: no grid declared (the message says how to declare one), a
        sample rate other than the StftConfig's, a bad grid or dim.
    """
    declared = read_grid_json(json_path) if json_path else {}
    declared.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in ("frame_length", "frame_step") if k not in declared]
    if missing:
      raise ValueError(
          f"{self.what} {self.path} declares no frame grid (missing "
          f"{missing}): {self._grid_file_hint()} or pass the options "
          "frame_length and frame_step")
    sample_rate = declared.get("sample_rate", stft_config.sample_rate)
    if sample_rate != stft_config.sample_rate:
      raise ValueError(
          f"{self.what} {self.path} expects {sample_rate} Hz audio but the "
          f"StftConfig's sample rate is {stft_config.sample_rate} Hz "
          f"(declared in {json_path})")
    try:
      self._grid = Grid(sample_rate=sample_rate,
                        frame_length=declared["frame_length"],
                        frame_step=declared["frame_step"],
                        center=declared.get("center", False))
    except ValueError as e:
      raise ValueError(f"{self.what} {self.path}: {e}") from None
    dim = declared.get("dim")
    if dim is not None and dim <= 0:
      raise ValueError(f"{self.what} {self.path}: dim must be positive, got "
                       f"{dim}")
    self._dim = dim

  @property
  def spec(self) -> str:
    return f"{self.name}:{self.path}"

  def options(self) -> dict[str, Any]:
    return {"dim": self._dim, "frame_length": self._grid.frame_length,
            "frame_step": self._grid.frame_step, "center": self._grid.center}
