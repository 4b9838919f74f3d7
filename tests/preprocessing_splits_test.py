"""The train/valid/test split."""

import pytest

from e2s_tf.preprocessing import splits


def _items(n, speakers=3):
  return [{"id": f"u{i}", "speaker": f"s{i % speakers}"} for i in range(n)]


def test_utterance_split_is_deterministic_for_a_seed():
  items = _items(6)
  a = splits.assign_splits(items, "utterance", 0.2, 0.2, seed=3)
  b = splits.assign_splits(items, "utterance", 0.2, 0.2, seed=3)
  c = [splits.assign_splits(items, "utterance", 0.2, 0.2, seed=s)
       for s in range(4, 10)]
  assert a == b
  assert sorted(a.values()).count("test") == 1
  assert sorted(a.values()).count("valid") == 1
  assert any(a != other for other in c)


def test_speaker_split_holds_out_whole_speakers():
  items = _items(12, speakers=4)
  split_of = splits.assign_splits(items, "speaker", 0.25, 0.25, seed=0)
  by_speaker = {}
  for it in items:
    by_speaker.setdefault(it["speaker"], set()).add(split_of[it["id"]])
  assert all(len(s) == 1 for s in by_speaker.values()), by_speaker
  assert sorted(s.pop() for s in by_speaker.values()) == [
      "test", "train", "train", "valid"]


def test_bad_splits_are_refused():
  with pytest.raises(ValueError, match="needs a speaker for every item"):
    splits.assign_splits([{"id": "a"}], "speaker", 0.1, 0.1, seed=0)
  with pytest.raises(ValueError, match="too few"):
    splits.assign_splits(_items(4), "utterance", 0.45, 0.45, seed=0)
  with pytest.raises(ValueError, match="split_by"):
    splits.assign_splits(_items(3), "speakers", 0.1, 0.1, seed=0)
