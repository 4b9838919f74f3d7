"""One manifest item (or a piece of one) -> a serialised example, or a
rejection with its reason.

`process_item` is the per-item function of both runners; `ItemProcessor`
holds it with its embedder, one per local worker process or Beam DoFn. A
rejected item carries a `Reason` (the words written to rejected.jsonl and
counted in dataset_info.json); one broken item never takes a run down.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow as tf

from e2s_tf import alignment
from e2s_tf import audio as audio_lib
from e2s_tf import embedders
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.embedders import base as embedder_base
from e2s_tf.preprocessing import pieces


class Reason(enum.StrEnum):
  """Why an item is rejected: its `reason` in rejected.jsonl and its key in
  dataset_info["rejected"]["by_reason"]. The embedder's own categories
  (`embedders.base.REASONS`, carried by `EmbedderError.reason`) are among
  them."""
  MISSING_AUDIO = "missing_audio"
  UNREADABLE_AUDIO = "unreadable_audio"
  EMPTY_AUDIO = "empty_audio"
  TOO_SHORT = "too_short"
  NON_FINITE = embedder_base.NON_FINITE
  EMBEDDING_ERROR = embedder_base.EMBEDDING_ERROR
  WRONG_DIMENSION = embedder_base.WRONG_DIMENSION
  LENGTH_MISMATCH = "length_mismatch"


class Rejected(Exception):
  """An item that cannot become an example: `reason` and `detail` (words)."""

  def __init__(self, reason: Reason, detail: str):
    super().__init__(detail)
    self.reason = Reason(reason)
    self.detail = detail


@dataclasses.dataclass
class ItemResult:
  """What `process_item` returns for one manifest item."""
  item_id: str
  split: str = ""
  example: Optional[bytes] = None
  reason: Optional[Reason] = None     # set when rejected
  detail: str = ""
  num_frames: int = 0
  num_samples: int = 0
  trimmed_frames: int = 0
  # For a piece of a longer item: the item's id and the piece's region (s).
  source: str = ""
  start: Optional[float] = None
  end: Optional[float] = None
  # Sufficient statistics (float64), filled for accepted items.
  embedding_sum: Optional[np.ndarray] = None
  embedding_sumsq: Optional[np.ndarray] = None
  log_stft_sum: Optional[np.ndarray] = None
  log_stft_sumsq: Optional[np.ndarray] = None

  @property
  def ok(self) -> bool:
    """Accepted (the Beam path drops `example` once it is written)."""
    return self.reason is None


def rejection(item: Mapping[str, Any], reason: Reason,
              detail: str) -> ItemResult:
  """The result of a rejected task."""
  return ItemResult(item_id=str(item.get("id")), split=item.get("_split", ""),
                    reason=Reason(reason), detail=detail)


# Rejection reason of each kind of `audio.AudioError`.
_AUDIO_REASONS = {audio_lib.MISSING: Reason.MISSING_AUDIO,
                  audio_lib.UNREADABLE: Reason.UNREADABLE_AUDIO,
                  audio_lib.EMPTY: Reason.EMPTY_AUDIO}


def _load_audio(item: Mapping[str, Any],
                config: spectral.StftConfig) -> tuple[dict[str, Any],
                                                      np.ndarray]:
  """The item (a piece resolved to its region) and its finite samples."""
  try:
    if item.get("_piece") is not None:
      item = pieces.resolve_piece(item, config)
    audio = audio_lib.load_audio(item["audio"], config.sample_rate,
                                 item.get("start"), item.get("end"))
  except audio_lib.AudioError as e:
    raise Rejected(_AUDIO_REASONS[e.kind], str(e)) from None
  if audio.size == 0:
    raise Rejected(Reason.EMPTY_AUDIO, f"{item['audio']}: no samples")
  if not np.all(np.isfinite(audio)):
    raise Rejected(Reason.NON_FINITE, f"{item['audio']}: NaN/Inf samples")
  if config.num_frames(audio.shape[0]) == 0:
    raise Rejected(Reason.TOO_SHORT,
                   f"{item['audio']}: {audio.shape[0]} samples, shorter than "
                   f"one frame ({config.frame_length})")
  return item, audio


def _embed(item: Mapping[str, Any], audio: np.ndarray,
           embedder: embedders.Embedder,
           mapping: alignment.FrameMapping) -> np.ndarray:
  """The item's `[frames, dim]` finite embedding (a piece's own frames)."""
  try:
    embedding = np.asarray(embedder.embed(audio, dict(item)), np.float32)
  except embedders.EmbedderError as e:
    raise Rejected(Reason(e.reason), str(e)) from None
  if embedding.ndim != 2 or embedding.shape[1] != embedder.dim:
    raise Rejected(Reason.WRONG_DIMENSION,
                   f"embedding of shape {embedding.shape}, expected "
                   f"[T, {embedder.dim}]")
  piece = item.get("_piece")
  if piece is not None and not embedder.needs_audio:
    # Precomputed embeddings belong to the whole item: this piece's frames
    # start at its first sample's frame (cuts lie on the frame grid).
    first = piece["first_frame"]
    last = (None if piece["index"] == piece["count"] - 1 else
            first + int(mapping.embedding_frames(audio.shape[0])))
    embedding = embedding[first:last]
  if not np.all(np.isfinite(embedding)):
    raise Rejected(Reason.NON_FINITE, "embedding has NaN/Inf values")
  return embedding


def _grid_words(mapping: alignment.FrameMapping) -> str:
  return (f"hop {mapping.frame_step}, window {mapping.frame_length}"
          f"{', centred' if mapping.center else ''}")


def process_item(item: Mapping[str, Any], embedder: embedders.Embedder,
                 config: spectral.StftConfig, frame_tolerance: int = 0,
                 speaker_index: int = -1,
                 mapping: Optional[alignment.FrameMapping] = None,
                 embedding_dtype: str = records.DEFAULT_EMBEDDING_DTYPE
                 ) -> ItemResult:
  """Turns one manifest item into a serialised example, or a rejection.

  The embedding is stored on its own grid; its frame count must be the one
  the grid gives for the audio (`FrameMapping.embedding_frames`), and the
  example keeps the STFT frames it covers (`FrameMapping.stft_frames`).

  Args:
    item: manifest entry with absolute `audio` (and `embedding`) paths,
      optional `start`/`end` seconds and `speaker`.
    embedder: the embedder (declares its grid).
    config: the STFT grid.
    frame_tolerance: at most this many surplus or missing embedding frames
      (against what the grid gives for the audio) are trimmed and counted.
    speaker_index: the item's index in the speaker vocabulary, -1 if none.
    mapping: the embedder grid's mapping onto `config` (default: computed).
    embedding_dtype: how the record stores the embedding
      (`records.EMBEDDING_DTYPES`).

  The audio is taken as the record stores it (16 bits,
  `records.stored_audio`) before anything is computed from it, so the
  embedding, the log-STFT behind the statistics, and the log-STFT the input
  pipeline computes from the record all see the same samples.
  """
  item_id = str(item["id"])
  piece = item.get("_piece")
  if mapping is None:
    mapping = alignment.FrameMapping.between(embedder.grid, config)
  try:
    item, audio = _load_audio(item, config)
    audio = records.stored_audio(audio)
    embedding = _embed(item, audio, embedder, mapping)
    log_stft = spectral.log_stft(audio, config).numpy()
    t_emb, t_stft = embedding.shape[0], log_stft.shape[0]
    expected = int(mapping.embedding_frames(audio.shape[0]))
    trimmed = abs(t_emb - expected)
    if trimmed > frame_tolerance:
      raise Rejected(
          Reason.LENGTH_MISMATCH,
          f"embedding has {t_emb} frames, but its grid "
          f"({_grid_words(mapping)}) gives {expected} for the "
          f"{audio.shape[0]} samples of the audio ({t_stft} STFT frames; "
          f"--frame_tolerance={frame_tolerance})")
    # As the record will give it back: the statistics are of those values.
    try:
      embedding = records.stored_embedding(embedding[:expected],
                                           embedding_dtype)
    except ValueError as e:
      raise Rejected(Reason.EMBEDDING_ERROR, str(e)) from None
    frames = min(t_stft, int(mapping.stft_frames(embedding.shape[0])))
    if frames == 0:
      raise Rejected(Reason.TOO_SHORT, "no frames left after trimming")
  except Rejected as e:
    return rejection(item, e.reason, e.detail)
  log_stft = log_stft[:frames]
  audio = audio[:config.num_samples(frames)]
  # The statistics are those of what the decoder sees: the embedding at the
  # STFT frames (one count of frames for both streams).
  e64 = mapping.map_one(embedding, frames).astype(np.float64)
  s64 = log_stft.astype(np.float64)
  return ItemResult(
      item_id=item_id, split=item.get("_split", ""),
      example=records.serialize_example(
          item_id, embedding, audio, frames,
          speaker=item.get("speaker") or "", speaker_index=speaker_index,
          embedding_dtype=embedding_dtype,
          # A piece says only part of its item's text: none is kept.
          text="" if piece is not None else str(item.get("text") or "")),
      num_frames=frames, num_samples=int(audio.shape[0]),
      trimmed_frames=trimmed,
      source=piece["source"] if piece is not None else "",
      start=item.get("start") if piece is not None else None,
      end=item.get("end") if piece is not None else None,
      embedding_sum=e64.sum(0), embedding_sumsq=np.square(e64).sum(0),
      log_stft_sum=s64.sum(0), log_stft_sumsq=np.square(s64).sum(0))


class ItemProcessor:
  """`process_item` with its embedder: what one worker holds.

  The local process pool builds one per worker process, the Beam pipeline one
  per DoFn instance (in `setup`); both call it on `(item, speaker_index)`
  tasks, so the two paths share the per-item function and its error handling.
  """

  def __init__(self, embedder_spec: str, embedder_options: Mapping[str, Any],
               config_dict: Mapping[str, Any], frame_tolerance: int,
               embedding_dtype: str = records.DEFAULT_EMBEDDING_DTYPE):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
      # Parallelism comes from the workers; one op thread each avoids
      # oversubscribing the cores. Too late (and harmless) where TF already
      # runs, e.g. in the launcher of a one-process run.
      tf.config.threading.set_intra_op_parallelism_threads(1)
      tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
      pass
    self.config = spectral.StftConfig.from_dict(dict(config_dict))
    self.embedder = embedders.get_embedder(embedder_spec, self.config,
                                           **dict(embedder_options))
    self.frame_tolerance = frame_tolerance
    self.embedding_dtype = embedding_dtype
    self.mapping = alignment.FrameMapping.between(self.embedder.grid,
                                                  self.config)

  def __call__(self, task: tuple[Mapping[str, Any], int]) -> ItemResult:
    item, speaker_index = task
    try:
      return process_item(item, self.embedder, self.config,
                          self.frame_tolerance, speaker_index, self.mapping,
                          self.embedding_dtype)
    except Exception as e:  # pylint: disable=broad-except
      # One broken item never takes the run down; it is reported by name.
      return rejection(item, Reason.EMBEDDING_ERROR,
                       f"{type(e).__name__}: {e}")
