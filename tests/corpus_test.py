"""Tests of e2s_tf.corpus and its two mains (make_corpus, make_manifest)."""

import filecmp
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import audio
from e2s_tf import corpus
from e2s_tf import fileio
from e2s_tf import spectral

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = spectral.StftConfig()
SR = CONFIG.sample_rate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A corpus of 2 speakers x 2 utterances: its manifest path."""
  out = tmp_path_factory.mktemp("corpus")
  return corpus.make_corpus(str(out), speakers=2, utterances=2, seed=0,
                            progress=False)


def _files(root):
  found = []
  for directory, _, names in os.walk(root):
    found += [os.path.relpath(os.path.join(directory, n), root) for n in names]
  return sorted(found)


def _plan(speakers=2, utterances=2, seed=0):
  voices = corpus.make_speakers(speakers, seed)
  return {u.id: u for i, v in enumerate(voices) for u in
          (corpus.make_utterance(v, i, j, seed) for j in range(utterances))}


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
  plan = _plan()
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
  for u in _plan(4, 10).values():
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
  plan = _plan()
  for item in corpus.read_manifest(tiny):
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
  for item in corpus.read_manifest(tiny):
    x, _ = sf.read(item["audio"])
    f0.setdefault(item["speaker"], []).append(_median_f0(x, SR))
  by_gender = {s.gender: np.mean(f0[s.name]) for s in speakers}
  assert 60 < by_gender["male"] < 160, by_gender
  assert by_gender["female"] > 1.5 * by_gender["male"], by_gender


# --------------------------------------------------------------------------
# Manifests.

def test_manifest_round_trips_through_read_manifest(tiny):
  root = os.path.dirname(tiny)
  items = corpus.read_manifest(tiny)
  assert [i["id"] for i in items] == sorted(_plan())
  for item in items:
    assert os.path.isabs(item["audio"])
    assert item["audio"] == os.path.join(root, "wav", item["speaker"],
                                         item["id"] + ".wav")
    assert os.path.isfile(item["audio"])
  out = os.path.join(root, "copy", "m.jsonl")
  corpus.write_manifest(items, out)
  assert corpus.read_manifest(out) == items


def test_build_manifest_speaker_dirs_matches_the_corpus(tiny, tmp_path):
  wav_dir = os.path.join(os.path.dirname(tiny), "wav")
  out = str(tmp_path / "sub" / "m.jsonl")
  assert corpus.build_manifest(wav_dir, out, layout="speaker_dirs") == 4
  with open(out) as f:
    raw = [json.loads(line) for line in f]
  # Paths are written relative to the manifest's directory.
  assert all(not os.path.isabs(r["audio"]) for r in raw)
  built = corpus.read_manifest(out)
  expected = corpus.read_manifest(tiny)
  assert [{k: i[k] for k in ("id", "audio", "speaker")} for i in built] == [
      {k: i[k] for k in ("id", "audio", "speaker")} for i in expected]


def _write_tone(path, seconds=0.5, rate=SR, subtype="PCM_16"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  t = np.arange(int(seconds * rate)) / rate
  sf.write(path, 0.5 * np.sin(2 * np.pi * 300 * t), rate, subtype=subtype)


def test_build_manifest_flat_lists_every_audio_file(tmp_path):
  root = tmp_path / "audio"
  for rel, subtype in [("b/x.wav", "PCM_16"), ("a.flac", "PCM_16"),
                       ("b/c/y.ogg", "VORBIS"), ("Z.WAV", "PCM_16")]:
    _write_tone(str(root / rel), subtype=subtype)
  (root / "notes.txt").write_text("not audio")
  _write_tone(str(root / ".hidden" / "h.wav"))
  _write_tone(str(root / ".h.wav"))
  out = str(root / "m.jsonl")
  assert corpus.build_manifest(str(root), out, layout="flat") == 4
  with open(out) as f:
    raw = [json.loads(line) for line in f]
  # Sorted by relative path; no speaker.
  assert raw == [{"id": "Z", "audio": "Z.WAV"}, {"id": "a", "audio": "a.flac"},
                 {"id": "y", "audio": "b/c/y.ogg"},
                 {"id": "x", "audio": "b/x.wav"}]


def test_build_manifest_speaker_dirs_layout_details(tmp_path, caplog):
  root = tmp_path / "librispeech"
  _write_tone(str(root / "19" / "198" / "19-198-0001.flac"))
  _write_tone(str(root / "19" / "198" / "19-198-0000.flac"))
  _write_tone(str(root / "26" / "495" / "26-495-0000.flac"))
  _write_tone(str(root / "loose.wav"))  # not inside a speaker directory
  out = str(tmp_path / "m.jsonl")
  with caplog.at_level(logging.WARNING):
    assert corpus.build_manifest(str(root), out) == 3
  assert "loose.wav" in caplog.text
  items = corpus.read_manifest(out)
  assert [(i["id"], i["speaker"]) for i in items] == [
      ("19-198-0000", "19"), ("19-198-0001", "19"), ("26-495-0000", "26")]


def test_build_manifest_ids_fall_back_to_paths_when_names_repeat(tmp_path):
  root = tmp_path / "vctk"
  _write_tone(str(root / "p1" / "001.wav"))
  _write_tone(str(root / "p2" / "001.wav"))
  out = str(tmp_path / "m.jsonl")
  corpus.build_manifest(str(root), out)
  assert [i["id"] for i in corpus.read_manifest(out)] == ["p1_001", "p2_001"]


def test_build_manifest_makes_valid_unique_ids_from_any_file_name(tmp_path):
  """Spaces, brackets, accents, '..' in names: ids that are file names."""
  root = tmp_path / "audio"
  names = ["my take (2).wav", "my take [2].wav", "caf\u00e9 no\u00ebl.wav",
           "x .. y.wav", "a-b.c_d.wav", "sub dir/x y.wav",
           "sub dir/my_take_2_.wav"]
  for name in names:
    _write_tone(str(root / name), seconds=0.05)
  out = str(tmp_path / "m.jsonl")
  assert corpus.build_manifest(str(root), out, layout="flat") == len(names)
  items = corpus.read_manifest(out)  # would raise on an invalid id
  ids = {os.path.relpath(i["audio"], root): i["id"] for i in items}
  # The stems repeat ("my take (2)" and "my take [2]" both map to
  # "my_take_2_"), so ids are the paths, '/' -> '_', then made unique in
  # the sorted order of the paths.
  assert ids == {
      "x .. y.wav": "x_.._y",
      "a-b.c_d.wav": "a-b.c_d",
      "caf\u00e9 no\u00ebl.wav": "cafe_noel",
      "my take (2).wav": "my_take_2_",
      "my take [2].wav": "my_take_2_-2",
      "sub dir/my_take_2_.wav": "sub_dir_my_take_2_",
      "sub dir/x y.wav": "sub_dir_x_y"}
  for item_id in ids.values():
    assert fileio.item_id_problem(item_id) is None
  # Deterministic: the same files, the same manifest, byte for byte.
  again = str(tmp_path / "again.jsonl")
  corpus.build_manifest(str(root), again, layout="flat")
  assert filecmp.cmp(out, again, shallow=False)


def test_id_helpers_map_and_deduplicate():
  assert corpus.id_segment("my take (2)") == "my_take_2_"
  assert corpus.id_segment("M\u00fcller") == "Muller"
  assert [corpus.id_segment(s) for s in ("", ".", "..", "...")] == [
      "_", "_", "_", "..."]
  assert corpus.path_id("../a b/./c") == "_/a_b/_/c"
  assert corpus.path_id("a/" + "b" * 300, max_length=10) == "a/bbbbbbbb"
  # A renamed repeat never takes an id that the input already holds.
  assert corpus.unique_ids(["a", "a", "a-2", "b", "a"]) == [
      "a", "a-3", "a-2", "b", "a-4"]


def test_build_manifest_rejects_unknown_layouts_and_missing_dirs(tmp_path):
  with pytest.raises(ValueError, match="layout"):
    corpus.build_manifest(str(tmp_path), str(tmp_path / "m"), layout="tree")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    corpus.build_manifest(str(tmp_path / "nowhere"), str(tmp_path / "m"))


def test_build_manifest_vad_regions_follow_the_grid(tiny, tmp_path):
  wav_dir = os.path.join(os.path.dirname(tiny), "wav")
  out = str(tmp_path / "vad.jsonl")
  count = corpus.build_manifest(wav_dir, out, vad=True)
  items = corpus.read_manifest(out)
  assert count == len(items)
  plan = _plan()
  files = {}
  for item in items:
    file_id, region = item["id"].rsplit("_r", 1)
    files.setdefault(file_id, []).append((int(region), item))
  assert sorted(files) == sorted(plan)
  for file_id, regions in files.items():
    assert [k for k, _ in regions] == list(range(len(regions)))
    # Every clause of these utterances is one region: pauses split them.
    assert len(regions) == len(plan[file_id].clauses), file_id
    path = regions[0][1]["audio"]
    whole = audio.load_audio(path, SR)
    expected = audio.vad_regions(whole, CONFIG)
    for (_, item), (start_frame, end_frame) in zip(regions, expected):
      assert item["speaker"] == file_id.split("_")[0]
      assert (item["start"], item["end"]) == audio.frames_to_seconds(
          (start_frame, end_frame), CONFIG)
      cut = audio.load_audio(path, SR, item["start"], item["end"])
      assert CONFIG.num_frames(cut.size) == end_frame - start_frame
      np.testing.assert_array_equal(
          cut, whole[start_frame * CONFIG.frame_step:][:cut.size])


def test_build_manifest_vad_skips_unreadable_and_silent_files(tmp_path,
                                                              caplog):
  root = tmp_path / "audio"
  _write_tone(str(root / "spk" / "tone.wav"), seconds=1.0)
  os.makedirs(root / "spk", exist_ok=True)
  (root / "spk" / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
  sf.write(str(root / "spk" / "silence.wav"), np.zeros(SR), SR)
  out = str(tmp_path / "m.jsonl")
  with caplog.at_level(logging.WARNING):
    assert corpus.build_manifest(str(root), out, vad=True) == 1
  assert "broken.wav" in caplog.text
  [item] = corpus.read_manifest(out)
  assert item["id"] == "tone_r0"
  # A 1 s tone: every frame is speech.
  assert (item["start"], item["end"]) == audio.frames_to_seconds(
      (0, CONFIG.num_frames(SR)), CONFIG)


# --------------------------------------------------------------------------
# read_manifest errors.

@pytest.mark.parametrize("lines,message", [
    (['{"id": "a", "audio": "a.wav"}', '{"id": "b", "audio": '],
     "m.jsonl:2: malformed JSON"),
    (['["a", "a.wav"]'], "m.jsonl:1: expected a JSON object"),
    (['{"id": "a", "audio": "a.wav"}', '', '{"audio": "b.wav"}'],
     "m.jsonl:3: missing or empty 'id'"),
    (['{"id": "a"}'], "m.jsonl:1: missing or empty 'audio'"),
    (['{"id": "a", "audio": ""}'], "m.jsonl:1: missing or empty 'audio'"),
    (['{"id": "a", "audio": "a.wav"}', '{"id": "b", "audio": "b.wav"}',
      '{"id": "a", "audio": "c.wav"}'],
     "m.jsonl:3: duplicate id 'a' (first on line 1)"),
    (['{"id": "a", "audio": "a.wav", "start": 2.0, "end": 1.0}'],
     "m.jsonl:1: start 2.0 is not before end 1.0"),
    (['{"id": "a", "audio": "a.wav", "start": "0"}'],
     "m.jsonl:1: 'start' must be a non-negative number"),
    # Ids become file names: none may lead out of an output folder.
    (['{"id": "a", "audio": "a.wav"}', '{"id": "../../x", "audio": "x.wav"}'],
     "m.jsonl:2: invalid id '../../x': an id must not have a segment '..'"),
    (['{"id": "/abs/x", "audio": "x.wav"}'],
     "m.jsonl:1: invalid id '/abs/x': an id must not start with '/'"),
    (['{"id": "a//b", "audio": "x.wav"}'], "m.jsonl:1: invalid id 'a//b'"),
    (['{"id": "my take", "audio": "x.wav"}'],
     "m.jsonl:1: invalid id 'my take': an id may hold only letters"),
    (['{"id": "' + "x" * 201 + '", "audio": "x.wav"}'],
     "at most 200 characters"),
])
def test_read_manifest_errors_name_the_line(tmp_path, lines, message):
  path = tmp_path / "m.jsonl"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(corpus.ManifestError) as info:
    corpus.read_manifest(str(path))
  assert message in str(info.value)
  assert str(path) in str(info.value)


def test_read_manifest_rejects_text_that_is_not_utf8(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_bytes(b'{"id": "a", "audio": "a.wav"}\n{"id": "\xff"}\n')
  with pytest.raises(corpus.ManifestError, match="m.jsonl:2: not UTF-8"):
    corpus.read_manifest(str(path))


def test_read_manifest_of_a_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
    corpus.read_manifest(str(tmp_path / "nothing.jsonl"))


def test_read_manifest_resolves_relative_paths(tmp_path):
  path = tmp_path / "sub" / "m.jsonl"
  os.makedirs(path.parent)
  path.write_text(
      '{"id": "a", "audio": "../wav/a.wav", "embedding": "emb/a.npy", '
      '"start": 0.5, "end": 1.25, "text": "hi"}\n\n'
      '{"id": "sub/b", "audio": "/abs/b.wav", "speaker": "s"}\n')
  a, b = corpus.read_manifest(str(path))
  assert a == {"id": "a", "audio": str(tmp_path / "wav" / "a.wav"),
               "embedding": str(tmp_path / "sub" / "emb" / "a.npy"),
               "start": 0.5, "end": 1.25, "text": "hi"}
  # '/' in an id is allowed: it makes a sub-folder of the outputs.
  assert b == {"id": "sub/b", "audio": "/abs/b.wav", "speaker": "s"}


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
  assert [i["id"] for i in corpus.read_manifest(manifest)] == [
      "spk00_0000", "spk01_0000"]
  regions = str(tmp_path / "regions.jsonl")
  summary = _run("e2s_tf.make_manifest", f"--audio_dir={out}/wav",
                 f"--out={regions}", "--layout=speaker_dirs", "--vad",
                 "--vad_min_region_frames=20", "--progress=false")
  items = corpus.read_manifest(regions)
  assert summary.startswith(f"make_manifest: {len(items)} items")
  assert len(items) >= 4  # two clauses or more per utterance
  assert all(i["id"].rsplit("_r", 1)[0] in ("spk00_0000", "spk01_0000")
             for i in items)
