"""Training wrapper of a decoder trained on the reconstruction loss alone.

`ReconstructionModel` gives the plain decoders (cnn, multiscale) the same
interface as `GanModel`: it is called like its decoder and has `compile`,
`train_step(batch)` and `test_step(batch)` returning dicts of running means
(reset them with `model.reset_metrics()`, e.g. before an evaluation).

Batches are dicts: `embedding [batch, frames, dim]`, `log_stft
[batch, frames, bins]` (both normalised), `mask [batch, frames]`, `length
[batch]` and optionally `speaker [batch]` int.
"""

from __future__ import annotations

from typing import Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from e2s_tf import losses
from e2s_tf import spectral

REQUIRED_BATCH_KEYS = ("embedding", "log_stft", "mask")


def unpack_batch(batch: Mapping[str, tf.Tensor]):
  """`(embedding, mask, speaker or None, log_stft)` of a batch dict."""
  missing = [k for k in REQUIRED_BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"batch lacks {missing}; it has {sorted(batch)}")
  mask = tf.cast(batch["mask"], tf.float32)
  return (batch["embedding"], mask, batch.get("speaker"),
          tf.cast(batch["log_stft"], tf.float32))


def with_loss_scaling(optimizer: keras.optimizers.Optimizer,
                      policy) -> keras.optimizers.Optimizer:
  """Wraps `optimizer` in a LossScaleOptimizer under 'mixed_float16'."""
  if (keras.dtype_policies.get(policy).name == "mixed_float16" and
      not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def build_optimizer(optimizer: keras.optimizers.Optimizer, variables) -> None:
  """Creates the optimizer's slots now, outside any later tf.function."""
  if variables and not optimizer.built:
    optimizer.build(variables)


def reconstruction_loss_from(log_stft_mean, log_stft_std, l1_weight,
                             spectral_convergence_weight, log_mel_weight,
                             num_mel_bins, stft_config):
  return losses.ReconstructionLoss(
      log_stft_mean=log_stft_mean, log_stft_std=log_stft_std,
      l1_weight=l1_weight,
      spectral_convergence_weight=spectral_convergence_weight,
      log_mel_weight=log_mel_weight, num_mel_bins=num_mel_bins,
      stft_config=stft_config or spectral.DEFAULT)


def reconstruction_step(network: keras.Model,
                        optimizer: keras.optimizers.Optimizer,
                        reconstruction_loss: losses.ReconstructionLoss,
                        batch: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """One optimiser step of `network` on the reconstruction loss alone.

  Returns:
    The loss terms of the batch (before the update), as from
    `reconstruction_loss`.
  """
  embedding, mask, speaker, target = unpack_batch(batch)
  variables = network.trainable_variables
  with tf.GradientTape() as tape:
    pred = network(embedding, mask, speaker, training=True)
    values = reconstruction_loss(target, pred, mask)
    loss = values["loss"] + regularization(network)
    scaled = optimizer.scale_loss(per_replica(loss))
  grads = tape.gradient(scaled, variables)
  optimizer.apply(grads, variables)
  return values


def per_replica(loss: tf.Tensor) -> tf.Tensor:
  """`loss / replicas`: under tf.distribute the optimizer sums the replicas'
  gradients, so each replica's mean loss is divided by their number (as
  keras.Model.fit does); a no-op without a strategy."""
  replicas = tf.distribute.get_replica_context()
  n = replicas.num_replicas_in_sync if replicas is not None else 1
  return loss if n == 1 else loss / tf.cast(n, loss.dtype)


def regularization(network: keras.Model) -> tf.Tensor:
  """Sum of the layers' added losses (weight regularisers), float32."""
  if not network.losses:
    return tf.constant(0.0)
  return tf.add_n([tf.cast(l, tf.float32) for l in network.losses])


# Names of the reconstruction trackers, in report order.
RECONSTRUCTION_METRICS = ("loss", "l1", "spectral_convergence", "log_mel_l1")


class ReconstructionModel(keras.Model):
  """A decoder trained on `losses.ReconstructionLoss`.

  Attributes:
    decoder: the wrapped `SequenceDecoder`; `model(...)` calls it.
    optimizer_roles: names of the optimizers `compile` takes.
  """

  optimizer_roles = ("optimizer",)

  def __init__(self, decoder: keras.Model,
               log_stft_mean: Optional[np.ndarray] = None,
               log_stft_std: Optional[np.ndarray] = None, **kwargs):
    super().__init__(autocast=False, **kwargs)
    self.decoder = decoder
    self.log_stft_mean = log_stft_mean
    self.log_stft_std = log_stft_std
    self.reconstruction_loss = losses.ReconstructionLoss(log_stft_mean,
                                                         log_stft_std)
    # All trackers exist from the start (state is locked once built);
    # `metrics` lists those of the configured loss terms.
    self.trackers = {name: keras.metrics.Mean(name=name)
                     for name in RECONSTRUCTION_METRICS}

  @property
  def network(self) -> keras.Model:
    """The inference network (what export needs)."""
    return self.decoder

  def compile(self, optimizer: keras.optimizers.Optimizer,
              l1_weight: float = 1.0,
              spectral_convergence_weight: float = 1.0,
              log_mel_weight: float = 0.0,
              num_mel_bins: int = 80,
              stft_config: Optional[spectral.StftConfig] = None,
              **kwargs):
    """Sets the optimizer (loss-scaled under mixed_float16) and loss weights.

    The loss arguments are those of `losses.default_loss_config()`; other
    keyword arguments go to `keras.Model.compile`.
    """
    super().compile(optimizer=optimizer, **kwargs)
    self.reconstruction_loss = reconstruction_loss_from(
        self.log_stft_mean, self.log_stft_std, l1_weight,
        spectral_convergence_weight, log_mel_weight, num_mel_bins, stft_config)
    build_optimizer(self.optimizer, self.decoder.trainable_variables)

  @property
  def metrics(self):
    names = ("loss",) + self.reconstruction_loss.term_names
    return [self.trackers[n] for n in names]

  def call(self, embedding, frame_mask=None, speaker=None, training=False):
    """`[B, T, D]` embedding, `[B, T]` mask, `[B]` speaker -> `[B, T, F]`."""
    return self.decoder(embedding, frame_mask, speaker, training=training)

  def _update(self, values: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    for name, value in values.items():
      self.trackers[name].update_state(value)
    return {m.name: m.result() for m in self.metrics}

  def train_step(self, batch):
    """One optimiser step on a batch dict; returns the running means."""
    return self._update(reconstruction_step(
        self.decoder, self.optimizer, self.reconstruction_loss, batch))

  def test_step(self, batch):
    """Losses of a batch in inference mode; returns the running means."""
    embedding, mask, speaker, target = unpack_batch(batch)
    pred = self.decoder(embedding, mask, speaker, training=False)
    return self._update(self.reconstruction_loss(target, pred, mask))
