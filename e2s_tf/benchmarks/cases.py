"""The benchmarks: what each stage costs, against its target.

Eleven benchmarks (`BENCHMARKS`), each a function `(harness.Bench) ->
figures` whose figures (a JSON object) land under
`results["benchmarks"][name]` together with the machine's load average
around it (`bench_lib.run`), and whose one-line summary is printed:

  griffin_lim      the project's Griffin-Lim (`spectral.griffin_lim` in a
                   `tf.function`) against `librosa.griffinlim` on the same
                   frame grid, iterations, momentum and float32, on real
                   speech, per batch size. Target: >= 2x faster at batch 1.
  input_pipeline   frames/s that `data.make_dataset` delivers alone against
                   the frames/s a training step of the default model consumes,
                   and the share of the step time spent waiting for input in a
                   profiler trace of `train_lib.train`. Target: >= 10x.
  records          bytes on disk per audio second of the dataset's shards
                   (16-bit audio, the embedding as preprocess stored it, no
                   log-STFT), against the previous schema's float32 audio,
                   log-STFT and embedding of the same items, and frames/s of
                   parsing a record with its log-STFT in a sequential map
                   (no parallel calls; TensorFlow's op threads as set). Target:
                   <= 50 KB per audio second (default grid, 64-dim).
  filler           filler-frame (and discarded-frame) share of every batching
                   mode of `batching.MODES` over one train epoch.
  inference        real-time factor of the exported `waveform` endpoint
                   (decoder + Griffin-Lim), per batch size, and of the decoder
                   alone (`spectrogram`). Target: RTF <= 0.05 at batch 1.
  training         frames/s of a train step of every model, as a graph
                   (`tf.function`) and with XLA (`jit_compile=True`), with the
                   compile cost per batch shape, and which one is faster over
                   an epoch of bucketed batches.
  preprocess       audio seconds that `preprocess_lib.run_preprocess` (logmel)
                   prepares per wall second.
  memory           peak memory of preprocessing a 10-minute item (cut into
                   pieces at pauses, against in one piece) and of training on
                   it (cut into windows within the frame budget, against
                   short items).
  evaluation       wall time of `evaluate_lib.evaluate` with every system and
                   aspect, per aspect and per item: on a demo folder
                   (`evaluate_demo` option: its export, test split, judges
                   and floor) or else on the bench's dataset with an
                   untrained export and floor and no judges (prosody and
                   naturalness only). Target: the demo's 40 test items
                   within 180 s on 2 cores.
  phase            quality against time of Griffin-Lim's phase (e2s_tf/
                   benchmarks/phase.py): fast Griffin-Lim from zero phase and
                   from PGHI, and librosa's, at several iteration counts, on
                   the test split's oracle magnitudes (and a decoder's, with
                   the `phase_model` option), ms per item per batch size,
                   spectral convergence, PESQ and STOI. Target: at the time of
                   zero phase / 32 iterations, SC >= 15% lower and PESQ >=
                   +0.15 on oracle magnitudes, no frame class worse.
  scale            a corpus (`scale_manifest` option; skipped without it)
                   through preprocess on the local pool and on Beam's
                   DirectRunner (2 workers each) and one epoch of training:
                   wall times, audio seconds per second, bytes on disk, peak
                   memory (e2s_tf/benchmarks/scale.py; docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import warnings
from typing import Any, Callable, Mapping

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import batching
from e2s_tf import data as data_lib
from e2s_tf import export_lib
from e2s_tf import metrics
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import train_lib
from e2s_tf.benchmarks import harness
from e2s_tf.benchmarks import memory
from e2s_tf.benchmarks import phase
from e2s_tf.benchmarks import scale
from e2s_tf.preprocessing import pieces as preprocess_pieces

GRIFFIN_LIM_MOMENTUM = export_lib.GRIFFIN_LIM_MOMENTUM
# Targets of the issue (docs/performance.md).
TARGET_GRIFFIN_LIM_SPEEDUP = 2.0
TARGET_PIPELINE_HEADROOM = 10.0
TARGET_INFERENCE_RTF = 0.05
TARGET_EVALUATION_SECONDS = 180.0
TARGET_BYTES_PER_AUDIO_SECOND = 50_000.0
# The default (and only decoder) model of the pipeline and inference checks.
DEFAULT_MODEL = "multiscale"


def bench_griffin_lim(bench: harness.Bench) -> dict[str, Any]:
  """`spectral.griffin_lim` against `librosa.griffinlim`, per batch size."""
  with warnings.catch_warnings():
    # librosa 0.10 loads its submodules lazily, one of them with a deprecated
    # importlib API: load the one used here inside the filter.
    warnings.simplefilter("ignore", DeprecationWarning)
    import librosa  # pylint: disable=g-import-not-at-top
    griffinlim = librosa.griffinlim
  s, stft = bench.sizes, bench.stft
  speech = bench.speech(s.speech_seconds)
  magnitude = np.abs(spectral.stft(speech[None], stft).numpy())  # [1, T, F]
  frames = magnitude.shape[1]
  # librosa centres a short window in the FFT frame; the StftConfig window
  # starts the frame. Handing librosa the zero-padded window itself (and
  # win_length = n_fft) puts both on exactly the same grid.
  librosa_window = np.zeros(stft.fft_length, np.float32)
  librosa_window[:stft.frame_length] = spectral.numpy_window(stft)
  ours = tf.function(
      lambda m, n: spectral.griffin_lim(m, n, stft, s.griffin_lim_iterations,
                                        GRIFFIN_LIM_MOMENTUM)[0],
      input_signature=[tf.TensorSpec([None, None, stft.num_bins], tf.float32),
                       tf.TensorSpec([None], tf.int32)])

  def theirs(m):
    return griffinlim(
        np.swapaxes(m, -1, -2), n_iter=s.griffin_lim_iterations,
        hop_length=stft.frame_step, win_length=stft.fft_length,
        n_fft=stft.fft_length, window=librosa_window, center=False,
        dtype=np.float32, momentum=GRIFFIN_LIM_MOMENTUM, init=None)

  def convergence(audio):
    """Spectral convergence of the first item's audio against the speech."""
    return metrics.spectral_convergence(speech, np.asarray(audio)[0], stft)

  figures = {"speech_seconds": s.speech_seconds, "frames": frames,
             "iterations": s.griffin_lim_iterations,
             "momentum": GRIFFIN_LIM_MOMENTUM, "librosa": librosa.__version__,
             "batches": {}}
  for b in s.batch_sizes:
    batch = np.repeat(magnitude, b, axis=0)
    tensor = tf.constant(batch)
    lengths = tf.fill([b], frames)
    times = harness.time_interleaved(
        {"e2s": lambda: ours(tensor, lengths).numpy(),
         "librosa": lambda: theirs(batch)}, s.repeats)
    figures["batches"][str(b)] = {
        "e2s_s": times["e2s"]["best_s"], "librosa_s": times["librosa"]["best_s"],
        "e2s_median_s": times["e2s"]["median_s"],
        "librosa_median_s": times["librosa"]["median_s"],
        "speedup": times["librosa"]["best_s"] / times["e2s"]["best_s"],
        "e2s_spectral_convergence": convergence(ours(tensor, lengths)),
        "librosa_spectral_convergence": convergence(theirs(batch[:1])),
    }
  first = figures["batches"][str(s.batch_sizes[0])]
  figures["target"] = (f">= {TARGET_GRIFFIN_LIM_SPEEDUP:g}x faster than librosa "
                       f"at batch {s.batch_sizes[0]}")
  figures["target_met"] = first["speedup"] >= TARGET_GRIFFIN_LIM_SPEEDUP
  return figures


def _line_griffin_lim(f: Mapping[str, Any]) -> str:
  parts = [f"batch {b}: e2s {v['e2s_s']:.3f} s, librosa {v['librosa_s']:.3f} s"
           f" ({v['speedup']:.1f}x)" for b, v in f["batches"].items()]
  return (f"{f['speech_seconds']:g} s of speech, {f['iterations']} iterations; "
          + "; ".join(parts))


def bench_input_pipeline(bench: harness.Bench) -> dict[str, Any]:
  """make_dataset alone vs a train step of the default model, + a trace."""
  s = bench.sizes
  config = bench.config(DEFAULT_MODEL)
  frames = seconds = 0.0
  batches = 0
  for epoch in range(s.pipeline_epochs):
    start = time.perf_counter()
    for batch in harness.train_dataset(config, bench.data_dir, seed=epoch):
      frames += harness.valid_frames(batch)
      batches += 1
    seconds += time.perf_counter() - start
  pipeline_fps = frames / seconds

  steps = [harness.step_inputs(b) for b in harness.train_dataset(
      config, bench.data_dir, deterministic=True).take(s.step_batches)]
  step = harness.time_train_step(config, bench.info, steps,
                         config.train.jit_compile, s.step_passes)

  # The same default training run, profiled: does the step wait for input?
  workdir = os.path.join(bench.work_dir, "profile")
  shutil.rmtree(workdir, ignore_errors=True)
  profiled = ml_collections.ConfigDict(config.to_dict())
  t = profiled.train
  t.num_steps = s.profile_steps[1] + 1
  t.lr_warmup_steps = min(t.lr_warmup_steps, 1)
  t.log_every = t.eval_every = t.checkpoint_every = t.num_steps
  t.eval_batches, t.summary_items, t.griffin_lim_iterations = 1, 1, 1
  train_lib.train(profiled, bench.data_dir, workdir,
                  profile_steps=s.profile_steps, log=lambda *_: None)
  trace = harness.input_wait_from_trace(os.path.join(workdir, "train"))
  headroom = pipeline_fps / step["frames_per_sec"]
  return {
      "frames_per_batch": config.data.frames_per_batch,
      "mode": config.data.mode, "epochs": s.pipeline_epochs,
      "batches": batches, "frames": int(frames),
      "pipeline_frames_per_sec": pipeline_fps,
      "train_frames_per_sec": step["frames_per_sec"],
      "train_step_s": step["step_s"], "jit_compile": config.train.jit_compile,
      "headroom": headroom, "profile": trace,
      "target": f"pipeline >= {TARGET_PIPELINE_HEADROOM:g}x training",
      "target_met": headroom >= TARGET_PIPELINE_HEADROOM,
  }


def bench_records(bench: harness.Bench) -> dict[str, Any]:
  """Bytes on disk per audio second of the bench dataset's shards, against
  what the previous schema (version 3: float32 audio, log-STFT and
  embedding) stored for the same items, and the parse + log-STFT cost."""
  info = bench.info
  config = records.stft_config(info)
  shard_bytes = audio_seconds = frames = 0
  files = []
  for split, v in info["splits"].items():
    split_files = records.split_files(bench.data_dir, split, info)
    files += split_files
    shard_bytes += sum(tf.io.gfile.stat(f).length for f in split_files)
    audio_seconds += v["num_audio_seconds"]
    frames += v["num_frames"]
  dim = int(info["embedder"]["dim"])
  samples = audio_seconds * config.sample_rate
  embedding_frames = frames  # the default grid: logmel on the STFT frames
  previous = 4 * (samples + frames * config.num_bins + embedding_frames * dim)
  dtype = info.get("record_format", {}).get("embedding", "float32")
  # The parse of every record with its log-STFT, alone, one record at a time
  # (the input pipeline runs this map in parallel).
  ds = tf.data.TFRecordDataset(files).map(
      lambda r: records.parse_example(r, config)["length"])
  start = time.perf_counter()
  parsed = sum(int(n) for n in ds.as_numpy_iterator())
  parse_seconds = time.perf_counter() - start
  per_second = shard_bytes / audio_seconds
  return {
      "audio_seconds": audio_seconds, "shard_bytes": shard_bytes,
      "embedding_dim": dim, "embedding_dtype": dtype,
      "bytes_per_audio_second": per_second,
      "audio_bytes_per_audio_second": 2.0 * config.sample_rate,
      "embedding_bytes_per_audio_second": (
          embedding_frames * dim * (2 if dtype == "float16" else 4)
          / audio_seconds),
      "previous_schema_bytes_per_audio_second": previous / audio_seconds,
      "reduction": previous / shard_bytes,
      "parse_with_log_stft_frames_per_sec": parsed / parse_seconds,
      "target": f"<= {TARGET_BYTES_PER_AUDIO_SECOND / 1000:g} KB per audio s",
      "target_met": per_second <= TARGET_BYTES_PER_AUDIO_SECOND,
  }


def _line_records(f: Mapping[str, Any]) -> str:
  return (f"{f['bytes_per_audio_second'] / 1000:.1f} KB per audio s "
          f"({f['embedding_dim']}-dim {f['embedding_dtype']} embedding; "
          f"previous schema {f['previous_schema_bytes_per_audio_second'] / 1000:.1f}"
          f" KB, {f['reduction']:.1f}x more); parse + log-STFT "
          f"{f['parse_with_log_stft_frames_per_sec']:,.0f} frames/s in a "
          "sequential map")


def _line_input_pipeline(f: Mapping[str, Any]) -> str:
  p = f["profile"]
  return (f"pipeline {f['pipeline_frames_per_sec']:.0f} frames/s, train step "
          f"{f['train_frames_per_sec']:.0f} frames/s ({f['headroom']:.1f}x); "
          f"trace: {p['input_wait_ms']:.1f} ms input wait per "
          f"{p['step_ms']:.0f} ms step ({p['input_wait_share']:.2%})")


def bench_filler(bench: harness.Bench) -> dict[str, Any]:
  """filler_share of every batching mode over one train epoch."""
  config = bench.config(DEFAULT_MODEL)
  d = config.data
  modes = {}
  for mode in batching.MODES:
    share = data_lib.filler_share(
        bench.data_dir, "train", mode, frames_per_batch=d.frames_per_batch,
        batch_size=d.batch_size, crop_frames=d.crop_frames, deterministic=True)
    modes[mode] = {k: share[k] for k in (
        "filler_share", "discarded_share", "mean_batch_size", "num_batches",
        "delivered_frames", "real_frames")}
  return {"frames_per_batch": d.frames_per_batch, "batch_size": d.batch_size,
          "crop_frames": d.crop_frames, "modes": modes}


def _line_filler(f: Mapping[str, Any]) -> str:
  return ", ".join(f"{m} {v['filler_share']:.1%}"
                   for m, v in f["modes"].items())


def bench_inference(bench: harness.Bench) -> dict[str, Any]:
  """RTF of the exported waveform (and spectrogram) endpoints."""
  s = bench.sizes
  config = bench.config(DEFAULT_MODEL)
  keras.utils.set_random_seed(0)
  # Untrained weights cost the same time as trained ones.
  model = train_lib.build_model(config, bench.info, compile_model=False)
  export_dir = os.path.join(bench.work_dir, "export")
  export_lib.export_network(model.network, config, bench.info, export_dir,
                            griffin_lim_iterations=s.griffin_lim_iterations)
  loaded = tf.saved_model.load(export_dir)
  stft = bench.stft
  frames = stft.num_frames(int(round(s.speech_seconds * stft.sample_rate)))
  embedding = bench.embeddings(frames)
  audio_seconds = stft.num_samples(frames) / stft.sample_rate
  figures = {"speech_seconds": audio_seconds, "frames": frames,
             "griffin_lim_iterations": s.griffin_lim_iterations,
             "batches": {}}
  for b in s.batch_sizes:
    x = tf.constant(np.repeat(embedding[None], b, axis=0))
    n = tf.fill([b], frames)
    times = harness.time_interleaved(
        {"waveform": lambda: loaded.waveform(x, n)["audio"].numpy(),
         "spectrogram": lambda: loaded.spectrogram(x, n)["log_stft"].numpy()},
        s.repeats)
    total = b * audio_seconds
    figures["batches"][str(b)] = {
        "waveform_s": times["waveform"]["best_s"],
        "spectrogram_s": times["spectrogram"]["best_s"],
        "rtf": times["waveform"]["best_s"] / total,
        "decoder_rtf": times["spectrogram"]["best_s"] / total,
    }
  first = figures["batches"][str(s.batch_sizes[0])]
  figures["target"] = (f"RTF <= {TARGET_INFERENCE_RTF:g} at batch "
                       f"{s.batch_sizes[0]}")
  figures["target_met"] = first["rtf"] <= TARGET_INFERENCE_RTF
  return figures


def _line_inference(f: Mapping[str, Any]) -> str:
  return "; ".join(
      f"batch {b}: RTF {v['rtf']:.4f} (decoder alone {v['decoder_rtf']:.4f})"
      for b, v in f["batches"].items())


def bench_training(bench: harness.Bench) -> dict[str, Any]:
  """Train-step frames/s per model, graph vs XLA, and the faster over an epoch.

  With XLA every new batch shape compiles; bucketed batches are padded to
  their longest item, so an epoch brings many shapes. The epoch estimate is
  frames / (frames/s) plus, for XLA, one compile per distinct shape of one
  train epoch (the first pass's extra time over the graph's, which only
  traces, per shape).
  """
  s = bench.sizes
  figures = {"models": {}}
  for name in s.models:
    config = bench.config(name)
    if "adversarial_start_step" in config.model:
      # Time the adversarial step (the steps before it update the decoder
      # alone).
      config.model.adversarial_start_step = 0
    epoch = [(tuple(b["mask"].shape), harness.valid_frames(b))
             for b in harness.train_dataset(config, bench.data_dir)
             .as_numpy_iterator()]
    epoch_frames = sum(f for _, f in epoch)
    epoch_shapes = len({shape for shape, _ in epoch})
    steps = [harness.step_inputs(b) for b in harness.train_dataset(
        config, bench.data_dir, deterministic=True).take(s.train_batches)]
    row = {"epoch_frames": epoch_frames, "epoch_shapes": epoch_shapes,
           "default_jit_compile": bool(config.train.jit_compile)}
    row["graph"] = harness.time_train_step(config, bench.info, steps, False,
                                   s.step_passes)
    if name in s.xla_models:
      row["xla"] = harness.time_train_step(config, bench.info, steps, True, 1)
    for key in ("graph", "xla"):
      if key in row:
        row[key]["epoch_s"] = epoch_frames / row[key]["frames_per_sec"]
    if "xla" in row:
      # Both trace once; XLA adds a compile per batch shape.
      xla = row["xla"]
      extra = xla["compile_s"] - row["graph"]["compile_s"]
      xla["compile_s_per_shape"] = max(extra, 0.0) / xla["shapes"]
      xla["epoch_s"] += epoch_shapes * xla["compile_s_per_shape"]
      row["faster"] = "xla" if xla["epoch_s"] < row["graph"]["epoch_s"] else (
          "graph")
      row["default_is_faster"] = row["default_jit_compile"] == (
          row["faster"] == "xla")
    figures["models"][name] = row
  return figures


def _line_training(f: Mapping[str, Any]) -> str:
  parts = []
  for name, row in f["models"].items():
    cells = [f"{k} {row[k]['frames_per_sec']:.0f}" for k in ("graph", "xla")
             if k in row]
    if "xla" in row:
      cells.append(f"XLA compile {row['xla']['compile_s_per_shape']:.1f} s x "
                   f"{row['epoch_shapes']} shapes/epoch")
    parts.append(f"{name}: " + ", ".join(cells))
  return "frames/s " + "; ".join(parts)


def bench_preprocess(bench: harness.Bench) -> dict[str, Any]:
  """Audio seconds through logmel preprocessing per wall second."""
  out = os.path.join(bench.work_dir, "preprocess")
  shutil.rmtree(out, ignore_errors=True)
  manifest = bench.manifest
  start = time.perf_counter()
  info = bench.preprocess(out)
  seconds = time.perf_counter() - start
  shutil.rmtree(out, ignore_errors=True)
  splits = info["splits"].values()
  audio = sum(split["num_audio_seconds"] for split in splits)
  return {"manifest": manifest, "items": sum(s["num_examples"] for s in splits),
          "audio_seconds": audio, "wall_seconds": seconds,
          "workers": min(os.cpu_count() or 1, 8),
          "audio_seconds_per_sec": audio / seconds}


def _line_preprocess(f: Mapping[str, Any]) -> str:
  return (f"{f['audio_seconds']:.0f} s of audio ({f['items']} items) in "
          f"{f['wall_seconds']:.1f} s: {f['audio_seconds_per_sec']:.0f} audio "
          "s per s")


def bench_memory(bench: harness.Bench) -> dict[str, Any]:
  """Peak memory of preprocessing and training one long item.

  Preprocessing: a `long_item_seconds` item with the default
  `--max_item_seconds` (cut into pieces at pauses) against the same item in
  one piece (`--max_item_seconds=0`, what preprocessing did before).
  Training: the one-piece item's dataset (a single record of
  `long_item_seconds`, longer than the frame budget: cut into windows of at
  most `frames_per_batch` frames) against the corpus of short items, both
  `memory_train_steps` steps of the default model.
  """
  s = bench.sizes
  work = os.path.join(bench.work_dir, "memory")
  seconds = s.long_item_seconds
  default = memory.preprocess_memory(work, seconds)
  whole = memory.preprocess_memory(work, seconds, max_item_seconds=0)
  config = (DEFAULT_MODEL if s.config == "base"
            else f"testing:{DEFAULT_MODEL}")
  flags = [f"--config.train.num_steps={s.memory_train_steps}",
           "--config.train.eval_every=1000000",
           "--config.train.checkpoint_every=1000000",
           "--config.train.max_minutes=0"]
  budget = bench.config(DEFAULT_MODEL).data.frames_per_batch
  long_train = memory.train_memory(
      whole["out_dir"], os.path.join(work, "train-long"), config, flags)
  short_train = memory.train_memory(
      bench.data_dir, os.path.join(work, "train-short"), config, flags)
  return {
      "item_seconds": seconds,
      "max_item_seconds": preprocess_pieces.DEFAULT_MAX_ITEM_SECONDS,
      "preprocess_mib": default["peak_rss_mib"],
      "preprocess_whole_item_mib": whole["peak_rss_mib"],
      "train_config": config, "train_steps": s.memory_train_steps,
      "frames_per_batch": budget,
      "train_long_item_mib": long_train["peak_rss_mib"],
      "train_short_items_mib": short_train["peak_rss_mib"],
      "train_ratio": long_train["peak_rss_mib"] / short_train["peak_rss_mib"],
  }


def _untrained_export(bench: harness.Bench, data_dir: str, info, name: str
                      ) -> str:
  config = train_lib.resolve_config(bench.config(DEFAULT_MODEL), info)
  keras.utils.set_random_seed(0)
  model = train_lib.build_model(config, info, compile_model=False)
  export_dir = os.path.join(bench.work_dir, name)
  export_lib.export_network(model.network, config, info, export_dir)
  return export_dir


def bench_evaluation(bench: harness.Bench) -> dict[str, Any]:
  """The whole evaluation: every system and aspect (see the module doc)."""
  from e2s_tf import evaluate_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import preprocess_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  demo = bench.options.get("evaluate_demo")
  out = os.path.join(bench.work_dir, "evaluation")
  shutil.rmtree(out, ignore_errors=True)
  if demo:
    def there(*parts):
      path = os.path.join(demo, *parts)
      return path if os.path.exists(path) else None
    model = os.path.join(demo, "export")
    data_dir = os.path.join(demo, "tfrecords")
    judges = dict(
        speaker_judge=there("speaker_judge", "export", "speaker_encoder.json")
        and there("speaker_judge", "export"),
        content_judge=there("content_judge", "export", "content_judge.json")
        and there("content_judge", "export"),
        floor=there("floor", "export", "e2s_export.json")
        and there("floor", "export"))
    num_audio = 5
  else:
    data_dir = bench.data_dir
    model = _untrained_export(bench, data_dir, bench.info, "eval_model")
    energy = os.path.join(bench.work_dir, "energy_tfrecords")
    s = bench.sizes
    # A no-op when the folder holds these settings' dataset; rebuilt when it
    # is of an older schema or other sizes (the bench's own scratch).
    preprocess_lib.run_preprocess(
        bench.manifest, energy, "energy", split_by=s.split_by,
        valid_fraction=s.valid_fraction, test_fraction=s.test_fraction,
        overwrite=True, progress=False)
    judges = dict(floor=_untrained_export(
        bench, energy, records.read_dataset_info(energy), "eval_floor"))
    num_audio = 3
  start = time.perf_counter()
  result = evaluate_lib.evaluate(model, data_dir, "test", out,
                                 num_audio=num_audio, progress=False,
                                 **judges)
  seconds = time.perf_counter() - start
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out, evaluate_lib.PROFILE_FILE)) as f:
    profile = json.load(f)
  items = result["model"]["num_items"]
  audio = sum(r["seconds"] for r in result["model"]["items"])
  figures = {"demo": demo or None, "items": items, "audio_seconds": audio,
             "systems": list(result), "wall_seconds": seconds,
             "seconds_per_item": seconds / items,
             "aspect_seconds": profile["seconds"],
             "judges": {k: bool(v) for k, v in judges.items()},
             "target": f"{TARGET_EVALUATION_SECONDS:g} s for the demo's 40 "
                       "test items, every system and aspect"}
  # Only a demo's evaluation is the one the target speaks of.
  figures["target_met"] = (seconds <= TARGET_EVALUATION_SECONDS
                           if demo else None)
  return figures


def _line_evaluation(f: Mapping[str, Any]) -> str:
  aspects = ", ".join(f"{a} {v:.0f} s" for a, v in f["aspect_seconds"].items())
  return (f"{f['items']} items ({f['audio_seconds']:.0f} s), "
          f"{len(f['systems'])} systems: {f['wall_seconds']:.0f} s "
          f"({f['seconds_per_item']:.1f} s per item; {aspects})"
          + ("" if f["demo"] else "; untrained export and floor, no judges"))


def bench_phase(bench: harness.Bench) -> dict[str, Any]:
  """Griffin-Lim's phase: quality against time (`phase.bench_phase`)."""
  return phase.bench_phase(bench)


def _line_phase(f: Mapping[str, Any]) -> str:
  return phase.line(f)


def _line_memory(f: Mapping[str, Any]) -> str:
  return (f"{f['item_seconds']:g} s item: preprocess {f['preprocess_mib']:.0f}"
          f" MiB (in one piece {f['preprocess_whole_item_mib']:.0f} MiB); "
          f"train {f['train_long_item_mib']:.0f} MiB vs "
          f"{f['train_short_items_mib']:.0f} MiB on short items "
          f"({f['train_ratio']:.2f}x)")


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A benchmark: `run(bench) -> figures`, `line(figures) -> summary`."""
  name: str
  run: Callable[[harness.Bench], dict[str, Any]]
  line: Callable[[Mapping[str, Any]], str]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b for b in (
        Benchmark("griffin_lim", bench_griffin_lim, _line_griffin_lim),
        Benchmark("input_pipeline", bench_input_pipeline, _line_input_pipeline),
        Benchmark("records", bench_records, _line_records),
        Benchmark("filler", bench_filler, _line_filler),
        Benchmark("inference", bench_inference, _line_inference),
        Benchmark("training", bench_training, _line_training),
        Benchmark("preprocess", bench_preprocess, _line_preprocess),
        Benchmark("memory", bench_memory, _line_memory),
        Benchmark("evaluation", bench_evaluation, _line_evaluation),
        Benchmark("phase", bench_phase, _line_phase),
        Benchmark("scale", scale.bench_scale, scale._line_scale),
    )
}
