"""tf.distribute: mirrored over two logical CPUs, multi-worker on loopback."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_script(tmp_path, body, timeout=600):
  script = tmp_path / "run.py"
  script.write_text(textwrap.dedent(body))
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  run = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
  assert run.returncode == 0, run.stderr[-4000:]
  return run.stdout


def test_mirrored_follows_the_single_device_trajectory(speech_data, tmp_path):
  out = _run_script(tmp_path, f"""
      import json
      import tensorflow as tf
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
      from e2s_tf.configs import testing
      from e2s_tf import train_lib
      losses = {{}}
      for name in ("default", "mirrored"):
        config = testing.get_config("cnn")
        config.distribution = name
        config.data.deterministic = True
        config.model.dropout = 0.0
        config.train.num_steps = 8
        config.train.log_every = 1
        config.train.eval_every = 100
        lines = []
        train_lib.train(config, {speech_data!r},
                        {str(tmp_path)!r} + "/" + name, log=lines.append)
        losses[name] = lines
      print(json.dumps(losses))
      """)
  logs = json.loads(out.strip().splitlines()[-1])
  assert any("2 replicas" in l for l in logs["mirrored"])

  def trajectory(lines):
    return [float(re.search(r" loss=([0-9.]+)", l).group(1))
            for l in lines if l.startswith("step ")]

  single, mirrored = trajectory(logs["default"]), trajectory(logs["mirrored"])
  assert len(single) == len(mirrored) == 8
  # The first step sees the same weights and batch: the same loss up to the
  # per-replica masked means; later steps follow within a few percent.
  np.testing.assert_allclose(mirrored[0], single[0], rtol=0.02)
  np.testing.assert_allclose(mirrored, single, rtol=0.08)
  assert single[-1] < single[0]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_worker_run_on_loopback_leaves_one_checkpoint(speech_data,
                                                          tmp_path):
  workdir = tmp_path / "work"
  cluster = {"worker": [f"127.0.0.1:{_free_port()}",
                        f"127.0.0.1:{_free_port()}"]}
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "e2s_tf.train",
         "--config=configs/testing.py:cnn", f"--data_dir={speech_data}",
         f"--workdir={workdir}", "--config.distribution=multi_worker",
         "--config.train.num_steps=4", "--config.train.checkpoint_every=100",
         "--config.data.deterministic=true"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=600))
    finally:
      p.kill()
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-4000:]
  assert "done: step 4" in outs[0][0] and "2 replicas" in outs[0][0]
  assert outs[1][0].strip() == ""  # the non-chief worker stays quiet
  state = tf.train.get_checkpoint_state(str(workdir / "checkpoints"))
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
      "ckpt-4"]
  assert not [d for d in os.listdir(workdir) if d.startswith(".worker_")]
  # The chief alone locked the shared workdir (the other worker would have
  # been refused).
  with open(workdir / ".e2s.lock") as f:
    assert json.load(f)["pid"] == procs[0].pid
