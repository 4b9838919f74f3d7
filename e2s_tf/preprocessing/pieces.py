"""Pieces of long items: where an item longer than `--max_item_seconds` is
cut, and the ids and regions of its pieces.

`plan_pieces` (in the launcher, from the item's length alone) fixes how many
pieces an item becomes; `resolve_piece` (in the worker) finds each cut at a
pause by reading only the audio around it, so that the two pieces that meet at
a cut, processed apart, find the same cut.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from e2s_tf import audio as audio_lib
from e2s_tf import fileio
from e2s_tf import spectral

# Items longer than this are cut into pieces at pauses (--max_item_seconds).
# 30 s is above nearly every utterance of the usual corpora (LibriSpeech and
# LibriTTS cut theirs at 35 s, most are under 20 s; VCTK and Common Voice
# under 15 s), so they stay whole, while a long recording costs what 30 s do:
# about 50 MiB above the program's own ~700 MiB, against 1.2 GiB more for a
# 10-minute item in one piece (measured with `peak_rss_mib`).
DEFAULT_MAX_ITEM_SECONDS = 30.0
# The shortest limit allowed (0 turns splitting off).
MIN_MAX_ITEM_SECONDS = 1.0
# Each cut is searched in the last fifth of its nominal piece.
CUT_WINDOW_FRACTION = 0.2
PIECE_SEPARATOR = "/part-"


def piece_ids(item_id: str, count: int) -> list[str]:
  """The ids of the `count` pieces of `item_id`: `<id>/part-000`, ...

  Raises:
    fileio.InvalidItemId: a piece id is not a valid id (too long).
  """
  width = max(3, len(str(count - 1)))
  return [fileio.check_item_id(f"{item_id}{PIECE_SEPARATOR}{k:0{width}d}")
          for k in range(count)]


def plan_pieces(num_samples: int, max_item_seconds: float,
                config: spectral.StftConfig) -> Optional[dict[str, int]]:
  """How an item of `num_samples` samples is cut; None when it stays whole.

  An item longer than `max_item_seconds` (L) becomes `count` pieces, the
  fewest whose nominal length (`num_samples / count`) is at most 0.8 L. Cut j
  lies at the middle of the longest pause (`audio.quiet_cut_frame`) within
  the 0.2 L (`window`) before its nominal position j * num_samples / count,
  on the frame grid: every piece is at most L long, and at least 0.2 L.

  Returns:
    {"count", "length" (samples), "window" (samples)} or None.
  """
  if max_item_seconds <= 0:
    return None
  limit = int(max_item_seconds * config.sample_rate)
  if num_samples <= limit:
    return None
  window = int(CUT_WINDOW_FRACTION * limit)
  return {"count": -(-num_samples // (limit - window)),
          "length": int(num_samples), "window": window}


def probe_length(item: Mapping[str, Any], rate: int) -> Optional[int]:
  """Samples of the item's region at `rate`, from its start/end or the
  file's header; None when unknown (the item is then processed whole, and a
  bad file rejected there)."""
  first = int(round(item["start"] * rate)) if "start" in item else 0
  if "end" in item:
    return int(round(item["end"] * rate)) - first
  try:
    return audio_lib.num_samples(item["audio"], rate) - first
  except audio_lib.AudioError:
    return None


def _cut(item: Mapping[str, Any], j: int,
         config: spectral.StftConfig) -> int:
  """Samples from the item's start to cut j of its pieces.

  A function of cut j's own window of audio alone, so that the two pieces
  that meet there, processed apart (even on different machines), find the
  same cut.
  """
  p = item["_piece"]
  hop = config.frame_step
  # Pieces of precomputed embeddings are cut on both frame grids (`step`,
  # a multiple of both hops), so that a piece's first sample is the start of
  # one of the item's embedding frames.
  step = int(p.get("step", hop))
  nominal = j * p["length"] // p["count"]
  first = max(1, -(-(nominal - p["window"]) // hop))
  last = max(first, nominal // hop)
  lo, hi = first * hop, min(last * hop + config.frame_length, p["length"])
  rate = config.sample_rate
  stretch = audio_lib.load_audio(item["audio"], rate, (p["offset"] + lo) / rate,
                                 (p["offset"] + hi) / rate)
  cut = (first + audio_lib.quiet_cut_frame(stretch, config)) * hop
  if step != hop:
    cut = max(step, int(round(cut / step)) * step)
  return cut


def resolve_piece(item: Mapping[str, Any],
                  config: spectral.StftConfig) -> dict[str, Any]:
  """A piece task's item with its own `start`/`end` (seconds).

  `item["_piece"]` (set by `plan.prepare`) holds the source id, the piece's
  index and count, and the item's offset and length in samples; the cuts are
  found here, in the worker, by reading only their windows. Adds
  `_piece["first_frame"]`, the item's embedding frame at which the piece
  starts (on the embedder's grid, hop `_piece["embedding_step"]`).

  Raises:
    audio.AudioError: the audio cannot be read.
  """
  p = dict(item["_piece"])
  k, count, rate = p["index"], p["count"], config.sample_rate
  first = _cut(item, k, config) if k > 0 else 0
  last = _cut(item, k + 1, config) if k + 1 < count else p["length"]
  p["first_frame"] = first // int(p.get("embedding_step", config.frame_step))
  return dict(item, start=(p["offset"] + first) / rate,
              end=(p["offset"] + last) / rate, _piece=p)
