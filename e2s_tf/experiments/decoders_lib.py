"""Library of the decoder experiment (see e2s_tf/experiments/decoders.py).

Every decoder trains on every embedder for one equal wall-clock budget, from
scratch, with its packaged config (`--config=<decoder>`); then the export is
scored on the validation items (Griffin-Lim with the export's phase
retrieval) by `evaluate_lib.evaluate`: LSD, MCD, STOI, PESQ, and speaker
cosine and identification by one speaker judge for all rows (the project's
speaker encoder trained on the train split; for the two speaker rows it is
also the inverted embedder).

The embedders: `logmel` and `mfcc` (closed-form, on the STFT grid), the
project's speaker encoder at 10 ms (`speaker`, 64-dim, on the STFT grid) and
the same encoder exported every 20 ms (`speaker20ms`: the means of frame
pairs, mapped onto the STFT frames by interpolation). The corpus is split by
utterance, so the judge identifies speakers it enrolled.

A GAN and its generator alone get the same budget: the GAN's reconstruction
warm-up lasts `warmup_share` of the steps its generator alone took in the
budget, then the adversarial updates (with feature matching, multi-
resolution spectrogram discriminators) fill the rest.

The ablation (one embedder, one decoder) trains the decoder at half and
double width, for double the time, and without its context (conformer:
no attention; multiscale: one block of short branches; cnn: kernels of one
frame), so that a reader sees how much size, time and context buy.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from e2s_tf import corpus
from e2s_tf import evaluate_lib
from e2s_tf import export_lib
from e2s_tf import fileio
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import train_lib
from e2s_tf.configs import testing as testing_config
from e2s_tf.experiments import common

EMBEDDERS = ("logmel", "mfcc", "speaker", "speaker20ms")
DECODERS = ("cnn", "multiscale", "gan", "conformer", "conformer_gan")
# A GAN and the decoder it trains adversarially.
GENERATOR_OF = {"gan": "multiscale", "conformer_gan": "conformer"}
ABLATIONS = ("half", "double", "double_time", "no_context")
# The speaker encoder's export hop per trained embedder (None: its own).
_ENCODER_HOPS = {"speaker": None, "speaker20ms": 320}
RESULTS_FILE = "decoders.json"
# Steps of the start whose training spectral convergence is reported (the
# blow-up the stable start is for shows there).
START_STEPS = 100

COLUMNS = (("embedder", "embedder", ""), ("decoder", "decoder", ""),
           ("steps", "steps", "d"), ("params_k", "params (k)", ".0f"),
           ("start_sc_max", f"max SC ≤ {START_STEPS} steps", ".2f"),
           ("lsd_db", "LSD dB ↓", ".2f"), ("mcd_db", "MCD dB ↓", ".2f"),
           ("stoi", "STOI ↑", ".3f"), ("pesq_wb", "PESQ ↑", ".2f"),
           ("speaker_id_accuracy", "spk ID ↑", ".2f"),
           ("speaker_cosine", "spk cos ↑", ".3f"))
ABLATION_COLUMNS = (("variant", "variant", ""),) + COLUMNS[2:]

# What the `no_context` variant takes away, per decoder.
_NO_CONTEXT = {
    "conformer": "no attention, only the convolution modules",
    "conformer_gan": "no attention, only the convolution modules",
    "multiscale": "one block of one 3-frame branch",
    "gan": "one block of one 3-frame branch",
    "cnn": "kernels of one frame: each output frame sees its input frame only",
}

# Scores by which the default decoder of an embedder is chosen: the mean
# rank over these (lower is better for the first two).
_RANKED = (("lsd_db", -1), ("mcd_db", -1), ("stoi", 1), ("pesq_wb", 1),
           ("speaker_id_accuracy", 1))

_STEP_LINE = re.compile(r"^step (\d+)/\d+ .*?spectral_convergence[ =:]+"
                        r"([-+0-9.eEnaif]+)")


# ----------------------------------------------------------------------------
# Data: one corpus, a speaker encoder, four datasets.


def _train_encoder(manifest: str, work_dir: str, quick: bool,
                   log: Callable[..., None]) -> dict[str, str]:
  """Trains the speaker encoder on `manifest` (train-split items) and
  exports it at each hop of `_ENCODER_HOPS`; returns {embedder: export}."""
  workdir = os.path.join(work_dir, "speaker_encoder")
  exports = {}
  for name, hop in _ENCODER_HOPS.items():
    export_dir = os.path.join(workdir, "export" if hop is None
                              else f"export_{hop}")
    exports[name] = export_dir
    if fileio.exists(os.path.join(export_dir,
                                  evaluate_lib.SPEAKER_ENCODER_JSON)):
      continue
    command = [sys.executable, "-m", "e2s_tf.train_embedder",
               f"--manifest={manifest}", f"--workdir={workdir}",
               f"--export_dir={export_dir}"]
    if quick:
      command.append("--config=speaker_encoder:testing")
    if hop is not None:
      command.append(f"--export_frame_step={hop}")
    log(f"speaker encoder ({name}): {' '.join(command[1:])}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    if run.returncode:
      raise RuntimeError(f"training the speaker encoder failed:\n"
                         f"{run.stderr[-3000:]}")
  return exports


def prepare_data(work_dir: str, embedders: Sequence[str], quick: bool,
                 log: Callable[..., None] = print
                 ) -> tuple[dict[str, str], Optional[str]]:
  """The corpus, the speaker encoder and one dataset per embedder.

  Returns:
    `({embedder: data_dir}, judge)`: the speaker encoder's 10 ms export that
    scores the speaker metrics of every row (None when no speaker embedder
    is asked for and so none is trained).
  """
  corpus_dir = os.path.join(work_dir, "corpus")
  speakers, utterances = (3, 6) if quick else (8, 40)
  manifest = corpus.make_corpus(corpus_dir, speakers=speakers,
                                utterances=utterances, progress=not quick)
  settings = dict(split_by="utterance", valid_fraction=0.1,
                  test_fraction=0.1, num_workers=1 if quick else None,
                  progress=not quick)
  if quick:
    settings.update(valid_fraction=0.25, test_fraction=0.0)
  settings = {k: v for k, v in settings.items() if v is not None}
  judge, exports = None, {}
  if any(e in _ENCODER_HOPS for e in embedders) or not quick:
    # The encoder hears the decoders' train split only (the logmel
    # dataset's split, the same for every embedder: it depends on the ids).
    logmel_dir = os.path.join(work_dir, "data", "logmel")
    preprocess_lib.run_preprocess(manifest, logmel_dir, "logmel", **settings)
    train_manifest = os.path.join(work_dir, "speaker_encoder_manifest.jsonl")
    _write_train_manifest(manifest, logmel_dir, train_manifest)
    exports = _train_encoder(train_manifest, work_dir, quick, log)
    judge = exports["speaker"]
  data_dirs = {}
  for name in embedders:
    spec = ("savedmodel:" + exports[name] if name in _ENCODER_HOPS else name)
    out = os.path.join(work_dir, "data", name)
    preprocess_lib.run_preprocess(manifest, out, spec, **settings)
    data_dirs[name] = out
    log(f"data {name}: {out}")
  return data_dirs, judge


def _write_train_manifest(manifest: str, data_dir: str, out: str) -> None:
  """The manifest's items that `data_dir` put in its train split."""
  from e2s_tf import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  train_ids = set()
  for ex in records.read_examples(records.split_files(data_dir, "train"),
                                  with_audio=False):
    train_ids.add(ex["id"].split("/part-")[0])
  items = [it for it in manifest_lib.read_manifest(manifest)
           if it["id"] in train_ids]
  manifest_lib.write_manifest(items, out)


# ----------------------------------------------------------------------------
# One run.


def decoder_config(decoder: str, minutes: float, quick: bool,
                   variant: str = "base"):
  """The packaged config of `decoder` for a run of `minutes` (the learning
  rate decays with the wall clock), with an ablation `variant` applied."""
  config = (testing_config.get_config(decoder) if quick else
            importlib.import_module(f"e2s_tf.configs.{decoder}").get_config())
  t = config.train
  t.max_minutes = minutes
  # The budget ends the run; the decay follows the clock (schedule.py).
  t.num_steps = 40 if quick else 1_000_000
  t.eval_every = t.checkpoint_every = 10 ** 9
  t.log_every = 5 if quick else 10
  t.summary_items = 0
  t.divergence_factor = 0.0  # a blow-up is measured here, not stopped
  m = config.model
  if variant == "half":
    m.channels = max(m.channels // 2, 2)
  elif variant == "double":
    m.channels *= 2
  elif variant == "double_time":
    t.max_minutes = 2 * minutes
  elif variant == "no_context":
    if "attention_heads" in m:
      m.attention_heads = 0
    elif "branch_kernel_sizes" in m:
      m.num_blocks = 1
      m.branch_kernel_sizes, m.branch_dilations = (3,), (1,)
    else:  # cnn: the same layers, each on one frame only
      m.kernel_size = 1
  elif variant != "base":
    raise ValueError(f"unknown variant {variant!r}; known: base, "
                     f"{', '.join(ABLATIONS)}")
  return config


def _start_sc(lines: Sequence[str]) -> float:
  """The largest training spectral convergence logged in the first
  `START_STEPS` steps (NaN when none was logged)."""
  values = []
  for line in lines:
    match = _STEP_LINE.match(line)
    if match and int(match.group(1)) <= START_STEPS:
      try:
        values.append(float(match.group(2)))
      except ValueError:
        continue
  return max(values) if values else float("nan")


def train_and_score(config, data_dir: str, workdir: str,
                    judge: Optional[str], max_items: Optional[int],
                    log: Callable[..., None] = print) -> dict[str, Any]:
  """Trains `config` from scratch on `data_dir`, exports it and scores the
  export on the validation split; returns the row's numbers."""
  fileio.rmtree(workdir, ignore_errors=True)
  lines: list[str] = []
  started = time.time()
  trained = train_lib.train(config, data_dir, os.path.join(workdir, "run"),
                            log=lines.append)
  export_dir = os.path.join(workdir, "export")
  export_lib.export(os.path.join(workdir, "run"), export_dir)
  result = evaluate_lib.evaluate(export_dir, data_dir, "valid",
                                 os.path.join(workdir, "eval"),
                                 max_items=max_items, num_figures=0,
                                 num_audio=0, systems=["model"],
                                 progress=False, speaker_judge=judge,
                                 aspects=("identity",))
  model = result["model"]
  reference = result.get(evaluate_lib.REFERENCE, {})
  network, _, _ = train_lib.restore_network(os.path.join(workdir, "run"))
  params = sum(int(np.prod(v.shape)) for v in network.trainable_variables)
  row = {"steps": int(trained["steps"]), "params_k": params / 1000.0,
         "train_seconds": float(trained["wall_seconds"]),
         "start_sc_max": _start_sc(lines),
         "eval_items": int(model["num_items"]),
         "wall_seconds": time.time() - started}
  for key in ("lsd_db", "mcd_db", "stoi", "pesq_wb", "speaker_cosine",
              "speaker_id_accuracy"):
    row[key] = common.nan_if_none(model.get(key))
  row["reference_speaker_id_accuracy"] = common.nan_if_none(
      reference.get("speaker_id_accuracy"))
  fileio.rmtree(os.path.join(workdir, "run", "checkpoints"),
                ignore_errors=True)
  log(f"   {row['steps']} steps in {row['train_seconds']:.0f} s, "
      f"scored {row['eval_items']} items")
  return row


# ----------------------------------------------------------------------------
# The whole experiment.


def _finite(v) -> bool:
  return isinstance(v, (int, float)) and np.isfinite(v)


def choose_defaults(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
  """Per embedder, the decoder of the best mean rank over `_RANKED`."""
  out = {}
  for embedder in dict.fromkeys(r["embedder"] for r in rows):
    mine = [r for r in rows if r["embedder"] == embedder]
    ranks = {r["decoder"]: [] for r in mine}
    for key, sign in _RANKED:
      scored = [r for r in mine if _finite(r.get(key))]
      ordered = sorted(scored, key=lambda r: -sign * r[key])
      for position, r in enumerate(ordered):
        ranks[r["decoder"]].append(position)
    out[embedder] = min(ranks, key=lambda d: (np.mean(ranks[d])
                                              if ranks[d] else np.inf))
  return out


def gan_comparison(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per embedder and GAN: GAN minus its generator alone (MCD, PESQ, STOI)
  and whether the GAN is better on all three."""
  by = {(r["embedder"], r["decoder"]): r for r in rows}
  out = []
  for (embedder, decoder), r in by.items():
    alone = by.get((embedder, GENERATOR_OF.get(decoder)))
    if decoder not in GENERATOR_OF or alone is None:
      continue
    d = {k: r[k] - alone[k] for k in ("mcd_db", "pesq_wb", "stoi", "lsd_db")}
    out.append({"embedder": embedder, "gan": decoder,
                "generator": GENERATOR_OF[decoder],
                **{f"delta_{k}": v for k, v in d.items()},
                "gan_better": bool(d["mcd_db"] < 0 and d["pesq_wb"] > 0 and
                                   d["stoi"] > 0)})
  return out


def run(work_dir: str, out: str, minutes: float, max_items: Optional[int],
        quick: bool, embedders: Sequence[str], decoders: Sequence[str],
        ablation_embedder: str, ablation_decoder: str,
        ablations: Sequence[str], warmup_share: float, command: str,
        log: Callable[..., None] = print) -> dict[str, Any]:
  """Runs the grid and the ablation; writes `out` (Markdown) and
  `<out without .md>.json`; returns the results."""
  for name in embedders:
    if name not in EMBEDDERS:
      raise ValueError(f"unknown embedder {name!r}; known: {EMBEDDERS}")
  for name in list(decoders) + ([ablation_decoder] if ablations else []):
    if name not in DECODERS:
      raise ValueError(f"unknown decoder {name!r}; known: {DECODERS}")
  if ablations and ablation_embedder not in embedders:
    raise ValueError(f"the ablation's embedder {ablation_embedder!r} is not "
                     f"among --embedders {list(embedders)}")
  # A GAN's warm-up is sized from its generator's run: that one goes first.
  order = sorted(decoders, key=lambda d: d in GENERATOR_OF)
  data_dirs, judge = prepare_data(work_dir, embedders, quick, log)
  rows, ablation_rows = [], []
  load = [os.getloadavg()]
  for embedder in embedders:
    for decoder in order:
      config = decoder_config(decoder, minutes, quick)
      generator = GENERATOR_OF.get(decoder)
      alone = next((r for r in rows if r["embedder"] == embedder and
                    r["decoder"] == generator), None)
      if generator is not None:
        steps = alone["steps"] if alone else config.train.num_steps
        config.model.adversarial_start_step = max(
            1, int(warmup_share * steps))
      log(f"== {embedder} x {decoder}")
      row = {"embedder": embedder, "decoder": decoder,
             **train_and_score(config, data_dirs[embedder],
                               os.path.join(work_dir, "runs", embedder,
                                            decoder), judge, max_items,
                               log)}
      if generator is not None:
        row["adversarial_start_step"] = int(
            config.model.adversarial_start_step)
      rows.append(row)
      load.append(os.getloadavg())
      common.print_row(COLUMNS, row)
  for variant in ablations:
    config = decoder_config(ablation_decoder, minutes, quick, variant)
    log(f"== ablation {ablation_embedder} x {ablation_decoder}: {variant}")
    row = {"embedder": ablation_embedder, "decoder": ablation_decoder,
           "variant": variant,
           **train_and_score(config, data_dirs[ablation_embedder],
                             os.path.join(work_dir, "runs", "ablation",
                                          variant), judge, max_items, log)}
    ablation_rows.append(row)
    load.append(os.getloadavg())
    common.print_row(ABLATION_COLUMNS, row)
  base_row = next((r for r in rows if r["embedder"] == ablation_embedder and
                   r["decoder"] == ablation_decoder), None)
  if base_row is not None and ablations:
    ablation_rows.insert(0, {**base_row, "variant": "base"})
  results = {
      "command": command, "minutes": minutes, "quick": quick,
      "max_items": max_items, "machine": common.machine(),
      "load_average_1min": [round(l[0], 2) for l in load],
      "judge": judge, "rows": rows, "ablation": ablation_rows,
      "gan": gan_comparison(rows), "defaults": choose_defaults(rows),
      "warmup_share": warmup_share, "date": time.strftime("%Y-%m-%d")}
  fileio.write_json(os.path.splitext(out)[0] + ".json", results)
  _write_report(out, results)
  return results


def _write_report(path: str, results: Mapping[str, Any]) -> None:
  minutes = results["minutes"]
  lines = [
      "# Decoder experiment: which decoder for which embedding",
      "",
      f"Every decoder trained from scratch on every embedder for "
      f"{minutes:g} minutes of wall clock (2 CPU cores, its packaged config, "
      "the learning rate decaying with the clock), exported, and scored on "
      f"the first {results['max_items']} validation items of the demo corpus "
      "(espeak-ng, 8 voices, split by utterance) after the export's phase "
      "retrieval. Speaker ID and cosine: one judge for every row, the "
      "project's speaker encoder trained on the train split (it is also the "
      "inverted embedder of the two speaker rows). Max SC: the largest "
      f"training spectral convergence logged in the first {START_STEPS} "
      "steps (the start-up blow-up the stable start prevents).",
      "",
      f"- command: `{results['command']}`",
      f"- machine: {results['machine']}; 1-minute load average during the "
      f"runs {min(results['load_average_1min']):.1f}–"
      f"{max(results['load_average_1min']):.1f}",
      f"- date: {results['date']}",
      "",
      common.markdown_table(COLUMNS, results["rows"]),
      "",
      "## Chosen default per embedder (best mean rank over LSD, MCD, STOI, "
      "PESQ, speaker ID)",
      "",
  ]
  for embedder, decoder in results["defaults"].items():
    lines.append(f"- `{embedder}`: `{decoder}`")
  lines += ["", "## GAN against its generator alone, same budget", "",
            f"The GAN's reconstruction warm-up: {results['warmup_share']:.0%}"
            " of the steps its generator alone took in the budget; then "
            "adversarial updates with feature matching. Deltas are GAN − "
            "generator (MCD ↓, PESQ ↑, STOI ↑).", ""]
  lines.append(common.markdown_table(
      (("embedder", "embedder", ""), ("gan", "GAN", ""),
       ("generator", "generator", ""), ("delta_mcd_db", "Δ MCD dB", "+.2f"),
       ("delta_pesq_wb", "Δ PESQ", "+.2f"), ("delta_stoi", "Δ STOI", "+.3f"),
       ("delta_lsd_db", "Δ LSD dB", "+.2f"),
       ("gan_better", "better on all three", "")), results["gan"]))
  if results["ablation"]:
    first = results["ablation"][0]
    lines += ["", f"## Ablation: `{first['decoder']}` on `{first['embedder']}`",
              "",
              "half / double: half / double the channels; double_time: twice "
              "the budget; no_context: the decoder without its context ("
              + _NO_CONTEXT.get(first["decoder"], "") + ").", "",
              common.markdown_table(ABLATION_COLUMNS, results["ablation"])]
  with fileio.replacing(path) as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))
