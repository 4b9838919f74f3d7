"""The scale run (e2s_tf/benchmarks/scale.py) on a tiny corpus: every stage,
figures checked against the files, dataset_info.json and the train pipeline.
No wall-clock time is asserted."""

import json
import math
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from e2s_tf import corpus
from e2s_tf import data as data_lib
from e2s_tf import records
from e2s_tf import train_lib
from e2s_tf.benchmarks import harness
from e2s_tf.benchmarks import scale

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "testing:multiscale"


def _finite_positive(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  base = tmp_path_factory.mktemp("scale")
  manifest = corpus.make_corpus(str(base / "corpus"), speakers=2,
                                utterances=3, seed=0, progress=False)
  lines = []
  results = scale.scale_run(
      manifest, str(base / "work"), config=CONFIG, workers=2,
      preprocess_args=["--split_by=utterance", "--valid_fraction=0.2",
                       "--test_fraction=0.2"], log=lines.append)
  return manifest, str(base / "work"), results, lines


def _files_under(folder):
  return [os.path.join(r, n) for r, _, names in os.walk(folder)
          for n in names]


@pytest.mark.parametrize("stage", ["local", "beam"])
def test_preprocess_figures_are_the_datasets(run, stage):
  _, work, results, _ = run
  f = results["stages"][stage]
  out = os.path.join(work, stage)
  with open(os.path.join(out, records.DATASET_INFO)) as fh:
    info = json.load(fh)
  shards = [os.path.join(out, name) for s in info["splits"].values()
            for name in s["files"]]
  assert f["shard_bytes"] == sum(os.path.getsize(p) for p in shards) > 0
  assert f["folder_bytes"] == sum(os.path.getsize(p)
                                  for p in _files_under(out))
  assert f["folder_bytes"] > f["shard_bytes"]  # + dataset_info.json
  audio = sum(s["num_audio_seconds"] for s in info["splits"].values())
  assert f["audio_seconds"] == pytest.approx(audio)
  assert f["examples"] == 6 == sum(s["num_examples"]
                                   for s in info["splits"].values())
  assert f["audio_seconds_per_sec"] == pytest.approx(
      f["audio_seconds"] / f["wall_seconds"])
  assert f["audio_seconds_per_sec_per_worker"] == pytest.approx(
      f["audio_seconds_per_sec"] / 2)
  assert f["bytes_per_audio_second"] == pytest.approx(
      f["shard_bytes"] / f["audio_seconds"])
  for key in ("wall_seconds", "audio_seconds_per_sec", "peak_rss_mib",
              "audio_seconds_per_cpu_second"):
    assert _finite_positive(f[key]), key
  assert 100 < f["peak_rss_mib"] < 8000
  assert len(f["loadavg_before"]) == len(f["loadavg_after"]) == 3
  assert "--num_workers=2" in f["command"]
  # The sampled tree: the program and its 2 workers, each of which worked;
  # the summed RSS is at least the largest process's.
  tree = f["tree"]
  role = "pool_worker" if stage == "local" else "beam_worker"
  workers = tree["roles"][role]
  assert workers["count"] == 2
  assert all(c > 0 for c in workers["cpu_seconds"])
  assert tree["roles"]["program"]["count"] == 1
  assert tree["samples"] >= 1 and tree["peak_processes"] >= 3
  assert tree["peak_rss_sum_mib"] >= max(
      max(r["peak_rss_mib"]) for r in tree["roles"].values())
  assert tree["peak_rss_sum_mib"] >= tree["peak_pss_sum_mib"] > 0


def test_beam_runs_multi_processing_with_the_local_examples(run):
  f = run[2]["stages"]["beam"]
  assert "--runner=DirectRunner" in f["command"]
  assert f["beam_options"] == {"runner": "DirectRunner",
                               "direct_num_workers": 2,
                               "direct_running_mode": "multi_processing"}
  assert f["beam_workers_seen"] == 2
  assert f["same_as_local"] is True


def test_train_runs_one_epoch_counted_independently(run):
  _, work, results, _ = run
  f = results["stages"]["train"]
  data_dir = os.path.join(work, "local")
  info = records.read_dataset_info(data_dir)
  # The epoch's batches, from make_dataset with the config's data settings.
  config = train_lib.resolve_config(
      scale.load_config(CONFIG, data_dir), info)
  d = config.data
  ds = data_lib.make_dataset(
      data_dir, "train", mode=d.mode, frames_per_batch=d.frames_per_batch,
      batch_size=d.batch_size, crop_frames=d.crop_frames,
      max_frames=train_lib.max_item_frames(config),
      with_speaker=d.with_speaker, shuffle=True,
      shuffle_buffer=d.shuffle_buffer, repeat=False,
      seed=config.train.seed * 1000)
  batches = list(ds)
  assert f["steps"] == len(batches) > 0
  assert f["frames"] == sum(harness.valid_frames(b) for b in batches)
  assert f["frames"] == info["splits"]["train"]["num_frames"]
  assert f["train_audio_seconds"] == pytest.approx(
      info["splits"]["train"]["num_audio_seconds"])
  # The program ran exactly those steps: its events and its checkpoint.
  assert f["loop"]["steps"] == f["steps"]
  latest = tf.train.latest_checkpoint(os.path.join(work, "train",
                                                   "checkpoints"))
  assert latest and latest.endswith(f"-{f['steps']}")
  assert f"--config.train.num_steps={f['steps']}" in f["command"]
  assert f["eval_every"] == f["checkpoint_every"] == f["steps"]
  assert f["frames_per_sec"] == pytest.approx(f["frames"] / f["wall_seconds"])
  assert f["audio_seconds_per_sec"] == pytest.approx(
      f["train_audio_seconds"] / f["wall_seconds"])
  for key in ("wall_seconds", "frames_per_sec", "audio_seconds_per_sec",
              "steps_per_sec", "peak_rss_mib", "workdir_bytes"):
    assert _finite_positive(f[key]), key
  assert f["loop"]["seconds"] <= f["wall_seconds"]
  assert f["workdir_bytes"] == sum(
      os.path.getsize(p) for p in _files_under(os.path.join(work, "train")))


def test_results_written_with_machine_and_corpus(run):
  manifest, work, results, lines = run
  with open(os.path.join(work, "scale.json")) as fh:
    assert json.load(fh) == json.loads(json.dumps(results, default=float))
  m = results["machine"]
  assert m["cpu"] and m["cpu_count"] >= 1 and m["usable_cores"] >= 1
  c = results["corpus"]
  assert c["items"] == 6 and c["manifest"] == os.path.abspath(manifest)
  assert c["audio_bytes"] == sum(
      os.path.getsize(p) for p in _files_under(os.path.dirname(manifest))
      if p.endswith(".wav"))
  # Every item was accepted: the dataset holds the corpus's audio.
  assert c["audio_seconds"] == pytest.approx(
      results["stages"]["local"]["audio_seconds"], abs=0.05)
  assert [l.split(":")[0] for l in lines] == [
      "scale local", "scale beam", "scale train"]


def test_projections_follow_the_measured_rates(run):
  results = run[2]
  p = scale.projections(results, target_hours=960, dataflow_workers=(10,),
                        gpus=(1, 4), gpu_frames_per_sec=1e5)
  per_worker = results["stages"]["beam"]["audio_seconds_per_sec_per_worker"]
  assert p["preprocess"]["worker_hours"] == pytest.approx(960 / per_worker)
  assert p["preprocess"]["wall_hours"]["10"] == pytest.approx(
      p["preprocess"]["worker_hours"] / 10)
  t = results["stages"]["train"]
  frames = t["frames"] * 960 * 3600 / t["train_audio_seconds"]
  assert p["train"]["epoch_frames"] == pytest.approx(frames)
  assert p["train"]["gpus"]["4"]["epoch_hours"] == pytest.approx(
      frames / 4e5 / 3600)


def test_bench_case_skips_without_the_manifest_and_names_it(tmp_path):
  bench = harness.Bench(harness.SIZES["quick"], str(tmp_path))
  figures = scale.bench_scale(bench)
  assert "scale_manifest" in figures["skipped"]
  assert "skipped" in scale._line_scale(figures)  # pylint: disable=protected-access
  assert scale.table_rows(figures)[0][1].startswith("skipped")
  with pytest.raises(ValueError, match="stages"):
    scale.scale_run("x", str(tmp_path), stages=["nope"])


def test_bench_only_scale_needs_the_manifest(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "e2s_tf.bench", "--only=scale",
       f"--work_dir={tmp_path}", f"--out={tmp_path / 'b.json'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert "needs --scale_manifest" in result.stderr
  assert not os.path.exists(tmp_path / "b.json")
