"""Library of the rate experiment (see e2s_tf/experiments/rate.py).

Two ways to bring an embedding whose hop H is r times the STFT's hop h
(r = H / h an integer, 2 for a 20 ms embedder) onto the STFT frames:

  `interpolated`  the project's way: the input pipeline interpolates the
                  embedding frames linearly at the STFT frame centres
                  (`alignment.FrameMapping`, centres matched exactly), and the
                  decoder runs on them;
  `upsampled`     the embedding stays at its own rate; a learned upsampling
                  by r (`RateUpsampler`: a transposed convolution, or repeat
                  + convolution) at the input of the same decoder network
                  gives r frames per embedding frame, which are shifted by a
                  whole number of frames onto the STFT frames
                  (`IntegerPlacement`).

Where the upsampled frames sit: the r frames an embedding frame k gives are
spread symmetrically around its centre, h apart, so upsampled frame j is
centred at embedding position (j − (r − 1)/2) / r. STFT frame t
lies at u(t) = u(0) + t / r, i.e. at upsampled frame t + s with
s = r·u(0) + (r − 1)/2; the decoder gets upsampled frame t + round(s) for
STFT frame t (s rounded half up), which leaves a residual centre offset of
(round(s) − s)·h samples (`IntegerPlacement.residual_ms`), at most half an
STFT hop: 0 where s is whole, as for embedding frames that pool r frames of
the STFT's grid (window l + (r − 1)·h: the speaker encoder's 640/320
export); +2.5 ms for a 400/320 grid (s = 0.75); +5 ms for 480/320 (s = 0.5).

Both arms train the same decoder config with the same seed, initial decoder
weights, batches (the same bucketed stream of the train split, only the
embedding differs) and the project's reconstruction loss
(`losses.ReconstructionLoss` with `config.loss`), in one plain loop; both are
scored on the same items of a split: in the spectral domain (the predicted
log-STFT against the target: LSD and spectral convergence) and through
Griffin-Lim (the export's iterations) with `metrics.all_metrics` against
the stored audio, beside the oracle Griffin-Lim of the true magnitudes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import alignment
from e2s_tf import data as data_lib
from e2s_tf import export_lib
from e2s_tf import fileio
from e2s_tf import losses
from e2s_tf import metrics as metrics_lib
from e2s_tf import models
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf import train_lib
from e2s_tf.configs import base as base_config
from e2s_tf.experiments import common
from e2s_tf.models import layers
from e2s_tf.models import trainable
from e2s_tf.training import schedule

INTERPOLATED = "interpolated"
UPSAMPLED = "upsampled"
ARMS = (INTERPOLATED, UPSAMPLED)
UPSAMPLERS = ("transposed", "repeat")
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
# Metrics of the predicted spectrogram itself (no phase reconstruction).
SPECTRAL_METRICS = ("spec_lsd_db", "spec_spectral_convergence")
# Metrics of the Griffin-Lim audio (metrics.all_metrics, without rtf).
AUDIO_METRICS = tuple(m for m in metrics_lib.METRIC_NAMES if m != "rtf")
# Batch keys the steps take (others, such as `id` and `audio`, stay out).
_STEP_KEYS = ("embedding", "embedding_mask", "embedding_length", "log_stft",
              "mask", "length", "speaker")


def default_config() -> ml_collections.ConfigDict:
  """The `multiscale` decoder at a modest size, for a few hundred steps on
  two CPU cores."""
  config = base_config.get_config("multiscale")
  config.model.channels = 64
  config.model.num_blocks = 2
  config.train.num_steps = 500
  config.train.lr_warmup_steps = 50
  config.train.log_every = 50
  return config


# ----------------------------------------------------------------------------
# Placing upsampled frames on the STFT frames.


@dataclasses.dataclass(frozen=True)
class IntegerPlacement:
  """Where an upsampling by `ratio` puts its frames on the STFT frames.

  Attributes:
    ratio: r, STFT frames per embedding frame.
    shift: s, the (fractional) upsampled frame at which STFT frame t lies,
      minus t.
    offset: round(s): STFT frame t takes upsampled frame t + offset.
    stft_step, sample_rate: the STFT's hop (samples) and rate.
  """
  ratio: int
  shift: float
  offset: int
  stft_step: int
  sample_rate: int

  @classmethod
  def of(cls, mapping: alignment.FrameMapping,
         sample_rate: int) -> "IntegerPlacement":
    """The placement for a dataset's mapping.

    Raises:
      ValueError: the identity mapping (nothing to upsample) or a hop that is
        not a whole multiple of the STFT's.
    """
    if mapping.identity:
      raise ValueError(
          "the dataset's embedding frames are the STFT frames (identity "
          "frame_mapping): there is no rate to upsample; this experiment needs "
          "an embedder whose hop is a multiple of the STFT's")
    if mapping.frame_step % mapping.stft_step:
      raise ValueError(
          f"the embedder's hop ({mapping.frame_step} samples) is not a whole "
          f"multiple of the STFT's ({mapping.stft_step}): an integer "
          "upsampling cannot reach the STFT's rate")
    ratio = mapping.frame_step // mapping.stft_step
    shift = ratio * mapping.first_position + (ratio - 1) / 2.0
    return cls(ratio=ratio, shift=shift, offset=int(math.floor(shift + 0.5)),
               stft_step=mapping.stft_step, sample_rate=sample_rate)

  @property
  def residual_samples(self) -> float:
    """Centre of the upsampled frame STFT frame t gets minus the STFT
    frame's centre, in samples (positive: the upsampled frame is later)."""
    return (self.offset - self.shift) * self.stft_step

  @property
  def residual_ms(self) -> float:
    return 1000.0 * self.residual_samples / self.sample_rate

  def describe(self) -> dict[str, Any]:
    return {"ratio": self.ratio, "shift_frames": self.shift,
            "offset_frames": self.offset,
            "residual_centre_offset_samples": self.residual_samples,
            "residual_centre_offset_ms": self.residual_ms}


def upsampling_kernel_size(ratio: int) -> int:
  """Kernel of the transposed convolution: 2r for even r, 2r − 1 for odd r,
  so that the r output frames of an input frame are centred on it under
  'same' padding (an even kernel would put odd ratios half a frame off)."""
  return 2 * ratio - (ratio % 2)


class RateUpsampler(keras.layers.Layer):
  """`[B, T_e, D]` at the embedder's rate -> `[B, r·T_e, D]`, learned.

  Upsampled frame j is centred at input frame (j − (r − 1)/2) / r. `kind`:
  `transposed` (a transposed convolution of stride r, kernel
  `upsampling_kernel_size(r)`) or `repeat` (each frame repeated r times, then
  a masked convolution of kernel 2⌊r/2⌋ + 1 over the upsampled frames).
  Padding frames are zeroed first, so an item's frames are the same padded
  in a batch as on their own.
  """

  def __init__(self, channels: int, ratio: int, kind: str = "transposed",
               **kwargs):
    super().__init__(**kwargs)
    if kind not in UPSAMPLERS:
      raise ValueError(f"unknown upsampler {kind!r}; known: {UPSAMPLERS}")
    if ratio < 1:
      raise ValueError(f"ratio must be >= 1, got {ratio}")
    self.channels, self.ratio, self.kind = channels, ratio, kind
    if kind == "transposed":
      self.conv = keras.layers.Conv1DTranspose(
          channels, upsampling_kernel_size(ratio), strides=ratio,
          padding="same", dtype=self.dtype_policy, name="transposed")
    else:
      self.conv = layers.MaskedConv1D(channels, 2 * (ratio // 2) + 1,
                                      dtype=self.dtype_policy, name="conv")

  def build(self, input_shape):
    self.conv.build(tuple(input_shape))

  def call(self, x, mask):
    x = layers.clean_padding(x, mask)
    if self.kind == "transposed":
      return self.conv(x)
    x = tf.repeat(x, self.ratio, axis=1)
    return self.conv(x, tf.repeat(mask, self.ratio, axis=1))


def place_on_stft_frames(upsampled: tf.Tensor, embedding_length: tf.Tensor,
                         num_frames: tf.Tensor, ratio: int,
                         offset: int) -> tf.Tensor:
  """STFT frame t <- upsampled frame t + offset, clamped to the item's frames.

  Args:
    upsampled: `[B, r·T_e, C]`.
    embedding_length: `[B]` int embedding frames of each item.
    num_frames: scalar int, the STFT frames T of the batch.
    ratio, offset: of the `IntegerPlacement`.

  Returns:
    `[B, T, C]` (the caller masks the frames past each item's length).
  """
  last = tf.maximum(ratio * tf.cast(embedding_length, tf.int32) - 1, 0)
  index = tf.range(num_frames)[tf.newaxis, :] + offset
  index = tf.clip_by_value(index, 0, last[:, tf.newaxis])
  return tf.gather(upsampled, index, batch_dims=1)


class UpsamplingDecoder(keras.Model):
  """`RateUpsampler` + shift onto the STFT frames + a project decoder.

  Call: `(embedding [B, T_e, D], embedding_mask [B, T_e], embedding_length
  [B], frame_mask [B, T], speaker [B] or None)` -> `[B, T, F]`, T the STFT
  frames of `frame_mask`.
  """

  def __init__(self, decoder: keras.Model, embedding_dim: int,
               placement: IntegerPlacement, kind: str = "transposed",
               **kwargs):
    super().__init__(**kwargs)
    self.decoder = decoder
    self.placement = placement
    self.upsampler = RateUpsampler(embedding_dim, placement.ratio, kind,
                                   name="upsampler")
    self.upsampler.build((None, None, embedding_dim))

  def call(self, embedding, embedding_mask, embedding_length, frame_mask,
           speaker=None, training=False):
    up = self.upsampler(tf.cast(embedding, tf.float32),
                        tf.cast(embedding_mask, tf.float32))
    x = place_on_stft_frames(up, embedding_length, tf.shape(frame_mask)[1],
                             self.placement.ratio, self.placement.offset)
    return self.decoder(x, frame_mask, speaker, training=training)


# ----------------------------------------------------------------------------
# The arms.


@dataclasses.dataclass
class Arm:
  """One way to the STFT frames: its network and how a batch reaches it.

  Attributes:
    name: a key of ARMS.
    network: the trained Keras model (decoder, or upsampler + decoder).
    decoder: the project's decoder network inside it.
    map_frames: the batches' `data.make_dataset(map_frames=...)`.
    forward: `(batch, training) -> [B, T, F]` normalised log-STFT.
  """
  name: str
  network: keras.Model
  decoder: keras.Model
  map_frames: bool
  forward: Callable[[Mapping[str, tf.Tensor], bool], tf.Tensor]


def build_arm(name: str, config: ml_collections.ConfigDict,
              info: Mapping[str, Any], placement: IntegerPlacement,
              upsampler: str = "transposed") -> Arm:
  """The arm `name` for a resolved config, seeded by `config.train.seed`
  (the decoder is built first: both arms start from the same decoder
  weights)."""
  keras.utils.set_random_seed(config.train.seed)
  decoder = models.build(config, info).network
  if name == INTERPOLATED:
    def forward(batch, training):
      return decoder(batch["embedding"], batch["mask"], batch.get("speaker"),
                     training=training)
    return Arm(name, decoder, decoder, True, forward)
  if name != UPSAMPLED:
    raise ValueError(f"unknown arm {name!r}; known: {ARMS}")
  network = UpsamplingDecoder(decoder, config.data.embedding_dim, placement,
                              upsampler, name="upsampling_decoder")

  def forward_upsampled(batch, training):
    return network(batch["embedding"], batch["embedding_mask"],
                   batch["embedding_length"], batch["mask"],
                   batch.get("speaker"), training=training)
  return Arm(name, network, decoder, False, forward_upsampled)


def _count(variables) -> int:
  return int(sum(np.prod(v.shape) for v in variables))


def _weights_digest(network: keras.Model) -> str:
  digest = hashlib.sha256()
  for v in network.weights:
    digest.update(np.asarray(v).tobytes())
  return digest.hexdigest()[:16]


def _step_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in batch.items() if k in _STEP_KEYS}


def _signature(element_spec) -> dict[str, tf.TensorSpec]:
  """Dynamic batch and frame dimensions: one trace for every bucket."""
  return {k: tf.TensorSpec([None] * (v.shape.rank - 1) + [v.shape[-1]]
                           if v.shape.rank == 3 else [None] * v.shape.rank,
                           v.dtype)
          for k, v in element_spec.items() if k in _STEP_KEYS}


def reconstruction_loss(config, info) -> losses.ReconstructionLoss:
  """The project's loss as `TrainableDecoder.compile` sets it up."""
  return losses.ReconstructionLoss(
      *models.registry.normalisation(info),
      stft_config=spectral.StftConfig.from_dict(info["stft"]),
      **config.loss.to_dict())


def _dataset(config, data_dir: str, split: str, map_frames: bool, *,
             train: bool, epoch: int = 0, with_audio: bool = False):
  d = config.data
  return data_lib.make_dataset(
      data_dir, split, mode="bucket", frames_per_batch=d.frames_per_batch,
      with_speaker=d.with_speaker, with_audio=with_audio, shuffle=train,
      shuffle_buffer=d.shuffle_buffer, deterministic=True,
      seed=config.train.seed * 1000 + epoch, map_frames=map_frames)


def train_arm(arm: Arm, config: ml_collections.ConfigDict,
              info: Mapping[str, Any], data_dir: str,
              log=print) -> dict[str, Any]:
  """Trains `arm.network` for `config.train.num_steps` on the train split.

  Returns:
    `steps`, `train_seconds` (the loop, tracing included), `steps_per_sec`,
    `final_train_loss` (mean of the last logged steps), `loss_curve`
    ([step, mean loss] every `log_every` steps), `batch_digest` (of the item
    ids of every batch, in order: equal for both arms when they saw the same
    batches).
  """
  t = config.train
  optimizer = schedule.adam(t, t.learning_rate)
  variables = arm.network.trainable_variables
  optimizer.build(variables)
  loss_fn = reconstruction_loss(config, info)
  spec = _signature(_dataset(config, data_dir, "train", arm.map_frames,
                             train=True).element_spec)

  @tf.function(input_signature=[spec])
  def step(batch):
    with tf.GradientTape() as tape:
      pred = arm.forward(batch, True)
      values = loss_fn(batch["log_stft"], pred, batch["mask"])
      loss = values["loss"] + trainable.regularization(arm.decoder)
    optimizer.apply(tape.gradient(loss, variables), variables)
    return values

  digest = hashlib.sha256()
  curve, window = [], []
  done, epoch = 0, 0
  start = time.time()
  while done < t.num_steps:
    got = False
    for batch in _dataset(config, data_dir, "train", arm.map_frames,
                          train=True, epoch=epoch):
      got = True
      digest.update(b"\n".join(batch["id"].numpy()) + b"\0")
      values = step(_step_inputs(batch))
      loss = float(values["loss"])
      if not math.isfinite(loss):
        raise FloatingPointError(f"{arm.name}: loss {loss} at step {done + 1}")
      window.append(loss)
      done += 1
      if done % t.log_every == 0 or done == t.num_steps:
        curve.append([done, float(np.mean(window))])
        log(f"  {arm.name} step {done}/{t.num_steps} loss "
            f"{curve[-1][1]:.4f} ({time.time() - start:.0f} s)")
        window = []
      if done >= t.num_steps:
        break
    if not got:
      raise ValueError(f"{data_dir}: the train split yields no batch")
    epoch += 1
  seconds = time.time() - start
  return {"steps": done, "epochs": epoch, "train_seconds": seconds,
          "steps_per_sec": done / max(seconds, 1e-9),
          "final_train_loss": curve[-1][1] if curve else float("nan"),
          "loss_curve": curve, "batch_digest": digest.hexdigest()[:16]}


# ----------------------------------------------------------------------------
# Evaluation.


def _mean(values) -> float:
  finite = [v for v in values if v is not None and math.isfinite(v)]
  return float(np.mean(finite)) if finite else float("nan")


def _inference(arm: Arm, spec) -> Callable:
  """`arm.forward` in inference mode, traced once for every bucket."""
  return tf.function(lambda batch: arm.forward(batch, False),
                     input_signature=[spec])


def evaluate_arms(arms: Sequence[Arm], config, info: Mapping[str, Any],
                  data_dir: str, split: str, max_items: Optional[int] = None,
                  griffin_lim_iterations: int =
                  export_lib.GRIFFIN_LIM_ITERATIONS) -> dict[str, Any]:
  """Scores every arm on the same items of `split` (bucketed, in order).

  Returns:
    per arm and for `oracle_griffin_lim`: the means of SPECTRAL_METRICS (not
    for the oracle) and AUDIO_METRICS, the reconstruction `valid_loss` (the
    project's loss, the mean over batches), `num_items`, `num_pesq_nan`,
    `frames_match` (every output had its item's STFT frames) and per-item
    rows.
  """
  stft = spectral.StftConfig.from_dict(info["stft"])
  normalizer = data_lib.Normalizer.from_info(info)
  loss_fn = reconstruction_loss(config, info)
  datasets = [_dataset(config, data_dir, split, arm.map_frames, train=False,
                       with_audio=True) for arm in arms]
  specs = [_signature(ds.element_spec) for ds in datasets]
  forwards = [_inference(arm, spec) for arm, spec in zip(arms, specs)]
  griffin_lim = tf.function(
      lambda m, n: spectral.griffin_lim(m, n, stft,
                                        num_iterations=griffin_lim_iterations),
      input_signature=[tf.TensorSpec([None, None, stft.num_bins]),
                       tf.TensorSpec([None], tf.int32)])
  names = [arm.name for arm in arms] + ["oracle_griffin_lim"]
  rows = {name: [] for name in names}
  batch_losses = {arm.name: [] for arm in arms}
  frames_match = {arm.name: True for arm in arms}
  taken = 0
  for batches in zip(*datasets):
    ids = [b["id"].numpy().tolist() for b in batches]
    if any(i != ids[0] for i in ids):
      raise AssertionError(f"the arms' {split} batches differ: {ids}")
    first = batches[0]
    lengths = first["length"].numpy()
    mask = first["mask"]
    target = normalizer.denormalize_log_stft(first["log_stft"]).numpy()
    audio = first["audio"].numpy()
    audio_lengths = first["audio_length"].numpy()
    keep = min(len(lengths), max_items - taken) if max_items else len(lengths)
    outputs = {}
    for arm, batch, forward in zip(arms, batches, forwards):
      pred = forward(_step_inputs(batch))
      frames_match[arm.name] &= pred.shape[1] == target.shape[1]
      batch_losses[arm.name].append(
          float(loss_fn(batch["log_stft"], pred, mask)["loss"]))
      outputs[arm.name] = normalizer.denormalize_log_stft(pred).numpy()
    magnitudes = {name: np.exp(np.minimum(log, losses.MAX_LOG_MAGNITUDE))
                  for name, log in outputs.items()}
    magnitudes["oracle_griffin_lim"] = np.exp(target)
    waveforms = {name: griffin_lim(m.astype(np.float32),
                                   lengths.astype(np.int32))[0].numpy()
                 for name, m in magnitudes.items()}
    for b in range(keep):
      n, item_id = int(lengths[b]), ids[0][b].decode("utf-8", "replace")
      reference = audio[b, :audio_lengths[b]]
      for name in names:
        row = {"id": item_id, "frames": n}
        if name in outputs:
          frames_match[name] &= outputs[name][b, :n].shape[0] == n
          row["spec_lsd_db"] = metrics_lib.lsd_db_from_log(
              target[b, :n], outputs[name][b, :n])
          row["spec_spectral_convergence"] = float(
              spectral.spectral_convergence(
                  np.exp(target[b:b + 1, :n]).astype(np.float64),
                  magnitudes[name][b:b + 1, :n].astype(np.float64))[0])
        estimate = waveforms[name][b, :stft.num_samples(n)]
        scores = metrics_lib.all_metrics(reference, estimate, stft)
        row.update({m: scores[m] for m in AUDIO_METRICS})
        rows[name].append(row)
    taken += keep
    if max_items and taken >= max_items:
      break
  result = {}
  for name in names:
    metrics = (SPECTRAL_METRICS if name in batch_losses else ()) + AUDIO_METRICS
    summary = {m: _mean([r[m] for r in rows[name]]) for m in metrics}
    summary["num_items"] = len(rows[name])
    summary["num_pesq_nan"] = sum(not math.isfinite(r["pesq_wb"])
                                  for r in rows[name])
    if name in batch_losses:
      summary["valid_loss"] = _mean(batch_losses[name])
      summary["frames_match"] = bool(frames_match[name])
    summary["items"] = rows[name]
    result[name] = summary
  return result


# ----------------------------------------------------------------------------
# The experiment.


def _prepare_config(config, steps: Optional[int], seed: int, info):
  config = train_lib.resolve_config(config, info)
  if config.data.mode != "bucket":
    raise ValueError(
        f"config.data.mode={config.data.mode!r}: this experiment batches "
        "with `bucket` (the embedding at its own rate passes only there; see "
        "data.NATIVE_GRID_MODES)")
  if models.model_config_problem(config):
    raise ValueError(models.model_config_problem(config))
  if config.model.name == "gan":
    raise ValueError("this experiment trains the reconstruction loss alone; "
                     "choose a decoder without a discriminator (multiscale, "
                     "cnn)")
  if steps:
    config.train.num_steps = int(steps)
    config.train.lr_warmup_steps = min(config.train.lr_warmup_steps,
                                       max(int(steps) // 5, 1))
    config.train.log_every = max(1, min(config.train.log_every,
                                        int(steps) // 5 or 1))
  config.train.seed = int(seed)
  return config


COLUMNS = (("arm", "arm", ""), ("seed", "seed", "d"),
           ("params", "params", ","),
           ("train_seconds", "train s", ".0f"),
           ("final_train_loss", "train loss", ".4f"),
           ("valid_loss", "loss ↓", ".4f"),
           ("spec_lsd_db", "LSD dB (spectrogram) ↓", ".3f"),
           ("spec_spectral_convergence", "SC (spectrogram) ↓", ".4f"),
           ("lsd_db", "LSD dB (GL) ↓", ".3f"),
           ("spectral_convergence", "SC (GL) ↓", ".4f"),
           ("mcd_db", "MCD dB ↓", ".3f"), ("stoi", "STOI ↑", ".3f"),
           ("estoi", "ESTOI ↑", ".3f"), ("pesq_wb", "PESQ ↑", ".3f"))


def run(data_dir: str, out_dir: str, config: ml_collections.ConfigDict,
        steps: Optional[int] = None, seeds: Sequence[int] = (0,),
        split: str = "valid", max_items: Optional[int] = None,
        upsampler: str = "transposed", command: str = "",
        log=print) -> dict[str, Any]:
  """Trains and scores both arms for each seed; writes `out_dir/results.json`
  and `out_dir/report.md` and returns the results.

  Raises:
    ValueError: a dataset whose embedder runs on the STFT grid or at a hop
      that is not a multiple of the STFT's; a config this experiment cannot
      train (not `bucket`, a GAN).
    fileio.FolderInUse: another run writes into `out_dir`.
  """
  info = records.read_dataset_info(data_dir)
  stft = spectral.StftConfig.from_dict(info["stft"])
  mapping = alignment.FrameMapping.from_info(info)
  placement = IntegerPlacement.of(mapping, stft.sample_rate)
  if split not in info["splits"]:
    raise ValueError(f"{data_dir} has no split {split!r}; it has "
                     f"{sorted(info['splits'])}")
  with fileio.FolderLock(out_dir, "rate experiment"):
    log(f"grid: {mapping.summary()}")
    log(f"upsampled arm: {placement.ratio}x {upsampler}, STFT frame t <- "
        f"upsampled frame t{placement.offset:+d}, residual centre offset "
        f"{placement.residual_ms:+.2f} ms")
    runs = []
    for seed in seeds:
      config_s = _prepare_config(config, steps, seed, info)
      arms, trained = [], {}
      for name in ARMS:
        arm = build_arm(name, config_s, info, placement, upsampler)
        initial = _weights_digest(arm.decoder)
        log(f"== seed {seed}, {name}")
        trained[name] = train_arm(arm, config_s, info, data_dir, log=log)
        trained[name].update(
            params=_count(arm.network.trainable_variables),
            decoder_params=_count(arm.decoder.trainable_variables),
            initial_decoder_digest=initial)
        arms.append(arm)
      start = time.time()
      scores = evaluate_arms(arms, config_s, info, data_dir, split, max_items)
      log(f"   evaluated {scores[ARMS[0]]['num_items']} {split} items in "
          f"{time.time() - start:.0f} s")
      for name in ARMS:
        scores[name].update(trained[name])
      runs.append({"seed": int(seed), "config": config_s.to_dict(),
                   "same_batches": len({trained[n]["batch_digest"]
                                        for n in ARMS}) == 1,
                   "same_initial_decoder": len(
                       {trained[n]["initial_decoder_digest"]
                        for n in ARMS}) == 1,
                   "scores": scores})
      for name in ARMS:
        common.print_row(COLUMNS, _row(name, seed, scores[name]))
    results = {
        "command": command, "data_dir": data_dir, "split": split,
        "steps": runs[0]["config"]["train"]["num_steps"] if runs else steps,
        "seeds": [int(s) for s in seeds], "upsampler": upsampler,
        "frame_mapping": mapping.describe(stft.sample_rate),
        "placement": placement.describe(), "machine": common.machine(),
        "load_average": list(os.getloadavg()),
        "summary": _summary(runs), "runs": runs}
    fileio.write_json(os.path.join(out_dir, RESULTS_FILE), results)
    _write_report(os.path.join(out_dir, REPORT_FILE), results)
  return results


def _row(name: str, seed, scores: Mapping[str, Any]) -> dict[str, Any]:
  row = {"arm": name, "seed": seed}
  row.update({k: v for k, v in scores.items() if k not in ("items",
                                                           "loss_curve")})
  return row


def _summary(runs) -> dict[str, dict[str, Any]]:
  """Per arm, the mean and the spread (max − min) over seeds; under
  `difference`, per metric the per-seed differences upsampled − interpolated
  (paired: same seed, batches and initial decoder) and their mean."""
  keys = ("valid_loss",) + SPECTRAL_METRICS + AUDIO_METRICS + (
      "train_seconds",)
  out = {}
  for name in ARMS:
    out[name] = {}
    for key in keys:
      values = [r["scores"][name][key] for r in runs]
      out[name][key] = _mean(values)
      finite = [v for v in values if math.isfinite(v)]
      out[name][f"{key}_spread"] = (float(max(finite) - min(finite))
                                    if finite else float("nan"))
  out["difference"] = {}
  for key in keys:
    per_seed = [r["scores"][UPSAMPLED][key] - r["scores"][INTERPOLATED][key]
                for r in runs]
    out["difference"][key] = {"per_seed": per_seed, "mean": _mean(per_seed)}
  return out


def _write_report(path: str, results: Mapping[str, Any]) -> None:
  """report.md: the setting, one table row per arm and seed (and the oracle),
  the means over seeds."""
  rows = []
  for run in results["runs"]:
    for name in ARMS:
      rows.append(_row(name, run["seed"], run["scores"][name]))
    oracle = run["scores"]["oracle_griffin_lim"]
    rows.append({**{key: "–" for key, _, _ in COLUMNS},
                 "arm": "oracle Griffin-Lim", "seed": run["seed"],
                 **{k: v for k, v in oracle.items() if k != "items"}})
  placement = results["placement"]
  fm = results["frame_mapping"]
  grid = fm["embedding_grid"]
  first = results["runs"][0] if results["runs"] else None
  model = first["config"]["model"] if first else {}
  lines = [
      "# Rate experiment: interpolate to the STFT frames, or upsample in the "
      "decoder",
      "",
      f"- command: `{results['command']}`",
      f"- machine: {results['machine']}; load average "
      f"{', '.join(f'{x:.2f}' for x in results['load_average'])} at the end",
      f"- date: {time.strftime('%Y-%m-%d')}",
      f"- data: `{results['data_dir']}`, scored on `{results['split']}`",
      f"- embedding grid: window {grid['frame_length']}, hop "
      f"{grid['frame_step']}{', centred' if grid['center'] else ''} "
      f"({fm['stft_frames_per_embedding_frame']:g} STFT frames per "
      f"embedding frame; STFT frame 0 at embedding frame "
      f"{fm['first_stft_frame_at_embedding_frame']:+.3f})",
      f"- `{INTERPOLATED}`: the input pipeline interpolates the embedding "
      "linearly at the STFT frame centres (the project's mapping, residual "
      "centre offset 0 ms)",
      f"- `{UPSAMPLED}`: the embedding at its own rate, a learned "
      f"{placement['ratio']}x {results['upsampler']} upsampling at the "
      "decoder's input, STFT frame t taking upsampled frame "
      f"t{placement['offset_frames']:+d}: residual centre offset "
      f"{placement['residual_centre_offset_ms']:+.2f} ms "
      f"({placement['residual_centre_offset_samples']:+.0f} samples)",
      f"- decoder: `{model.get('name', '?')}` (channels "
      f"{model.get('channels', '?')}, blocks {model.get('num_blocks', '?')}),"
      f" {results['steps']} steps per arm and seed, the same seed, initial "
      "decoder weights, batches (bucketed) and reconstruction loss for both "
      "arms" + (
          "" if all(r["same_batches"] and r["same_initial_decoder"]
                    for r in results["runs"]) else
          " — CHECK FAILED: the arms' batches or initial weights differ"),
      "",
      common.markdown_table(COLUMNS, rows),
      "",
      "loss: the project's reconstruction loss (L1 on the normalised "
      "log-STFT + spectral convergence) on the scored split; spectrogram "
      "metrics: the predicted log-STFT against the target (no phase); GL: "
      "the prediction through Griffin-Lim "
      f"({export_lib.GRIFFIN_LIM_ITERATIONS} iterations, as the export) "
      "scored with e2s_tf.metrics against the stored audio. params: trainable"
      " parameters of the trained network (the upsampled arm adds the "
      "upsampler's). train s: wall time of the training loop, tracing "
      "included.",
  ]
  if len(results["runs"]) > 1:
    summary = results["summary"]
    lines += ["", "Mean over seeds (spread: max − min over seeds):", ""]
    for name in ARMS:
      s = summary[name]
      lines.append(
          f"- `{name}`: loss {s['valid_loss']:.4f} "
          f"(spread {s['valid_loss_spread']:.4f}), spectrogram LSD "
          f"{s['spec_lsd_db']:.3f} dB (spread {s['spec_lsd_db_spread']:.3f}),"
          f" GL LSD {s['lsd_db']:.3f} dB (spread {s['lsd_db_spread']:.3f}), "
          f"MCD {s['mcd_db']:.2f} dB, PESQ {s['pesq_wb']:.3f}, STOI "
          f"{s['stoi']:.3f}")
  if results["runs"]:
    lines += ["", f"`{UPSAMPLED}` − `{INTERPOLATED}`, per seed (paired), "
              "and the mean:", ""]
    for key, fmt in (("valid_loss", "+.4f"), ("spec_lsd_db", "+.3f"),
                     ("spec_spectral_convergence", "+.4f"),
                     ("lsd_db", "+.3f"), ("mcd_db", "+.3f"),
                     ("stoi", "+.4f"), ("pesq_wb", "+.3f"),
                     ("train_seconds", "+.0f")):
      d = results["summary"]["difference"][key]
      seeds = ", ".join(format(v, fmt) for v in d["per_seed"])
      lines.append(f"- {key}: {seeds}; mean {format(d['mean'], fmt)}")
  with fileio.replacing(path) as f:
    f.write("\n".join(lines) + "\n")
