"""The benchmark suite in --quick mode: every benchmark, well-formed figures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from e2s_tf import batching
from e2s_tf import bench_lib
from e2s_tf import records
from e2s_tf.benchmarks import cases
from e2s_tf.benchmarks import harness
from e2s_tf.benchmarks import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(value):
  return isinstance(value, (int, float)) and np.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_results(speech_corpus, speech_data, tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("bench")
  out = str(out_dir / "bench.json")
  lines = []
  returned = bench_lib.run(str(out_dir / "work"), out, quick=True,
                           manifest=speech_corpus, data_dir=speech_data,
                           command="test", log=lines.append)
  with open(out) as f:
    written = json.load(f)
  return returned, written, lines


def test_quick_suite_runs_every_benchmark_and_writes_json(quick_results):
  returned, written, lines = quick_results
  assert list(written["benchmarks"]) == list(cases.BENCHMARKS)
  assert written["quick"] and written["command"] == "test"
  assert written["cpu_count"] >= 1 and written["machine"]
  assert json.loads(json.dumps(returned)) == written
  for name, figures in written["benchmarks"].items():
    assert _positive(figures["seconds"]), name
    for key in ("loadavg_before", "loadavg_after"):
      assert len(figures[key]) == 3 and min(figures[key]) >= 0, (name, key)
  # One printed line per benchmark, then the file.
  assert [l.split(":")[0] for l in lines[:-1]] == list(cases.BENCHMARKS)
  assert lines[-1].startswith("wrote ")


def test_griffin_lim_compares_the_same_algorithm(quick_results):
  figures = quick_results[1]["benchmarks"]["griffin_lim"]
  sizes = harness.SIZES["quick"]
  assert list(figures["batches"]) == [str(b) for b in sizes.batch_sizes]
  assert figures["frames"] == 98  # 1 s at 16 kHz on the 480/160 grid
  for row in figures["batches"].values():
    for key in ("e2s_s", "librosa_s", "speedup"):
      assert _positive(row[key]), key
    assert row["speedup"] == pytest.approx(row["librosa_s"] / row["e2s_s"])
    # Same grid, iterations, momentum and start: the same reconstruction.
    assert 0 < row["e2s_spectral_convergence"] < 1
    assert row["e2s_spectral_convergence"] == pytest.approx(
        row["librosa_spectral_convergence"], abs=0.02)
  assert isinstance(figures["target_met"], bool)


def test_input_pipeline_figures_and_trace(quick_results, speech_data):
  figures = quick_results[1]["benchmarks"]["input_pipeline"]
  info = records.read_dataset_info(speech_data)
  sizes = harness.SIZES["quick"]
  assert figures["frames"] == (info["splits"]["train"]["num_frames"] *
                               sizes.pipeline_epochs)
  for key in ("pipeline_frames_per_sec", "train_frames_per_sec", "headroom"):
    assert _positive(figures[key]), key
  trace = figures["profile"]
  a, b = sizes.profile_steps
  assert trace["steps"] == b - a and os.path.exists(trace["trace"])
  assert _positive(trace["step_ms"]) and 0 <= trace["input_wait_share"] < 1


def test_filler_covers_every_mode(quick_results):
  modes = quick_results[1]["benchmarks"]["filler"]["modes"]
  assert list(modes) == list(batching.MODES)
  for mode, row in modes.items():
    assert 0 <= row["filler_share"] < 1 and 0 <= row["discarded_share"] < 1
    assert row["real_frames"] <= row["delivered_frames"], mode
  # Cutting to the shortest never pads; tiling to the longest does.
  assert modes["crop_shortest"]["filler_share"] == 0
  assert modes["repeat_longest"]["filler_share"] > modes["bucket"][
      "filler_share"]
  assert modes["bucket"]["discarded_share"] == 0


def test_inference_rtf(quick_results):
  figures = quick_results[1]["benchmarks"]["inference"]
  for batch, row in ((int(b), r) for b, r in figures["batches"].items()):
    assert _positive(row["rtf"]) and _positive(row["decoder_rtf"])
    # RTF is the endpoint's time over the audio time of the batch.
    for endpoint, rtf in (("waveform_s", "rtf"), ("spectrogram_s",
                                                  "decoder_rtf")):
      assert row[rtf] == pytest.approx(
          row[endpoint] / (batch * figures["speech_seconds"]))


def test_training_times_every_model(quick_results):
  models = quick_results[1]["benchmarks"]["training"]["models"]
  sizes = harness.SIZES["quick"]
  assert list(models) == list(sizes.models)
  for name, row in models.items():
    assert _positive(row["graph"]["frames_per_sec"]), name
    assert ("xla" in row) == (name in sizes.xla_models)
    if "xla" in row:
      assert _positive(row["xla"]["frames_per_sec"])
      assert row["faster"] in ("graph", "xla")
      assert row["xla"]["epoch_s"] >= (row["epoch_frames"] /
                                       row["xla"]["frames_per_sec"])


def test_preprocess_counts_the_corpus_audio(quick_results, speech_data):
  figures = quick_results[1]["benchmarks"]["preprocess"]
  info = records.read_dataset_info(speech_data)
  splits = info["splits"].values()
  assert figures["items"] == sum(s["num_examples"] for s in splits)
  assert figures["audio_seconds"] == pytest.approx(
      sum(s["num_audio_seconds"] for s in splits))
  assert figures["audio_seconds_per_sec"] == pytest.approx(
      figures["audio_seconds"] / figures["wall_seconds"])


def test_memory_of_a_long_item(quick_results):
  f = quick_results[1]["benchmarks"]["memory"]
  assert f["item_seconds"] == harness.SIZES["quick"].long_item_seconds
  assert f["frames_per_batch"] == 1200  # configs/testing.py
  for key in ("preprocess_mib", "preprocess_whole_item_mib",
              "train_long_item_mib", "train_short_items_mib"):
    assert 100 < f[key] < 8000, key
  # In pieces, the item costs less than in one piece.
  assert f["preprocess_mib"] < f["preprocess_whole_item_mib"]
  # Cut into windows of the frame budget, the long item costs what ordinary
  # data does (it cost several times more in one piece).
  assert f["train_long_item_mib"] < 1.5 * f["train_short_items_mib"]


def test_run_measuring_memory_reports_a_failed_program(tmp_path):
  log = str(tmp_path / "train.log")
  run = memory.run_measuring_memory(
      [sys.executable, "-m", "e2s_tf.train", "--config=configs/nothere.py",
       "--data_dir=x", "--workdir=y"], log)
  assert run["returncode"] == 1
  assert run["output_tail"][-1] == ("train: error: config file "
                                    "configs/nothere.py not found")
  assert 20 < run["peak_rss_mib"] < 4000
  with pytest.raises(RuntimeError, match="config file"):
    memory.train_memory("x", str(tmp_path / "w"), "configs/nothere.py")


def test_performance_table_has_a_row_per_figure(quick_results):
  table = bench_lib.performance_table(quick_results[1])
  lines = table.splitlines()
  assert lines[0].startswith("| benchmark |")
  names = [l.split("|")[1].strip() for l in lines[2:]]
  assert set(names) == set(cases.BENCHMARKS)
  assert names.count("training") == len(harness.SIZES["quick"].models)


def test_unknown_benchmark_is_an_error_naming_the_known_ones(tmp_path):
  with pytest.raises(ValueError, match="griffin_lim"):
    bench_lib.run(str(tmp_path), str(tmp_path / "b.json"), only=["nope"])
  assert not os.path.exists(tmp_path / "b.json")


def test_missing_trace_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    harness.input_wait_from_trace(str(tmp_path))


def test_main_runs_one_benchmark(speech_corpus, speech_data, tmp_path):
  out, table = tmp_path / "b.json", tmp_path / "table.md"
  subprocess.run(
      [sys.executable, "-m", "e2s_tf.bench", "--only=filler", "--quick",
       f"--work_dir={tmp_path / 'w'}", f"--out={out}", f"--table={table}",
       f"--manifest={speech_corpus}", f"--data_dir={speech_data}"],
      cwd=ROOT, check=True, capture_output=True, timeout=300)
  with open(out) as f:
    results = json.load(f)
  assert list(results["benchmarks"]) == ["filler"]
  assert "--only=filler" in results["command"]
  assert "| filler |" in table.read_text()
