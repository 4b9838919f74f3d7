"""Content metrics: error rates with known answers, the text normalisation,
and the PocketSphinx word recogniser on real (espeak-ng) audio."""

import numpy as np
import pytest

from e2s_tf import corpus
from e2s_tf.aspects import content


@pytest.mark.parametrize("reference, hypothesis, expected", [
    ("a b c d", "a x c", 0.5),  # one substitution, one deletion
    ("a b c d", "a b c d", 0.0),
    ("a b", "a b c d e", 1.5),  # three insertions
    ("a b c", "", 1.0),
    ("kitten", "sitting", 3 / 6),  # the classic: 2 substitutions + 1 insertion
])
def test_error_rate_known_answers(reference, hypothesis, expected):
  split = list if " " not in reference else str.split
  assert content.error_rate(split(reference),
                            split(hypothesis)) == pytest.approx(expected)


def test_error_rate_of_an_empty_reference_is_none():
  assert content.error_rate([], ["a"]) is None
  assert content.error_rate([], []) is None
  assert content.word_error_rate(" ...! ", "hello") is None
  assert content.char_error_rate("", "") is None


def test_edit_distance_is_symmetric_and_counts_operations():
  assert content.edit_distance("abc", "abc") == 0
  assert content.edit_distance("", "abc") == 3
  assert content.edit_distance("flaw", "lawn") == 2
  assert content.edit_distance("lawn", "flaw") == 2
  assert content.edit_distance(["oU", "l", "d"], ["oU", "d"]) == 1


def test_corpus_error_rate_weights_items_by_length():
  refs = [["a", "b", "c", "d"], ["e"]]
  hyps = [["a", "b", "c", "d"], ["x"]]
  assert content.corpus_error_rate(refs, hyps) == pytest.approx(1 / 5)
  assert content.corpus_error_rate([[]], [["a"]]) is None
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    content.corpus_error_rate(refs, hyps[:1])


def test_normalize_text():
  assert content.normalize_text("  Hello,   World! It's forty-two.") == (
      "hello world its forty two")
  assert content.normalize_text("Don\u2019t\tSTOP\n") == "dont stop"
  assert content.normalize_text("...") == ""


def test_word_and_char_error_rates_known_answers():
  # Normalisation makes these equal.
  assert content.word_error_rate("Hello, World!", "hello world") == 0.0
  # "the cat sat" vs "the bat sat down": 1 substitution + 1 insertion.
  assert content.word_error_rate("The cat sat.", "the bat sat down") == (
      pytest.approx(2 / 3))
  # Characters with the spaces: "a b" (3) vs "a c": one substitution.
  assert content.char_error_rate("A, b", "a c") == pytest.approx(1 / 3)
  assert content.char_error_rate("abcd", "abd") == pytest.approx(1 / 4)


def test_to_int16_clips_rounds_and_resamples():
  out = content.to_int16(np.array([0.0, 0.5, 1.0, 2.0, -2.0], np.float32),
                         16000)
  assert out.dtype == np.int16
  assert out.tolist() == [0, 16384, 32767, 32767, -32767]
  assert content.to_int16(np.zeros(800, np.float32), 8000).size == 1600
  with pytest.raises(ValueError, match=r"\[samples\]"):
    content.to_int16(np.zeros([2, 10]), 16000)


@pytest.fixture(scope="module")
def recogniser():
  return content.PocketSphinx()


@pytest.fixture(scope="module")
def espeak_speech():
  """An espeak-ng utterance of the corpus: (text, `[samples]` at 16 kHz)."""
  speaker = corpus.make_speakers(1)[0]
  utterance = corpus.make_utterance(speaker, 0, 0)
  return utterance.text, corpus.synthesize(utterance, 16000)


def test_pocketsphinx_transcribes_speech_to_words(recogniser, espeak_speech):
  text, audio = espeak_speech
  words = recogniser.transcribe(audio, 16000)
  assert isinstance(words, str) and words
  assert words == words.lower() and " ".join(words.split()) == words
  assert "<" not in words and "[" not in words and "(" not in words
  # The decoder is reused: the same audio gives the same words.
  assert recogniser.transcribe(audio, 16000) == words
  # Audio at another rate is resampled to 16 kHz first.
  half = audio[::2]
  assert isinstance(recogniser.transcribe(half, 8000), str)
  rate = content.word_error_rate(text, words)
  assert rate is not None and rate >= 0.0


def test_pocketsphinx_audio_too_short_gives_empty_text(recogniser):
  assert recogniser.transcribe(np.zeros(100, np.float32), 16000) == ""
  assert recogniser.transcribe(np.zeros(0, np.float32), 16000) == ""
  assert isinstance(recogniser.transcribe(np.zeros(16000, np.float32),
                                          16000), str)


def test_pocketsphinx_missing_model_is_an_error(tmp_path):
  with pytest.raises(RuntimeError, match="incomplete"):
    content.PocketSphinx(str(tmp_path))
