"""The decoder contract shared by every model.

A decoder maps `embedding [batch, frames, dim]` (normalised), a frame mask
`[batch, frames]` and optional speaker indices `[batch]` to the normalised
log-STFT `[batch, frames, bins]`, float32 whatever the dtype policy. Decoders
are fully convolutional in time, so they train on batches and run on any
length; padding frames (mask 0) may hold anything and never change a valid
output, and the output is 0 there.
"""

from __future__ import annotations

from typing import Sequence

import keras
import ml_collections
import tensorflow as tf

from e2s_tf.models import layers


class SequenceDecoder(keras.Model):
  """Base class: input cleaning, speaker conditioning, output casting.

  Subclasses create their layers in `__init__` and implement
  `decode(x, mask, speaker_vector, training) -> [batch, frames, bins]`, where
  `x` is the clean embedding (with the speaker vector appended for 'concat')
  in the compute dtype and `speaker_vector` is `[batch, speaker_dim]` or None.
  """

  def __init__(self, embedding_dim: int, num_bins: int, *,
               speaker_conditioning: str, num_speakers: int,
               speaker_dim: int, film_channels: Sequence[int] = (),
               **kwargs):
    # Inputs are cast by hand after the padding is cleaned: autocasting huge
    # padding values to float16 first would turn them into inf.
    super().__init__(autocast=False, **kwargs)
    if embedding_dim <= 0 or num_bins <= 0:
      raise ValueError(f"{self.name}: embedding_dim and num_bins must be "
                       f"positive, got {embedding_dim} and {num_bins}")
    self.embedding_dim = embedding_dim
    self.num_bins = num_bins
    self.speaker = layers.SpeakerConditioning(
        speaker_conditioning, num_speakers, speaker_dim, film_channels,
        dtype=self.dtype_policy, name="speaker")
    # Its variables have known shapes; building now also marks the layer
    # built when it is unused ('none'), which Keras would otherwise flag.
    self.speaker.build()

  def decode(self, x, mask, speaker_vector, training):
    raise NotImplementedError

  def call(self, embedding, frame_mask=None, speaker=None, training=False):
    """Decodes a padded batch.

    Args:
      embedding: `[batch, frames, embedding_dim]` float.
      frame_mask: `[batch, frames]` float, 1 = valid frame; all frames valid
        when None. (Not named `mask`: Keras would fill a `mask` argument
        passed as None with its own implicit masks.)
      speaker: `[batch]` int speaker indices, or None (unknown speaker).
      training: dropout on/off.

    Returns:
      `[batch, frames, num_bins]` float32, zero on padding frames.
    """
    embedding = tf.convert_to_tensor(embedding)
    if embedding.shape.rank != 3 or (
        embedding.shape[-1] is not None and
        embedding.shape[-1] != self.embedding_dim):
      raise ValueError(f"{self.name}: expected embedding [batch, frames, "
                       f"{self.embedding_dim}], got {embedding.shape}")
    embedding = tf.cast(embedding, tf.float32)
    if frame_mask is None:
      frame_mask = tf.ones(tf.shape(embedding)[:2], tf.float32)
    mask = tf.cast(frame_mask, tf.float32)
    x = tf.cast(layers.clean_padding(embedding, mask), self.compute_dtype)
    vector = self.speaker.vector(speaker, tf.shape(embedding)[0])
    x = self.speaker.concat_input(x, vector)
    y = self.decode(x, mask, vector, training)
    return layers.apply_mask(tf.cast(y, tf.float32), mask)


def speaker_fields(config: ml_collections.ConfigDict) -> None:
  """Adds the speaker-conditioning fields (documented) to a model config."""
  # How a speaker vector conditions the decoder: 'none', 'film' (scale and
  # shift of every hidden layer) or 'concat' (appended to each input frame).
  config.speaker_conditioning = "none"
  # Size of the speaker table (the train split's speaker vocabulary); an extra
  # row serves unknown speakers. Needed (> 0) unless conditioning is 'none'.
  config.num_speakers = 0
  # Width of a learned speaker vector.
  config.speaker_dim = 32


def constructor_fields(model_config: ml_collections.ConfigDict,
                       *exclude: str) -> dict:
  """The fields of `config.model` as decoder constructor arguments: all but
  `name` and `exclude`, sequences as tuples. The constructors have no
  defaults of their own: the model's `default_config` is the one place."""
  out = {}
  for key, value in model_config.items():
    if key == "name" or key in exclude:
      continue
    if isinstance(value, (list, tuple)):
      value = tuple(tuple(v) if isinstance(v, (list, tuple)) else v
                    for v in value)
    out[key] = value
  return out


def initialize(model: keras.Model, embedding_dim: int) -> keras.Model:
  """Creates `model`'s variables eagerly with a two-frame dummy call."""
  # Two frames: a one-frame call makes Keras warn about a softmax over one key.
  model(tf.zeros([1, 2, embedding_dim]), tf.ones([1, 2]),
        tf.zeros([1], tf.int32))
  return model

