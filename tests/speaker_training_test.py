"""Speaker-encoder training: the loop, resume, the workdir lock, the
NaN / divergence stop, the program."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf.speaker import network
from e2s_tf.speaker import sampling
from e2s_tf.speaker import training
from e2s_tf.speaker import workdir as workdir_lib
from e2s_tf.training import checkpoints
from e2s_tf.training import schedule
from e2s_tf.training.errors import TrainingError
from tests import speaker_testlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = speaker_testlib.NUM_STEPS
_config = speaker_testlib.config


@pytest.fixture(scope="module")
def trained(speech_corpus, tmp_path_factory):
  """The testing config trained on the 3-speaker corpus."""
  workdir = str(tmp_path_factory.mktemp("speaker_training") / "work")
  lines = []
  result = training.train(_config(), speech_corpus, workdir, log=lines.append)
  return {"workdir": workdir, "result": result, "lines": lines}


def _events(logdir):
  """{tag: {step: value}} of a TensorBoard folder (scalars and text)."""
  out = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tensor = tf.make_ndarray(value.tensor) if value.HasField(
            "tensor") else value.simple_value
        out.setdefault(value.tag, {})[event.step] = tensor
  return out


def _checkpoint_dir(workdir):
  return os.path.join(workdir, "checkpoints")


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
  ckpts = tf.train.get_checkpoint_state(_checkpoint_dir(workdir))
  assert [os.path.basename(p) for p in ckpts.all_model_checkpoint_paths] == [
      "ckpt-20", "ckpt-30"]
  events = _events(os.path.join(workdir, "train"))
  assert {"losses/am_softmax", "metrics/accuracy", "learning_rate",
          "config"} <= set(events)
  heldout = _events(os.path.join(workdir, "heldout"))
  assert {"metrics/accuracy", "metrics/heldout_enrolment_accuracy"} <= set(
      heldout)
  assert any("steps/s" in line and "left" in line for line in trained["lines"])
  for key in ("heldout_accuracy", "heldout_enrolment_accuracy"):
    assert 0.0 <= result[key] <= 1.0
  with open(os.path.join(workdir, "evaluation.json")) as f:
    assert json.load(f) == {k: result[k] for k in (
        "step", "heldout_accuracy", "heldout_enrolment_accuracy")}
  # config.json is the run's config, read back whole.
  assert workdir_lib.load_config(workdir).to_dict() == json.loads(
      json.dumps(_config().to_dict(), default=list))
  assert os.path.exists(os.path.join(workdir, fileio.LOCK_FILE))


def test_learning_rate_follows_the_shared_schedule(trained):
  # Linear warm-up then cosine decay (training.schedule), at every log step.
  t = _config().train
  expected = schedule.learning_rate(t, t.learning_rate)
  logged = _events(os.path.join(trained["workdir"], "train"))["learning_rate"]
  assert sorted(logged) == list(range(5, 31, 5))
  for step, value in logged.items():
    assert float(value) == pytest.approx(float(expected(step)), rel=1e-6)
  assert float(expected(0)) == pytest.approx(t.learning_rate / 3)
  assert float(expected(NUM_STEPS)) == pytest.approx(
      t.learning_rate * t.final_lr_fraction)


def test_three_steps_then_three_equal_six_straight(speech_corpus, tmp_path):
  # Every variable of the checkpoint (weights, batch-norm statistics, Adam
  # moments, step) is the same as in a straight run, to the bit.
  config = _config(**{"train.num_steps": 6})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  training.train(config, speech_corpus, straight, log=id)
  training.train(config, speech_corpus, resumed, log=id, stop_at_step=3)
  assert os.path.basename(tf.train.latest_checkpoint(
      _checkpoint_dir(resumed))) == "ckpt-3"
  lines = []
  training.train(config, speech_corpus, resumed, log=lines.append)
  assert any("resumed" in line and "at step 3" in line for line in lines)
  a = speaker_testlib.checkpoint_values(straight)
  b = speaker_testlib.checkpoint_values(resumed)
  assert sorted(a) == sorted(b)
  assert any(k.startswith("weights/") for k in a) and any(
      k.startswith("head/") for k in a) and any(
          k.startswith("optimizer/") for k in a)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  fresh, _ = network.build_encoder(config)
  trained_encoder, _, _ = workdir_lib.restore_encoder(resumed)
  assert max(float(np.abs(x.numpy() - y.numpy()).max()) for x, y in zip(
      fresh.weights, trained_encoder.weights)) > 1e-3  # training happened


def test_resume_continues_at_the_saved_step(trained, speech_corpus, tmp_path):
  workdir = str(tmp_path / "w")
  training.train(_config(), speech_corpus, workdir, log=id, stop_at_step=15)
  assert os.path.basename(tf.train.latest_checkpoint(
      _checkpoint_dir(workdir))) == "ckpt-15"
  lines = []
  result = training.train(_config(), speech_corpus, workdir, log=lines.append)
  assert any("resumed" in line and "step 15" in line for line in lines)
  assert [h["step"] for h in result["history"]] == [20, 25, 30]
  # Batches are a function of (seed, step): the same weights as straight.
  a = speaker_testlib.checkpoint_values(trained["workdir"])
  b = speaker_testlib.checkpoint_values(workdir)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_resume_with_another_model_or_speakers_changes_nothing(
    trained, speech_corpus, tmp_path):
  workdir = trained["workdir"]
  before = {name: speaker_testlib.files(os.path.join(workdir, name))
            for name in ("checkpoints",)}
  with open(os.path.join(workdir, "config.json"), "rb") as f:
    config_json = f.read()
  with open(os.path.join(workdir, "speakers.json"), "rb") as f:
    speakers_json = f.read()
  with pytest.raises(TrainingError,
                     match=r"cannot resume .* \(at ckpt-30\): its model config "
                     r"differs: model.embedding_dim 16 in the workdir, 8 now\. "
                     r".*nothing in the workdir was changed"):
    training.train(_config(**{"model.embedding_dim": 8}), speech_corpus,
                   workdir, log=id)
  items = [it for it in manifest_lib.read_manifest(speech_corpus)
           if it["speaker"] != "spk02"]
  manifest = str(tmp_path / "two_speakers.jsonl")
  manifest_lib.write_manifest(items, manifest)
  with pytest.raises(TrainingError,
                     match=r"trained on speakers \['spk00', 'spk01', 'spk02'\]"
                     r"; the manifest has \['spk00', 'spk01'\]"):
    training.train(_config(), manifest, workdir, log=id)
  assert {name: speaker_testlib.files(os.path.join(workdir, name))
          for name in ("checkpoints",)} == before
  with open(os.path.join(workdir, "config.json"), "rb") as f:
    assert f.read() == config_json
  with open(os.path.join(workdir, "speakers.json"), "rb") as f:
    assert f.read() == speakers_json


def test_a_second_run_into_a_workdir_in_use_fails_at_once(
    speech_corpus, tmp_path, monkeypatch):
  workdir = tmp_path / "w"
  # The first run holds the lock; the second neither loads audio nor writes.
  with fileio.FolderLock(str(workdir), "train_embedder"):
    def no_loading(*args, **kwargs):
      raise AssertionError("the second run loaded the manifest")

    with monkeypatch.context() as patch:
      patch.setattr(sampling, "load_utterances", no_loading)
      with pytest.raises(fileio.FolderInUse,
                         match=f"in use by another run \\(train_embedder, "
                         f"pid {os.getpid()} on"):
        training.train(_config(), speech_corpus, str(workdir), log=id)
    # The program says so in one line.
    run = subprocess.run(
        [sys.executable, "-m", "e2s_tf.train_embedder",
         f"--manifest={speech_corpus}", f"--workdir={workdir}",
         "--config=speaker_encoder:testing"], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert run.returncode == 1, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("train_embedder: error: ") and (
        f"(train_embedder, pid {os.getpid()} on") in last, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert sorted(os.listdir(workdir)) == [fileio.LOCK_FILE]
  # Once released, a run takes the workdir.
  out = training.train(_config(**{"train.num_steps": 2}), speech_corpus,
                       str(workdir), log=id)
  assert out["step"] == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    speech_corpus, tmp_path):
  workdir = str(tmp_path / "w")
  training.train(_config(**{"train.num_steps": 10}), speech_corpus, workdir,
                 log=id)
  good = speaker_testlib.files(_checkpoint_dir(workdir))
  # An update that makes the weights (or the loss) non-finite.
  config = _config(**{"train.learning_rate": 1e30, "train.clip_norm": 0.0,
                      "train.lr_warmup_steps": 0, "train.checkpoint_every": 1,
                      "train.num_steps": 40})
  with pytest.raises(TrainingError,
                     match=r"non-finite loss.*ckpt-10\) is kept"):
    training.train(config, speech_corpus, workdir, log=id)
  assert speaker_testlib.files(_checkpoint_dir(workdir)) == good
  encoder, _, _ = workdir_lib.restore_encoder(workdir)
  assert all(np.all(np.isfinite(w.numpy())) for w in encoder.weights)


def test_finite_divergence_stops_and_keeps_the_last_good_checkpoint(
    trained, speech_corpus, tmp_path):
  # The normal run was never taken for a divergence: every checkpoint was
  # written.
  assert not any("not written" in l or "diverged" in l
                 for l in trained["lines"])
  workdir = str(tmp_path / "w")
  shutil.copytree(trained["workdir"], workdir)
  good = speaker_testlib.files(_checkpoint_dir(workdir))
  # The same run resumed, logging every step, with a learning rate that
  # scrambles the weights but keeps the loss finite.
  lines = []
  with pytest.raises(TrainingError,
                     match=r"training diverged at step \d+: loss .* vs median "
                     r".*ckpt-30\) is kept: lower train.learning_rate") as e:
    training.train(_config(**{"train.log_every": 1,
                              "train.checkpoint_every": 2,
                              "train.eval_every": 1000,
                              "train.divergence_factor": 2.0,
                              "train.num_steps": 60,
                              "train.learning_rate": 1e3}),
                   speech_corpus, workdir, log=lines.append)
  step = int(str(e.value).split("step ")[1].split(":")[0])
  assert NUM_STEPS < step < 60
  assert any("not written" in l for l in lines)  # its weights were bad
  # The checkpoints are those of the good run, byte for byte.
  assert speaker_testlib.files(_checkpoint_dir(workdir)) == good


def test_a_checkpoint_of_the_older_layout_resumes_and_exports(speech_corpus,
                                                              tmp_path):
  # Runs of earlier versions checkpointed the object graph (encoder, head,
  # optimizer, step): their workdirs still export and resume.
  config = _config(**{"train.num_steps": 4})
  workdir = str(tmp_path / "old")
  training.train(config, speech_corpus, workdir, log=id, stop_at_step=2)
  restored = workdir_lib.restore_trained(workdir)
  head = network.AdditiveMarginHead(3, name="am_softmax_head")
  head(tf.zeros([1, config.model.embedding_dim]))
  old_dir = str(tmp_path / "old_layout")
  optimizer = schedule.adam(config.train, config.train.learning_rate,
                            weight_decay=config.train.weight_decay)
  optimizer.build(restored.encoder.trainable_variables +
                  head.trainable_variables)
  legacy = tf.train.Checkpoint(encoder=restored.encoder, head=head,
                               optimizer=optimizer,
                               step=tf.Variable(2, dtype=tf.int64))
  tf.train.CheckpointManager(legacy, old_dir, 2).save(checkpoint_number=2)
  for name in os.listdir(_checkpoint_dir(workdir)):
    os.remove(os.path.join(_checkpoint_dir(workdir), name))
  for name in os.listdir(old_dir):
    os.replace(os.path.join(old_dir, name),
               os.path.join(_checkpoint_dir(workdir), name))
  latest = tf.train.latest_checkpoint(_checkpoint_dir(workdir))
  assert workdir_lib.is_legacy(latest)
  again, _, _ = workdir_lib.restore_encoder(workdir)
  for a, b in zip(restored.encoder.weights, again.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  lines = []
  training.train(config, speech_corpus, workdir, log=lines.append)
  assert any("resumed from" in l and "at step 2" in l for l in lines)
  latest = tf.train.latest_checkpoint(_checkpoint_dir(workdir))
  assert latest.endswith("ckpt-4") and not workdir_lib.is_legacy(latest)
  assert checkpoints.has(latest, "weights") and checkpoints.has(latest, "head")


def test_manifest_without_speakers_is_refused(tmp_path, speech_corpus):
  items = manifest_lib.read_manifest(speech_corpus)
  del items[2]["speaker"]
  manifest = str(tmp_path / "manifest.jsonl")
  manifest_lib.write_manifest(items, manifest)
  with pytest.raises(manifest_lib.ManifestError, match=items[2]["id"]):
    training.train(_config(), manifest, str(tmp_path / "w"), log=id)


def test_config_errors_are_refused_before_the_workdir_is_made(speech_corpus,
                                                              tmp_path):
  with pytest.raises(TrainingError, match="runs on one device only"):
    c = _config()
    c.distribution = "mirrored"
    training.train(c, speech_corpus, str(tmp_path / "a"), log=id)
  with pytest.raises(ValueError, match="shorter than one frame"):
    training.train(_config(**{"data.crop_seconds": 0.01}), speech_corpus,
                   str(tmp_path / "b"), log=id)
  assert not os.listdir(tmp_path)


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
