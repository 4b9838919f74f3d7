"""How long items are cut into pieces."""

import pytest

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf.preprocessing import pieces

CONFIG = spectral.StftConfig()


def test_plans_cut_only_items_over_the_limit():
  assert pieces.plan_pieces(32000, 2.0, CONFIG) is None
  assert pieces.plan_pieces(10 ** 9, 0, CONFIG) is None
  assert pieces.plan_pieces(32001, 2.0, CONFIG) == {
      "count": 2, "length": 32001, "window": 6400}
  # The fewest pieces whose nominal length is at most 0.8 of the limit.
  assert pieces.plan_pieces(16000 * 40, 16.0, CONFIG)["count"] == 4


def test_piece_ids():
  assert pieces.piece_ids("a/b", 2) == ["a/b/part-000", "a/b/part-001"]
  assert pieces.piece_ids("x", 1001)[-1] == "x/part-1000"
  with pytest.raises(fileio.InvalidItemId, match="at most 200"):
    pieces.piece_ids("x" * 195, 2)


def test_probe_length_from_the_region_or_the_header(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  wav = tmp_path / "a.wav"
  sf.write(wav, np.zeros(8000, np.int16), 8000)
  assert pieces.probe_length({"audio": str(wav)}, 16000) == 16000
  assert pieces.probe_length({"audio": str(wav), "start": 0.25}, 16000) == 12000
  assert pieces.probe_length({"audio": str(wav), "start": 0.25, "end": 0.5},
                             16000) == 4000
  assert pieces.probe_length({"audio": str(tmp_path / "gone.wav")},
                             16000) is None
