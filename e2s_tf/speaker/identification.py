"""Speaker similarity and closed-set identification from utterance
embeddings (NumPy), and the embedding of whole utterances.

    enrolment = enroll(embeddings, speakers)        # centroids per speaker
    identify(other_embeddings, enrolment)           # nearest centroid
    identification_accuracy(other, their_speakers, enrolment)
    cosine(a, b)                                    # paired similarities
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from e2s_tf import spectral
from e2s_tf.speaker import network


@dataclasses.dataclass
class Enrolment:
  """Speaker centroids for closed-set identification.

  Attributes:
    labels: the enrolled speakers, sorted.
    centroids: `[speakers, E]` unit-norm mean embeddings, in `labels` order.
  """

  labels: list[str]
  centroids: np.ndarray


def _unit_rows(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True),
                        network.NORM_EPSILON)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine similarity of paired embeddings.

  Args:
    a, b: `[E]` or `[N, E]` (broadcast against each other).

  Returns:
    `[]` or `[N]` float64 cosines.
  """
  return np.sum(_unit_rows(a) * _unit_rows(b), axis=-1)


def enroll(embeddings: np.ndarray, labels: Sequence[Any]) -> Enrolment:
  """Centroids of `embeddings` `[N, E]` per label (labels as strings)."""
  embeddings = _unit_rows(embeddings)
  labels = [str(x) for x in labels]
  if embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
    raise ValueError(f"need [N, E] embeddings and N labels, got "
                     f"{embeddings.shape} and {len(labels)}")
  names = sorted(set(labels))
  index = np.array([names.index(x) for x in labels])
  centroids = np.stack([embeddings[index == k].mean(axis=0)
                        for k in range(len(names))])
  return Enrolment(names, _unit_rows(centroids))


def identify(embeddings: np.ndarray, enrolment: Enrolment) -> list[str]:
  """The enrolled speaker nearest (cosine) to each embedding `[N, E]`."""
  scores = _unit_rows(embeddings) @ enrolment.centroids.T  # [N, speakers]
  return [enrolment.labels[k] for k in np.argmax(scores, axis=-1)]


def identification_accuracy(embeddings: np.ndarray, labels: Sequence[Any],
                            enrolment: Enrolment) -> float:
  """Fraction of `embeddings` `[N, E]` identified as their `labels`."""
  labels = [str(x) for x in labels]
  if not labels:
    return float("nan")
  found = identify(embeddings, enrolment)
  return float(np.mean([f == t for f, t in zip(found, labels)]))


def check_waveforms(waveforms: Sequence[np.ndarray],
                    stft_config: spectral.StftConfig) -> list[np.ndarray]:
  """The waveforms as float32 `[samples]`, each at least one frame long.

  Raises:
    ValueError: a waveform of another rank, or shorter than one frame.
  """
  out = []
  for i, w in enumerate(waveforms):
    w = np.asarray(w, np.float32)
    if w.ndim != 1:
      raise ValueError(f"waveform {i}: expected [samples], got {w.shape}")
    if stft_config.num_frames(w.shape[0]) < 1:
      raise ValueError(f"waveform {i}: {w.shape[0]} samples is shorter than "
                       f"one frame ({stft_config.frame_length} samples)")
    out.append(w)
  return out


def utterance_function(encoder: network.SpeakerEncoder
                       ) -> Callable[[tf.Tensor], tf.Tensor]:
  """A traced `[1, samples]` -> `[1, E]` unit-norm embedding (inference)."""

  @tf.function(input_signature=[tf.TensorSpec([1, None], tf.float32)])
  def embed(waveform):
    return encoder(waveform, training=False)["embedding"]

  return embed


def embed_utterances(function: Callable[[tf.Tensor], tf.Tensor],
                     waveforms: Sequence[np.ndarray],
                     stft_config: spectral.StftConfig) -> np.ndarray:
  """Runs `function` ([1, samples] -> [1, E]) on each waveform: `[N, E]`."""
  rows = [np.asarray(function(tf.constant(w[np.newaxis])))[0]
          for w in check_waveforms(waveforms, stft_config)]
  if not rows:
    raise ValueError("no waveforms to embed")
  return np.stack(rows).astype(np.float32)
