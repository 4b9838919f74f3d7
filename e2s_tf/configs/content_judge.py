r"""Config of the content judge (e2s_tf/content/): a CTC phone recogniser.

    python -m e2s_tf.train_content_judge --manifest=M --workdir=W \
        [--config=content_judge[:testing]] [--config.train.num_steps=1200]

`get_config()` is tuned for the demo corpus (8 espeak-ng speakers x 40
utterances of ~5 s; its train split of 256 items, 205 trained on and 51 held
out) on two shared CPU cores: 500 steps in about two minutes, held-out PER
0.078 (at most three minutes, `train.max_minutes`, on a busier machine:
PER 0.096 after 397 steps). The `testing` variant is a smaller model for
the test suite (about a minute on one core).
"""

import ml_collections

from e2s_tf import spectral


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  """The judge's config; `variant` is `default` or `testing`."""
  if variant not in _VARIANTS:
    raise ValueError(f"unknown content_judge config variant {variant!r}; "
                     f"known: {sorted(_VARIANTS)}")
  config = ml_collections.ConfigDict()

  # The frame grid of the log-mel front end (the project's StftConfig).
  config.stft = ml_collections.ConfigDict(spectral.StftConfig().to_dict())

  # The phone targets: espeak-ng's G2P of each item's `text`
  # (e2s_tf.content.g2p), in this espeak-ng language, whatever the accent of
  # the voice that spoke it.
  config.language = "en-us"

  # The network (e2s_tf.content.network.ContentJudgeNetwork).
  config.model = ml_collections.ConfigDict()
  # Log-mel front end: mel bands, lowest band edge (Hz) and the floor of the
  # mel energies before the log; features are mean-normalised per utterance.
  config.model.num_mel_bins = 64
  config.model.lower_edge_hertz = 20.0
  config.model.log_floor = 1e-4
  # Consecutive STFT frames stacked into one network frame (3: 30 ms frames,
  # a third of the compute; espeak-ng speaks ~12 phones/s and CTC needs one
  # frame per phone, plus a blank between repeated phones).
  config.model.frame_stack = 3
  # Channels of the projection and of every residual block.
  config.model.channels = 256
  # One entry per residual block: the depthwise convolution's kernel (in
  # network frames) and dilation.
  config.model.kernel_sizes = (11, 11, 11, 11, 11, 11)
  config.model.dilations = (1, 1, 1, 1, 1, 1)
  # Dropout after every block (training only).
  config.model.dropout = 0.1
  # SpecAugment-lite (training only): masks set to the utterance mean, each
  # with a width uniform in [0, width]: `freq_masks` over mel bands
  # (`freq_width` bands) and `time_masks` over frames (`time_width` STFT
  # frames); 0 masks disables a kind.
  config.model.spec_augment = ml_collections.ConfigDict()
  config.model.spec_augment.freq_masks = 2
  config.model.spec_augment.freq_width = 8
  config.model.spec_augment.time_masks = 2
  config.model.spec_augment.time_width = 10

  # Training data: whole utterances of the manifest's items with a `text`.
  config.data = ml_collections.ConfigDict()
  # Fraction of the items held out for the validation PER (chosen by the
  # seed; at least one item stays for training).
  config.data.heldout_fraction = 0.2
  # Utterances per batch; batches are buckets of utterances of similar
  # length (sorted with a random jitter each epoch), padded to the longest.
  config.data.batch_size = 16
  # Relative jitter of the lengths when sorting into buckets (0: the same
  # buckets every epoch, in another order).
  config.data.bucket_jitter = 0.1

  # tf.distribute: the content judge trains on one device only ('default':
  # the first GPU, else the CPU); other values are refused.
  config.distribution = "default"

  # Optimisation and bookkeeping (as for the decoders, e2s_tf/training).
  config.train = ml_collections.ConfigDict()
  # Total optimiser steps; the same command resumes up to this many.
  config.train.num_steps = 500
  # Stop at this many wall-clock minutes even before num_steps (0 = no
  # limit); a checkpoint is written when it stops. The default is a safety
  # net for `make demo` on slow machines: num_steps takes ~2 min on 2
  # cores.
  config.train.max_minutes = 3.0
  # Peak learning rate of Adam; `lr_warmup_steps` of linear warm-up (at most
  # num_steps - 1), then cosine decay to `final_lr_fraction` x peak at
  # num_steps (or at max_minutes, whichever comes first).
  config.train.learning_rate = 3e-3
  config.train.lr_warmup_steps = 100
  config.train.final_lr_fraction = 0.02
  # Adam betas.
  config.train.adam_b1 = 0.9
  config.train.adam_b2 = 0.999
  # Global gradient-norm clipping (0 disables) and decoupled weight decay
  # (AdamW; 0 gives plain Adam).
  config.train.clip_norm = 5.0
  config.train.weight_decay = 0.0
  # Console + TensorBoard scalars every N steps.
  config.train.log_every = 50
  # Held-out PER (greedy decoding of whole utterances) every N steps; the
  # weights of the lowest held-out PER so far are kept in `best/`.
  config.train.eval_every = 100
  # Checkpoint every N steps, keeping the last K.
  config.train.checkpoint_every = 100
  config.train.keep_checkpoints = 2
  # Finite divergence: stop when the logged loss is more than
  # divergence_factor x the median of the earlier logged losses at
  # divergence_patience logs in a row (0 disables); a checkpoint whose
  # weights give such a loss is not written.
  config.train.divergence_factor = 10.0
  config.train.divergence_patience = 3
  # Seed of the split, initialisation, dropout, SpecAugment and the batches
  # (batch k is a function of (seed, k) alone, so a resumed run sees the
  # same batches).
  config.train.seed = 0

  _VARIANTS[variant](config)
  config.lock()
  return config


def _default(config: ml_collections.ConfigDict) -> None:
  del config


def _testing(config: ml_collections.ConfigDict) -> None:
  """A smaller model and 600 steps: about a minute on one core for ~60
  utterances."""
  m = config.model
  m.num_mel_bins = 40
  m.channels = 128
  m.kernel_sizes = (11, 11, 11, 11)
  m.dilations = (1, 1, 1, 1)
  config.data.batch_size = 8
  t = config.train
  t.num_steps = 600
  t.max_minutes = 0.0
  t.lr_warmup_steps = 60
  t.log_every = 50
  t.eval_every = 200
  t.checkpoint_every = 200


_VARIANTS = {"default": _default, "testing": _testing}
