"""Exports a trained decoder as a self-contained SavedModel.

Endpoints (also the SavedModel's signatures of the same names):

    spectrogram(embeddings [B,T,D] f32, lengths [B] i32[, speaker [B] i32])
        -> {"log_stft": [B,T,F] f32}          (log-silence past each length)
    waveform(same inputs)
        -> {"audio": [B,S] f32, "audio_lengths": [B] i32}   (Griffin-Lim in graph)

Normalisation is baked in: the inputs are raw embeddings (as the embedder
produced them) and the output is the raw log-magnitude ln(max(|X|, 1e-5)).
`e2s_export.json` beside it holds the StftConfig, the embedder, the model
config and the sample rate. Loading needs only `tf.saved_model.load`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from e2s_tf import data as data_lib
from e2s_tf import spectral
from e2s_tf import train_lib

EXPORT_JSON = "e2s_export.json"
GRIFFIN_LIM_ITERATIONS = 32
GRIFFIN_LIM_MOMENTUM = 0.99


class DecoderModule(tf.Module):
  """The network with normalisation, masking and Griffin-Lim around it."""

  def __init__(self, network: keras.Model, normalizer: data_lib.Normalizer,
               stft: spectral.StftConfig, with_speaker: bool,
               griffin_lim_iterations: int = GRIFFIN_LIM_ITERATIONS,
               griffin_lim_momentum: float = GRIFFIN_LIM_MOMENTUM):
    super().__init__(name="e2s_decoder")
    self.network = network
    self._stft = stft
    self._iterations = int(griffin_lim_iterations)
    self._momentum = float(griffin_lim_momentum)
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
      return {"log_stft": self._log_stft(embeddings, lengths, speaker)}

    @tf.function(input_signature=specs)
    def waveform(embeddings, lengths, speaker=None):
      log_stft = self._log_stft(embeddings, lengths, speaker)
      audio, audio_lengths = spectral.griffin_lim(
          tf.exp(log_stft), lengths, self._stft,
          num_iterations=self._iterations, momentum=self._momentum)
      return {"audio": audio, "audio_lengths": audio_lengths}

    self.spectrogram = spectrogram
    self.waveform = waveform

  def _log_stft(self, embeddings, lengths, speaker):
    mask = tf.sequence_mask(lengths, tf.shape(embeddings)[1], dtype=tf.float32)
    x = (embeddings - self.embedding_mean) / self.embedding_std
    x = x * mask[:, :, tf.newaxis]
    pred = tf.cast(self.network(x, mask, speaker, training=False), tf.float32)
    log_stft = pred * self.log_stft_std + self.log_stft_mean
    return tf.where(mask[:, :, tf.newaxis] > 0, log_stft,
                    tf.constant(spectral.LOG_SILENCE, tf.float32))


def export(workdir: str, export_dir: str,
           griffin_lim_iterations: int = GRIFFIN_LIM_ITERATIONS,
           overwrite: bool = True) -> dict[str, Any]:
  """Exports the latest checkpoint of `workdir`; returns the export JSON."""
  network, config, info = train_lib.restore_network(workdir)
  return export_network(network, config, info, export_dir,
                        griffin_lim_iterations, overwrite)


def export_network(network, config, info, export_dir: str,
                   griffin_lim_iterations: int = GRIFFIN_LIM_ITERATIONS,
                   overwrite: bool = True) -> dict[str, Any]:
  stft = spectral.StftConfig.from_dict(info["stft"])
  with_speaker = bool(config.data.get("with_speaker", False)) and (
      config.model.get("speaker_conditioning", "none") != "none")
  module = DecoderModule(network, data_lib.Normalizer.from_info(info), stft,
                         with_speaker, griffin_lim_iterations)
  if os.path.exists(export_dir):
    if not overwrite:
      raise FileExistsError(f"{export_dir} exists")
  # Written beside, then swapped in: a failed export never leaves half a model.
  tmp = export_dir.rstrip("/") + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  tf.saved_model.save(module, tmp, signatures={
      "spectrogram": module.spectrogram, "waveform": module.waveform})
  meta = {
      "format": 1,
      "stft": stft.to_dict(),
      "sample_rate": stft.sample_rate,
      "embedder": info["embedder"],
      "embedding_dim": int(info["embedder"]["dim"]),
      "num_bins": stft.num_bins,
      "model": config.model.to_dict(),
      "speakers": info.get("speakers", []) if with_speaker else [],
      "with_speaker": with_speaker,
      "griffin_lim": {"iterations": int(griffin_lim_iterations),
                      "momentum": GRIFFIN_LIM_MOMENTUM},
      "endpoints": {
          "spectrogram": "(embeddings [B,T,D] f32, lengths [B] i32"
                         + (", speaker [B] i32" if with_speaker else "")
                         + ") -> log_stft [B,T,F]",
          "waveform": "(same) -> audio [B,S] f32, audio_lengths [B] i32"},
  }
  with open(os.path.join(tmp, EXPORT_JSON), "w") as f:
    json.dump(meta, f, indent=1, default=list)
  if os.path.exists(export_dir):
    shutil.rmtree(export_dir)
  os.replace(tmp, export_dir)
  return meta


def read_export_json(export_dir: str) -> dict[str, Any]:
  path = os.path.join(export_dir, EXPORT_JSON)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {export_dir!r} an output of "
                            "e2s_tf.export?")
  with open(path) as f:
    return json.load(f)


class LoadedDecoder:
  """Convenience wrapper of a loaded export, with NumPy in and out."""

  def __init__(self, export_dir: str):
    self.meta = read_export_json(export_dir)
    self.module = tf.saved_model.load(export_dir)
    self.stft = spectral.StftConfig.from_dict(self.meta["stft"])
    self.dim = int(self.meta["embedding_dim"])
    self.with_speaker = bool(self.meta.get("with_speaker"))

  def _args(self, embeddings, lengths, speaker):
    args = [tf.convert_to_tensor(embeddings, tf.float32),
            tf.convert_to_tensor(lengths, tf.int32)]
    if self.with_speaker:
      if speaker is None:
        raise ValueError("this export is speaker-conditioned: give speaker ids")
      args.append(tf.convert_to_tensor(speaker, tf.int32))
    return args

  def spectrogram(self, embeddings, lengths, speaker=None) -> np.ndarray:
    return self.module.spectrogram(*self._args(embeddings, lengths, speaker))[
        "log_stft"].numpy()

  def waveform(self, embeddings, lengths, speaker=None
               ) -> tuple[np.ndarray, np.ndarray]:
    out = self.module.waveform(*self._args(embeddings, lengths, speaker))
    return out["audio"].numpy(), out["audio_lengths"].numpy()


def pad_batch(arrays, dim: Optional[int] = None):
  """List of `[T_i, D]` arrays -> (`[B, max T, D]` zero-padded, lengths)."""
  lengths = np.array([a.shape[0] for a in arrays], np.int32)
  d = dim if dim is not None else arrays[0].shape[1]
  out = np.zeros((len(arrays), max(int(lengths.max()), 1), d), np.float32)
  for i, a in enumerate(arrays):
    out[i, :a.shape[0]] = a
  return out, lengths
