"""`multiscale`: a multi-receptive-field decoder with a 2-D spectral refiner.

    embedding ─▶ input conv ─▶ N x [parallel branches (kernel k_i, dilation
    d_i) ─▶ fuse (sum | concat + 1x1) ─▶ FiLM? ─▶ + residual ─▶ LayerNorm?]
    ─▶ output conv to bins ─▶ residual Conv2D refiner over time x frequency

Each branch sees a different temporal context (a kernel of 7 with dilation 4
spans 25 frames, a quarter second), so short phonetic detail and longer
prosodic context are decoded side by side; the refiner then sharpens the
spectrogram locally across neighbouring bins, which the per-frame output
projection cannot. Every convolution is masked (see layers.py).

For a log-filterbank embedding (logmel) three closed-form pieces wrap the
network (prior.FilterbankPrior), each switchable in the config:

    prior (closed-form inverse of the filterbank) ─┐
    network output (starts at zero) ───────────────┴─▶ + ─▶ refiner
    ─▶ projection onto the stated band energies ─▶ silence gate

the network learns a residual on the prior, so the untrained decoder already
is a closed-form inverse; the projection moves the band energies of the
output to the ones the embedding states, keeping the detail the network put
inside the bands; frames whose bands are all at the log floor (digital
silence) output the floor.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import keras
import ml_collections
import tensorflow as tf

from e2s_tf.models import base
from e2s_tf.models import layers
from e2s_tf.models import registry
from e2s_tf.models import prior as prior_lib
from e2s_tf.models import trainable

# How the parallel branches of a block are merged.
FUSIONS = ("sum", "concat")


def default_config() -> ml_collections.ConfigDict:
  """Documented defaults of `config.model` for 'multiscale'."""
  config = ml_collections.ConfigDict()
  # Registry name of the model.
  config.name = "multiscale"
  # Hidden channels of the input projection, branches and blocks.
  config.channels = 128
  # Kernel size (frames) of the input projection.
  config.input_kernel_size = 3
  # Number of multi-receptive-field blocks (each residual).
  config.num_blocks = 3
  # Kernel size (frames) of each parallel branch; one branch per entry.
  config.branch_kernel_sizes = (3, 5, 7)
  # Dilation of the first convolution of each branch (same length as above).
  config.branch_dilations = (1, 2, 4)
  # Convolutions per branch: the first dilated, the others not.
  config.branch_depth = 2
  # Merge of the branches: 'sum' (mean) or 'concat' (then a 1x1 convolution).
  config.fusion = "concat"
  # Activation before every convolution (a keras.activations name).
  config.activation = "leaky_relu"
  # Per-frame LayerNormalization after each block's residual sum.
  config.layer_norm = True
  # Dropout rate on each block's residual branch (training only).
  config.dropout = 0.1
  # Kernel size (frames) of the output projection to the bins.
  config.output_kernel_size = 1
  # Channels of the 2-D refiner over [frames, bins] (0 disables the refiner).
  config.refine_channels = 8
  # Conv2D layers of the refiner (the last one maps back to 1 channel).
  config.refine_layers = 3
  # Refiner kernel (frames, bins).
  config.refine_kernel_size = (3, 3)
  # A linear 1x1 path from the (normalised) embedding straight to the bins,
  # added to the output: it quickly learns the best per-frame linear map of
  # the log bands and the blocks learn the residual detail. With a prior it
  # starts at zero, like the output convolution.
  config.linear_skip = True
  # Add the output to a closed-form inverse of the embedding's filterbank
  # (prior.FilterbankPrior) when the embedder offers a filterbank (logmel,
  # see Embedder.filterbank); ignored for other embedders. The decoder then
  # learns a residual on the analytic baseline.
  config.filterbank_prior = True
  # With the prior: frames whose every filterbank band is at the log floor
  # (digital silence) output the prior unchanged (the floor), not a decoded
  # guess.
  config.silence_gate = True
  # With the prior: steps of the filterbank projection (FilterbankPrior.
  # project) applied to the output, which moves its band energies to the
  # ones the embedding states while keeping the detail inside the bands
  # (0 disables).
  config.projection_steps = 32
  # The normalised embedding is clipped to [-input_clip, input_clip] at the
  # network's input (the prior, when there is one, reads it unclipped);
  # 0 disables. With the output paths starting at zero (the mean
  # log-spectrum), it gives every embedder a stable start.
  config.input_clip = 6.0
  # Seed of the dropout masks.
  config.seed = 0
  base.speaker_fields(config)
  return config


class Branch(keras.layers.Layer):
  """`depth` masked convs (the first dilated), each after the activation."""

  def __init__(self, channels: int, kernel_size: int, dilation: int,
               depth: int, activation: str, **kwargs):
    super().__init__(**kwargs)
    if depth < 1:
      raise ValueError(f"{self.name}: branch_depth must be >= 1, got {depth}")
    self.activation = keras.activations.get(activation)
    self.channels = channels
    self.convs = [
        layers.MaskedConv1D(channels, kernel_size,
                            dilation_rate=dilation if j == 0 else 1,
                            dtype=self.dtype_policy, name=f"conv_{j}")
        for j in range(depth)]

  def build(self, input_shape):
    shape = tuple(input_shape)
    for conv in self.convs:
      conv.build(shape)
      shape = shape[:-1] + (self.channels,)

  def call(self, x, mask):
    for conv in self.convs:
      x = conv(self.activation(x), mask)
    return x


class MultiReceptiveFieldBlock(keras.layers.Layer):
  """Parallel dilated-conv branches, fused: `[B, T, C]` -> `[B, T, C]`.

  Returns only the residual branch; the caller adds it to its input.
  """

  def __init__(self, channels: int, kernel_sizes: Sequence[int],
               dilations: Sequence[int], depth: int, fusion: str,
               activation: str, **kwargs):
    super().__init__(**kwargs)
    if len(kernel_sizes) != len(dilations) or not kernel_sizes:
      raise ValueError(f"{self.name}: branch_kernel_sizes "
                       f"{tuple(kernel_sizes)} and branch_dilations "
                       f"{tuple(dilations)} must be "
                       "non-empty and equally long")
    if fusion not in FUSIONS:
      raise ValueError(f"unknown fusion {fusion!r}; known: {FUSIONS}")
    policy = self.dtype_policy
    self.branches = [
        Branch(channels, k, d, depth, activation, dtype=policy,
               name=f"branch_{i}")
        for i, (k, d) in enumerate(zip(kernel_sizes, dilations))]
    self.fuse = (layers.MaskedConv1D(channels, 1, dtype=policy, name="fuse")
                 if fusion == "concat" else None)
    self.channels = channels

  def build(self, input_shape):
    for branch in self.branches:
      branch.build(input_shape)
    if self.fuse is not None:
      self.fuse.build(tuple(input_shape[:-1]) +
                      (self.channels * len(self.branches),))

  def call(self, x, mask):
    outputs = [branch(x, mask) for branch in self.branches]
    if self.fuse is None:
      return tf.add_n(outputs) / float(len(outputs))
    return self.fuse(tf.concat(outputs, axis=-1), mask)


class MultiscaleDecoder(base.SequenceDecoder):
  """Multi-receptive-field decoder + 2-D refiner: `[B, T, D]` -> `[B, T, F]`."""

  def __init__(self, embedding_dim: int, num_bins: int, *, channels: int,
               input_kernel_size: int, num_blocks: int,
               branch_kernel_sizes: Sequence[int],
               branch_dilations: Sequence[int], branch_depth: int,
               fusion: str, activation: str, layer_norm: bool,
               dropout: float, output_kernel_size: int,
               refine_channels: int, refine_layers: int,
               refine_kernel_size: Sequence[int], linear_skip: bool,
               silence_gate: bool, projection_steps: int, input_clip: float,
               seed: int,
               speaker_conditioning: str, num_speakers: int,
               speaker_dim: int, prior=None, **kwargs):
    if channels < 1 or num_blocks < 0:
      raise ValueError(f"multiscale: need channels >= 1 and num_blocks >= 0, "
                       f"got {channels} and {num_blocks}")
    super().__init__(embedding_dim, num_bins,
                     speaker_conditioning=speaker_conditioning,
                     num_speakers=num_speakers, speaker_dim=speaker_dim,
                     film_channels=[channels] * num_blocks, **kwargs)
    policy = self.dtype_policy
    self.channels = channels
    self.activation = keras.activations.get(activation)
    self.input_conv = layers.MaskedConv1D(channels, input_kernel_size,
                                          dtype=policy, name="input")
    self.blocks = [
        MultiReceptiveFieldBlock(channels, branch_kernel_sizes,
                                 branch_dilations, branch_depth, fusion,
                                 activation, dtype=policy, name=f"block_{i}")
        for i in range(num_blocks)]
    self.norms = ([keras.layers.LayerNormalization(dtype=policy,
                                                   name=f"norm_{i}")
                   for i in range(num_blocks)] if layer_norm else [])
    self.dropout = keras.layers.Dropout(dropout, seed=seed, dtype=policy)
    # The output paths start at zero: the untrained decoder outputs the prior
    # exactly (instead of the prior plus noise that training must first
    # undo) and learns only the residual; without a prior it outputs 0, the
    # train split's mean log-spectrum in normalised units, from where the
    # first steps cannot blow up the way a random spectrogram from a
    # glorot-initialised projection of a 256-dimensional code can.
    residual_init = "zeros"
    self.input_clip = float(input_clip)
    self.output_conv = layers.MaskedConv1D(
        num_bins, output_kernel_size, kernel_initializer=residual_init,
        dtype=policy, name="output")
    self.prior = prior
    self.silence_gate = bool(silence_gate) and prior is not None
    self.projection_steps = int(projection_steps) if prior is not None else 0
    self.skip = (layers.MaskedConv1D(num_bins, 1,
                                     kernel_initializer=residual_init,
                                     dtype=policy, name="linear_skip")
                 if linear_skip else None)
    self.refiner = (
        layers.SpectralRefiner(refine_channels, refine_layers,
                               refine_kernel_size, activation, dtype=policy,
                               name="refiner") if refine_channels > 0 else None)

  def decode(self, x, mask, speaker_vector, training):
    network_input = (tf.clip_by_value(x, -self.input_clip, self.input_clip)
                     if self.input_clip > 0 else x)
    h = self.input_conv(network_input, mask)
    for i, block in enumerate(self.blocks):
      y = block(h, mask)
      y = self.speaker.film(i, y, speaker_vector)
      h = h + self.dropout(y, training=training)
      if self.norms:
        h = self.norms[i](h)
    spectrogram = self.output_conv(self.activation(h), mask)
    if self.skip is not None:
      spectrogram = spectrogram + self.skip(network_input, mask)
    if self.prior is None:
      return (self.refiner(spectrogram, mask) if self.refiner is not None
              else spectrogram)
    prior = tf.cast(layers.clean_padding(self.prior(x), mask),
                    spectrogram.dtype)
    spectrogram = spectrogram + prior
    if self.refiner is not None:
      spectrogram = self.refiner(spectrogram, mask)
    if self.projection_steps:
      spectrogram = tf.cast(self.prior.project(spectrogram, x,
                                               self.projection_steps),
                            spectrogram.dtype)
    # Frames the embedding proves silent keep the (exact) prior: the decoder
    # cannot leave noise in the pauses, which speech metrics punish hard.
    if self.silence_gate:
      silent = tf.cast(self.prior.silent(x), spectrogram.dtype)[..., None]
      spectrogram = spectrogram + silent * (prior - spectrogram)
    return spectrogram


def multiscale_decoder(config: ml_collections.ConfigDict,
                       info: Optional[Mapping[str, Any]] = None,
                       name: str = "multiscale_decoder",
                       exclude: Sequence[str] = ()) -> MultiscaleDecoder:
  """A `MultiscaleDecoder` from `config.model` and `config.data`, its
  variables created; with `filterbank_prior`, the prior of the dataset's
  embedder when it offers one (models/prior.py). `exclude`: fields of
  `config.model` that are not the decoder's (a GAN's discriminator)."""
  fields = base.constructor_fields(config.model, "filterbank_prior", *exclude)
  prior = (prior_lib.from_dataset_info(info)
           if config.model.filterbank_prior and info is not None else None)
  decoder = MultiscaleDecoder(config.data.embedding_dim, config.data.num_bins,
                              prior=prior, name=name, **fields)
  return base.initialize(decoder, config.data.embedding_dim)


@registry.register("multiscale", default_config)
def build_multiscale(config, info=None) -> trainable.TrainableDecoder:
  model = trainable.TrainableDecoder(multiscale_decoder(config, info),
                                     *registry.normalisation(info),
                                     name="multiscale")
  return base.initialize(model, config.data.embedding_dim)
