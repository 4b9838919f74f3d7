"""The profile of an evaluation: its metrics by aspect, and the retention.

A reconstruction is scored on five aspects of what it keeps of the original:
the signal (e2s_tf.metrics), what was said (content), how (prosody), who
(identity) and how natural it sounds (naturalness). Per system the means go
into metrics.json beside `num_items`, with `num_na[metric]`: the items where
a metric does not apply (audio too short, no voiced frame in common, no text
for a content target) and which the mean leaves out — never a silent 0.

Retention places the model between a floor and the oracle, aspect by aspect:

    retention = (model - floor) / (oracle - floor)

on the aspect's headline metric (RETENTION_METRICS: phone error rate, F0
frame error, speaker cosine, DNSMOS OVR; the sign works for
lower-is-better metrics too), where `oracle` is `oracle_griffin_lim` (the
true magnitude through the same phase retrieval: the ceiling of any decoder
that predicts magnitude) and `floor` a decoder trained on the `energy`
embedder (`evaluate --floor=EXPORT`): what frame energy alone earns. 0 is the
floor, 1 the oracle; a model below the floor or above the oracle reads below 0
or above 1. It is a lower bound of what the embedding carries: a stronger
decoder can only raise it.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Optional, Sequence

from e2s_tf import metrics as metrics_lib

ASPECTS: Mapping[str, tuple[str, ...]] = collections.OrderedDict([
    ("signal", metrics_lib.METRIC_NAMES),
    ("content", ("phone_error_rate", "phone_error_rate_vs_original",
                 "word_error_rate", "char_error_rate",
                 "word_error_rate_vs_original")),
    ("prosody", ("f0_frame_error", "f0_rmse_cents", "gross_pitch_error",
                 "voicing_decision_error", "f0_correlation",
                 "energy_correlation")),
    ("identity", ("speaker_cosine", "speaker_id_accuracy", "speaker_eer")),
    ("naturalness", ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovr")),
])
# Lower is better for these; higher for the others.
LOWER_IS_BETTER = frozenset(metrics_lib.LOWER_IS_BETTER) | {
    "phone_error_rate", "phone_error_rate_vs_original", "word_error_rate",
    "char_error_rate", "word_error_rate_vs_original", "f0_rmse_cents", "gross_pitch_error",
    "voicing_decision_error", "f0_frame_error", "speaker_eer"}
# Per aspect of the retention table, its headline metrics: the first that
# the evaluation has is used.
RETENTION_METRICS: Mapping[str, tuple[str, ...]] = collections.OrderedDict([
    ("content", ("phone_error_rate", "phone_error_rate_vs_original",
                 "word_error_rate")),
    # F0 frame error, not the F0 RMSE: the RMSE is only defined on frames
    # voiced in both, so a reconstruction that loses its voicing would be
    # scored on the few frames it kept (n/a on the others).
    ("prosody", ("f0_frame_error",)),
    ("identity", ("speaker_cosine",)),
    ("naturalness", ("dnsmos_ovr",)),
])
MODEL, FLOOR, ORACLE, REFERENCE = ("model", "floor", "oracle_griffin_lim",
                                   "reference")


def finite(value: Any) -> Optional[float]:
  """`value` as a float, or None when it is None, NaN or infinite."""
  if value is None or isinstance(value, bool):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]
              ) -> dict[str, Any]:
  """The means of `metrics` over per-item `rows` (None/NaN left out), and
  `num_na`: per metric, the rows where it is n/a (absent keys count)."""
  out: dict[str, Any] = {}
  num_na = {}
  for m in metrics:
    values = [finite(r.get(m)) for r in rows]
    kept = [v for v in values if v is not None]
    out[m] = float(sum(kept) / len(kept)) if kept else None
    num_na[m] = len(values) - len(kept)
  out["num_na"] = num_na
  return out


def retention(summary: Mapping[str, Mapping[str, Any]]
              ) -> dict[str, dict[str, Any]]:
  """Per aspect: {"metric", "model", "floor", "oracle", "retention"}.

  Empty without a `floor` system. `retention` is None where a value is
  missing or the floor equals the oracle (nothing to place the model on)."""
  if FLOOR not in summary or MODEL not in summary or ORACLE not in summary:
    return {}
  out = {}
  for aspect, candidates in RETENTION_METRICS.items():
    metric = next((m for m in candidates
                   if finite(summary[MODEL].get(m)) is not None), None)
    if metric is None:
      continue
    model, floor, oracle = (finite(summary[s].get(metric))
                            for s in (MODEL, FLOOR, ORACLE))
    value = None
    if None not in (model, floor, oracle) and abs(oracle - floor) > 1e-12:
      value = (model - floor) / (oracle - floor)
    out[aspect] = {"metric": metric, "model": model, "floor": floor,
                   "oracle": oracle, "retention": value}
  return out


def _cell(stats: Mapping[str, Any], metric: str) -> str:
  value = finite(stats.get(metric))
  na = int(stats.get("num_na", {}).get(metric, 0))
  if value is None:
    return "—" if metric not in stats else "n/a"
  return f"{value:.3f}" + (f" ({na} n/a)" if na else "")


def markdown_tables(summary: Mapping[str, Mapping[str, Any]],
                    aspects: Optional[Sequence[str]] = None) -> str:
  """One markdown table per aspect with any value: a row per system, a
  column per metric; `n/a` where no item had a value, `(k n/a)` beside a
  mean that leaves k items out, `—` where the metric is not computed for
  the system. `aspects`: which (default: all of ASPECTS)."""
  blocks = []
  for aspect, metrics in ASPECTS.items():
    if aspects is not None and aspect not in aspects:
      continue
    present = [m for m in metrics
               if any(m in s for s in summary.values())]
    if not present:
      continue
    head = " | ".join(f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}"
                      for m in present)
    lines = [f"**{aspect}**", "", f"| system | items | {head} |",
             "|---|---:|" + "---:|" * len(present)]
    for system, stats in summary.items():
      lines.append(f"| {system} | {stats.get('num_items', '')} | " + " | ".join(
          _cell(stats, m) for m in present) + " |")
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


def retention_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
  """The retention as a markdown table (empty string when there is none)."""
  if not rows:
    return ""

  def fmt(v):
    return "n/a" if v is None else f"{v:.3f}"

  lines = ["| aspect | metric | floor | model | oracle | retention |",
           "|---|---|---:|---:|---:|---:|"]
  for aspect, r in rows.items():
    lines.append(f"| {aspect} | {r['metric']} | {fmt(r['floor'])} | "
                 f"{fmt(r['model'])} | {fmt(r['oracle'])} | "
                 f"{fmt(r['retention'])} |")
  return "\n".join(lines)
