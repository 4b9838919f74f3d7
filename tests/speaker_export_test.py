"""Speaker-encoder export: a savedmodel embedder on the grid, the trained
weights, identification from the export alone."""

import json
import os

import numpy as np
import pytest

from e2s_tf import audio as audio_lib
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
