"""The shared training parts (e2s_tf/training): schedule, divergence stop,
config I/O, checkpoint save."""

import json

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from e2s_tf.training import checkpoints
from e2s_tf.training import configio
from e2s_tf.training import monitor as monitor_lib
from e2s_tf.training import schedule
from e2s_tf.training.errors import TrainingError


def test_learning_rate_schedule_follows_steps_and_the_time_budget():
  lr = schedule.WarmupCosine(1e-3, warmup_steps=10, num_steps=110,
                             final_fraction=0.1)
  np.testing.assert_allclose(float(lr(0)), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(float(lr(9)), 1e-3, rtol=1e-5)
  np.testing.assert_allclose(float(lr(60)), 0.55e-3, rtol=1e-5)
  np.testing.assert_allclose(float(lr(110)), 1e-4, rtol=1e-5)
  fraction = tf.Variable(0.0)
  timed = schedule.WarmupCosine(1e-3, 10, 110, 0.1, time_fraction=fraction)
  np.testing.assert_allclose(float(timed(20)), float(lr(20)), rtol=1e-6)
  fraction.assign(0.5)  # half the wall-clock budget gone at step 20
  np.testing.assert_allclose(float(timed(20)), 0.55e-3, rtol=1e-5)
  fraction.assign(2.0)
  np.testing.assert_allclose(float(timed(20)), 1e-4, rtol=1e-5)


def test_divergence_monitor_ignores_the_warm_up_and_single_spikes():
  monitor = monitor_lib.DivergenceMonitor(factor=10.0, patience=3)
  # A high start falling fast (warm-up), then noise and one spike.
  for loss in (50.0, 20.0, 5.0, 1.0, 0.6, 0.5, 0.55, 40.0, 0.5, 0.45):
    assert not monitor.update(loss)
  assert monitor.streak == 0
  # Three logs in a row far above the median: a divergence.
  assert not monitor.update(2e3)
  assert not monitor.update(3e5)
  assert monitor.update(2.7e7)
  assert monitor.median == pytest.approx(0.6)
  assert not monitor_lib.DivergenceMonitor(0.0, 3).update(1e30)  # disabled


def test_schedule_of_a_config_caps_the_warm_up_and_adds_weight_decay():
  train = ml_collections.ConfigDict(dict(
      num_steps=5, lr_warmup_steps=50, final_lr_fraction=0.1, adam_b1=0.8,
      adam_b2=0.9, clip_norm=0.0))
  lr = schedule.learning_rate(train, 1e-3)
  assert lr.warmup_steps == 4  # at most num_steps - 1
  np.testing.assert_allclose(float(lr(3)), 1e-3, rtol=1e-6)
  adam = schedule.adam(train, 1e-3)
  assert type(adam) is keras.optimizers.Adam
  assert adam.global_clipnorm is None and adam.beta_1 == 0.8
  adamw = schedule.adam(train, 1e-3, weight_decay=0.01)
  assert isinstance(adamw, keras.optimizers.AdamW)
  assert adamw.weight_decay == 0.01


def test_config_json_round_trip_and_old_field_names(tmp_path):
  config = ml_collections.ConfigDict(
      {"model": {"name": "gan", "adversarial_start_step": 7},
       "train": {"lr_warmup_steps": 3, "betas": (0.9, 0.98)}})
  path = configio.write(str(tmp_path), config)
  assert path == str(tmp_path / "config.json")
  back = configio.read(str(tmp_path))
  assert back.to_dict() == {"model": {"name": "gan",
                                      "adversarial_start_step": 7},
                            "train": {"lr_warmup_steps": 3,
                                      "betas": [0.9, 0.98]}}
  # A config.json written before the renames is read with the new names.
  (tmp_path / "config.json").write_text(json.dumps(
      {"model": {"name": "gan", "warmup_steps": 500},
       "train": {"warmup_steps": 200}}))
  old = configio.read(str(tmp_path))
  assert old.model.adversarial_start_step == 500
  assert old.train.lr_warmup_steps == 200
  assert "warmup_steps" not in old.model and "warmup_steps" not in old.train
  # A multiscale run from before `input_clip` reads back without the clip
  # (it trained without one), so its workdir still exports.
  from e2s_tf import models  # pylint: disable=g-import-not-at-top
  before = models.default_model_config("multiscale").to_dict()
  del before["input_clip"]
  (tmp_path / "config.json").write_text(json.dumps(
      {"model": before, "data": {"embedding_dim": 4, "num_bins": 5}}))
  old = configio.read(str(tmp_path))
  assert old.model.input_clip == 0.0
  assert models.model_config_problem(old) is None


def test_restore_names_a_checkpoint_that_does_not_fit(tmp_path):
  path = tf.train.Checkpoint(a=tf.Variable([1.0, 2.0])).save(
      str(tmp_path / "ckpt"))
  with pytest.raises(TrainingError, match="does not fit the model"):
    checkpoints.restore(tf.train.Checkpoint(a=tf.Variable([1.0])), path)
