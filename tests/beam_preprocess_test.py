"""The Beam pipeline path writes what the local path writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from e2s_tf import beam_preprocess
from e2s_tf import corpus
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf.preprocessing import items as items_lib
from e2s_tf.preprocessing import output
from e2s_tf.preprocessing import stats
from e2s_tf.preprocessing.errors import PreprocessError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(embedder_spec="logmel", split_by="utterance",
                valid_fraction=0.2, test_fraction=0.2, seed=0,
                items_per_shard=3, max_rejected_fraction=0.5, progress=False)


def _write_manifest(path, items):
  with open(path, "w") as f:
    for it in items:
      f.write(json.dumps(it) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def manifest(speech_corpus, tmp_path_factory):
  """The speech corpus (absolute paths) plus one item whose audio is gone."""
  items = manifest_lib.read_manifest(speech_corpus)
  gone = dict(items[0], id="gone", audio=str(
      tmp_path_factory.mktemp("gone") / "nowhere.wav"))
  return _write_manifest(tmp_path_factory.mktemp("manifest") / "m.jsonl",
                         items + [gone])


@pytest.fixture(scope="module")
def both(manifest, tmp_path_factory):
  """(local dir, local info, Beam dir, Beam info) for the same settings."""
  local = str(tmp_path_factory.mktemp("local"))
  beam = str(tmp_path_factory.mktemp("beam"))
  local_info = preprocess_lib.run_preprocess(manifest, local, num_workers=1,
                                             **SETTINGS)
  # One in-process worker keeps the test fast; the CLI test below runs the
  # multi-process DirectRunner.
  beam_info = beam_preprocess.run_beam_preprocess(
      manifest, beam, runner="DirectRunner", num_workers=1, **SETTINGS)
  return local, local_info, beam, beam_info


def _examples(data_dir):
  """{split: set of (id, speaker, speaker_index, frames, array bytes...)};
  the log-STFT is a function of the audio."""
  out = {}
  for split in records.read_dataset_info(data_dir)["splits"]:
    out[split] = {
        (ex["id"], ex["speaker"], ex["speaker_index"], ex["length"],
         ex["embedding"].tobytes(), ex["audio"].tobytes())
        for ex in records.read_examples(records.split_files(data_dir, split),
                                        with_audio=True)}
  return out


def test_same_examples_as_sets(both):
  local, _, beam, _ = both
  a, b = _examples(local), _examples(beam)
  assert sorted(a) == sorted(b) == ["test", "train", "valid"]
  for split in a:
    ids_a, ids_b = ({r[0] for r in x[split]} for x in (a, b))
    assert ids_a == ids_b, split
    assert a[split] == b[split], f"{split}: examples differ"
  assert sum(len(v) for v in a.values()) == 12
  assert "gone" not in {r[0] for v in a.values() for r in v}


def test_same_dataset_info(both):
  _, a, _, b = both
  assert sorted(a) == sorted(b)
  for key in a:
    if key in ("stats", "seconds"):
      continue
    assert a[key] == b[key], key
  assert a["fingerprint"] == b["fingerprint"]
  assert a["rejected"] == b["rejected"] == {
      "count": 1, "by_reason": {"missing_audio": 1},
      "report": records.REJECTED_REPORT}
  # 13 items: 3 test, 3 valid (one of which may be the missing one), 7 train.
  assert sum(s["num_examples"] for s in a["splits"].values()) == 12
  assert a["splits"]["train"]["num_shards"] == 3
  assert sorted(a["stats"]) == sorted(b["stats"])
  for key, value in a["stats"].items():
    np.testing.assert_allclose(b["stats"][key], value, rtol=1e-5, atol=1e-7,
                               err_msg=key)
    assert not np.allclose(value, value[0]), key  # per-channel, not a constant


def test_same_files_and_report_nothing_left_over(both):
  local, _, beam, _ = both
  assert sorted(os.listdir(local)) == sorted(os.listdir(beam))
  assert not [n for n in os.listdir(beam) if n.endswith(".tmp")]
  with open(os.path.join(local, records.REJECTED_REPORT)) as f:
    report_a = [json.loads(line) for line in f]
  with open(os.path.join(beam, records.REJECTED_REPORT)) as f:
    report_b = [json.loads(line) for line in f]
  assert report_a == report_b
  assert [(r["id"], r["reason"]) for r in report_b] == [("gone",
                                                         "missing_audio")]


def test_each_path_recognises_the_others_result(both, manifest):
  local, local_info, beam, beam_info = both
  assert preprocess_lib.run_preprocess(manifest, beam, num_workers=1,
                                       **SETTINGS) == beam_info
  assert beam_preprocess.run_beam_preprocess(manifest, local, num_workers=1,
                                             **SETTINGS) == local_info


def test_rejected_run_leaves_nothing_that_looks_whole(speech_corpus, tmp_path):
  items = manifest_lib.read_manifest(speech_corpus)[:4]
  items += [dict(it, id=it["id"] + "_gone", audio=str(tmp_path / "no.wav"))
            for it in items]
  manifest = _write_manifest(tmp_path / "bad.jsonl", items)
  out = tmp_path / "out"
  with pytest.raises(PreprocessError, match="4 of 8 items"):
    beam_preprocess.run_beam_preprocess(
        manifest, str(out), "logmel", split_by="utterance", valid_fraction=0.0,
        test_fraction=0.0, num_workers=1, max_rejected_fraction=0.2,
        progress=False)
  # The report, and the run lock's file (which names the last holder).
  assert sorted(os.listdir(out)) == [fileio.LOCK_FILE, records.REJECTED_REPORT]
  with open(out / records.REJECTED_REPORT) as f:
    assert len(f.readlines()) == 4


def _results(rng, n):
  """Synthetic accepted and rejected `ItemResult`s over the three splits."""
  out = []
  for i in range(n):
    split = records.SPLITS[i % 3]
    if i % 5 == 4:
      out.append(items_lib.ItemResult(f"r{i}", split,
                                      reason=items_lib.Reason.TOO_SHORT,
                                      detail="short"))
      continue
    t = int(rng.integers(5, 50))
    emb, stft = rng.standard_normal((t, 4)), rng.standard_normal((t, 3)) - 5
    out.append(items_lib.ItemResult(
        f"ok{i}", split, example=b"x", num_frames=t, num_samples=160 * t,
        trimmed_frames=i % 2, embedding_sum=emb.sum(0),
        embedding_sumsq=np.square(emb).sum(0), log_stft_sum=stft.sum(0),
        log_stft_sumsq=np.square(stft).sum(0)))
  return out


def test_summary_merges_and_round_trips_like_one_pass():
  results = _results(np.random.default_rng(0), 20)
  whole = stats.Summary()
  for r in results:
    whole.add(r)
  fn = beam_preprocess.SummaryCombineFn()
  parts = [fn.create_accumulator(), fn.create_accumulator()]
  for i, r in enumerate(results):
    fn.add_input(parts[i % 2], r)
  merged = stats.Summary.from_json(
      fn.extract_output(fn.merge_accumulators(parts)).to_json())
  assert merged.counts == whole.counts
  assert ({s: sorted(v) for s, v in merged.lengths.items()} ==
          {s: sorted(v) for s, v in whole.lengths.items()})
  assert merged.trimmed == whole.trimmed == {"count": 8, "frames": 8}
  assert sorted(r["id"] for r in merged.rejected) == sorted(
      r["id"] for r in whole.rejected) == ["r14", "r19", "r4", "r9"]
  a, b = whole.train_stats.finish(), merged.train_stats.finish()
  for key in a:
    np.testing.assert_allclose(b[key], a[key], rtol=1e-6, err_msg=key)
  train = [r for r in results if r.ok and r.split == "train"]
  frames = sum(r.num_frames for r in train)
  np.testing.assert_allclose(
      a["log_stft_mean"], sum(r.log_stft_sum for r in train) / frames,
      rtol=1e-6)


def test_pipeline_options_pass_through():
  options = beam_preprocess.make_pipeline_options(
      "DataflowRunner", ["--project=p1", "--region=europe-west4",
                         "--temp_location=gs://b/tmp"]).get_all_options()
  assert options["runner"] == "DataflowRunner"
  assert (options["project"], options["region"], options["temp_location"]) == (
      "p1", "europe-west4", "gs://b/tmp")
  direct = beam_preprocess.make_pipeline_options("DirectRunner", [],
                                                 num_workers=3)
  assert direct.get_all_options()["direct_num_workers"] == 3
  assert direct.get_all_options()["direct_running_mode"] == "multi_processing"
  mine = beam_preprocess.make_pipeline_options(
      "DirectRunner", ["--direct_running_mode=in_memory"], num_workers=3)
  assert mine.get_all_options()["direct_running_mode"] == "in_memory"


def test_cli_multiprocess_direct_runner(manifest, both, tmp_path):
  local, local_info, _, _ = both
  out = tmp_path / "cli"
  cmd = [sys.executable, "-m", "e2s_tf.preprocess", f"--manifest={manifest}",
         f"--out_dir={out}", "--embedder=logmel", "--split_by=utterance",
         "--valid_fraction=0.2", "--test_fraction=0.2", "--items_per_shard=3",
         "--max_rejected_fraction=0.5"]
  run = subprocess.run(cmd + ["--runner=DirectRunner", "--direct_num_workers=2",
                              "--direct_running_mode=multi_processing"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "wrote 12 examples" in run.stdout
  info = records.read_dataset_info(str(out))
  assert info["fingerprint"] == local_info["fingerprint"]
  assert info["splits"] == local_info["splits"]
  assert _examples(str(out)) == _examples(local)
  # Pipeline options without a runner are a usage error, not ignored.
  bad = subprocess.run(cmd + ["--project=p1"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode != 0 and "--runner" in bad.stderr


def test_pieces_and_a_failed_rerun_as_on_the_local_path(speech_corpus,
                                                        tmp_path):
  # A 40 s item cut at 16 s: the pipeline's workers find the same cuts as the
  # local run (each cut is a function of its own window of audio).
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  wav = tmp_path / "long.wav"
  sf.write(wav, corpus.speechlike_audio(40.0), 16000,
           subtype="PCM_16")
  items = manifest_lib.read_manifest(speech_corpus)[:2]
  manifest = _write_manifest(tmp_path / "long.jsonl", items + [
      {"id": "long", "audio": str(wav), "speaker": items[0]["speaker"]}])
  settings = dict(SETTINGS, valid_fraction=0.0, test_fraction=0.0,
                  max_item_seconds=16.0)
  local, beam = str(tmp_path / "local"), tmp_path / "beam"
  preprocess_lib.run_preprocess(manifest, local, num_workers=1, **settings)
  info = beam_preprocess.run_beam_preprocess(manifest, str(beam),
                                             num_workers=1, **settings)
  assert info["pieces"]["count"] == 4 and info["pieces"]["split_items"] == 1
  assert _examples(str(beam)) == _examples(local)
  with open(os.path.join(local, output.PIECES_REPORT)) as f:
    pieces = f.read()
  assert (beam / output.PIECES_REPORT).read_text() == pieces
  # A rerun that fails (every audio gone) leaves the dataset as it was.
  before = {n: (beam / n).read_bytes() for n in os.listdir(beam)}
  gone = _write_manifest(tmp_path / "gone.jsonl", [
      dict(it, audio=str(tmp_path / "nowhere.wav")) for it in items])
  with pytest.raises(PreprocessError,
                     match="no usable training item"):
    beam_preprocess.run_beam_preprocess(gone, str(beam), num_workers=1,
                                        overwrite=True, **settings)
  after = {n: (beam / n).read_bytes() for n in os.listdir(beam)}
  assert len(after.pop(output.FAILED_REPORT).splitlines()) == 2
  after.pop(fileio.LOCK_FILE), before.pop(fileio.LOCK_FILE)
  assert after == before
