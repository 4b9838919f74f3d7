"""`gan`: the multiscale decoder trained adversarially.

`GanModel` holds `self.generator` (a `MultiscaleDecoder`) and
`self.discriminator` (a `SpectrogramDiscriminator`). Its `train_step`:

- warm-up (the first `warmup_steps` steps): the generator learns from the
  masked reconstruction loss alone and the discriminator is neither run nor
  updated;
- afterwards, one generator forward pass feeds both updates: the
  discriminator minimises the adversarial loss ('lsgan' or 'hinge') on real vs
  generated spectrograms, the generator minimises reconstruction +
  `adversarial_weight` x adversarial + `feature_matching_weight` x feature
  matching (L1 between the discriminator's feature maps on real and generated
  input). Both are computed with the discriminator's pre-update weights.

Everything is masked: padding frames take no part in any loss. The step
counter `train_steps` is a variable, so a restored checkpoint resumes after
the warm-up.

Reported metrics: `loss` and its terms are the reconstruction loss (the same
numbers as for 'cnn'/'multiscale', so validation losses compare across
models); `g_loss` is the generator's whole objective; `g_adversarial`,
`feature_matching` and `d_loss` are the adversarial terms (not updated during
warm-up).
"""

from __future__ import annotations

from typing import Mapping, Optional

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import losses
from e2s_tf import spectral
from e2s_tf.models import base
from e2s_tf.models import discriminator as discriminator_lib
from e2s_tf.models import layers
from e2s_tf.models import multiscale
from e2s_tf.models import registry
from e2s_tf.models import trainer

# Trackers of the adversarial terms, after the reconstruction ones.
ADVERSARIAL_METRICS = ("g_loss", "g_adversarial", "feature_matching", "d_loss")


def default_config() -> ml_collections.ConfigDict:
  """Documented defaults of `config.model` for 'gan'.

  The generator fields are those of 'multiscale' (see
  `multiscale.default_config`); the discriminator and adversarial ones follow.
  """
  config = multiscale.default_config()
  # Registry name of the model.
  config.name = "gan"
  # (time, frequency) average-pooling of each sub-discriminator's input.
  config.disc_pools = ((1, 1), (2, 2), (4, 4))
  # Channels of the Conv2D layers of every sub-discriminator.
  config.disc_channels = (8, 16, 16)
  # Frequency stride of each of those layers (time is never strided).
  config.disc_frequency_strides = (2, 2, 2)
  # Discriminator kernel (frames, bins).
  config.disc_kernel_size = (3, 3)
  # Adversarial objective: 'lsgan' (least squares) or 'hinge'.
  config.adversarial_loss = "lsgan"
  # Weight of the generator's adversarial term (reconstruction weighs ~1).
  config.adversarial_weight = 0.05
  # Weight of the feature-matching term of the generator.
  config.feature_matching_weight = 0.1
  # Generator-only steps on the reconstruction loss before the GAN starts.
  config.warmup_steps = 500
  return config


class GanModel(keras.Model):
  """Generator + discriminator with a warm-up, called as the generator.

  Attributes:
    generator: the decoder; `model(embedding, mask, speaker)` calls it.
    discriminator: the `SpectrogramDiscriminator`.
    train_steps: int64 variable, training steps taken (warm-up included).
    optimizer_roles: names of the optimizers `compile` takes.
  """

  optimizer_roles = ("g_optimizer", "d_optimizer")

  def __init__(self, generator: keras.Model,
               discriminator: discriminator_lib.SpectrogramDiscriminator,
               log_stft_mean: Optional[np.ndarray] = None,
               log_stft_std: Optional[np.ndarray] = None,
               adversarial_loss: str = "lsgan",
               adversarial_weight: float = 0.05,
               feature_matching_weight: float = 0.1,
               warmup_steps: int = 0, **kwargs):
    super().__init__(autocast=False, **kwargs)
    if warmup_steps < 0:
      raise ValueError(f"{self.name}: warmup_steps must be >= 0, got "
                       f"{warmup_steps}")
    self.generator = generator
    self.discriminator = discriminator
    self.log_stft_mean = log_stft_mean
    self.log_stft_std = log_stft_std
    self.adversarial = losses.adversarial_loss(adversarial_loss)
    self.adversarial_weight = float(adversarial_weight)
    self.feature_matching_weight = float(feature_matching_weight)
    self.warmup_steps = int(warmup_steps)
    self.reconstruction_loss = losses.ReconstructionLoss(log_stft_mean,
                                                         log_stft_std)
    self.train_steps = keras.Variable(0, dtype="int64", trainable=False,
                                      name="train_steps")
    self.trackers = {name: keras.metrics.Mean(name=name) for name in
                     trainer.RECONSTRUCTION_METRICS + ADVERSARIAL_METRICS}
    self.g_optimizer = None
    self.d_optimizer = None

  @property
  def network(self) -> keras.Model:
    """The inference network (what export needs)."""
    return self.generator

  def compile(self, g_optimizer: keras.optimizers.Optimizer,
              d_optimizer: keras.optimizers.Optimizer,
              l1_weight: float = 1.0,
              spectral_convergence_weight: float = 1.0,
              log_mel_weight: float = 0.0,
              num_mel_bins: int = 80,
              stft_config: Optional[spectral.StftConfig] = None,
              **kwargs):
    """Sets both optimizers (loss-scaled under mixed_float16) and the weights.

    The loss arguments are those of `losses.default_loss_config()`; other
    keyword arguments go to `keras.Model.compile`. `self.optimizer` is the
    generator's.
    """
    if g_optimizer is d_optimizer:
      raise ValueError(f"{self.name}: g_optimizer and d_optimizer must be "
                       "distinct optimizer objects")
    super().compile(optimizer=g_optimizer, **kwargs)
    self.g_optimizer = self.optimizer
    self.d_optimizer = trainer.with_loss_scaling(d_optimizer, self.dtype_policy)
    self.reconstruction_loss = trainer.reconstruction_loss_from(
        self.log_stft_mean, self.log_stft_std, l1_weight,
        spectral_convergence_weight, log_mel_weight, num_mel_bins, stft_config)
    trainer.build_optimizer(self.g_optimizer,
                            self.generator.trainable_variables)
    trainer.build_optimizer(self.d_optimizer,
                            self.discriminator.trainable_variables)

  @property
  def metrics(self):
    names = (("loss",) + self.reconstruction_loss.term_names +
             ADVERSARIAL_METRICS)
    return [self.trackers[n] for n in names]

  def call(self, embedding, frame_mask=None, speaker=None, training=False):
    """`[B, T, D]` embedding, `[B, T]` mask, `[B]` speaker -> `[B, T, F]`."""
    return self.generator(embedding, frame_mask, speaker, training=training)

  def _results(self) -> dict[str, tf.Tensor]:
    return {m.name: m.result() for m in self.metrics}

  def _update(self, values: Mapping[str, tf.Tensor]) -> tf.Tensor:
    for name, value in values.items():
      self.trackers[name].update_state(value)
    return values["loss"]

  def adversarial_losses(self, batch, training: bool):
    """All loss terms of a batch, computed with one generator pass.

    Returns:
      `(values, d_loss, g_loss)`: the dict of reported terms (reconstruction
      ones and `ADVERSARIAL_METRICS`), the discriminator's objective and the
      generator's (which includes layer regularisation losses).
    """
    embedding, mask, speaker, target = trainer.unpack_batch(batch)
    fake = self.generator(embedding, mask, speaker, training=training)
    values = self.reconstruction_loss(target, fake, mask)
    real = layers.clean_padding(target, mask)
    real_outputs = self.discriminator(real, mask, training=training)
    fake_outputs = self.discriminator(fake, mask, training=training)
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
    d_loss = d_loss + trainer.regularization(self.discriminator)
    g_loss = g_loss + trainer.regularization(self.generator)
    return values, d_loss, g_loss

  def _warmup_step(self, batch) -> tf.Tensor:
    values = trainer.reconstruction_step(
        self.generator, self.g_optimizer, self.reconstruction_loss, batch)
    # The generator's whole objective during warm-up is the reconstruction.
    self.trackers["g_loss"].update_state(values["loss"])
    return self._update(values)

  def _adversarial_step(self, batch) -> tf.Tensor:
    g_vars = self.generator.trainable_variables
    d_vars = self.discriminator.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
      values, d_loss, g_loss = self.adversarial_losses(batch, training=True)
      d_scaled = self.d_optimizer.scale_loss(trainer.per_replica(d_loss))
      g_scaled = self.g_optimizer.scale_loss(trainer.per_replica(g_loss))
    d_grads = tape.gradient(d_scaled, d_vars)
    g_grads = tape.gradient(g_scaled, g_vars)
    del tape
    self.d_optimizer.apply(d_grads, d_vars)
    self.g_optimizer.apply(g_grads, g_vars)
    return self._update(values)

  def in_warmup(self) -> tf.Tensor:
    """Scalar bool: the next train step is a warm-up step."""
    return self.train_steps.value < self.warmup_steps

  def train_step(self, batch):
    """One step (warm-up or adversarial); returns the running means."""
    if self.g_optimizer is None:
      raise RuntimeError(f"{self.name}: call compile(g_optimizer, d_optimizer) "
                         "before train_step")
    tf.cond(self.in_warmup(), lambda: self._warmup_step(batch),
            lambda: self._adversarial_step(batch))
    self.train_steps.assign_add(1)
    return self._results()

  def test_step(self, batch):
    """All loss terms of a batch in inference mode; returns running means."""
    values, _, _ = self.adversarial_losses(batch, training=False)
    self._update(values)
    return self._results()


def build_discriminator(config: ml_collections.ConfigDict
                        ) -> discriminator_lib.SpectrogramDiscriminator:
  """A `SpectrogramDiscriminator` from `config.model`, variables created."""
  m = config.model
  disc = discriminator_lib.SpectrogramDiscriminator(
      pools=tuple(tuple(p) for p in m.disc_pools),
      channels=tuple(m.disc_channels), kernel_size=tuple(m.disc_kernel_size),
      frequency_strides=tuple(m.disc_frequency_strides), name="discriminator")
  disc(tf.zeros([1, 1, config.data.num_bins]), tf.ones([1, 1]))
  return disc


@registry.register("gan", default_config)
def build_gan(config, log_stft_mean=None, log_stft_std=None,
              prior=None) -> GanModel:
  m = config.model
  generator = base.initialize(
      multiscale.multiscale_decoder(config, name="generator", prior=prior),
      config.data.embedding_dim)
  model = GanModel(generator, build_discriminator(config), log_stft_mean,
                   log_stft_std, adversarial_loss=m.adversarial_loss,
                   adversarial_weight=m.adversarial_weight,
                   feature_matching_weight=m.feature_matching_weight,
                   warmup_steps=m.warmup_steps, name="gan")
  return base.initialize(model, config.data.embedding_dim)
