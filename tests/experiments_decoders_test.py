"""The decoder experiment: a real (tiny) grid run, and its bookkeeping."""

import json
import math
import os

import pytest

from e2s_tf.experiments import decoders_lib


def test_start_sc_reads_the_first_steps_of_the_training_log():
  lines = ["step 10/40 loss=1.0000 l1=0.5000 spectral_convergence=0.9000",
           "step 50/40 loss=9.0000 spectral_convergence=700.0000 x=1",
           "valid step 50: loss=1.0000 spectral_convergence=9999.0000",
           f"step {decoders_lib.START_STEPS + 10}/40 "
           "spectral_convergence=5000.0000"]
  assert decoders_lib._start_sc(lines) == 700.0
  assert math.isnan(decoders_lib._start_sc(["done: step 3"]))


def _row(embedder, decoder, lsd, mcd, stoi, pesq, spk):
  return {"embedder": embedder, "decoder": decoder, "lsd_db": lsd,
          "mcd_db": mcd, "stoi": stoi, "pesq_wb": pesq,
          "speaker_id_accuracy": spk}


def test_defaults_and_gan_comparison():
  rows = [_row("a", "multiscale", 6.0, 5.0, 0.80, 1.5, 0.9),
          _row("a", "gan", 6.5, 4.8, 0.81, 1.6, 0.9),
          _row("a", "conformer", 5.0, 4.0, 0.85, 1.9, float("nan")),
          _row("b", "multiscale", 5.0, 4.0, 0.90, 2.0, 1.0),
          _row("b", "conformer", 6.0, 5.0, 0.80, 1.5, 1.0)]
  assert decoders_lib.choose_defaults(rows) == {"a": "conformer",
                                                "b": "multiscale"}
  (gan,) = decoders_lib.gan_comparison(rows)
  assert gan["embedder"] == "a" and gan["generator"] == "multiscale"
  assert gan["delta_mcd_db"] == pytest.approx(-0.2)
  assert gan["delta_pesq_wb"] == pytest.approx(0.1)
  assert gan["gan_better"]
  rows[1]["stoi"] = 0.79
  assert not decoders_lib.gan_comparison(rows)[0]["gan_better"]


def test_variants_change_what_they_say():
  base = decoders_lib.decoder_config("conformer", 2.0, quick=False)
  assert base.train.max_minutes == 2.0 and base.model.attention_heads > 0
  half = decoders_lib.decoder_config("conformer", 2.0, False, "half")
  assert half.model.channels == base.model.channels // 2
  double = decoders_lib.decoder_config("conformer", 2.0, False, "double_time")
  assert double.train.max_minutes == 4.0
  off = decoders_lib.decoder_config("conformer", 2.0, False, "no_context")
  assert off.model.attention_heads == 0
  with pytest.raises(ValueError, match="unknown variant"):
    decoders_lib.decoder_config("conformer", 2.0, False, "bigger")


def test_a_tiny_grid_trains_exports_and_scores(tmp_path):
  out = str(tmp_path / "report" / "decoders.md")
  results = decoders_lib.run(
      str(tmp_path / "work"), out, minutes=0.05, max_items=2, quick=True,
      embedders=["logmel"], decoders=["conformer", "conformer_gan"],
      ablation_embedder="logmel", ablation_decoder="conformer",
      ablations=["no_context"], warmup_share=0.5, command="test",
      log=lambda *a: None)
  rows = {r["decoder"]: r for r in results["rows"]}
  assert set(rows) == {"conformer", "conformer_gan"}
  for row in list(rows.values()) + results["ablation"]:
    assert row["steps"] >= 1 and row["eval_items"] == 2
    for key in ("lsd_db", "mcd_db", "stoi", "pesq_wb"):
      assert math.isfinite(row[key]), (row["decoder"], key)
    assert 0.0 < row["stoi"] <= 1.0 and row["lsd_db"] > 0.0
  # The GAN's warm-up is half the steps its generator took alone.
  assert rows["conformer_gan"]["adversarial_start_step"] == max(
      1, rows["conformer"]["steps"] // 2)
  # Without a speaker embedder no judge is trained: no speaker numbers.
  assert results["judge"] is None
  assert math.isnan(rows["conformer"]["speaker_id_accuracy"])
  assert [r["variant"] for r in results["ablation"]] == ["base", "no_context"]
  assert results["ablation"][1]["params_k"] < rows["conformer"]["params_k"]
  assert results["defaults"]["logmel"] in rows
  (gan,) = results["gan"]
  assert gan["delta_mcd_db"] == pytest.approx(
      rows["conformer_gan"]["mcd_db"] - rows["conformer"]["mcd_db"])
  with open(os.path.splitext(out)[0] + ".json") as f:
    saved = json.load(f)
  assert [(r["decoder"], r["steps"], r["mcd_db"]) for r in saved["rows"]] == [
      (r["decoder"], r["steps"], r["mcd_db"]) for r in results["rows"]]
  text = open(out).read()
  assert "| logmel | conformer_gan |" in text and "## Ablation" in text
