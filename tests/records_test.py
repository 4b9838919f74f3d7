"""Tests of the record schema and of reading shards: a damaged one is named."""

import json

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import records
from e2s_tf import spectral


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


CONFIG = spectral.StftConfig()  # the default grid


def _item(rng, frames, dim=4, config=CONFIG):
  return dict(embedding=rng.standard_normal((frames, dim)).astype(np.float32),
              audio=records.stored_audio(
                  rng.uniform(-0.5, 0.5, config.num_samples(frames))),
              num_frames=frames)


def test_read_examples_gives_numpy_values_in_order(tmp_path):
  path = str(tmp_path / "x.tfrecord")
  rng = np.random.default_rng(0)
  written = []
  with tf.io.TFRecordWriter(path) as w:
    for i, frames in enumerate((3, 5)):
      ex = _item(rng, frames)
      w.write(records.serialize_example(f"a/{i}", speaker="spk\u00e9",
                                        speaker_index=i,
                                        text="" if i else "Caf\u00e9 ol\u00e9.",
                                        embedding_dtype="float32", **ex))
      written.append(ex)
  got = list(records.read_examples([path], with_audio=True,
                                   stft_config=CONFIG))
  assert [(g["id"], g["speaker"], g["speaker_index"], g["length"],
           g["embedding_length"]) for g in got] == [
               ("a/0", "spk\u00e9", 0, 3, 3), ("a/1", "spk\u00e9", 1, 5, 5)]
  assert [g["text"] for g in got] == ["Caf\u00e9 ol\u00e9.", ""]
  for g, ex in zip(got, written):
    np.testing.assert_array_equal(g["embedding"], ex["embedding"])
    np.testing.assert_array_equal(g["audio"], ex["audio"])
    assert g["log_stft"].shape == (ex["num_frames"], CONFIG.num_bins)
  plain = next(records.read_examples([path]))
  assert "audio" not in plain and "log_stft" not in plain


def test_pipeline_log_stft_equals_the_numpy_recomputation(tmp_path):
  """The log-STFT a record gives is the NumPy reference's of its audio, on
  the dataset's grid (no log-STFT is stored)."""
  path = str(tmp_path / "x.tfrecord")
  rng = np.random.default_rng(1)
  wide = spectral.StftConfig.original()
  with tf.io.TFRecordWriter(path) as w:
    for frames in (1, 7, 40):
      w.write(records.serialize_example("a", **_item(rng, frames, 3, wide)))
  for g in records.read_examples([path], with_audio=True, stft_config=wide):
    reference = spectral.numpy_log_stft(g["audio"], wide)
    assert reference.shape == g["log_stft"].shape == (g["length"], 257)
    np.testing.assert_allclose(g["log_stft"], reference, atol=2e-3)
    # Away from the floor the two agree much closer.
    loud = reference > np.log(1e-2)
    np.testing.assert_allclose(g["log_stft"][loud], reference[loud],
                               atol=1e-4)


def test_sixteen_bit_audio_is_stored_without_loss():
  rng = np.random.default_rng(2)
  pcm = rng.integers(-32768, 32768, 5000)
  pcm[[7, 8]] = -32768, 32767  # full scale, both ways
  audio = pcm / 32768.0  # what soundfile gives for a 16-bit file
  stored, step = records.quantize_audio(audio)
  assert step == 2.0 ** -15 and stored.dtype == np.dtype("<i2")
  np.testing.assert_array_equal(stored, pcm)
  np.testing.assert_array_equal(records.dequantize_audio(stored, step),
                                audio.astype(np.float32))


def test_loud_audio_takes_a_coarser_step_instead_of_clipping():
  audio = np.array([0.0, 0.25, -3.0, 2.5, 1.0 / 3.0])
  stored, step = records.quantize_audio(audio)
  # The smallest power of two that keeps the peak within 16 bits: 2^-13.
  assert step == 2.0 ** -13
  back = records.dequantize_audio(stored, step)
  np.testing.assert_allclose(back, audio, atol=step / 2)
  assert back[2] == -3.0 and back[3] == 2.5
  # Quantising what a record holds again changes nothing.
  np.testing.assert_array_equal(records.stored_audio(back), back)
  # Just above 16-bit full scale: the next step up, not a clip.
  assert records.quantize_audio([32768 / 32768.0])[1] == 2.0 ** -14
  with pytest.raises(ValueError, match="NaN/Inf"):
    records.quantize_audio([0.0, np.nan])


def test_float16_embeddings_round_to_half_precision_and_refuse_overflow():
  rng = np.random.default_rng(3)
  emb = rng.standard_normal((6, 5)).astype(np.float32) * 7
  audio = np.zeros(CONFIG.num_samples(6), np.float32)
  half = records.serialize_example("h", emb, audio, 6)
  full = records.serialize_example("f", emb, audio, 6,
                                   embedding_dtype="float32")
  # Half the bytes of the embedding (give or take a length varint).
  assert 0 <= len(full) - len(half) - emb.size * 2 <= 4
  got = records.parse_example(tf.constant(half))["embedding"].numpy()
  np.testing.assert_array_equal(got, emb.astype(np.float16).astype(np.float32))
  assert np.max(np.abs(got - emb) / np.abs(emb)) <= 2.0 ** -11
  got = records.parse_example(tf.constant(full))["embedding"].numpy()
  np.testing.assert_array_equal(got, emb)
  with pytest.raises(ValueError, match="does not fit float16.*"
                     "--embedding_dtype=float32"):
    records.serialize_example("big", emb * 1e5, audio, 6)
  with pytest.raises(ValueError, match="embedding_dtype must be one of"):
    records.serialize_example("x", emb, audio, 6, embedding_dtype="int8")


def test_bytes_per_audio_second_on_the_default_grid():
  """100 frames (1.02 s of 16 kHz audio) with a 64-dim embedding: 2 bytes a
  sample, 2 a float16 value, and a few hundred for the rest."""
  frames = 100
  audio = np.zeros(CONFIG.num_samples(frames), np.float32)
  emb = np.zeros((frames, 64), np.float32)
  size = len(records.serialize_example("spk/utt", emb, audio, frames))
  # The names of the features and the small ones: under 400 bytes.
  assert 2 * audio.size + 2 * emb.size < size < 2 * audio.size + 2 * emb.size + 400
  assert size / (audio.size / CONFIG.sample_rate) < 50_000


def test_older_schema_is_refused_with_how_to_rebuild(tmp_path):
  info = {"version": 3, "manifest": "/data/m.jsonl",
          "embedder": {"spec": "logmel"}, "splits": {}}
  (tmp_path / records.DATASET_INFO).write_text(json.dumps(info))
  with pytest.raises(records.SchemaError) as e:
    records.read_dataset_info(str(tmp_path))
  message = str(e.value)
  assert message.startswith(f"{tmp_path / records.DATASET_INFO}: its records "
                            "are of schema version 3")
  assert (f"python -m e2s_tf.preprocess --manifest=/data/m.jsonl "
          f"--out_dir={tmp_path} --embedder=logmel") in message
  info["version"] = records.SCHEMA_VERSION + 1
  (tmp_path / records.DATASET_INFO).write_text(json.dumps(info))
  with pytest.raises(records.SchemaError, match="another version of e2s_tf"):
    records.read_dataset_info(str(tmp_path))


def test_a_record_of_the_previous_schema_is_named(tmp_path):
  """A shard of version 3 (float32 audio and a stored log_stft) read on its
  own: the error names the shard and says to re-run preprocess."""
  path = tmp_path / "old.tfrecord"
  feature = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
  integer = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
  old = tf.train.Example(features=tf.train.Features(feature={
      "id": feature(b"a"), "num_frames": integer(1),
      "embedding_frames": integer(1), "embedding_dim": integer(1),
      "num_bins": integer(257), "num_samples": integer(400),
      "embedding": feature(np.zeros(1, "<f4").tobytes()),
      "log_stft": feature(np.zeros(257, "<f4").tobytes()),
      "audio": feature(np.zeros(400, "<f4").tobytes())}))
  with tf.io.TFRecordWriter(str(path)) as w:
    w.write(old.SerializeToString())
  with pytest.raises(records.SchemaError) as e:
    list(records.read_examples([str(path)]))
  assert str(e.value).startswith(f"{path}: a record cannot be parsed")
  assert "re-run e2s_tf.preprocess" in str(e.value)
