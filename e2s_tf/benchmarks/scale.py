r"""A measured scale run: a corpus through preprocessing and one epoch of
training, each stage a program of its own.

    from e2s_tf.benchmarks import scale
    figures = scale.scale_run("/tmp/scale/corpus/manifest.jsonl",
                              "/tmp/scale/run")

or, as the `scale` benchmark of the suite (the corpus is required; without
it the suite records the benchmark as skipped):

    python -m e2s_tf.bench --only=scale \
        --scale_manifest=/tmp/scale/corpus/manifest.jsonl \
        --work_dir=/tmp/scale/bench --out=/tmp/scale/bench.json

The stages (`STAGES`), in order, each started by
`memory.run_measuring_memory` (its peak RSS from `wait4`):

  local  python -m e2s_tf.preprocess --manifest=M --out_dir=W/local
             --embedder=E --num_workers=N --overwrite   (the process pool)
  beam   the same into W/beam with --runner=DirectRunner: N worker
             processes (`--direct_running_mode=multi_processing`, set by
             `beam_preprocess.make_pipeline_options`)
  train  python -m e2s_tf.train --config=C --data_dir=W/local
             --workdir=W/train --config.train.num_steps=<the steps of
             `epochs` epochs> --config.train.eval_every=<the same>
             --config.train.checkpoint_every=<the same>

The steps of an epoch are counted here, before training, by iterating the
train pipeline itself (`train_lib.make_train_data` of the resolved config,
epoch by epoch, the seeds training uses). `eval_every` and
`checkpoint_every` are set to the end of the run: the run validates once
(on the whole valid split, as `eval_batches=0` of the base config does) and
writes one checkpoint, both at the end, instead of every 500 steps, so that
the training figures are of training; the final validation's time is read
from the TensorBoard events and reported on its own.

Memory. `wait4`'s `ru_maxrss` is the largest peak of ONE process among the
program and the descendants it waited for: for a process pool (and the
Beam workers) it is the largest worker or the parent, not their sum. So a
thread here also samples the launcher's process tree every
`SAMPLE_INTERVAL_S` from /proc: the peak sum of RSS (which counts shared
pages, e.g. TensorFlow's libraries, once per process: too high) and of PSS
(shared pages divided among the processes mapping them machine-wide: too
low when other TensorFlow programs run), the processes seen, their roles
(`program`, `pool_worker`, `beam_worker`, ...), peak RSS and CPU seconds.
A sample is a snapshot: a peak shorter than the interval can be missed.

Every figure is measured on this machine; `projections` turns them into the
projected figures of docs/scaling.md (LibriSpeech 960 h on Dataflow, one
epoch on N GPUs), each labelled as such.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import math
import os
import platform
import shutil
import sys
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from e2s_tf import fileio
from e2s_tf.benchmarks import harness
from e2s_tf.benchmarks import memory

STAGES = ("local", "beam", "train")
# The decoder of the run (the suite's default model), at the base sizes.
DEFAULT_CONFIG = "multiscale"
# The config of the suite's --quick sizes (harness.Sizes.config "testing").
QUICK_CONFIG = "testing:multiscale"
DEFAULT_WORKERS = 2
SAMPLE_INTERVAL_S = 0.5
# Seconds a stage may run before it is killed.
DEFAULT_TIMEOUT_S = 4 * 3600.0
LIBRISPEECH_HOURS = 960.0
_MIB = 1024.0 * 1024.0
# Where each stage writes, under work_dir.
_OUT = {"local": "local", "beam": "beam", "train": "train"}
SKIPPED = ("no scale_manifest option: run it with `python -m e2s_tf.bench "
           "--only=scale --scale_manifest=MANIFEST`")


# ----------------------------------------------------------------------------
# The machine and the files.


def machine() -> dict[str, Any]:
  """CPU model, cores (all and usable), memory, cgroup CPU limit, versions."""
  cpu = harness.cpu_model()
  figures = {"cpu": cpu, "cpu_count": os.cpu_count(),
             "usable_cores": len(os.sched_getaffinity(0)),
             "platform": platform.platform(),
             "python": sys.version.split()[0]}
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal:"):
          figures["memory_gib"] = int(line.split()[1]) / 1024.0 ** 2
  except OSError:
    pass
  try:
    with open("/sys/fs/cgroup/cpu.max") as f:
      figures["cgroup_cpu_max"] = f.read().strip()
  except OSError:
    pass
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  for package in ("tensorflow", "keras", "apache-beam"):
    try:
      figures[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      figures[package] = None
  return figures


def folder_bytes(folder: str) -> dict[str, int]:
  """`bytes` (sum of the file sizes) and `allocated_bytes` (their blocks) of
  every file under `folder`, and `files`."""
  size = blocks = count = 0
  for root, _, names in os.walk(folder):
    for name in names:
      st = os.lstat(os.path.join(root, name))
      size += st.st_size
      blocks += st.st_blocks * 512
      count += 1
  return {"bytes": size, "allocated_bytes": blocks, "files": count}


def corpus_figures(manifest: str) -> dict[str, Any]:
  """Items, audio files, their bytes and audio seconds (headers only)."""
  import soundfile  # pylint: disable=g-import-not-at-top
  from e2s_tf import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  items = manifest_lib.read_manifest(manifest)
  files = sorted({item["audio"] for item in items})
  durations = {}
  for path in files:
    info = soundfile.info(path)
    durations[path] = info.frames / info.samplerate
  seconds = 0.0
  for item in items:
    whole = durations[item["audio"]]
    start = item.get("start") or 0.0
    end = whole if item.get("end") is None else min(item["end"], whole)
    seconds += max(end - start, 0.0)
  return {"manifest": os.path.abspath(manifest), "items": len(items),
          "audio_files": len(files),
          "audio_bytes": sum(os.path.getsize(p) for p in files),
          "audio_seconds": seconds, "audio_hours": seconds / 3600.0}


def _rejected(rejected: Any) -> Optional[int]:
  """The rejected items' count of a dataset_info.json."""
  if isinstance(rejected, Mapping):
    return rejected.get("count")
  return len(rejected) if isinstance(rejected, (list, tuple)) else None


def dataset_figures(data_dir: str) -> dict[str, Any]:
  """What a preprocessed folder holds: per split its examples, frames, audio
  seconds (dataset_info.json) and shard bytes (the files), and the totals."""
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  info = records.read_dataset_info(data_dir)
  splits, shard_bytes = {}, 0
  for name, split in info["splits"].items():
    files = records.split_files(data_dir, name, info)
    size = sum(os.path.getsize(f) for f in files)
    shard_bytes += size
    splits[name] = {"examples": split["num_examples"],
                    "frames": split["num_frames"],
                    "audio_seconds": split["num_audio_seconds"],
                    "shards": len(files), "shard_bytes": size}
  audio = sum(s["audio_seconds"] for s in splits.values())
  folder = folder_bytes(data_dir)
  return {"splits": splits,
          "examples": sum(s["examples"] for s in splits.values()),
          "frames": sum(s["frames"] for s in splits.values()),
          "audio_seconds": audio, "shard_bytes": shard_bytes,
          "folder_bytes": folder["bytes"],
          "folder_allocated_bytes": folder["allocated_bytes"],
          "bytes_per_audio_second": shard_bytes / audio if audio else None,
          "rejected": _rejected(info.get("rejected")),
          "fingerprint": info.get("fingerprint")}


# ----------------------------------------------------------------------------
# The process tree of a run, sampled from /proc.


def _read(path: str, mode: str = "r"):
  try:
    with open(path, mode) as f:
      return f.read()
  except OSError:  # the process has gone
    return None


def _role(cmdline: str, is_program: bool) -> str:
  if is_program:
    return "program"
  if cmdline.startswith("/bin/sh"):
    return "shell"
  if "sdk_worker_main" in cmdline:
    return "beam_worker"
  if "resource_tracker" in cmdline:
    return "resource_tracker"
  if "spawn_main" in cmdline or "forkserver" in cmdline:
    return "pool_worker"
  return "other"


class TreeSampler(threading.Thread):
  """Samples the process tree of a `memory.run_measuring_memory` launcher.

  The launcher is the child of this process whose command line holds
  `marker` (the run's log path); every `interval` seconds the thread sums
  the RSS and PSS of the launcher's descendants (the program and what it
  started, not the launcher itself) and keeps the peaks.
  """

  def __init__(self, marker: str, interval: float = SAMPLE_INTERVAL_S):
    super().__init__(daemon=True)
    self.marker, self.interval = marker, interval
    self.launcher: Optional[int] = None
    self.samples = 0
    self.peak_rss_sum = self.peak_pss_sum = 0
    self.peak_processes = 0
    self.processes: dict[int, dict[str, Any]] = {}
    self._stop_event = threading.Event()
    self._page = os.sysconf("SC_PAGE_SIZE")
    self._tick = os.sysconf("SC_CLK_TCK")

  def stop(self) -> dict[str, Any]:
    self._stop_event.set()
    self.join()
    return self.figures()

  def run(self):
    while True:
      self._sample()
      # Quick polls until the launcher is found, then every `interval`.
      if self._stop_event.wait(self.interval if self.launcher else 0.05):
        return

  def _table(self) -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, rss bytes, cpu seconds) of every process."""
    table = {}
    for name in os.listdir("/proc"):
      if not name.isdigit():
        continue
      stat = _read(f"/proc/{name}/stat")
      if not stat:
        continue
      fields = stat[stat.rfind(")") + 2:].split()
      table[int(name)] = (int(fields[1]), int(fields[21]) * self._page,
                          (int(fields[11]) + int(fields[12])) / self._tick)
    return table

  def _sample(self):
    table = self._table()
    if self.launcher is None:
      me = os.getpid()
      for pid, (ppid, _, _) in table.items():
        cmdline = _read(f"/proc/{pid}/cmdline", "rb")
        if ppid == me and cmdline and self.marker.encode() in cmdline:
          self.launcher = pid
          break
      else:
        return
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
      children.setdefault(ppid, []).append(pid)
    tree, todo = [], list(children.get(self.launcher, ()))
    while todo:
      pid = todo.pop()
      tree.append(pid)
      todo += children.get(pid, ())
    if not tree:
      return
    rss_sum = pss_sum = 0
    for pid in tree:
      _, rss, cpu = table[pid]
      pss = 0
      rollup = _read(f"/proc/{pid}/smaps_rollup")
      for line in (rollup or "").splitlines():
        if line.startswith("Pss:"):
          pss = int(line.split()[1]) * 1024
          break
      rss_sum += rss
      pss_sum += pss
      process = self.processes.get(pid)
      if process is None:
        cmdline = (_read(f"/proc/{pid}/cmdline", "rb") or b"").replace(
            b"\0", b" ").decode(errors="replace").strip()
        process = self.processes[pid] = {
            "pid": pid, "role": _role(cmdline, table[pid][0] == self.launcher),
            "command": cmdline[:160], "peak_rss_mib": 0.0, "cpu_seconds": 0.0}
      process["peak_rss_mib"] = max(process["peak_rss_mib"], rss / _MIB)
      process["cpu_seconds"] = cpu
    self.samples += 1
    self.peak_rss_sum = max(self.peak_rss_sum, rss_sum)
    self.peak_pss_sum = max(self.peak_pss_sum, pss_sum)
    self.peak_processes = max(self.peak_processes, len(tree))

  def figures(self) -> dict[str, Any]:
    roles: dict[str, dict[str, Any]] = {}
    for p in self.processes.values():
      role = roles.setdefault(p["role"], {"count": 0, "cpu_seconds": [],
                                          "peak_rss_mib": []})
      role["count"] += 1
      role["cpu_seconds"].append(round(p["cpu_seconds"], 2))
      role["peak_rss_mib"].append(round(p["peak_rss_mib"], 1))
    return {"interval_s": self.interval, "samples": self.samples,
            "peak_rss_sum_mib": self.peak_rss_sum / _MIB,
            "peak_pss_sum_mib": self.peak_pss_sum / _MIB,
            "peak_processes": self.peak_processes,
            "cpu_seconds": sum(p["cpu_seconds"]
                               for p in self.processes.values()),
            "roles": roles}


def measure(command: Sequence[str], log_path: str,
            timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
  """`memory.run_measuring_memory(command)` with the process tree sampled.

  Returns:
    `wall_seconds`, `peak_rss_mib` (wait4: the largest single process),
    `tree` (`TreeSampler.figures`), `loadavg_before`/`loadavg_after`,
    `command` and `log`.

  Raises:
    RuntimeError: the program failed (its last lines in the message).
  """
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  load_before = os.getloadavg()
  sampler = TreeSampler(os.path.abspath(log_path))
  sampler.start()
  try:
    run = memory.run_measuring_memory(command, os.path.abspath(log_path),
                                      timeout=timeout)
  finally:
    tree = sampler.stop()
  if run["returncode"] != 0:
    raise RuntimeError(f"{' '.join(command)} failed ({run['returncode']}; "
                       f"log {log_path}): " + " | ".join(run["output_tail"]))
  return {"command": " ".join(command), "log": log_path,
          "wall_seconds": run["seconds"], "peak_rss_mib": run["peak_rss_mib"],
          "tree": tree, "loadavg_before": list(load_before),
          "loadavg_after": list(os.getloadavg())}


# ----------------------------------------------------------------------------
# The stages.


def _preprocess(manifest: str, out_dir: str, embedder: str, workers: int,
                extra: Sequence[str], timeout: float) -> dict[str, Any]:
  command = [sys.executable, "-m", "e2s_tf.preprocess",
             f"--manifest={manifest}", f"--out_dir={out_dir}",
             f"--embedder={embedder}", f"--num_workers={workers}",
             "--overwrite", *extra]
  figures = measure(command, out_dir + ".log", timeout)
  data = dataset_figures(out_dir)
  wall = figures["wall_seconds"]
  rate = data["audio_seconds"] / wall
  cpu = figures["tree"]["cpu_seconds"]
  return {**figures, **data, "workers": workers,
          "audio_seconds_per_sec": rate,
          "audio_seconds_per_sec_per_worker": rate / workers,
          "audio_seconds_per_cpu_second": (data["audio_seconds"] / cpu
                                           if cpu else None)}


def _beam_options(workers: int) -> dict[str, Any]:
  """The DirectRunner options the beam stage's program gets."""
  from e2s_tf import beam_preprocess  # pylint: disable=g-import-not-at-top
  options = beam_preprocess.make_pipeline_options(
      beam_preprocess.DIRECT_RUNNER, [], workers).get_all_options()
  return {k: options.get(k) for k in ("runner", "direct_num_workers",
                                      "direct_running_mode")}


def load_config(name: str, data_dir: str, overrides: Sequence[str] = ()):
  """The config `--config=name` gives `python -m e2s_tf.train` (`auto`,
  a packaged name such as `testing:multiscale`, or a file), with
  `--config.x.y=v` `overrides` applied."""
  from e2s_tf import configs  # pylint: disable=g-import-not-at-top
  value = configs.resolve(configs.resolve_auto(name, [f"--data_dir={data_dir}"]))
  path, _, argument = value.partition(":")
  spec = importlib.util.spec_from_file_location("e2s_scale_config", path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"config {name} ({path}) not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(argument) if argument else module.get_config()
  for override in overrides:
    key, sep, text = override.removeprefix("--").removeprefix(
        "config.").partition("=")
    if not sep:
      raise ValueError(f"override {override!r}: want --config.x.y=value")
    *parents, field = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    old = node[field]
    if isinstance(old, bool):
      new = text.lower() in ("1", "true", "yes")
    else:
      try:
        new = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        new = text
    node[field] = new
  return config


def count_epochs(config, data_dir: str, epochs: int = 1) -> dict[str, Any]:
  """Batches and frames of `epochs` epochs of the train pipeline, as
  `train_lib.train` makes them (`make_train_data` of the resolved config,
  epoch by epoch)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  from e2s_tf import train_lib  # pylint: disable=g-import-not-at-top
  info = records.read_dataset_info(data_dir)
  config = train_lib.resolve_config(config, info)
  per_epoch = []
  start = time.perf_counter()
  for epoch in range(epochs):
    steps = frames = padded = 0
    for batch in train_lib.make_train_data(config, data_dir, epoch):
      steps += 1
      frames += harness.valid_frames(batch)
      padded += int(np.prod(batch["embedding"].shape[:2]))
    per_epoch.append({"steps": steps, "frames": frames,
                      "padded_frames": padded})
  d = config.data
  return {"steps": sum(e["steps"] for e in per_epoch),
          "frames": sum(e["frames"] for e in per_epoch),
          "padded_frames": sum(e["padded_frames"] for e in per_epoch),
          "per_epoch": per_epoch, "mode": d.mode,
          "frames_per_batch": d.frames_per_batch, "batch_size": d.batch_size,
          "count_seconds": time.perf_counter() - start}


def read_events(folder: str) -> list[tuple[float, int, str, Optional[float]]]:
  """(wall time, step, tag, scalar value or None) of the TensorBoard events
  under `folder`, in file order."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  from tensorflow.core.util import event_pb2
  # pylint: enable=g-import-not-at-top
  out = []
  for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      event = event_pb2.Event.FromString(record)
      for v in event.summary.value:
        value = None
        if v.HasField("tensor"):
          array = tf.make_ndarray(v.tensor)
          if array.size == 1 and array.dtype.kind in "fiu":
            value = float(np.asarray(array).reshape(()))
        elif v.HasField("simple_value"):
          value = float(v.simple_value)
        out.append((event.wall_time, int(event.step), v.tag, value))
  return out


def loop_figures(workdir: str) -> dict[str, Any]:
  """The train loop's own figures, from its TensorBoard events: the steps
  it ran, its seconds (from the config summary before the first step to the
  last log), the steady frames/s and steps/s (every logged interval after
  the first, which holds the tracing), and the final validation's seconds."""
  train = read_events(os.path.join(workdir, "train"))
  valid = read_events(os.path.join(workdir, "valid"))
  logs = [(w, s, v) for w, s, t, v in train if t == "frames_per_sec"]
  if not train or not logs:
    return {"steps": None}
  start = min(w for w, _, _, _ in train)
  losses = [s for _, s, t, _ in train if t == "losses/loss"]
  figures = {"steps": max(losses) if losses else logs[-1][1],
             "logs": len(logs), "seconds": logs[-1][0] - start,
             "first_log_step": logs[0][1],
             "first_log_seconds": logs[0][0] - start}
  if len(logs) >= 2:
    dts = [b[0] - a[0] for a, b in zip(logs, logs[1:])]
    frames = sum(dt * b[2] for dt, b in zip(dts, logs[1:]))
    figures["steady_seconds"] = sum(dts)
    figures["steady_frames_per_sec"] = frames / sum(dts)
    figures["steady_steps_per_sec"] = (logs[-1][1] - logs[0][1]) / sum(dts)
  if valid:
    figures["final_validation_seconds"] = (max(w for w, _, _, _ in valid)
                                           - logs[-1][0])
  return figures


def _train(config_name: str, data_dir: str, workdir: str, epochs: int,
           overrides: Sequence[str], timeout: float) -> dict[str, Any]:
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  config = load_config(config_name, data_dir, overrides)
  counted = count_epochs(config, data_dir, epochs)
  steps = counted["steps"]
  if not steps:
    raise ValueError(f"{data_dir}: the train split yields no batch")
  # A fresh run, not a resume: a previous run's workdir is removed (only
  # one that train wrote: it holds its config.json, or nothing).
  if os.path.isdir(workdir):
    entries = set(os.listdir(workdir)) - {fileio.LOCK_FILE}
    if entries and "config.json" not in entries:
      raise ValueError(f"{workdir} holds files that are not a training run's; "
                       "choose another --work_dir")
    shutil.rmtree(workdir)
  command = [sys.executable, "-m", "e2s_tf.train", f"--config={config_name}",
             f"--data_dir={data_dir}", f"--workdir={workdir}",
             f"--config.train.num_steps={steps}",
             f"--config.train.eval_every={steps}",
             f"--config.train.checkpoint_every={steps}", *overrides]
  figures = measure(command, workdir + ".log", timeout)
  info = records.read_dataset_info(data_dir)
  audio = info["splits"]["train"]["num_audio_seconds"] * epochs
  wall = figures["wall_seconds"]
  loop = loop_figures(workdir)
  out = {**figures, "config": config_name, "epochs": epochs,
         "eval_every": steps, "checkpoint_every": steps,
         "train_audio_seconds": audio, **counted,
         "frames_per_sec": counted["frames"] / wall,
         "audio_seconds_per_sec": audio / wall,
         "steps_per_sec": steps / wall, "loop": loop,
         "workdir_bytes": folder_bytes(workdir)["bytes"]}
  if loop.get("seconds"):
    out["loop_frames_per_sec"] = counted["frames"] / loop["seconds"]
    out["loop_audio_seconds_per_sec"] = audio / loop["seconds"]
  return out


def scale_run(manifest: str, work_dir: str, config: str = DEFAULT_CONFIG,
              embedder: str = "logmel", workers: int = DEFAULT_WORKERS,
              epochs: int = 1, stages: Sequence[str] = STAGES,
              preprocess_args: Sequence[str] = (),
              train_overrides: Sequence[str] = (),
              timeout: float = DEFAULT_TIMEOUT_S,
              log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs and measures `stages` of the corpus `manifest` (see the module doc).

  Args:
    manifest: the corpus (e.g. made by `python -m e2s_tf.make_corpus`).
    work_dir: W: the stages write W/local, W/beam, W/train (their logs
      W/<stage>.log) and the figures W/scale.json.
    config: `--config` of the train stage (counted with the same config).
    embedder: `--embedder` of preprocessing.
    workers: `--num_workers` of both preprocessing stages.
    epochs: epochs of training.
    stages: of `STAGES`, run in that order; `train` reads W/local.
    preprocess_args: more flags of both preprocessing stages (e.g.
      `--split_by=utterance`).
    train_overrides: more `--config.x=y` of training (also applied when
      the steps are counted).
    timeout: seconds a stage may run.
    log: where a line per stage goes.

  Returns:
    `machine`, `corpus`, `stages` ({stage: figures}), `settings`, `seconds`;
    written to W/scale.json too.
  """
  from e2s_tf import fileio  # pylint: disable=g-import-not-at-top
  unknown = [s for s in stages if s not in STAGES]
  if unknown or not stages:
    raise ValueError(f"stages must be some of {STAGES}, got {list(stages)}")
  if not os.path.isfile(manifest):
    raise FileNotFoundError(f"manifest {manifest} not found")
  manifest = os.path.abspath(manifest)
  work_dir = os.path.abspath(work_dir)
  os.makedirs(work_dir, exist_ok=True)
  start = time.perf_counter()
  results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
             "settings": {"config": config, "embedder": embedder,
                          "workers": workers, "epochs": epochs,
                          "stages": [s for s in STAGES if s in stages],
                          "preprocess_args": list(preprocess_args),
                          "train_overrides": list(train_overrides),
                          "sample_interval_s": SAMPLE_INTERVAL_S},
             "corpus": corpus_figures(manifest), "stages": {}}
  out = os.path.join(work_dir, "scale.json")
  path = {s: os.path.join(work_dir, d) for s, d in _OUT.items()}
  for stage in (s for s in STAGES if s in stages):
    if stage == "train":
      figures = _train(config, path["local"], path["train"], epochs,
                       train_overrides, timeout)
    else:
      extra = list(preprocess_args)
      if stage == "beam":
        extra += ["--runner=DirectRunner"]
      figures = _preprocess(manifest, path[stage], embedder, workers, extra,
                            timeout)
      if stage == "beam":
        figures["beam_options"] = _beam_options(workers)
        figures["beam_workers_seen"] = figures["tree"]["roles"].get(
            "beam_worker", {}).get("count", 0)
        local = results["stages"].get("local")
        if local:
          counts = lambda g: {  # pylint: disable=unnecessary-lambda-assignment
              k: (v["examples"], v["frames"], v["audio_seconds"])
              for k, v in g["splits"].items()}
          figures["same_as_local"] = counts(figures) == counts(local)
          figures["same_bytes_as_local"] = (figures["shard_bytes"] ==
                                            local["shard_bytes"])
    results["stages"][stage] = figures
    results["seconds"] = time.perf_counter() - start
    fileio.write_json(out, results, default=float)
    log(f"scale {stage}: {stage_line(stage, figures)}")
  return results


# ----------------------------------------------------------------------------
# Lines, the table and the projections.


def stage_line(stage: str, f: Mapping[str, Any]) -> str:
  tree = f["tree"]
  memory_text = (f"peak {f['peak_rss_mib']:.0f} MiB one process, "
                 f"{tree['peak_rss_sum_mib']:.0f} MiB RSS / "
                 f"{tree['peak_pss_sum_mib']:.0f} MiB PSS summed")
  if stage == "train":
    return (f"{f['steps']} steps, {f['frames']:,} frames, "
            f"{f['train_audio_seconds']:.0f} audio s in "
            f"{f['wall_seconds']:.0f} s: {f['frames_per_sec']:,.0f} frames/s, "
            f"{f['audio_seconds_per_sec']:.1f} audio s/s; {memory_text}")
  return (f"{f['audio_seconds']:.0f} audio s in {f['wall_seconds']:.0f} s "
          f"({f['workers']} workers): {f['audio_seconds_per_sec']:.0f} "
          f"audio s/s, {f['shard_bytes'] / _MIB:.0f} MiB of shards "
          f"({f['bytes_per_audio_second'] / 1024:.0f} KiB per audio s); "
          f"{memory_text}")


def table_rows(f: Mapping[str, Any]) -> list[tuple[str, str]]:
  """(measure, result) rows of the performance table."""
  if f.get("skipped"):
    return [("scale run of a corpus", f"skipped: {f['skipped']}")]
  hours = f["corpus"]["audio_hours"]
  rows = []
  for stage, figures in f["stages"].items():
    rows.append((f"{stage} ({hours:.2f} h corpus)",
                 stage_line(stage, figures)))
  return rows


def bench_scale(bench: harness.Bench) -> dict[str, Any]:
  """The `scale` benchmark: `scale_run` of the `scale_manifest` option
  (every stage, 2 workers, one epoch; the quick sizes train the testing
  config) under work_dir/scale; skipped without the option."""
  manifest = bench.options.get("scale_manifest")
  if not manifest:
    return {"skipped": SKIPPED}
  config = QUICK_CONFIG if bench.sizes.config == "testing" else DEFAULT_CONFIG
  return scale_run(manifest, os.path.join(bench.work_dir, "scale"),
                   config=config, log=lambda _: None)


def _line_scale(f: Mapping[str, Any]) -> str:
  if f.get("skipped"):
    return f"skipped ({f['skipped']})"
  return "; ".join(f"{stage}: {stage_line(stage, figures)}"
                   for stage, figures in f["stages"].items())


def projections(f: Mapping[str, Any], target_hours: float = LIBRISPEECH_HOURS,
                dataflow_workers: Sequence[int] = (10, 50, 100),
                gpus: Sequence[int] = (1, 2, 4, 8),
                gpu_frames_per_sec: Optional[float] = None,
                scaling_efficiency: float = 1.0) -> dict[str, Any]:
  """Projected figures of docs/scaling.md from a `scale_run`'s measured ones.

  Preprocessing `target_hours` of audio: worker-hours = target audio
  seconds / (measured audio s/s per worker) / 3600 (from the Beam stage,
  else the local one; `cpu_hours` the same per CPU second the stage's
  processes used), and the wall hours on each of `dataflow_workers`
  (no startup, shuffle or GCS I/O: see the doc's caveats); shard bytes =
  target audio seconds x measured bytes per audio second.

  Training one epoch over `target_hours` of train audio (LibriSpeech's 960 h
  are all training data): frames and steps scale with the train audio (the
  measured frames and steps per train audio second at the same global
  batch); hours on this machine at its measured steady frames/s and, given
  `gpu_frames_per_sec` (one GPU's measured frames/s, not measured by
  `scale_run`), on N GPUs at N x that x `scaling_efficiency` (1.0: perfect
  scaling, an upper bound), with the frames/s the input pipeline must then
  deliver and the steps at the same global batch and at N x that batch.
  """
  target = target_hours * 3600.0
  out: dict[str, Any] = {"label": "projected", "target_hours": target_hours}
  s = f["stages"]
  pre = s.get("beam") or s.get("local")
  if pre:
    per_worker = pre["audio_seconds_per_sec_per_worker"]
    worker_hours = target / per_worker / 3600.0
    per_cpu = pre.get("audio_seconds_per_cpu_second")
    out["preprocess"] = {
        "from_stage": "beam" if "beam" in s else "local",
        "measured_audio_seconds_per_sec_per_worker": per_worker,
        "worker_hours": worker_hours,
        # The same from the CPU seconds the stage's processes used (not
        # slowed by other load on the machine): hours of fully busy cores.
        "cpu_hours": target / per_cpu / 3600.0 if per_cpu else None,
        "wall_hours": {str(n): worker_hours / n for n in dataflow_workers},
        "shard_bytes": target * pre["bytes_per_audio_second"]}
  t = s.get("train")
  if t:
    ratio = target / t["train_audio_seconds"]
    frames, steps = t["frames"] * ratio, t["steps"] * ratio
    fps = t["loop"].get("steady_frames_per_sec") or t["frames_per_sec"]
    train = {"epoch_frames": frames, "epoch_steps": math.ceil(steps),
             "frames_per_batch": t["frames_per_batch"],
             "measured_frames_per_sec": fps,
             "epoch_hours_here": frames / fps / 3600.0}
    if gpu_frames_per_sec:
      train["gpus"] = {}
      for n in gpus:
        rate = n * gpu_frames_per_sec * (scaling_efficiency if n > 1 else 1)
        train["gpus"][str(n)] = {
            "epoch_hours": frames / rate / 3600.0,
            "input_frames_per_sec_needed": rate,
            "steps_same_global_batch": math.ceil(steps),
            "steps_n_times_global_batch": math.ceil(steps / n)}
    out["train"] = train
  return out
