"""Tests of e2s_tf.losses: exact values and padding that never counts."""

import math

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import losses
from e2s_tf import spectral

F = 6
LENGTHS = (7, 4)
MEAN = np.linspace(-2.0, 1.0, F).astype(np.float32)
STD = np.linspace(0.5, 2.0, F).astype(np.float32)


def _normalise(magnitude):
  return ((np.log(magnitude) - MEAN) / STD).astype(np.float32)


def _padded_pair(seed=0, garbage=1e6):
  """(target, pred, mask) with garbage in padding, plus the unpadded items."""
  rng = np.random.default_rng(seed)
  frames = max(LENGTHS) + 3
  items = []
  for length in LENGTHS:
    target = rng.normal(size=(length, F)).astype(np.float32)
    pred = rng.normal(size=(length, F)).astype(np.float32)
    items.append((target, pred))
  shape = (len(LENGTHS), frames, F)
  target = garbage * rng.normal(size=shape).astype(np.float32)
  pred = garbage * rng.normal(size=shape).astype(np.float32)
  mask = np.zeros((len(LENGTHS), frames), np.float32)
  for i, ((t, p), length) in enumerate(zip(items, LENGTHS)):
    target[i, :length], pred[i, :length], mask[i, :length] = t, p, 1.0
  return target, pred, mask, items


def _all_losses(target, pred, mask):
  mel = losses.mel_matrix(4, spectral.StftConfig(
      sample_rate=8000, frame_length=8, frame_step=4, fft_length=2 * (F - 1)))
  stats = dict(log_stft_mean=MEAN, log_stft_std=STD)
  return {
      "masked_l1": losses.masked_l1(target, pred, mask),
      "spectral_convergence": losses.spectral_convergence_loss(
          target, pred, mask, **stats),
      "log_mel_l1": losses.log_mel_l1(target, pred, mask, mel, **stats),
      "lsgan_d": losses.lsgan_discriminator_loss(target, pred, mask),
      "lsgan_g": losses.lsgan_generator_loss(pred, mask),
      "hinge_d": losses.hinge_discriminator_loss(target, pred, mask),
      "hinge_g": losses.hinge_generator_loss(pred, mask),
      "feature_matching": losses.feature_matching_loss(
          [target, 2 * target], [pred, pred], mask),
  }


class LossesTest(tf.test.TestCase):

  def test_masked_l1_exact(self):
    target = np.array([[[0.0, 1.0], [2.0, 3.0], [9.0, 9.0]]], np.float32)
    pred = np.zeros_like(target)
    mask = np.array([[1.0, 1.0, 0.0]], np.float32)
    # (0 + 1 + 2 + 3) / (2 frames x 2 bins).
    self.assertAllClose(losses.masked_l1(target, pred, mask), 1.5)

  def test_masked_l1_pools_frames_over_the_batch(self):
    target = np.array([[[1.0], [1.0]], [[4.0], [0.0]]], np.float32)
    pred = np.zeros_like(target)
    mask = np.array([[1.0, 1.0], [1.0, 0.0]], np.float32)
    self.assertAllClose(losses.masked_l1(target, pred, mask), (1 + 1 + 4) / 3)

  def test_spectral_convergence_exact(self):
    mean = np.array([0.5, -1.0], np.float32)
    std = np.array([2.0, 3.0], np.float32)

    def norm(magnitude):
      return (np.log(np.asarray(magnitude, np.float32)) - mean) / std

    # Item 0: target (3, 4), prediction (6, 8): error (3, 4) -> SC 1.
    # Item 1: target (1, 1), prediction (1, 2): sqrt(1 / 2).
    # Item 2: no valid frame, so it does not count.
    target = np.stack([norm([[3, 4], [1, 1]]), norm([[1, 1], [5, 5]]),
                       norm([[1, 1], [1, 1]])])
    pred = np.stack([norm([[6, 8], [7, 7]]), norm([[1, 2], [9, 9]]),
                     norm([[2, 2], [2, 2]])])
    mask = np.array([[1, 0], [1, 0], [0, 0]], np.float32)
    value = losses.spectral_convergence_loss(target, pred, mask, mean, std)
    self.assertAllClose(value, (1.0 + math.sqrt(0.5)) / 2)

  def test_spectral_convergence_matches_the_metric(self):
    target, pred, mask, _ = _padded_pair(garbage=1.0)
    per_item = spectral.spectral_convergence(
        np.exp(target * STD + MEAN), np.exp(pred * STD + MEAN), mask)
    self.assertAllClose(
        losses.spectral_convergence_loss(target, pred, mask, MEAN, STD),
        tf.reduce_mean(per_item))

  def test_log_mel_l1_exact(self):
    mel = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)  # [bins, mel bins]
    target = np.log(np.array([[[3.0, 4.0]]], np.float32))
    pred = np.log(np.array([[[1.0, 1.0]]], np.float32))
    # Mel energies: target (7, 4), prediction (2, 1).
    expected = (abs(math.log(7) - math.log(2)) + math.log(4)) / 2
    self.assertAllClose(
        losses.log_mel_l1(target, pred, np.ones([1, 1], np.float32), mel),
        expected)

  def test_adversarial_losses_exact(self):
    real = np.array([[[0.5], [2.0]]], np.float32)
    fake = np.array([[[-0.5], [7.0]]], np.float32)
    mask = np.array([[1.0, 0.0]], np.float32)
    self.assertAllClose(losses.lsgan_discriminator_loss(real, fake, mask),
                        0.25 + 0.25)
    self.assertAllClose(losses.lsgan_generator_loss(fake, mask), 2.25)
    self.assertAllClose(losses.hinge_discriminator_loss(real, fake, mask),
                        0.5 + 0.5)
    self.assertAllClose(losses.hinge_generator_loss(fake, mask), 0.5)
    self.assertAllClose(
        losses.feature_matching_loss([real, 2 * real], [fake, fake], mask),
        (1.0 + 1.5) / 2)

  def test_masked_mean_counts_trailing_dims(self):
    values = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    mask = np.array([[1, 1, 0], [0, 0, 0]], np.float32)
    self.assertAllClose(losses.masked_mean(values, mask),
                        values[0, :2].mean())
    self.assertAllClose(losses.masked_mean(values, np.zeros_like(mask)), 0.0)

  def test_padding_never_counts(self):
    target, pred, mask, items = _padded_pair()
    batch = _all_losses(target, pred, mask)
    for i, (t, p) in enumerate(items):
      # One padded item equals the same item alone.
      alone = _all_losses(t[None], p[None], np.ones([1, len(t)], np.float32))
      padded = _all_losses(target[i:i + 1], pred[i:i + 1], mask[i:i + 1])
      for name in alone:
        self.assertAllClose(padded[name], alone[name], msg=name)
    # And the garbage did not leak into the batch value either.
    clean_t, clean_p = target * mask[..., None], pred * mask[..., None]
    clean = _all_losses(clean_t, clean_p, mask)
    for name in batch:
      self.assertAllClose(batch[name], clean[name], msg=name)

  def test_inf_and_nan_padding_leave_value_and_gradients_finite(self):
    target, pred, mask, _ = _padded_pair(garbage=1.0)
    target[0, -1, 0], target[1, -1, 1], pred[1, -2, 2] = np.inf, np.nan, -np.inf
    pred = tf.constant(pred)
    reference = _all_losses(*_padded_pair(garbage=1.0)[:3])
    with tf.GradientTape() as tape:
      tape.watch(pred)
      values = _all_losses(target, pred, mask)
      total = tf.add_n(list(values.values()))
    grads = tape.gradient(total, pred)
    for name in values:
      self.assertAllClose(values[name], reference[name], msg=name)
    self.assertTrue(np.all(np.isfinite(grads.numpy())))
    padding_grads = grads.numpy()[mask == 0]
    self.assertAllEqual(padding_grads, np.zeros_like(padding_grads))

  def test_perfect_and_empty_items_have_finite_gradients(self):
    target = tf.constant(np.zeros([2, 3, F], np.float32))
    mask = tf.constant([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    pred = tf.Variable(target)
    with tf.GradientTape() as tape:
      value = losses.spectral_convergence_loss(target, pred, mask, MEAN, STD)
    self.assertAllClose(value, 1e-6, atol=1e-6)
    self.assertTrue(np.all(np.isfinite(tape.gradient(value, pred).numpy())))

  def test_huge_predictions_do_not_overflow(self):
    target = _normalise(np.full([1, 2, F], 3.0, np.float32))
    pred = np.full([1, 2, F], 1e4, np.float32)
    value = losses.spectral_convergence_loss(target, pred, np.ones([1, 2]),
                                             MEAN, STD)
    self.assertTrue(np.isfinite(value.numpy()))

  def test_reconstruction_loss_combines_weights(self):
    target, pred, mask, _ = _padded_pair(garbage=1.0)
    config = spectral.StftConfig(sample_rate=8000, frame_length=8,
                                 frame_step=4, fft_length=2 * (F - 1))
    loss = losses.ReconstructionLoss(MEAN, STD, l1_weight=0.5,
                                     spectral_convergence_weight=2.0,
                                     log_mel_weight=3.0, num_mel_bins=4,
                                     stft_config=config)
    values = loss(target, pred, mask)
    self.assertEqual(loss.term_names,
                     ("l1", "spectral_convergence", "log_mel_l1"))
    self.assertAllClose(values["l1"], losses.masked_l1(target, pred, mask))
    self.assertAllClose(
        values["log_mel_l1"],
        losses.log_mel_l1(target, pred, mask, losses.mel_matrix(4, config),
                          MEAN, STD))
    self.assertAllClose(
        values["loss"], 0.5 * values["l1"] +
        2.0 * values["spectral_convergence"] + 3.0 * values["log_mel_l1"])

  def test_reconstruction_loss_skips_unweighted_log_mel(self):
    loss = losses.ReconstructionLoss(**losses.default_loss_config())
    target, pred, mask, _ = _padded_pair(garbage=1.0)
    values = loss(target, pred, mask)
    self.assertNotIn("log_mel_l1", values)
    self.assertAllClose(values["loss"],
                        values["l1"] + values["spectral_convergence"])

  def test_errors_name_the_problem(self):
    with pytest.raises(ValueError, match="l1_weight"):
      losses.ReconstructionLoss(l1_weight=-1.0)
    with pytest.raises(ValueError, match="unknown adversarial loss 'wgan'"):
      losses.adversarial_loss("wgan")


if __name__ == "__main__":
  tf.test.main()
