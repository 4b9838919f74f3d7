"""A learned frame-level speaker encoder: training, export, identification.

The network (x-vector style, on the project's frame grid):

    waveform [B, S]
      -> log-mel on the StftConfig grid, per-utterance mean removed [B, T, M]
      -> TDNN: 1-D convolutions, 'same' padding, dilated             [B, T, C]
      -> 1x1 bottleneck: frame embeddings (exported)   [B, T, bottleneck_dim]
      -> 1x1 widening, mean+std pooling over T, segment layers          [B, E]
      -> L2 normalisation: utterance embedding (exported)               [B, E]
      -> additive-margin softmax head (training only)            [B, speakers]

Convolutions with 'same' padding keep one output per STFT frame, so frame `t`
of the bottleneck is frame `t` of `e2s_tf.spectral.stft` on the same
StftConfig: T = StftConfig.num_frames(S).

`train(config, manifest, workdir)` trains on the speakers of a manifest
(utterances split per speaker into train and held-out), with checkpoints
(re-running resumes), TensorBoard scalars and console progress.
`export(workdir, export_dir)` writes a SavedModel that the `savedmodel:PATH`
embedder loads:

    serving_default(waveform [B, S] f32)
        -> {"embedding": [B, T, bottleneck_dim]}
    utterance_embedding(waveform [B, S] f32)
        -> {"utterance_embedding": [B, E]}   (unit norm)

plus `e2s_embedder.json` (dim and grid) and `speaker_encoder.json` (speakers,
held-out accuracies, config). `load_encoder`, `cosine`, `enroll` and
`identify` evaluate speaker similarity and closed-set identification with
the export alone.

Workdir layout:
    config.json        the resolved config
    speakers.json      the speaker vocabulary and the train / held-out item ids
    checkpoints/       ckpt-<step>, the last `keep_checkpoints`
    train/ heldout/    TensorBoard events
    evaluation.json    accuracies of the last checkpoint (written at the end)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import audio as audio_lib
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import spectral
from e2s_tf import summaries
from e2s_tf.embedders import base as embedders_base
from e2s_tf.embedders import logmel
from e2s_tf.embedders import savedmodel

CONFIG_FILE = "config.json"
SPEAKERS_FILE = "speakers.json"
EVALUATION_FILE = "evaluation.json"
CHECKPOINT_DIR = "checkpoints"
ENCODER_JSON = "speaker_encoder.json"
# Signature and output names of the export.
FRAME_SIGNATURE = savedmodel.SIGNATURE
FRAME_OUTPUT = savedmodel.OUTPUT
UTTERANCE_SIGNATURE = "utterance_embedding"
UTTERANCE_OUTPUT = "utterance_embedding"
# Variance floor of statistics pooling and norm floor of L2 normalisation.
_VARIANCE_FLOOR = 1e-6
_NORM_EPSILON = 1e-12


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. a non-finite loss)."""


# --------------------------------------------------------------------------
# The network.

class LogMelFrontEnd(keras.layers.Layer):
  """Waveform -> per-utterance mean-normalised log-mel on the StftConfig grid.

  The log-mel energies are those of the `logmel` embedder (same STFT frames,
  same mel matrix), floored at ln(log_floor).
  """

  def __init__(self, stft_config: spectral.StftConfig, num_mel_bins: int,
               lower_edge_hertz: float, log_floor: float, **kwargs):
    super().__init__(**kwargs)
    if log_floor < spectral.MAGNITUDE_FLOOR:
      raise ValueError(f"log_floor must be >= {spectral.MAGNITUDE_FLOOR} (the "
                       f"floor of the logmel embedder), got {log_floor}")
    self._logmel = logmel.LogMelEmbedder(stft_config, num_mel_bins,
                                         lower_edge_hertz)
    self._log_floor = math.log(log_floor)

  def call(self, waveform: tf.Tensor) -> tf.Tensor:
    """`[batch, samples]` -> `[batch, frames, mel]`."""
    features = tf.maximum(self._logmel.log_mel(waveform), self._log_floor)
    return features - tf.reduce_mean(features, axis=1, keepdims=True)


def _l2_normalize(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
  return tf.math.l2_normalize(x, axis=axis, epsilon=_NORM_EPSILON)


class SpeakerEncoder(keras.Model):
  """The TDNN encoder: frame embeddings and an utterance embedding.

  Fields of `model_config` are documented in configs/speaker_encoder.py.
  """

  def __init__(self, stft_config: spectral.StftConfig,
               model_config: ml_collections.ConfigDict, **kwargs):
    super().__init__(**kwargs)
    m = model_config
    layers = (len(m.channels), len(m.kernel_sizes), len(m.dilations))
    if len(set(layers)) != 1 or not layers[0]:
      raise ValueError("model.channels, model.kernel_sizes and model.dilations "
                       f"need one entry per frame layer, got {layers} entries")
    self.stft_config = stft_config
    self.bottleneck_dim = int(m.bottleneck_dim)
    self.embedding_dim = int(m.embedding_dim)
    self.front_end = LogMelFrontEnd(stft_config, m.num_mel_bins,
                                    m.lower_edge_hertz, m.log_floor)
    def norm():
      return keras.layers.BatchNormalization(momentum=m.batch_norm_momentum)

    frame_layers = []
    for channels, kernel, dilation in zip(m.channels, m.kernel_sizes,
                                          m.dilations):
      frame_layers += [
          keras.layers.Conv1D(channels, kernel, dilation_rate=dilation,
                              padding="same", activation="relu"),
          norm()]
    self.frame_layers = self._named("frame", frame_layers)
    self.bottleneck = keras.layers.Conv1D(
        self.bottleneck_dim, 1, activation=m.bottleneck_activation)
    pooling_layers = []
    if m.pooling_channels:
      pooling_layers = [
          keras.layers.Conv1D(m.pooling_channels, 1, activation="relu"), norm()]
    self.pooling_layers = self._named("pooling", pooling_layers)
    segment_layers = []
    for units in m.segment_units:
      segment_layers += [keras.layers.Dense(units, activation="relu"), norm()]
    self.segment_layers = self._named("segment", segment_layers)
    self.embedding_layer = keras.layers.Dense(self.embedding_dim)

  def _named(self, prefix: str,
             layers: list[keras.layers.Layer]) -> list[keras.layers.Layer]:
    """Makes each layer an attribute `<prefix>_<i>`; returns the list.

    tf.train.Checkpoint does not see layers held only in a list by a Keras 3
    model (Keras tracks lists itself, outside TF's checkpoint graph): each
    must also be an attribute, or its weights are not saved.
    """
    for i, layer in enumerate(layers):
      setattr(self, f"{prefix}_{i}", layer)
    return layers

  def frame_embeddings(self, waveform: tf.Tensor,
                       training: bool = False) -> tf.Tensor:
    """`[batch, samples]` -> `[batch, frames, bottleneck_dim]`."""
    x = self.front_end(waveform)
    for layer in self.frame_layers:
      x = layer(x, training=training)
    return self.bottleneck(x)

  def pool(self, frames: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Frame embeddings `[batch, frames, D]` -> segment embedding `[batch, E]`.

    Mean and standard deviation over all frames (the statistics pooling of
    x-vectors), then the segment layers; not normalised.
    """
    x = frames
    for layer in self.pooling_layers:
      x = layer(x, training=training)
    mean = tf.reduce_mean(x, axis=1)
    variance = tf.reduce_mean(tf.square(x - mean[:, tf.newaxis]), axis=1)
    x = tf.concat([mean, tf.sqrt(tf.maximum(variance, _VARIANCE_FLOOR))], -1)
    for layer in self.segment_layers:
      x = layer(x, training=training)
    return self.embedding_layer(x)

  def call(self, waveform: tf.Tensor,
           training: bool = False) -> dict[str, tf.Tensor]:
    """`[batch, samples]` -> {"frames", "embedding"}.

    "frames": `[batch, T, D]` frame embeddings; "embedding": `[batch, E]` the
    unit-norm utterance embedding.
    """
    frames = self.frame_embeddings(waveform, training=training)
    return {"frames": frames,
            "embedding": _l2_normalize(self.pool(frames, training=training))}


class AdditiveMarginHead(keras.layers.Layer):
  """Cosine similarities to one learnt unit vector per speaker.

  `am_softmax_loss` turns them into the additive-margin softmax loss
  (CosFace / AM-softmax): logits = scale * (cos - margin on the true class).
  """

  def __init__(self, num_speakers: int, **kwargs):
    super().__init__(**kwargs)
    self.num_speakers = int(num_speakers)

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name="kernel", shape=(int(input_shape[-1]), self.num_speakers),
        initializer="glorot_uniform")

  def call(self, embeddings: tf.Tensor) -> tf.Tensor:
    """`[batch, E]` -> cosines `[batch, speakers]`."""
    return tf.matmul(_l2_normalize(embeddings),
                     _l2_normalize(self.kernel, axis=0))


def am_softmax_loss(cosine: tf.Tensor, labels: tf.Tensor, margin: float,
                    scale: float) -> tf.Tensor:
  """Mean additive-margin softmax loss.

  Args:
    cosine: `[batch, speakers]` cosine similarities.
    labels: `[batch]` int speaker indices.
    margin: subtracted from the true class's cosine.
    scale: multiplies the cosines before the softmax.

  Returns:
    Scalar loss.
  """
  onehot = tf.one_hot(labels, tf.shape(cosine)[-1], dtype=cosine.dtype)
  logits = scale * (cosine - margin * onehot)
  return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))


def build_encoder(config: ml_collections.ConfigDict,
                  num_speakers: Optional[int] = None
                  ) -> tuple[SpeakerEncoder, Optional[AdditiveMarginHead]]:
  """The encoder (and the head when `num_speakers` is given), built."""
  stft_config = spectral.StftConfig.from_dict(config.stft.to_dict())
  encoder = SpeakerEncoder(stft_config, config.model, name="speaker_encoder")
  samples = stft_config.num_samples(2)
  out = encoder(tf.zeros([1, samples]), training=False)
  head = None
  if num_speakers is not None:
    head = AdditiveMarginHead(num_speakers, name="am_softmax_head")
    head(out["embedding"])
  return encoder, head


# --------------------------------------------------------------------------
# Data.

@dataclasses.dataclass
class Utterance:
  """One manifest item with its audio.

  Attributes:
    id: the manifest id.
    speaker: the speaker name.
    audio: `[samples]` float32 at the config's sample rate.
  """

  id: str
  speaker: str
  audio: np.ndarray


def load_utterances(manifest: str, sample_rate: int, min_samples: int,
                    log: Callable[[str], None] = print) -> list[Utterance]:
  """Loads the manifest's items (their `start`/`end` regions) with speakers.

  Items shorter than `min_samples` are skipped (and counted in the log).

  Raises:
    manifest.ManifestError: an item without a `speaker`.
    audio_lib.AudioError: unreadable audio (the message names the file).
  """
  items = manifest_lib.read_manifest(manifest)
  out, short = [], []
  for item in items:
    speaker = item.get("speaker")
    if not isinstance(speaker, str) or not speaker:
      raise manifest_lib.ManifestError(
          f"{manifest}: item {item['id']!r} has no 'speaker': the speaker "
          "encoder trains on speaker labels")
    audio = audio_lib.load_audio(item["audio"], sample_rate, item.get("start"),
                                 item.get("end"))
    if audio.shape[0] < min_samples:
      short.append(item["id"])
      continue
    out.append(Utterance(item["id"], speaker, audio))
  if short:
    log(f"skipped {len(short)} item(s) shorter than {min_samples} samples: "
        f"{short[:5]}{' ...' if len(short) > 5 else ''}")
  if not out:
    raise ValueError(f"{manifest}: no usable items")
  return out


def split_utterances(utterances: Sequence[Utterance], heldout_fraction: float,
                     seed: int, heldout_ids: Optional[Sequence[str]] = None
                     ) -> tuple[list[Utterance], list[Utterance]]:
  """Splits utterances per speaker into (train, held-out), deterministically.

  Args:
    utterances: the items.
    heldout_fraction: of each speaker's utterances, round(fraction * n) are
      held out, at most n - 1 (every speaker keeps one for training).
    seed: seed of the per-speaker choice.
    heldout_ids: the held-out item ids instead (every speaker must keep a
      training item); ids absent from `utterances` are an error.

  Returns:
    (train, held-out), each sorted by id.
  """
  by_speaker: dict[str, list[Utterance]] = {}
  for u in sorted(utterances, key=lambda u: u.id):
    by_speaker.setdefault(u.speaker, []).append(u)
  if heldout_ids is not None:
    wanted = set(heldout_ids)
    missing = sorted(wanted - {u.id for u in utterances})
    if missing:
      raise ValueError(f"held-out ids not among the usable items: "
                       f"{missing[:5]}")
    train = [u for u in utterances if u.id not in wanted]
    heldout = [u for u in utterances if u.id in wanted]
    empty = sorted(set(by_speaker) - {u.speaker for u in train})
    if empty:
      raise ValueError(f"speakers {empty} have no training utterance left")
  else:
    if not 0.0 <= heldout_fraction < 1.0:
      raise ValueError(f"heldout_fraction must be in [0, 1), got "
                       f"{heldout_fraction}")
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for speaker in sorted(by_speaker):
      group = by_speaker[speaker]
      order = rng.permutation(len(group))
      count = min(int(round(heldout_fraction * len(group))), len(group) - 1)
      chosen = set(order[:count].tolist())
      for i, u in enumerate(group):
        (heldout if i in chosen else train).append(u)
  return (sorted(train, key=lambda u: u.id),
          sorted(heldout, key=lambda u: u.id))


class CropSampler:
  """Random training crops, balanced over speakers, with gain and noise.

  Batch `k` is a pure function of (seed, k): a resumed run sees the batches
  an uninterrupted one would have.
  """

  def __init__(self, utterances: Sequence[Utterance], labels: Sequence[int],
               crop_samples: int, batch_size: int,
               data_config: ml_collections.ConfigDict, seed: int):
    self.audio = [u.audio for u in utterances]
    self.labels = np.asarray(labels, np.int32)
    self.by_label = [np.flatnonzero(self.labels == k)
                     for k in range(int(self.labels.max()) + 1)]
    self.by_label = [idx for idx in self.by_label if idx.size]
    self.crop_samples = int(crop_samples)
    self.batch_size = int(batch_size)
    self.data_config = data_config
    self.seed = int(seed)

  def _crop(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = self.crop_samples
    if audio.shape[0] < n:  # tile short utterances
      audio = np.tile(audio, -(-n // audio.shape[0]))
    start = int(rng.integers(0, audio.shape[0] - n + 1))
    return audio[start:start + n]

  def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(`[batch, crop_samples]` float32, `[batch]` int32 labels) of step k."""
    d = self.data_config
    rng = np.random.default_rng([self.seed, int(step)])
    waves = np.empty([self.batch_size, self.crop_samples], np.float32)
    labels = np.empty([self.batch_size], np.int32)
    for b in range(self.batch_size):
      group = self.by_label[int(rng.integers(len(self.by_label)))]
      index = int(group[int(rng.integers(group.size))])
      crop = self._crop(self.audio[index], rng)
      if d.gain_db:
        crop = crop * 10.0 ** (rng.uniform(-d.gain_db, d.gain_db) / 20.0)
      if rng.uniform() < d.noise_probability:
        rms = float(np.sqrt(np.mean(np.square(crop)))) or 1e-3
        snr = rng.uniform(*d.noise_snr_db)
        crop = crop + rng.normal(0.0, rms * 10.0 ** (-snr / 20.0), crop.shape)
      waves[b] = crop
      labels[b] = self.labels[index]
    return waves, labels


# --------------------------------------------------------------------------
# Identification helpers (NumPy).

@dataclasses.dataclass
class Enrolment:
  """Speaker centroids for closed-set identification.

  Attributes:
    labels: the enrolled speakers, sorted.
    centroids: `[speakers, E]` unit-norm mean embeddings, in `labels` order.
  """

  labels: list[str]
  centroids: np.ndarray


def _unit_rows(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True),
                        _NORM_EPSILON)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine similarity of paired embeddings.

  Args:
    a, b: `[E]` or `[N, E]` (broadcast against each other).

  Returns:
    `[]` or `[N]` float64 cosines.
  """
  return np.sum(_unit_rows(a) * _unit_rows(b), axis=-1)


def enroll(embeddings: np.ndarray, labels: Sequence[Any]) -> Enrolment:
  """Centroids of `embeddings` `[N, E]` per label (labels as strings)."""
  embeddings = _unit_rows(embeddings)
  labels = [str(x) for x in labels]
  if embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
    raise ValueError(f"need [N, E] embeddings and N labels, got "
                     f"{embeddings.shape} and {len(labels)}")
  names = sorted(set(labels))
  index = np.array([names.index(x) for x in labels])
  centroids = np.stack([embeddings[index == k].mean(axis=0)
                        for k in range(len(names))])
  return Enrolment(names, _unit_rows(centroids))


def identify(embeddings: np.ndarray, enrolment: Enrolment) -> list[str]:
  """The enrolled speaker nearest (cosine) to each embedding `[N, E]`."""
  scores = _unit_rows(embeddings) @ enrolment.centroids.T  # [N, speakers]
  return [enrolment.labels[k] for k in np.argmax(scores, axis=-1)]


def identification_accuracy(embeddings: np.ndarray, labels: Sequence[Any],
                            enrolment: Enrolment) -> float:
  """Fraction of `embeddings` `[N, E]` identified as their `labels`."""
  labels = [str(x) for x in labels]
  if not labels:
    return float("nan")
  found = identify(embeddings, enrolment)
  return float(np.mean([f == t for f, t in zip(found, labels)]))


def _check_waveforms(waveforms: Sequence[np.ndarray],
                     stft_config: spectral.StftConfig) -> list[np.ndarray]:
  out = []
  for i, w in enumerate(waveforms):
    w = np.asarray(w, np.float32)
    if w.ndim != 1:
      raise ValueError(f"waveform {i}: expected [samples], got {w.shape}")
    if stft_config.num_frames(w.shape[0]) < 1:
      raise ValueError(f"waveform {i}: {w.shape[0]} samples is shorter than "
                       f"one frame ({stft_config.frame_length} samples)")
    out.append(w)
  return out


def _utterance_function(encoder: SpeakerEncoder):
  """A traced `[1, samples]` -> `[1, E]` unit-norm embedding (inference)."""

  @tf.function(input_signature=[tf.TensorSpec([1, None], tf.float32)])
  def embed(waveform):
    return encoder(waveform, training=False)["embedding"]

  return embed


def embed_utterances(function: Callable[[tf.Tensor], tf.Tensor],
                     waveforms: Sequence[np.ndarray],
                     stft_config: spectral.StftConfig) -> np.ndarray:
  """Runs `function` ([1, samples] -> [1, E]) on each waveform: `[N, E]`."""
  rows = [np.asarray(function(tf.constant(w[np.newaxis])))[0]
          for w in _check_waveforms(waveforms, stft_config)]
  if not rows:
    raise ValueError("no waveforms to embed")
  return np.stack(rows).astype(np.float32)


# --------------------------------------------------------------------------
# Training.

def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=1, sort_keys=True, default=list)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a speaker "
                            "encoder workdir (e2s_tf.train_embedder)?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _write_json(value: Any, path: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True, default=list)
    f.write("\n")
  os.replace(tmp, path)


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _optimizer(config: ml_collections.ConfigDict) -> keras.optimizers.Optimizer:
  t = config.train
  warmup = min(t.warmup_steps, max(t.num_steps - 1, 0))
  schedule = keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0 if warmup else t.learning_rate,
      decay_steps=max(t.num_steps - warmup, 1), alpha=t.final_lr_fraction,
      warmup_target=t.learning_rate if warmup else None, warmup_steps=warmup)
  return keras.optimizers.AdamW(learning_rate=schedule,
                                weight_decay=t.weight_decay,
                                global_clipnorm=t.clip_norm or None)


def _fmt(values: Mapping[str, float]) -> str:
  return " ".join(f"{k}={v:.4f}" for k, v in values.items())


def _duration(seconds: float) -> str:
  m, s = divmod(int(max(seconds, 0)), 60)
  return f"{m}:{s:02d}"


def _prepare_workdir(config, workdir, vocabulary, train_set, heldout_set):
  """Writes config.json and speakers.json; refuses another run's workdir."""
  os.makedirs(workdir, exist_ok=True)
  config_path = os.path.join(workdir, CONFIG_FILE)
  speakers_path = os.path.join(workdir, SPEAKERS_FILE)
  resolved = json.loads(config_to_json(config))
  if os.path.exists(config_path):
    old = _read_json(config_path)
    for key in ("model", "stft"):
      if old.get(key) != resolved[key]:
        raise ValueError(
            f"{workdir} holds a speaker encoder with another {key} config; "
            "resume it with the same config or use another --workdir")
  if os.path.exists(speakers_path):
    old = _read_json(speakers_path)
    if old.get("speakers") != vocabulary:
      raise ValueError(
          f"{speakers_path}: the workdir was trained on speakers "
          f"{old.get('speakers')}, the manifest has {vocabulary}; use another "
          "--workdir")
  _write_json(resolved, config_path)
  _write_json({"speakers": vocabulary,
               "train": [u.id for u in train_set],
               "heldout": [u.id for u in heldout_set]}, speakers_path)


def evaluate(encoder: SpeakerEncoder, head: Optional[AdditiveMarginHead],
             train_set: Sequence[Utterance], heldout_set: Sequence[Utterance],
             vocabulary: Sequence[str],
             function: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
             enrolment: bool = True) -> dict[str, float]:
  """Utterance-level accuracies of whole held-out utterances.

  Returns:
    {"heldout_accuracy": by the head (when given), "heldout_enrolment_accuracy":
    nearest centroid of the training utterances' embeddings (when
    `enrolment`)}; NaN without held-out utterances.
  """
  function = function or _utterance_function(encoder)
  stft_config = encoder.stft_config
  out = {}
  if not heldout_set:
    return {"heldout_accuracy": float("nan"),
            "heldout_enrolment_accuracy": float("nan")}
  heldout = embed_utterances(function, [u.audio for u in heldout_set],
                             stft_config)
  labels = [u.speaker for u in heldout_set]
  if head is not None:
    predicted = np.argmax(head(tf.constant(heldout)).numpy(), axis=-1)
    out["heldout_accuracy"] = float(np.mean(
        [vocabulary[k] == t for k, t in zip(predicted, labels)]))
  if enrolment:
    train = embed_utterances(function, [u.audio for u in train_set],
                             stft_config)
    out["heldout_enrolment_accuracy"] = identification_accuracy(
        heldout, labels, enroll(train, [u.speaker for u in train_set]))
  return out


def train(config: ml_collections.ConfigDict, manifest: str, workdir: str,
          heldout_ids: Optional[Sequence[str]] = None,
          log: Callable[[str], None] = print,
          stop_at_step: Optional[int] = None) -> dict[str, Any]:
  """Trains (or resumes) the speaker encoder up to `config.train.num_steps`.

  Args:
    config: configs/speaker_encoder.py's `get_config()` (or a variant).
    manifest: a manifest whose items have a `speaker`.
    workdir: checkpoints, TensorBoard, config.json, speakers.json; a workdir
      with checkpoints is resumed (same model config and speakers required).
    heldout_ids: hold out these item ids instead of
      `config.data.heldout_fraction` of each speaker's utterances.
    log: console progress.
    stop_at_step: end this call early at this step (with a checkpoint), as an
      interruption would; the learning-rate schedule still spans num_steps.

  Returns:
    {"step", "loss", "accuracy" (of the last log interval), "history": [{"step",
    "loss", "accuracy"} per log interval of this call], and the held-out
    accuracies of `evaluate` at the end}.

  Raises:
    TrainingError: a non-finite loss (the last good checkpoint is kept).
  """
  stft_config = spectral.StftConfig.from_dict(config.stft.to_dict())
  crop_samples = int(round(config.data.crop_seconds * stft_config.sample_rate))
  if stft_config.num_frames(crop_samples) < 1:
    raise ValueError(f"data.crop_seconds={config.data.crop_seconds} is shorter "
                     "than one frame")
  t0 = time.time()
  utterances = load_utterances(manifest, stft_config.sample_rate,
                               stft_config.frame_length, log)
  train_set, heldout_set = split_utterances(
      utterances, config.data.heldout_fraction, config.train.seed, heldout_ids)
  vocabulary = sorted({u.speaker for u in utterances})
  if len(vocabulary) < 2:
    raise ValueError(f"{manifest}: a speaker encoder needs at least 2 speakers,"
                     f" got {vocabulary}")
  log(f"{len(utterances)} utterances of {len(vocabulary)} speakers loaded in "
      f"{time.time() - t0:.1f} s: {len(train_set)} train, {len(heldout_set)} "
      "held out")
  _prepare_workdir(config, workdir, vocabulary, train_set, heldout_set)
  label_of = {s: k for k, s in enumerate(vocabulary)}
  sampler = CropSampler(train_set, [label_of[u.speaker] for u in train_set],
                        crop_samples, config.data.batch_size, config.data,
                        config.train.seed)

  keras.utils.set_random_seed(config.train.seed)
  encoder, head = build_encoder(config, len(vocabulary))
  optimizer = _optimizer(config)
  variables = encoder.trainable_variables + head.trainable_variables
  optimizer.build(variables)
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  ckpt = tf.train.Checkpoint(encoder=encoder, head=head, optimizer=optimizer,
                             step=step)
  manager = tf.train.CheckpointManager(
      ckpt, os.path.join(workdir, CHECKPOINT_DIR),
      max_to_keep=config.train.keep_checkpoints)
  if manager.latest_checkpoint:
    ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    log(f"resumed from {manager.latest_checkpoint} at step {int(step)}")

  margin, scale = float(config.model.margin), float(config.model.scale)

  @tf.function(input_signature=[
      tf.TensorSpec([config.data.batch_size, crop_samples], tf.float32),
      tf.TensorSpec([config.data.batch_size], tf.int32)])
  def train_step(waveform, labels):
    with tf.GradientTape() as tape:
      embedding = encoder(waveform, training=True)["embedding"]
      cos = head(embedding)
      loss = am_softmax_loss(cos, labels, margin, scale)
    optimizer.apply(tape.gradient(loss, variables), variables)
    correct = tf.equal(tf.argmax(cos, axis=-1, output_type=tf.int32), labels)
    return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

  utterance_fn = _utterance_function(encoder)
  writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
  heldout_writer = tf.summary.create_file_writer(
      os.path.join(workdir, "heldout"))
  if int(step) == 0:
    with writer.as_default():
      summaries.write_config(config_to_json(config))

  t = config.train
  num_steps = t.num_steps
  start_time = time.time()
  start_step = int(step)
  deadline = start_time + 60.0 * t.max_minutes if t.max_minutes else None
  last_log_time, last_log_step = start_time, start_step
  sums = np.zeros(2)
  history: list[dict[str, float]] = []
  values: dict[str, float] = {}
  heldout: dict[str, float] = {}

  def save():
    manager.save(checkpoint_number=int(step))

  while int(step) < num_steps:
    s = int(step)
    waves, labels = sampler.batch(s)
    loss, accuracy = train_step(tf.constant(waves), tf.constant(labels))
    loss, accuracy = float(loss), float(accuracy)
    if not math.isfinite(loss):
      raise TrainingError(
          f"non-finite loss at step {s + 1}; stopped. The last good checkpoint "
          f"({manager.latest_checkpoint or 'none'}) is kept: lower "
          "config.train.learning_rate, then re-run to resume from it")
    step.assign_add(1)
    s += 1
    sums += (loss, accuracy)
    stopping = (s >= num_steps or (stop_at_step is not None
                                   and s >= stop_at_step)
                or (deadline is not None and time.time() > deadline))
    if s % t.log_every == 0 or stopping:
      now = time.time()
      count = s - last_log_step
      values = {"loss": sums[0] / count, "accuracy": sums[1] / count}
      history.append({"step": s, **values})
      rate = count / max(now - last_log_time, 1e-9)
      lr = float(optimizer.learning_rate)
      with writer.as_default():
        tf.summary.scalar("losses/am_softmax", values["loss"], step=s)
        tf.summary.scalar("metrics/accuracy", values["accuracy"], step=s)
        tf.summary.scalar("learning_rate", lr, step=s)
        tf.summary.scalar("steps_per_sec", rate, step=s)
      log(f"step {s}/{num_steps} {_fmt(values)} lr={lr:.2e} {rate:.2f} steps/s"
          f" left {_duration((num_steps - s) / max(rate, 1e-9))}")
      last_log_time, last_log_step, sums = now, s, np.zeros(2)
    if (s % t.eval_every == 0 or stopping) and heldout_set:
      heldout = evaluate(encoder, head, train_set, heldout_set, vocabulary,
                         utterance_fn, enrolment=False)
      with heldout_writer.as_default():
        tf.summary.scalar("metrics/accuracy", heldout["heldout_accuracy"],
                          step=s)
      log(f"held-out step {s}: accuracy={heldout['heldout_accuracy']:.4f} "
          f"({len(heldout_set)} utterances)")
    if s % t.checkpoint_every == 0 or stopping:
      save()
    if stopping:
      if s < num_steps:
        log(f"stopping at step {s}"
            + (" as asked" if stop_at_step is not None and s >= stop_at_step
               else ": config.train.max_minutes reached"))
      break
  if manager.latest_checkpoint is None or (
      int(manager.latest_checkpoint.rsplit("-", 1)[-1]) != int(step)):
    save()
  results = {"step": int(step)}
  if heldout_set:
    results.update(evaluate(encoder, head, train_set, heldout_set, vocabulary,
                            utterance_fn))
    with heldout_writer.as_default():
      for k, v in results.items():
        if k != "step":
          tf.summary.scalar(f"metrics/{k}", v, step=int(step))
    log(f"held-out step {int(step)}: "
        f"{_fmt({k: v for k, v in results.items() if k != 'step'})}")
  _write_json(results, os.path.join(workdir, EVALUATION_FILE))
  writer.flush()
  heldout_writer.flush()
  total = time.time() - start_time
  log(f"done: step {int(step)} in {_duration(total)} "
      f"({(int(step) - start_step) / max(total, 1e-9):.2f} steps/s); "
      f"checkpoints in {manager.directory}")
  return {**values, **results, "history": history}


def restore_encoder(workdir: str) -> tuple[SpeakerEncoder,
                                           ml_collections.ConfigDict,
                                           dict[str, Any]]:
  """(encoder at the latest checkpoint, config, speakers.json) of a workdir."""
  config = load_config(workdir)
  speakers = _read_json(os.path.join(workdir, SPEAKERS_FILE))
  encoder, _ = build_encoder(config)
  latest = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
  if latest is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint; train first")
  ckpt = tf.train.Checkpoint(encoder=encoder)
  ckpt.restore(latest).expect_partial().assert_existing_objects_matched()
  return encoder, config, speakers


# --------------------------------------------------------------------------
# Export.

class EncoderModule(tf.Module):
  """The exported endpoints (see the module docstring)."""

  def __init__(self, encoder: SpeakerEncoder):
    super().__init__(name="e2s_speaker_encoder")
    self.encoder = encoder
    spec = tf.TensorSpec([None, None], tf.float32, name="waveform")

    @tf.function(input_signature=[spec])
    def frames(waveform):
      return {FRAME_OUTPUT: self.encoder.frame_embeddings(waveform,
                                                          training=False)}

    @tf.function(input_signature=[spec])
    def utterance(waveform):
      return {UTTERANCE_OUTPUT: self.encoder(waveform,
                                             training=False)["embedding"]}

    self.frames = frames
    self.utterance = utterance


def export(workdir: str, export_dir: str,
           overwrite: bool = False) -> dict[str, Any]:
  """Exports the latest checkpoint of `workdir`; returns speaker_encoder.json.

  Writes the SavedModel, `e2s_embedder.json` (dim, grid) and
  `speaker_encoder.json` into a temporary sibling, then swaps it in
  (`fileio.write_folder`): a previous encoder export (or an empty folder) is
  replaced, anything else only with `overwrite`; a folder holding `workdir`
  never.
  """
  encoder, config, speakers = restore_encoder(workdir)
  module = EncoderModule(encoder)
  grid = embedders_base.Grid.from_stft(encoder.stft_config)
  evaluation_path = os.path.join(workdir, EVALUATION_FILE)
  evaluation = (_read_json(evaluation_path)
                if os.path.exists(evaluation_path) else {})
  latest = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
  meta = {
      "format": 1,
      "step": int(latest.rsplit("-", 1)[-1]),
      "speakers": speakers["speakers"],
      "num_train_utterances": len(speakers["train"]),
      "num_heldout_utterances": len(speakers["heldout"]),
      "evaluation": evaluation,
      "stft": encoder.stft_config.to_dict(),
      "grid": grid.to_dict(),
      "frame_dim": encoder.bottleneck_dim,
      "embedding_dim": encoder.embedding_dim,
      "model": config.model.to_dict(),
      "endpoints": {
          FRAME_SIGNATURE: f"(waveform [B,S] f32) -> {FRAME_OUTPUT} [B,T,"
                           f"{encoder.bottleneck_dim}], T = num_frames(S)",
          UTTERANCE_SIGNATURE: f"(waveform [B,S] f32) -> {UTTERANCE_OUTPUT} "
                               f"[B,{encoder.embedding_dim}] unit norm"},
  }

  def write(tmp):
    tf.saved_model.save(module, tmp, signatures={
        FRAME_SIGNATURE: module.frames,
        UTTERANCE_SIGNATURE: module.utterance})
    savedmodel.write_embedder_json(tmp, encoder.bottleneck_dim, grid)
    _write_json(meta, os.path.join(tmp, ENCODER_JSON))

  fileio.write_folder(export_dir, write, marker=ENCODER_JSON,
                      overwrite=overwrite, program="train_embedder",
                      protect=[workdir])
  return meta


class LoadedSpeakerEncoder:
  """An exported encoder, NumPy in and out; needs only the SavedModel.

  Attributes:
    meta: speaker_encoder.json.
    stft_config: the frame grid (and sample rate) of the model.
  """

  def __init__(self, export_dir: str):
    path = os.path.join(export_dir, ENCODER_JSON)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} not found: is {export_dir!r} an export "
                              "of e2s_tf.train_embedder?")
    self.meta = _read_json(path)
    self.stft_config = spectral.StftConfig.from_dict(self.meta["stft"])
    self.module = tf.saved_model.load(export_dir)
    self._frames = self.module.signatures[FRAME_SIGNATURE]
    utterance = self.module.signatures[UTTERANCE_SIGNATURE]
    self._utterance = lambda w: utterance(waveform=w)[UTTERANCE_OUTPUT]

  @property
  def speakers(self) -> list[str]:
    return list(self.meta["speakers"])

  def frame_embeddings(self, waveform: np.ndarray) -> np.ndarray:
    """`[samples]` -> `[frames, frame_dim]` on the model's grid."""
    w, = _check_waveforms([waveform], self.stft_config)
    return self._frames(waveform=tf.constant(w[np.newaxis]))[
        FRAME_OUTPUT].numpy()[0]

  def utterance_embeddings(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
    """List of `[samples_i]` waveforms -> `[N, E]` unit-norm embeddings."""
    return embed_utterances(self._utterance, waveforms, self.stft_config)


def load_encoder(export_dir: str) -> LoadedSpeakerEncoder:
  """Loads an export of `export` (e2s_tf.train_embedder)."""
  return LoadedSpeakerEncoder(export_dir)
