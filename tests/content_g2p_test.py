"""espeak-ng G2P of the content judge: known answers, determinism, errors."""

import json
import os
import subprocess
import sys

import pytest

from e2s_tf import corpus
from e2s_tf.content import g2p

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO_WORLD = ["h", "@", "l", "oU", "w", "3:", "l", "d"]


def test_hello_world_known_answer():
  assert g2p.phonemes("hello world") == HELLO_WORLD
  # Case and punctuation change nothing; a clause break adds no token.
  assert g2p.phonemes("Hello, World!") == HELLO_WORLD


def test_corpus_sentence_known_answer():
  # Stress marks (' ,), the linking glide ; after "the" and word boundaries
  # are gone; espeak's variants (I2, @2, a#) stay.
  assert g2p.phonemes("The old farmer carried a basket.") == [
      "D", "I2", "oU", "l", "d", "f", "A@", "m", "3", "k", "a", "r", "i", "d",
      "a#", "b", "aa", "s", "k", "I2", "t"]
  assert g2p.phonemes("forty two", "en-us") == [
      "f", "O@", "t#", "i", "t", "u:"]


def test_language_matters():
  assert g2p.phonemes("Guten Morgen", "de") == [
      "g", "u:", "t", "@", "n", "m", "O", "r", "g", "@", "n"]
  assert g2p.phonemes("hello world", "en") != g2p.phonemes("hello world",
                                                            "de")


def test_empty_and_punctuation_only_texts_have_no_phones():
  assert g2p.phonemes("") == []
  assert g2p.phonemes("... ?!") == []


def test_batch_equals_one_by_one():
  texts = ["hello world", "", "Anna agreed. The river was cold."]
  assert g2p.batch_phonemes(texts) == [g2p.phonemes(t) for t in texts]


def test_stable_after_other_texts_and_languages_and_in_a_fresh_process():
  speakers = corpus.make_speakers(3)
  texts = [corpus.make_utterance(s, i, j).text
           for i, s in enumerate(speakers) for j in range(4)]
  first = g2p.batch_phonemes(texts, "en-us")
  g2p.batch_phonemes(texts[::-1], "en-gb-scotland")
  g2p.phonemes("Bonjour tout le monde, quarante-deux.", "fr")
  assert g2p.batch_phonemes(texts, "en-us") == first
  fresh = subprocess.run(
      [sys.executable, "-c",
       "import json, sys; from e2s_tf.content import g2p; "
       "print(json.dumps(g2p.batch_phonemes(json.load(sys.stdin))))"],
      input=json.dumps(texts), capture_output=True, text=True, check=True,
      cwd=ROOT)
  assert json.loads(fresh.stdout) == first


def test_tokens_are_phone_names_only():
  speakers = corpus.make_speakers(8)
  texts = [corpus.make_utterance(s, i, j).text
           for i, s in enumerate(speakers) for j in range(10)]
  tokens = {p for phones in g2p.batch_phonemes(texts) for p in phones}
  assert tokens and "" not in tokens
  for token in tokens:
    assert not set(token) & set("',%=! \x1f"), token
    assert not token.startswith("_") and token not in ("||", ";"), token


@pytest.mark.parametrize("language", ["xx-nope", "en-zz", "", "en us",
                                      "../en"])
def test_unknown_language_raises_naming_it(language):
  with pytest.raises(g2p.G2PUnavailable, match="no G2P for language") as e:
    g2p.phonemes("hello", language)
  assert repr(language) in str(e.value)
  assert isinstance(e.value, ValueError)
  # The library still works for a known language afterwards.
  assert g2p.phonemes("hello world") == HELLO_WORLD


def test_texts_must_be_strings():
  with pytest.raises(TypeError, match="str"):
    g2p.batch_phonemes(["hello", None])
