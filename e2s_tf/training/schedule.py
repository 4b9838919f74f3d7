"""The learning-rate schedule and the optimiser of every trainer."""

from __future__ import annotations

import math

import keras
import ml_collections
import tensorflow as tf


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak`, then cosine decay to `final_fraction * peak`.

  The decay follows the larger of the step progress and `time_fraction` (a
  variable the loop sets to elapsed / `train.max_minutes`), so a run cut by
  its wall-clock budget still ends with a decayed learning rate.
  """

  def __init__(self, peak: float, warmup_steps: int, num_steps: int,
               final_fraction: float, time_fraction=None):
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.num_steps = int(num_steps)
    self.final_fraction = float(final_fraction)
    self.time_fraction = time_fraction

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(max(self.warmup_steps, 1))
    progress = (step - self.warmup_steps) / float(
        max(self.num_steps - self.warmup_steps, 1))
    if self.time_fraction is not None:
      progress = tf.maximum(progress, tf.cast(self.time_fraction, tf.float32))
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    decay = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (
        1.0 + tf.cos(math.pi * progress))
    warm = self.peak * (step + 1.0) / warmup
    return tf.where(step < self.warmup_steps, warm, self.peak * decay)

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps,
            "num_steps": self.num_steps, "final_fraction": self.final_fraction}


def learning_rate(train: ml_collections.ConfigDict, peak: float,
                  time_fraction=None) -> WarmupCosine:
  """The schedule of `config.train`: `lr_warmup_steps` of linear warm-up
  (at most `num_steps - 1`), then the cosine decay to
  `final_lr_fraction * peak` at `num_steps`."""
  warmup = min(train.lr_warmup_steps, max(train.num_steps - 1, 0))
  return WarmupCosine(peak, warmup, train.num_steps, train.final_lr_fraction,
                      time_fraction)


def adam(train: ml_collections.ConfigDict, peak: float, time_fraction=None,
         weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
  """Adam with `learning_rate(train, peak)`, `adam_b1`/`adam_b2` and the
  global gradient-norm clip `clip_norm` (0: none) of `config.train`; AdamW
  (decoupled weight decay) when `weight_decay` > 0."""
  options = dict(learning_rate=learning_rate(train, peak, time_fraction),
                 beta_1=train.adam_b1, beta_2=train.adam_b2,
                 global_clipnorm=train.clip_norm or None)
  if weight_decay > 0:
    return keras.optimizers.AdamW(weight_decay=weight_decay, **options)
  return keras.optimizers.Adam(**options)
