"""Transcribing waveforms with the judge (trained or exported) and scoring.

    phones = transcribe(function, waveforms, inventory, stft, frame_stack)
    per = phone_error_rate(references, phones)

`function(waveform [B, S] f32, lengths [B] i32) -> (logits or log-probs
[B, T', K + 1], frames [B])` is the network's inference step or the
export's signature; both give the same decoding.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from e2s_tf import spectral
from e2s_tf.aspects import content as content_metrics
from e2s_tf.content import data
from e2s_tf.content import network

# Utterances per call of `function` in `transcribe`.
BATCH_SIZE = 16

Function = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def check_waveforms(waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Waveforms as `[samples]` float32 arrays.

  Raises:
    ValueError: one that is not 1-D or has non-finite samples (names its
      position).
  """
  out = []
  for i, w in enumerate(waveforms):
    w = np.asarray(w, np.float32)
    if w.ndim != 1:
      raise ValueError(f"waveform {i} must be [samples], got shape {w.shape}")
    if not np.all(np.isfinite(w)):
      raise ValueError(f"waveform {i} has non-finite samples")
    out.append(w)
  return out


def min_samples(stft_config: spectral.StftConfig) -> int:
  """The shortest waveform with a network frame: one STFT frame."""
  return int(stft_config.frame_length)


def transcribe(function: Function, waveforms: Sequence[np.ndarray],
               inventory: Sequence[str], stft_config: spectral.StftConfig,
               batch_size: int = BATCH_SIZE) -> list[list[str]]:
  """Greedy CTC transcription of each waveform, in the input order.

  Waveforms are sorted by length into batches of `batch_size`, padded with
  0 to the longest of their batch (the network masks padding, so the
  result does not depend on the batching). A waveform shorter than one STFT
  frame (`min_samples`) has no frame and gives [] without a call.

  Args:
    function: see the module docstring.
    waveforms: `[samples_i]` float arrays at the judge's sample rate.
    inventory: phone i <-> class i + 1.
    stft_config: the judge's grid.
    batch_size: utterances per call.
  """
  waves = check_waveforms(waveforms)
  out: list[list[str]] = [[] for _ in waves]
  shortest = min_samples(stft_config)
  usable = [i for i, w in enumerate(waves) if w.shape[0] >= shortest]
  usable.sort(key=lambda i: waves[i].shape[0])
  for start in range(0, len(usable), max(int(batch_size), 1)):
    chunk = usable[start:start + batch_size]
    padded, lengths = data.pad_waveforms([waves[i] for i in chunk])
    logits, frames = function(padded, lengths)
    decoded = network.greedy_decode(np.asarray(logits), np.asarray(frames))
    for i, ids in zip(chunk, decoded):
      out[i] = [inventory[c] for c in ids]
  return out


def phone_error_rate(references: Sequence[Sequence[str]],
                     hypotheses: Sequence[Sequence[str]]) -> Optional[float]:
  """Corpus-level PER: the sum of the edit distances over the sum of the
  reference lengths (None without reference phones)."""
  return content_metrics.corpus_error_rate(references, hypotheses)
