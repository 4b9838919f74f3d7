"""Masked training losses: small pure functions over padded batches.

Every loss takes a frame mask `[batch, frames]` (1 = valid, 0 = padding) and
is written so that padding frames never contribute, whatever they hold: the
inputs are replaced by zeros outside the mask (`tf.where`, so even inf/NaN
padding can neither leak into the value nor into the gradients) before any
arithmetic.

Spectrograms reach the losses *normalised* per bin with the train statistics
(`(log_stft - mean) / std`, see dataset_info.json); the losses that need linear
magnitudes (spectral convergence, log-mel) de-normalise first with the
`log_stft_mean`/`log_stft_std` they are given (default: mean 0, std 1).

Adversarial losses (least-squares and hinge) and feature matching for the GAN
live here too, registered by name in `ADVERSARIAL_LOSSES`.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from e2s_tf import masking
from e2s_tf import spectral

# De-normalised predicted log-magnitudes are clipped to this before `exp` so an
# untrained decoder cannot overflow float32 in the squared magnitudes
# (exp(2 * 20) ~ 2e17). Real spectra stay far below: |X| <= the window sum.
MAX_LOG_MAGNITUDE = 20.0
# Floor of the ratio under the square root of the spectral convergence: keeps
# its gradient finite for a perfect (or empty) prediction.
_SC_RATIO_FLOOR = 1e-12


def _as_float(x) -> tf.Tensor:
  return tf.cast(tf.convert_to_tensor(x), tf.float32)


def zero_padding(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """`values` `[batch, frames, ...]` as float32 with every padding frame 0,
  NaN/inf-safe (`masking.zero_padding`); `mask` `[batch, frames]`."""
  return masking.zero_padding(_as_float(values), mask)


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Mean of `values` over valid frames and all trailing dimensions.

  Args:
    values: `[batch, frames, ...]`.
    mask: `[batch, frames]`.

  Returns:
    Scalar float32: sum over valid entries / number of valid entries (0 for an
    all-padding batch).
  """
  values = zero_padding(values, mask)
  mask = _as_float(mask)
  per_frame = tf.cast(tf.reduce_prod(tf.shape(values)[2:]), tf.float32)
  count = tf.reduce_sum(mask) * per_frame
  return tf.math.divide_no_nan(
      tf.reduce_sum(masking.apply_mask(values, mask)), count)


def denormalize(log_stft: tf.Tensor,
                log_stft_mean=None,
                log_stft_std=None) -> tf.Tensor:
  """Normalised `[batch, frames, bins]` -> natural-log magnitude."""
  log_stft = _as_float(log_stft)
  if log_stft_std is not None:
    log_stft = log_stft * _as_float(log_stft_std)
  if log_stft_mean is not None:
    log_stft = log_stft + _as_float(log_stft_mean)
  return log_stft


def masked_l1(target: tf.Tensor, pred: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Mean absolute error over valid frames x bins (normalised log-STFT).

  Args:
    target, pred: `[batch, frames, bins]`.
    mask: `[batch, frames]`.

  Returns:
    Scalar float32.
  """
  target, pred = zero_padding(target, mask), zero_padding(pred, mask)
  return masked_mean(tf.abs(target - pred), mask)


def _linear_magnitudes(target_log, pred_log, mask, log_stft_mean, log_stft_std,
                       max_log_magnitude):
  """Padding-free linear magnitudes of target and (clipped) prediction."""
  target = denormalize(zero_padding(target_log, mask), log_stft_mean,
                       log_stft_std)
  pred = denormalize(zero_padding(pred_log, mask), log_stft_mean, log_stft_std)
  pred = tf.minimum(pred, max_log_magnitude)
  return (masking.apply_mask(tf.exp(target), mask),
          masking.apply_mask(tf.exp(pred), mask))


def spectral_convergence_loss(target_log: tf.Tensor,
                              pred_log: tf.Tensor,
                              mask: tf.Tensor,
                              log_stft_mean=None,
                              log_stft_std=None,
                              max_log_magnitude: float = MAX_LOG_MAGNITUDE
                              ) -> tf.Tensor:
  """||S - S_hat||_F / ||S||_F on linear magnitude, averaged over items.

  `spectral.spectral_convergence` (which is also the metric), made safe for
  training: padding is zeroed before `exp`, the predicted log is clipped at
  `max_log_magnitude`, and the ratio under the root is floored so the
  gradient stays finite for perfect or empty items.

  Args:
    target_log, pred_log: `[batch, frames, bins]` normalised log-STFT.
    mask: `[batch, frames]`.
    log_stft_mean, log_stft_std: `[bins]` (or scalars) used to de-normalise.
    max_log_magnitude: clip of the de-normalised predicted log-magnitude.

  Returns:
    Scalar float32: mean over items with at least one valid frame.
  """
  target, pred = _linear_magnitudes(target_log, pred_log, mask, log_stft_mean,
                                    log_stft_std, max_log_magnitude)
  per_item = spectral.spectral_convergence(target, pred,
                                          ratio_floor=_SC_RATIO_FLOOR)
  has_frames = tf.cast(tf.reduce_max(_as_float(mask), axis=1) > 0, tf.float32)
  return tf.math.divide_no_nan(tf.reduce_sum(per_item * has_frames),
                               tf.reduce_sum(has_frames))


def mel_matrix(num_mel_bins: int,
               stft_config: spectral.StftConfig = spectral.DEFAULT,
               lower_edge_hertz: float = 0.0,
               upper_edge_hertz: Optional[float] = None) -> tf.Tensor:
  """`[bins, num_mel_bins]` mel filterbank on the frame grid's bins."""
  if upper_edge_hertz is None:
    upper_edge_hertz = stft_config.sample_rate / 2.0
  return tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=num_mel_bins, num_spectrogram_bins=stft_config.num_bins,
      sample_rate=stft_config.sample_rate, lower_edge_hertz=lower_edge_hertz,
      upper_edge_hertz=upper_edge_hertz)


def log_mel_l1(target_log: tf.Tensor,
               pred_log: tf.Tensor,
               mask: tf.Tensor,
               mel_weights: tf.Tensor,
               log_stft_mean=None,
               log_stft_std=None,
               max_log_magnitude: float = MAX_LOG_MAGNITUDE) -> tf.Tensor:
  """L1 between log-mel spectra, mean over valid frames x mel bins.

  Args:
    target_log, pred_log: `[batch, frames, bins]` normalised log-STFT.
    mask: `[batch, frames]`.
    mel_weights: `[bins, mel_bins]`, e.g. from `mel_matrix`.
    log_stft_mean, log_stft_std: `[bins]` used to de-normalise.
    max_log_magnitude: clip of the de-normalised predicted log-magnitude.

  Returns:
    Scalar float32. Mel energies are floored at `spectral.MAGNITUDE_FLOOR`.
  """
  target, pred = _linear_magnitudes(target_log, pred_log, mask, log_stft_mean,
                                    log_stft_std, max_log_magnitude)
  mel_weights = _as_float(mel_weights)

  def log_mel(magnitude):
    return tf.math.log(tf.maximum(
        tf.tensordot(magnitude, mel_weights, axes=1), spectral.MAGNITUDE_FLOOR))

  return masked_mean(tf.abs(log_mel(target) - log_mel(pred)), mask)


def default_loss_config() -> ml_collections.ConfigDict:
  """Weights of the reconstruction loss; `ReconstructionLoss(**this)`."""
  config = ml_collections.ConfigDict()
  # Weight of the L1 on the normalised log-STFT (every bin counts equally).
  config.l1_weight = 1.0
  # Weight of the spectral convergence on linear magnitude (loud bins count).
  config.spectral_convergence_weight = 1.0
  # Weight of the L1 between log-mel spectra; 0 disables (and skips) it.
  config.log_mel_weight = 0.0
  # Mel bands of the log-mel term.
  config.num_mel_bins = 80
  return config


class ReconstructionLoss:
  """Weighted sum of the masked reconstruction terms.

  Calling it on `(target, pred, mask)` (normalised `[batch, frames, bins]`
  spectrograms and the `[batch, frames]` mask) returns a dict of scalars:
  `loss` (the weighted total), `l1`, `spectral_convergence` and, when its
  weight is positive, `log_mel_l1`. Terms with weight 0 except log-mel are
  still reported, for monitoring.
  """

  def __init__(self,
               log_stft_mean=None,
               log_stft_std=None,
               l1_weight: float = 1.0,
               spectral_convergence_weight: float = 1.0,
               log_mel_weight: float = 0.0,
               num_mel_bins: int = 80,
               stft_config: spectral.StftConfig = spectral.DEFAULT):
    for name, weight in (("l1_weight", l1_weight),
                         ("spectral_convergence_weight",
                          spectral_convergence_weight),
                         ("log_mel_weight", log_mel_weight)):
      if weight < 0:
        raise ValueError(
            f"ReconstructionLoss: {name} must be >= 0, got {weight}")
    self.log_stft_mean = (None if log_stft_mean is None else
                          tf.constant(np.asarray(log_stft_mean, np.float32)))
    self.log_stft_std = (None if log_stft_std is None else
                         tf.constant(np.asarray(log_stft_std, np.float32)))
    self.weights = {"l1": float(l1_weight),
                    "spectral_convergence": float(spectral_convergence_weight),
                    "log_mel_l1": float(log_mel_weight)}
    self.mel_weights = (mel_matrix(num_mel_bins, stft_config)
                        if log_mel_weight > 0 else None)

  @property
  def term_names(self) -> tuple[str, ...]:
    """Names of the reported terms, in order, without `loss`."""
    names = ("l1", "spectral_convergence")
    return names + (("log_mel_l1",) if self.mel_weights is not None else ())

  def __call__(self, target: tf.Tensor, pred: tf.Tensor,
               mask: tf.Tensor) -> dict[str, tf.Tensor]:
    stats = dict(log_stft_mean=self.log_stft_mean,
                 log_stft_std=self.log_stft_std)
    terms = {
        "l1": masked_l1(target, pred, mask),
        "spectral_convergence": spectral_convergence_loss(
            target, pred, mask, **stats),
    }
    if self.mel_weights is not None:
      terms["log_mel_l1"] = log_mel_l1(target, pred, mask, self.mel_weights,
                                       **stats)
    total = tf.add_n([self.weights[k] * v for k, v in terms.items()])
    return {"loss": total, **terms}


# ----------------------------------------------------------------------------
# Adversarial losses. Discriminator outputs are lists over scales of logits
# maps `[batch, frames_s, ...]`, each with its own `[batch, frames_s]` mask.
# As above, padding is zeroed before any arithmetic.


def lsgan_discriminator_loss(real_logits, fake_logits, mask) -> tf.Tensor:
  """Least squares: mean (D(real) - 1)^2 + mean D(fake)^2 over valid cells."""
  real, fake = zero_padding(real_logits, mask), zero_padding(fake_logits, mask)
  return (masked_mean(tf.square(real - 1.0), mask) +
          masked_mean(tf.square(fake), mask))


def lsgan_generator_loss(fake_logits, mask) -> tf.Tensor:
  """Least squares: mean (D(fake) - 1)^2 over valid cells."""
  return masked_mean(tf.square(zero_padding(fake_logits, mask) - 1.0), mask)


def hinge_discriminator_loss(real_logits, fake_logits, mask) -> tf.Tensor:
  """Hinge: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
  real, fake = zero_padding(real_logits, mask), zero_padding(fake_logits, mask)
  return (masked_mean(tf.nn.relu(1.0 - real), mask) +
          masked_mean(tf.nn.relu(1.0 + fake), mask))


def hinge_generator_loss(fake_logits, mask) -> tf.Tensor:
  """Hinge: mean -D(fake)."""
  return masked_mean(-zero_padding(fake_logits, mask), mask)


class AdversarialLoss(NamedTuple):
  discriminator: Callable[..., tf.Tensor]  # (real_logits, fake_logits, mask)
  generator: Callable[..., tf.Tensor]  # (fake_logits, mask)


ADVERSARIAL_LOSSES: Mapping[str, AdversarialLoss] = {
    "lsgan": AdversarialLoss(lsgan_discriminator_loss, lsgan_generator_loss),
    "hinge": AdversarialLoss(hinge_discriminator_loss, hinge_generator_loss),
}


def adversarial_loss(name: str) -> AdversarialLoss:
  """The (discriminator, generator) loss pair registered as `name`."""
  if name not in ADVERSARIAL_LOSSES:
    raise ValueError(f"unknown adversarial loss {name!r}; known: "
                     f"{sorted(ADVERSARIAL_LOSSES)}")
  return ADVERSARIAL_LOSSES[name]


def feature_matching_loss(real_features: Sequence[tf.Tensor],
                          fake_features: Sequence[tf.Tensor],
                          mask: tf.Tensor) -> tf.Tensor:
  """Mean over layers of the masked L1 between feature maps.

  Args:
    real_features, fake_features: equally long lists of
      `[batch, frames_s, ...]` maps; the real ones are not differentiated.
    mask: `[batch, frames_s]` mask of this scale.

  Returns:
    Scalar float32 (0 for empty lists).
  """
  if len(real_features) != len(fake_features):
    raise ValueError(f"feature_matching_loss: {len(real_features)} real vs "
                     f"{len(fake_features)} fake feature maps")
  if not real_features:
    return tf.constant(0.0)
  return tf.add_n([
      masked_l1(tf.stop_gradient(r), f, mask)
      for r, f in zip(real_features, fake_features)]) / len(real_features)
