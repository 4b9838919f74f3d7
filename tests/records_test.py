"""Tests of reading shards: a damaged one is named."""

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import records


def _write(path, count=5):
  with tf.io.TFRecordWriter(str(path)) as w:
    for i in range(count):
      w.write(bytes([i]) * 1000)


def test_iterate_records_reads_every_shard_in_order(tmp_path):
  _write(tmp_path / "a.tfrecord", 2)
  _write(tmp_path / "b.tfrecord", 3)
  got = [r.numpy()[0] for r in records.iterate_records(
      [str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")])]
  assert got == [0, 1, 0, 1, 2]
  assert records.find_corrupt_shard([str(tmp_path / "a.tfrecord")]) is None


@pytest.mark.parametrize("damage, reason", [("truncate", "truncated record"),
                                            ("flip", "corrupted record")])
def test_damaged_shard_is_named(tmp_path, damage, reason):
  good, bad = tmp_path / "good.tfrecord", tmp_path / "bad.tfrecord"
  _write(good)
  _write(bad)
  data = bytearray(bad.read_bytes())
  if damage == "truncate":
    data = data[:2500]
  else:
    data[1500] ^= 1
  bad.write_bytes(bytes(data))
  with pytest.raises(records.CorruptShardError) as e:
    list(records.iterate_records([str(good), str(bad)]))
  assert str(e.value).startswith(f"{bad} is truncated or corrupted ({reason}")
  assert "e2s_tf.preprocess" in str(e.value)
  found = records.find_corrupt_shard([str(good), str(bad)])
  assert str(found) == str(e.value)


def test_read_examples_gives_numpy_values_in_order(tmp_path):
  path = str(tmp_path / "x.tfrecord")
  rng = np.random.default_rng(0)
  written = []
  with tf.io.TFRecordWriter(path) as w:
    for i, frames in enumerate((3, 5)):
      ex = dict(embedding=rng.standard_normal((frames, 4)).astype(np.float32),
                log_stft=rng.standard_normal((frames, 6)).astype(np.float32),
                audio=rng.standard_normal(100 + frames).astype(np.float32))
      w.write(records.serialize_example(f"a/{i}", speaker="spk\u00e9",
                                        speaker_index=i,
                                        text="" if i else "Caf\u00e9 ol\u00e9.",
                                        **ex))
      written.append(ex)
  got = list(records.read_examples([path], with_audio=True))
  assert [(g["id"], g["speaker"], g["speaker_index"], g["length"])
          for g in got] == [("a/0", "spk\u00e9", 0, 3),
                            ("a/1", "spk\u00e9", 1, 5)]
  assert [g["text"] for g in got] == ["Caf\u00e9 ol\u00e9.", ""]
  for g, ex in zip(got, written):
    for key, value in ex.items():
      np.testing.assert_array_equal(g[key], value)
  assert "audio" not in next(records.read_examples([path]))


def test_records_without_text_read_as_empty_text(tmp_path):
  """Records written before `text` (schema 2) parse, with text ''."""
  path = str(tmp_path / "old.tfrecord")
  serialized = records.serialize_example(
      "a", np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32),
      np.zeros(10, np.float32), text="dropped below")
  example = tf.train.Example.FromString(serialized)
  del example.features.feature["text"]
  with tf.io.TFRecordWriter(path) as w:
    w.write(example.SerializeToString())
  (got,) = records.read_examples([path])
  assert got["text"] == "" and got["id"] == "a"
