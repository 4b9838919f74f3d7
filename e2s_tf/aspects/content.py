"""Content: does a reconstruction still say what was said?

Error rates of token sequences (Levenshtein distance / reference length):

- `error_rate(reference, hypothesis)`: any tokens, e.g. the phones of the
  content judge (e2s_tf.content: the phone error rate, PER, of a
  reconstruction's transcription against espeak-ng's phones of the text);
- `word_error_rate` / `char_error_rate`: of two texts after
  `normalize_text`;
- `PocketSphinx`: an off-the-shelf English word recogniser (the pocketsphinx
  wheel's own acoustic model, dictionary and language model, nothing
  downloaded) for a WER of real English speech. It does badly on espeak-ng
  voices, which is why the project's content metric is the judge's PER.

Rates are per item; a corpus-level rate is `sum(distances) / sum(lengths)`
(`corpus_error_rate`), which weights items by their length.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Hashable, Optional, Sequence

import numpy as np

from e2s_tf import audio as audio_lib

# PocketSphinx's rate, and the shortest audio it is given (shorter audio has
# no words: '' without decoding).
POCKETSPHINX_SAMPLE_RATE = 16000
POCKETSPHINX_MIN_SECONDS = 0.1

_APOSTROPHES = "'\u2019"
_SPACES = re.compile(r"\s+")


def edit_distance(reference: Sequence[Hashable],
                  hypothesis: Sequence[Hashable]) -> int:
  """Levenshtein distance: the fewest substitutions, deletions and
  insertions that turn `reference` into `hypothesis` (each costs 1)."""
  ref, hyp = list(reference), list(hypothesis)
  row = list(range(len(hyp) + 1))
  for i, r in enumerate(ref, 1):
    diagonal, row[0] = row[0], i
    for j, h in enumerate(hyp, 1):
      diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1,
                                     diagonal + (r != h))
  return row[-1]


def error_rate(reference_tokens: Sequence[Hashable],
               hypothesis_tokens: Sequence[Hashable]) -> Optional[float]:
  """edit_distance / len(reference); None for an empty reference (the rate
  is undefined there: any hypothesis would be an infinite rate or 0/0).

  >>> error_rate("a b c d".split(), "a x c".split())  # 1 sub + 1 del
  0.5
  """
  if not len(reference_tokens):
    return None
  return edit_distance(reference_tokens, hypothesis_tokens) / len(
      reference_tokens)


def corpus_error_rate(references: Sequence[Sequence[Hashable]],
                      hypotheses: Sequence[Sequence[Hashable]]
                      ) -> Optional[float]:
  """sum of edit distances / sum of reference lengths over pairs; None when
  every reference is empty."""
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references but {len(hypotheses)} "
                     "hypotheses")
  total = sum(len(r) for r in references)
  if not total:
    return None
  return sum(edit_distance(r, h)
             for r, h in zip(references, hypotheses)) / total


def normalize_text(text: str) -> str:
  """The text WER and CER compare: case-folded (lower case), apostrophes
  removed ("don't" -> "dont"), every other punctuation or symbol character
  (Unicode categories P* and S*) replaced by a space ("forty-two" -> "forty
  two"), whitespace collapsed to single spaces, no space at either end.

  >>> normalize_text("  Hello,   World! It's forty-two.")
  'hello world its forty two'
  """
  out = []
  for ch in text.casefold():
    if ch in _APOSTROPHES:
      continue
    category = unicodedata.category(ch)
    out.append(" " if category[0] in "PS" else ch)
  return _SPACES.sub(" ", "".join(out)).strip()


def word_error_rate(ref_text: str, hyp_text: str) -> Optional[float]:
  """`error_rate` over the words of the normalised texts; None when the
  reference has no words."""
  return error_rate(normalize_text(ref_text).split(),
                    normalize_text(hyp_text).split())


def char_error_rate(ref_text: str, hyp_text: str) -> Optional[float]:
  """`error_rate` over the characters of the normalised texts, the single
  spaces between words included; None when the reference is empty after
  normalisation."""
  return error_rate(list(normalize_text(ref_text)),
                    list(normalize_text(hyp_text)))


def to_int16(audio: np.ndarray, sample_rate: int,
             target_rate: int = POCKETSPHINX_SAMPLE_RATE) -> np.ndarray:
  """`[samples]` float audio in [-1, 1] at `sample_rate` -> int16 samples
  at `target_rate` (resampled by e2s_tf.audio; clipped, rounded)."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 1:
    raise ValueError(f"audio must be [samples], got shape {audio.shape}")
  if sample_rate != target_rate:
    audio = audio_lib.resample(audio, int(sample_rate), int(target_rate))
  return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


class PocketSphinx:
  """An English word recogniser: PocketSphinx 5 with the en-us acoustic
  model, CMUdict and the en-us 3-gram language model of its wheel.

  The decoder is loaded once, here (~1 s); `transcribe` reuses it (one
  utterance at a time: the decoder is not thread-safe), resetting its
  feature front end first, so that a transcription depends on its audio
  alone, not on the utterances decoded before it.

  Raises (from the constructor):
    RuntimeError: the pocketsphinx package or its en-us model is missing.
  """

  def __init__(self, model_dir: Optional[str] = None):
    """Args: model_dir: a folder with `en-us/` (acoustic model),
    `cmudict-en-us.dict` and `en-us.lm.bin`; default the wheel's."""
    try:
      import pocketsphinx  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise RuntimeError(
          "PocketSphinx needs the pocketsphinx package (pip install "
          f"pocketsphinx==5.1.1): {e}") from None
    model_dir = model_dir or os.path.join(pocketsphinx.get_model_path(),
                                          "en-us")
    paths = {"hmm": os.path.join(model_dir, "en-us"),
             "dict": os.path.join(model_dir, "cmudict-en-us.dict"),
             "lm": os.path.join(model_dir, "en-us.lm.bin")}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
      raise RuntimeError(f"PocketSphinx's English model is incomplete: "
                         f"{missing} not found")
    self.model_dir = model_dir
    self._decoder = pocketsphinx.Decoder(
        samprate=POCKETSPHINX_SAMPLE_RATE, loglevel="FATAL", **paths)

  def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
    """The words of `[samples]` float audio in [-1, 1], lower case, single
    spaces, without fillers and silences (`<s>`, `<sil>`, `[NOISE]`, ...).

    Audio shorter than POCKETSPHINX_MIN_SECONDS, digital silence (all
    samples 0 after the int16 conversion), and audio in which the decoder
    finds no words, give '' (an empty transcription: every
    reference word is then a deletion).
    """
    samples = to_int16(audio, sample_rate)
    # Digital silence has no words (the decoder would make up one, "in").
    if (samples.size < POCKETSPHINX_MIN_SECONDS * POCKETSPHINX_SAMPLE_RATE
        or not np.any(samples)):
      return ""
    decoder = self._decoder
    # The feature front end keeps state from one utterance to the next (its
    # noise and mean estimates): without a reset the same audio is heard
    # differently depending on what came before it, e.g. "we cleaned up ..."
    # first and "cleaned up ..." after. Every utterance starts afresh.
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    if hypothesis is None:
      return ""
    # The dictionary's alternative pronunciations are words like "the(2)".
    words = [re.sub(r"\(\d+\)$", "", w) for w in hypothesis.hypstr.split()]
    words = [w for w in words
             if w and not (w.startswith(("<", "[")) or w.endswith(("]", ">")))]
    return " ".join(words).lower()
