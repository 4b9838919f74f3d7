"""Shared machinery of the experiments: data, train + evaluate, tables."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

from absl import flags

import numpy as np
import tensorflow as tf

from e2s_tf.configs import base as base_config
from e2s_tf.configs import testing as testing_config
from e2s_tf import alignment
from e2s_tf import corpus
from e2s_tf import evaluate_lib
from e2s_tf import export_lib
from e2s_tf import fileio
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import train_lib
from e2s_tf.benchmarks import harness
from e2s_tf.preprocessing import items as preprocess_items
from e2s_tf.preprocessing import stats as preprocess_stats


def machine() -> str:
  """A one-line description of this machine for the tables."""
  cpu = harness.cpu_model()
  return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, "
          f"TensorFlow {tf.__version__}, no GPU"
          if not tf.config.list_physical_devices("GPU") else
          f"{os.cpu_count()} CPU cores, GPU "
          f"{tf.config.list_physical_devices('GPU')[0].name}")


def demo_data(work_dir: str, quick: bool, log=print) -> str:
  """The default corpus (or a tiny one with `quick`) through logmel."""
  corpus_dir = os.path.join(work_dir, "corpus")
  data_dir = os.path.join(work_dir, "tfrecords")
  speakers, utterances = (3, 4) if quick else (8, 40)
  manifest = corpus.make_corpus(corpus_dir, speakers=speakers,
                                utterances=utterances, progress=not quick)
  if quick:
    preprocess_lib.run_preprocess(manifest, data_dir, "logmel",
                                  split_by="utterance", valid_fraction=0.25,
                                  test_fraction=0.0, num_workers=1,
                                  progress=False)
  else:
    preprocess_lib.run_preprocess(manifest, data_dir, "logmel",
                                  split_by="speaker", progress=True)
  log(f"data: {data_dir}")
  return data_dir


def experiment_config(model: str, steps: int, quick: bool):
  config = (testing_config.get_config(model) if quick else
            base_config.get_config(model))
  config.train.num_steps = steps
  config.train.eval_every = max(steps, 1)
  config.train.checkpoint_every = max(steps, 1)
  config.train.log_every = max(1, min(50, steps // 5 or 1))
  config.train.lr_warmup_steps = min(config.train.lr_warmup_steps,
                                     max(steps // 5, 1))
  return config


def train_and_evaluate(config, data_dir: str, workdir: str, split: str = "valid",
                       max_items: Optional[int] = None,
                       log=print) -> dict[str, float]:
  """Trains from scratch, exports and evaluates `model` on `split`."""
  fileio.rmtree(workdir, ignore_errors=True)
  start = time.time()
  trained = train_lib.train(config, data_dir, os.path.join(workdir, "run"),
                            log=log)
  export_dir = os.path.join(workdir, "export")
  export_lib.export(os.path.join(workdir, "run"), export_dir)
  result = evaluate_lib.evaluate(export_dir, data_dir, split,
                                 os.path.join(workdir, "eval"),
                                 max_items=max_items, num_figures=0,
                                 num_audio=0, systems=["model"],
                                 progress=False, aspects=())["model"]
  return {**{m: nan_if_none(result[m]) for m in ("lsd_db", "pesq_wb", "stoi")}, "train_frames_per_sec":
          trained["frames_per_sec"], "train_seconds": trained["wall_seconds"],
          "wall_seconds": time.time() - start, "steps": trained["steps"],
          "eval_items": result["num_items"]}


def nan_if_none(value: Optional[float]) -> float:
  """A metric mean as a float: NaN where it was n/a (None)."""
  return float("nan") if value is None else float(value)


def markdown_table(columns: Sequence[tuple[str, str, str]],
                   rows: Sequence[Mapping[str, Any]]) -> str:
  """columns: (key, header, format); rows: dicts."""
  head = "| " + " | ".join(h for _, h, _ in columns) + " |"
  rule = "|" + "|".join("---" if i == 0 else "---:"
                        for i in range(len(columns))) + "|"
  lines = [head, rule]
  for row in rows:
    cells = []
    for key, _, fmt in columns:
      v = row.get(key)
      if isinstance(v, float) and math.isnan(v):
        cells.append("n/a")
      elif isinstance(v, (int, float)) and fmt:
        cells.append(format(v, fmt))
      else:
        cells.append(str(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def print_row(columns: Sequence[tuple[str, str, str]],
              row: Mapping[str, Any]) -> None:
  """Prints `row` as it will stand in the table, as soon as it is measured."""
  print(f"   {markdown_table(columns, [row]).splitlines()[-1]}", flush=True)


def write_report(path: str, title: str, command: str, intro: str, notes: str,
                 columns: Sequence[tuple[str, str, str]],
                 rows: Sequence[Mapping[str, Any]], steps: int,
                 quick: bool) -> Sequence[Mapping[str, Any]]:
  """Writes the experiment's table: `path` (Markdown: title, intro, command,
  machine, date, table, notes) and `<path without .md>.json` (rows, steps,
  quick); prints the table and returns `rows`."""
  table = markdown_table(columns, rows)
  text = (f"# {title}\n\n{intro}\n\n- command: `{command}`\n"
          f"- machine: {machine()}\n- date: {time.strftime('%Y-%m-%d')}\n\n"
          f"{table}\n\n{notes}\n")
  with fileio.replacing(path) as f:
    f.write(text)
  fileio.write_json(os.path.splitext(path)[0] + ".json",
                    {"rows": rows, "steps": steps, "quick": quick})
  print(table)
  return rows


# ----------------------------------------------------------------------------
# The experiments' command lines.


class ExperimentFlags(NamedTuple):
  """The flags every experiment program takes (absl FlagHolders)."""
  work_dir: flags.FlagHolder
  data_dir: flags.FlagHolder
  out: flags.FlagHolder
  steps: flags.FlagHolder
  max_items: flags.FlagHolder
  quick: flags.FlagHolder

  def values(self) -> tuple[Any, ...]:
    """The parsed values, in the order of the libraries' `run` arguments."""
    return tuple(holder.value for holder in self)


def define_flags(name: str, unit: str, max_items: int, scratch: str,
                 data: str) -> ExperimentFlags:
  """Defines `--work_dir=/tmp/e2s_<name>`, `--data_dir`,
  `--out=docs/experiments/<name>.md`, `--steps`, `--max_items` and `--quick`
  for the experiment `name`, which compares one `unit` ("mode") with another;
  `scratch` and `data` finish the help of --work_dir and --data_dir.

  The flags are the calling program's (its `--help` lists them): this module
  disclaims the flags defined in it (`flags.disclaim_key_flags`).
  """
  return ExperimentFlags(
      work_dir=flags.DEFINE_string("work_dir", f"/tmp/e2s_{name}",
                                   f"Scratch space ({scratch})."),
      data_dir=flags.DEFINE_string(
          "data_dir", "", f"An existing {data} (default: the demo corpus, "
          "made under --work_dir)."),
      out=flags.DEFINE_string("out", f"docs/experiments/{name}.md",
                              "Markdown table to write (+ .json beside it)."),
      steps=flags.DEFINE_integer("steps", 150,
                                 f"Training steps per {unit}."),
      max_items=flags.DEFINE_integer(
          "max_items", max_items, f"Validation items evaluated per {unit}."),
      quick=flags.DEFINE_bool(
          "quick", False, "A tiny corpus, model and budget (for tests)."))


flags.disclaim_key_flags()


def command_line(module: str) -> str:
  """How this program was started, for the report: `python -m <module> ...`."""
  return " ".join([f"python -m {module}"] + sys.argv[1:])


# ----------------------------------------------------------------------------
# Derived datasets (framing experiment).


def _item_result(ex: Mapping[str, Any], split: str) -> preprocess_items.ItemResult:
  """What preprocessing's statistics count of one written example."""
  sums = {}
  for key in ("embedding", "log_stft"):
    a = ex[key].astype(np.float64)
    sums[f"{key}_sum"], sums[f"{key}_sumsq"] = a.sum(0), np.square(a).sum(0)
  return preprocess_items.ItemResult(
      item_id=ex["id"], split=split, num_frames=ex["embedding"].shape[0],
      num_samples=ex["audio"].shape[0], **sums)


def derive_dataset(data_dir: str, out_dir: str, stft: spectral.StftConfig,
                   transform: Callable[[dict], Optional[dict]]):
  """Writes a copy of `data_dir` whose examples went through `transform`.

  `transform(example)` gets the parsed example (NumPy: embedding, log_stft,
  audio, id, speaker, speaker_index, text) and returns the new one (same
  keys, the audio covering exactly the frames of its log_stft on `stft`) or
  None to drop it. The statistics are recomputed on the new train split.
  """
  info = records.read_dataset_info(data_dir)
  if not alignment.FrameMapping.from_info(info).identity:
    raise ValueError(
        f"{data_dir}: its embedder's frames are mapped onto the STFT frames "
        "(frame_mapping in dataset_info.json); this experiment shifts frames "
        "one to one and needs a dataset whose embedder runs on the STFT grid")
  fileio.rmtree(out_dir, ignore_errors=True)
  fileio.makedirs(out_dir)
  new = json.loads(json.dumps(info))
  new["stft"] = stft.to_dict()
  source = records.stft_config(info)
  # The source's storage type: its values come back exactly.
  dtype = info.get("record_format", {}).get(
      "embedding", records.DEFAULT_EMBEDDING_DTYPE)
  summary = preprocess_stats.Summary()
  for split in info["splits"]:
    name = records.shard_name(split, 0, 1)
    with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as w:
      for ex in records.read_examples(records.split_files(data_dir, split,
                                                          info),
                                      with_audio=True, stft_config=source):
        ex = transform(ex)
        if ex is None or ex["embedding"].shape[0] == 0:
          continue
        # The new record's log-STFT is computed from its audio when read:
        # `transform` keeps the audio on the frames of its log_stft.
        w.write(records.serialize_example(
            ex["id"], ex["embedding"], ex["audio"], ex["log_stft"].shape[0],
            ex["speaker"], int(ex["speaker_index"]), text=ex["text"],
            embedding_dtype=dtype))
        summary.add(_item_result(ex, split))
    counts = summary.split_counts(split)
    new["splits"][split].update(
        num_examples=counts["num_examples"], num_frames=counts["num_frames"],
        num_audio_seconds=counts["num_samples"] / stft.sample_rate,
        num_shards=1, files=[name])
  new["stats"].update(summary.train_stats.finish())
  new["length_quantiles"] = summary.length_quantiles()
  new["fingerprint"] = "derived"
  fileio.write_json(os.path.join(out_dir, records.DATASET_INFO), new)
  return out_dir
