"""`npy`: precomputed embeddings, one .npy file per manifest item.

The manifest item's `embedding` field names a `[frames, dim]` float array
(`[dim, frames]` with `transpose=True`, the layout of the original data's
(64, 120) arrays). The arrays are declared to lie on the StftConfig's grid
unless `frame_length` / `frame_step` say otherwise; the dimension is the
`dim` option, or the first file's and then enforced on every other file.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import registry

EMBEDDING_FIELD = "embedding"


@registry.register("npy")
class NpyEmbedder(base.Embedder):
  """Loads `item["embedding"]`: `[frames, dim]` (or `[dim, frames]`)."""

  needs_audio = False

  def __init__(self, stft_config: spectral.StftConfig = spectral.DEFAULT,
               dim: Optional[int] = None, transpose: bool = False,
               frame_length: Optional[int] = None,
               frame_step: Optional[int] = None):
    """Builds the embedder.

    Args:
      stft_config: the project's grid; the default grid of the arrays.
      dim: embedding dimension; None = the first file's, then enforced.
      transpose: the files hold `[dim, frames]`.
      frame_length, frame_step: the arrays' grid when it is not the STFT's.
    """
    super().__init__(stft_config)
    if dim is not None:
      dim = int(dim)
      if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    self._dim = dim
    self.transpose = bool(transpose)
    self._grid = base.Grid(
        sample_rate=stft_config.sample_rate,
        frame_length=int(frame_length or stft_config.frame_length),
        frame_step=int(frame_step or stft_config.frame_step))

  @property
  def dim(self) -> Optional[int]:
    return self._dim

  @property
  def grid(self) -> base.Grid:
    return self._grid

  def options(self) -> dict[str, Any]:
    return {"dim": self._dim, "transpose": self.transpose,
            "frame_length": self._grid.frame_length,
            "frame_step": self._grid.frame_step}

  def _source(self, item: Mapping[str, Any]) -> Optional[str]:
    return item.get(EMBEDDING_FIELD) or item.get("audio")

  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    path = item.get(EMBEDDING_FIELD)
    if not path:
      raise self.error(item, f"the manifest item has no {EMBEDDING_FIELD!r} "
                       "field (a path to a .npy file)")
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise self.error(item, "embedding file not found", path=path)
    try:
      array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise self.error(item, f"cannot read the .npy file: {e}",
                       path=path) from e
    if not isinstance(array, np.ndarray):  # an .npz archive
      array.close()
      raise self.error(item, "expected a .npy array, got an .npz archive",
                       path=path)
    if array.ndim != 2:
      layout = "[dim, frames]" if self.transpose else "[frames, dim]"
      raise self.error(item, f"expected a 2-D {layout} array, got shape "
                       f"{array.shape}", path=path,
                       reason=base.WRONG_DIMENSION)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
      raise self.error(item, f"expected a real numeric array, got "
                       f"{array.dtype}", path=path)
    return array.T if self.transpose else array

  def _learn_dim(self, dim: int) -> None:
    self._dim = int(dim)

  def _dim_hint(self) -> str:
    if self.transpose:
      return ""
    return " (are the files [dim, frames]? then use transpose=True)"
