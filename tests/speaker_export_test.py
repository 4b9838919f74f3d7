"""Speaker-encoder export: a savedmodel embedder on the grid, the trained
weights, identification from the export alone; exports at a coarser hop
(the means of groups of frames) and the demo's 20 ms speaker embedder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from e2s_tf import audio as audio_lib
from e2s_tf import demo
from e2s_tf import embedders
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import spectral
from e2s_tf.speaker import export as speaker_export
from e2s_tf.speaker import identification
from e2s_tf.speaker import network
from e2s_tf.speaker import training
from e2s_tf.speaker import workdir as workdir_lib
from tests import speaker_testlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(speech_corpus, tmp_path_factory):
  """The testing config trained on the 3-speaker corpus, and its export."""
  root = tmp_path_factory.mktemp("speaker_export")
  workdir, export_dir = str(root / "work"), str(root / "export")
  training.train(speaker_testlib.config(), speech_corpus, workdir, log=id)
  meta = speaker_export.export(workdir, export_dir)
  return {"workdir": workdir, "export_dir": export_dir, "meta": meta}


@pytest.fixture(scope="module")
def waveforms(speech_corpus):
  """{id: (speaker, [samples] audio)} of the corpus."""
  stft = spectral.StftConfig()
  return {item["id"]: (item["speaker"],
                       audio_lib.load_audio(item["audio"], stft.sample_rate))
          for item in manifest_lib.read_manifest(speech_corpus)}


def test_export_is_a_savedmodel_embedder_on_the_grid(trained, waveforms):
  stft = spectral.StftConfig()
  embedder = embedders.get_embedder("savedmodel:" + trained["export_dir"], stft)
  assert embedder.dim == 64 and embedder.grid == embedders.Grid.from_stft(stft)
  item_id = sorted(waveforms)[0]
  _, audio = waveforms[item_id]
  frames = embedder.embed(audio, {"id": item_id})
  assert frames.shape == (stft.num_frames(audio.shape[0]), 64)
  assert np.all(np.isfinite(frames)) and frames.std(axis=0).mean() > 1e-3
  # The same frames as the restored in-memory model, frame for frame.
  encoder, _, _ = workdir_lib.restore_encoder(trained["workdir"])
  expected = encoder.frame_embeddings(audio[np.newaxis]).numpy()[0]
  np.testing.assert_allclose(frames, expected, atol=1e-4, rtol=1e-4)
  # A shorter cut gives as many frames as the grid says.
  cut = audio[:stft.num_samples(7) + stft.frame_step - 1]
  assert embedder.embed(cut, {"id": item_id}).shape == (7, 64)
  meta = trained["meta"]
  assert meta["speakers"] == ["spk00", "spk01", "spk02"]
  assert meta["frame_dim"] == 64 and meta["step"] == speaker_testlib.NUM_STEPS
  with open(os.path.join(trained["export_dir"],
                         speaker_export.ENCODER_JSON)) as f:
    assert json.load(f) == json.loads(json.dumps(meta))
  assert set(meta["evaluation"]) == {"step", "heldout_accuracy",
                                     "heldout_enrolment_accuracy"}


def test_export_matches_the_trained_weights(trained, waveforms):
  # The exported utterance embedding equals the in-memory one, and both
  # differ from an untrained encoder: the export holds the trained weights.
  encoder, config, _ = workdir_lib.restore_encoder(trained["workdir"])
  audio = [w for _, w in waveforms.values()][:3]
  loaded = speaker_export.load_encoder(trained["export_dir"])
  got = loaded.utterance_embeddings(audio)
  expected = np.stack([encoder(a[np.newaxis])["embedding"].numpy()[0]
                       for a in audio])
  np.testing.assert_allclose(got, expected, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(
      loaded.frame_embeddings(audio[0]),
      encoder.frame_embeddings(audio[0][np.newaxis]).numpy()[0], atol=1e-4,
      rtol=1e-4)
  fresh, _ = network.build_encoder(config)
  untrained = fresh(audio[0][np.newaxis])["embedding"].numpy()[0]
  assert np.abs(untrained - got[0]).max() > 1e-2


def test_identification_of_training_utterances_beats_chance(trained,
                                                             waveforms):
  with open(os.path.join(trained["workdir"], "speakers.json")) as f:
    train_ids = json.load(f)["train"]
  loaded = speaker_export.load_encoder(trained["export_dir"])
  assert loaded.speakers == ["spk00", "spk01", "spk02"]
  labels = [waveforms[i][0] for i in train_ids]
  embeddings = loaded.utterance_embeddings([waveforms[i][1] for i in train_ids])
  assert embeddings.shape == (9, loaded.meta["embedding_dim"])
  enrolment = identification.enroll(embeddings, labels)
  assert enrolment.labels == ["spk00", "spk01", "spk02"]
  accuracy = identification.identification_accuracy(embeddings, labels,
                                                     enrolment)
  assert accuracy > 1 / 3 + 0.2, accuracy
  # Same-speaker pairs are closer than different-speaker pairs on average.
  sims = embeddings @ embeddings.T
  same = np.equal.outer(labels, labels) & ~np.eye(len(labels), dtype=bool)
  different = ~np.equal.outer(labels, labels)
  assert sims[same].mean() > sims[different].mean()


def test_export_replaces_only_an_encoder_export(trained, tmp_path):
  # A second export replaces the first; a folder of something else only
  # with overwrite; a folder holding the workdir never.
  speaker_export.export(trained["workdir"], trained["export_dir"])
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("mine")
  with pytest.raises(fileio.FolderNotReplaceable):
    speaker_export.export(trained["workdir"], str(other))
  assert (other / "notes.txt").read_text() == "mine"
  with pytest.raises(fileio.FolderNotReplaceable):
    speaker_export.export(trained["workdir"],
                          os.path.dirname(trained["workdir"]), overwrite=True)


def test_loading_something_else_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match="export of e2s_tf.train_embedder"):
    speaker_export.load_encoder(str(tmp_path))


# Exports at a coarser hop: the means of groups of the encoder's frames.


@pytest.fixture(scope="module")
def coarse_exports(trained, tmp_path_factory):
  """The trained encoder exported every 2 and every 3 native frames:
  {factor: export_dir}."""
  root = tmp_path_factory.mktemp("speaker_export_rate")
  step = spectral.StftConfig().frame_step
  out = {}
  for factor in (2, 3):
    out[factor] = str(root / f"export_{factor}")
    speaker_export.export(trained["workdir"], out[factor],
                          frame_step=factor * step)
  return out


def test_pooled_grid_counts_the_groups_of_native_frames():
  stft = spectral.StftConfig()
  native = embedders.Grid.from_stft(stft)
  lengths = np.arange(0, 6 * stft.frame_length + 1)
  for factor in (1, 2, 3, 4):
    grid = speaker_export.pooled_grid(native, factor)
    assert grid == embedders.Grid(
        stft.sample_rate, stft.frame_length + (factor - 1) * stft.frame_step,
        factor * stft.frame_step, False)
    np.testing.assert_array_equal(grid.num_frames(lengths),
                                  native.num_frames(lengths) // factor)
    # Pooled frame k is centred on the mean of its native frames' centres.
    k = np.arange(5)
    native_centres = (np.arange(5 * factor) * native.frame_step +
                      native.frame_length / 2).reshape(5, factor).mean(1)
    np.testing.assert_allclose(k * grid.frame_step + grid.frame_length / 2,
                               native_centres)
  with pytest.raises(ValueError, match="centred"):
    speaker_export.pooled_grid(embedders.Grid(16000, 400, 160, True), 2)


def test_pool_frames_averages_groups_and_drops_the_tail():
  frames = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
  got = np.asarray(speaker_export.pool_frames(frames, 3))
  np.testing.assert_allclose(got, frames[:, :6].reshape(2, 2, 3, 3).mean(2))
  assert np.asarray(speaker_export.pool_frames(frames[:, :2], 3)).shape == (
      2, 0, 3)
  assert speaker_export.pool_frames(frames, 1) is frames


def test_export_at_twice_the_hop_is_a_20ms_embedder(trained, coarse_exports,
                                                    waveforms):
  stft = spectral.StftConfig()
  export_dir = coarse_exports[2]
  embedder = embedders.get_embedder("savedmodel:" + export_dir, stft)
  assert embedder.dim == 64
  assert embedder.grid == embedders.Grid(
      stft.sample_rate, stft.frame_length + stft.frame_step,
      2 * stft.frame_step, False)
  assert embedder.grid.frame_step * 1000 // stft.sample_rate == 20
  with open(os.path.join(export_dir, speaker_export.ENCODER_JSON)) as f:
    meta = json.load(f)
  assert meta["export_frame_step"] == 2 * stft.frame_step
  assert meta["pooled_frames"] == 2
  assert meta["grid"] == embedder.grid.to_dict()
  assert meta["native_grid"] == embedders.Grid.from_stft(stft).to_dict()
  # The native export records its own hop.
  assert trained["meta"]["export_frame_step"] == stft.frame_step
  assert trained["meta"]["pooled_frames"] == 1
  assert trained["meta"]["grid"] == trained["meta"]["native_grid"]


@pytest.mark.parametrize("factor", [2, 3])
def test_pooled_frames_are_means_of_native_frames(trained, coarse_exports,
                                                  waveforms, factor):
  stft = spectral.StftConfig()
  native = embedders.get_embedder("savedmodel:" + trained["export_dir"], stft)
  coarse = embedders.get_embedder("savedmodel:" + coarse_exports[factor],
                                  stft)
  for item_id in sorted(waveforms)[:2]:
    _, audio = waveforms[item_id]
    frames = native.embed(audio, {"id": item_id})
    pooled = coarse.embed(audio, {"id": item_id})
    groups = frames.shape[0] // factor
    assert pooled.shape == (groups, 64) and groups > 10
    expected = frames[:groups * factor].reshape(groups, factor, 64).mean(1)
    np.testing.assert_allclose(pooled, expected, atol=1e-5, rtol=1e-5)
    assert np.abs(pooled[:-1] - pooled[1:]).max() > 1e-3


def test_frame_counts_follow_the_declared_grid(trained, coarse_exports,
                                               waveforms):
  stft = spectral.StftConfig()
  _, audio = waveforms[sorted(waveforms)[0]]
  h, l = stft.frame_step, stft.frame_length
  lengths = sorted({0, 1, l - 1, l, l + 1, l + h - 1, l + h, l + h + 1,
                    l + 2 * h - 1, l + 2 * h, l + 3 * h - 1, l + 3 * h,
                    l + 5 * h + 7, 4000, 4001, 8000 + 3})
  for export_dir in [trained["export_dir"], *coarse_exports.values()]:
    embedder = embedders.get_embedder("savedmodel:" + export_dir, stft)
    for n in lengths:
      frames = embedder.embed(audio[:n], {"id": f"cut{n}"})
      assert frames.shape == (embedder.grid.num_frames(n), 64), (export_dir, n)


def test_loaded_coarse_export_pools_frames_but_not_utterances(
    trained, coarse_exports, waveforms):
  native = speaker_export.load_encoder(trained["export_dir"])
  coarse = speaker_export.load_encoder(coarse_exports[2])
  assert coarse.grid.frame_step == 2 * native.grid.frame_step
  audio = [w for _, w in waveforms.values()][:2]
  frames = native.frame_embeddings(audio[0])
  groups = frames.shape[0] // 2
  np.testing.assert_allclose(
      coarse.frame_embeddings(audio[0]),
      frames[:2 * groups].reshape(groups, 2, -1).mean(1), atol=1e-5)
  np.testing.assert_allclose(coarse.utterance_embeddings(audio),
                             native.utterance_embeddings(audio), atol=1e-6)


@pytest.mark.parametrize("frame_step", [240, 80, 0, -320, 161])
def test_a_hop_that_is_no_multiple_is_refused(trained, tmp_path, frame_step):
  target = tmp_path / "export"
  with pytest.raises(ValueError, match="not a multiple of the speaker "
                     "encoder's hop of 160 samples"):
    speaker_export.export(trained["workdir"], str(target),
                          frame_step=frame_step)
  assert not target.exists()


def test_pooling_factor():
  assert speaker_export.pooling_factor(160, None) == 1
  assert speaker_export.pooling_factor(160, 160) == 1
  assert speaker_export.pooling_factor(160, 320) == 2
  assert speaker_export.pooling_factor(160, np.int64(480)) == 3
  with pytest.raises(ValueError, match="integer number of samples"):
    speaker_export.pooling_factor(160, 320.0)


def test_demo_trains_and_exports_the_20ms_speaker_embedder(tmp_path):
  d, manifest = str(tmp_path / "demo"), str(tmp_path / "m.jsonl")
  for embedder in ("logmel", "mfcc", "npy", "savedmodel:/x/export"):
    assert demo.encoder_stage(embedder, d, manifest, "py") is None
  workdir = os.path.join(d, "speaker_encoder")
  ten = demo.encoder_stage("speaker", d, manifest, "py")
  export = os.path.join(workdir, "export")
  # The 10 ms embedder as before this option (its stamps stay valid).
  assert ten == demo.EncoderStage(
      "speaker_encoder",
      ["py", "-m", "e2s_tf.train_embedder", f"--manifest={manifest}",
       f"--workdir={workdir}", f"--export_dir={export}"],
      export, "savedmodel:" + export)
  twenty = demo.encoder_stage("speaker20ms", d, manifest, "py")
  export = os.path.join(workdir, "export_20ms")
  assert twenty == demo.EncoderStage(
      "speaker_encoder_20ms",
      ["py", "-m", "e2s_tf.train_embedder", f"--manifest={manifest}",
       f"--workdir={workdir}", f"--export_dir={export}",
       "--export_frame_step=320"],
      export, "savedmodel:" + export)
  assert demo.encoder_stage("speaker20ms", d, manifest, "py",
                            sample_rate=8000).command[-1] == (
                                "--export_frame_step=160")
  with pytest.raises(ValueError, match="no whole number of samples"):
    demo.encoder_stage("speaker20ms", d, manifest, "py", sample_rate=11025)
  for embedder in ("speaker", "speaker20ms"):
    assert demo.default_split_by("", embedder, "", "speaker_dirs") == (
        "utterance")
  assert demo.default_split_by("", "logmel", "", "speaker_dirs") == "speaker"
  assert demo.default_split_by("", "logmel", "a", "flat") == "utterance"
  assert demo.default_split_by("speaker", "speaker20ms", "", "flat") == (
      "speaker")


def test_cli_refuses_a_hop_that_is_no_multiple_before_training(
    speech_corpus, tmp_path):
  workdir = tmp_path / "work"
  run = subprocess.run(
      [sys.executable, "-m", "e2s_tf.train_embedder",
       f"--manifest={speech_corpus}", f"--workdir={workdir}",
       "--config=speaker_encoder:testing", "--export_frame_step=240"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode != 0
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("train_embedder: error: export frame_step=240 is "
                         "not a multiple of the speaker encoder's hop of 160 "
                         "samples"), run.stderr[-3000:]
  assert not workdir.exists()
