"""`savedmodel:PATH`: any TF SavedModel that maps a waveform to `[T, D]`.

Convention for the model: the `serving_default` signature (or, without one, a
callable attribute `embed`) takes a float32 waveform `[batch, samples]` (or
`[samples]` when the signature is rank 1) and returns `[batch, frames, dim]`
or `[frames, dim]`: the single output, or the one named `embedding`.

The frame grid is declared in `e2s_embedder.json` beside `saved_model.pb`
(keys `dim`, `sample_rate`, `frame_length`, `frame_step`, `center`; write it
with `write_embedder_json`) or by the options `frame_length`, `frame_step`,
`center`, `dim`, which override the file. A model without a declared grid is
refused: the frames could not be aligned with the spectrogram.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import registry

EMBEDDER_JSON = "e2s_embedder.json"
SIGNATURE = "serving_default"
METHOD = "embed"
OUTPUT = "embedding"


def write_embedder_json(path: str, dim: Optional[int], grid: base.Grid) -> str:
  """Writes `path/e2s_embedder.json` declaring the dim and grid of a model.

  Args:
    path: the SavedModel directory (created if needed).
    dim: embedding dimension D (None: learnt from the first output).
    grid: the model's frame grid.

  Returns:
    The JSON file's path.
  """
  fileio.makedirs(path)
  return fileio.write_json(
      os.path.join(path, EMBEDDER_JSON),
      {"dim": None if dim is None else int(dim), **grid.to_dict()},
      indent=2, sort_keys=True)


def _output_tensor(outputs: Any) -> tf.Tensor:
  """The embedding among a model's outputs (dict, sequence or tensor)."""
  if isinstance(outputs, Mapping):
    if OUTPUT in outputs:
      return outputs[OUTPUT]
    if len(outputs) == 1:
      return next(iter(outputs.values()))
    raise ValueError(f"the model returns outputs {sorted(outputs)}: expected "
                     f"one output or one named {OUTPUT!r}")
  if isinstance(outputs, (list, tuple)):
    if len(outputs) == 1:
      return outputs[0]
    raise ValueError(f"the model returns {len(outputs)} outputs: expected one")
  return outputs


@registry.register("savedmodel")
class SavedModelEmbedder(base.ModelFileEmbedder):
  """Runs a SavedModel on each waveform; see the module docstring."""

  what = "SavedModel"

  def __init__(self, stft_config: spectral.StftConfig = spectral.DEFAULT,
               path: str = "", frame_length: Optional[int] = None,
               frame_step: Optional[int] = None, dim: Optional[int] = None,
               center: Optional[bool] = None):
    """Loads the model and its grid.

    Args:
      stft_config: the project's grid; the waveforms are at its sample rate.
      path: the SavedModel directory.
      frame_length, frame_step, center: the model's grid; override the JSON.
      dim: embedding dimension; overrides the JSON; None in both = learnt from
        the first output.

    Raises:
      ValueError: no SavedModel at `path`, no declared grid, a sample rate
        other than the project's, or no callable following the convention.
    """
    super().__init__(stft_config)
    if not path:
      raise ValueError("savedmodel needs a path: --embedder=savedmodel:PATH")
    self.path = fileio.abspath(os.path.expanduser(os.fspath(path)))
    if not tf.saved_model.contains_saved_model(self.path):
      raise ValueError(f"no SavedModel at {self.path}")
    json_path = os.path.join(self.path, EMBEDDER_JSON)
    self._declare(json_path if fileio.isfile(json_path) else None,
                  stft_config, frame_length=frame_length,
                  frame_step=frame_step, dim=dim, center=center)
    self._model = tf.saved_model.load(self.path)
    self._function, self._rank = self._find_function()

  def _find_function(self) -> tuple[Callable[..., Any], Optional[int]]:
    """The callable and the waveform rank it wants (None: try 2, then 1)."""
    signatures = getattr(self._model, "signatures", {}) or {}
    if SIGNATURE in signatures:
      signature = signatures[SIGNATURE]
      inputs = signature.structured_input_signature[1]
      if len(inputs) != 1:
        raise ValueError(f"SavedModel {self.path}: signature {SIGNATURE!r} "
                         "must take one waveform input, takes "
                         f"{sorted(inputs)}")
      (name, spec), = inputs.items()
      rank = spec.shape.rank
      if rank not in (None, 1, 2):
        raise ValueError(f"SavedModel {self.path}: signature input {name!r} "
                         f"has shape {spec.shape}; expected [batch, samples] "
                         "or [samples]")
      if spec.dtype != tf.float32:
        raise ValueError(f"SavedModel {self.path}: signature input {name!r} is "
                         f"{spec.dtype.name}; expected float32")
      return (lambda waveform: signature(**{name: waveform})), rank
    method = getattr(self._model, METHOD, None)
    if callable(method):
      return method, None
    raise ValueError(
        f"SavedModel {self.path} has neither a {SIGNATURE!r} signature nor a "
        f"callable {METHOD!r} attribute (signatures: {sorted(signatures)})")

  def _grid_file_hint(self) -> str:
    return (f"write {EMBEDDER_JSON} beside it (savedmodel.write_embedder_json)")

  def _call(self, audio: np.ndarray, rank: int) -> tf.Tensor:
    waveform = tf.convert_to_tensor(audio, tf.float32)
    if rank == 2:
      waveform = waveform[tf.newaxis, :]
    return _output_tensor(self._function(waveform))

  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    errors = (TypeError, ValueError, tf.errors.OpError)
    failures = []
    output = None
    # An unknown input rank (a restored `embed` function) is found on the
    # first item: [batch, samples] first, then [samples].
    for rank in (self._rank,) if self._rank is not None else (2, 1):
      try:
        output = self._call(audio, rank)
      except errors as e:
        failures.append(f"[{'batch, ' if rank == 2 else ''}samples] input: "
                        f"{type(e).__name__}: {e}")
        continue
      self._rank = rank
      break
    if output is None:
      raise self.error(item, f"SavedModel {self.path} failed with "
                       + "; ".join(failures))
    output = np.asarray(output)
    if output.ndim == 3:
      if output.shape[0] != 1:
        raise self.error(item, f"SavedModel {self.path} returned a batch of "
                         f"{output.shape[0]} for one waveform")
      output = output[0]
    return output
