"""`cnn`: a plain stack of 1-D convolutions over time.

Embedding dimensions in, spectrogram bins out; each hidden layer is a masked
'same' Conv1D, optional FiLM, activation, optional LayerNorm (per frame, so
padding-safe) and dropout. The baseline decoder.
"""

from __future__ import annotations

import keras
import ml_collections

from e2s_tf.models import base
from e2s_tf.models import layers
from e2s_tf.models import registry
from e2s_tf.models import trainable


def default_config() -> ml_collections.ConfigDict:
  """Documented defaults of `config.model` for 'cnn'."""
  config = ml_collections.ConfigDict()
  # Registry name of the model.
  config.name = "cnn"
  # Hidden channels of every convolution.
  config.channels = 256
  # Number of hidden convolution layers (the output layer is extra).
  config.num_layers = 5
  # Kernel size (frames) of the hidden convolutions.
  config.kernel_size = 5
  # Kernel size (frames) of the output convolution to the bins.
  config.output_kernel_size = 1
  # Activation after each hidden convolution (a keras.activations name).
  config.activation = "leaky_relu"
  # Per-frame LayerNormalization after each hidden layer.
  config.layer_norm = True
  # Dropout rate after each hidden layer (training only).
  config.dropout = 0.1
  # Seed of the dropout masks.
  config.seed = 0
  base.speaker_fields(config)
  return config


class CnnDecoder(base.SequenceDecoder):
  """Stack of masked Conv1D layers: `[B, T, D]` -> `[B, T, F]`."""

  def __init__(self, embedding_dim: int, num_bins: int, *, channels: int,
               num_layers: int, kernel_size: int, output_kernel_size: int,
               activation: str, layer_norm: bool, dropout: float, seed: int,
               speaker_conditioning: str, num_speakers: int,
               speaker_dim: int, **kwargs):
    if num_layers < 1 or channels < 1:
      raise ValueError(f"cnn: need num_layers >= 1 and channels >= 1, got "
                       f"{num_layers} and {channels}")
    super().__init__(embedding_dim, num_bins,
                     speaker_conditioning=speaker_conditioning,
                     num_speakers=num_speakers, speaker_dim=speaker_dim,
                     film_channels=[channels] * num_layers, **kwargs)
    policy = self.dtype_policy
    self.activation = keras.activations.get(activation)
    self.convs = [layers.MaskedConv1D(channels, kernel_size, dtype=policy,
                                      name=f"conv_{i}")
                  for i in range(num_layers)]
    self.norms = ([keras.layers.LayerNormalization(dtype=policy,
                                                   name=f"norm_{i}")
                   for i in range(num_layers)] if layer_norm else [])
    self.dropout = keras.layers.Dropout(dropout, seed=seed, dtype=policy)
    # Starts at zero: the untrained decoder outputs the train split's mean
    # log-spectrum (0 in normalised units), a stable start for any embedder.
    self.output_conv = layers.MaskedConv1D(num_bins, output_kernel_size,
                                           kernel_initializer="zeros",
                                           dtype=policy, name="output")

  def decode(self, x, mask, speaker_vector, training):
    h = x
    for i, conv in enumerate(self.convs):
      h = conv(h, mask)
      h = self.speaker.film(i, h, speaker_vector)
      h = self.activation(h)
      if self.norms:
        h = self.norms[i](h)
      h = self.dropout(h, training=training)
    return self.output_conv(h, mask)


@registry.register("cnn", default_config)
def build_cnn(config, info=None) -> trainable.TrainableDecoder:
  decoder = CnnDecoder(config.data.embedding_dim, config.data.num_bins,
                       name="cnn_decoder",
                       **base.constructor_fields(config.model))
  base.initialize(decoder, config.data.embedding_dim)
  model = trainable.TrainableDecoder(decoder, *registry.normalisation(info),
                                     name="cnn")
  return base.initialize(model, config.data.embedding_dim)
