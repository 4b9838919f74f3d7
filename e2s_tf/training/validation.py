"""Periodic validation of a decoder run: losses and LSD of the valid split,
spectrograms and Griffin-Lim audio of a few fixed items, to TensorBoard."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from e2s_tf import data as data_lib
from e2s_tf import metrics as metrics_lib
from e2s_tf import spectral
from e2s_tf import summaries

# Batch keys the train and validation steps consume (others, such as `id`,
# stay outside).
STEP_KEYS = ("embedding", "log_stft", "mask", "length", "speaker")


def step_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
  """The part of a batch that the steps take."""
  return {k: v for k, v in batch.items() if k in STEP_KEYS}


class Validation:
  """Validation losses, LSD and summaries of fixed items.

  `step_fn(batch) -> (running means, decoded batch)` is the model's
  `validation_step` (traced by the caller), so that the network runs once
  per batch.
  """

  def __init__(self, config, info: Mapping[str, Any], model: keras.Model,
               dataset: tf.data.Dataset, step_fn: Callable):
    self.config = config
    self.model = model
    self.stft = spectral.StftConfig.from_dict(info["stft"])
    self.normalizer = data_lib.Normalizer.from_info(info)
    self.step_fn = step_fn
    self.dataset = dataset
    # A few fixed items for images and audio, each kept as a batch of one.
    self.fixed = []
    wanted = config.train.summary_items
    for batch in dataset:
      for b in range(int(batch["length"].shape[0])):
        if len(self.fixed) < wanted:
          n = int(batch["length"][b])
          self.fixed.append({k: v[b:b + 1, :n] if v.shape.rank > 1 else
                             v[b:b + 1] for k, v in step_inputs(batch).items()})
      if len(self.fixed) >= wanted:
        break

  def run(self, step: int, writer) -> dict[str, float]:
    """Validates at `step`; writes the summaries; returns the values."""
    self.model.reset_metrics()
    values = {}
    lsd = []
    for i, batch in enumerate(self.dataset):
      if self.config.train.eval_batches and i >= self.config.train.eval_batches:
        break
      out, pred = self.step_fn(step_inputs(batch))
      values = {k: float(v) for k, v in out.items()}
      target = self.normalizer.denormalize_log_stft(batch["log_stft"]).numpy()
      pred = self.normalizer.denormalize_log_stft(pred).numpy()
      for b, n in enumerate(batch["length"].numpy()):
        lsd.append(metrics_lib.lsd_db_from_log(target[b, :n], pred[b, :n]))
    values["lsd_db"] = float(np.mean(lsd)) if lsd else float("nan")
    self.model.reset_metrics()
    with writer.as_default():
      for k, v in values.items():
        tf.summary.scalar(f"losses/{k}" if k != "lsd_db" else "metrics/lsd_db",
                          v, step=step)
      self._write_items(step)
    writer.flush()
    return values

  def _write_items(self, step):
    targets, predictions, waveforms = [], [], []
    for item in self.fixed:
      pred = self.model(item["embedding"], item["mask"], item.get("speaker"),
                        training=False)
      targets.append(self.normalizer.denormalize_log_stft(
          item["log_stft"]).numpy()[0])
      predictions.append(self.normalizer.denormalize_log_stft(pred).numpy()[0])
      audio, _ = spectral.griffin_lim(
          np.exp(predictions[-1])[None], None, self.stft,
          num_iterations=self.config.train.griffin_lim_iterations,
          init=spectral.PHASE_INIT)
      waveforms.append(audio.numpy()[0])
    summaries.write_spectrograms("spectrogram", targets, predictions, step)
    summaries.write_audio("griffin_lim", waveforms, self.stft.sample_rate, step)
