"""The speaker-encoder export, and the export loaded back.

`export(workdir, export_dir)` writes a SavedModel that the `savedmodel:PATH`
embedder loads:

    serving_default(waveform [B, S] f32)
        -> {"embedding": [B, T, bottleneck_dim]}   T = grid.num_frames(S)
    utterance_embedding(waveform [B, S] f32)
        -> {"utterance_embedding": [B, E]}   (unit norm)

plus `e2s_embedder.json` (dim and grid) and `speaker_encoder.json` (speakers,
held-out accuracies, config, the export's hop). `load_encoder` gives frame and
utterance embeddings from the export alone, for e2s_tf.speaker.identification.

The export's hop. The encoder has one frame per STFT frame (the native grid:
frame t covers samples [t * H, t * H + L), H = stft.frame_step, L =
stft.frame_length). `export(..., frame_step=r * H)` lowers the frame rate r
times inside the graph: exported frame k is the mean of native frames
rk .. rk + r - 1 (non-overlapping groups; an incomplete tail group is
dropped), so T = num_native_frames // r. Those r frames span samples
[k * r * H, k * r * H + L + (r - 1) * H) and the mean of their centres
(t * H + L / 2) is the centre of that span, so the declared grid is
(frame_length L + (r - 1) * H, frame_step r * H, not centred), whose
`num_frames(S)` is num_native_frames(S) // r for every S (`pooled_grid`).
The frame length is the span of the STFT frames behind an exported frame, as
the native grid's L is that of one STFT frame: where the centres lie and how
many frames there are, which is what aligning embeddings to the spectrogram
needs. (The TDNN's 'same' convolutions see a few frames either side and the
front end's mean removal the whole utterance, around the same centres.)
The utterance embedding always pools the native frames.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

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


def pooling_factor(native_step: int, frame_step: Optional[int]) -> int:
  """How many native frames one exported frame averages.

  Args:
    native_step: the encoder's hop in samples (its StftConfig's frame_step).
    frame_step: the export's hop in samples; None: the native hop.

  Returns:
    r = frame_step / native_step, an integer >= 1.

  Raises:
    ValueError: `frame_step` is not a positive integer multiple of
      `native_step`, with the reason and the hops that would do.
  """
  if frame_step is None:
    return 1
  if isinstance(frame_step, bool) or not isinstance(frame_step,
                                                    (int, np.integer)):
    raise ValueError(f"export frame_step must be an integer number of samples, "
                     f"got {frame_step!r}")
  if frame_step <= 0 or frame_step % native_step:
    raise ValueError(
        f"export frame_step={frame_step} is not a multiple of the speaker "
        f"encoder's hop of {native_step} samples: the export lowers the frame "
        "rate by averaging whole groups of the encoder's frames, so its hop "
        f"must be r x {native_step} for an integer r >= 1 ({native_step}, "
        f"{2 * native_step}, {3 * native_step}, ...)")
  return int(frame_step) // native_step


def pooled_grid(grid: embedders_base.Grid,
                factor: int) -> embedders_base.Grid:
  """The grid of the means of `factor` consecutive frames of `grid`.

  Frames rk .. rk + r - 1 of a non-centred grid (L, H) span [k r H,
  k r H + L + (r - 1) H), centred where their centres' mean is: the grid
  (L + (r - 1) H, r H, not centred), with `num_frames(S)` equal to
  `grid.num_frames(S) // r` for every S (see the module docstring).

  Raises:
    ValueError: `factor` < 1, or a centred `grid` (no centred grid has the
      pooled centres; the project's StftConfig is never centred).
  """
  if factor < 1:
    raise ValueError(f"pooling factor must be >= 1, got {factor}")
  if factor == 1:
    return grid
  if grid.center:
    raise ValueError("cannot pool a centred grid: the means of its frames are "
                     "not centred on multiples of the pooled hop")
  return embedders_base.Grid(
      sample_rate=grid.sample_rate,
      frame_length=grid.frame_length + (factor - 1) * grid.frame_step,
      frame_step=factor * grid.frame_step, center=False)


def pool_frames(frames: tf.Tensor, factor: int) -> tf.Tensor:
  """Means of non-overlapping groups of `factor` frames.

  Args:
    frames: `[batch, T, D]`.
    factor: frames per group (1: `frames` as they are).

  Returns:
    `[batch, T // factor, D]`: output k is the mean of frames
    k * factor .. k * factor + factor - 1; an incomplete tail group is
    dropped.
  """
  if factor == 1:
    return frames
  shape = tf.shape(frames)
  groups = shape[1] // factor
  dim = frames.shape[-1] if frames.shape[-1] is not None else shape[2]
  grouped = tf.reshape(frames[:, :groups * factor],
                       [shape[0], groups, factor, dim])
  return tf.reduce_mean(grouped, axis=2)


class EncoderModule(tf.Module):
  """The exported endpoints (see the module docstring).

  `factor`: native frames averaged per exported frame (`pooling_factor`).
  A waveform shorter than one STFT frame has `[batch, 0, D]` frames.
  """

  def __init__(self, encoder: network.SpeakerEncoder, factor: int = 1):
    super().__init__(name="e2s_speaker_encoder")
    self.encoder = encoder
    spec = tf.TensorSpec([None, None], tf.float32, name="waveform")
    frame_length = encoder.stft_config.frame_length

    @tf.function(input_signature=[spec])
    def frames(waveform):
      def embed():
        native = self.encoder.frame_embeddings(waveform, training=False)
        return pool_frames(native, factor)

      def no_frames():
        # The convolutions fail on zero frames; the grid says there are none.
        return tf.zeros([tf.shape(waveform)[0], 0, self.encoder.bottleneck_dim])

      return {FRAME_OUTPUT: tf.cond(tf.shape(waveform)[1] >= frame_length,
                                    embed, no_frames)}

    @tf.function(input_signature=[spec])
    def utterance(waveform):
      return {UTTERANCE_OUTPUT: self.encoder(waveform,
                                             training=False)["embedding"]}

    self.frames = frames
    self.utterance = utterance


def export(workdir: str, export_dir: str, overwrite: bool = False,
           frame_step: Optional[int] = None) -> dict[str, Any]:
  """Exports the latest checkpoint of `workdir`; returns speaker_encoder.json.

  Writes the SavedModel, `e2s_embedder.json` (dim, grid) and
  `speaker_encoder.json` into a temporary sibling, then swaps it in
  (`fileio.write_folder`): a previous encoder export (or an empty folder) is
  replaced, anything else only with `overwrite`; a folder holding `workdir`
  never.

  Args:
    workdir: a speaker-encoder workdir with a checkpoint.
    export_dir: the export's folder.
    overwrite: replace a folder holding something else than an export.
    frame_step: the exported frames' hop in samples, an integer multiple of
      the encoder's (config.stft.frame_step); None: the encoder's own hop.

  Raises:
    ValueError: a `frame_step` that is not such a multiple (before anything
      is read or written).
  """
  config = workdir_lib.load_config(workdir)
  native_step = int(config.stft.frame_step)
  factor = pooling_factor(native_step, frame_step)
  trained = workdir_lib.restore_trained(workdir)
  encoder, speakers = trained.encoder, trained.speakers
  module = EncoderModule(encoder, factor)
  native_grid = embedders_base.Grid.from_stft(encoder.stft_config)
  grid = pooled_grid(native_grid, factor)
  meta = {
      "format": 1,
      "step": trained.step,
      "speakers": speakers["speakers"],
      "num_train_utterances": len(speakers["train"]),
      "num_heldout_utterances": len(speakers["heldout"]),
      "evaluation": workdir_lib.read_evaluation(workdir),
      "stft": encoder.stft_config.to_dict(),
      "grid": grid.to_dict(),
      "export_frame_step": grid.frame_step,
      "pooled_frames": factor,
      "native_grid": native_grid.to_dict(),
      "frame_dim": encoder.bottleneck_dim,
      "embedding_dim": encoder.embedding_dim,
      "model": trained.config.model.to_dict(),
      "endpoints": {
          FRAME_SIGNATURE: f"(waveform [B,S] f32) -> {FRAME_OUTPUT} [B,T,"
                           f"{encoder.bottleneck_dim}], T = num_frames(S)"
                           + (f" of grid, the means of {factor} native "
                              "frames" if factor > 1 else ""),
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
    stft_config: the encoder's STFT grid (and sample rate).
    grid: the grid of the exported frames (the STFT's, or a coarser one).
  """

  def __init__(self, export_dir: str):
    path = os.path.join(export_dir, ENCODER_JSON)
    if not fileio.isfile(path):
      raise FileNotFoundError(f"{path} not found: is {export_dir!r} an export "
                              "of e2s_tf.train_embedder?")
    self.meta = workdir_lib.read_json(path)
    self.stft_config = spectral.StftConfig.from_dict(self.meta["stft"])
    self.grid = embedders_base.Grid.from_dict(self.meta["grid"])
    self.module = tf.saved_model.load(export_dir)
    self._frames = self.module.signatures[FRAME_SIGNATURE]
    utterance = self.module.signatures[UTTERANCE_SIGNATURE]
    self._utterance = lambda w: utterance(waveform=w)[UTTERANCE_OUTPUT]

  @property
  def speakers(self) -> list[str]:
    return list(self.meta["speakers"])

  def frame_embeddings(self, waveform: np.ndarray) -> np.ndarray:
    """`[samples]` -> `[frames, frame_dim]` on `self.grid`."""
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
