"""The speaker-encoder export, and the export loaded back.

`export(workdir, export_dir)` writes a SavedModel that the `savedmodel:PATH`
embedder loads:

    serving_default(waveform [B, S] f32)
        -> {"embedding": [B, T, bottleneck_dim]}
    utterance_embedding(waveform [B, S] f32)
        -> {"utterance_embedding": [B, E]}   (unit norm)

plus `e2s_embedder.json` (dim and grid) and `speaker_encoder.json` (speakers,
held-out accuracies, config). `load_encoder` gives frame and utterance
embeddings from the export alone, for e2s_tf.speaker.identification.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf.embedders import base as embedders_base
from e2s_tf.embedders import savedmodel
from e2s_tf.speaker import identification
from e2s_tf.speaker import network
from e2s_tf.speaker import workdir as workdir_lib

ENCODER_JSON = "speaker_encoder.json"
# Signature and output names of the export.
FRAME_SIGNATURE = savedmodel.SIGNATURE
FRAME_OUTPUT = savedmodel.OUTPUT
UTTERANCE_SIGNATURE = "utterance_embedding"
UTTERANCE_OUTPUT = "utterance_embedding"


class EncoderModule(tf.Module):
  """The exported endpoints (see the module docstring)."""

  def __init__(self, encoder: network.SpeakerEncoder):
    super().__init__(name="e2s_speaker_encoder")
    self.encoder = encoder
    spec = tf.TensorSpec([None, None], tf.float32, name="waveform")

    @tf.function(input_signature=[spec])
    def frames(waveform):
      return {FRAME_OUTPUT: self.encoder.frame_embeddings(waveform,
                                                          training=False)}

    @tf.function(input_signature=[spec])
    def utterance(waveform):
      return {UTTERANCE_OUTPUT: self.encoder(waveform,
                                             training=False)["embedding"]}

    self.frames = frames
    self.utterance = utterance


def export(workdir: str, export_dir: str,
           overwrite: bool = False) -> dict[str, Any]:
  """Exports the latest checkpoint of `workdir`; returns speaker_encoder.json.

  Writes the SavedModel, `e2s_embedder.json` (dim, grid) and
  `speaker_encoder.json` into a temporary sibling, then swaps it in
  (`fileio.write_folder`): a previous encoder export (or an empty folder) is
  replaced, anything else only with `overwrite`; a folder holding `workdir`
  never.
  """
  trained = workdir_lib.restore_trained(workdir)
  encoder, speakers = trained.encoder, trained.speakers
  module = EncoderModule(encoder)
  grid = embedders_base.Grid.from_stft(encoder.stft_config)
  meta = {
      "format": 1,
      "step": trained.step,
      "speakers": speakers["speakers"],
      "num_train_utterances": len(speakers["train"]),
      "num_heldout_utterances": len(speakers["heldout"]),
      "evaluation": workdir_lib.read_evaluation(workdir),
      "stft": encoder.stft_config.to_dict(),
      "grid": grid.to_dict(),
      "frame_dim": encoder.bottleneck_dim,
      "embedding_dim": encoder.embedding_dim,
      "model": trained.config.model.to_dict(),
      "endpoints": {
          FRAME_SIGNATURE: f"(waveform [B,S] f32) -> {FRAME_OUTPUT} [B,T,"
                           f"{encoder.bottleneck_dim}], T = num_frames(S)",
          UTTERANCE_SIGNATURE: f"(waveform [B,S] f32) -> {UTTERANCE_OUTPUT} "
                               f"[B,{encoder.embedding_dim}] unit norm"},
  }

  def write(tmp):
    tf.saved_model.save(module, tmp, signatures={
        FRAME_SIGNATURE: module.frames,
        UTTERANCE_SIGNATURE: module.utterance})
    savedmodel.write_embedder_json(tmp, encoder.bottleneck_dim, grid)
    fileio.write_json(os.path.join(tmp, ENCODER_JSON), meta, indent=1,
                      sort_keys=True, default=list)

  fileio.write_folder(export_dir, write, marker=ENCODER_JSON,
                      overwrite=overwrite, program="train_embedder",
                      protect=[workdir])
  return meta


class LoadedSpeakerEncoder:
  """An exported encoder, NumPy in and out; needs only the SavedModel.

  Attributes:
    meta: speaker_encoder.json.
    stft_config: the frame grid (and sample rate) of the model.
  """

  def __init__(self, export_dir: str):
    path = os.path.join(export_dir, ENCODER_JSON)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} not found: is {export_dir!r} an export "
                              "of e2s_tf.train_embedder?")
    self.meta = workdir_lib.read_json(path)
    self.stft_config = spectral.StftConfig.from_dict(self.meta["stft"])
    self.module = tf.saved_model.load(export_dir)
    self._frames = self.module.signatures[FRAME_SIGNATURE]
    utterance = self.module.signatures[UTTERANCE_SIGNATURE]
    self._utterance = lambda w: utterance(waveform=w)[UTTERANCE_OUTPUT]

  @property
  def speakers(self) -> list[str]:
    return list(self.meta["speakers"])

  def frame_embeddings(self, waveform: np.ndarray) -> np.ndarray:
    """`[samples]` -> `[frames, frame_dim]` on the model's grid."""
    w, = identification.check_waveforms([waveform], self.stft_config)
    return self._frames(waveform=tf.constant(w[np.newaxis]))[
        FRAME_OUTPUT].numpy()[0]

  def utterance_embeddings(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
    """List of `[samples_i]` waveforms -> `[N, E]` unit-norm embeddings."""
    return identification.embed_utterances(self._utterance, waveforms,
                                           self.stft_config)


def load_encoder(export_dir: str) -> LoadedSpeakerEncoder:
  """Loads an export of `export` (e2s_tf.train_embedder)."""
  return LoadedSpeakerEncoder(export_dir)
