"""Evaluates an exported decoder against the oracle and closed-form baselines.

Systems, on the same items of one split:
  - `model`: the export's `waveform` endpoint on the stored raw embeddings;
  - `oracle_griffin_lim`: the true magnitude through the same Griffin-Lim, the
    ceiling of any decoder that predicts magnitude only;
  - `analytic`: where the embedder has a closed-form inverse (logmel, mfcc):
    non-negative least squares back to a magnitude, then the same Griffin-Lim.
  - `floor` (with `floor=EXPORT`): a decoder trained on the `energy`
    embedder, what frame energy alone earns.
Every system's audio is compared with the stored reference audio (the samples
the frames cover) by the metrics of e2s_tf.metrics. `rtf` is the synthesis
time of one item (batch of one, after a warm-up) over its duration.

Then every system, and the originals as `reference`, is scored by aspect
(e2s_tf.aspects: content by a phone recogniser trained on the corpus and by
PocketSphinx, prosody by F0 and energy contours, identity by a speaker
judge, naturalness by DNSMOS), and with a floor the retention places the
model between the floor and the oracle per aspect (e2s_tf.aspects.profile).
A metric that does not apply to an item is null in its row, left out of the
mean and counted in `num_na`.

Writes metrics.json (per system: the means, `num_items`, `num_skipped`,
`num_na`, per-item `items`), profile.json (the aspects, retention, judges,
seconds per aspect), report.md (the tables), report.html (the tables, the
retention figure retention.png and, for the first `num_audio` items, a
player and a spectrogram per system: audio/<system>/<id>.wav with
audio/reference/<id>.wav, spectrograms/<system>/<id>.png) and
figures/<id>.png (target / prediction / error). Every per-item path is
built by `fileio.output_path` under its own folder: one system's audio
never lands on another's, and an
item whose stored id is not a valid id (`../x`, `/abs/x`: an old or foreign
dataset) is reported, counted in `num_skipped` and not evaluated; a repeated
id gets `-2`, `-3`, ... in its file names. The output folder is locked for
the run; a truncated or corrupted shard stops it with
records.CorruptShardError naming the file.
"""

from __future__ import annotations

import io
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
from absl import logging
import tensorflow as tf
import tqdm

from e2s_tf import alignment
from e2s_tf import audio as audio_lib
from e2s_tf import embedders
from e2s_tf import export_lib
from e2s_tf import fileio
from e2s_tf import metrics as metrics_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.aspects import figures as aspect_figures
from e2s_tf.aspects import html_report
from e2s_tf.aspects import profile
from e2s_tf.aspects import scoring

SYSTEMS = ("model", "oracle_griffin_lim", "analytic")
FLOOR = profile.FLOOR
SPEAKER_ENCODER_JSON = "speaker_encoder.json"
CONTENT_JUDGE_JSON = "content_judge.json"
METRICS_FILE = "metrics.json"
PROFILE_FILE = "profile.json"
REPORT_FILE = "report.md"
RETENTION_FIGURE = "retention.png"
AUDIO_DIR = "audio"
FIGURES_DIR = "figures"
SPECTROGRAMS_DIR = "spectrograms"
REFERENCE = profile.REFERENCE


def _read_items(data_dir: str, split: str, max_items: Optional[int],
                skipped: Optional[list[str]] = None):
  """The split's items sorted by id; ones with an invalid id go to `skipped`.

  Raises:
    records.CorruptShardError: a shard cannot be read; names the file.
  """
  info = records.read_dataset_info(data_dir)
  files = records.split_files(data_dir, split, info)
  items, invalid = [], 0
  for item in records.read_examples(files, with_audio=True,
                                    stft_config=records.stft_config(info)):
    problem = fileio.item_id_problem(item["id"])
    if problem:
      invalid += 1
      message = (f"{data_dir}:{split}: item {item['id']!r} skipped: its id "
                 f"cannot be a file name ({problem})")
      logging.warning("%s", message)
      if skipped is not None:
        skipped.append(message)
      continue
    items.append(item)
  items.sort(key=lambda it: it["id"])
  if max_items:
    items = items[:max_items]
  if not items:
    raise ValueError(f"{data_dir}: split {split!r} has no items" + (
        f" with a valid id ({invalid} skipped)" if invalid else ""))
  return items


class _Systems:
  """Callables item -> (audio, log_stft prediction or None), by system."""

  def __init__(self, decoder: export_lib.LoadedDecoder, info: dict,
               griffin_lim_iterations: int,
               griffin_lim_init: str = export_lib.GRIFFIN_LIM_INIT):
    self.decoder = decoder
    self.stft = spectral.StftConfig.from_dict(info["stft"])
    self.mapping = alignment.FrameMapping.from_info(info)
    self.iterations = griffin_lim_iterations
    self.init = griffin_lim_init
    self.embedder = None
    self.floor_runner = None
    try:
      embedder = embedders.from_description(info["embedder"], self.stft)
      if embedder.analytic_inverse:
        self.embedder = embedder
    except (ValueError, embedders.EmbedderError, OSError):
      self.embedder = None  # e.g. a SavedModel embedder that moved away
    self._gl = tf.function(
        lambda m: spectral.griffin_lim(m, None, self.stft,
                                       num_iterations=self.iterations,
                                       init=self.init)[0],
        input_signature=[tf.TensorSpec([None, None, self.stft.num_bins])])

  def available(self) -> list[str]:
    return [s for s in SYSTEMS if s != "analytic" or self.embedder is not None]

  def model(self, item):
    emb = item["embedding"][None]
    lengths = np.array([emb.shape[1]], np.int32)
    spk = (np.array([max(int(item["speaker_index"]), 0)], np.int32)
           if self.decoder.with_speaker else None)
    audio, n = self.decoder.waveform(emb, lengths, spk)
    return audio[0, :n[0]]

  def model_spectrogram(self, item):
    emb = item["embedding"][None]
    lengths = np.array([emb.shape[1]], np.int32)
    spk = (np.array([max(int(item["speaker_index"]), 0)], np.int32)
           if self.decoder.with_speaker else None)
    return self.decoder.spectrogram(emb, lengths, spk)[0]

  def floor(self, item):
    return self.floor_runner(item)

  def oracle_griffin_lim(self, item):
    return self._gl(np.exp(item["log_stft"])[None]).numpy()[0]

  def analytic(self, item):
    # The closed form is per frame: at the STFT frames, as the model sees it.
    magnitude = self.embedder.invert_magnitude(
        self.mapping.map_one(item["embedding"], item["length"]))
    return self._gl(np.asarray(magnitude, np.float32)[None]).numpy()[0]


def speaker_encoder_dir(info: dict) -> Optional[str]:
  """The export dir of the dataset's embedder when it is a speaker encoder."""
  spec = str(info["embedder"].get("spec", ""))
  if not spec.startswith("savedmodel:"):
    return None
  path = spec.split(":", 1)[1]
  return path if fileio.exists(os.path.join(path, SPEAKER_ENCODER_JSON)) \
      else None


def _file_name(folder: str, item_id: str, taken: set[str]) -> str:
  """The item's file name (an id) in every output folder, unique per run."""
  path = fileio.unique_output_path(folder, item_id, "", taken)
  return fileio.relpath(path, fileio.realpath(folder)).replace(os.sep, "/")


def _timed(fn: Callable, item) -> tuple[np.ndarray, float]:
  t0 = time.perf_counter()
  out = fn(item)
  return out, time.perf_counter() - t0


def _figure(path, item_id, target_log, prediction_log, stft):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  db = 20.0 / math.log(10.0)
  # A prediction from embeddings on another grid may have a frame or two
  # more than the reference kept (alignment.FrameMapping.stft_frames).
  n = min(target_log.shape[0], prediction_log.shape[0])
  target_log, prediction_log = target_log[:n], prediction_log[:n]
  t = target_log.T * db
  p = prediction_log.T * db
  vmax = float(t.max())
  extent = [0, target_log.shape[0] * stft.hop_seconds, 0,
            stft.sample_rate / 2000.0]
  fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
  panels = [(t, "target", vmax - 80, vmax, "magma"),
            (p, "model prediction", vmax - 80, vmax, "magma"),
            (np.abs(t - p), "|error| (dB)", 0, 30, "viridis")]
  for ax, (img, title, lo, hi, cmap) in zip(axes, panels):
    im = ax.imshow(img, origin="lower", aspect="auto", extent=extent,
                   vmin=lo, vmax=hi, cmap=cmap, interpolation="nearest")
    ax.set_title(f"{item_id}: {title}")
    ax.set_ylabel("kHz")
    fig.colorbar(im, ax=ax, label="dB")
  axes[-1].set_xlabel("seconds")
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, dpi=80, format="png")
  plt.close(fig)
  fileio.write_bytes(path, png.getvalue())


def format_table(summary: dict[str, dict[str, Any]]) -> str:
  """Markdown table of the signal metrics: a row per system (the originals'
  row, where present, holds only what is defined for them). The aspects'
  tables are `profile_text`'s."""
  names = metrics_lib.METRIC_NAMES
  arrows = {m: ("↓" if m in profile.LOWER_IS_BETTER else "↑") for m in names}
  lines = ["| system | items | " + " | ".join(f"{m} {arrows[m]}" for m in names)
           + " |", "|---|---:|" + "---:|" * len(names)]
  for system, s in summary.items():
    cells = []
    for m in names:
      v = profile.finite(s.get(m))
      cells.append("—" if m not in s else "n/a" if v is None else f"{v:.3f}")
    lines.append(f"| {system} | {s['num_items']} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines)


def profile_text(summary: dict[str, dict[str, Any]]) -> str:
  """The profile as printed by `evaluate` and `make demo`: the aspect tables
  (content, prosody, identity, naturalness) and the retention (with a
  `floor` system)."""
  retention = profile.retention(summary)
  text = profile.markdown_tables(
      {n: s for n, s in summary.items()
       if any(m in s for m in _aspect_metric_names())},
      aspects=[a for a in profile.ASPECTS if a != "signal"])
  out = [text] if text else []
  if retention:
    out.append("**retention** (0 = floor, 1 = oracle)\n\n"
               + profile.retention_table(retention))
  return "\n\n".join(out)


def _check_export_dir(flag: str, path: Optional[str], marker: str,
                      program: str) -> None:
  if path is not None and not fileio.exists(os.path.join(path, marker)):
    raise ValueError(f"{flag}={path}: no {marker} there; it takes the export "
                     f"folder of {program}")


def evaluate(model_dir: str, data_dir: str, split: str, out_dir: str,
             max_items: Optional[int] = None, num_figures: int = 3,
             num_audio: int = 3, systems: Optional[Sequence[str]] = None,
             command: str = "", progress: bool = True,
             speaker_judge: Optional[str] = None,
             content_judge: Optional[str] = None,
             word_judge: Optional[str] = None,
             floor: Optional[str] = None,
             aspects: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """Runs every system on the split's items; writes and returns metrics.

  Args:
    model_dir: the export evaluated (`model`).
    data_dir, split: the items.
    out_dir: where metrics.json, profile.json, report.md, report.html,
      figures/, spectrograms/ and audio/ go.
    max_items: at most this many items (sorted by id).
    num_figures: items with a target / prediction / error figure.
    num_audio: items whose audio (every system and the original) and
      spectrograms are written and shown on the page.
    systems: a subset of SYSTEMS (default: all that apply); `floor` is added
      when `floor` is given.
    command: shown in the reports.
    progress: tqdm bars.
    speaker_judge: an export of e2s_tf.train_embedder whose encoder scores
      identity (default: the dataset's embedder when it is such an encoder,
      else identity is not scored).
    content_judge: an export of e2s_tf.train_content_judge (phone error
      rates), or None.
    word_judge: "pocketsphinx" (English word error rates), or None.
    floor: an export of a decoder trained on the `energy` embedder (or any
      embedder computable from the audio): the `floor` system, and the
      retention table.
    aspects: a subset of scoring.ASPECT_NAMES (default: all; an aspect
      whose judge is missing is left out).

  Returns:
    {system: means, num_items, num_skipped, num_na, items} as metrics.json.
  """
  _check_export_dir("--speaker_judge", speaker_judge, SPEAKER_ENCODER_JSON,
                    "e2s_tf.train_embedder")
  _check_export_dir("--content_judge", content_judge, CONTENT_JUDGE_JSON,
                    "e2s_tf.train_content_judge")
  if word_judge is not None and word_judge not in scoring.WORD_JUDGES:
    raise ValueError(f"--word_judge={word_judge}: unknown; have "
                     f"{list(scoring.WORD_JUDGES)}")
  aspects = tuple(scoring.ASPECT_NAMES if aspects is None else aspects)
  unknown = sorted(set(aspects) - set(scoring.ASPECT_NAMES))
  if unknown:
    raise ValueError(f"--aspects: unknown {unknown}; have "
                     f"{list(scoring.ASPECT_NAMES)}")
  decoder = export_lib.LoadedDecoder(model_dir)
  info = records.read_dataset_info(data_dir)
  if int(info["embedder"]["dim"]) != decoder.dim:
    raise ValueError(f"{model_dir} expects embeddings of dimension "
                     f"{decoder.dim} but {data_dir} holds "
                     f"{info['embedder']['dim']}")
  data_stft = spectral.StftConfig.from_dict(info["stft"])
  if data_stft != decoder.stft:
    raise ValueError(f"{model_dir} was trained on the grid "
                     f"{decoder.stft.to_dict()}, {data_dir} has "
                     f"{data_stft.to_dict()}")
  floor_runner = _Floor(floor, data_stft) if floor else None
  skipped: list[str] = []
  items = _read_items(data_dir, split, max_items, skipped)
  # Every system goes through the export's own phase retrieval.
  phase = decoder.meta.get("griffin_lim", {})
  runner = _Systems(decoder, info,
                    int(phase.get("iterations",
                                  export_lib.GRIFFIN_LIM_ITERATIONS)),
                    str(phase.get("init",
                                  export_lib.LEGACY_GRIFFIN_LIM_INIT)))
  runner.floor_runner = floor_runner
  names = [s for s in (systems or runner.available())
           if s in runner.available()]
  if floor_runner is not None and FLOOR not in names:
    names.append(FLOOR)
  judges = scoring.Judges(content=content_judge, words=word_judge,
                          speaker=speaker_judge or speaker_encoder_dir(info))
  lock = fileio.FolderLock(out_dir, "evaluate").acquire()
  try:
    return _evaluate(decoder, runner, names, items, skipped, info, model_dir,
                     data_dir, split, out_dir, num_figures, num_audio, command,
                     progress, judges, aspects, floor)
  finally:
    lock.release()


class _Floor:
  """The `floor` system: a decoder export on an embedder computed from the
  item's audio (the `energy` embedder)."""

  def __init__(self, export_dir: str, stft: spectral.StftConfig):
    try:
      self.decoder = export_lib.LoadedDecoder(export_dir)
    except (OSError, ValueError) as e:
      raise ValueError(f"--floor={export_dir}: not a decoder export ({e})"
                       ) from None
    if self.decoder.stft != stft:
      raise ValueError(f"--floor={export_dir} was trained on the grid "
                       f"{self.decoder.stft.to_dict()}, the data has "
                       f"{stft.to_dict()}")
    description = self.decoder.meta["embedder"]
    try:
      self.embedder = embedders.from_description(description, stft)
    except (ValueError, embedders.EmbedderError, OSError) as e:
      raise ValueError(f"--floor={export_dir}: its embedder "
                       f"{description.get('spec', description.get('name'))!r} "
                       f"cannot be computed here ({e})") from None
    if str(description.get("spec", "")).split(":", 1)[0] == "npy":
      raise ValueError(f"--floor={export_dir}: its embedder reads "
                       "precomputed files; the floor needs one computed from "
                       "the audio (train it on --embedder=energy)")

  def __call__(self, item):
    emb = self.embedder.embed(item["audio"], {"id": item["id"]})
    lengths = np.array([emb.shape[0]], np.int32)
    spk = None
    if self.decoder.with_speaker:
      # The floor's own vocabulary (its dataset's), by name; 0 when absent.
      speakers = list(self.decoder.meta.get("speakers", []))
      spk = np.array([speakers.index(item["speaker"])
                      if item["speaker"] in speakers else 0], np.int32)
    audio, n = self.decoder.waveform(emb[None].astype(np.float32), lengths,
                                     spk)
    return audio[0, :n[0]]


def _evaluate(decoder, runner, names, items, skipped, info, model_dir,
              data_dir, split, out_dir, num_figures, num_audio, command,
              progress, judges, aspects, floor):
  figures_dir = os.path.join(out_dir, FIGURES_DIR)
  fileio.makedirs(figures_dir)
  # Warm-up: trace every system once so that rtf measures synthesis only.
  for name in names:
    getattr(runner, name)(items[0])
  rows = {name: [] for name in names}
  audios = {name: [] for name in names}
  media = []
  stft = decoder.stft
  sr = stft.sample_rate
  with tqdm.tqdm(total=len(items) * len(names), desc="evaluate",
                 unit="synthesis", disable=not progress) as bar:
    taken: set[str] = set()
    for k, item in enumerate(items):
      reference = item["audio"]
      seconds = reference.shape[0] / sr
      # One file name per item, the same in every folder (unique over items).
      name_of_item = _file_name(figures_dir, item["id"], taken)
      shown = {}
      for name in names + ([REFERENCE] if k < num_audio else []):
        if name == REFERENCE:
          audio = reference
        else:
          audio, elapsed = _timed(getattr(runner, name), item)
          row = {"id": item["id"], "seconds": round(seconds, 3),
                 **metrics_lib.all_metrics(reference, audio, stft,
                                           rtf=elapsed / seconds)}
          rows[name].append(row)
          audios[name].append(audio)
          bar.update(1)
        if k < num_audio:
          wav = fileio.output_path(os.path.join(out_dir, AUDIO_DIR, name),
                                   name_of_item, ".wav")
          audio_lib.save_wav(wav, audio, sr)
          png = fileio.output_path(os.path.join(out_dir, SPECTROGRAMS_DIR,
                                                name), name_of_item, ".png")
          aspect_figures.spectrogram_figure(audio, sr, png,
                                            f"{name}: {item['id']}", stft)
          shown[name] = {"audio": _relative(wav, out_dir),
                         "figure": _relative(png, out_dir)}
      if k < num_audio:
        media.append({"id": item["id"], "seconds": seconds,
                      "systems": {n: shown[n] for n in [REFERENCE] + names}})
      if k < num_figures:
        path = fileio.output_path(figures_dir, name_of_item, ".png")
        _figure(path, item["id"], item["log_stft"],
                runner.model_spectrogram(item), stft)
  aspect_rows, extra = scoring.score(
      items, audios, sr, judges, aspects,
      enrol_items=lambda: _read_items(data_dir, "train", None, []),
      progress=progress)
  result = {}
  reference_scored = any(aspect_rows[REFERENCE])
  if reference_scored:
    # The originals: their distance to themselves is 0 where that is a
    # distance; what the judges make of them is their aspect rows.
    result[REFERENCE] = {"rows": [
        {"id": it["id"], "seconds": round(it["audio"].shape[0] / sr, 3),
         "lsd_db": 0.0, "spectral_convergence": 0.0, "mcd_db": 0.0}
        for it in items]}
  for name in names:
    result[name] = {"rows": rows[name]}
  for name, entry in result.items():
    for row, extra_row in zip(entry["rows"], aspect_rows[name]):
      row.update(extra_row)
      # n/a is null in metrics.json (e.g. PESQ finding no utterance: NaN).
      for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
          row[key] = None
  summary_all = {}
  for name, entry in result.items():
    r = entry.pop("rows")
    metric_names = [m for m in _all_metric_names()
                    if any(m in row for row in r)]
    means = profile.summarize(r, metric_names)
    if "speaker_id_correct" in metric_names:
      means["speaker_id_accuracy"] = means.pop("speaker_id_correct")
      means["num_na"]["speaker_id_accuracy"] = means["num_na"].pop(
          "speaker_id_correct")
    if "speaker_eer" in extra:
      means["speaker_eer"] = extra["speaker_eer"].get(name)
      means["num_na"]["speaker_eer"] = int(means["speaker_eer"] is None)
    entry.update(means)
    entry["num_items"] = len(r)
    entry["num_skipped"] = len(skipped)
    entry["items"] = r
    summary_all[name] = {k: v for k, v in entry.items() if k != "items"}
  retention = profile.retention(summary_all)
  fileio.write_json(os.path.join(out_dir, METRICS_FILE), result)
  retention_png = None
  if retention:
    retention_png = os.path.join(out_dir, RETENTION_FIGURE)
    aspect_figures.retention_figure(retention, retention_png)
  judges_used = {"speaker_judge": judges.speaker,
                 "content_judge": judges.content,
                 "word_judge": judges.words, "floor": floor}
  fileio.write_json(os.path.join(out_dir, PROFILE_FILE), {
      "aspects": {a: list(m) for a, m in profile.ASPECTS.items()},
      "retention": retention, "judges": judges_used,
      "seconds": extra["seconds"], "num_items": len(items)})
  meta = decoder.meta
  def facts_with(path):
    """The run's facts, with `path` applied to every folder named."""
    return [
        ("model", f"{path(model_dir)} ({meta['model']['name']}, embedder "
                  f"{meta['embedder']['name']}, dim {decoder.dim})"),
        ("data", f"{path(data_dir)} split {split}, {len(items)} items, "
                 f"{sum(r['seconds'] for r in rows[names[0]]):.1f} s of "
                 "audio"),
        ("Griffin-Lim", f"{runner.iterations} iterations (fast, momentum "
                        f"0.99) from "
                        f"{'PGHI' if runner.init == 'pghi' else runner.init}"
                        " phase for every system" + (
                            " but the floor (its own export's)"
                            if FLOOR in names else "")),
    ] + [(k.replace("_", " "), path(str(v)) if k != "word_judge" else str(v))
         for k, v in judges_used.items() if v] + (
        [("skipped", f"{len(skipped)} items")] if skipped else [])

  facts = facts_with(lambda p: p) + ([("command", command)] if command else [])
  report = [
      f"# Evaluation: {meta['model']['name']} on {split}",
      ""] + [f"- {label}: `{value}`" if label in ("model", "data", "command")
             else f"- {label}: {value}" for label, value in facts] + [
      "- rtf: synthesis time of one item (batch 1, after warm-up) / its duration",
      ] + ([f"  - {m}" for m in skipped] if skipped else []) + [
      "",
      format_table(summary_all),
      "",
      "lsd_db: log-spectral distance; spectral_convergence: on linear "
      "magnitude; mcd_db: mel-cepstral distortion (c1-c24); stoi/estoi: "
      "(extended) short-time objective intelligibility; pesq_wb: wide-band "
      "PESQ (MOS-LQO). Figures: `figures/`, audio examples: `audio/`, "
      "their spectrograms: `spectrograms/`; the page to listen: "
      "`report.html`.",
      ""]
  aspects_text = profile_text(summary_all)
  if aspects_text:
    report += ["## What the reconstruction keeps", "", aspects_text, "",
               "n/a: the metric did not apply to any item; (k n/a): the mean "
               "leaves out k items where it did not (too short, no voiced "
               "frame in common, no text); —: not computed for the system. "
               "See docs/FAQ.md on reading the profile.", ""]
  with fileio.replacing(os.path.join(out_dir, REPORT_FILE)) as f:
    f.write("\n".join(report))
  # The page names folders relative to itself, so that it can be shared or
  # moved with its folder without telling where it was made; the command
  # line is in report.md.
  page_facts = facts_with(
      lambda p: fileio.relpath(fileio.abspath(p), fileio.abspath(out_dir)))
  html_report.write(out_dir, f"Evaluation: {meta['model']['name']} on {split}",
                    page_facts, summary_all, retention, media,
                    RETENTION_FIGURE if retention else None)
  return result


def _relative(path: str, out_dir: str) -> str:
  return fileio.relpath(path, fileio.realpath(out_dir)).replace(os.sep, "/")


def _aspect_metric_names() -> list[str]:
  """The metrics of every aspect but the signal's."""
  return [m for a, ms in profile.ASPECTS.items() if a != "signal" for m in ms]


def _all_metric_names() -> list[str]:
  """Every per-item metric, in the order of the aspects."""
  names = []
  for metrics in profile.ASPECTS.values():
    for m in metrics:
      names.append("speaker_id_correct" if m == "speaker_id_accuracy" else m)
  return [m for m in names if m != "speaker_eer"]
