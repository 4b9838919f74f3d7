"""`gan` and `conformer_gan`: a decoder trained with a spectrogram
discriminator.

The generator of `gan` is a `MultiscaleDecoder` (the fields of 'multiscale'),
that of `conformer_gan` a `ConformerDecoder` (the fields of 'conformer'); the
discriminator is a `SpectrogramDiscriminator` (the `disc_*` fields). Both
train inside the one `TrainableDecoder` (models/trainable.py): a
reconstruction warm-up of `adversarial_start_step` steps, then adversarial
updates with feature matching.
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

from e2s_tf.models import base
from e2s_tf.models import conformer
from e2s_tf.models import discriminator as discriminator_lib
from e2s_tf.models import multiscale
from e2s_tf.models import registry
from e2s_tf.models import trainable

# Fields of `config.model` that configure the adversarial training.
ADVERSARIAL_FIELDS = ("adversarial_loss", "adversarial_weight",
                      "feature_matching_weight", "adversarial_start_step")


def adversarial_fields(config: ml_collections.ConfigDict,
                       name: str) -> ml_collections.ConfigDict:
  """`config` (a generator's fields) renamed `name`, with the documented
  discriminator and adversarial fields added."""
  # Registry name of the model.
  config.name = name
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
  # Steps on the reconstruction loss alone before the adversarial updates
  # start (the discriminator is neither run nor updated before).
  config.adversarial_start_step = 500
  return config


def default_config() -> ml_collections.ConfigDict:
  """Documented defaults of `config.model` for 'gan': the generator fields
  of 'multiscale' (see `multiscale.default_config`), then the discriminator
  and adversarial ones (`adversarial_fields`)."""
  return adversarial_fields(multiscale.default_config(), "gan")


def conformer_gan_config() -> ml_collections.ConfigDict:
  """Documented defaults of `config.model` for 'conformer_gan': the fields
  of 'conformer' (see `conformer.default_config`), then the discriminator
  and adversarial ones (`adversarial_fields`)."""
  return adversarial_fields(conformer.default_config(), "conformer_gan")


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


def _non_generator_fields(config) -> tuple[str, ...]:
  return tuple(k for k in config.model
               if k.startswith("disc_")) + ADVERSARIAL_FIELDS


@registry.register("gan", default_config)
def build_gan(config, info=None) -> trainable.TrainableDecoder:
  generator = multiscale.multiscale_decoder(
      config, info, name="generator", exclude=_non_generator_fields(config))
  return _adversarial_model(config, info, generator, "gan")


@registry.register("conformer_gan", conformer_gan_config)
def build_conformer_gan(config, info=None) -> trainable.TrainableDecoder:
  generator = conformer.conformer_decoder(
      config, name="generator", exclude=_non_generator_fields(config))
  return _adversarial_model(config, info, generator, "conformer_gan")


def _adversarial_model(config, info, generator, name):
  m = config.model
  model = trainable.TrainableDecoder(
      generator, *registry.normalisation(info),
      discriminator=build_discriminator(config),
      adversarial_loss=m.adversarial_loss,
      adversarial_weight=m.adversarial_weight,
      feature_matching_weight=m.feature_matching_weight,
      adversarial_start_step=m.adversarial_start_step, name=name)
  return base.initialize(model, config.data.embedding_dim)
