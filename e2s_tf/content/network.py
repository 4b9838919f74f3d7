"""The content judge's network: a small CTC phone recogniser on the waveform.

    waveform [B, S], lengths [B]
      -> log-mel on the StftConfig grid (the `logmel` embedder's), floored,
         mean removed per utterance over its own frames         [B, T, M]
      -> SpecAugment-lite (training only): frequency and time masks
      -> frame stacking: r consecutive frames side by side   [B, T/r, r M]
      -> 1x1 projection to C channels, then residual blocks of (depthwise
         conv over time, 1x1 conv, LayerNorm, ReLU, dropout)     [B, T', C]
      -> 1x1 classifier: CTC logits, blank first        [B, T', phones + 1]

Why a convolution stack: on two CPU cores a time-channel separable
convolution block (QuartzNet style) costs one multiply-add per weight and
frame and runs in parallel over time, where a recurrent layer runs frame
after frame. The default (6 blocks of kernel 11 at r = 3, 30 ms frames, 256
channels, 0.48 M weights) sees 61 frames, 1.8 s, and trains in 0.3-0.5 s per
batch of 16 utterances on two cores; r = 2 with 192 channels was slower per
step and worse at the same wall time on the demo corpus (held-out PER 0.10
against 0.087 after 400 steps).

Padding never leaks into the output: the features of padded frames are set
to 0 before every convolution ('same' padding pads with 0 too, by an amount
that does not depend on the length), and the per-utterance statistics and
time masks use the valid frames only. So an utterance decodes the same
alone and padded in a batch (to float rounding), which the export relies
on.

Output frame k covers native frames rk .. rk + r - 1; an utterance of S
samples has T' = ceil(T / r) output frames, T = StftConfig.num_frames(S).
Every layer has a fixed name, so checkpoint keys (Keras weight paths) are
the same in every build.
"""

from __future__ import annotations

import math

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import spectral
from e2s_tf.embedders import logmel

# The CTC blank's class index; phone i of the inventory is class i + 1.
BLANK = 0


def frame_lengths(lengths: tf.Tensor, stft_config: spectral.StftConfig,
                  frame_stack: int) -> tf.Tensor:
  """`[batch]` sample counts -> `[batch]` int32 output frame counts
  ceil(num_frames / frame_stack) (0 below one STFT frame)."""
  lengths = tf.cast(lengths, tf.int32)
  frames = tf.maximum(
      (lengths - stft_config.frame_length) // stft_config.frame_step + 1, 0)
  return (frames + frame_stack - 1) // frame_stack


def output_frames(num_samples: int, stft_config: spectral.StftConfig,
                  frame_stack: int) -> int:
  """The output frame count of a waveform of `num_samples` (NumPy side)."""
  return -(-int(stft_config.num_frames(num_samples)) // frame_stack)


def sequence_mask(lengths: tf.Tensor, max_length: tf.Tensor) -> tf.Tensor:
  """`[batch]` lengths -> `[batch, max_length, 1]` float32 validity."""
  return tf.sequence_mask(lengths, max_length, dtype=tf.float32)[..., None]


class FrontEnd(keras.layers.Layer):
  """Waveform -> log-mel `[batch, frames, mel]`, mean-normalised per
  utterance over its valid frames, 0 on padded frames."""

  def __init__(self, stft_config: spectral.StftConfig, num_mel_bins: int,
               lower_edge_hertz: float, log_floor: float, **kwargs):
    super().__init__(**kwargs)
    if log_floor < spectral.MAGNITUDE_FLOOR:
      raise ValueError(f"log_floor must be >= {spectral.MAGNITUDE_FLOOR} (the "
                       f"floor of the logmel embedder), got {log_floor}")
    self.stft_config = stft_config
    self._logmel = logmel.LogMelEmbedder(stft_config, num_mel_bins,
                                         lower_edge_hertz)
    self._log_floor = math.log(log_floor)

  def call(self, waveform: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """`[batch, samples]`, `[batch]` -> `[batch, frames, mel]`."""
    features = tf.maximum(self._logmel.log_mel(waveform), self._log_floor)
    frames = frame_lengths(lengths, self.stft_config, 1)
    mask = sequence_mask(frames, tf.shape(features)[1])
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
    mean = tf.reduce_sum(features * mask, axis=1, keepdims=True) / count
    return (features - mean) * mask


class SpecAugment(keras.layers.Layer):
  """Frequency and time masks (set to 0, the utterance mean) in training.

  Each mask of an utterance has a width drawn uniformly in [0, max] (bins or
  frames) and a start uniform over the bins or the utterance's valid frames.
  """

  def __init__(self, freq_masks: int, freq_width: int, time_masks: int,
               time_width: int, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)
    self.time_masks, self.time_width = int(time_masks), int(time_width)
    self.seed_generator = keras.random.SeedGenerator(seed, name="seed")

  def _masks(self, size, count, width, valid):
    """`[batch, count]` mask spans over positions `[size]` -> `[batch, size]`
    True where masked; starts uniform in [0, valid)."""
    batch = tf.shape(valid)[0]
    widths = tf.floor(keras.random.uniform(
        [batch, count], 0.0, width + 1.0, seed=self.seed_generator))
    starts = tf.floor(keras.random.uniform(
        [batch, count], seed=self.seed_generator) * valid[:, None])
    positions = tf.cast(tf.range(size), tf.float32)[None, None, :]
    hit = ((positions >= starts[..., None]) &
           (positions < (starts + widths)[..., None]))
    return tf.reduce_any(hit, axis=1)

  def call(self, features: tf.Tensor, frames: tf.Tensor,
           training: bool = False) -> tf.Tensor:
    """`[batch, frames, mel]`, `[batch]` valid frames -> the same, masked."""
    if not training:
      return features
    shape = tf.shape(features)
    keep = tf.ones_like(features[..., :1]) * tf.ones_like(features[:, :1])
    if self.freq_masks and self.freq_width:
      bins = tf.fill([shape[0]], tf.cast(shape[2], tf.float32))
      hit = self._masks(shape[2], self.freq_masks, self.freq_width, bins)
      keep *= 1.0 - tf.cast(hit, features.dtype)[:, None, :]
    if self.time_masks and self.time_width:
      hit = self._masks(shape[1], self.time_masks, self.time_width,
                        tf.cast(frames, tf.float32))
      keep *= 1.0 - tf.cast(hit, features.dtype)[:, :, None]
    return features * keep


class SeparableBlock(keras.layers.Layer):
  """x + dropout(relu(norm(pointwise(depthwise(x))))), masked; `[B, T, C]`."""

  def __init__(self, channels: int, kernel_size: int, dilation: int,
               dropout: float, seed: int, **kwargs):
    super().__init__(**kwargs)
    self.depthwise = keras.layers.DepthwiseConv1D(
        kernel_size, dilation_rate=dilation, padding="same", name="depthwise")
    self.pointwise = keras.layers.Dense(channels, name="pointwise")
    self.norm = keras.layers.LayerNormalization(name="norm")
    self.dropout = keras.layers.Dropout(dropout, seed=seed, name="dropout")

  def call(self, x: tf.Tensor, mask: tf.Tensor,
           training: bool = False) -> tf.Tensor:
    y = self.pointwise(self.depthwise(x))
    y = self.dropout(tf.nn.relu(self.norm(y)), training=training)
    return (x + y) * mask


class ContentJudgeNetwork(keras.Model):
  """waveform -> CTC logits over blank + the phone inventory.

  Fields of `model_config` are documented in e2s_tf/configs/content_judge.py.
  """

  def __init__(self, stft_config: spectral.StftConfig,
               model_config: ml_collections.ConfigDict, num_phones: int,
               seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    m = model_config
    if len(m.kernel_sizes) != len(m.dilations) or not m.kernel_sizes:
      raise ValueError("model.kernel_sizes and model.dilations need one entry "
                       f"per block, got {len(m.kernel_sizes)} and "
                       f"{len(m.dilations)}")
    if int(m.frame_stack) < 1:
      raise ValueError(f"model.frame_stack must be >= 1, got {m.frame_stack}")
    self.stft_config = stft_config
    self.frame_stack = int(m.frame_stack)
    self.num_classes = int(num_phones) + 1
    self.front_end = FrontEnd(stft_config, m.num_mel_bins, m.lower_edge_hertz,
                              m.log_floor, name="front_end")
    a = m.spec_augment
    self.spec_augment = SpecAugment(a.freq_masks, a.freq_width, a.time_masks,
                                    a.time_width, seed=seed,
                                    name="spec_augment")
    self.projection = keras.layers.Dense(m.channels, name="projection")
    self.blocks = []
    for i, (kernel, dilation) in enumerate(zip(m.kernel_sizes, m.dilations)):
      block = SeparableBlock(m.channels, kernel, dilation, m.dropout,
                             seed=seed + 1 + i, name=f"block_{i}")
      setattr(self, f"block_{i}", block)  # tracked by tf.train too
      self.blocks.append(block)
    self.classifier = keras.layers.Dense(self.num_classes, name="classifier")

  def _stack(self, features: tf.Tensor) -> tf.Tensor:
    """`[B, T, M]` -> `[B, ceil(T / r), r M]` (zero frames appended)."""
    r = self.frame_stack
    if r == 1:
      return features
    shape = tf.shape(features)
    padded = tf.pad(features, [[0, 0], [0, (-shape[1]) % r], [0, 0]])
    return tf.reshape(padded, [shape[0], -1, r * features.shape[-1]])

  def call(self, waveform: tf.Tensor, lengths: tf.Tensor,
           training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """`[batch, samples]` f32, `[batch]` int -> (logits `[batch, T', K + 1]`,
    frames `[batch]` int32: the valid output frames of each utterance)."""
    features = self.front_end(waveform, lengths)
    native = frame_lengths(lengths, self.stft_config, 1)
    features = self.spec_augment(features, native, training=training)
    x = self._stack(features)
    frames = frame_lengths(lengths, self.stft_config, self.frame_stack)
    mask = sequence_mask(frames, tf.shape(x)[1])
    x = self.projection(x) * mask
    for block in self.blocks:
      x = block(x, mask, training=training)
    return self.classifier(x), frames


def ctc_loss(logits: tf.Tensor, frames: tf.Tensor, labels: tf.Tensor,
             label_lengths: tf.Tensor) -> tf.Tensor:
  """CTC loss per label: sum over the batch / the batch's label count.

  Args:
    logits: `[batch, T', K + 1]`, blank at class 0.
    frames: `[batch]` valid frames of `logits`.
    labels: `[batch, L]` int32 class ids (1..K), padded with anything.
    label_lengths: `[batch]` valid labels.

  Returns:
    Scalar loss.
  """
  losses = tf.nn.ctc_loss(labels=labels, logits=logits,
                          label_length=label_lengths, logit_length=frames,
                          logits_time_major=False, blank_index=BLANK)
  count = tf.maximum(tf.reduce_sum(tf.cast(label_lengths, tf.float32)), 1.0)
  return tf.reduce_sum(losses) / count


def build_network(config: ml_collections.ConfigDict,
                  num_phones: int) -> ContentJudgeNetwork:
  """The network for `num_phones` phones, built (weights made)."""
  stft_config = spectral.StftConfig.from_dict(config.stft.to_dict())
  network = ContentJudgeNetwork(stft_config, config.model, num_phones,
                                seed=int(config.train.seed),
                                name="content_judge")
  samples = stft_config.num_samples(2 * int(config.model.frame_stack))
  network(tf.zeros([1, samples]), tf.constant([samples]), training=False)
  return network


def greedy_decode(logits, frames) -> list[list[int]]:
  """Best-path CTC decoding: per utterance the argmax classes of its valid
  frames, repeats merged, blanks removed; phone indices 0..K-1.

  Args:
    logits: `[batch, T', K + 1]` (NumPy or tensor; log-probabilities too).
    frames: `[batch]` valid frames.
  """
  best = np.argmax(np.asarray(logits), axis=-1)
  out = []
  for row, n in zip(best, np.asarray(frames)):
    path = row[:int(n)]
    keep = np.ones(path.shape, bool)
    keep[1:] = path[1:] != path[:-1]
    out.append([int(c) - 1 for c in path[keep] if c != BLANK])
  return out
