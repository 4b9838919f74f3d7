"""Exports a trained decoder as a self-contained SavedModel.

Endpoints (also the SavedModel's signatures of the same names):

    spectrogram(embeddings [B,T_e,D] f32, lengths [B] i32[, speaker [B] i32])
        -> {"log_stft": [B,T,F] f32,          (log-silence past each length)
            "frame_lengths": [B] i32}
    waveform(same inputs)
        -> {"audio": [B,S] f32, "audio_lengths": [B] i32}   (Griffin-Lim in graph)

The embeddings are on the embedder's own grid (a 20 ms encoder's frames as
it gave them, `lengths` counting them); the graph maps them onto the STFT
frames (`alignment.FrameMapping`, recorded as `frame_mapping` in
e2s_export.json), the same mapping training used, so T and the audio's length
follow from T_e. Normalisation is baked in: the inputs are raw embeddings (as
the embedder produced them) and the output is the raw log-magnitude
ln(max(|X|, 1e-5)).
`e2s_export.json` beside it holds the StftConfig, the embedder, the model
config and the sample rate. Loading needs only `tf.saved_model.load`.

Writing (`export_network`): the SavedModel and its JSON go to a fresh hidden
sibling `.<name>.tmp-XXXXXXXX`, which replaces `export_dir` only when
complete (an atomic exchange where the file system offers one). Only a
previous export (a folder with `e2s_export.json`, or an empty folder) is
replaced, anything else only with `overwrite`; the temporary folder is the
only thing removed on failure, so a failed export (a full disk included)
leaves the previous one as it was. A lock (`.<name>.lock/` beside it) refuses
a second export into the same folder while one runs.

Loading (`LoadedDecoder`) is running a program: a SavedModel's graph runs
with the user's file access, so load only exports you trust. Before anything
is loaded, `check_signatures` reads the signatures from saved_model.pb and
refuses a SavedModel without the two endpoints, or with other inputs or
outputs than e2s_export.json describes, naming the endpoint and what differs.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

from google.protobuf import message as protobuf_message
from google.protobuf import text_format
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from e2s_tf import alignment
from e2s_tf import data as data_lib
from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf import train_lib

EXPORT_JSON = "e2s_export.json"
GRIFFIN_LIM_ITERATIONS = spectral.PHASE_ITERATIONS
GRIFFIN_LIM_MOMENTUM = 0.99
GRIFFIN_LIM_INIT = spectral.PHASE_INIT
# The start of exports written before e2s_export.json recorded it.
LEGACY_GRIFFIN_LIM_INIT = "zeros"
# Outputs of the endpoints: name -> (dtype, rank).
ENDPOINTS = {
    "spectrogram": {"log_stft": (tf.float32, 3)},
    "waveform": {"audio": (tf.float32, 2), "audio_lengths": (tf.int32, 1)},
}


class ExportError(ValueError):
  """An export that cannot be written there, read or used; says why."""


class DecoderModule(tf.Module):
  """The network with normalisation, masking and Griffin-Lim around it."""

  def __init__(self, network: keras.Model, normalizer: data_lib.Normalizer,
               stft: spectral.StftConfig, with_speaker: bool,
               griffin_lim_iterations: int = GRIFFIN_LIM_ITERATIONS,
               griffin_lim_momentum: float = GRIFFIN_LIM_MOMENTUM,
               mapping: Optional[alignment.FrameMapping] = None,
               griffin_lim_init: str = GRIFFIN_LIM_INIT):
    super().__init__(name="e2s_decoder")
    self.network = network
    self._stft = stft
    self._mapping = mapping or alignment.FrameMapping.from_info(
        {"stft": stft.to_dict()})
    self._iterations = int(griffin_lim_iterations)
    self._momentum = float(griffin_lim_momentum)
    self._init = griffin_lim_init
    self.embedding_mean = tf.constant(normalizer.embedding_mean)
    self.embedding_std = tf.constant(normalizer.embedding_std)
    self.log_stft_mean = tf.constant(normalizer.log_stft_mean)
    self.log_stft_std = tf.constant(normalizer.log_stft_std)
    dim = normalizer.embedding_dim
    specs = [tf.TensorSpec([None, None, dim], tf.float32, name="embeddings"),
             tf.TensorSpec([None], tf.int32, name="lengths")]
    if with_speaker:
      specs.append(tf.TensorSpec([None], tf.int32, name="speaker"))

    @tf.function(input_signature=specs)
    def spectrogram(embeddings, lengths, speaker=None):
      log_stft, frames = self._log_stft(embeddings, lengths, speaker)
      return {"log_stft": log_stft, "frame_lengths": frames}

    @tf.function(input_signature=specs)
    def waveform(embeddings, lengths, speaker=None):
      log_stft, frames = self._log_stft(embeddings, lengths, speaker)
      audio, audio_lengths = spectral.griffin_lim(
          tf.exp(log_stft), frames, self._stft,
          num_iterations=self._iterations, momentum=self._momentum,
          init=self._init)
      return {"audio": audio, "audio_lengths": audio_lengths}

    self.spectrogram = spectrogram
    self.waveform = waveform

  def _log_stft(self, embeddings, lengths, speaker):
    """(log_stft [B, T, F], STFT frames [B]) of embeddings on their grid."""
    lengths = tf.minimum(lengths, tf.shape(embeddings)[1])
    embeddings, lengths = self._mapping.to_stft_frames(embeddings, lengths)
    mask = tf.sequence_mask(lengths, tf.shape(embeddings)[1], dtype=tf.float32)
    x = (embeddings - self.embedding_mean) / self.embedding_std
    x = x * mask[:, :, tf.newaxis]
    pred = tf.cast(self.network(x, mask, speaker, training=False), tf.float32)
    log_stft = pred * self.log_stft_std + self.log_stft_mean
    return tf.where(mask[:, :, tf.newaxis] > 0, log_stft,
                    tf.constant(spectral.LOG_SILENCE, tf.float32)), lengths


def export(workdir: str, export_dir: str,
           griffin_lim_iterations: int = GRIFFIN_LIM_ITERATIONS,
           overwrite: bool = False) -> dict[str, Any]:
  """Exports the latest checkpoint of `workdir`; returns the export JSON.

  See `export_network`; an `export_dir` that holds `workdir` is refused.
  """
  network, config, info = train_lib.restore_network(workdir)
  return export_network(network, config, info, export_dir,
                        griffin_lim_iterations, overwrite, protect=[workdir])


def export_network(network, config, info, export_dir: str,
                   griffin_lim_iterations: int = GRIFFIN_LIM_ITERATIONS,
                   overwrite: bool = False,
                   protect: Sequence[str] = ()) -> dict[str, Any]:
  """Writes the SavedModel and e2s_export.json to `export_dir`.

  Args:
    network, config, info: the decoder, its resolved config, dataset_info.
    export_dir: the folder to write; a previous export there is replaced.
    griffin_lim_iterations: Griffin-Lim iterations of `waveform`.
    overwrite: also replace an `export_dir` that is not an export.
    protect: folders `export_dir` must not hold (the workdir), even with
      `overwrite`.

  Returns:
    The export JSON.

  Raises:
    fileio.FolderNotReplaceable: `export_dir` holds something else than an
      export and not `overwrite`; nothing is written.
    fileio.FolderInUse: another export into `export_dir` is running.
    OSError: writing failed (errno ENOSPC for a full disk, whether the
      SavedModel writer or Python failed); the temporary folder is removed
      and `export_dir` is as before.
  """
  stft = spectral.StftConfig.from_dict(info["stft"])
  with_speaker = bool(config.data.get("with_speaker", False)) and (
      config.model.get("speaker_conditioning", "none") != "none")
  mapping = alignment.FrameMapping.from_info(info)
  module = DecoderModule(network, data_lib.Normalizer.from_info(info), stft,
                         with_speaker, griffin_lim_iterations,
                         mapping=mapping)
  meta = {
      "format": 1,
      "stft": stft.to_dict(),
      "sample_rate": stft.sample_rate,
      "embedder": info["embedder"],
      "embedding_dim": int(info["embedder"]["dim"]),
      "frame_mapping": mapping.describe(stft.sample_rate),
      "num_bins": stft.num_bins,
      "model": config.model.to_dict(),
      "speakers": info.get("speakers", []) if with_speaker else [],
      "with_speaker": with_speaker,
      "griffin_lim": {"iterations": int(griffin_lim_iterations),
                      "momentum": GRIFFIN_LIM_MOMENTUM,
                      "init": GRIFFIN_LIM_INIT},
      "endpoints": {
          "spectrogram": "(embeddings [B,T_e,D] f32 on the embedder's "
                         "grid, lengths [B] i32 embedding frames"
                         + (", speaker [B] i32" if with_speaker else "")
                         + ") -> log_stft [B,T,F] at the STFT frames, "
                         "frame_lengths [B] i32",
          "waveform": "(same) -> audio [B,S] f32, audio_lengths [B] i32"},
  }
  def write(tmp):
    tf.saved_model.save(module, tmp, signatures={
        "spectrogram": module.spectrogram, "waveform": module.waveform})
    fileio.write_json(os.path.join(tmp, EXPORT_JSON), meta, default=list)

  fileio.write_folder(export_dir, write, marker=EXPORT_JSON,
                      overwrite=overwrite, program="export", protect=protect)
  return meta


def read_export_json(export_dir: str) -> dict[str, Any]:
  """e2s_export.json of `export_dir`, with the fields the loader needs.

  Raises:
    FileNotFoundError: no e2s_export.json (not an export).
    ExportError: it is not JSON or lacks `stft` / `embedding_dim`.
  """
  path = os.path.join(export_dir, EXPORT_JSON)
  if not fileio.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {export_dir!r} an output of "
                            "e2s_tf.export?")
  try:
    meta = fileio.read_json(path)
    spectral.StftConfig.from_dict(meta["stft"])
    int(meta["embedding_dim"])
  except (ValueError, KeyError, TypeError) as e:
    raise ExportError(f"{path} is not a valid export description "
                      f"({type(e).__name__}: {e})") from None
  return meta


def _signature_defs(export_dir: str) -> Mapping[str, Any]:
  """The SignatureDefs of a SavedModel, read without loading its graph."""
  proto = saved_model_pb2.SavedModel()
  binary = os.path.join(export_dir, "saved_model.pb")
  text = os.path.join(export_dir, "saved_model.pbtxt")
  try:
    if fileio.isfile(binary):
      proto.ParseFromString(fileio.read_bytes(binary))
    elif fileio.isfile(text):
      text_format.Parse(fileio.read_text(text), proto)
    else:
      raise ExportError(f"{export_dir} has {EXPORT_JSON} but no "
                        "saved_model.pb: not a SavedModel")
  except (protobuf_message.DecodeError, text_format.ParseError,
          UnicodeDecodeError) as e:
    raise ExportError(f"{export_dir}: saved_model.pb is not a SavedModel "
                      f"({e})") from None
  if not proto.meta_graphs:
    raise ExportError(f"{export_dir}: the SavedModel holds no graph")
  return proto.meta_graphs[0].signature_def


def _shape(info) -> Optional[list[int]]:
  if info.tensor_shape.unknown_rank:
    return None
  return [d.size for d in info.tensor_shape.dim]


def _describe(info) -> str:
  shape = _shape(info)
  dims = "?" if shape is None else "[" + ",".join(
      "None" if d < 0 else str(d) for d in shape) + "]"
  try:
    dtype = tf.dtypes.as_dtype(info.dtype).name
  except TypeError:  # not a plain tensor (DT_INVALID: a composite one)
    dtype = "no tensor"
  return f"{dtype} {dims}"


def check_signatures(export_dir: str, meta: Mapping[str, Any]) -> None:
  """Refuses a SavedModel whose endpoints are not the ones `meta` describes.

  Reads saved_model.pb only (no graph is loaded or run). Each endpoint of
  `ENDPOINTS` must be a signature taking exactly `embeddings` (float32
  `[None, None, D]`), `lengths` (int32 `[None]`) and, for a
  speaker-conditioned export, `speaker` (int32 `[None]`), and giving its
  outputs with their dtype and rank (`log_stft` with `num_bins` bins).

  Raises:
    ExportError: naming the missing endpoint, or the endpoint and the input
      or output that differs.
  """
  signatures = _signature_defs(export_dir)
  dim = int(meta["embedding_dim"])
  bins = spectral.StftConfig.from_dict(meta["stft"]).num_bins
  inputs = {"embeddings": (tf.float32, [-1, -1, dim]),
            "lengths": (tf.int32, [-1])}
  if meta.get("with_speaker"):
    inputs["speaker"] = (tf.int32, [-1])
  where = f"{export_dir} is not an e2s_tf export (wrong {EXPORT_JSON}?)"
  for endpoint, outputs in ENDPOINTS.items():
    if endpoint not in signatures:
      names = sorted(n for n in signatures if not n.startswith("__"))
      raise ExportError(
          f"{where}: it has no endpoint {endpoint!r} (its signatures: "
          f"{', '.join(names) or 'none'})")
    sig = signatures[endpoint]
    if set(sig.inputs) != set(inputs):
      raise ExportError(
          f"{where}: endpoint {endpoint!r} takes "
          f"({', '.join(sorted(sig.inputs))}), expected "
          f"({', '.join(sorted(inputs))})")
    for key, (dtype, shape) in inputs.items():
      got = sig.inputs[key]
      if got.dtype != dtype.as_datatype_enum or _shape(got) != shape:
        expected = "[" + ",".join("None" if d < 0 else str(d)
                                  for d in shape) + "]"
        raise ExportError(
            f"{where}: endpoint {endpoint!r} input {key!r} is "
            f"{_describe(got)}, expected {dtype.name} {expected}")
    for key, (dtype, rank) in outputs.items():
      if key not in sig.outputs:
        raise ExportError(
            f"{where}: endpoint {endpoint!r} gives no {key!r} (it gives "
            f"{', '.join(sorted(sig.outputs)) or 'nothing'})")
      got = sig.outputs[key]
      shape = _shape(got)
      if (got.dtype != dtype.as_datatype_enum or shape is None or
          len(shape) != rank or
          (key == "log_stft" and shape[-1] not in (-1, bins))):
        raise ExportError(
            f"{where}: endpoint {endpoint!r} output {key!r} is "
            f"{_describe(got)}, expected {dtype.name} of rank {rank}"
            + (f" with {bins} bins" if key == "log_stft" else ""))


class LoadedDecoder:
  """A loaded export, with NumPy in and out, called through its signatures.

  Loading runs the SavedModel's graph with this process's file access: load
  only exports you trust. The signatures are checked first
  (`check_signatures`), so a SavedModel that is not an export fails with an
  ExportError before it is loaded.
  """

  def __init__(self, export_dir: str):
    self.meta = read_export_json(export_dir)
    self.stft = spectral.StftConfig.from_dict(self.meta["stft"])
    self.dim = int(self.meta["embedding_dim"])
    self.with_speaker = bool(self.meta.get("with_speaker"))
    self.mapping = alignment.FrameMapping.from_info(self.meta)
    check_signatures(export_dir, self.meta)
    try:
      self.module = tf.saved_model.load(export_dir)
    except (OSError, ValueError, tf.errors.OpError) as e:
      reason = str(getattr(e, "message", e)).strip().splitlines()[0]
      raise ExportError(f"{export_dir}: cannot load the SavedModel "
                        f"({reason})") from None
    self._endpoints = {name: self.module.signatures[name]
                       for name in ENDPOINTS}

  def _args(self, embeddings, lengths, speaker):
    args = {"embeddings": tf.convert_to_tensor(embeddings, tf.float32),
            "lengths": tf.convert_to_tensor(lengths, tf.int32)}
    if self.with_speaker:
      if speaker is None:
        raise ValueError("this export is speaker-conditioned: give speaker ids")
      args["speaker"] = tf.convert_to_tensor(speaker, tf.int32)
    return args

  def frame_lengths(self, lengths) -> np.ndarray:
    """STFT frames of the outputs for `lengths` embedding frames."""
    return np.asarray(self.mapping.stft_frames(np.asarray(lengths, np.int64)),
                      np.int32)

  def spectrogram(self, embeddings, lengths, speaker=None) -> np.ndarray:
    """`[B, T, F]` log-STFT; item b's first `frame_lengths(lengths)[b]`
    frames are its own (log-silence after)."""
    return self._endpoints["spectrogram"](
        **self._args(embeddings, lengths, speaker))["log_stft"].numpy()

  def waveform(self, embeddings, lengths, speaker=None
               ) -> tuple[np.ndarray, np.ndarray]:
    out = self._endpoints["waveform"](**self._args(embeddings, lengths,
                                                   speaker))
    return out["audio"].numpy(), out["audio_lengths"].numpy()


def pad_batch(arrays, dim: Optional[int] = None):
  """List of `[T_i, D]` arrays -> (`[B, max T, D]` zero-padded, lengths)."""
  lengths = np.array([a.shape[0] for a in arrays], np.int32)
  d = dim if dim is not None else arrays[0].shape[1]
  out = np.zeros((len(arrays), max(int(lengths.max()), 1), d), np.float32)
  for i, a in enumerate(arrays):
    out[i, :a.shape[0]] = a
  return out, lengths
