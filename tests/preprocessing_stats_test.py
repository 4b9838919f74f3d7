"""Dataset statistics: the one floor of the standard deviations."""

import numpy as np

from e2s_tf.preprocessing import items
from e2s_tf.preprocessing import stats


def test_mean_and_std_floor_constant_channels_once():
  x = np.array([[1.0, 2.0, 5.0], [1.0, 4.0, 5.0 + 1e-5]])
  mean, std = stats.mean_and_std(x.sum(0), np.square(x).sum(0), 2)
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
  assert std.dtype == np.float32
  assert std[0] == np.float32(stats.MIN_STD)  # a constant channel
  assert std[1] == 1.0
  assert std[2] == np.float32(stats.MIN_STD)  # below the floor


def test_summary_statistics_are_of_the_train_split():
  rng = np.random.default_rng(0)
  summary = stats.Summary()
  train = []
  for i in range(6):
    split = "train" if i % 2 == 0 else "valid"
    emb, spec = rng.standard_normal((4 + i, 2)), rng.standard_normal((4 + i, 3))
    emb[:, 1] = 7.0
    if split == "train":
      train.append((emb, spec))
    summary.add(items.ItemResult(
        f"i{i}", split, example=b"", num_frames=4 + i, num_samples=10,
        embedding_sum=emb.sum(0), embedding_sumsq=np.square(emb).sum(0),
        log_stft_sum=spec.sum(0), log_stft_sumsq=np.square(spec).sum(0)))
  out = summary.train_stats.finish()
  emb = np.concatenate([e for e, _ in train])
  spec = np.concatenate([s for _, s in train])
  np.testing.assert_allclose(out["embedding_mean"], emb.mean(0), rtol=1e-5)
  np.testing.assert_allclose(out["embedding_std"],
                             [emb[:, 0].std(), stats.MIN_STD], rtol=1e-5)
  np.testing.assert_allclose(out["log_stft_std"], spec.std(0), rtol=1e-5)
  assert summary.length_quantiles()["train"]["0.0"] == 4.0
  assert summary.length_quantiles()["valid"]["1.0"] == 9.0
  assert summary.split_counts("test") == {"num_examples": 0, "num_frames": 0,
                                          "num_samples": 0}
