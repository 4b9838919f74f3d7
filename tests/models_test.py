"""Tests of e2s_tf.models: masking, training, speakers, GAN warm-up, export."""

import shutil
import tempfile

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from e2s_tf import losses
from e2s_tf import models
from e2s_tf.models import discriminator as discriminator_lib
from e2s_tf.models import prior as prior_lib
from e2s_tf.models import trainable

DIM, BINS = 6, 9
LENGTHS = (11, 7, 3)
NAMES = (("cnn", "cnn"), ("multiscale", "multiscale"), ("gan", "gan"),
         ("conformer", "conformer"), ("conformer_gan", "conformer_gan"))


def tiny_config(name, **overrides):
  """A few thousand parameters: seconds per test on a CPU."""
  model = models.default_model_config(name)
  model.channels = 8
  model.dropout = 0.0
  if name == "cnn":
    model.num_layers = 2
    model.kernel_size = 3
  elif name in ("conformer", "conformer_gan"):
    model.num_blocks = 2
    model.attention_heads = 2
    model.conv_kernel_size = 3
    model.refine_channels = 4
  else:
    model.num_blocks = 2
    model.branch_kernel_sizes = (3, 5)
    model.branch_dilations = (1, 2)
    model.refine_channels = 4
  if name in ("gan", "conformer_gan"):
    model.disc_pools = ((1, 1), (2, 2))
    model.disc_channels = (4, 4)
    model.disc_frequency_strides = (2, 2)
    model.adversarial_start_step = 0
  for key, value in overrides.items():
    model[key] = value
  return ml_collections.ConfigDict(
      {"model": model, "data": {"embedding_dim": DIM, "num_bins": BINS}})


def build(name, seed=0, **overrides):
  keras.utils.set_random_seed(seed)
  return models.build(tiny_config(name, **overrides))


def compile_model(model, learning_rate=1e-2):
  model.compile(keras.optimizers.Adam(learning_rate),
                keras.optimizers.Adam(learning_rate))


def padded_batch(seed=0, garbage=1e4, speakers=None):
  """A batch with garbage (huge values, inf, NaN) in its padding."""
  rng = np.random.default_rng(seed)
  frames = max(LENGTHS) + 2
  shape = (len(LENGTHS), frames)
  embedding = garbage * rng.normal(size=shape + (DIM,)).astype(np.float32)
  log_stft = garbage * rng.normal(size=shape + (BINS,)).astype(np.float32)
  mask = np.zeros(shape, np.float32)
  for i, length in enumerate(LENGTHS):
    embedding[i, :length] = rng.normal(size=(length, DIM))
    log_stft[i, :length] = rng.normal(size=(length, BINS))
    mask[i, :length] = 1.0
  embedding[0, -1, 0], embedding[1, -1, 1] = np.inf, np.nan
  batch = {"embedding": embedding, "log_stft": log_stft, "mask": mask,
           "length": np.array(LENGTHS, np.int32)}
  if speakers is not None:
    batch["speaker"] = np.array(speakers, np.int32)
  return {k: tf.constant(v) for k, v in batch.items()}


def weights(layer):
  return [v.numpy().copy() for v in layer.trainable_variables]


def changed(before, after):
  return any(not np.array_equal(a, b) for a, b in zip(before, after))


class RegistryTest(tf.test.TestCase):

  def test_available(self):
    self.assertEqual(models.available(), ("cnn", "conformer", "conformer_gan",
                                          "gan", "multiscale"))

  def test_default_configs_name_their_model(self):
    for name in models.available():
      self.assertEqual(models.default_model_config(name).name, name)

  def test_unknown_name_lists_the_available_ones(self):
    config = tiny_config("cnn")
    config.model.name = "rnn"
    with pytest.raises(ValueError, match="unknown model 'rnn'.*multiscale"):
      models.build(config)

  def test_config_fields_must_be_exactly_the_models(self):
    # The defaults live in default_config alone: a field it does not have
    # is an error, and so is one it has that the config lacks.
    config = tiny_config("multiscale")
    config.model.no_such_field = 1
    with pytest.raises(ValueError, match="has fields of another model "
                       r"\(no_such_field\)"):
      models.build(config)
    config = tiny_config("multiscale")
    del config.model["linear_skip"]
    with pytest.raises(ValueError, match="lacks its fields linear_skip"):
      models.build(config)
    # The builder passes every field: switching one off in the config
    # switches it off in the model.
    on = build("multiscale")
    off = build("multiscale", linear_skip=False)
    self.assertIsNotNone(on.network.skip)
    self.assertIsNone(off.network.skip)

  def test_missing_data_field_is_named(self):
    config = tiny_config("cnn")
    del config.data["num_bins"]
    with pytest.raises(ValueError, match="config.data.num_bins"):
      models.build(config)

  def test_bad_speaker_conditioning_is_explained(self):
    with pytest.raises(ValueError, match="num_speakers > 0"):
      build("cnn", speaker_conditioning="film", num_speakers=0)
    with pytest.raises(ValueError, match="unknown speaker_conditioning"):
      build("cnn", speaker_conditioning="add", num_speakers=2)

  def test_multiscale_default_size(self):
    config = ml_collections.ConfigDict({
        "model": models.default_model_config("multiscale"),
        "data": {"embedding_dim": 64, "num_bins": 257}})
    model = models.build(config)
    # Small enough to train on two CPU cores (see the module docstring).
    self.assertBetween(model.count_params(), 5e5, 3e6)


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      *NAMES, ("multiscale_film", "multiscale", "film"),
      ("cnn_concat", "cnn", "concat"))
  def test_padded_item_equals_item_alone(self, name, conditioning="none"):
    model = build(name, speaker_conditioning=conditioning,
                  num_speakers=0 if conditioning == "none" else 3)
    speakers = [2, 0, 1]
    batch = padded_batch(speakers=speakers)
    out = model(batch["embedding"], batch["mask"], batch["speaker"]).numpy()
    self.assertEqual(out.dtype, np.float32)
    self.assertTrue(np.all(np.isfinite(out)))
    for i, length in enumerate(LENGTHS):
      alone = model(batch["embedding"][i:i + 1, :length],
                    tf.ones([1, length]), tf.constant([speakers[i]]))
      self.assertAllClose(out[i:i + 1, :length], alone, atol=1e-5, rtol=1e-5)
      self.assertAllEqual(out[i, length:], np.zeros_like(out[i, length:]))

  @parameterized.named_parameters(*NAMES)
  def test_starts_at_the_mean_spectrum_and_outliers_do_not_blow_it_up(
      self, name):
    # Without a filterbank prior (info None, as for a learned embedder) the
    # untrained decoder outputs 0 in normalised units: the train split's
    # mean log-spectrum, whatever the input.
    model = build(name)
    batch = padded_batch(garbage=1e3)
    embedding = batch["embedding"].numpy()
    embedding[..., 0] *= 40.0  # one outlying dimension, 40 std out
    batch["embedding"] = tf.constant(embedding)
    out = model(batch["embedding"], batch["mask"]).numpy()
    self.assertAllEqual(out, np.zeros_like(out))
    compile_model(model, learning_rate=3e-3)
    step = tf.function(model.train_step)
    start = float(model.probe_loss(batch))
    worst = max(float(step(batch)["loss"]) for _ in range(10))
    self.assertLess(worst, 1.5 * start)

  @parameterized.named_parameters(*NAMES)
  def test_runs_on_any_length_without_mask(self, name):
    model = build(name)
    for frames in (1, 2, 29):
      out = model(tf.random.normal([2, frames, DIM]))
      self.assertEqual(out.shape, (2, frames, BINS))

  @parameterized.named_parameters(*NAMES)
  def test_train_steps_reduce_the_loss(self, name):
    model = build(name)
    compile_model(model)
    batch = padded_batch(garbage=1e3)
    step = tf.function(model.train_step)
    before = float(model.test_step(batch)["loss"])
    for _ in range(30):
      metrics = step(batch)
    model.reset_metrics()
    after = model.test_step(batch)
    self.assertLess(float(after["loss"]), 0.8 * before)
    expected = {"loss", "l1", "spectral_convergence"}
    if name in ("gan", "conformer_gan"):
      expected |= {"g_loss", "g_adversarial", "feature_matching", "d_loss"}
    self.assertEqual(set(metrics), expected)
    self.assertEqual({m.name for m in model.metrics}, expected)
    self.assertTrue(all(np.isfinite(float(v)) for v in metrics.values()))

  @parameterized.named_parameters(*NAMES)
  def test_train_step_with_and_without_speaker(self, name):
    model = build(name, speaker_conditioning="film", num_speakers=3)
    compile_model(model)
    for batch in (padded_batch(speakers=[0, 2, -1]), padded_batch()):
      metrics = model.train_step(batch)  # eager: tracing is tested elsewhere
      self.assertTrue(np.isfinite(float(metrics["loss"])))

  @parameterized.named_parameters(("film", "film"), ("concat", "concat"))
  def test_speaker_conditioning_changes_the_output(self, conditioning):
    model = build("multiscale", speaker_conditioning=conditioning,
                  num_speakers=3)
    compile_model(model)
    batch = padded_batch(speakers=[0, 1, 2])
    step = tf.function(model.train_step)
    for _ in range(3):  # FiLM starts as the identity: let it learn a little.
      step(batch)
    embedding = tf.tile(batch["embedding"][:1, :LENGTHS[0]], [3, 1, 1])
    out = model(embedding, tf.ones([3, LENGTHS[0]]),
                tf.constant([0, 1, 2])).numpy()
    self.assertGreater(np.abs(out[0] - out[1]).max(), 1e-3)
    self.assertGreater(np.abs(out[1] - out[2]).max(), 1e-3)
    # Unknown ids (missing, -1, out of range) share the unknown-speaker row.
    unknown = model(embedding[:1], None, None)
    self.assertAllClose(model(embedding[:1], None, tf.constant([-1])), unknown)
    self.assertAllClose(model(embedding[:1], None, tf.constant([7])), unknown)

  def test_unconditioned_model_ignores_the_speaker(self):
    model = build("multiscale")
    embedding = tf.random.normal([2, 5, DIM])
    self.assertAllEqual(model(embedding, None, tf.constant([0, 1])),
                        model(embedding, None, None))

  def test_cnn_and_multiscale_have_no_discriminator(self):
    for name in ("cnn", "multiscale"):
      model = build(name)
      compile_model(model)
      self.assertIsNone(model.discriminator)
      self.assertEqual(sorted(model.optimizers()), ["optimizer"])
      metrics = model.train_step(padded_batch())
      self.assertEqual(sorted(metrics),
                       ["l1", "loss", "spectral_convergence"])
    gan = build("gan")
    compile_model(gan)
    self.assertEqual(sorted(gan.optimizers()),
                     ["discriminator_optimizer", "optimizer"])
    self.assertEqual(sorted(gan.train_step(padded_batch())),
                     ["d_loss", "feature_matching", "g_adversarial",
                      "g_loss", "l1", "loss", "spectral_convergence"])
    with pytest.raises(ValueError, match="discriminator_optimizer"):
      build("gan").compile(keras.optimizers.Adam(1e-3))

  def test_validation_step_runs_the_network_once_and_returns_it(self):
    model = build("multiscale")
    compile_model(model)
    batch = padded_batch()
    values, decoded = model.validation_step(batch)
    self.assertAllClose(decoded, model(batch["embedding"], batch["mask"]))
    model.reset_metrics()
    self.assertAllClose(model.test_step(batch)["loss"], values["loss"])
    self.assertAllClose(model.probe_loss(batch), values["loss"])

  def test_gan_adversarial_start_leaves_the_discriminator_alone(self):
    model = build("gan", adversarial_start_step=2)
    compile_model(model)
    batch = padded_batch()
    step = tf.function(model.train_step)
    d_start, g_start = weights(model.discriminator), weights(model.network)
    for _ in range(2):
      metrics = step(batch)
    self.assertFalse(changed(d_start, weights(model.discriminator)))
    self.assertTrue(changed(g_start, weights(model.network)))
    self.assertEqual(float(metrics["d_loss"]), 0.0)  # never computed
    step(batch)
    self.assertTrue(changed(d_start, weights(model.discriminator)))
    self.assertEqual(int(model.train_steps.numpy()), 3)
    self.assertGreater(float(model.trackers["d_loss"].result()), 0.0)

  @parameterized.named_parameters(("lsgan", "lsgan"), ("hinge", "hinge"))
  def test_gan_adversarial_losses(self, adversarial_loss):
    model = build("gan", adversarial_loss=adversarial_loss)
    compile_model(model)
    values, _, d_loss, g_loss = model.losses_of(padded_batch(),
                                                training=False)
    self.assertAllClose(values["d_loss"], d_loss)
    self.assertAllClose(
        g_loss, values["loss"] +
        model.adversarial_weight * values["g_adversarial"] +
        model.feature_matching_weight * values["feature_matching"])
    metrics = model.train_step(padded_batch())
    self.assertTrue(np.isfinite(float(metrics["d_loss"])))

  @parameterized.named_parameters(*NAMES)
  def test_saved_model_reproduces_outputs(self, name):
    model = build(name, speaker_conditioning="film", num_speakers=3)
    compile_model(model)
    model.train_step(padded_batch(speakers=[0, 1, 2]))  # FiLM leaves zero
    module = tf.Module()
    module.model = model
    module.spectrogram = tf.function(
        lambda e, m, s: model(e, m, s),
        input_signature=[tf.TensorSpec([None, None, DIM], tf.float32),
                         tf.TensorSpec([None, None], tf.float32),
                         tf.TensorSpec([None], tf.int32)])
    path = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, path)
    tf.saved_model.save(module, path)
    del module
    reloaded = tf.saved_model.load(path)
    batch = padded_batch(seed=1, speakers=[2, 1, 0])
    args = (batch["embedding"], batch["mask"], batch["speaker"])
    self.assertAllClose(reloaded.spectrogram(*args), model(*args))

  @parameterized.named_parameters(*NAMES)
  def test_mixed_precision(self, name):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
      model = build(name)
      compile_model(model)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    batch = padded_batch(garbage=1e6)  # inf in float16
    out = model(batch["embedding"], batch["mask"])
    self.assertEqual(out.dtype, tf.float32)
    for i, length in enumerate(LENGTHS):
      alone = model(batch["embedding"][i:i + 1, :length])
      self.assertAllClose(out[i:i + 1, :length], alone, atol=2e-2, rtol=2e-2)
    metrics = tf.function(model.train_step)(batch)
    self.assertTrue(np.isfinite(float(metrics["loss"])))

  def test_reconstruction_model_uses_the_normaliser_stats(self):
    mean = np.linspace(-3.0, 0.0, BINS).astype(np.float32)
    std = np.linspace(1.0, 2.0, BINS).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = models.build(tiny_config("cnn"), {
        "stats": {"log_stft_mean": mean, "log_stft_std": std}})
    compile_model(model)
    batch = padded_batch()
    pred = model(batch["embedding"], batch["mask"])
    expected = losses.spectral_convergence_loss(batch["log_stft"], pred,
                                                batch["mask"], mean, std)
    self.assertAllClose(model.test_step(batch)["spectral_convergence"],
                        expected)

  def test_batch_without_log_stft_is_rejected(self):
    with pytest.raises(ValueError, match=r"batch lacks \['log_stft'\]"):
      trainable.unpack_batch({"embedding": 0, "mask": 0})


class DiscriminatorTest(tf.test.TestCase):

  def test_masked_and_padding_independent(self):
    keras.utils.set_random_seed(0)
    disc = discriminator_lib.SpectrogramDiscriminator(
        pools=((1, 1), (2, 2), (3, 1)), channels=(4, 4),
        frequency_strides=(2, 1))
    batch = padded_batch()
    outputs = disc(batch["log_stft"], batch["mask"])
    masks = disc.masks(batch["mask"])
    self.assertLen(outputs, 3)
    for scale, ((logits, features), mask) in enumerate(zip(outputs, masks)):
      time_pool = (1, 2, 3)[scale]
      self.assertAllEqual(tf.reduce_sum(mask, axis=1),
                          np.array(LENGTHS) // time_pool)
      self.assertLen(features, 2)
      for fmap in [logits] + features:
        padding = fmap.numpy()[mask.numpy() == 0]
        self.assertAllEqual(padding, np.zeros_like(padding))
    for i, length in enumerate(LENGTHS):
      alone = disc(batch["log_stft"][i:i + 1, :length], tf.ones([1, length]))
      for (logits, _), (logits_alone, _), mask in zip(outputs, alone, masks):
        frames = int(tf.reduce_sum(mask[i]))
        self.assertAllClose(logits[i, :frames], logits_alone[0, :frames],
                            atol=1e-5, rtol=1e-5)


if __name__ == "__main__":
  tf.test.main()


class FilterbankProjectionTest(tf.test.TestCase):
  """`FilterbankPrior.project` on the logmel filterbank, unnormalised units."""

  def setUp(self):
    super().setUp()
    from e2s_tf import embedders  # pylint: disable=g-import-not-at-top
    from e2s_tf import spectral  # pylint: disable=g-import-not-at-top
    from e2s_tf import train_lib  # pylint: disable=g-import-not-at-top
    from e2s_tf.models import layers  # pylint: disable=g-import-not-at-top
    self.w = embedders.get_embedder("logmel").filterbank()  # [bins, bands]
    bins, bands = self.w.shape
    self.prior = prior_lib.FilterbankPrior(
        prior_lib.filterbank_interpolation(self.w), np.zeros(bands),
        np.ones(bands), np.zeros(bins), np.ones(bins),
        floor=spectral.MAGNITUDE_FLOOR, filterbank=self.w)
    self.prior.build()
    rng = np.random.default_rng(0)
    # Harmonic-like magnitudes: peaks every few bins over a sloping envelope.
    bins_axis = np.arange(bins)
    self.magnitude = (np.exp(-bins_axis / 80.0)[None] *
                      (1.0 + 5.0 * (bins_axis[None] % 7 == 0)) *
                      rng.uniform(0.5, 1.5, (12, bins))).astype(np.float32)
    self.e = np.log(np.maximum(self.magnitude @ self.w, 1e-5))[None]

  def band_error(self, log_magnitude):
    decoded = np.exp(log_magnitude[0]) @ self.w
    return np.abs(np.log(decoded) - self.e[0]).mean()

  def test_a_consistent_spectrogram_is_a_fixed_point(self):
    log_m = np.log(self.magnitude)[None]
    out = self.prior.project(tf.constant(log_m), tf.constant(self.e), 8)
    self.assertAllClose(out, log_m, atol=1e-4)

  def test_steps_move_band_energies_to_the_stated_ones(self):
    # A wrong guess: flat, ten times too loud in every bin.
    guess = np.full_like(self.magnitude, 10.0 * self.magnitude.mean())
    log_guess = np.log(guess)[None]
    errors = [self.band_error(
        self.prior.project(tf.constant(log_guess), tf.constant(self.e),
                           steps).numpy()) for steps in (0, 1, 4, 32)]
    self.assertGreater(errors[0], 1.0)
    self.assertTrue(all(a > b for a, b in zip(errors, errors[1:])), errors)
    self.assertLess(errors[-1], 0.05)
    self.assertAllEqual(self.prior.project(
        tf.constant(log_guess), tf.constant(self.e), 0), log_guess)
    # Gradients reach the decoded spectrogram through every step.
    with tf.GradientTape() as tape:
      s = tf.constant(log_guess)
      tape.watch(s)
      total = tf.reduce_sum(self.prior.project(s, tf.constant(self.e), 8))
    grad = tape.gradient(total, s)
    self.assertTrue(np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0)


def test_conformer_attention_sees_valid_keys_within_the_window():
  from e2s_tf.models import conformer  # pylint: disable=g-import-not-at-top
  mask = tf.constant([[1.0, 1.0, 1.0, 0.0]])
  full = conformer.attention_allowed(mask, 0).numpy()
  assert full.shape == (1, 1, 1, 4)
  np.testing.assert_array_equal(full[0, 0, 0], [True, True, True, False])
  banded = conformer.attention_allowed(mask, 1).numpy()[0, 0]
  np.testing.assert_array_equal(banded, [[1, 1, 0, 0], [1, 1, 1, 0],
                                         [0, 1, 1, 0], [0, 0, 1, 0]])
