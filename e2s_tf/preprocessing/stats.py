"""Dataset statistics: mergeable totals of the processed items, from which
dataset_info.json's counts, length quantiles and normalisation statistics
are made.

The local runner `add`s every `ItemResult` to one `Summary`; the Beam
pipeline uses it as the accumulator of a CombineFn (`add`, `merge`, and
`to_json`/`from_json` to hand it to the launcher).
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import numpy as np

# Levels of dataset_info["length_quantiles"]: 0, 0.1, ..., 1.
QUANTILES = tuple(round(q, 2) for q in np.linspace(0.0, 1.0, 11))
# The floor of every standard deviation in dataset_info["stats"]: a constant
# dimension (e.g. a log-mel band that is silent throughout) is divided by
# this rather than by 0. The models and the export use the statistics as
# written, so this is the only floor.
MIN_STD = 1e-3

_SUM_KEYS = ("embedding_sum", "embedding_sumsq", "log_stft_sum",
             "log_stft_sumsq")
_COUNT_KEYS = ("num_examples", "num_frames", "num_samples")
_STREAMS = ("embedding", "log_stft")


def mean_and_std(total: np.ndarray, total_sq: np.ndarray, count: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation (floored at MIN_STD), float32,
  from float64 sums and sums of squares over `count` frames."""
  mean = np.asarray(total, np.float64) / count
  var = np.maximum(np.asarray(total_sq, np.float64) / count - mean ** 2, 0)
  return (mean.astype(np.float32),
          np.maximum(np.sqrt(var), MIN_STD).astype(np.float32))


def length_quantiles(lengths: Sequence[int]) -> dict[str, float]:
  """{level: frames} at the levels of QUANTILES (dataset_info's table)."""
  return {str(q): float(np.quantile(lengths, q)) for q in QUANTILES}


class _Stats:
  """Running per-channel sums for mean/std (float64)."""

  def __init__(self):
    self.count = 0
    self.sums = {}

  def add(self, r) -> None:
    self.count += r.num_frames
    for k in _SUM_KEYS:
      self.sums[k] = self.sums.get(k, 0.0) + getattr(r, k)

  def merge(self, other: "_Stats") -> None:
    self.count += other.count
    for k, v in other.sums.items():
      self.sums[k] = self.sums.get(k, 0.0) + v

  def finish(self) -> dict[str, list[float]]:
    """dataset_info["stats"]: `<stream>_mean` and `<stream>_std` lists."""
    out = {}
    for name in _STREAMS:
      mean, std = mean_and_std(self.sums[f"{name}_sum"],
                               self.sums[f"{name}_sumsq"], self.count)
      out[f"{name}_mean"], out[f"{name}_std"] = mean.tolist(), std.tolist()
    return out


class Summary:
  """Mergeable totals of `ItemResult`s, from which dataset_info is built.

  It never holds the examples: per split the counts and the frame lengths
  (for exact quantiles), the train split's float64 sums and sums of squares,
  the trims, and one small record per rejected item and per written piece.
  """

  def __init__(self):
    self.counts = {}      # split -> {num_examples, num_frames, num_samples}
    self.lengths = {}     # split -> [frames of each example]
    self.train_stats = _Stats()
    self.trimmed = {"count": 0, "frames": 0}
    self.rejected = []    # {"id", "split", "reason", "detail"}
    self.pieces = []      # {"id", "source", "start", "end"} per written piece

  def add(self, r) -> "Summary":
    """Adds one `items.ItemResult`."""
    if not r.ok:
      self.rejected.append({"id": r.item_id, "split": r.split,
                            "reason": str(r.reason), "detail": r.detail})
      return self
    c = self.counts.setdefault(r.split, dict.fromkeys(_COUNT_KEYS, 0))
    c["num_examples"] += 1
    c["num_frames"] += r.num_frames
    c["num_samples"] += r.num_samples
    self.lengths.setdefault(r.split, []).append(r.num_frames)
    if r.trimmed_frames:
      self.trimmed["count"] += 1
      self.trimmed["frames"] += r.trimmed_frames
    if r.split == "train":
      self.train_stats.add(r)
    if r.source:
      self.pieces.append({"id": r.item_id, "source": r.source,
                          "start": r.start, "end": r.end})
    return self

  def merge(self, other: "Summary") -> "Summary":
    for split, c in other.counts.items():
      mine = self.counts.setdefault(split, dict.fromkeys(_COUNT_KEYS, 0))
      for k in _COUNT_KEYS:
        mine[k] += c[k]
    for split, v in other.lengths.items():
      self.lengths.setdefault(split, []).extend(v)
    self.train_stats.merge(other.train_stats)
    for k in self.trimmed:
      self.trimmed[k] += other.trimmed[k]
    self.rejected.extend(other.rejected)
    self.pieces.extend(other.pieces)
    return self

  def num_examples(self, split: Optional[str] = None) -> int:
    if split is not None:
      return self.counts.get(split, {}).get("num_examples", 0)
    return sum(c["num_examples"] for c in self.counts.values())

  def split_counts(self, split: str) -> dict[str, int]:
    """{num_examples, num_frames, num_samples} of `split` (zeros if none)."""
    return dict(self.counts.get(split, dict.fromkeys(_COUNT_KEYS, 0)))

  def length_quantiles(self) -> dict[str, dict[str, float]]:
    """dataset_info["length_quantiles"]: per split, frames at QUANTILES."""
    return {s: length_quantiles(v) for s, v in self.lengths.items()}

  def to_json(self) -> str:
    """One line of JSON (float64 sums round-trip exactly)."""
    return json.dumps({
        "counts": self.counts, "lengths": self.lengths,
        "trimmed": self.trimmed, "rejected": self.rejected,
        "pieces": self.pieces, "train_count": self.train_stats.count,
        "train_sums": {k: np.asarray(v, np.float64).tolist()
                       for k, v in self.train_stats.sums.items()}})

  @classmethod
  def from_json(cls, text: str) -> "Summary":
    d: dict[str, Any] = json.loads(text)
    out = cls()
    out.counts, out.lengths = d["counts"], d["lengths"]
    out.trimmed, out.rejected = d["trimmed"], d["rejected"]
    out.pieces = d.get("pieces", [])
    out.train_stats.count = d["train_count"]
    out.train_stats.sums = {k: np.asarray(v, np.float64)
                            for k, v in d["train_sums"].items()}
    return out
