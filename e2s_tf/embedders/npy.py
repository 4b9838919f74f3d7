"""`npy`: precomputed embeddings, one .npy file per manifest item.

The manifest item's `embedding` field names a `[frames, dim]` float array
(`[dim, frames]` with `transpose=True`, the layout of the original data's
(64, 120) arrays). The arrays are declared to lie on the StftConfig's grid
unless `frame_length` / `frame_step` / `center` (and `sample_rate`, the rate
those are counted at) say otherwise, e.g. a 20 ms wav2vec 2.0 layer is
`{"frame_length": 400, "frame_step": 320}`; preprocessing maps any grid onto
the STFT frames (e2s_tf.alignment). The dimension is the
`dim` option, or the first file's and then enforced on every other file.

`read_embedding` is the one reader of such files, shared with
e2s_tf.synthesize: it never unpickles, refuses an .npz archive (whatever
its name), arrays that are not 2-D, not real numbers (complex, bool, text,
records) or not finite once in float32, and says which in one line.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional
import zipfile

import numpy as np

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import registry

EMBEDDING_FIELD = "embedding"


class NpyError(ValueError):
  """A .npy file that is not a usable embedding; `reason` in base.REASONS."""

  def __init__(self, detail: str, reason: str = base.EMBEDDING_ERROR):
    super().__init__(detail)
    self.detail = detail
    self.reason = reason

  def __reduce__(self):
    return self.__class__, (self.detail, self.reason)


def read_embedding(path: str, transpose: bool = False) -> np.ndarray:
  """Reads one embedding file: `[frames, dim]` float32, finite.

  Args:
    path: a .npy file holding `[frames, dim]`, or `[dim, frames]`.
    transpose: the file holds `[dim, frames]`.

  Raises:
    NpyError: the file is missing or unreadable (truncated, pickled data, an
      .npz archive), the array is not 2-D (`wrong_dimension`), not real
      numbers, or has NaN/Inf values, also after the cast to float32
      (`non_finite`). The message says what, without the path.
  """
  if not fileio.isfile(path):
    raise NpyError("embedding file not found")
  try:
    array = fileio.load_npy(path)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise NpyError(f"cannot read the .npy file: {e or type(e).__name__}"
                   ) from None
  if not isinstance(array, np.ndarray):  # np.load opened an .npz archive
    array.close()
    raise NpyError("expected a .npy array, got an .npz archive")
  layout = "[dim, frames]" if transpose else "[frames, dim]"
  if array.ndim != 2:
    raise NpyError(f"expected a 2-D {layout} array, got shape {array.shape}",
                   base.WRONG_DIMENSION)
  if (array.dtype.fields is not None or np.iscomplexobj(array) or
      not (np.issubdtype(array.dtype, np.integer) or
           np.issubdtype(array.dtype, np.floating))):
    raise NpyError(f"expected real numbers, got dtype {array.dtype}")
  if transpose:
    array = array.T
  with np.errstate(over="ignore"):
    out = np.ascontiguousarray(array, np.float32)
  finite = np.isfinite(out)
  if not finite.all():
    bad = int(finite.size - np.count_nonzero(finite))
    raise NpyError(f"embedding has {bad} non-finite values (NaN/Inf, or "
                   "beyond the float32 range)", base.NON_FINITE)
  return out


@registry.register("npy")
class NpyEmbedder(base.DeclaredEmbedder):
  """Loads `item["embedding"]`: `[frames, dim]` (or `[dim, frames]`)."""

  needs_audio = False

  def __init__(self, stft_config: spectral.StftConfig = spectral.DEFAULT,
               dim: Optional[int] = None, transpose: bool = False,
               frame_length: Optional[int] = None,
               frame_step: Optional[int] = None,
               center: bool = False, sample_rate: Optional[int] = None):
    """Builds the embedder.

    Args:
      stft_config: the project's grid; the default grid of the arrays.
      dim: embedding dimension; None = the first file's, then enforced.
      transpose: the files hold `[dim, frames]`.
      frame_length, frame_step: the arrays' grid (window and hop in samples)
        when it is not the STFT's.
      center: the encoder centred its frames (frame t centred on sample
        t * frame_step, the signal padded by frame_length // 2 on both
        sides), as most PyTorch front ends do (`center=True` of torch.stft).
      sample_rate: the rate `frame_length` and `frame_step` are counted at
        (default: the StftConfig's); preprocessing refuses a grid whose hop
        or window is not a whole number of samples at the STFT's rate.
    """
    super().__init__(stft_config)
    if dim is not None:
      dim = int(dim)
      if dim <= 0:
        raise base.OptionError(f"dim must be positive, got {dim}")
    self._dim = dim
    self.transpose = bool(transpose)
    for name, value in (("frame_length", frame_length),
                        ("frame_step", frame_step),
                        ("sample_rate", sample_rate)):
      if value is not None and value <= 0:
        raise base.OptionError(f"{name} must be positive, got {value}")
    rate = int(sample_rate or stft_config.sample_rate)
    if (frame_length is None or frame_step is None) and (
        rate != stft_config.sample_rate):
      raise base.OptionError(
          f"sample_rate={rate} differs from the STFT's "
          f"{stft_config.sample_rate} Hz: give frame_length and frame_step at "
          "that rate too")
    self._grid = base.Grid(
        sample_rate=rate,
        frame_length=int(frame_length or stft_config.frame_length),
        frame_step=int(frame_step or stft_config.frame_step),
        center=bool(center))

  def options(self) -> dict[str, Any]:
    return {"dim": self._dim, "transpose": self.transpose,
            "frame_length": self._grid.frame_length,
            "frame_step": self._grid.frame_step,
            "center": self._grid.center,
            "sample_rate": self._grid.sample_rate}

  def _source(self, item: Mapping[str, Any]) -> Optional[str]:
    return item.get(EMBEDDING_FIELD) or item.get("audio")

  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    # The id names the item's records and output files: an item that did not
    # come through manifest.read_manifest is checked here all the same.
    problem = fileio.item_id_problem(item.get("id"))
    if problem:
      raise self.error(item, f"invalid item id: {problem}")
    path = item.get(EMBEDDING_FIELD)
    if not path:
      raise self.error(item, f"the manifest item has no {EMBEDDING_FIELD!r} "
                       "field (a path to a .npy file)")
    path = os.fspath(path)
    try:
      return read_embedding(path, self.transpose)
    except NpyError as e:
      raise self.error(item, e.detail, path=path, reason=e.reason) from None

  def _dim_hint(self) -> str:
    if self.transpose:
      return ""
    return " (are the files [dim, frames]? then use transpose=True)"
