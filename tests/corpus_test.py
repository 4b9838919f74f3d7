"""Tests of e2s_tf.corpus and its two mains (make_corpus, make_manifest)."""

import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import corpus
from e2s_tf import manifest as manifest_lib
from e2s_tf import spectral
from tests import corpus_testlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = spectral.StftConfig()
SR = CONFIG.sample_rate


@pytest.fixture(name="tiny")
def tiny_fixture(tiny_corpus_manifest):
  """The shared 2 x 2 corpus (conftest): its manifest path."""
  return tiny_corpus_manifest


def _files(root):
  found = []
  for directory, _, names in os.walk(root):
    found += [os.path.relpath(os.path.join(directory, n), root) for n in names]
  return sorted(found)


# --------------------------------------------------------------------------
# The corpus.

def test_corpus_layout_and_manifest(tiny):
  root = os.path.dirname(tiny)
  assert _files(root) == [
      "manifest.jsonl", "speakers.json",
      "wav/spk00/spk00_0000.wav", "wav/spk00/spk00_0001.wav",
      "wav/spk01/spk01_0000.wav", "wav/spk01/spk01_0001.wav"]
  with open(tiny) as f:
    raw = [json.loads(line) for line in f]
  plan = corpus_testlib.planned_utterances()
  assert [r["id"] for r in raw] == sorted(plan)
  for row in raw:
    assert set(row) == {"id", "audio", "speaker", "text"}
    assert row["audio"] == f"wav/{row['speaker']}/{row['id']}.wav"
    assert row["speaker"] == row["id"].split("_")[0]
    assert row["text"] == plan[row["id"]].text
    assert row["text"][0].isupper() and row["text"][-1] in ".?"
  with open(os.path.join(root, "speakers.json")) as f:
    table = json.load(f)
  assert table["seed"] == 0 and table["sample_rate"] == SR
  assert table["speakers"] == [
      {"name": s.name, "voice": s.voice, "gender": s.gender, "pitch": s.pitch,
       "pitch_range": s.pitch_range, "rate": s.rate}
      for s in corpus.make_speakers(2, 0)]


def test_corpus_is_deterministic(tiny, tmp_path):
  again = corpus.make_corpus(str(tmp_path / "again"), speakers=2, utterances=2,
                             seed=0, progress=False)
  first, second = os.path.dirname(tiny), os.path.dirname(again)
  assert _files(first) == _files(second)
  match, mismatch, errors = filecmp.cmpfiles(first, second, _files(first),
                                             shallow=False)
  assert (mismatch, errors) == ([], [])
  assert len(match) == 6


def test_rerun_keeps_complete_files_and_replaces_missing_ones(tmp_path):
  out = str(tmp_path / "c")
  manifest = corpus.make_corpus(out, speakers=1, utterances=2, seed=3,
                                progress=False)
  kept = os.path.join(out, "wav", "spk00", "spk00_0000.wav")
  redone = os.path.join(out, "wav", "spk00", "spk00_0001.wav")
  with open(redone, "rb") as f:
    redone_bytes = f.read()
  kept_mtime = os.stat(kept).st_mtime_ns
  os.remove(redone)
  stale = redone + ".tmp12345"  # what an interrupted run leaves behind
  with open(stale, "wb") as f:
    f.write(b"partial")
  with open(manifest, "rb") as f:
    manifest_bytes = f.read()
  corpus.make_corpus(out, speakers=1, utterances=2, seed=3, progress=False)
  assert os.stat(kept).st_mtime_ns == kept_mtime
  with open(redone, "rb") as f:
    assert f.read() == redone_bytes
  assert not os.path.exists(stale)
  with open(manifest, "rb") as f:
    assert f.read() == manifest_bytes


def test_rerun_with_another_seed_is_refused(tmp_path):
  out = str(tmp_path / "c")
  corpus.make_corpus(out, speakers=1, utterances=1, seed=0, progress=False)
  with pytest.raises(ValueError, match="seed=0"):
    corpus.make_corpus(out, speakers=1, utterances=1, seed=1, progress=False)


def test_speakers_are_distinct_and_independent_of_the_count():
  eight = corpus.make_speakers(8, seed=0)
  assert [s.name for s in eight] == [f"spk{i:02d}" for i in range(8)]
  assert len({s.voice for s in eight}) == 8
  assert corpus.make_speakers(3, seed=0) == eight[:3]
  assert [s.gender for s in eight[:2]] in (["male", "female"],
                                           ["female", "male"])
  assert corpus.make_speakers(8, seed=1) != eight


def test_utterances_have_two_to_four_clauses_and_pauses():
  for u in corpus_testlib.planned_utterances(4, 10).values():
    assert 2 <= len(u.clauses) <= 4
    assert len(u.pauses) == len(u.clauses) - 1
    assert all(0.3 <= p <= 1.0 for p in u.pauses)
    assert 0.1 <= u.lead <= 0.3 and 0.1 <= u.tail <= 0.3


def _longest_zero_runs(x):
  """Lengths of the runs of exact zeros strictly inside the non-zero part."""
  nonzero = np.flatnonzero(x)
  inner = x[nonzero[0]:nonzero[-1] + 1] == 0
  edges = np.diff(np.concatenate([[0], inner.astype(np.int8), [0]]))
  return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_corpus_audio_is_16k_speech_with_silent_pauses(tiny):
  plan = corpus_testlib.planned_utterances()
  for item in manifest_lib.read_manifest(tiny):
    info = sf.info(item["audio"])
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    x, _ = sf.read(item["audio"], dtype="int16")
    seconds = x.size / SR
    assert 2.0 < seconds < 8.0, seconds
    assert np.sqrt(np.mean((x / 32768.0)**2)) > 0.02  # audible speech
    assert np.abs(x).max() < 32767  # no clipping
    u = plan[item["id"]]
    # Leading/trailing silence as planned, and one long pause per clause gap.
    nonzero = np.flatnonzero(x)
    assert nonzero[0] >= round(u.lead * SR)
    assert x.size - 1 - nonzero[-1] >= round(u.tail * SR)
    pauses = _longest_zero_runs(x)
    long_pauses = np.sort(pauses[pauses >= 0.3 * SR])
    assert long_pauses.size == len(u.pauses), (item["id"], long_pauses)
    np.testing.assert_allclose(long_pauses, sorted(p * SR for p in u.pauses),
                               atol=0.02 * SR)


def _median_f0(x, rate):
  """Median autocorrelation pitch (Hz) over loud, periodic 40 ms frames."""
  n = int(0.04 * rate)
  frames = np.lib.stride_tricks.sliding_window_view(x, n)[::n // 2]
  energy = np.mean(frames**2, axis=1)
  lo, hi = rate // 400, rate // 60
  f0 = []
  for frame in frames[energy > energy.max() * 10**-2.5]:
    frame = frame - frame.mean()
    ac = np.correlate(frame, frame, "full")[n - 1:]
    lag = lo + int(np.argmax(ac[lo:hi]))
    if ac[0] > 0 and ac[lag] > 0.5 * ac[0]:
      f0.append(rate / lag)
  return float(np.median(f0))


def test_speakers_really_differ_in_pitch(tiny):
  speakers = corpus.make_speakers(2, 0)
  f0 = {}
  for item in manifest_lib.read_manifest(tiny):
    x, _ = sf.read(item["audio"])
    f0.setdefault(item["speaker"], []).append(_median_f0(x, SR))
  by_gender = {s.gender: np.mean(f0[s.name]) for s in speakers}
  assert 60 < by_gender["male"] < 160, by_gender
  assert by_gender["female"] > 1.5 * by_gender["male"], by_gender


# --------------------------------------------------------------------------
# The command-line programs.

def _run(module, *args):
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.strip().splitlines()[-1]


def test_command_line_programs(tmp_path):
  out = str(tmp_path / "corpus")
  summary = _run("e2s_tf.make_corpus", f"--out_dir={out}", "--speakers=2",
                 "--utterances=1", "--seed=5", "--progress=false")
  manifest = os.path.join(out, "manifest.jsonl")
  assert summary.startswith("make_corpus: 2 utterances of 2 speakers")
  assert manifest in summary
  assert [i["id"] for i in manifest_lib.read_manifest(manifest)] == [
      "spk00_0000", "spk01_0000"]
  regions = str(tmp_path / "regions.jsonl")
  summary = _run("e2s_tf.make_manifest", f"--audio_dir={out}/wav",
                 f"--out={regions}", "--layout=speaker_dirs", "--vad",
                 "--vad_min_region_frames=20", "--progress=false")
  items = manifest_lib.read_manifest(regions)
  assert summary.startswith(f"make_manifest: {len(items)} items")
  assert len(items) >= 4  # two clauses or more per utterance
  assert all(i["id"].rsplit("_r", 1)[0] in ("spk00_0000", "spk01_0000")
             for i in items)


def test_make_corpus_hours_sets_the_utterances_per_speaker(tmp_path):
  # 10 h of 40 speakers at 4.8 s an utterance: ceil(36000 / 192).
  assert corpus.utterances_for_hours(10, 40) == 188
  assert corpus.utterances_for_hours(0.001, 8) == 1
  with pytest.raises(ValueError, match="hours > 0"):
    corpus.utterances_for_hours(0, 8)
  out = str(tmp_path / "corpus")
  # 0.005 h = 18 s of 2 speakers: ceil(18 / 9.6) = 2 utterances each.
  summary = _run("e2s_tf.make_corpus", f"--out_dir={out}", "--speakers=2",
                 "--hours=0.005", "--progress=false")
  items = manifest_lib.read_manifest(os.path.join(out, "manifest.jsonl"))
  seconds = sum(sf.info(i["audio"]).duration for i in items)
  assert len(items) == 4
  assert summary.startswith(f"make_corpus: 4 utterances of 2 speakers "
                            f"({seconds / 3600:.2f} h of audio)")
  both = subprocess.run(
      [sys.executable, "-m", "e2s_tf.make_corpus", f"--out_dir={out}",
       "--hours=1", "--utterances=3"], cwd=ROOT, capture_output=True,
      text=True, check=False)
  assert both.returncode == 1
  assert "give --hours or --utterances, not both" in both.stderr
