"""The speaker-encoder network (x-vector style, on the project's frame grid).

    waveform [B, S]
      -> log-mel on the StftConfig grid, per-utterance mean removed [B, T, M]
      -> TDNN: 1-D convolutions, 'same' padding, dilated             [B, T, C]
      -> 1x1 bottleneck: frame embeddings (exported)   [B, T, bottleneck_dim]
      -> 1x1 widening, mean+std pooling over T, segment layers          [B, E]
      -> L2 normalisation: utterance embedding (exported)               [B, E]
      -> additive-margin softmax head (training only)            [B, speakers]

Convolutions with 'same' padding keep one output per STFT frame, so frame `t`
of the bottleneck is frame `t` of `e2s_tf.spectral.stft` on the same
StftConfig: T = StftConfig.num_frames(S).

Every layer has a fixed name, so the Keras weight paths (the keys of a
training checkpoint, `training.checkpoints.weights_of`) are the same in
every build, whatever else the process built before.
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import ml_collections
import tensorflow as tf

from e2s_tf import spectral
from e2s_tf.embedders import logmel

# Variance floor of statistics pooling and norm floor of L2 normalisation.
VARIANCE_FLOOR = 1e-6
NORM_EPSILON = 1e-12


class LogMelFrontEnd(keras.layers.Layer):
  """Waveform -> per-utterance mean-normalised log-mel on the StftConfig grid.

  The log-mel energies are those of the `logmel` embedder (same STFT frames,
  same mel matrix), floored at ln(log_floor).
  """

  def __init__(self, stft_config: spectral.StftConfig, num_mel_bins: int,
               lower_edge_hertz: float, log_floor: float, **kwargs):
    super().__init__(**kwargs)
    if log_floor < spectral.MAGNITUDE_FLOOR:
      raise ValueError(f"log_floor must be >= {spectral.MAGNITUDE_FLOOR} (the "
                       f"floor of the logmel embedder), got {log_floor}")
    self._logmel = logmel.LogMelEmbedder(stft_config, num_mel_bins,
                                         lower_edge_hertz)
    self._log_floor = math.log(log_floor)

  def call(self, waveform: tf.Tensor) -> tf.Tensor:
    """`[batch, samples]` -> `[batch, frames, mel]`."""
    features = tf.maximum(self._logmel.log_mel(waveform), self._log_floor)
    return features - tf.reduce_mean(features, axis=1, keepdims=True)


def l2_normalize(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
  """Unit vectors along `axis` (norms floored at NORM_EPSILON)."""
  return tf.math.l2_normalize(x, axis=axis, epsilon=NORM_EPSILON)


class SpeakerEncoder(keras.Model):
  """The TDNN encoder: frame embeddings and an utterance embedding.

  Fields of `model_config` are documented in e2s_tf/configs/speaker_encoder.py.
  """

  def __init__(self, stft_config: spectral.StftConfig,
               model_config: ml_collections.ConfigDict, **kwargs):
    super().__init__(**kwargs)
    m = model_config
    layers = (len(m.channels), len(m.kernel_sizes), len(m.dilations))
    if len(set(layers)) != 1 or not layers[0]:
      raise ValueError("model.channels, model.kernel_sizes and model.dilations "
                       f"need one entry per frame layer, got {layers} entries")
    self.stft_config = stft_config
    self.bottleneck_dim = int(m.bottleneck_dim)
    self.embedding_dim = int(m.embedding_dim)
    self.front_end = LogMelFrontEnd(stft_config, m.num_mel_bins,
                                    m.lower_edge_hertz, m.log_floor,
                                    name="front_end")

    def norm(name):
      return keras.layers.BatchNormalization(momentum=m.batch_norm_momentum,
                                             name=name)

    frame_layers = []
    for i, (channels, kernel, dilation) in enumerate(
        zip(m.channels, m.kernel_sizes, m.dilations)):
      frame_layers += [
          keras.layers.Conv1D(channels, kernel, dilation_rate=dilation,
                              padding="same", activation="relu",
                              name=f"frame_conv_{i}"),
          norm(f"frame_norm_{i}")]
    self.frame_layers = self._named("frame", frame_layers)
    self.bottleneck = keras.layers.Conv1D(
        self.bottleneck_dim, 1, activation=m.bottleneck_activation,
        name="bottleneck")
    pooling_layers = []
    if m.pooling_channels:
      pooling_layers = [
          keras.layers.Conv1D(m.pooling_channels, 1, activation="relu",
                              name="pooling_conv"), norm("pooling_norm")]
    self.pooling_layers = self._named("pooling", pooling_layers)
    segment_layers = []
    for i, units in enumerate(m.segment_units):
      segment_layers += [keras.layers.Dense(units, activation="relu",
                                            name=f"segment_dense_{i}"),
                         norm(f"segment_norm_{i}")]
    self.segment_layers = self._named("segment", segment_layers)
    self.embedding_layer = keras.layers.Dense(self.embedding_dim,
                                              name="embedding")

  def _named(self, prefix: str,
             layers: list[keras.layers.Layer]) -> list[keras.layers.Layer]:
    """Makes each layer an attribute `<prefix>_<i>`; returns the list.

    tf.train tracking does not see layers held only in a list by a Keras 3
    model (Keras tracks lists itself, outside TF's object graph): each is
    also an attribute, so that checkpoints of the object graph (those of
    older runs, `Checkpoint(encoder=...)`) and SavedModels hold them.
    """
    for i, layer in enumerate(layers):
      setattr(self, f"{prefix}_{i}", layer)
    return layers

  def frame_embeddings(self, waveform: tf.Tensor,
                       training: bool = False) -> tf.Tensor:
    """`[batch, samples]` -> `[batch, frames, bottleneck_dim]`."""
    x = self.front_end(waveform)
    for layer in self.frame_layers:
      x = layer(x, training=training)
    return self.bottleneck(x)

  def pool(self, frames: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Frame embeddings `[batch, frames, D]` -> segment embedding `[batch, E]`.

    Mean and standard deviation over all frames (the statistics pooling of
    x-vectors), then the segment layers; not normalised.
    """
    x = frames
    for layer in self.pooling_layers:
      x = layer(x, training=training)
    mean = tf.reduce_mean(x, axis=1)
    variance = tf.reduce_mean(tf.square(x - mean[:, tf.newaxis]), axis=1)
    x = tf.concat([mean, tf.sqrt(tf.maximum(variance, VARIANCE_FLOOR))], -1)
    for layer in self.segment_layers:
      x = layer(x, training=training)
    return self.embedding_layer(x)

  def call(self, waveform: tf.Tensor,
           training: bool = False) -> dict[str, tf.Tensor]:
    """`[batch, samples]` -> {"frames", "embedding"}.

    "frames": `[batch, T, D]` frame embeddings; "embedding": `[batch, E]` the
    unit-norm utterance embedding.
    """
    frames = self.frame_embeddings(waveform, training=training)
    return {"frames": frames,
            "embedding": l2_normalize(self.pool(frames, training=training))}


class AdditiveMarginHead(keras.layers.Layer):
  """Cosine similarities to one learnt unit vector per speaker.

  `am_softmax_loss` turns them into the additive-margin softmax loss
  (CosFace / AM-softmax): logits = scale * (cos - margin on the true class).
  """

  def __init__(self, num_speakers: int, **kwargs):
    super().__init__(**kwargs)
    self.num_speakers = int(num_speakers)

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name="kernel", shape=(int(input_shape[-1]), self.num_speakers),
        initializer="glorot_uniform")

  def call(self, embeddings: tf.Tensor) -> tf.Tensor:
    """`[batch, E]` -> cosines `[batch, speakers]`."""
    return tf.matmul(l2_normalize(embeddings),
                     l2_normalize(self.kernel, axis=0))


def am_softmax_loss(cosine: tf.Tensor, labels: tf.Tensor, margin: float,
                    scale: float) -> tf.Tensor:
  """Mean additive-margin softmax loss.

  Args:
    cosine: `[batch, speakers]` cosine similarities.
    labels: `[batch]` int speaker indices.
    margin: subtracted from the true class's cosine.
    scale: multiplies the cosines before the softmax.

  Returns:
    Scalar loss.
  """
  onehot = tf.one_hot(labels, tf.shape(cosine)[-1], dtype=cosine.dtype)
  logits = scale * (cosine - margin * onehot)
  return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))


def build_encoder(config: ml_collections.ConfigDict,
                  num_speakers: Optional[int] = None
                  ) -> tuple[SpeakerEncoder, Optional[AdditiveMarginHead]]:
  """The encoder (and the head when `num_speakers` is given), built."""
  stft_config = spectral.StftConfig.from_dict(config.stft.to_dict())
  encoder = SpeakerEncoder(stft_config, config.model, name="speaker_encoder")
  samples = stft_config.num_samples(2)
  out = encoder(tf.zeros([1, samples]), training=False)
  head = None
  if num_speakers is not None:
    head = AdditiveMarginHead(num_speakers, name="am_softmax_head")
    head(out["embedding"])
  return encoder, head
