"""Speaker encoder: training, resume, export as an embedder, identification."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf.configs import speaker_encoder as encoder_config
from e2s_tf import audio as audio_lib
from e2s_tf import embedders
from e2s_tf import manifest as manifest_lib
from e2s_tf import spectral
from e2s_tf import speaker_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 30


def _config(**overrides):
  config = encoder_config.get_config("testing")
  config.train.num_steps = NUM_STEPS
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.fixture(scope="module")
def trained(speech_corpus, tmp_path_factory):
  """The testing config trained on the 3-speaker corpus, and its export."""
  root = tmp_path_factory.mktemp("speaker_encoder")
  workdir, export_dir = str(root / "work"), str(root / "export")
  lines = []
  result = speaker_encoder.train(_config(), speech_corpus, workdir,
                                 log=lines.append)
  meta = speaker_encoder.export(workdir, export_dir)
  return {"workdir": workdir, "export_dir": export_dir, "result": result,
          "meta": meta, "lines": lines}


@pytest.fixture(scope="module")
def waveforms(speech_corpus):
  """{id: (speaker, [samples] audio)} of the corpus."""
  stft = spectral.StftConfig()
  return {item["id"]: (item["speaker"],
                       audio_lib.load_audio(item["audio"], stft.sample_rate))
          for item in manifest_lib.read_manifest(speech_corpus)}


def _tags(logdir):
  tags = set()
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


def test_training_lowers_the_loss_and_writes_the_workdir(trained):
  result, workdir = trained["result"], trained["workdir"]
  losses = [h["loss"] for h in result["history"]]
  assert [h["step"] for h in result["history"]] == list(range(5, 31, 5))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
  assert result["step"] == NUM_STEPS
  with open(os.path.join(workdir, "speakers.json")) as f:
    split = json.load(f)
  assert split["speakers"] == ["spk00", "spk01", "spk02"]
  # 4 utterances per speaker, round(0.2 * 4) = 1 held out of each.
  assert len(split["train"]) == 9 and len(split["heldout"]) == 3
  assert not set(split["train"]) & set(split["heldout"])
  assert {i[:5] for i in split["heldout"]} == set(split["speakers"])
  ckpts = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
  assert [os.path.basename(p) for p in ckpts.all_model_checkpoint_paths] == [
      "ckpt-20", "ckpt-30"]
  assert {"losses/am_softmax", "metrics/accuracy", "learning_rate",
          "config"} <= _tags(os.path.join(workdir, "train"))
  assert {"metrics/accuracy", "metrics/heldout_enrolment_accuracy"} <= _tags(
      os.path.join(workdir, "heldout"))
  assert any("steps/s" in line and "left" in line for line in trained["lines"])
  for key in ("heldout_accuracy", "heldout_enrolment_accuracy"):
    assert 0.0 <= result[key] <= 1.0


def test_checkpoint_holds_every_encoder_weight(tmp_path):
  # Layers kept in lists must reach the checkpoint (Keras 3 + tf.train).
  config = _config()
  first, _ = speaker_encoder.build_encoder(config)
  path = tf.train.Checkpoint(encoder=first).save(str(tmp_path / "ckpt"))
  second, _ = speaker_encoder.build_encoder(config)
  tf.train.Checkpoint(encoder=second).restore(path).assert_consumed()
  assert len(first.weights) == len(second.weights) > 10
  for a, b in zip(first.weights, second.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_export_is_a_savedmodel_embedder_on_the_grid(trained, waveforms):
  stft = spectral.StftConfig()
  embedder = embedders.get_embedder("savedmodel:" + trained["export_dir"], stft)
  assert embedder.dim == 64 and embedder.grid.aligned_with(stft)
  item_id = sorted(waveforms)[0]
  _, audio = waveforms[item_id]
  frames = embedder.embed(audio, {"id": item_id})
  assert frames.shape == (stft.num_frames(audio.shape[0]), 64)
  assert np.all(np.isfinite(frames)) and frames.std(axis=0).mean() > 1e-3
  # The same frames as the restored in-memory model, frame for frame.
  encoder, _, _ = speaker_encoder.restore_encoder(trained["workdir"])
  expected = encoder.frame_embeddings(audio[np.newaxis]).numpy()[0]
  np.testing.assert_allclose(frames, expected, atol=1e-4, rtol=1e-4)
  # A shorter cut gives as many frames as the grid says.
  cut = audio[:stft.num_samples(7) + stft.frame_step - 1]
  assert embedder.embed(cut, {"id": item_id}).shape == (7, 64)
  meta = trained["meta"]
  assert meta["speakers"] == ["spk00", "spk01", "spk02"]
  assert meta["frame_dim"] == 64 and meta["step"] == NUM_STEPS


def test_export_matches_the_trained_weights(trained, waveforms):
  # The exported utterance embedding equals the in-memory one, and both
  # differ from an untrained encoder: the export holds the trained weights.
  encoder, config, _ = speaker_encoder.restore_encoder(trained["workdir"])
  audio = [w for _, w in waveforms.values()][:3]
  loaded = speaker_encoder.load_encoder(trained["export_dir"])
  got = loaded.utterance_embeddings(audio)
  expected = np.stack([encoder(a[np.newaxis])["embedding"].numpy()[0]
                       for a in audio])
  np.testing.assert_allclose(got, expected, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)
  fresh, _ = speaker_encoder.build_encoder(config)
  untrained = fresh(audio[0][np.newaxis])["embedding"].numpy()[0]
  assert np.abs(untrained - got[0]).max() > 1e-2


def test_resume_continues_at_the_saved_step(trained, speech_corpus, tmp_path):
  workdir = str(tmp_path / "w")
  speaker_encoder.train(_config(), speech_corpus, workdir, log=id,
                        stop_at_step=15)
  assert os.path.basename(tf.train.latest_checkpoint(
      os.path.join(workdir, "checkpoints"))) == "ckpt-15"
  lines = []
  result = speaker_encoder.train(_config(), speech_corpus, workdir,
                                 log=lines.append)
  assert any("resumed" in line and "step 15" in line for line in lines)
  assert [h["step"] for h in result["history"]] == [20, 25, 30]
  # Batches are a function of (seed, step): the same weights as straight.
  a, _, _ = speaker_encoder.restore_encoder(trained["workdir"])
  b, _, _ = speaker_encoder.restore_encoder(workdir)
  for x, y in zip(a.weights, b.weights):
    np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-4, rtol=1e-3)


def test_resume_refuses_another_model(trained, speech_corpus):
  with pytest.raises(ValueError, match="another model config"):
    speaker_encoder.train(_config(**{"model.embedding_dim": 8}), speech_corpus,
                          trained["workdir"], log=id)


def test_identification_of_training_utterances_beats_chance(trained,
                                                             waveforms):
  with open(os.path.join(trained["workdir"], "speakers.json")) as f:
    train_ids = json.load(f)["train"]
  loaded = speaker_encoder.load_encoder(trained["export_dir"])
  labels = [waveforms[i][0] for i in train_ids]
  embeddings = loaded.utterance_embeddings([waveforms[i][1] for i in train_ids])
  assert embeddings.shape == (9, loaded.meta["embedding_dim"])
  enrolment = speaker_encoder.enroll(embeddings, labels)
  assert enrolment.labels == ["spk00", "spk01", "spk02"]
  accuracy = speaker_encoder.identification_accuracy(embeddings, labels,
                                                     enrolment)
  assert accuracy > 1 / 3 + 0.2, accuracy
  # Same-speaker pairs are closer than different-speaker pairs on average.
  sims = embeddings @ embeddings.T
  same = np.equal.outer(labels, labels) & ~np.eye(len(labels), dtype=bool)
  different = ~np.equal.outer(labels, labels)
  assert sims[same].mean() > sims[different].mean()


def test_enroll_identify_and_cosine():
  embeddings = np.array([[1.0, 0.1], [2.0, -0.2], [0.0, 1.0], [0.1, 3.0]])
  enrolment = speaker_encoder.enroll(embeddings, ["b", "b", "a", "a"])
  assert enrolment.labels == ["a", "b"]
  np.testing.assert_allclose(np.linalg.norm(enrolment.centroids, axis=1), 1.0)
  np.testing.assert_allclose(enrolment.centroids[1], [1.0, 0.0], atol=1e-12)
  assert speaker_encoder.identify([[3.0, 1.0], [-0.2, 1.0]], enrolment) == [
      "b", "a"]
  assert speaker_encoder.identification_accuracy(
      [[3.0, 1.0], [-0.2, 1.0]], ["a", "a"], enrolment) == 0.5
  got = speaker_encoder.cosine([[1.0, 0.0], [1.0, 1.0]],
                               [[2.0, 0.0], [0.0, 5.0]])
  np.testing.assert_allclose(got, [1.0, np.sqrt(0.5)])
  assert speaker_encoder.cosine([3.0, 4.0], [-3.0, -4.0]) == pytest.approx(-1.0)
  with pytest.raises(ValueError, match="N labels"):
    speaker_encoder.enroll(embeddings, ["a"])


def test_split_is_per_speaker_and_deterministic():
  utterances = [speaker_encoder.Utterance(f"{s}_{i}", s, np.zeros(1))
                for s in ("x", "y") for i in range(10)] + [
                    speaker_encoder.Utterance("z_0", "z", np.zeros(1))]
  train, heldout = speaker_encoder.split_utterances(utterances, 0.3, seed=1)
  again = speaker_encoder.split_utterances(utterances[::-1], 0.3, seed=1)
  assert [u.id for u in heldout] == [u.id for u in again[1]]
  count = {s: sum(u.speaker == s for u in heldout) for s in "xyz"}
  assert count == {"x": 3, "y": 3, "z": 0}  # z keeps its only utterance
  assert len(train) == 15
  other = speaker_encoder.split_utterances(utterances, 0.3, seed=2)[1]
  assert [u.id for u in other] != [u.id for u in heldout]
  train, heldout = speaker_encoder.split_utterances(
      utterances, 0.0, seed=0, heldout_ids=["x_1", "y_2"])
  assert [u.id for u in heldout] == ["x_1", "y_2"]
  with pytest.raises(ValueError, match=r"speakers \['z'\] have no training"):
    speaker_encoder.split_utterances(utterances, 0.0, 0, heldout_ids=["z_0"])
  with pytest.raises(ValueError, match="not among the usable items"):
    speaker_encoder.split_utterances(utterances, 0.0, 0, heldout_ids=["q"])


def test_crops_are_a_function_of_the_step():
  utterances = [speaker_encoder.Utterance("a", "a", np.arange(100.0)),
                speaker_encoder.Utterance("b", "b", -np.arange(1, 31.0))]
  data = encoder_config.get_config("testing").data
  data.gain_db, data.noise_probability = 0.0, 0.0
  sampler = speaker_encoder.CropSampler(utterances, [0, 1], 40, 16, data, 3)
  waves, labels = sampler.batch(7)
  np.testing.assert_array_equal(sampler.batch(7)[0], waves)
  assert not np.array_equal(sampler.batch(8)[0], waves)
  assert set(labels.tolist()) == {0, 1}
  for wave, label in zip(waves, labels):
    if label == 0:  # a contiguous crop of the ramp
      np.testing.assert_array_equal(np.diff(wave), 1.0)
    else:  # the 30-sample utterance, tiled to 40
      assert set(wave.tolist()) <= set(range(-30, 0))


def test_front_end_frames_follow_the_grid():
  stft = spectral.StftConfig()
  encoder, _ = speaker_encoder.build_encoder(_config())
  for samples in (stft.frame_length, stft.num_samples(5) + 17, 4000):
    frames = encoder.frame_embeddings(tf.zeros([2, samples]) + 0.01).numpy()
    assert frames.shape == (2, stft.num_frames(samples), 64)
  with pytest.raises(ValueError, match="shorter than one frame"):
    speaker_encoder.embed_utterances(lambda w: w, [np.zeros(10)], stft)


def test_manifest_without_speakers_is_refused(tmp_path, speech_corpus):
  items = manifest_lib.read_manifest(speech_corpus)
  del items[2]["speaker"]
  manifest = str(tmp_path / "manifest.jsonl")
  manifest_lib.write_manifest(items, manifest)
  with pytest.raises(manifest_lib.ManifestError, match=items[2]["id"]):
    speaker_encoder.train(_config(), manifest, str(tmp_path / "w"), log=id)


def test_config_variants():
  default = encoder_config.get_config()
  assert default.model.bottleneck_dim == 64
  assert spectral.StftConfig.from_dict(default.stft.to_dict()) == (
      spectral.StftConfig())
  with pytest.raises(ValueError, match="unknown speaker_encoder config"):
    encoder_config.get_config("huge")


def test_cli_trains_and_exports(speech_corpus, tmp_path):
  workdir = tmp_path / "cli"
  cmd = [sys.executable, "-m", "e2s_tf.train_embedder",
         f"--manifest={speech_corpus}", f"--workdir={workdir}",
         "--config=configs/speaker_encoder.py:testing",
         "--config.train.num_steps=2"]
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "done: step 2" in run.stdout and "savedmodel:" in run.stdout
  assert os.path.isfile(workdir / "export" / "e2s_embedder.json")
