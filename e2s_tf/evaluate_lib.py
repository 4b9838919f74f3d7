"""Evaluates an exported decoder against the oracle and closed-form baselines.

Systems, on the same items of one split:
  - `model`: the export's `waveform` endpoint on the stored raw embeddings;
  - `oracle_griffin_lim`: the true magnitude through the same Griffin-Lim, the
    ceiling of any decoder that predicts magnitude only;
  - `analytic`: where the embedder has a closed-form inverse (logmel, mfcc):
    non-negative least squares back to a magnitude, then the same Griffin-Lim.
Every system's audio is compared with the stored reference audio (the samples
the frames cover) by the metrics of e2s_tf.metrics. `rtf` is the synthesis
time of one item (batch of one, after a warm-up) over its duration.

When the embedder is a speaker encoder exported by e2s_tf.train_embedder
(`savedmodel:PATH` with PATH/speaker_encoder.json), two speaker metrics are
added for every system: `speaker_cosine` (cosine between the encoder's
utterance embeddings of the original and of the reconstruction) and
`speaker_id_accuracy` (closed-set identification of the reconstruction
against per-speaker centroids enrolled from the train split's originals),
plus a `reference` row holding the identification accuracy of the originals.

Writes metrics.json (per system: the means, `num_items`, `num_skipped`,
per-item `items`), report.md (a table), figures/<id>.png (target /
prediction / error) and audio/<system>/<id>.wav with audio/reference/<id>.wav
for the first items. Every per-item path is built by `fileio.output_path`
under its own folder: one system's audio never lands on another's, and an
item whose stored id is not a valid id (`../x`, `/abs/x`: an old or foreign
dataset) is reported, counted in `num_skipped` and not evaluated; a repeated
id gets `-2`, `-3`, ... in its file names. The output folder is locked for
the run; a truncated or corrupted shard stops it with
records.CorruptShardError naming the file.
"""

from __future__ import annotations

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

SYSTEMS = ("model", "oracle_griffin_lim", "analytic")
SPEAKER_METRICS = ("speaker_cosine", "speaker_id_accuracy")
SPEAKER_ENCODER_JSON = "speaker_encoder.json"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
AUDIO_DIR = "audio"
FIGURES_DIR = "figures"
REFERENCE = "reference"


def _read_items(data_dir: str, split: str, max_items: Optional[int],
                skipped: Optional[list[str]] = None):
  """The split's items sorted by id; ones with an invalid id go to `skipped`.

  Raises:
    records.CorruptShardError: a shard cannot be read; names the file.
  """
  files = records.split_files(data_dir, split)
  items, invalid = [], 0
  for item in records.read_examples(files, with_audio=True):
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
  return path if os.path.exists(os.path.join(path, SPEAKER_ENCODER_JSON)) \
      else None


def speaker_metrics(encoder_dir: str, data_dir: str, items, audios):
  """Per-system speaker metrics (see the module docstring).

  Args:
    encoder_dir: the speaker encoder export.
    data_dir: dataset whose train split enrols the speakers.
    items: the evaluated items (with `audio` and `speaker`).
    audios: {system: [waveform per item]}.

  Returns:
    {system: {"speaker_cosine": [per item], "speaker_id_correct": [per item]}}
    including "reference" (the originals).
  """
  from e2s_tf.speaker import export as speaker_export  # pylint: disable=g-import-not-at-top
  from e2s_tf.speaker import identification  # pylint: disable=g-import-not-at-top
  encoder = speaker_export.load_encoder(encoder_dir)
  enrol = _read_items(data_dir, "train", None, [])
  enrolment = identification.enroll(
      encoder.utterance_embeddings([it["audio"] for it in enrol]),
      [it["speaker"] for it in enrol])
  labels = [it["speaker"] for it in items]
  reference = encoder.utterance_embeddings([it["audio"] for it in items])
  out = {}
  for system, waves in [("reference", [it["audio"] for it in items])] + list(
      audios.items()):
    emb = (reference if system == "reference" else
           encoder.utterance_embeddings(waves))
    predicted = identification.identify(emb, enrolment)
    out[system] = {
        "speaker_cosine": [float(c) for c in
                           identification.cosine(reference, emb)],
        "speaker_id_correct": [float(p == l) for p, l in zip(predicted,
                                                             labels)]}
  return out


def _file_name(folder: str, item_id: str, taken: set[str]) -> str:
  """The item's file name (an id) in every output folder, unique per run."""
  path = fileio.unique_output_path(folder, item_id, "", taken)
  return os.path.relpath(path, os.path.realpath(folder)).replace(os.sep, "/")


def _timed(fn: Callable, item) -> tuple[np.ndarray, float]:
  t0 = time.perf_counter()
  out = fn(item)
  return out, time.perf_counter() - t0


def _mean(values):
  values = [v for v in values if v is not None and not math.isnan(v)]
  return float(np.mean(values)) if values else float("nan")


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
  fig.savefig(path, dpi=80)
  plt.close(fig)


def format_table(summary: dict[str, dict[str, Any]]) -> str:
  """Markdown table: a row per system, a column per metric."""
  names = metrics_lib.METRIC_NAMES
  if any("speaker_cosine" in s for s in summary.values()):
    names = names + SPEAKER_METRICS
  arrows = {m: ("↓" if m in metrics_lib.LOWER_IS_BETTER else "↑")
            for m in names}
  lines = ["| system | items | " + " | ".join(f"{m} {arrows[m]}" for m in names)
           + " |", "|---|---:|" + "---:|" * len(names)]
  for system, s in summary.items():
    lines.append(f"| {system} | {s['num_items']} | " + " | ".join(
        f"{s[m]:.3f}" if not math.isnan(s.get(m, float("nan"))) else "n/a"
        for m in names) + " |")
  return "\n".join(lines)


def evaluate(model_dir: str, data_dir: str, split: str, out_dir: str,
             max_items: Optional[int] = None, num_figures: int = 3,
             num_audio: int = 3, systems: Optional[Sequence[str]] = None,
             command: str = "", progress: bool = True,
             speaker_judge: Optional[str] = None) -> dict[str, Any]:
  """Runs every system on the split's items; writes and returns metrics.

  `speaker_judge`: an export of e2s_tf.train_embedder whose encoder scores
  the speaker metrics (default: the dataset's embedder when it is such an
  encoder, else no speaker metrics)."""
  if speaker_judge is not None and not os.path.exists(
      os.path.join(speaker_judge, SPEAKER_ENCODER_JSON)):
    raise ValueError(f"--speaker_judge={speaker_judge}: no "
                     f"{SPEAKER_ENCODER_JSON} there; it takes the export "
                     "folder of e2s_tf.train_embedder")
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
  skipped: list[str] = []
  items = _read_items(data_dir, split, max_items, skipped)
  # Every system goes through the export's own phase retrieval.
  phase = decoder.meta.get("griffin_lim", {})
  runner = _Systems(decoder, info,
                    int(phase.get("iterations",
                                  export_lib.GRIFFIN_LIM_ITERATIONS)),
                    str(phase.get("init",
                                  export_lib.LEGACY_GRIFFIN_LIM_INIT)))
  names = [s for s in (systems or runner.available())
           if s in runner.available()]
  lock = fileio.FolderLock(out_dir, "evaluate").acquire()
  try:
    return _evaluate(decoder, runner, names, items, skipped, info, model_dir,
                     data_dir, split, out_dir, num_figures, num_audio, command,
                     progress, speaker_judge)
  finally:
    lock.release()


def _evaluate(decoder, runner, names, items, skipped, info, model_dir,
              data_dir, split, out_dir, num_figures, num_audio, command,
              progress, speaker_judge=None):
  figures_dir = os.path.join(out_dir, FIGURES_DIR)
  os.makedirs(figures_dir, exist_ok=True)
  # Warm-up: trace every system once so that rtf measures synthesis only.
  for name in names:
    getattr(runner, name)(items[0])
  rows = {name: [] for name in names}
  encoder_dir = speaker_judge or speaker_encoder_dir(info)
  audios = {name: [] for name in names}
  with tqdm.tqdm(total=len(items) * len(names), desc="evaluate",
                 unit="synthesis", disable=not progress) as bar:
    stft = decoder.stft
    taken: set[str] = set()
    for k, item in enumerate(items):
      reference = item["audio"]
      seconds = reference.shape[0] / stft.sample_rate
      # One file name per item, the same in every folder (unique over items).
      name_of_item = _file_name(figures_dir, item["id"], taken)
      for name in names:
        audio, elapsed = _timed(getattr(runner, name), item)
        row = {"id": item["id"], "seconds": round(seconds, 3),
               **metrics_lib.all_metrics(reference, audio, stft,
                                         rtf=elapsed / seconds)}
        rows[name].append(row)
        if encoder_dir:
          audios[name].append(audio)
        if k < num_audio:
          path = fileio.output_path(os.path.join(out_dir, AUDIO_DIR, name),
                                    name_of_item, ".wav")
          audio_lib.save_wav(path, audio, stft.sample_rate)
        bar.update(1)
      if k < num_audio:
        path = fileio.output_path(os.path.join(out_dir, AUDIO_DIR, REFERENCE),
                                  name_of_item, ".wav")
        audio_lib.save_wav(path, reference, stft.sample_rate)
      if k < num_figures:
        path = fileio.output_path(figures_dir, name_of_item, ".png")
        os.makedirs(os.path.dirname(path), exist_ok=True)  # ids with '/'
        _figure(path, item["id"], item["log_stft"],
                runner.model_spectrogram(item), stft)
  result = {}
  for name, r in rows.items():
    result[name] = {m: _mean([row[m] for row in r])
                    for m in metrics_lib.METRIC_NAMES}
    result[name]["num_items"] = len(r)
    result[name]["num_skipped"] = len(skipped)
    result[name]["items"] = r
  if encoder_dir:
    per_system = speaker_metrics(encoder_dir, data_dir, items, audios)
    for name, values in per_system.items():
      if name not in result:  # the originals
        result[name] = {m: (0.0 if m in ("lsd_db", "spectral_convergence",
                                         "mcd_db") else float("nan"))
                        for m in metrics_lib.METRIC_NAMES}
        result[name]["num_items"] = len(items)
        result[name]["num_skipped"] = len(skipped)
        result[name]["items"] = [{"id": it["id"]} for it in items]
      for row, cos, ok in zip(result[name]["items"], values["speaker_cosine"],
                              values["speaker_id_correct"]):
        row["speaker_cosine"], row["speaker_id_correct"] = cos, ok
      result[name]["speaker_cosine"] = _mean(values["speaker_cosine"])
      result[name]["speaker_id_accuracy"] = _mean(values["speaker_id_correct"])
  fileio.write_json(os.path.join(out_dir, METRICS_FILE), result)
  summary = {n: {k: v for k, v in s.items() if k != "items"}
             for n, s in result.items()}
  meta = decoder.meta
  report = [
      f"# Evaluation: {meta['model']['name']} on {split}",
      "",
      f"- model: `{model_dir}` ({meta['model']['name']}, embedder "
      f"`{meta['embedder']['name']}`, dim {decoder.dim})",
      f"- data: `{data_dir}` split `{split}`, {len(items)} items, "
      f"{sum(r['seconds'] for r in rows[names[0]]):.1f} s of audio",
      f"- Griffin-Lim: {runner.iterations} iterations (fast, momentum 0.99) "
      f"from {'PGHI' if runner.init == 'pghi' else runner.init} phase for "
      "every system",
      "- rtf: synthesis time of one item (batch 1, after warm-up) / its duration",
      ] + ([f"- command: `{command}`"] if command else []) + (
          [f"- skipped: {len(skipped)} items"] + [f"  - {m}" for m in skipped]
          if skipped else []) + [
      "",
      format_table(summary),
      "",
      "lsd_db: log-spectral distance; spectral_convergence: on linear "
      "magnitude; mcd_db: mel-cepstral distortion (c1-c24); stoi/estoi: "
      "(extended) short-time objective intelligibility; pesq_wb: wide-band "
      "PESQ (MOS-LQO). Figures: `figures/`, audio examples: `audio/`.",
      ""]
  with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
    f.write("\n".join(report))
  return result
