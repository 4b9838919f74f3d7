"""Embedding frames onto STFT frames, by their centres.

An embedder declares its grid (`embedders.base.Grid`: hop H, window L, centred
or not); the STFT's is `spectral.StftConfig` (hop h, window l, never
centred). In samples at the STFT's rate, the centres are

    embedding frame k:  c_e(k) = k·H + L/2             (not centred)
                        c_e(k) = k·H + L/2 − ⌊L/2⌋     (centred: the signal
                                                        padded by ⌊L/2⌋)
    STFT frame t:       c_s(t) = t·h + l/2

STFT frame t sits at position u(t) = (c_s(t) − c_e(0)) / H on the embedding
frames, and its embedding is the linear interpolation of frames ⌊u⌋ and
⌊u⌋ + 1 (clamped to the first and last frame at the edges). Centres then
match exactly (no residual offset) wherever an embedding frame lies on
both sides; when the two grids are the same, u(t) = t and the mapping is the
identity. A sequence of T_e embedding frames gives the STFT frames whose
centres lie no later than half an embedding hop after its last frame's
centre (`stft_frames`): the same count whether the audio is known
(preprocessing keeps at most that many of its STFT frames) or not (the
export, given embeddings alone).

Records keep the embeddings on their own grid (what cannot be recomputed);
`FrameMapping.to_stft_frames` maps them in the input pipeline and in the
exported graph, the one function both use.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf

from e2s_tf import spectral

IDENTITY = "identity"
LINEAR = "linear"
METHODS = (IDENTITY, LINEAR)


class GridError(ValueError):
  """An embedder grid that cannot be mapped onto the STFT frames; says why."""


def grid_at_stft_rate(frame_length: int, frame_step: int, sample_rate: int,
                      config: spectral.StftConfig) -> tuple[int, int]:
  """The grid's window and hop in samples at the STFT's rate.

  Raises:
    GridError: the hop or the window is not a whole number of samples at the
      STFT's rate (the reason says which, with the numbers).
  """
  out = []
  for name, value in (("frame_length", frame_length),
                      ("frame_step", frame_step)):
    scaled = value * config.sample_rate / sample_rate
    if value * config.sample_rate % sample_rate:
      what = "hop" if name == "frame_step" else "window"
      raise GridError(
          f"the embedder's {what} ({name}={value} samples at {sample_rate} Hz)"
          f" is {scaled:.4g} samples at the STFT's {config.sample_rate} Hz, "
          "not a whole number: its frame centres cannot be placed on the "
          "STFT's sample grid")
    out.append(int(value * config.sample_rate // sample_rate))
  return out[0], out[1]


@dataclasses.dataclass(frozen=True)
class FrameMapping:
  """How frames of an embedder's grid map onto the STFT's frames.

  Attributes:
    frame_length, frame_step, center: the embedder's grid, in samples at the
      STFT's sample rate.
    stft_length, stft_step: the STFT's window and hop.
    method: `linear` (interpolation at the STFT frame centres) or `identity`
      (frame t is STFT frame t; what the grids give when they are equal, and
      how datasets written before the mapping were paired).
  """
  frame_length: int
  frame_step: int
  center: bool
  stft_length: int
  stft_step: int
  method: str = LINEAR

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"unknown frame mapping method {self.method!r}; known: "
                       f"{METHODS}")
    for name in ("frame_length", "frame_step", "stft_length", "stft_step"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)
                                                   ) or value <= 0:
        raise ValueError(f"FrameMapping.{name} must be a positive integer, "
                         f"got {value!r}")

  @classmethod
  def between(cls, grid, config: spectral.StftConfig) -> "FrameMapping":
    """The mapping of an embedder grid (`embedders.base.Grid`) onto `config`.

    Raises:
      GridError: a hop or window that is not a whole number of samples at the
        STFT's rate.
    """
    length, step = grid_at_stft_rate(grid.frame_length, grid.frame_step,
                                     grid.sample_rate, config)
    mapping = cls(frame_length=length, frame_step=step,
                  center=bool(grid.center), stft_length=config.frame_length,
                  stft_step=config.frame_step)
    if mapping._same_centres():
      mapping = dataclasses.replace(mapping, method=IDENTITY)
    return mapping

  def _same_centres(self) -> bool:
    return (self.frame_step == self.stft_step and
            self._twice_first_centre() == self.stft_length)

  def _twice_first_centre(self) -> int:
    """2·c_e(0), an integer."""
    if self.center:
      return self.frame_length - 2 * (self.frame_length // 2)
    return self.frame_length

  @property
  def identity(self) -> bool:
    return self.method == IDENTITY

  @property
  def ratio(self) -> float:
    """STFT frames per embedding frame (H / h): 2 for a 20 ms embedder."""
    return self.frame_step / self.stft_step

  @property
  def first_position(self) -> float:
    """u(0): where STFT frame 0 lies on the embedding frames."""
    if self.identity:
      return 0.0
    return (self.stft_length - self._twice_first_centre()) / (
        2.0 * self.frame_step)

  def centre_offset_ms(self, sample_rate: int) -> float:
    """c_e(0) − c_s(0) in ms: how far apart the centres of frames with the
    same index are (what the identity pairing leaves; the linear mapping
    corrects it)."""
    return 1000.0 * (self._twice_first_centre() - self.stft_length) / (
        2.0 * sample_rate)

  def residual_offset_ms(self, sample_rate: int) -> float:
    """The centre offset left after the mapping: 0 for `linear` (away from
    the edges, where frames are clamped)."""
    return 0.0 if self.method == LINEAR else self.centre_offset_ms(sample_rate)

  def embedding_frames(self, num_samples):
    """Frames the embedder's grid gives for `num_samples` samples (int or
    integer array): `Grid.num_frames` at the STFT's rate."""
    n = np.asarray(num_samples)
    if self.center:
      n = np.where(n > 0, n + 2 * (self.frame_length // 2), 0)
    return spectral.frame_count(n, self.frame_length, self.frame_step)

  def stft_frames(self, embedding_frames):
    """STFT frames that `embedding_frames` embedding frames give (int or
    integer array): those whose centre is at most half an embedding hop after
    the last embedding frame's centre; `embedding_frames` itself for the
    identity."""
    t_e = np.asarray(embedding_frames, np.int64)
    if self.identity:
      return t_e if t_e.ndim else int(t_e)
    # 2·(c_e(T_e − 1) + H/2 − c_s(0)) = 2c_e(0) + (2T_e − 1)·H − l.
    twice = (self._twice_first_centre() + (2 * t_e - 1) * self.frame_step
             - self.stft_length)
    out = np.where(t_e > 0, np.maximum(twice // (2 * self.stft_step) + 1, 0),
                   0)
    return out if out.ndim else int(out)

  def to_stft_frames(self, embeddings: tf.Tensor, lengths: tf.Tensor,
                     num_frames: Optional[tf.Tensor] = None
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """Maps a batch of embeddings onto the STFT frames (in TensorFlow).

    Args:
      embeddings: `[B, T_e, D]` float on the embedder's grid, padded.
      lengths: `[B]` int embedding frames of each item.
      num_frames: `[B]` int STFT frames wanted (preprocessing's count, known
        from the audio); None: `stft_frames(lengths)`.

    Returns:
      (`[B, T, D]` embeddings at the STFT frames, zero beyond each item's
      frames; `[B]` int32 STFT frames), T the largest count (the identity
      keeps the batch's width T_e).
    """
    embeddings = tf.convert_to_tensor(embeddings)
    lengths = tf.cast(lengths, tf.int32)
    if num_frames is None:
      num_frames = self._stft_frames_tf(lengths)
    num_frames = tf.cast(num_frames, tf.int32)
    if self.identity:
      # Frame t is STFT frame t: the batch keeps its width.
      mask = tf.sequence_mask(num_frames, tf.shape(embeddings)[1],
                              dtype=embeddings.dtype)
      return embeddings * mask[:, :, tf.newaxis], num_frames
    frames = tf.reduce_max(tf.concat([num_frames, [0]], 0))
    # One zero frame after the last makes every gather index valid, also for
    # items of no frames.
    padded = tf.pad(embeddings, [[0, 0], [0, 1], [0, 0]])
    t = tf.cast(tf.range(frames), tf.float32)
    position = (2.0 * self.stft_step * t + float(
        self.stft_length - self._twice_first_centre())) / (
            2.0 * self.frame_step)
    last = tf.cast(tf.maximum(lengths - 1, 0), tf.float32)[:, tf.newaxis]
    position = tf.minimum(tf.maximum(position[tf.newaxis, :], 0.0), last)
    below = tf.floor(position)
    weight = (position - below)[:, :, tf.newaxis]
    index = tf.cast(below, tf.int32)
    above = tf.minimum(index + 1, tf.maximum(lengths - 1, 0)[:, tf.newaxis])
    out = (tf.gather(padded, index, batch_dims=1) * (1.0 - weight) +
           tf.gather(padded, above, batch_dims=1) * weight)
    mask = tf.sequence_mask(num_frames, frames, dtype=out.dtype)
    return out * mask[:, :, tf.newaxis], num_frames

  def _stft_frames_tf(self, lengths: tf.Tensor) -> tf.Tensor:
    if self.identity:
      return lengths
    twice = (self._twice_first_centre() + (2 * lengths - 1) * self.frame_step
             - self.stft_length)
    return tf.where(lengths > 0,
                    tf.maximum(twice // (2 * self.stft_step) + 1, 0), 0)

  def map_one(self, embedding: np.ndarray,
              num_frames: Optional[int] = None) -> np.ndarray:
    """One `[T_e, D]` NumPy embedding at the STFT frames (`num_frames` of
    them, default `stft_frames(T_e)`)."""
    embedding = np.asarray(embedding, np.float32)
    if self.identity:
      return embedding[:num_frames]
    lengths = np.array([embedding.shape[0]], np.int32)
    wanted = None if num_frames is None else np.array([num_frames], np.int32)
    out, _ = self.to_stft_frames(embedding[np.newaxis], lengths, wanted)
    return out.numpy()[0]

  def describe(self, sample_rate: int) -> dict[str, Any]:
    """JSON-ready description (dataset_info.json, e2s_export.json)."""
    return {"method": self.method,
            "embedding_grid": {"frame_length": int(self.frame_length),
                               "frame_step": int(self.frame_step),
                               "center": bool(self.center),
                               "sample_rate": int(sample_rate)},
            "stft_frames_per_embedding_frame": self.ratio,
            "first_stft_frame_at_embedding_frame": self.first_position,
            "centre_offset_ms": self.centre_offset_ms(sample_rate),
            "residual_centre_offset_ms": self.residual_offset_ms(sample_rate)}

  @classmethod
  def from_info(cls, info: Mapping[str, Any]) -> "FrameMapping":
    """The mapping of a dataset (dataset_info.json) or an export
    (e2s_export.json): its `frame_mapping`, or the identity for data written
    before the mapping existed (their frames were paired one to one)."""
    stft = info["stft"]
    described = info.get("frame_mapping")
    if described is None:
      return cls(frame_length=int(stft["frame_length"]),
                 frame_step=int(stft["frame_step"]), center=False,
                 stft_length=int(stft["frame_length"]),
                 stft_step=int(stft["frame_step"]), method=IDENTITY)
    grid = described["embedding_grid"]
    if int(grid.get("sample_rate", stft["sample_rate"])) != int(
        stft["sample_rate"]):
      raise ValueError(f"frame_mapping's grid is at {grid['sample_rate']} Hz, "
                       f"the STFT at {stft['sample_rate']} Hz")
    return cls(frame_length=int(grid["frame_length"]),
               frame_step=int(grid["frame_step"]),
               center=bool(grid["center"]),
               stft_length=int(stft["frame_length"]),
               stft_step=int(stft["frame_step"]),
               method=str(described.get("method", LINEAR)))

  def summary(self) -> str:
    """One line for progress output."""
    if self.identity:
      return "embedding frames are the STFT frames (same hop and centres)"
    grid = (f"hop {self.frame_step}, window {self.frame_length}"
            f"{', centred' if self.center else ''}")
    return (f"embedding frames ({grid}) are interpolated at the STFT frame "
            f"centres: {self.ratio:g} STFT frames per embedding frame, STFT "
            f"frame 0 at embedding frame {self.first_position:+.3f}")

