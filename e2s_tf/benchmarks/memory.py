"""Peak memory of a program run, and of the preprocess and train programs.

`run_measuring_memory` starts a program through a small launcher process
and reads the program's own peak RSS; `preprocess_memory` and
`train_memory` measure `python -m e2s_tf.preprocess` on one long item and
`python -m e2s_tf.train`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Sequence

import soundfile

from e2s_tf import corpus
from e2s_tf import manifest as manifest_lib
from e2s_tf.preprocessing import pieces as preprocess_pieces


# The launcher: a small process that starts the measured program and reports
# its rusage. Started straight from a large process (this one, after the other
# benchmarks), the program would count the large one's resident pages: Linux
# records the high-water RSS of the address space that `exec` leaves, and a
# child made by fork/vfork starts from its parent's.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
  fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"maxrss_kib": usage.ru_maxrss,
                  "returncode": os.waitstatus_to_exitcode(status)}))
"""


def run_measuring_memory(command: Sequence[str], log_path: str,
                         timeout: float = 1800.0) -> dict[str, Any]:
  """Runs `command` and reads its peak memory.

  The peak is `ru_maxrss` of the program's process (with its descendants'
  that it waited for), from `os.wait4` in a small launcher process (see
  `_LAUNCHER`), so nothing of this process counts.

  Args:
    command: the program and its arguments; `command[0]` an absolute path
      (e.g. `sys.executable`).
    log_path: where its stdout and stderr go.
    timeout: seconds before it is killed.

  Returns:
    `peak_rss_mib`, `seconds`, `returncode` and `output_tail` (its last 3
    lines of output).

  Raises:
    TimeoutError: it ran past `timeout` seconds (then it is killed).
  """
  # The program runs in this process's folder (relative paths mean the same
  # to it) and imports this copy of the package, installed or not.
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  path = os.environ.get("PYTHONPATH")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=root + (os.pathsep + path if path else ""))
  start = time.perf_counter()
  launcher = subprocess.Popen(
      [sys.executable, "-S", "-c", _LAUNCHER, log_path, *command],
      env=env, stdout=subprocess.PIPE, start_new_session=True)
  try:
    report, _ = launcher.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(launcher.pid, 9)
    launcher.wait()
    raise TimeoutError(f"{' '.join(command)} ran past {timeout:.0f} s"
                       ) from None
  usage = json.loads(report)
  with open(log_path, errors="replace") as f:
    tail = f.read().strip().splitlines()[-3:]
  return {"peak_rss_mib": usage["maxrss_kib"] / 1024.0,  # KiB on Linux
          "seconds": time.perf_counter() - start,
          "returncode": usage["returncode"], "output_tail": tail}


def _checked(run: dict[str, Any], what: str) -> dict[str, Any]:
  if run["returncode"] != 0:
    raise RuntimeError(f"{what} failed ({run['returncode']}): "
                       + " | ".join(run["output_tail"]))
  return run


def preprocess_memory(work_dir: str, audio_seconds: float,
                      max_item_seconds: float = (
                          preprocess_pieces.DEFAULT_MAX_ITEM_SECONDS)
                      ) -> dict[str, Any]:
  """Peak memory of `python -m e2s_tf.preprocess` on one long item.

  Writes a speech-like item of `audio_seconds` (`corpus.speechlike_audio`,
  16-bit WAV) and its manifest under `work_dir`, preprocesses it (logmel, one
  worker process, everything in the train split) into
  `work_dir/out-<seconds>-<max_item_seconds>` and returns
  `run_measuring_memory`'s figures plus `out_dir`.
  """
  os.makedirs(work_dir, exist_ok=True)
  wav = os.path.join(work_dir, f"long-{audio_seconds:g}.wav")
  soundfile.write(wav, corpus.speechlike_audio(audio_seconds), 16000,
                  subtype="PCM_16")
  manifest = os.path.join(work_dir, f"long-{audio_seconds:g}.jsonl")
  manifest_lib.write_manifest(
      [{"id": "long", "audio": wav, "speaker": "a"}], manifest)
  out_dir = os.path.join(work_dir,
                         f"out-{audio_seconds:g}-{max_item_seconds:g}")
  command = [sys.executable, "-m", "e2s_tf.preprocess",
             f"--manifest={manifest}", f"--out_dir={out_dir}",
             "--embedder=logmel", "--split_by=utterance",
             "--valid_fraction=0", "--test_fraction=0", "--num_workers=1",
             f"--max_item_seconds={max_item_seconds:g}", "--overwrite"]
  run = run_measuring_memory(command, out_dir + ".log")
  return {**_checked(run, " ".join(command)), "out_dir": out_dir}


def train_memory(data_dir: str, workdir: str, config: str,
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
  """Peak memory of `python -m e2s_tf.train` (a fresh `workdir`)."""
  shutil.rmtree(workdir, ignore_errors=True)
  command = [sys.executable, "-m", "e2s_tf.train", f"--config={config}",
             f"--data_dir={data_dir}", f"--workdir={workdir}", *overrides]
  run = run_measuring_memory(command, workdir + ".log")
  return _checked(run, " ".join(command))
