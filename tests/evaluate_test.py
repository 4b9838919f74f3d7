"""Evaluation: systems, metrics.json, report.md and figures."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from e2s_tf import corpus
from e2s_tf import evaluate_lib
from e2s_tf import fileio
from e2s_tf import metrics
from e2s_tf import records
from e2s_tf import spectral
from tests.synthesize_test import write_relabelled_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _evaluate(*args):
  return subprocess.run([sys.executable, "-m", "e2s_tf.evaluate", *args],
                        cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=300)


def _files(root):
  return sorted(os.path.relpath(os.path.join(d, n), root)
                for d, _, names in os.walk(root) for n in names)


def test_evaluate_writes_metrics_report_and_figures(speech_data, tiny_export,
                                                   tmp_path):
  out = tmp_path / "eval"
  command = f"python -m e2s_tf.evaluate --out_dir={out}"
  result = evaluate_lib.evaluate(tiny_export, speech_data, "test", str(out),
                                 num_figures=2, num_audio=1, progress=False,
                                 command=command)
  n = records.read_dataset_info(speech_data)["splits"]["test"]["num_examples"]
  # The originals are a row too: what the judges (here DNSMOS) make of them.
  assert set(result) == {"reference", "model", "oracle_griffin_lim",
                         "analytic"}
  with open(out / "metrics.json") as f:
    saved = json.load(f)
  for system, s in saved.items():
    assert s["num_items"] == n and len(s["items"]) == n
    signal = (("lsd_db", "spectral_convergence", "mcd_db")
              if system == "reference" else metrics.METRIC_NAMES)
    for m in signal + ("dnsmos_ovr",) + (
        ("f0_rmse_cents", "energy_correlation")
        if system != "reference" else ()):
      assert m in s, (system, m)
      values = [row[m] for row in s["items"] if row[m] is not None]
      assert s["num_na"][m] == n - len(values)
      if values:
        np.testing.assert_allclose(s[m], np.mean(values), rtol=1e-6)
      else:
        assert s[m] is None
  assert saved["reference"]["lsd_db"] == 0.0
  oracle, model = saved["oracle_griffin_lim"], saved["model"]
  analytic = saved["analytic"]
  # The oracle has the true magnitude: it bounds the others (an untrained
  # model is far off), and the analytic inverse of log-mel sits in between.
  assert oracle["lsd_db"] < analytic["lsd_db"] < model["lsd_db"]
  assert oracle["stoi"] > model["stoi"]
  assert oracle["pesq_wb"] > 1.0 and oracle["rtf"] > 0
  report = (out / "report.md").read_text()
  for system in saved:
    assert f"| {system} |" in report
  assert "## What the reconstruction keeps" in report
  assert "**prosody**" in report and "**naturalness**" in report
  figures = sorted(os.listdir(out / "figures"))
  assert len(figures) == 2 and all(f.endswith(".png") for f in figures)
  assert (out / "figures" / figures[0]).read_bytes()[:4] == b"\x89PNG"
  assert os.path.exists(out / "audio" / "model")
  # The page to listen: one player per system and the original, a
  # spectrogram beside each, relative paths only.
  page = (out / "report.html").read_text()
  first = sorted(r["id"] for r in saved["model"]["items"])[0]
  for system in ("reference", "model", "oracle_griffin_lim", "analytic"):
    assert f'src="audio/{system}/{first}.wav"' in page
    assert (out / "spectrograms" / system / f"{first}.png").exists()
  # The page tells nothing of where it was made (report.md does).
  assert str(out) not in page and str(tmp_path) not in page
  assert command in report
  assert os.path.relpath(tiny_export, out) in page
  with open(out / "profile.json") as f:
    prof = json.load(f)
  assert prof["retention"] == {} and prof["num_items"] == n
  assert set(prof["seconds"]) == {"prosody", "naturalness"}


def test_metrics_values_on_known_signals():
  rng = np.random.default_rng(0)
  x = rng.standard_normal(16000).astype(np.float32) * 0.1
  assert metrics.lsd_db(x, x) == pytest.approx(0.0, abs=1e-4)
  assert metrics.mcd_db(x, x) == pytest.approx(0.0, abs=1e-4)
  assert metrics.spectral_convergence(x, x) == pytest.approx(0.0, abs=1e-5)
  # Halving the amplitude shifts every log-magnitude by 20 log10(2) dB.
  assert metrics.lsd_db(x, 0.5 * x) == pytest.approx(20 * np.log10(2), abs=1e-3)
  assert metrics.spectral_convergence(x, 0.5 * x) == pytest.approx(0.5,
                                                                   abs=1e-4)
  # A gain changes only c0 of the cepstrum, which MCD leaves out.
  assert metrics.mcd_db(x, 0.5 * x) == pytest.approx(0.0, abs=1e-3)
  assert metrics.lsd_db_from_log(np.zeros((2, 3)), np.ones((2, 3))) == (
      pytest.approx(20 / np.log(10)))


def test_mcd_filterbank_is_htk_triangles_in_hertz_and_values_are_kept():
  config = spectral.DEFAULT
  w = metrics._mel_matrix(config.sample_rate, config.fft_length, 80)
  mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)
  edges = 700.0 * (10.0 ** (np.linspace(0.0, mel(config.sample_rate / 2),
                                        82) / 2595.0) - 1.0)
  f = np.linspace(0, config.sample_rate / 2, config.num_bins)[:, None]
  expected = np.maximum(0.0, np.minimum((f - edges[:-2]) /
                                        (edges[1:-1] - edges[:-2]),
                                        (edges[2:] - f) /
                                        (edges[2:] - edges[1:-1])))
  np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)
  # The published mcd_db figures were made with this filterbank: a value
  # pinned on a speech-like signal against a delayed, quieter copy.
  x = corpus.speechlike_audio(2.0, seed=0)
  assert metrics.mcd_db(x, 0.7 * np.roll(x, 40)) == pytest.approx(
      17.834983786477, rel=1e-9)


def test_mismatched_model_and_data_fail_clearly(tiny_export, tmp_path):
  from tests import data_testlib  # pylint: disable=g-import-not-at-top
  data_testlib.write_tiny_dataset(tmp_path / "d", {"train": [10], "test": [8]},
                                  dim=5, bins=spectral.DEFAULT.num_bins)
  with pytest.raises(ValueError, match="dimension"):
    evaluate_lib.evaluate(tiny_export, str(tmp_path / "d"), "test",
                          str(tmp_path / "o"), progress=False)


def test_speaker_metrics_with_a_speaker_encoder_embedder(speech_corpus,
                                                         tmp_path):
  """Tiny encoder -> preprocessing through it -> decoder -> speaker metrics."""
  from e2s_tf.configs import speaker_encoder as encoder_config  # pylint: disable=g-import-not-at-top
  from e2s_tf import preprocess_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf.speaker import export as speaker_export  # pylint: disable=g-import-not-at-top
  from e2s_tf.speaker import training as speaker_training  # pylint: disable=g-import-not-at-top
  from tests import data_testlib  # pylint: disable=g-import-not-at-top
  config = encoder_config.get_config("testing")
  speaker_training.train(config, speech_corpus, str(tmp_path / "enc"),
                         log=lambda *_: None)
  encoder_dir = str(tmp_path / "enc_export")
  speaker_export.export(str(tmp_path / "enc"), encoder_dir)
  data_dir = str(tmp_path / "data")
  preprocess_lib.run_preprocess(
      speech_corpus, data_dir, "savedmodel:" + encoder_dir,
      split_by="utterance", valid_fraction=0.0, test_fraction=0.25,
      num_workers=1, progress=False)
  export_dir = data_testlib.train_and_export("cnn", data_dir,
                                             str(tmp_path / "dec"))
  result = evaluate_lib.evaluate(export_dir, data_dir,
                                 "test", str(tmp_path / "eval"),
                                 num_figures=0, num_audio=0, progress=False,
                                 aspects=("identity",))
  assert set(result) == {"model", "oracle_griffin_lim", "reference"}
  # Every reconstruction is a trial against every original: an EER.
  for system in ("model", "oracle_griffin_lim"):
    assert 0.0 <= result[system]["speaker_eer"] <= 1.0
  n = result["model"]["num_items"]
  for system in result.values():
    assert 0.0 <= system["speaker_id_accuracy"] <= 1.0
    assert -1.0 <= system["speaker_cosine"] <= 1.0
    correct = [row["speaker_id_correct"] for row in system["items"]]
    assert len(correct) == n
    np.testing.assert_allclose(system["speaker_id_accuracy"], np.mean(correct))
  # The originals are themselves: cosine 1.
  np.testing.assert_allclose(result["reference"]["speaker_cosine"], 1.0,
                             atol=1e-5)
  # The true magnitude keeps the voice closer than an untrained decoder.
  assert (result["oracle_griffin_lim"]["speaker_cosine"] >
          result["model"]["speaker_cosine"])
  report = (tmp_path / "eval" / "report.md").read_text()
  assert "speaker_id_accuracy" in report and "| reference |" in report


def test_record_ids_never_write_outside_out_dir(speech_data, tiny_export,
                                               tmp_path):
  """Bad stored ids are skipped and reported; repeats get their own files."""
  escape = tmp_path / "escape"
  data = write_relabelled_split(
      speech_data, tmp_path / "data",
      ["../../escape", str(escape), "a/b", "dup", "dup"])
  out = tmp_path / "deep" / "eval"
  run = _evaluate(f"--model={tiny_export}", f"--data_dir={data}",
                  "--split=test", f"--out_dir={out}", "--systems=model",
                  "--num_audio=3", "--num_figures=3", "--aspects=")
  assert run.returncode == 1, run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  assert run.stderr.strip().splitlines()[-1] == (
      "evaluate: error: 2 items skipped (ids that cannot be file names; listed "
      "above and in report.md)")
  for bad in ("../../escape", str(escape)):
    assert f"item {bad!r} skipped" in run.stderr
  # Every system's audio and the reference in their own folders, one file
  # per item, nothing outside the output folder.
  assert _files(tmp_path / "deep") == sorted([
      "eval/.e2s.lock", "eval/metrics.json", "eval/report.md",
      "eval/profile.json", "eval/report.html",
      "eval/spectrograms/model/a/b.png", "eval/spectrograms/model/dup.png",
      "eval/spectrograms/model/dup-2.png",
      "eval/spectrograms/reference/a/b.png",
      "eval/spectrograms/reference/dup.png",
      "eval/spectrograms/reference/dup-2.png",
      "eval/audio/model/a/b.wav", "eval/audio/model/dup.wav",
      "eval/audio/model/dup-2.wav", "eval/audio/reference/a/b.wav",
      "eval/audio/reference/dup.wav", "eval/audio/reference/dup-2.wav",
      "eval/figures/a/b.png", "eval/figures/dup.png",
      "eval/figures/dup-2.png"])
  assert not os.path.exists(f"{escape}.wav")
  with open(out / "metrics.json") as f:
    saved = json.load(f)
  assert saved["model"]["num_items"] == 3
  assert saved["model"]["num_skipped"] == 2
  assert [r["id"] for r in saved["model"]["items"]] == ["a/b", "dup", "dup"]
  assert "- skipped: 2 items" in (out / "report.md").read_text()


def test_cli_names_a_corrupted_shard_and_a_missing_export(
    speech_data, tiny_export, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(speech_data, data)
  shard = records.split_files(str(data), "test")[0]
  with open(shard, "r+b") as f:  # flip bytes inside the first record
    f.seek(40)
    byte = f.read(8)
    f.seek(40)
    f.write(bytes(b ^ 0xFF for b in byte))
  run = _evaluate(f"--model={tiny_export}", f"--data_dir={data}",
                  "--split=test", f"--out_dir={tmp_path / 'eval'}")
  assert run.returncode == 1
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith(f"evaluate: error: {shard} is truncated or "
                         "corrupted (")
  assert "Traceback" not in run.stderr and "DataLossError" not in run.stderr

  missing = tmp_path / "no_export"
  missing.mkdir()
  run = _evaluate(f"--model={missing}", f"--data_dir={speech_data}",
                  f"--out_dir={tmp_path / 'eval2'}")
  assert run.returncode == 1
  assert run.stderr.strip().splitlines()[-1] == (
      f"evaluate: error: {missing}/e2s_export.json not found: is "
      f"{str(missing)!r} an output of e2s_tf.export?")
  assert not (tmp_path / "eval2").exists()


def test_an_out_dir_in_use_is_refused(speech_data, tiny_export, tmp_path):
  out = tmp_path / "out"
  with fileio.FolderLock(str(out), "evaluate"):
    with pytest.raises(fileio.FolderInUse, match=f"pid {os.getpid()}"):
      evaluate_lib.evaluate(tiny_export, speech_data, "test", str(out),
                            max_items=1, progress=False)
  assert os.listdir(out) == [fileio.LOCK_FILE]


def test_a_floor_gives_the_retention_table_and_figure(speech_corpus,
                                                      speech_data,
                                                      tiny_export, tmp_path):
  """An `energy` decoder as the floor: its own row, and the model placed
  between it and the oracle per aspect."""
  from e2s_tf import preprocess_lib  # pylint: disable=g-import-not-at-top
  from tests import data_testlib  # pylint: disable=g-import-not-at-top
  energy = str(tmp_path / "energy")
  # The same items and split as speech_data, through the energy embedder.
  preprocess_lib.run_preprocess(speech_corpus, energy, "energy",
                                split_by="utterance", valid_fraction=0.2,
                                test_fraction=0.2, seed=0, num_workers=1,
                                progress=False)
  floor = data_testlib.train_and_export("cnn", energy, str(tmp_path / "f"))
  out = tmp_path / "eval"
  result = evaluate_lib.evaluate(tiny_export, speech_data, "test", str(out),
                                 num_figures=0, num_audio=1, progress=False,
                                 floor=floor, aspects=("naturalness",))
  assert list(result) == ["reference", "model", "oracle_griffin_lim",
                          "analytic", "floor"]
  assert result["floor"]["num_items"] == result["model"]["num_items"]
  with open(out / "profile.json") as f:
    retention = json.load(f)["retention"]
  assert list(retention) == ["naturalness"]
  r = retention["naturalness"]
  assert r["metric"] == "dnsmos_ovr"
  assert r["model"] == result["model"]["dnsmos_ovr"]
  assert r["floor"] == result["floor"]["dnsmos_ovr"]
  assert r["oracle"] == result["oracle_griffin_lim"]["dnsmos_ovr"]
  assert r["retention"] == pytest.approx(
      (r["model"] - r["floor"]) / (r["oracle"] - r["floor"]))
  assert (out / "retention.png").read_bytes()[:4] == b"\x89PNG"
  report = (out / "report.md").read_text()
  assert "**retention** (0 = floor, 1 = oracle)" in report
  assert "| naturalness | dnsmos_ovr |" in report
  assert 'src="retention.png"' in (out / "report.html").read_text()
  assert os.path.exists(out / "audio" / "floor")


def test_a_floor_that_is_not_usable_is_refused_clearly(speech_data,
                                                       tiny_export, tmp_path):
  with pytest.raises(ValueError, match=r"--floor=.*nothere: not a decoder "
                     "export"):
    evaluate_lib.evaluate(tiny_export, speech_data, "test",
                          str(tmp_path / "o"), floor=str(tmp_path / "nothere"),
                          progress=False)
  for flag, value in [("speaker_judge", tiny_export),
                      ("content_judge", tiny_export)]:
    with pytest.raises(ValueError, match=f"--{flag}=.*: no .*json there"):
      evaluate_lib.evaluate(tiny_export, speech_data, "test",
                            str(tmp_path / "o"), progress=False,
                            **{flag: value})
  with pytest.raises(ValueError, match="--word_judge=whisper: unknown"):
    evaluate_lib.evaluate(tiny_export, speech_data, "test",
                          str(tmp_path / "o"), word_judge="whisper",
                          progress=False)
  assert not (tmp_path / "o").exists()


def test_metrics_that_do_not_apply_are_null_and_counted(speech_corpus):
  """Audio too short for DNSMOS or without a voiced frame: n/a for that
  item and aspect, counted, never a crash or a silent 0."""
  from e2s_tf import audio as audio_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf.aspects import profile  # pylint: disable=g-import-not-at-top
  from e2s_tf.aspects import scoring  # pylint: disable=g-import-not-at-top
  item = manifest_lib.read_manifest(speech_corpus)[0]
  speech = audio_lib.load_audio(item["audio"], 16000)
  short = speech[:3200]  # 0.2 s
  items = [{"id": "speech", "audio": speech}, {"id": "short", "audio": short}]
  silence = [np.zeros_like(speech), np.zeros_like(short)]
  rows, extra = scoring.score(items, {"model": silence}, 16000,
                              scoring.Judges(), ("prosody", "naturalness"),
                              enrol_items=list, progress=False)
  assert set(extra["seconds"]) == {"prosody", "naturalness"}
  # The original speech: DNSMOS scores it, the 0.2 s item is too short.
  assert 1.0 <= rows["reference"][0]["dnsmos_ovr"] <= 5.0
  assert rows["reference"][1]["dnsmos_ovr"] is None
  # Silence has no voiced frame: no F0 to compare, for either item.
  assert rows["model"][0]["f0_rmse_cents"] is None
  assert rows["model"][1]["f0_rmse_cents"] is None
  summary = profile.summarize(rows["model"], ["f0_rmse_cents", "dnsmos_ovr"])
  assert summary["f0_rmse_cents"] is None
  assert summary["num_na"] == {"f0_rmse_cents": 2, "dnsmos_ovr": 2}
