"""The two experiments in --quick mode produce well-formed tables."""

import json
import os

import numpy as np

from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.experiments import common
from e2s_tf.experiments import framing_lib as framing
from e2s_tf.experiments import padding_lib as padding


def _check_table(path, first_column, names, columns):
  text = open(path).read()
  assert "- command: `" in text and "- machine: " in text
  lines = [l for l in text.splitlines() if l.startswith("|")]
  assert len(lines) == 2 + len(names)
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  assert header[0] == first_column and len(header) == len(columns)
  for line, name in zip(lines[2:], names):
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[0] == name and len(cells) == len(columns)
  with open(os.path.splitext(path)[0] + ".json") as f:
    rows = json.load(f)["rows"]
  for row in rows:
    assert row["lsd_db"] > 0 and np.isfinite(row["lsd_db"])
    assert row["train_frames_per_sec"] > 0
  return rows


def test_padding_quick(speech_data, tmp_path):
  out = str(tmp_path / "padding.md")
  modes = ("bucket", "repeat_longest")  # two of five, to stay fast
  padding.run(str(tmp_path / "w"), speech_data, out, steps=2, max_items=2,
              quick=True, modes=modes, command="test")
  rows = _check_table(out, "mode", modes, padding.COLUMNS)
  by_mode = {r["mode"]: r for r in rows}
  assert by_mode["repeat_longest"]["filler_share"] > by_mode["bucket"][
      "filler_share"]
  assert by_mode["bucket"]["discarded_share"] == 0.0


def test_framing_quick(speech_data, tmp_path):
  out = str(tmp_path / "framing.md")
  variants = ["window_512", "shift_-1"]  # two of four, to stay fast
  framing.run(str(tmp_path / "w"), speech_data, out, steps=2, max_items=2,
              quick=True, command="test", variants=variants)
  rows = _check_table(out, "STFT framing", variants, framing.COLUMNS)
  assert [r["offset_ms"] for r in rows] == [1.0, -10.0]
  assert [r["window"] for r in rows] == [512, 480]


def test_derived_datasets_pair_the_intended_frames(speech_data, tmp_path):
  stft = spectral.StftConfig()
  variants = framing._variants(stft)  # pylint: disable=protected-access
  for name in ("shift_+1", "window_512"):
    cfg, transform, _ = variants[name]
    out = common.derive_dataset(speech_data, str(tmp_path / name), cfg,
                                transform)
    base = {ex["id"]: ex for ex in records.read_examples(
        records.split_files(speech_data, "train"), with_audio=True,
        stft_config=stft)}
    for ex in records.read_examples(records.split_files(out, "train"),
                                    with_audio=True, stft_config=cfg):
      src = base[ex["id"]]
      t = ex["length"]
      # The stored STFT is always the STFT of the stored audio on cfg's grid.
      np.testing.assert_allclose(
          spectral.log_stft(ex["audio"], cfg).numpy()[:, :40],
          ex["log_stft"][:, :40], atol=1e-3)
      if name == "shift_+1":
        np.testing.assert_array_equal(ex["embedding"],
                                      src["embedding"][:t])
        np.testing.assert_allclose(ex["log_stft"], src["log_stft"][1:t + 1],
                                   atol=1e-5)
      else:
        assert t == src["length"] - 1
