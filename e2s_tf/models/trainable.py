"""The decoder with what trains it: losses, optimisers, an optional
discriminator.

`TrainableDecoder` is the one training model of every decoder. It is called
like its decoder, `model(embedding, mask, speaker) -> log_stft`, and has

    model.compile(optimizer, discriminator_optimizer, **config.loss)
    model.train_step(batch)       # one update; running means of the terms
    model.test_step(batch)        # the terms in inference mode
    model.validation_step(batch)  # (the terms, the decoded batch)
    model.probe_loss(batch)       # reconstruction loss, trackers untouched
    model.optimizers()            # {"optimizer", ["discriminator_optimizer"]}

Without a discriminator ('cnn', 'multiscale') a step minimises the masked
reconstruction loss (`losses.ReconstructionLoss`). With one ('gan'), the
first `adversarial_start_step` steps do the same and the discriminator is
neither run nor updated; afterwards one decoder pass feeds both updates: the
discriminator minimises the adversarial loss ('lsgan' or 'hinge') on real vs
decoded spectrograms, the decoder minimises reconstruction +
`adversarial_weight` x adversarial + `feature_matching_weight` x feature
matching (L1 between the discriminator's feature maps on real and decoded
input), both with the discriminator's pre-update weights. The step counter
`train_steps` is a variable, so a restored checkpoint resumes after the
reconstruction-only start.

Batches are dicts: `embedding [batch, frames, dim]`, `log_stft [batch,
frames, bins]` (both normalised), `mask [batch, frames]`, `length [batch]`
and optionally `speaker [batch]` int. Everything is masked: padding frames
take no part in any loss.

Reported terms: `loss` and its parts are the reconstruction loss (the same
numbers for every decoder, so validation losses compare across models); with
a discriminator also `g_loss` (the decoder's whole objective),
`g_adversarial`, `feature_matching` and `d_loss` (not updated before the
adversarial start).
"""

from __future__ import annotations

from typing import Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from e2s_tf import losses
from e2s_tf import spectral
from e2s_tf.models import layers

REQUIRED_BATCH_KEYS = ("embedding", "log_stft", "mask")
# Names of the reconstruction trackers, in report order.
RECONSTRUCTION_METRICS = ("loss", "l1", "spectral_convergence", "log_mel_l1")
# Trackers of the adversarial terms, after the reconstruction ones.
ADVERSARIAL_METRICS = ("g_loss", "g_adversarial", "feature_matching", "d_loss")


def unpack_batch(batch: Mapping[str, tf.Tensor]):
  """`(embedding, mask, speaker or None, log_stft)` of a batch dict."""
  missing = [k for k in REQUIRED_BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"batch lacks {missing}; it has {sorted(batch)}")
  mask = tf.cast(batch["mask"], tf.float32)
  return (batch["embedding"], mask, batch.get("speaker"),
          tf.cast(batch["log_stft"], tf.float32))


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


def _loss_scaled(optimizer: keras.optimizers.Optimizer,
                 policy) -> keras.optimizers.Optimizer:
  """`optimizer` in a LossScaleOptimizer under 'mixed_float16'."""
  if (keras.dtype_policies.get(policy).name == "mixed_float16" and
      not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


class TrainableDecoder(keras.Model):
  """A decoder, its reconstruction loss and an optional discriminator.

  Attributes:
    decoder: the `SequenceDecoder`; `model(...)` calls it (`network` too).
    discriminator: a `SpectrogramDiscriminator`, or None.
    train_steps: with a discriminator, int64 variable of the steps taken.
  """

  def __init__(self, decoder: keras.Model,
               log_stft_mean: Optional[np.ndarray] = None,
               log_stft_std: Optional[np.ndarray] = None,
               discriminator: Optional[keras.Model] = None, *,
               adversarial_loss: str = "lsgan",
               adversarial_weight: float = 0.0,
               feature_matching_weight: float = 0.0,
               adversarial_start_step: int = 0, **kwargs):
    super().__init__(autocast=False, **kwargs)
    if adversarial_start_step < 0:
      raise ValueError(f"{self.name}: adversarial_start_step must be >= 0, "
                       f"got {adversarial_start_step}")
    self.decoder = decoder
    self.discriminator = discriminator
    self.log_stft_mean = log_stft_mean
    self.log_stft_std = log_stft_std
    self.reconstruction_loss = losses.ReconstructionLoss(log_stft_mean,
                                                         log_stft_std)
    self.adversarial = losses.adversarial_loss(adversarial_loss)
    self.adversarial_weight = float(adversarial_weight)
    self.feature_matching_weight = float(feature_matching_weight)
    self.adversarial_start_step = int(adversarial_start_step)
    names = RECONSTRUCTION_METRICS
    if discriminator is not None:
      self.train_steps = keras.Variable(0, dtype="int64", trainable=False,
                                        name="train_steps")
      names += ADVERSARIAL_METRICS
    # All trackers exist from the start (state is locked once built);
    # `metrics` lists those of the configured loss terms.
    self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
    self.discriminator_optimizer = None

  @property
  def network(self) -> keras.Model:
    """The inference network (what export needs)."""
    return self.decoder

  def compile(self, optimizer: keras.optimizers.Optimizer,
              discriminator_optimizer: Optional[
                  keras.optimizers.Optimizer] = None,
              l1_weight: float = 1.0,
              spectral_convergence_weight: float = 1.0,
              log_mel_weight: float = 0.0,
              num_mel_bins: int = 80,
              stft_config: Optional[spectral.StftConfig] = None,
              **kwargs):
    """Sets the optimizers (loss-scaled under mixed_float16) and the loss.

    `discriminator_optimizer` is needed with a discriminator and unused
    without one. The loss arguments are those of
    `losses.default_loss_config()`; other keyword arguments go to
    `keras.Model.compile`.
    """
    super().compile(optimizer=optimizer, **kwargs)
    self.reconstruction_loss = losses.ReconstructionLoss(
        log_stft_mean=self.log_stft_mean, log_stft_std=self.log_stft_std,
        l1_weight=l1_weight,
        spectral_convergence_weight=spectral_convergence_weight,
        log_mel_weight=log_mel_weight, num_mel_bins=num_mel_bins,
        stft_config=stft_config or spectral.DEFAULT)
    pairs = [(self.optimizer, self.decoder)]
    if self.discriminator is not None:
      if discriminator_optimizer is None or discriminator_optimizer is optimizer:
        raise ValueError(f"{self.name}: a discriminator needs its own "
                         "discriminator_optimizer")
      self.discriminator_optimizer = _loss_scaled(discriminator_optimizer,
                                                  self.dtype_policy)
      pairs.append((self.discriminator_optimizer, self.discriminator))
    # The optimizers' slots exist now, outside any later tf.function.
    for opt, network in pairs:
      if network.trainable_variables and not opt.built:
        opt.build(network.trainable_variables)

  def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
    """The optimizers by checkpoint name."""
    out = {"optimizer": self.optimizer}
    if self.discriminator is not None:
      out["discriminator_optimizer"] = self.discriminator_optimizer
    return out

  @property
  def metrics(self):
    names = ("loss",) + self.reconstruction_loss.term_names
    if self.discriminator is not None:
      names += ADVERSARIAL_METRICS
    return [self.trackers[n] for n in names]

  def call(self, embedding, frame_mask=None, speaker=None, training=False):
    """`[B, T, D]` embedding, `[B, T]` mask, `[B]` speaker -> `[B, T, F]`."""
    return self.decoder(embedding, frame_mask, speaker, training=training)

  def _results(self) -> dict[str, tf.Tensor]:
    return {m.name: m.result() for m in self.metrics}

  def _track(self, values: Mapping[str, tf.Tensor]) -> None:
    for name, value in values.items():
      self.trackers[name].update_state(value)

  def losses_of(self, batch, training: bool, adversarial: bool = True):
    """All loss terms of a batch, from one decoder pass.

    `adversarial=False` (or no discriminator): the reconstruction terms
    alone, the discriminator is not run.

    Returns:
      `(values, decoded, d_loss, g_loss)`: the dict of reported terms, the
      decoded `[B, T, F]` batch, the discriminator's objective (None without
      the adversarial terms) and the decoder's (with the layers'
      regularisation).
    """
    embedding, mask, speaker, target = unpack_batch(batch)
    decoded = self.decoder(embedding, mask, speaker, training=training)
    values = self.reconstruction_loss(target, decoded, mask)
    if self.discriminator is None or not adversarial:
      return (values, decoded, None,
              values["loss"] + regularization(self.decoder))
    real = layers.clean_padding(target, mask)
    real_outputs = self.discriminator(real, mask, training=training)
    fake_outputs = self.discriminator(decoded, mask, training=training)
    d_terms, g_terms, fm_terms = [], [], []
    for (real_logits, real_features), (fake_logits, fake_features), m in zip(
        real_outputs, fake_outputs, self.discriminator.masks(mask)):
      d_terms.append(
          self.adversarial.discriminator(real_logits, fake_logits, m))
      g_terms.append(self.adversarial.generator(fake_logits, m))
      fm_terms.append(losses.feature_matching_loss(real_features,
                                                   fake_features, m))
    num_scales = float(len(d_terms))
    d_loss = tf.add_n(d_terms) / num_scales
    g_adversarial = tf.add_n(g_terms) / num_scales
    feature_matching = tf.add_n(fm_terms) / num_scales
    g_loss = (values["loss"] + self.adversarial_weight * g_adversarial +
              self.feature_matching_weight * feature_matching)
    values.update(g_loss=g_loss, g_adversarial=g_adversarial,
                  feature_matching=feature_matching, d_loss=d_loss)
    return (values, decoded, d_loss + regularization(self.discriminator),
            g_loss + regularization(self.decoder))

  def _reconstruction_update(self, batch) -> tf.Tensor:
    variables = self.decoder.trainable_variables
    with tf.GradientTape() as tape:
      values, _, _, loss = self.losses_of(batch, training=True,
                                          adversarial=False)
      scaled = self.optimizer.scale_loss(per_replica(loss))
    self.optimizer.apply(tape.gradient(scaled, variables), variables)
    if self.discriminator is not None:
      # Before the adversarial start the objective is the reconstruction.
      values["g_loss"] = values["loss"]
    self._track(values)
    return values["loss"]

  def _adversarial_update(self, batch) -> tf.Tensor:
    g_vars = self.decoder.trainable_variables
    d_vars = self.discriminator.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
      values, _, d_loss, g_loss = self.losses_of(batch, training=True)
      d_scaled = self.discriminator_optimizer.scale_loss(per_replica(d_loss))
      g_scaled = self.optimizer.scale_loss(per_replica(g_loss))
    d_grads = tape.gradient(d_scaled, d_vars)
    g_grads = tape.gradient(g_scaled, g_vars)
    del tape
    self.discriminator_optimizer.apply(d_grads, d_vars)
    self.optimizer.apply(g_grads, g_vars)
    self._track(values)
    return values["loss"]

  def adversarial_phase(self) -> tf.Tensor:
    """Scalar bool: the next train step updates adversarially."""
    if self.discriminator is None:
      return tf.constant(False)
    return self.train_steps.value >= self.adversarial_start_step

  def train_step(self, batch):
    """One update on a batch dict; returns the running means."""
    if self.discriminator is None:
      self._reconstruction_update(batch)
    else:
      if self.discriminator_optimizer is None:
        raise RuntimeError(f"{self.name}: call compile(optimizer, "
                           "discriminator_optimizer) before train_step")
      tf.cond(self.adversarial_phase(),
              lambda: self._adversarial_update(batch),
              lambda: self._reconstruction_update(batch))
      self.train_steps.assign_add(1)
    return self._results()

  def validation_step(self, batch):
    """`(running means, decoded batch)` of a batch in inference mode."""
    values, decoded, _, _ = self.losses_of(batch, training=False)
    self._track(values)
    return self._results(), decoded

  def test_step(self, batch):
    """All loss terms of a batch in inference mode; returns running means."""
    return self.validation_step(batch)[0]

  def probe_loss(self, batch) -> tf.Tensor:
    """The reconstruction loss of the current weights on a batch, in
    inference mode, without touching the trackers."""
    values, _, _, _ = self.losses_of(batch, training=False, adversarial=False)
    return values["loss"]
