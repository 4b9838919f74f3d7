"""The end of a run: is the dataset usable, its reports (rejected.jsonl,
pieces.jsonl), its dataset_info.json, and the commit that puts them in
place. The layouts are in tfrecords/README.md.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any

from e2s_tf import fileio
from e2s_tf import records
from e2s_tf.preprocessing import output
from e2s_tf.preprocessing.errors import PreprocessError
from e2s_tf.preprocessing.plan import Plan
from e2s_tf.preprocessing.stats import Summary

# The fields of a rejected.jsonl line, in their order.
REJECTED_FIELDS = ("id", "split", "reason", "detail")
# The schema version of dataset_info.json and its records (4: 16-bit audio,
# no stored log-STFT; 3: records carry `text`; 2: no `text`; 1: no
# `frame_mapping`).
VERSION = records.SCHEMA_VERSION


def failure_report(plan: Plan) -> str:
  """Where a failed run's rejected report goes: rejected.jsonl, unless that
  belongs to a complete dataset in the folder (a failed run leaves it
  intact)."""
  name = output.FAILED_REPORT if plan.previous else records.REJECTED_REPORT
  return os.path.join(plan.out_dir, name)


def check_usable(plan: Plan, summary: Summary, report: str,
                 max_rejected_fraction: float) -> None:
  """Raises PreprocessError when the run cannot make a usable dataset."""
  num_tasks = len(plan.tasks())
  if summary.num_examples() == 0 or summary.num_examples("train") == 0:
    raise PreprocessError(
        f"no usable training item among {num_tasks}; see {report}")
  if len(summary.rejected) > max_rejected_fraction * num_tasks:
    raise PreprocessError(
        f"{len(summary.rejected)} of {num_tasks} items rejected, more than "
        f"--max_rejected_fraction={max_rejected_fraction}; see {report}")


def _in_task_order(plan: Plan, rows: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
  """`rows` (each with an "id") in task (manifest) order."""
  order = {t["id"]: i for i, (t, _) in enumerate(plan.tasks())}
  return sorted(rows, key=lambda r: order.get(r["id"], len(order)))


def rejected_rows(plan: Plan, summary: Summary) -> list[dict[str, Any]]:
  """The lines of rejected.jsonl: one per rejected task, in task order."""
  return [{k: r[k] for k in REJECTED_FIELDS}
          for r in _in_task_order(plan, summary.rejected)]


def pieces_rows(plan: Plan, summary: Summary) -> list[dict[str, Any]]:
  """The lines of pieces.jsonl: one per written piece, in task order."""
  audio = {it["id"]: it["audio"] for it in plan.items}
  return [{"id": r["id"], "source": r["source"], "audio": audio[r["source"]],
           "start": r["start"], "end": r["end"]}
          for r in _in_task_order(plan, summary.pieces)]


def _jsonl(rows) -> str:
  return "".join(json.dumps(r) + "\n" for r in rows)


def build_dataset_info(plan: Plan, summary: Summary,
                       seconds: float) -> dict[str, Any]:
  """The dataset_info.json dict (layout in tfrecords/README.md)."""
  by_reason = collections.Counter(r["reason"] for r in summary.rejected)

  def split_info(split: str, num_shards: int) -> dict[str, Any]:
    counts = summary.split_counts(split)
    return {"num_examples": counts["num_examples"],
            "num_frames": counts["num_frames"],
            "num_audio_seconds": counts["num_samples"]
                                 / plan.config.sample_rate,
            "num_shards": num_shards,
            "num_speakers": len({it["speaker"] for it in plan.items
                                 if plan.splits[it["id"]] == split and
                                 it.get("speaker")}),
            "files": plan.shard_names(split)}

  return {
      "version": VERSION,
      "fingerprint": plan.fingerprint,
      "manifest": fileio.abspath(plan.manifest),
      "stft": plan.config.to_dict(),
      "embedder": plan.embedder.describe(),
      "split_by": plan.split_by,
      "seed": plan.seed,
      "frame_tolerance": plan.frame_tolerance,
      "record_format": {"audio": "pcm16",
                        "embedding": plan.embedding_dtype},
      "centre_offset_ms": plan.frame_mapping.residual_offset_ms(
          plan.config.sample_rate),
      "frame_mapping": plan.frame_mapping.describe(plan.config.sample_rate),
      "speakers": plan.speakers,
      "splits": {s: split_info(s, n) for s, n in plan.num_shards.items()},
      "stats": summary.train_stats.finish(),
      "length_quantiles": summary.length_quantiles(),
      "rejected": {"count": len(summary.rejected), "by_reason": dict(by_reason),
                   "report": records.REJECTED_REPORT},
      "trimmed": dict(summary.trimmed),
      "pieces": {"max_item_seconds": plan.max_item_seconds,
                 "split_items": plan.split_items,
                 "count": len(summary.pieces),
                 "report": output.PIECES_REPORT if summary.pieces else None},
      "num_items": len(plan.items),
      "seconds": round(seconds, 2),
  }


def _closing_line(plan: Plan, summary: Summary, info: dict[str, Any]) -> str:
  rejected = summary.rejected
  by_reason = info["rejected"]["by_reason"]
  trimmed = summary.trimmed
  per_split = ", ".join(f"{s} {summary.num_examples(s)}"
                        for s in plan.num_shards)
  report = os.path.join(plan.out_dir, records.REJECTED_REPORT)
  return (f"wrote {summary.num_examples()} examples ({per_split}) to "
          f"{plan.out_dir} in {info['seconds']:.1f}s; rejected {len(rejected)}"
          + (f" ({by_reason}), see {report}" if rejected else "")
          + (f"; trimmed {trimmed['count']} items by {trimmed['frames']} frames"
             if trimmed["count"] else "")
          + (f"; {plan.split_items} long items cut into "
             f"{len(summary.pieces)} pieces, see "
             f"{os.path.join(plan.out_dir, output.PIECES_REPORT)}"
             if summary.pieces else ""))


def finish(plan: Plan, summary: Summary, start: float,
           max_rejected_fraction: float, progress: bool) -> dict[str, Any]:
  """Checks the run, writes its reports and dataset_info, and commits.

  The shards are complete under their `.tmp` names when this is called. On a
  PreprocessError (no usable item, too many rejected) the temporaries are
  removed and the rejected report is written (`failure_report`); the
  folder's previous dataset stays as it was.
  """
  shards = plan.all_shard_paths()
  with output.no_space_is_an_error(plan.out_dir):
    report = failure_report(plan)
    try:
      check_usable(plan, summary, report, max_rejected_fraction)
    except PreprocessError:
      output.discard(plan.out_dir)
      output.write_text_tmp(report, _jsonl(rejected_rows(plan, summary)))
      output.rename_tmp(report)
      raise
    try:
      new_files = shards + [output.write_text_tmp(
          os.path.join(plan.out_dir, records.REJECTED_REPORT),
          _jsonl(rejected_rows(plan, summary)))]
      if summary.pieces:
        new_files.append(output.write_text_tmp(
            os.path.join(plan.out_dir, output.PIECES_REPORT),
            _jsonl(pieces_rows(plan, summary))))
      info = build_dataset_info(plan, summary, time.time() - start)
      output.write_text_tmp(os.path.join(plan.out_dir, records.DATASET_INFO),
                            json.dumps(info, indent=1) + "\n")
      output.commit(plan, new_files)
    except BaseException:
      output.discard(plan.out_dir)  # e.g. the disk filled up writing reports
      raise
  if progress:
    print(_closing_line(plan, summary, info))
  return info
