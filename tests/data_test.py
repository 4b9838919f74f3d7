"""Tests of e2s_tf.data: values through the pipeline, batching modes, filler."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import batching
from e2s_tf import data
from e2s_tf import records
from e2s_tf import spectral
from tests import data_testlib

FRAME, ITEM = data_testlib.FRAME_COLUMN, data_testlib.ITEM_COLUMN
ALL_MODES = sorted(batching.MODES)
AUDIO_MODES = sorted(m for m, s in batching.MODES.items()
                     if s.supports_audio)
# Lengths with a spread: short, long, and one shorter than the crop below.
LENGTHS = {"train": [7, 12, 3, 20, 9, 15, 5, 11], "valid": [6, 14, 4]}
CROP = 6
BATCH = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return data_testlib.write_tiny_dataset(
      tmp_path_factory.mktemp("tiny"), LENGTHS, dim=4, bins=5, speakers=3,
      seed=1)


def _batches(tiny, split="train", **kwargs):
  kwargs = {"deterministic": True, "batch_size": BATCH, "crop_frames": CROP,
            "frames_per_batch": 40, **kwargs}
  ds = data.make_dataset(tiny.data_dir, split, **kwargs)
  return list(ds.as_numpy_iterator())


def _frames(stream, column):
  """Label column of raw frames `[frames, width]` as ints."""
  labels = stream[:, column]
  np.testing.assert_allclose(labels, np.round(labels), atol=1e-3)
  return np.round(labels).astype(int)


def _check_batch(batch, tiny, normalizer):
  """Checks what every mode guarantees; returns (item, frames) per row."""
  items = tiny.by_id()
  b, t = batch["mask"].shape
  assert batch["embedding"].shape == (b, t, 4)
  assert batch["log_stft"].shape == (b, t, 5)
  assert batch["embedding"].dtype == np.float32
  assert batch["length"].dtype == np.int32
  np.testing.assert_array_equal(
      batch["mask"], np.arange(t)[None, :] < batch["length"][:, None])
  rows = []
  for i in range(b):
    item = items[batch["id"][i].decode()]
    n = batch["length"][i]
    embedding = normalizer.denormalize_embedding(batch["embedding"][i, :n])
    log_stft = normalizer.denormalize_log_stft(batch["log_stft"][i, :n])
    frames = _frames(embedding, FRAME)
    # Both streams carry the same frames of the same item, with exact values
    # (the log-STFT, computed from the record's audio, differs from frame to
    # frame and from item to item).
    np.testing.assert_array_equal(_frames(embedding, ITEM), item.number)
    np.testing.assert_allclose(embedding, item.embedding[frames], atol=1e-4)
    np.testing.assert_allclose(log_stft, item.log_stft[frames], atol=1e-4)
    # Padding: the mean embedding (0) and normalised log-silence.
    np.testing.assert_array_equal(batch["embedding"][i, n:], 0.0)
    np.testing.assert_allclose(
        batch["log_stft"][i, n:],
        np.broadcast_to(normalizer.log_silence, (t - n, 5)), rtol=1e-6)
    rows.append((item, frames))
  return rows


def _expect_bucket(rows, batch, tiny):
  assert batch["mask"].shape[1] == max(item.length for item, _ in rows)
  for item, frames in rows:
    np.testing.assert_array_equal(frames, np.arange(item.length))


def _expect_crop(rows, batch, tiny):
  assert batch["mask"].shape[1] == CROP
  for item, frames in rows:
    n = min(item.length, CROP)
    assert len(frames) == n and 0 <= frames[0] <= item.length - n
    np.testing.assert_array_equal(frames, frames[0] + np.arange(n))


def _expect_repeat_longest(rows, batch, tiny):
  longest = max(item.length for item, _ in rows)
  assert batch["mask"].shape[1] == longest
  np.testing.assert_array_equal(batch["mask"], 1.0)
  for item, frames in rows:
    np.testing.assert_array_equal(frames, np.arange(longest) % item.length)


def _expect_crop_shortest(rows, batch, tiny):
  shortest = min(item.length for item, _ in rows)
  assert batch["mask"].shape[1] == shortest
  np.testing.assert_array_equal(batch["mask"], 1.0)
  for _, frames in rows:
    np.testing.assert_array_equal(frames, np.arange(shortest))


def _expect_mean_length(rows, batch, tiny):
  mean = round(np.mean(LENGTHS["train"]))
  assert batch["mask"].shape[1] == mean
  np.testing.assert_array_equal(batch["mask"], 1.0)
  for item, frames in rows:
    start = frames[0]
    assert 0 <= start <= max(item.length - mean, 0)
    np.testing.assert_array_equal(frames,
                                  (start + np.arange(mean)) % item.length)


EXPECTATIONS = {
    "bucket": _expect_bucket,
    "crop": _expect_crop,
    "repeat_longest": _expect_repeat_longest,
    "crop_shortest": _expect_crop_shortest,
    "mean_length": _expect_mean_length,
}


def test_every_mode_has_expectations():
  assert set(EXPECTATIONS) == set(batching.MODES)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("split", ["train", "valid"])
def test_mode_delivers_the_right_frames(tiny, mode, split):
  normalizer = data.Normalizer.from_info(tiny.info)
  batches = _batches(tiny, split, mode=mode, shuffle=True)
  seen = []
  for batch in batches:
    rows = _check_batch(batch, tiny, normalizer)
    EXPECTATIONS[mode](rows, batch, tiny)
    seen += [item.id for item, _ in rows]
  # One epoch: every item exactly once.
  assert sorted(seen) == sorted(item.id for item in tiny.items[split])


def test_normalizer_round_trip_and_stats(tiny):
  normalizer = data.Normalizer.from_data_dir(tiny.data_dir)
  train = np.concatenate([i.embedding for i in tiny.items["train"]])
  spec = np.concatenate([i.log_stft for i in tiny.items["train"]])
  # Train-split statistics: normalised train frames have mean 0 and std 1.
  normalized = normalizer.normalize_embedding(train)
  np.testing.assert_allclose(normalized.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(normalized.std(0), 1, atol=1e-4)
  normalized = normalizer.normalize_log_stft(spec)
  np.testing.assert_allclose(normalized.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(normalized.std(0), 1, atol=1e-4)
  x = tf.constant(spec)
  back = normalizer.denormalize_log_stft(normalizer.normalize_log_stft(x))
  assert isinstance(back, tf.Tensor)
  np.testing.assert_allclose(back.numpy(), spec, atol=1e-4)
  np.testing.assert_allclose(
      normalizer.log_silence,
      (spectral.LOG_SILENCE - spec.mean(0)) / spec.std(0), rtol=1e-4)
  assert (normalizer.embedding_dim, normalizer.num_bins) == (4, 5)


def test_normalizer_refuses_a_std_that_is_not_positive():
  info = {"stats": {"embedding_mean": [1.0, 2.0], "embedding_std": [1e-3, 2.0],
                    "log_stft_mean": [0.0], "log_stft_std": [1.0]}}
  normalizer = data.Normalizer.from_info(info)
  out = normalizer.normalize_embedding(np.array([[1.0, 4.0]], np.float32))
  np.testing.assert_allclose(out, [[0.0, 1.0]])
  # The statistics are used as written (preprocessing floored them).
  np.testing.assert_array_equal(normalizer.embedding_std,
                                np.float32([1e-3, 2.0]))
  info["stats"]["embedding_std"] = [0.5, 0.0]
  with pytest.raises(ValueError, match="dataset_info.json: embedding_std must "
                     "be positive, got 0.0 at index 1; re-run e2s_tf.preprocess"):
    data.Normalizer.from_info(info)
  with pytest.raises(ValueError, match="stats"):
    data.Normalizer.from_info({"stats": {"embedding_mean": [0.0]}})


def test_unnormalized_batches_hold_raw_values_and_log_silence(tiny):
  batch = _batches(tiny, "valid", mode="bucket", normalize=False,
                   shuffle=False)[0]
  items = tiny.by_id()
  for i, item_id in enumerate(batch["id"]):
    item = items[item_id.decode()]
    n = item.length
    np.testing.assert_array_equal(batch["embedding"][i, :n], item.embedding)
    np.testing.assert_array_equal(batch["log_stft"][i, :n], item.log_stft)
    np.testing.assert_array_equal(batch["embedding"][i, n:], 0.0)
    np.testing.assert_allclose(batch["log_stft"][i, n:], spectral.LOG_SILENCE)


def test_bucket_batches_respect_the_frame_budget(tiny):
  budget = 20
  bounds = batching._train_bounds(tiny.data_dir, tiny.info, 4, budget)
  assert bounds == sorted(set(bounds)) and bounds[-1] == max(LENGTHS["train"])
  sizes = batching.bucket_batch_sizes(bounds, budget)
  assert sizes == [max(1, budget // b) for b in bounds]
  assert len(set(sizes)) > 1  # short items come in larger batches
  batches = _batches(tiny, mode="bucket", frames_per_batch=budget,
                     max_buckets=4, shuffle=False)
  for batch in batches:
    b, t = batch["mask"].shape
    assert b * t <= budget
  assert len({b["mask"].shape[0] for b in batches}) > 1


@pytest.mark.parametrize("split", ["train", "valid"])
def test_long_items_are_cut_into_windows_within_the_budget(tiny, split):
  # Items of up to 20 frames, a budget of 8: no batch above 8 frames (padding
  # included), and every source frame arrives exactly once, with its audio.
  budget = 8
  batches = _batches(tiny, split, mode="bucket", frames_per_batch=budget,
                     max_frames=budget, shuffle=False, with_audio=True)
  normalizer = data.Normalizer.from_info(tiny.info)
  seen = {}
  for batch in batches:
    b, t = batch["mask"].shape
    assert b * t <= budget
    for i, (item, frames) in enumerate(_check_batch(batch, tiny, normalizer)):
      assert len(frames) <= budget
      np.testing.assert_array_equal(frames, frames[0] + np.arange(len(frames)))
      seen.setdefault(item.id, []).extend(frames.tolist())
      samples = tiny.stft.num_samples(len(frames))
      start = frames[0] * tiny.stft.frame_step
      np.testing.assert_array_equal(batch["audio"][i, :samples],
                                    item.audio[start:start + samples])
  for item in tiny.items[split]:
    assert sorted(seen[item.id]) == list(range(item.length)), item.id
  # Windows are as equal as possible: 20 frames in 3 windows of 6-7, not
  # 8 + 8 + 4.
  ds = batching.cut_into_windows(
      tf.data.Dataset.from_tensors({
          "length": tf.constant(20), "embedding": tf.zeros([20, 2]),
          "log_stft": tf.zeros([20, 3])}), budget, tiny.stft)
  assert [int(w["length"]) for w in ds] == [6, 7, 7]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_seeded_order_and_windows_are_reproducible(tiny, mode):
  first = _batches(tiny, mode=mode, seed=3)
  again = _batches(tiny, mode=mode, seed=3)
  assert len(first) == len(again)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["id"], b["id"])
    np.testing.assert_array_equal(a["embedding"], b["embedding"])


def test_crop_windows_are_random_but_seeded(tiny):
  def starts(seed):
    out = {}
    for batch in _batches(tiny, mode="crop", seed=seed, normalize=False):
      for i, item_id in enumerate(batch["id"]):
        out[item_id] = int(batch["embedding"][i, 0, FRAME])
    return out
  a, b = starts(0), starts(1)
  assert a == starts(0)
  assert a != b  # another seed picks other windows
  assert max(a.values()) > 0  # not always the first frames


@pytest.mark.parametrize("mode", AUDIO_MODES)
def test_audio_covers_the_delivered_frames(tiny, mode):
  for batch in _batches(tiny, "valid", mode=mode, with_audio=True,
                        normalize=False):
    for i in range(len(batch["id"])):
      n = batch["length"][i]
      start = int(batch["embedding"][i, 0, FRAME]) * tiny.stft.frame_step
      samples = tiny.stft.num_samples(n)
      assert batch["audio_length"][i] == samples
      audio = tiny.by_id()[batch["id"][i].decode()].audio
      np.testing.assert_array_equal(batch["audio"][i, :samples],
                                    audio[start:start + samples])
      np.testing.assert_array_equal(batch["audio"][i, samples:], 0.0)


@pytest.mark.parametrize("mode", sorted(set(ALL_MODES) - set(AUDIO_MODES)))
def test_audio_is_refused_where_frames_repeat(tiny, mode):
  with pytest.raises(ValueError, match="with_audio"):
    data.make_dataset(tiny.data_dir, "train", mode=mode, with_audio=True)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_speaker_indices(tiny, mode):
  items = tiny.by_id()
  batches = _batches(tiny, mode=mode, with_speaker=True)
  for batch in batches:
    assert batch["speaker"].dtype == np.int32
    expected = [items[i.decode()].speaker_index for i in batch["id"]]
    np.testing.assert_array_equal(batch["speaker"], expected)
  assert "speaker" not in _batches(tiny, mode=mode)[0]


def test_speaker_requested_without_speakers_fails(tmp_path):
  tiny = data_testlib.write_tiny_dataset(tmp_path, {"train": [3, 4]}, dim=2,
                                         bins=3)
  with pytest.raises(ValueError, match="no speakers"):
    data.make_dataset(tiny.data_dir, "train", with_speaker=True)


def test_bad_arguments_fail_clearly(tiny, tmp_path):
  with pytest.raises(ValueError, match="unknown batching mode 'pad'"):
    data.make_dataset(tiny.data_dir, "train", mode="pad")
  with pytest.raises(ValueError, match="split 'test'"):
    data.make_dataset(tiny.data_dir, "test")
  with pytest.raises(FileNotFoundError, match="dataset_info.json"):
    data.make_dataset(str(tmp_path), "train")


def test_item_with_wrong_dim_names_the_item(tmp_path):
  tiny = data_testlib.write_tiny_dataset(tmp_path, {"train": [3, 4]}, dim=2,
                                         bins=3)
  info = dict(tiny.info, embedder=dict(tiny.info["embedder"], dim=3))
  info["stats"] = dict(info["stats"], embedding_mean=[0.0] * 3,
                       embedding_std=[1.0] * 3)
  with open(os.path.join(tiny.data_dir, records.DATASET_INFO), "w") as f:
    json.dump(info, f)
  with pytest.raises(tf.errors.InvalidArgumentError, match="train-000"):
    _batches(tiny)


def test_repeat_runs_past_one_epoch(tiny):
  ds = data.make_dataset(tiny.data_dir, "valid", mode="crop", batch_size=2,
                         repeat=True, drop_remainder=True)
  batches = list(ds.take(5).as_numpy_iterator())
  assert len(batches) == 5 and all(b["mask"].shape == (2, 128) for b in batches)


def test_default_grid_with_257_bins(tmp_path):
  tiny = data_testlib.write_tiny_dataset(tmp_path, {"train": [4, 2, 5]}, dim=3,
                                         bins=spectral.DEFAULT.num_bins)
  assert tiny.stft == spectral.DEFAULT
  batches = list(data.make_dataset(tiny.data_dir, "train", with_audio=True,
                                   deterministic=True).as_numpy_iterator())
  bins = {b["log_stft"].shape[2] for b in batches}
  assert bins == {spectral.DEFAULT.num_bins}
  lengths = np.concatenate([b["length"] for b in batches])
  audio_lengths = np.concatenate([b["audio_length"] for b in batches])
  np.testing.assert_array_equal(np.sort(lengths), [2, 4, 5])
  np.testing.assert_array_equal(audio_lengths,
                                spectral.DEFAULT.num_samples(lengths))


# Lengths [4, 6] in one batch of 2: hand-counted frames of each mode.
# (delivered, real, filler, discarded)
FILLER_BY_HAND = {
    "bucket": (12, 10, 2, 0),  # one bucket, bound 6: 2 items, 4 padded to 6
    "crop": (10, 9, 1, 1),  # crop_frames=5: 4 + pad, 5 of 6
    "repeat_longest": (12, 10, 2, 0),  # 4 tiled to 6
    "crop_shortest": (8, 8, 0, 2),  # cut to 4
    "mean_length": (10, 9, 1, 1),  # mean 5: 4 tiled, 6 cut
}


@pytest.mark.parametrize("mode", ALL_MODES)
def test_filler_share_counts_by_hand(tmp_path, mode):
  tiny = data_testlib.write_tiny_dataset(tmp_path, {"train": [4, 6]}, dim=2,
                                         bins=3)
  report = data.filler_share(tiny.data_dir, "train", mode, batch_size=2,
                             crop_frames=5, frames_per_batch=12, max_buckets=1)
  delivered, real, filler, discarded = FILLER_BY_HAND[mode]
  assert report["num_batches"] == 1 and report["num_items"] == 2
  assert (report["delivered_frames"], report["real_frames"],
          report["filler_frames"], report["discarded_frames"]) == (
              delivered, real, filler, discarded)
  assert report["filler_share"] == pytest.approx(filler / delivered)
  assert report["discarded_share"] == pytest.approx(discarded / 10)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
  """300 items, log-normal lengths 60..600 frames, as varied as speech."""
  lengths = data_testlib.lognormal_lengths(300, low=60, high=600, seed=0)
  return data_testlib.write_tiny_dataset(
      tmp_path_factory.mktemp("varied"), {"train": lengths}, dim=2, bins=2,
      num_shards=4)


def test_bucket_filler_is_low_on_varied_lengths(varied):
  reports = {mode: data.filler_share(varied.data_dir, "train", mode,
                                     frames_per_batch=8192, batch_size=32,
                                     crop_frames=128, deterministic=True)
             for mode in ALL_MODES}
  print("\nmode             filler  discarded  batches")
  for mode, r in reports.items():
    print(f"{mode:16s} {r['filler_share']:6.1%}  {r['discarded_share']:8.1%}  "
          f"{r['num_batches']:7d}")
  bucket = reports["bucket"]
  assert bucket["filler_share"] < 0.15
  assert bucket["discarded_frames"] == 0 and bucket["num_items"] == 300
  # The original modes, for comparison: each pays in filler or in lost frames.
  assert reports["repeat_longest"]["filler_share"] > 3 * bucket["filler_share"]
  assert reports["repeat_longest"]["discarded_frames"] == 0
  assert reports["crop_shortest"]["filler_frames"] == 0
  assert reports["crop_shortest"]["discarded_share"] > 0.4
  assert reports["mean_length"]["filler_share"] > bucket["filler_share"]
  assert reports["mean_length"]["discarded_share"] > 0.1
  # A smaller budget for this small corpus: finer buckets that still fill.
  smaller = data.filler_share(varied.data_dir, "train", "bucket",
                              frames_per_batch=4096, deterministic=True)
  print(f"bucket, 4096 frames per batch: {smaller['filler_share']:.1%}")
  assert smaller["filler_share"] < bucket["filler_share"]
