"""The offline espeak-ng corpus, and speech-like test audio.

`make_corpus` synthesises a small deterministic multi-speaker English corpus
with espeak-ng (from the espeakng-loader wheel): seeded voices (accent,
variant, pitch, range, rate) and seeded sentences of several clauses separated
by explicit pauses, written as `D/wav/<speaker>/<id>.wav` (16-bit PCM) with
`D/manifest.jsonl` and a table of the voices in `D/speakers.json`.

espeak-ng keeps synthesis state in C statics that no API call resets (pitch
flutter phase, gain control, echo buffer, libc `rand`), so the same text comes
out differently depending on what was spoken before in the same process. To
make every utterance a pure function of its own parameters, each utterance is
synthesised in a fresh, tiny Python process (ctypes only, ~30 ms to start)
running `_ESPEAK_WORKER`; a thread pool runs several at once.

`speechlike_audio` is a quick stand-in for speech (voiced bursts between
pauses) for long test items. Manifests themselves are `e2s_tf.manifest`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import math
import os
import struct
import subprocess
import sys
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import espeakng_loader
import numpy as np
import scipy.signal
import tqdm

from e2s_tf import audio as audio_lib
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib

MANIFEST = "manifest.jsonl"
SPEAKERS = "speakers.json"
WAV_DIR = "wav"
# Bump when the generator changes in a way that changes the audio or text.
CORPUS_VERSION = 1

# --------------------------------------------------------------------------
# Voices.

# espeak-ng voice variants ("<language>+<variant>") by gender.
_VARIANTS = {
    "male": ("m1", "m2", "m3", "m4", "m6", "m7", "klatt", "klatt3"),
    "female": ("f1", "f2", "f3", "f4", "f5"),
}
# English accents shipped with espeak-ng.
_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland",
            "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# espeak parameter ranges per gender: pitch (0-99), pitch range (0-99), and
# speaking rate in words per minute, sampled uniformly.
_PITCH = {"male": (25, 55), "female": (45, 80)}
_PITCH_RANGE = (30, 85)
_RATE_WPM = (140, 190)


@dataclasses.dataclass(frozen=True)
class Speaker:
  """One synthetic speaker: an espeak-ng voice and its settings."""

  name: str
  voice: str
  gender: str
  pitch: int
  pitch_range: int
  rate: int


def make_speakers(count: int, seed: int = 0) -> list[Speaker]:
  """`count` speakers `spk00, spk01, ...`, deterministic from `seed`.

  Speaker `i` does not depend on `count`: the variant and accent orders are
  permutations drawn from `seed` alone, and the settings of speaker `i` from
  `(seed, i)`. Genders alternate, so any two neighbours differ in pitch. The
  first 16 speakers have distinct voices (accent + variant); later ones may
  share a voice, with other pitch, range and rate.
  """
  order = np.random.default_rng([seed, 0])
  variants = {g: [v[i] for i in order.permutation(len(v))]
              for g, v in _VARIANTS.items()}
  accents = [_ACCENTS[i] for i in order.permutation(len(_ACCENTS))]
  genders = ("male", "female") if order.integers(2) == 0 else ("female", "male")
  speakers = []
  for i in range(count):
    rng = np.random.default_rng([seed, 1, i])
    gender = genders[i % 2]
    pool = variants[gender]
    variant = pool[(i // 2) % len(pool)]
    accent = accents[i % len(accents)]
    speakers.append(Speaker(
        name=f"spk{i:02d}",
        voice=f"{accent}+{variant}",
        gender=gender,
        pitch=int(rng.integers(*_PITCH[gender], endpoint=True)),
        pitch_range=int(rng.integers(*_PITCH_RANGE, endpoint=True)),
        rate=int(rng.integers(*_RATE_WPM, endpoint=True))))
  return speakers


# --------------------------------------------------------------------------
# Sentences.

_WORDS = {
    "name": ("Anna", "Peter", "Maria", "David", "Laura", "Thomas", "Helen",
             "George", "Sarah", "Martin", "Julia", "Oliver", "Emma", "Victor"),
    "det": ("the", "a", "every", "that", "one", "our", "their", "this"),
    "adj": ("old", "quiet", "yellow", "heavy", "little", "bright", "narrow",
            "wooden", "distant", "careful", "silver", "tired", "friendly",
            "broken", "sudden", "gentle", "cold", "famous", "empty", "busy"),
    "noun": ("farmer", "window", "river", "teacher", "garden", "engine",
             "basket", "village", "doctor", "letter", "mountain", "kitchen",
             "sailor", "bridge", "market", "lantern", "pilot", "forest",
             "painter", "bicycle", "station", "island", "captain", "blanket"),
    "verb_past": ("carried", "painted", "opened", "followed", "repaired",
                  "watched", "counted", "visited", "pushed", "cleaned",
                  "described", "remembered", "noticed", "borrowed", "found"),
    "verb": ("carry", "paint", "open", "follow", "repair", "watch", "count",
             "visit", "push", "clean", "describe", "remember", "find"),
    "adv": ("slowly", "quickly", "again", "carefully", "at noon", "yesterday",
            "in the morning", "after dinner", "without a word", "twice",
            "before the storm", "every summer"),
    "place": ("near the river", "behind the station", "across the valley",
              "in the old market", "under the bridge", "by the window",
              "on the island", "along the narrow road", "at the harbour"),
    "number": ("two", "three", "four", "seven", "eleven", "twenty",
               "forty two", "a hundred"),
}

# Clause templates; `?` at the end marks a question.
_TEMPLATES = (
    "{det} {adj} {noun} {verb_past} {det} {noun}",
    "{name} agreed",
    "the {noun} was {adj}",
    "{adv} {name} smiled",
    "not the {noun}?",
    "{name} {verb_past} {det} {adj} {noun} {place}",
    "{det} {noun} was {adj} {adv}",
    "{name} and {name} {verb_past} {number} {noun}s {place}",
    "we {verb_past} the {noun} {adv}",
    "{name} will {verb} the {adj} {noun} {adv}",
    "there were {number} {adj} {noun}s {place}",
    "did {name} {verb} the {noun} {adv}?",
    "why was the {noun} so {adj}?",
    "the {noun} {place} looked {adj} and {adj}",
    "{name} said that the {noun} was {adj}",
    "nobody could {verb} {det} {adj} {noun}",
)

# Utterance shape: target length, clauses, pauses and edge silences (seconds).
_TARGET_SECONDS = (2.0, 6.0)
_CLAUSES = (2, 4)  # min, max per utterance
_CANDIDATES = 3  # clauses drawn to choose one that fits the target length
_PAUSE_SECONDS = (0.3, 1.0)
_EDGE_SECONDS = (0.1, 0.3)
# espeak-ng speaks about this many seconds per word at 1 word per minute
# (measured over the templates); used to plan clauses that fit the target.
_WORD_SECONDS_AT_1_WPM = 60.0 * 0.87
# Fixed gain that leaves headroom for the resampler's overshoot.
_OUTPUT_GAIN = 0.8


def _clause(rng: np.random.Generator) -> str:
  template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
  parts = template.split("{")
  out = [parts[0]]
  for part in parts[1:]:
    slot, rest = part.split("}", 1)
    words = _WORDS[slot]
    out.append(words[rng.integers(len(words))] + rest)
  return "".join(out)


@dataclasses.dataclass(frozen=True)
class Utterance:
  """The plan of one utterance: clauses and the silences around them."""

  id: str
  speaker: Speaker
  clauses: tuple[str, ...]
  pauses: tuple[float, ...]  # seconds between clauses, len(clauses) - 1
  lead: float  # seconds of silence before the first clause
  tail: float  # seconds after the last one
  seed: int  # espeak-ng's random seed

  @property
  def text(self) -> str:
    return " ".join(self.clauses)


def make_utterance(speaker: Speaker, speaker_index: int, index: int,
                   seed: int = 0) -> Utterance:
  """Utterance `index` of a speaker; a function of `(seed, speaker, index)`."""
  rng = np.random.default_rng([seed, 2, speaker_index, index])
  word_seconds = _WORD_SECONDS_AT_1_WPM / speaker.rate
  lead, tail = rng.uniform(*_EDGE_SECONDS, size=2)
  target = rng.uniform(*_TARGET_SECONDS) - lead - tail
  clauses, pauses = [], []
  planned = 0.0
  while len(clauses) < _CLAUSES[1]:
    # The longest of a few candidate clauses that still fits the target (the
    # shortest when none does, as long as the minimum is not reached).
    candidates = sorted((_clause(rng) for _ in range(_CANDIDATES)),
                        key=lambda c: len(c.split()))
    pause = float(rng.uniform(*_PAUSE_SECONDS)) if clauses else 0.0
    cost = [pause + word_seconds * len(c.split()) for c in candidates]
    fitting = [i for i, c in enumerate(cost) if planned + c <= target]
    if not fitting and len(clauses) >= _CLAUSES[0]:
      break
    choice = fitting[-1] if fitting else 0
    clauses.append(candidates[choice])
    if len(clauses) > 1:
      pauses.append(pause)
    planned += cost[choice]
  # Questions keep their "?"; other clauses end in "," or "." and the last in
  # "."; sentences start with a capital.
  punctuated = []
  for i, clause in enumerate(clauses):
    if not clause.endswith("?"):
      last = i == len(clauses) - 1
      clause += "." if last or rng.integers(2) else ","
    if i == 0 or punctuated[-1][-1] in ".?":
      clause = clause[0].upper() + clause[1:]
    punctuated.append(clause)
  return Utterance(
      id=f"{speaker.name}_{index:04d}", speaker=speaker,
      clauses=tuple(punctuated), pauses=tuple(pauses),
      lead=float(lead), tail=float(tail),
      seed=int(rng.integers(1, 2**31 - 1)))


# --------------------------------------------------------------------------
# espeak-ng synthesis, one fresh process per utterance.

# The worker reads a JSON request on stdin and writes, little-endian: the
# sample rate (uint32), then per clause its sample count (uint32) and its
# int16 samples. It uses the speak_lib.h API through ctypes and nothing else.
_ESPEAK_WORKER = r'''
import ctypes, json, struct, sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAMETERS = {"rate": 1, "pitch": 3, "range": 4}

def main():
  request = json.load(sys.stdin)
  lib = ctypes.CDLL(request["library"])
  lib.espeak_Initialize.argtypes = [
      ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
  lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
  lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
  lib.espeak_Synth.argtypes = [
      ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
      ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
  lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
  libc = ctypes.CDLL(None)
  rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                               request["data"].encode(), INITIALIZE_DONT_EXIT)
  if rate <= 0:
    sys.exit("espeak_Initialize failed with data at %s" % request["data"])
  chunks = []
  callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                                   ctypes.c_int, ctypes.c_void_p)
  def collect(wav, num_samples, events):
    if num_samples > 0 and wav:
      chunks.append(ctypes.string_at(wav, 2 * num_samples))
    return 0
  callback = callback_type(collect)
  lib.espeak_SetSynthCallback(callback)
  if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
    sys.exit("espeak-ng has no voice %r" % request["voice"])
  for name, value in request["parameters"].items():
    if lib.espeak_SetParameter(PARAMETERS[name], int(value), 0) != 0:
      sys.exit("espeak_SetParameter(%s=%s) failed" % (name, value))
  out = sys.stdout.buffer
  out.write(struct.pack("<I", rate))
  for text in request["clauses"]:
    lib.espeak_ng_SetRandSeed(request["seed"])
    libc.srand(request["seed"])
    del chunks[:]
    encoded = text.encode("utf-8") + b"\0"
    if lib.espeak_Synth(encoded, len(encoded), 0, POS_CHARACTER, 0,
                        CHARS_UTF8, None, None):
      sys.exit("espeak_Synth failed on %r" % text)
    lib.espeak_Synchronize()
    data = b"".join(chunks)
    out.write(struct.pack("<I", len(data) // 2))
    out.write(data)
  out.flush()

main()
'''

# Samples below this magnitude (after the gain; full scale = 1) at a clause's
# edges are trimmed before the planned silences are inserted.
_TRIM_LEVEL = 1e-3


def _run_espeak(utterance: Utterance) -> tuple[int, list[np.ndarray]]:
  """Synthesises the clauses in a fresh process: (rate, [`[samples]` int16])."""
  speaker = utterance.speaker
  request = {
      "library": espeakng_loader.get_library_path(),
      "data": espeakng_loader.get_data_path(),
      "voice": speaker.voice,
      "parameters": {"rate": speaker.rate, "pitch": speaker.pitch,
                     "range": speaker.pitch_range},
      "seed": utterance.seed,
      "clauses": list(utterance.clauses),
  }
  result = subprocess.run(
      [sys.executable, "-I", "-S", "-c", _ESPEAK_WORKER],
      input=json.dumps(request).encode(), capture_output=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(
        f"espeak-ng failed on {utterance.id} ({speaker.voice}): "
        f"{result.stderr.decode(errors='replace').strip()}")
  data = result.stdout
  rate = struct.unpack_from("<I", data)[0]
  pos, clauses = 4, []
  for _ in utterance.clauses:
    count = struct.unpack_from("<I", data, pos)[0]
    pos += 4
    clauses.append(np.frombuffer(data, "<i2", count, pos))
    pos += 2 * count
  return rate, clauses


def _trim(samples: np.ndarray) -> np.ndarray:
  loud = np.flatnonzero(np.abs(samples) >= _TRIM_LEVEL)
  return samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]


def _silence(seconds: float, sample_rate: int) -> np.ndarray:
  return np.zeros([int(round(seconds * sample_rate))], np.float32)


def synthesize(utterance: Utterance, sample_rate: int = 16000) -> np.ndarray:
  """The waveform of an utterance: `[samples]` float32 at `sample_rate`.

  Clauses are synthesised by espeak-ng, trimmed, resampled (polyphase) and
  joined with exactly the planned silences (rounded to whole samples).
  """
  rate, clauses = _run_espeak(utterance)
  pieces = [_silence(utterance.lead, sample_rate)]
  for i, clause in enumerate(clauses):
    speech = _trim(clause.astype(np.float32) * (_OUTPUT_GAIN / 32768.0))
    if speech.size == 0:
      raise RuntimeError(f"espeak-ng produced silence for {utterance.id}: "
                         f"{utterance.clauses[i]!r}")
    if rate != sample_rate:
      g = np.gcd(rate, sample_rate)
      speech = scipy.signal.resample_poly(speech, sample_rate // g, rate // g)
    if i:
      pieces.append(_silence(utterance.pauses[i - 1], sample_rate))
    pieces.append(speech.astype(np.float32))
  pieces.append(_silence(utterance.tail, sample_rate))
  return np.concatenate(pieces)


def speechlike_audio(seconds: float, sample_rate: int = 16000,
                     seed: int = 0) -> np.ndarray:
  """`[samples]` float32 stand-in for speech: voiced bursts of 0.8-3 s
  (a harmonic tone with a syllable-rate tremolo) between pauses of 0.15-0.8 s
  of faint noise. Deterministic for a seed."""
  rng = np.random.default_rng(seed)
  total = int(seconds * sample_rate)
  parts, n = [], 0
  while n < total:
    size = int(rng.uniform(0.8, 3.0) * sample_rate)
    t = np.arange(size) / sample_rate
    f0 = rng.uniform(90.0, 220.0)
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
    envelope = np.sqrt(np.sin(np.pi * np.arange(size) / size))
    parts.append(0.2 * tone * envelope * (1 + 0.3 * np.sin(2 * np.pi * 4 * t)))
    gap = int(rng.uniform(0.15, 0.8) * sample_rate)
    parts.append(rng.standard_normal(gap) * 1e-4)
    n += size + gap
  return np.concatenate(parts)[:total].astype(np.float32)


# --------------------------------------------------------------------------
# The corpus.

def _speakers_table(speakers: Sequence[Speaker], seed: int,
                    sample_rate: int) -> dict[str, Any]:
  return {"generator": "e2s_tf.corpus", "version": CORPUS_VERSION,
          "seed": seed, "sample_rate": sample_rate,
          "speakers": [dataclasses.asdict(s) for s in speakers]}


def _check_compatible(path: str, table: Mapping[str, Any]) -> None:
  """Refuses to mix a new corpus into one made with other settings."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    old = json.load(f)
  for key in ("generator", "version", "seed", "sample_rate"):
    if old.get(key) != table[key]:
      raise ValueError(
          f"{path}: the corpus there was made with {key}={old.get(key)!r}, "
          f"not {table[key]!r}; use another out_dir or delete it")


# Mean seconds of an utterance of the corpus: 4.84 s in the demo corpus
# (8 x 40 utterances, 1549 s), 4.80 s in a 40 x 190 one (36,504 s).
MEAN_UTTERANCE_SECONDS = 4.8


def utterances_for_hours(hours: float, speakers: int) -> int:
  """Utterances per speaker for about `hours` of audio from `speakers`
  (`make_corpus --hours`)."""
  if not hours > 0 or speakers < 1:
    raise ValueError(f"need hours > 0 and speakers >= 1, got {hours} and "
                     f"{speakers}")
  return max(1, math.ceil(hours * 3600.0 /
                          (speakers * MEAN_UTTERANCE_SECONDS)))


def make_corpus(out_dir: str, speakers: int = 8, utterances: int = 40,
                seed: int = 0, sample_rate: int = 16000, progress: bool = True,
                workers: Optional[int] = None) -> str:
  """Synthesises the espeak-ng corpus and returns the path of its manifest.

  Writes `out_dir/wav/<speaker>/<id>.wav` (16-bit PCM at `sample_rate`),
  `out_dir/speakers.json` (the voices) and `out_dir/manifest.jsonl` (id,
  audio relative to the manifest, speaker, text). Files are written under
  temporary names and renamed; a re-run with the same arguments keeps the
  existing files and gives byte-identical output. Utterance `j` of speaker
  `i` depends only on `(seed, i, j, sample_rate)`.

  Args:
    out_dir: output directory (created).
    speakers: number of speakers.
    utterances: utterances per speaker.
    seed: seed of voices, sentences and pauses.
    sample_rate: output rate (espeak-ng synthesises at 22050 Hz).
    progress: show a progress bar.
    workers: concurrent espeak-ng processes (default: the CPU count).
  """
  if speakers < 1 or utterances < 1:
    raise ValueError(f"need speakers >= 1 and utterances >= 1, got "
                     f"{speakers} and {utterances}")
  voices = make_speakers(speakers, seed)
  table = _speakers_table(voices, seed, sample_rate)
  speakers_path = os.path.join(out_dir, SPEAKERS)
  _check_compatible(speakers_path, table)
  os.makedirs(out_dir, exist_ok=True)
  # Leftovers of an interrupted run (temporary files are never complete).
  # (`<id>.wav.tmp<pid>` of older versions, `.<id>.wav.tmp-XXXXXXXX` of
  # audio.save_wav now.)
  for stale in (glob.glob(os.path.join(out_dir, WAV_DIR, "*", "*.wav.tmp*")) +
                glob.glob(os.path.join(out_dir, WAV_DIR, "*",
                                       ".*.wav.tmp-*"))):
    os.remove(stale)
  plan = [make_utterance(voice, i, j, seed)
          for i, voice in enumerate(voices) for j in range(utterances)]

  def wav_path(utterance: Utterance) -> str:
    return os.path.join(out_dir, WAV_DIR, utterance.speaker.name,
                        utterance.id + ".wav")

  def render(utterance: Utterance) -> None:
    path = wav_path(utterance)
    if not os.path.exists(path):
      audio_lib.save_wav(path, synthesize(utterance, sample_rate), sample_rate)

  # The table goes first: an interrupted run is still checked on re-runs.
  fileio.write_json(speakers_path, table, indent=2)
  todo = [u for u in plan if not os.path.exists(wav_path(u))]
  logging.info("corpus %s: %d utterances, %d to synthesise", out_dir,
               len(plan), len(todo))
  workers = workers or os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = [pool.submit(render, u) for u in todo]
    try:
      for future in tqdm.tqdm(concurrent.futures.as_completed(futures),
                              total=len(todo), desc="espeak-ng", unit="utt",
                              disable=not progress):
        future.result()
    except BaseException:
      for future in futures:
        future.cancel()
      raise

  manifest = os.path.join(out_dir, MANIFEST)
  manifest_lib.write_manifest(
      ({"id": u.id, "audio": f"{WAV_DIR}/{u.speaker.name}/{u.id}.wav",
        "speaker": u.speaker.name, "text": u.text} for u in plan), manifest)
  return manifest
