"""espeak-ng's grapheme-to-phoneme conversion: the content judge's targets.

    phonemes("Hello world.")   # ['h', '@', 'l', 'oU', 'w', '3:', 'l', 'd']
    batch_phonemes(texts, "en-us")   # one list per text

The phones are espeak-ng's own phoneme mnemonics (its ASCII names, as in
`espeak-ng -x`), from `espeak_TextToPhonemes` of the espeak-ng library that
the espeakng-loader wheel ships, with one phoneme name per token:

- espeak writes a separator character between the phonemes of a word (the
  phoneme-mode bits 8-23), here U+001F, which no phoneme name contains (`|`
  would not do: `||` and `_|` are names);
- stress marks (`'` primary, `,` secondary, `%` unstressed, `=` stress on the
  previous vowel, `!` emphasis) are dropped: they come glued to the vowel
  they stress, and stress is prosody, which the content judge leaves to the
  prosody metrics;
- pauses (`_`, `_:`, `_!`, `_|`, ...), the end-of-word mark `||` and the
  linking glide `;` (a palatal link between vowels that espeak defines with
  no formants of its own and leaves out of its IPA output) are dropped;
- word boundaries are dropped, not kept as a token: in connected speech a
  word boundary has no sound of its own (no pause, no transition), so a CTC
  recogniser could only guess it from the phones around it, and a phone
  error rate over such tokens would score word segmentation as well.

Everything else is kept as espeak names it, allophonic variants included
(`I2` and `I#` next to `I`, `@2` next to `@`, `t#` the flapped t): espeak
synthesises them differently, so the corpus' audio carries them.

Why in-process. espeak-ng keeps its state in C statics, which makes its
*synthesis* depend on what was spoken before (e2s_tf/corpus.py synthesises
each utterance in a fresh process for that reason). Its G2P depends only on
the voice's language and the text: the phonemes of a text are the same
after any other texts and languages (tests/content_g2p_test.py checks it
against a fresh process). So G2P runs in this process, under one lock (the
library is not thread-safe), and sets the language on every call (another
part of the process could have changed it): ~0.1 ms per sentence, against
~50 ms for a worker process per call.
"""

from __future__ import annotations

import ctypes
import re
import threading
from typing import Optional, Sequence

import espeakng_loader

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
# The character espeak writes between the phonemes of a word (phoneme-mode
# bits 8-23); ASCII "unit separator".
_SEPARATOR = "\x1f"
_PHONEME_MODE = ord(_SEPARATOR) << 8  # bit 1 clear: ASCII names, not IPA
# Stress marks, glued to the phoneme after (or, `=`, before) them.
_STRESS = "',%=!"
# Tokens that are no phone: the end-of-word mark and the linking glide.
_NOT_PHONES = frozenset({"||", ";"})
# A language (espeak voice name): letters, digits and `-`, e.g. `en-us`.
_LANGUAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,39}$")
# espeak_SetVoiceByName's status for a voice it does not have.
_EE_NOT_FOUND = 2


class G2PUnavailable(ValueError):
  """No G2P for this language (or no espeak-ng library at all)."""


class _Espeak:
  """The espeak-ng library of espeakng-loader, initialised once per process."""

  def __init__(self):
    try:
      lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as e:
      raise G2PUnavailable(
          f"cannot load the espeak-ng library of espeakng-loader "
          f"({espeakng_loader.get_library_path()}): {e}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int,
                                      ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                          ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    data = espeakng_loader.get_data_path()
    if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(),
                             _INITIALIZE_DONT_EXIT) <= 0:
      raise G2PUnavailable(f"espeak-ng failed to initialise with its data at "
                           f"{data}")
    self.lib = lib

  def set_language(self, language: str) -> None:
    status = self.lib.espeak_SetVoiceByName(language.encode())
    if status != 0:
      reason = ("espeak-ng has no voice of that name" if status == _EE_NOT_FOUND
                else f"espeak_SetVoiceByName failed with status {status}")
      raise G2PUnavailable(
          f"no G2P for language {language!r}: {reason} (a language code of "
          "espeak-ng, e.g. 'en-us', 'en', 'de'; `espeak-ng --voices` lists "
          "them)")

  def clauses(self, text: str) -> list[str]:
    """espeak's phoneme strings of `text`, one per clause."""
    buffer = ctypes.create_string_buffer(text.encode("utf-8"))
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    out = []
    while pointer.value:
      result = self.lib.espeak_TextToPhonemes(ctypes.byref(pointer),
                                              _CHARS_UTF8, _PHONEME_MODE)
      out.append(result.decode("utf-8") if result else "")
    return out


_LOCK = threading.Lock()
_ESPEAK: Optional[_Espeak] = None


def _espeak() -> _Espeak:
  """The process's library (call under `_LOCK`)."""
  global _ESPEAK
  if _ESPEAK is None:
    _ESPEAK = _Espeak()
  return _ESPEAK


def espeak_version() -> str:
  """The espeak-ng library's version, e.g. "1.52.0" (G2P can change with
  it, so exports record it)."""
  with _LOCK:
    version = _espeak().lib.espeak_Info(None)
  return version.decode() if version else "unknown"


def check_language(language: str) -> str:
  """`language` if espeak-ng has G2P for it.

  Raises:
    G2PUnavailable: naming the language.
  """
  if not isinstance(language, str) or not _LANGUAGE.match(language):
    raise G2PUnavailable(f"no G2P for language {language!r}: not a language "
                         "code of espeak-ng (e.g. 'en-us', 'en', 'de')")
  with _LOCK:
    _espeak().set_language(language)
  return language


def tokenize(clause: str) -> list[str]:
  """One of espeak's phoneme strings (names split by the separator, words by
  spaces) -> the phone tokens (see the module docstring)."""
  out = []
  for word in clause.split():
    for name in word.split(_SEPARATOR):
      name = name.strip(_STRESS)
      if name and not name.startswith("_") and name not in _NOT_PHONES:
        out.append(name)
  return out


def batch_phonemes(texts: Sequence[str],
                   language: str = "en-us") -> list[list[str]]:
  """The phones of each text (`phonemes`), the language set once.

  Raises:
    G2PUnavailable: espeak-ng has no G2P for `language`.
    TypeError: a text that is not a str.
  """
  for text in texts:
    if not isinstance(text, str):
      raise TypeError(f"G2P needs str texts, got {type(text).__name__}")
  check_language(language)
  with _LOCK:
    espeak = _espeak()
    espeak.set_language(language)
    return [[p for clause in espeak.clauses(text) for p in tokenize(clause)]
            for text in texts]


def phonemes(text: str, language: str = "en-us") -> list[str]:
  """espeak-ng's phones of `text` in `language`, e.g. `['h', '@', 'l', 'oU',
  'w', '3:', 'l', 'd']` for "hello world" in en-us; deterministic.

  Punctuation only separates clauses; numbers and abbreviations are read out
  as espeak reads them ("42" -> f O@ t# i t u:). An empty text has no phones.

  Raises:
    G2PUnavailable: espeak-ng has no G2P for `language` (the message names
      it).
  """
  return batch_phonemes([text], language)[0]
