"""Training, resume, NaN stop, summaries, profiling, export and reload."""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from e2s_tf.configs import testing as testing_config
from e2s_tf import export_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import train_lib
from e2s_tf.models import prior as prior_lib
from e2s_tf.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("cnn", "multiscale", "gan", "conformer", "conformer_gan")


@pytest.fixture(scope="module")
def data_dir(speech_data):
  return speech_data


def _config(model, **overrides):
  config = testing_config.get_config(model)
  config.data.deterministic = True
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def _tags(logdir):
  tags = set()
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add(value.tag)
  return tags


def _weights(model):
  return [v.numpy() for v in model.network.weights]


@pytest.mark.parametrize("model", MODELS)
def test_trains_checkpoints_and_writes_summaries(model, data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  lines = []
  out = train_lib.train(_config(model), data_dir, workdir, log=lines.append)
  assert all(np.isfinite(v) for v in out.values())
  assert "valid_lsd_db" in out and out["valid_lsd_db"] > 0
  ckpts = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
  # Every 3 steps of 6, keeping 2.
  assert [os.path.basename(p) for p in ckpts.all_model_checkpoint_paths] == [
      "ckpt-3", "ckpt-6"]
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["model"]["name"] == model and saved["data"]["embedding_dim"] == 64
  train_tags = _tags(os.path.join(workdir, "train"))
  assert {"losses/loss", "learning_rate", "steps_per_sec", "config"} <= train_tags
  valid_tags = _tags(os.path.join(workdir, "valid"))
  assert {"losses/loss", "metrics/lsd_db", "spectrogram/0", "spectrogram/1",
          "griffin_lim/0"} <= valid_tags
  assert any("steps/s" in l and "left" in l for l in lines)
  if model in ("gan", "conformer_gan"):
    assert {"losses/d_loss", "losses/g_adversarial"} & train_tags


def _resume_config(model, **overrides):
  # The default dropout stays on: its masks are random state to resume.
  return _config(model, **{"train.num_steps": 10, "train.checkpoint_every": 5,
                           "train.eval_every": 100, "train.log_every": 5,
                           **overrides})


def _max_difference(workdir_a, workdir_b):
  a, _, _ = train_lib.restore_network(workdir_a)
  b, _, _ = train_lib.restore_network(workdir_b)
  return max(float(np.abs(x.numpy() - y.numpy()).max())
             for x, y in zip(a.weights, b.weights))


@pytest.mark.parametrize("model", MODELS)
def test_resume_matches_a_straight_run(model, data_dir, tmp_path):
  config = _resume_config(model)
  assert config.model.dropout > 0
  assert config.model.dropout == testing_config.get_config(model).model.dropout
  straight = str(tmp_path / "straight")
  train_lib.train(_resume_config(model), data_dir, straight, log=id)
  resumed = str(tmp_path / "resumed")
  train_lib.train(_resume_config(model), data_dir, resumed, log=id,
                  stop_at_step=5)
  lines = []
  train_lib.train(_resume_config(model), data_dir, resumed,
                  log=lines.append)
  assert any("resumed" in l and "step 5" in l for l in lines)
  assert not any("random state" in l for l in lines)
  # The dropout state is in the checkpoint, so the resumed run draws the
  # masks of the straight one: the same weights up to float noise.
  latest = tf.train.latest_checkpoint(os.path.join(resumed, "checkpoints"))
  assert any(name.startswith("random/")
             for name, _ in tf.train.list_variables(latest))
  assert _max_difference(straight, resumed) <= 1e-6
  # And the weights did move: training happened.
  a, _, _ = train_lib.restore_network(straight)
  fresh = train_lib.build_model(*_resolved(model, data_dir))
  moved = [np.abs(x.numpy() - y.numpy()).max()
           for x, y in zip(a.weights, fresh.network.weights)]
  assert max(moved) > 1e-3


def _files(workdir):
  """{relative path: bytes} of every file of a workdir but its lock."""
  out = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      if name != ".e2s.lock":
        with open(path, "rb") as f:
          out[os.path.relpath(path, workdir)] = f.read()
  return out


def test_resume_with_other_data_or_model_changes_nothing(data_dir, tmp_path):
  from tests import data_testlib  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "w")
  train_lib.train(_config("cnn", **{"train.num_steps": 3,
                                    "train.eval_every": 100}),
                  data_dir, workdir, log=id)
  before = _files(workdir)
  assert {"config.json", "dataset_info.json",
          "checkpoints/ckpt-3.index"} <= set(before)
  # Data of another embedder (an mfcc-like 20-dimensional one).
  other = data_testlib.write_tiny_dataset(
      tmp_path / "other", {"train": [30, 40, 50], "valid": [30]}, dim=20,
      bins=257)
  resume = _config("cnn", **{"train.num_steps": 6, "train.eval_every": 100})
  with pytest.raises(train_lib.TrainingError,
                     match=r"trained on logmel dim 64; this data_dir \(.*\) "
                     r"has tiny dim 20"):
    train_lib.train(resume, other.data_dir, workdir, log=id)
  assert _files(workdir) == before
  # Another model size on the same data.
  bigger = _config("cnn", **{"train.num_steps": 6, "model.channels": 32})
  with pytest.raises(train_lib.TrainingError,
                     match="model.channels 16 in the workdir, 32 now"):
    train_lib.train(bigger, data_dir, workdir, log=id)
  assert _files(workdir) == before
  # The run still exports and resumes with its own data and config.
  train_lib.restore_network(workdir)
  out = train_lib.train(resume, data_dir, workdir, log=id)
  assert out["steps"] == 3


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_holds_every_weight(model, data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  train_lib.train(_config(model, **{"train.num_steps": 1,
                                    "train.eval_every": 100}),
                  data_dir, workdir, log=id)
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  stored = {name for name, _ in tf.train.list_variables(latest)}
  config, info = _resolved(model, data_dir)
  built = train_lib.build_model(config, info)
  weights = checkpoints.weights_of(built)
  assert len(weights) == len(built.weights) > 0
  for path in weights:
    escaped = path.replace("/", ".S")
    assert any(escaped in name for name in stored), f"{path} not saved"
  # A network restored without any optimizer equals the trained one.
  network, _, _ = train_lib.restore_network(workdir)
  fresh = train_lib.build_model(config, info, compile_model=False)
  tf.train.Checkpoint(weights=checkpoints.weights_of(fresh)).restore(
      latest).expect_partial()
  for a, b in zip(network.weights, fresh.network.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def _resolved(model, data_dir):
  info = records.read_dataset_info(data_dir)
  return train_lib.resolve_config(_config(model), info), info


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir,
                                                                  tmp_path):
  workdir = str(tmp_path / "w")
  train_lib.train(_config("cnn", **{"train.num_steps": 2,
                                    "train.eval_every": 100}),
                  data_dir, workdir, log=id)
  good = _files(os.path.join(workdir, "checkpoints"))
  config = _config("cnn", **{"train.learning_rate": 1e12,
                             "train.clip_norm": 0.0, "train.lr_warmup_steps": 0,
                             "train.checkpoint_every": 1,
                             "train.num_steps": 50})
  with pytest.raises(train_lib.TrainingError,
                     match=r"non-finite loss.*ckpt-2\) is kept"):
    train_lib.train(config, data_dir, workdir, log=id)
  assert _files(os.path.join(workdir, "checkpoints")) == good
  network, _, _ = train_lib.restore_network(workdir)
  assert all(np.all(np.isfinite(w.numpy())) for w in network.weights)


def test_profile_trace_is_written(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  train_lib.train(_config("cnn"), data_dir, workdir, profile_steps=(2, 4),
                  log=id)
  traces = glob.glob(os.path.join(workdir, "train", "plugins", "profile", "*",
                                  "*.xplane.pb"))
  assert traces, "no profiler trace"


def test_speaker_conditioned_training(data_dir, tmp_path):
  config = _config("multiscale")
  config.model.speaker_conditioning = "film"
  workdir = str(tmp_path / "w")
  train_lib.train(config, data_dir, workdir, log=id)
  network, resolved, _ = train_lib.restore_network(workdir)
  assert resolved.model.num_speakers == 3 and resolved.data.with_speaker


@pytest.mark.parametrize("model", MODELS)
def test_export_reloads_without_the_project(model, data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  config = _config(model, **{"train.num_steps": 3, "train.eval_every": 100})
  if model == "multiscale":
    config.model.speaker_conditioning = "concat"
  train_lib.train(config, data_dir, workdir, log=id)
  export_dir = str(tmp_path / "export")
  meta = export_lib.export(workdir, export_dir, griffin_lim_iterations=4)
  assert meta["stft"] == spectral.DEFAULT.to_dict()
  rng = np.random.default_rng(1)
  lengths = np.array([37, 21], np.int32)
  emb = rng.normal(-3.0, 2.0, (2, 37, 64)).astype(np.float32)
  emb[1, 21:] = 1e3  # garbage past the length must not matter
  speaker = np.array([2, 0], np.int32)
  # In memory: the restored network inside the same module code.
  network, resolved, info = train_lib.restore_network(workdir)
  from e2s_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  module = export_lib.DecoderModule(
      network, data_lib.Normalizer.from_info(info), spectral.DEFAULT,
      meta["with_speaker"], griffin_lim_iterations=4)
  args = [emb, lengths] + ([speaker] if meta["with_speaker"] else [])
  expected_log = module.spectrogram(*args)["log_stft"].numpy()
  expected = module.waveform(*args)
  np.savez(tmp_path / "in.npz", emb=emb, lengths=lengths, speaker=speaker)
  script = tmp_path / "load.py"
  script.write_text(textwrap.dedent(f"""
      import json, sys
      # The project stays out of reach even where it is installed (e.g.
      # editable into the test environment): loading needs only TF.
      class _NoProject:
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] == "e2s_tf":
            raise ImportError("the project is hidden from this process")
      sys.meta_path.insert(0, _NoProject())
      import numpy as np
      import tensorflow as tf
      try:
        import e2s_tf
        sys.exit("e2s_tf must not be importable here")
      except ImportError:
        pass
      d = np.load({str(tmp_path / 'in.npz')!r})
      m = tf.saved_model.load({export_dir!r})
      meta = json.load(open({export_dir!r} + "/e2s_export.json"))
      args = [tf.constant(d["emb"]), tf.constant(d["lengths"])]
      if meta["with_speaker"]:
        args.append(tf.constant(d["speaker"]))
      s = m.spectrogram(*args)["log_stft"].numpy()
      w = m.waveform(*args)
      sig = m.signatures["waveform"]
      np.savez({str(tmp_path / 'out.npz')!r}, log_stft=s,
               audio=w["audio"].numpy(), audio_lengths=w["audio_lengths"].numpy(),
               sig_keys=np.array(sorted(sig.structured_outputs)))
      """))
  run = subprocess.run([sys.executable, "-I", str(script)], cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  got = np.load(tmp_path / "out.npz")
  np.testing.assert_allclose(got["log_stft"], expected_log, atol=1e-4)
  np.testing.assert_allclose(got["audio"], expected["audio"].numpy(),
                             atol=1e-4)
  np.testing.assert_array_equal(got["audio_lengths"],
                                spectral.DEFAULT.num_samples(lengths))
  assert list(got["sig_keys"]) == ["audio", "audio_lengths"]
  # Padding frames are log-silence; the padded item equals itself alone.
  np.testing.assert_allclose(got["log_stft"][1, 21:], spectral.LOG_SILENCE)
  alone_args = [emb[1:, :21], lengths[1:]] + (
      [speaker[1:]] if meta["with_speaker"] else [])
  alone = module.spectrogram(*alone_args)["log_stft"].numpy()
  np.testing.assert_allclose(got["log_stft"][1, :21], alone[0], atol=1e-4)


def test_cli_trains_with_overrides(data_dir, tmp_path):
  workdir = tmp_path / "cli"
  cmd = [sys.executable, "-m", "e2s_tf.train",
         "--config=configs/testing.py:cnn", f"--data_dir={data_dir}",
         f"--workdir={workdir}", "--config.train.num_steps=2",
         "--config.train.eval_every=100"]
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "done: step 2" in run.stdout
  bad = subprocess.run(cmd[:-2] + ["--config.train.no_such_field=1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert _error_line(bad) == (
      "train: error: --config.train.no_such_field: config.train has no field "
      "'no_such_field'")


def test_cli_auto_config_follows_the_dataset(data_dir, tmp_path):
  # speech_data is logmel: `auto` is the filterbank kind's default decoder.
  from e2s_tf import configs  # pylint: disable=g-import-not-at-top
  chosen = configs.DEFAULT_DECODERS["filterbank"]
  run = _cli(data_dir, tmp_path / "auto", "--config.train.num_steps=1",
             "--config.train.eval_every=100", "--config.model.channels=8",
             config="auto")
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"--config=auto is {chosen}" in run.stdout
  with open(tmp_path / "auto" / "config.json") as f:
    assert json.load(f)["model"]["name"] == chosen
  missing = _cli(tmp_path / "nothing", tmp_path / "w2", config="auto")
  assert "dataset_info.json not found" in _error_line(missing)


def test_config_errors_are_one_line(data_dir, tmp_path):
  workdir = tmp_path / "w"
  # A model switched by overriding its name keeps the other model's fields.
  switched = _cli(data_dir, workdir, "--config.model.name=cnn",
                  config="configs/multiscale.py")
  line = _error_line(switched)
  assert "config.model.name='cnn'" in line and "num_layers" in line
  assert "--config=cnn" in line
  assert "--config=testing:cnn" in line
  missing = _cli(data_dir, workdir, "--config.train.num_steps=2",
                 config="configs/no_such_config.py")
  assert _error_line(missing) == (
      "train: error: config file configs/no_such_config.py not found")
  assert not workdir.exists()
  # The switch is refused in-process as well, before anything is written.
  config = testing_config.get_config("multiscale")
  config.model.name = "cnn"
  with pytest.raises(train_lib.TrainingError, match="--config=cnn "):
    train_lib.train(config, data_dir, str(workdir), log=id)
  assert not workdir.exists()


def test_corrupt_shard_is_named(data_dir, tmp_path):
  copy = tmp_path / "data"
  shutil.copytree(data_dir, copy)
  shard = copy / records.split_files(data_dir, "train")[0].rsplit("/", 1)[1]
  size = shard.stat().st_size
  with open(shard, "r+b") as f:
    f.truncate(size * 2 // 3)
  run = _cli(copy, tmp_path / "w", "--config.train.num_steps=20",
             "--config.train.eval_every=100")
  line = _error_line(run)
  assert line.startswith(f"train: error: {shard} is truncated or corrupted")
  assert "training stopped at step" in line


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MiB tmpfs, unmounted at the end."""
  mount = tmp_path / "disk"
  mount.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                         str(mount)], capture_output=True, text=True)
  if done.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk, leave):
  """Fills `disk` up to `leave` free bytes with a file of its own."""
  free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
  with open(disk / "filler", "ab") as f:
    f.write(b"\0" * max(free - leave, 0))


_QUIET = {"train.eval_every": 100, "train.summary_items": 0}


def _cnn_trained_3_steps(data_dir, workdir):
  """Trains cnn 3 steps into `workdir`; returns its checkpoint folder and the
  files there (name -> bytes)."""
  train_lib.train(_config("cnn", **_QUIET, **{"train.num_steps": 3}),
                  data_dir, str(workdir), log=id)
  checkpoints = workdir / "checkpoints"
  return checkpoints, _files(checkpoints)


def test_full_disk_keeps_the_last_complete_checkpoint(data_dir, small_disk):
  workdir = small_disk / "w"
  checkpoints, before = _cnn_trained_3_steps(data_dir, workdir)
  weights = [w.numpy() for w in train_lib.restore_network(str(workdir))[0]
             .weights]
  # Room for config.json and dataset_info.json, not for a checkpoint.
  _fill(small_disk, 40 * 1024)
  run = _cli(data_dir, workdir, "--config.train.num_steps=6",
             "--config.train.eval_every=100",
             "--config.train.summary_items=0")
  assert _error_line(run).startswith(
      f"train: error: no space left on {checkpoints}; the last complete "
      f"checkpoint ({checkpoints}/ckpt-3) is kept")
  # ckpt-3 is whole and the latest; nothing of ckpt-6, no temporary files.
  assert _files(checkpoints) == before
  assert not [p for p in os.listdir(workdir) if ".tmp" in p]
  # A disk full before config.json: the same, with the file named.
  _fill(small_disk, 0)
  with pytest.raises(train_lib.TrainingError,
                     match=f"no space left on {workdir}/config.json"):
    train_lib.train(_config("cnn", **_QUIET, **{"train.num_steps": 6}),
                    data_dir, str(workdir), log=id)
  assert _files(checkpoints) == before
  assert not [p for p in os.listdir(workdir) if ".tmp" in p]
  # With space again, the run resumes from ckpt-3.
  os.remove(small_disk / "filler")
  restored = train_lib.restore_network(str(workdir))[0].weights
  for a, b in zip(weights, restored):
    np.testing.assert_array_equal(a, b.numpy())
  out = train_lib.train(_config("cnn", **_QUIET, **{"train.num_steps": 6}),
                        data_dir, str(workdir), log=id)
  assert out["steps"] == 3


def test_a_failed_state_write_leaves_the_state_on_the_last_checkpoint(
    data_dir, tmp_path, monkeypatch):
  """The disk filling up after a checkpoint's files, while the manager
  writes the state file that names it (injected: a tmpfs cannot be sized to
  fail exactly there)."""
  workdir = tmp_path / "w"
  checkpoints, before = _cnn_trained_3_steps(data_dir, workdir)
  real = tf.train.CheckpointManager._record_state

  def full(manager):
    if manager.latest_checkpoint.endswith("ckpt-6"):
      with open(os.path.join(manager.directory, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-6"\n')  # written, then full
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), manager.directory)
    return real(manager)

  monkeypatch.setattr(tf.train.CheckpointManager, "_record_state", full)
  with pytest.raises(train_lib.TrainingError,
                     match=f"checkpoint \\({checkpoints}/ckpt-3\\) is kept"):
    train_lib.train(_config("cnn", **_QUIET, **{"train.num_steps": 6}),
                    data_dir, str(workdir), log=id)
  assert tf.train.latest_checkpoint(str(checkpoints)) == str(
      checkpoints / "ckpt-3")
  assert {k: v for k, v in _files(checkpoints).items()
          if k != "checkpoint"} == {k: v for k, v in before.items()
                                    if k != "checkpoint"}


def test_filterbank_prior_is_the_closed_form_guess(data_dir):
  from e2s_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from e2s_tf import embedders  # pylint: disable=g-import-not-at-top
  config, info = _resolved("multiscale", data_dir)
  del config
  prior = prior_lib.from_dataset_info(info)
  assert prior is not None
  embedder = embedders.from_description(info["embedder"], spectral.DEFAULT)
  w = np.asarray(embedder.filterbank())
  inverse = prior_lib.filterbank_interpolation(w)
  assert inverse.shape == (w.shape[1], w.shape[0]) and inverse.min() >= 0
  # A spectrum that is constant inside the filterbank's range is recovered
  # (each band's mean amplitude is that constant)
  flat = np.full((1, w.shape[0]), 0.3) * (w.sum(1) > 0)
  # exactly there, and the bins no band covers (DC, Nyquist) copy their
  # nearest covered neighbour.
  np.testing.assert_allclose(((flat @ w) @ inverse)[0], 0.3, rtol=1e-5)
  ex = next(records.read_examples(records.split_files(data_dir, "train")))
  norm = data_lib.Normalizer.from_info(info)
  x = norm.normalize_embedding(ex["embedding"])[None]
  got = prior(x).numpy()[0]
  e = ex["embedding"]
  silent = np.all(e <= np.log(1e-5) + 1e-4, axis=1, keepdims=True)
  expected = norm.normalize_log_stft(np.log(np.maximum(
      np.where(silent, 0.0, np.exp(e) @ inverse), 1e-5)))
  np.testing.assert_allclose(got, expected, atol=2e-3)
  # A target framed differently from the embedding (the framing experiment's
  # 512-sample window) still gets the embedder's filterbank over its bins.
  wide = json.loads(json.dumps(info))
  wide["stft"]["frame_length"] = 512
  wide_prior = prior_lib.from_dataset_info(wide)
  assert wide_prior is not None
  np.testing.assert_allclose(wide_prior(x).numpy()[0], got, atol=1e-5)
  # None for an embedder that offers no filterbank (nothing is built).
  mfcc = json.loads(json.dumps(info))
  mfcc["embedder"]["spec"] = mfcc["embedder"]["name"] = "mfcc"
  assert prior_lib.from_dataset_info(mfcc) is None
  # An embedder that cannot be rebuilt is an error, not a silently
  # different model.
  broken = json.loads(json.dumps(info))
  broken["embedder"]["options"]["num_mel_bins"] = 0
  with pytest.raises(ValueError):
    prior_lib.from_dataset_info(broken)


def test_multiscale_starts_at_its_prior_and_keeps_silent_frames(data_dir):
  from e2s_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  config, info = _resolved("multiscale", data_dir)
  norm = data_lib.Normalizer.from_info(info)
  emb = next(records.read_examples(
      records.split_files(data_dir, "train")))["embedding"]
  # Frames 10-19 are digital silence: every band at the log floor.
  emb[10:20] = np.log(spectral.MAGNITUDE_FLOOR)
  x = norm.normalize_embedding(emb)[None].astype(np.float32)
  model = train_lib.build_model(config, info, compile_model=False)
  decoder = model.network
  prior = decoder.prior(x).numpy()[0]
  # (The espeak items have digital silence of their own, too.)
  silent = np.all(emb <= np.log(spectral.MAGNITUDE_FLOOR) + 1e-4, axis=1)
  assert silent[10:20].all() and not silent.all()
  np.testing.assert_array_equal(decoder.prior.silent(x).numpy()[0] > 0,
                                silent)
  # Untrained, the decoder outputs its (projected) prior exactly: the residual
  # paths start at zero instead of adding noise that training must first undo.
  steps = config.model.projection_steps
  assert steps > 0
  np.testing.assert_allclose(
      decoder(x).numpy()[0],
      decoder.prior.project(prior[None], x, steps).numpy()[0], atol=1e-4)
  # However the weights move, the silent frames stay at the (exact) prior,
  # the normalised log floor, and the others follow the decoder.
  rng = np.random.default_rng(0)
  for w in decoder.trainable_weights:
    w.assign(w.numpy() + rng.normal(0, 0.1, w.shape).astype(np.float32))
  out = decoder(x).numpy()[0]
  floor = norm.normalize_log_stft(np.full(
      (1, prior.shape[1]), np.log(spectral.MAGNITUDE_FLOOR)))[0]
  np.testing.assert_allclose(
      out[silent], np.broadcast_to(floor, out[silent].shape), atol=1e-4)
  assert np.abs(out[~silent] - prior[~silent]).mean() > 0.05
  # The gate alone keeps them there (the projection also pulls them down, as
  # their bands are at the floor); with both off they are decoded like any
  # other frame.
  config.model.projection_steps = 0
  gate_only = train_lib.build_model(config, info, compile_model=False).network
  gate_only.set_weights(decoder.get_weights())
  np.testing.assert_allclose(gate_only(x).numpy()[0][silent],
                             np.broadcast_to(floor, out[silent].shape),
                             atol=1e-4)
  config.model.silence_gate = False
  ungated = train_lib.build_model(config, info, compile_model=False).network
  ungated.set_weights(decoder.get_weights())
  assert np.abs(ungated(x).numpy()[0][silent] - floor).mean() > 0.05


def test_mixed_precision_training(data_dir, tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "w")
  out = train_lib.train(_config("multiscale", **{
      "train.precision": "mixed_float16", "train.num_steps": 2,
      "train.eval_every": 2}), data_dir, workdir, log=id)
  assert np.isfinite(out["loss"]) and np.isfinite(out["valid_lsd_db"])
  # The policy is restored for whoever builds models next.
  assert keras.mixed_precision.global_policy().name == "float32"
  network, _, _ = train_lib.restore_network(workdir)
  assert all(w.dtype == "float32" for w in network.weights)


def test_wall_clock_budget_stops_with_a_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  lines = []
  out = train_lib.train(_config("cnn", **{"train.num_steps": 100000,
                                          "train.max_minutes": 0.05,
                                          "train.eval_every": 100000}),
                        data_dir, workdir, log=lines.append)
  assert any("max_minutes reached" in l for l in lines)
  assert 0 < out["steps"] < 100000
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  assert latest.endswith(f"ckpt-{out['steps']}")


def test_finite_divergence_stops_and_keeps_the_last_good_checkpoint(
    data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  every = {"train.log_every": 1, "train.checkpoint_every": 2,
           "train.eval_every": 1000}
  # A normal run logging every step: never taken for a divergence, and
  # every checkpoint is written.
  lines = []
  train_lib.train(_config("cnn", **every, **{"train.num_steps": 12}),
                  data_dir, workdir, log=lines.append)
  assert not any("not written" in l or "diverged" in l for l in lines)
  state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
      "ckpt-10", "ckpt-12"]
  good = _files(os.path.join(workdir, "checkpoints"))
  # The same run resumed with a learning rate that blows the weights up but
  # keeps the loss finite.
  lines = []
  with pytest.raises(train_lib.TrainingError,
                     match=r"training diverged at step \d+: loss .* vs median "
                     r".*ckpt-12\) is kept: lower train.learning_rate") as e:
    train_lib.train(_config("cnn", **every, **{"train.num_steps": 60,
                                               "train.learning_rate": 1e6}),
                    data_dir, workdir, log=lines.append)
  step = int(str(e.value).split("step ")[1].split(":")[0])
  assert 12 < step < 60
  assert any("not written" in l for l in lines)  # its weights were bad
  # The checkpoints are those of the good run, byte for byte.
  assert _files(os.path.join(workdir, "checkpoints")) == good
  network, _, _ = train_lib.restore_network(workdir)
  assert max(float(np.abs(w.numpy()).max()) for w in network.weights) < 100


def _cli(data_dir, workdir, *flags_, config="testing:cnn",
         timeout=300, popen=False):
  cmd = [sys.executable, "-m", "e2s_tf.train", f"--config={config}",
         f"--data_dir={data_dir}", f"--workdir={workdir}", *flags_]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  if popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _error_line(run):
  """The one error line of a failed program run (nothing after it)."""
  assert run.returncode == 1, run.stderr[-3000:]
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("train: error: "), run.stderr[-3000:]
  return last


def test_a_second_run_into_a_workdir_in_use_fails_at_once(data_dir,
                                                          tmp_path):
  workdir = tmp_path / "w"
  # Another run holds the workdir: a live process with its lock.
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          import sys, time
          sys.path.insert(0, {ROOT!r})
          from e2s_tf import fileio
          with fileio.FolderLock({str(workdir)!r}, "train"):
            print("locked", flush=True)
            time.sleep(600)
          """)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    run = _cli(data_dir, workdir, "--config.train.num_steps=2")
    line = _error_line(run)
    assert "in use by another run" in line and (
        f"train, pid {holder.pid} on") in line
    assert sorted(os.listdir(workdir)) == [".e2s.lock"]  # nothing written
    # In-process, the same.
    from e2s_tf import fileio  # pylint: disable=g-import-not-at-top
    with pytest.raises(fileio.FolderInUse, match=f"pid {holder.pid}"):
      train_lib.train(_config("cnn"), data_dir, str(workdir), log=id)
  finally:
    holder.kill()
    holder.wait()
  # The holder was killed (-9): its lock is free and taken over.
  out = train_lib.train(_config("cnn", **{"train.num_steps": 2,
                                          "train.eval_every": 100}),
                        data_dir, str(workdir), log=id)
  assert out["steps"] == 2


def test_a_killed_run_resumes_exactly(data_dir, tmp_path):
  # A real run killed with SIGKILL after a few checkpoints, resumed here:
  # the same weights as a straight run (dropout on), the dead run's lock
  # taken over.
  flags_ = {"train.num_steps": 1000, "train.checkpoint_every": 3,
            "train.log_every": 1000, "train.eval_every": 1000,
            "train.keep_checkpoints": 2}
  workdir = tmp_path / "killed"
  proc = _cli(data_dir, workdir, "--config.data.deterministic=true",
              *[f"--config.{k}={v}" for k, v in flags_.items()], popen=True)
  state_file = workdir / "checkpoints" / "checkpoint"
  try:
    deadline = time.time() + 240
    while not state_file.exists() and time.time() < deadline:
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      time.sleep(0.02)
    time.sleep(0.3)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
  done = int(latest.rsplit("-", 1)[1])
  assert done >= 3
  stop = done + 4
  lines = []
  train_lib.train(_config("cnn", **flags_), data_dir, str(workdir),
                  log=lines.append, stop_at_step=stop)
  assert any(f"resumed from {latest}" in l for l in lines)
  straight = str(tmp_path / "straight")
  train_lib.train(_config("cnn", **flags_), data_dir, straight, log=id,
                  stop_at_step=stop)
  assert _config("cnn").model.dropout > 0
  assert _max_difference(straight, str(workdir)) <= 1e-6


def test_summaries_draw_a_non_finite_prediction():
  # A diverging model's validation images must not stop the run.
  from e2s_tf import summaries  # pylint: disable=g-import-not-at-top
  target = np.linspace(-11.0, 2.0, 40, dtype=np.float32).reshape(8, 5)
  prediction = target.copy()
  prediction[0, 0], prediction[1, 1], prediction[2, 2] = np.nan, np.inf, -np.inf
  panel = summaries.spectrogram_panel(target, prediction)
  assert panel.dtype == np.uint8 and panel.shape == (5, 3 * 8 + 8, 3)
  low, high = summaries.colorize(np.array([[np.nan, np.inf]]), 0.0, 1.0)[0]
  np.testing.assert_array_equal(low, summaries.colorize(
      np.array([[0.0]]), 0.0, 1.0)[0, 0])
  np.testing.assert_array_equal(high, summaries.colorize(
      np.array([[1.0]]), 0.0, 1.0)[0, 0])


def test_training_batches_stay_within_the_frame_budget(tmp_path):
  # One item 5x the frame budget among short ones: cut into windows, so no
  # batch (padding included) exceeds frames_per_batch, and no frame is lost.
  from tests import data_testlib  # pylint: disable=g-import-not-at-top
  tiny = data_testlib.write_tiny_dataset(
      tmp_path / "data", {"train": [6000, 300, 450, 500], "valid": [300]})
  config = _config("cnn")
  budget = config.data.frames_per_batch
  assert train_lib.max_item_frames(config) == budget == 1200
  frames = 0
  for batch in train_lib.make_train_data(config, tiny.data_dir):
    b, t = batch["mask"].shape
    assert b * t <= budget
    frames += int(batch["length"].numpy().sum())
  assert frames == 6000 + 300 + 450 + 500
