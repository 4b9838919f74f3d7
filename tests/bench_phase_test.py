"""The phase benchmark in --quick mode: 2 test items, tiny iteration counts."""

import json
import math

import numpy as np
import pytest

from e2s_tf import bench_lib
from e2s_tf import spectral
from e2s_tf.benchmarks import harness
from e2s_tf.benchmarks import phase


@pytest.fixture(scope="module")
def phase_results(speech_corpus, speech_data, tiny_export, tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("phase")
  out, curve = str(out_dir / "bench.json"), str(out_dir / "curve.png")
  lines = []
  bench_lib.run(str(out_dir / "work"), out, only=["phase"], quick=True,
                manifest=speech_corpus, data_dir=speech_data, command="test",
                log=lines.append,
                options={"phase_model": tiny_export, "phase_curve": curve})
  with open(out) as f:
    return json.load(f), lines, curve


def _finite(value):
  return isinstance(value, (int, float)) and math.isfinite(value)


def test_every_method_on_both_sources_is_timed_and_scored(phase_results):
  results, lines, _ = phase_results
  f = results["benchmarks"]["phase"]
  sizes = harness.SIZES["quick"]
  names = [m.name for m in phase.methods_of(sizes)]
  assert f["methods"] == names
  assert "zeros/4" in names and "pghi/0" in names and "librosa/8" in names
  assert list(f["sources"]) == ["oracle", "decoder"]
  # One trace per start, whatever the batch, length or iteration count.
  assert f["traces"] == {"zeros": 1, "pghi": 1}
  for source, g in f["sources"].items():
    assert g["items"] == 2 and g["reference"] == "zeros/4"
    assert list(g["methods"]) == names
    for name, row in g["methods"].items():
      assert set(row["ms"]) == {str(b) for b in sizes.batch_sizes}
      assert all(_finite(v) and v > 0 for v in row["ms"].values()), name
      assert len(row["items"]) == 2
      for item in row["items"]:
        for key in ("sc", "sc_audio", "pesq_wb", "stoi"):
          assert _finite(item[key]), (source, name, key)
        assert item["sc"] > 0
      for key in ("sc", "sc_audio", "pesq_wb", "stoi", "max_sc",
                  "min_pesq_wb", "min_stoi"):
        assert _finite(row[key]), (source, name, key)
      assert row["min_pesq_wb"] <= row["pesq_wb"]
      assert row["max_sc"] >= row["sc"]
      assert set(row["class_sc"]) == set(phase.CLASSES)
      assert sum(row["class_frames"].values()) == g["frames"]
    assert g["best_at_reference_time"] in g["within_time"]
    assert g["reference"] in g["within_time"]
    assert g["methods"][g["reference"]]["items_worse_sc"] == 0
  # Oracle magnitudes are the stored audio's: both convergences agree.
  for row in f["sources"]["oracle"]["methods"].values():
    assert row["sc"] == pytest.approx(row["sc_audio"], rel=1e-4)
  assert isinstance(f["target_met"], bool)
  assert lines[0].startswith("phase: 2 test items; oracle: best at zeros/4")


def test_pghi_starts_far_better_than_zero_phase(phase_results):
  oracle = phase_results[0]["benchmarks"]["phase"]["sources"]["oracle"]
  pghi, zeros = oracle["methods"]["pghi/8"], oracle["methods"]["zeros/8"]
  for p, z in zip(pghi["items"], zeros["items"]):
    assert p["sc"] < 0.8 * z["sc"], p["id"]
  assert pghi["items_worse_sc"] == 0
  # The same algorithm from the same start: librosa's reconstruction.
  librosa = oracle["methods"]["librosa/8"]
  assert librosa["sc"] == pytest.approx(zeros["sc"], abs=0.02)


def test_tables_and_curve(phase_results):
  results, _, curve = phase_results
  rows = bench_lib.phase_table(results).splitlines()
  names = phase.methods_of(harness.SIZES["quick"])
  assert rows[0].startswith("| magnitudes | method |")
  assert len(rows) == 2 + 2 * len(names)
  assert sum("(reference)" in r for r in rows) == 2
  table = bench_lib.performance_table(results)
  assert table.count("| phase |") == 2
  with open(curve, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert results["benchmarks"]["phase"]["curve"] == curve


def test_frame_classes():
  config = spectral.DEFAULT
  rate = config.sample_rate
  t = np.arange(rate) / rate
  rng = np.random.default_rng(0)
  audio = np.concatenate([np.zeros(rate), 0.5 * np.sin(2 * np.pi * 150 * t),
                          0.3 * rng.standard_normal(rate)]).astype(np.float32)
  frames = config.num_frames(audio.shape[0])
  classes = phase.frame_classes(audio, frames, config)
  assert classes.shape == (frames,)
  second = rate // config.frame_step
  # Away from the boundaries: silence, voiced, unvoiced.
  assert set(classes[5:second - 5]) == {0}
  assert set(classes[second + 5:2 * second - 5]) == {1}
  assert set(classes[2 * second + 5:frames - 5]) == {2}


def test_batches_are_full_and_sorted_by_length():
  batches = phase.batches_of([30, 10, 20], 2)
  assert batches == [[1, 2], [0, 1]]
  assert phase.batches_of([5, 6], 1) == [[0], [1]]
