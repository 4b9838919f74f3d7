"""Speaker-encoder network: the frame grid, stable weight paths, the loss."""

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import spectral
from e2s_tf.configs import speaker_encoder as encoder_config
from e2s_tf.speaker import network
from e2s_tf.training import checkpoints
from tests import speaker_testlib


def test_checkpoint_holds_every_encoder_weight(tmp_path):
  # Every weight reaches the checkpoint by its Keras path, and the paths are
  # the same in a second build in the same process (fixed layer names).
  config = speaker_testlib.config()
  first, first_head = network.build_encoder(config, 3)
  path = tf.train.Checkpoint(
      weights=checkpoints.weights_of(first),
      head=checkpoints.weights_of(first_head)).save(str(tmp_path / "ckpt"))
  second, second_head = network.build_encoder(config, 3)
  assert sorted(checkpoints.weights_of(first)) == sorted(
      checkpoints.weights_of(second))
  tf.train.Checkpoint(
      weights=checkpoints.weights_of(second),
      head=checkpoints.weights_of(second_head)).restore(path).assert_consumed()
  assert len(first.weights) == len(second.weights) > 10
  for a, b in zip(first.weights + first_head.weights,
                  second.weights + second_head.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # Layers kept in lists are also in the object graph (older checkpoints).
  legacy = tf.train.Checkpoint(encoder=first).save(str(tmp_path / "legacy"))
  tf.train.Checkpoint(encoder=second).restore(legacy).assert_consumed()


def test_front_end_frames_follow_the_grid():
  stft = spectral.StftConfig()
  encoder, _ = network.build_encoder(speaker_testlib.config())
  for samples in (stft.frame_length, stft.num_samples(5) + 17, 4000):
    frames = encoder.frame_embeddings(tf.zeros([2, samples]) + 0.01).numpy()
    assert frames.shape == (2, stft.num_frames(samples), 64)


def test_utterance_embedding_has_unit_norm_and_the_head_gives_cosines():
  encoder, head = network.build_encoder(speaker_testlib.config(), 4)
  waves = tf.random.stateless_normal([3, 8000], seed=[1, 2])
  out = encoder(waves)
  np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0,
                             atol=1e-5)
  cos = head(out["embedding"]).numpy()
  assert cos.shape == (3, 4) and np.all(np.abs(cos) <= 1.0 + 1e-5)


def test_am_softmax_loss_applies_the_margin_to_the_true_class():
  cos = tf.constant([[0.5, 0.1, -0.2]])
  got = float(network.am_softmax_loss(cos, tf.constant([0]), 0.2, 30.0))
  logits = 30.0 * np.array([0.5 - 0.2, 0.1, -0.2])
  expected = -logits[0] + np.log(np.sum(np.exp(logits)))
  assert got == pytest.approx(expected, rel=1e-5)
  # Without margin and scale 1: the plain softmax cross-entropy.
  plain = float(network.am_softmax_loss(cos, tf.constant([1]), 0.0, 1.0))
  assert plain == pytest.approx(
      -0.1 + np.log(np.sum(np.exp([0.5, 0.1, -0.2]))), rel=1e-5)


def test_config_variants():
  default = encoder_config.get_config()
  assert default.model.bottleneck_dim == 64
  assert spectral.StftConfig.from_dict(default.stft.to_dict()) == (
      spectral.StftConfig())
  with pytest.raises(ValueError, match="unknown speaker_encoder config"):
    encoder_config.get_config("huge")


def test_layer_lists_must_match():
  config = speaker_testlib.config(**{"model.dilations": (1,)})
  with pytest.raises(ValueError, match="one entry per frame layer"):
    network.build_encoder(config)
