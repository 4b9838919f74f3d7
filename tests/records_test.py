"""Tests of reading shards: a damaged one is named."""

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
