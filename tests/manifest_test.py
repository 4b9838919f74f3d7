"""Tests of e2s_tf.manifest: reading, writing and building manifests, ids."""

import filecmp
import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import audio
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import spectral
from tests import corpus_testlib

CONFIG = spectral.StftConfig()
SR = CONFIG.sample_rate


@pytest.fixture(name="tiny")
def tiny_fixture(tiny_corpus_manifest):
  """The shared 2 x 2 corpus (conftest): its manifest path."""
  return tiny_corpus_manifest


def test_manifest_round_trips_through_read_manifest(tiny):
  root = os.path.dirname(tiny)
  items = manifest_lib.read_manifest(tiny)
  assert [i["id"] for i in items] == sorted(corpus_testlib.planned_utterances())
  for item in items:
    assert os.path.isabs(item["audio"])
    assert item["audio"] == os.path.join(root, "wav", item["speaker"],
                                         item["id"] + ".wav")
    assert os.path.isfile(item["audio"])
  out = os.path.join(root, "copy", "m.jsonl")
  manifest_lib.write_manifest(items, out)
  assert manifest_lib.read_manifest(out) == items


def test_build_manifest_speaker_dirs_matches_the_corpus(tiny, tmp_path):
  wav_dir = os.path.join(os.path.dirname(tiny), "wav")
  out = str(tmp_path / "sub" / "m.jsonl")
  assert manifest_lib.build_manifest(wav_dir, out, layout="speaker_dirs") == 4
  with open(out) as f:
    raw = [json.loads(line) for line in f]
  # Paths are written relative to the manifest's directory.
  assert all(not os.path.isabs(r["audio"]) for r in raw)
  built = manifest_lib.read_manifest(out)
  expected = manifest_lib.read_manifest(tiny)
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
  assert manifest_lib.build_manifest(str(root), out, layout="flat") == 4
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
    assert manifest_lib.build_manifest(str(root), out) == 3
  assert "loose.wav" in caplog.text
  items = manifest_lib.read_manifest(out)
  assert [(i["id"], i["speaker"]) for i in items] == [
      ("19-198-0000", "19"), ("19-198-0001", "19"), ("26-495-0000", "26")]


def test_build_manifest_ids_fall_back_to_paths_when_names_repeat(tmp_path):
  root = tmp_path / "vctk"
  _write_tone(str(root / "p1" / "001.wav"))
  _write_tone(str(root / "p2" / "001.wav"))
  out = str(tmp_path / "m.jsonl")
  manifest_lib.build_manifest(str(root), out)
  assert [i["id"] for i in manifest_lib.read_manifest(out)] == ["p1_001", "p2_001"]


def test_build_manifest_makes_valid_unique_ids_from_any_file_name(tmp_path):
  """Spaces, brackets, accents, '..' in names: ids that are file names."""
  root = tmp_path / "audio"
  names = ["my take (2).wav", "my take [2].wav", "caf\u00e9 no\u00ebl.wav",
           "x .. y.wav", "a-b.c_d.wav", "sub dir/x y.wav",
           "sub dir/my_take_2_.wav"]
  for name in names:
    _write_tone(str(root / name), seconds=0.05)
  out = str(tmp_path / "m.jsonl")
  assert manifest_lib.build_manifest(str(root), out, layout="flat") == len(names)
  items = manifest_lib.read_manifest(out)  # would raise on an invalid id
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
  manifest_lib.build_manifest(str(root), again, layout="flat")
  assert filecmp.cmp(out, again, shallow=False)


def test_id_helpers_map_and_deduplicate():
  assert manifest_lib.id_segment("my take (2)") == "my_take_2_"
  assert manifest_lib.id_segment("M\u00fcller") == "Muller"
  assert [manifest_lib.id_segment(s) for s in ("", ".", "..", "...")] == [
      "_", "_", "_", "..."]
  assert manifest_lib.path_id("../a b/./c") == "_/a_b/_/c"
  assert manifest_lib.path_id("a/" + "b" * 300, max_length=10) == "a/bbbbbbbb"
  # A renamed repeat never takes an id that the input already holds.
  assert manifest_lib.unique_ids(["a", "a", "a-2", "b", "a"]) == [
      "a", "a-3", "a-2", "b", "a-4"]


def test_build_manifest_rejects_unknown_layouts_and_missing_dirs(tmp_path):
  with pytest.raises(ValueError, match="layout"):
    manifest_lib.build_manifest(str(tmp_path), str(tmp_path / "m"), layout="tree")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    manifest_lib.build_manifest(str(tmp_path / "nowhere"), str(tmp_path / "m"))


def test_build_manifest_vad_regions_follow_the_grid(tiny, tmp_path):
  wav_dir = os.path.join(os.path.dirname(tiny), "wav")
  out = str(tmp_path / "vad.jsonl")
  count = manifest_lib.build_manifest(wav_dir, out, vad=True)
  items = manifest_lib.read_manifest(out)
  assert count == len(items)
  plan = corpus_testlib.planned_utterances()
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
    assert manifest_lib.build_manifest(str(root), out, vad=True) == 1
  assert "broken.wav" in caplog.text
  [item] = manifest_lib.read_manifest(out)
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
  with pytest.raises(manifest_lib.ManifestError) as info:
    manifest_lib.read_manifest(str(path))
  assert message in str(info.value)
  assert str(path) in str(info.value)


def test_read_manifest_rejects_text_that_is_not_utf8(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_bytes(b'{"id": "a", "audio": "a.wav"}\n{"id": "\xff"}\n')
  with pytest.raises(manifest_lib.ManifestError, match="m.jsonl:2: not UTF-8"):
    manifest_lib.read_manifest(str(path))


def test_read_manifest_of_a_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
    manifest_lib.read_manifest(str(tmp_path / "nothing.jsonl"))


def test_read_manifest_resolves_relative_paths(tmp_path):
  path = tmp_path / "sub" / "m.jsonl"
  os.makedirs(path.parent)
  path.write_text(
      '{"id": "a", "audio": "../wav/a.wav", "embedding": "emb/a.npy", '
      '"start": 0.5, "end": 1.25, "text": "hi"}\n\n'
      '{"id": "sub/b", "audio": "/abs/b.wav", "speaker": "s"}\n')
  a, b = manifest_lib.read_manifest(str(path))
  assert a == {"id": "a", "audio": str(tmp_path / "wav" / "a.wav"),
               "embedding": str(tmp_path / "sub" / "emb" / "a.npy"),
               "start": 0.5, "end": 1.25, "text": "hi"}
  # '/' in an id is allowed: it makes a sub-folder of the outputs.
  assert b == {"id": "sub/b", "audio": "/abs/b.wav", "speaker": "s"}
