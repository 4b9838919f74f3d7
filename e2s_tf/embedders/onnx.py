"""`onnx:PATH`: any ONNX model that maps a waveform to `[batch, frames, dim]`.

Convention for the model (the file PATH, e.g. `encoder.onnx`): exactly one
input, a float32 waveform `[batch, samples]` whose samples axis is dynamic
(a symbolic or unnamed dimension: utterances have any length); the output is
`[batch, frames, dim]`, the single output or the one named `embedding`. The
model runs with onnxruntime on the CPU, one thread per session:
preprocessing parallelises over worker processes, each with its own session.

The frame grid is declared in a JSON file beside the model, with the keys
and format of `savedmodel` (`dim`, `sample_rate`, `frame_length`,
`frame_step`, `center`): `<model stem>.e2s_embedder.json` (for
`encoder.onnx`, `encoder.e2s_embedder.json`; write it with
`write_embedder_json`) or, for models that share it, `e2s_embedder.json` in
the same folder; the per-model file is preferred when both exist. The options
`frame_length`, `frame_step`, `center` and `dim` override the file. A model
without a declared grid is refused: its frames could not be aligned with the
spectrogram.

Security: an ONNX model is a program-like artefact. Loading one runs its graph
(and whatever operators it names) with the user's file access, and a model may
refer to external data files beside it. Load only models from trusted sources
(see the Security section of DESIGN.md).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf.embedders import base
from e2s_tf.embedders import registry
from e2s_tf.embedders import savedmodel

EMBEDDER_JSON = savedmodel.EMBEDDER_JSON
OUTPUT = savedmodel.OUTPUT
PROVIDERS = ("CPUExecutionProvider",)
# onnxruntime's names of the element types; the output is cast to float32.
_INPUT_TYPE = "tensor(float)"
_OUTPUT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")

def model_json_path(model_path: str) -> str:
  """`<folder>/<model stem>.e2s_embedder.json`, the per-model grid file."""
  folder, name = os.path.split(os.fspath(model_path))
  return os.path.join(folder, f"{os.path.splitext(name)[0]}.{EMBEDDER_JSON}")


def embedder_json_path(model_path: str) -> Optional[str]:
  """The grid file that declares `model_path`'s grid, None when there is none.

  The per-model `<stem>.e2s_embedder.json` when it exists, else the folder's
  `e2s_embedder.json` when that exists.
  """
  shared = os.path.join(os.path.dirname(os.fspath(model_path)), EMBEDDER_JSON)
  for path in (model_json_path(model_path), shared):
    if fileio.isfile(path):
      return path
  return None


def write_embedder_json(model_path: str, dim: Optional[int],
                        grid: base.Grid) -> str:
  """Writes `<model stem>.e2s_embedder.json` beside an ONNX model.

  Args:
    model_path: the .onnx file (its folder is created if needed).
    dim: embedding dimension D (None: the model's, or learnt from the first
      output).
    grid: the model's frame grid.

  Returns:
    The JSON file's path.
  """
  return fileio.write_json(
      model_json_path(model_path),
      {"dim": None if dim is None else int(dim), **grid.to_dict()},
      indent=2, sort_keys=True)


def _onnxruntime():
  """The onnxruntime module, imported on first use (a dependency of the
  package, but only this embedder needs it)."""
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("the onnx embedder needs onnxruntime: pip install -r "
                     f"requirements.txt ({e})") from e
  return onnxruntime


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


def _shape_text(shape: Any) -> str:
  """`[batch, None, 64]`: onnxruntime's shape, dynamic axes by their name."""
  return "[" + ", ".join(str(d) for d in shape) + "]"


@registry.register("onnx")
class OnnxEmbedder(base.ModelFileEmbedder):
  """Runs an ONNX model on each waveform; see the module docstring."""

  what = "ONNX model"

  def __init__(self, stft_config: spectral.StftConfig = spectral.DEFAULT,
               path: str = "", frame_length: Optional[int] = None,
               frame_step: Optional[int] = None, dim: Optional[int] = None,
               center: Optional[bool] = None):
    """Loads the model and its grid.

    Args:
      stft_config: the project's grid; the waveforms are at its sample rate.
      path: the .onnx file.
      frame_length, frame_step, center: the model's grid; override the JSON.
      dim: embedding dimension; overrides the JSON; None in both = the size of
        the output's last axis when the model fixes it, else learnt from the
        first output.

    Raises:
      ValueError: no file at `path` or not a valid ONNX model, no declared
        grid, a sample rate other than the project's, a dim other than the
        model's, or inputs and outputs that do not follow the convention (one
        float32 `[batch, samples]` input with a dynamic samples axis; a
        `[batch, frames, dim]` output).
    """
    super().__init__(stft_config)
    if not path:
      raise ValueError("onnx needs a path: --embedder=onnx:PATH (the .onnx "
                       "file)")
    self.path = fileio.abspath(os.path.expanduser(os.fspath(path)))
    if fileio.isdir(self.path):
      raise ValueError(f"ONNX model {self.path} is a folder: give the .onnx "
                       "file")
    if not fileio.isfile(self.path):
      raise ValueError(f"no ONNX model file at {self.path}")
    self._declare(embedder_json_path(self.path), stft_config,
                  frame_length=frame_length, frame_step=frame_step, dim=dim,
                  center=center)
    self._session = self._load_session()
    self._input_name = self._check_input()
    self._output_name = self._check_output()

  @classmethod
  def _path_hint(cls) -> str:
    return " (the .onnx file)"

  def _grid_file_hint(self) -> str:
    return (f"write {os.path.basename(model_json_path(self.path))} (or "
            f"{EMBEDDER_JSON}) beside it (onnx.write_embedder_json)")

  def _load_session(self) -> Any:
    ort = _onnxruntime()
    options = ort.SessionOptions()
    # Workers parallelise over items: one thread per session.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no shape-merge warnings
    # onnxruntime opens a local model by name; one on another file system
    # (gs://, ...) is read into memory and given as bytes, so external data
    # files beside it are not found there: keep such a model on a local disk.
    try:
      model = (fileio.read_bytes(self.path) if fileio.is_remote(self.path)
               else self.path)
      return ort.InferenceSession(model, sess_options=options,
                                  providers=list(PROVIDERS))
    # onnxruntime's errors share no base class but Exception.
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{self.path} is not a valid ONNX model (onnxruntime "
                       f"cannot load it): {_first_line(e)}") from None

  def _check_input(self) -> str:
    """The name of the waveform input, checked against the convention."""
    inputs = self._session.get_inputs()
    if len(inputs) != 1:
      raise ValueError(
          f"ONNX model {self.path} has {len(inputs)} inputs "
          f"{[i.name for i in inputs]}: expected one, the waveform "
          "[batch, samples]")
    waveform, = inputs
    shape = list(waveform.shape or [])
    if len(shape) != 2:
      raise ValueError(
          f"ONNX model {self.path}: input {waveform.name!r} has shape "
          f"{_shape_text(shape)} (rank {len(shape)}, or none declared); "
          "expected rank 2, [batch, samples]")
    if waveform.type != _INPUT_TYPE:
      raise ValueError(
          f"ONNX model {self.path}: input {waveform.name!r} is "
          f"{waveform.type}; expected {_INPUT_TYPE} (float32)")
    batch, samples = shape
    if isinstance(samples, int):
      raise ValueError(
          f"ONNX model {self.path}: no dynamic time axis: input "
          f"{waveform.name!r} has a fixed samples axis of {samples} "
          f"(shape {_shape_text(shape)}); export it with a dynamic samples "
          "axis")
    if isinstance(batch, int) and batch != 1:
      raise ValueError(
          f"ONNX model {self.path}: input {waveform.name!r} has a fixed batch "
          f"of {batch} (shape {_shape_text(shape)}); one waveform is embedded "
          "at a time: expected a dynamic batch axis or 1")
    return waveform.name

  def _check_output(self) -> str:
    """The name of the embedding output, checked against the convention;
    adopts the size of its last axis as `dim` when the model fixes it."""
    outputs = self._session.get_outputs()
    names = [o.name for o in outputs]
    if len(outputs) == 1:
      output, = outputs
    elif OUTPUT in names:
      output = outputs[names.index(OUTPUT)]
    else:
      raise ValueError(
          f"ONNX model {self.path} has outputs {names}: expected one output "
          f"or one named {OUTPUT!r}")
    if output.type not in _OUTPUT_TYPES:
      raise ValueError(
          f"ONNX model {self.path}: output {output.name!r} is {output.type}; "
          f"expected one of {list(_OUTPUT_TYPES)}")
    shape = list(output.shape or [])
    # onnxruntime shows an undeclared shape as []: then the rank is checked
    # on every output instead.
    if shape and len(shape) != 3:
      raise ValueError(
          f"ONNX model {self.path}: output {output.name!r} has shape "
          f"{_shape_text(shape)} (rank {len(shape)}); expected rank 3, "
          "[batch, frames, dim]")
    if shape:
      batch, _, dim = shape
      if isinstance(batch, int) and batch != 1:
        raise ValueError(
            f"ONNX model {self.path}: output {output.name!r} has a fixed "
            f"batch of {batch} (shape {_shape_text(shape)}); expected a "
            "dynamic batch axis or 1")
      if isinstance(dim, int):
        if self._dim is not None and self._dim != dim:
          raise ValueError(
              f"ONNX model {self.path}: dim {self._dim} is declared but "
              f"output {output.name!r} has shape {_shape_text(shape)}: dim "
              f"{dim}")
        self._dim = dim
    return output.name

  def error(self, item: Mapping[str, Any], detail: str,
            path: Optional[str] = None,
            reason: str = base.EMBEDDING_ERROR) -> base.EmbedderError:
    """An `EmbedderError` naming the item, its audio and the model (the
    checks of `base.Embedder.embed` come through here too)."""
    return super().error(item, f"model {self.path}: {detail}", path=path,
                         reason=reason)

  def _embed(self, audio: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
    waveform = np.ascontiguousarray(audio, np.float32)[np.newaxis, :]
    try:
      output, = self._session.run([self._output_name],
                                  {self._input_name: waveform})
    # onnxruntime's errors share no base class but Exception.
    except Exception as e:  # pylint: disable=broad-except
      raise self.error(item, f"onnxruntime failed on {waveform.shape[1]} "
                       f"samples: {type(e).__name__}: {_first_line(e)}"
                       ) from None
    output = np.asarray(output)
    if output.ndim != 3:
      raise self.error(item, f"output {self._output_name!r} has shape "
                       f"{output.shape}; expected [batch, frames, dim]",
                       reason=base.WRONG_DIMENSION)
    if output.shape[0] != 1:
      raise self.error(item, f"returned a batch of {output.shape[0]} for one "
                       "waveform")
    return output[0]
