r"""Config of the frame-level speaker encoder (e2s_tf/speaker/).

    python -m e2s_tf.train_embedder --manifest=M --workdir=W \
        [--config=speaker_encoder[:testing]] \
        [--config.train.num_steps=800]

`get_config()` is tuned for the demo corpus (8 espeak-ng speakers x 40
utterances of ~5 s) on two CPU cores: a few minutes of training. The
`testing` variant is a tiny model for the test suite (seconds).
"""

import ml_collections

from e2s_tf import spectral


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  """The encoder config; `variant` is `default` or `testing`."""
  if variant not in _VARIANTS:
    raise ValueError(f"unknown speaker_encoder config variant {variant!r}; "
                     f"known: {sorted(_VARIANTS)}")
  config = ml_collections.ConfigDict()

  # The frame grid of the front end and of the exported frames (the project's
  # StftConfig; `--config.stft.frame_length=512` gives the original grid).
  config.stft = ml_collections.ConfigDict(spectral.StftConfig().to_dict())

  # The network (e2s_tf.speaker.network.SpeakerEncoder).
  config.model = ml_collections.ConfigDict()
  # Log-mel front end: mel bands, lowest band edge (Hz) and the floor of the
  # mel energies before the log (quiet frames sit at ln(floor)); features are
  # mean-normalised per utterance over its frames.
  config.model.num_mel_bins = 40
  config.model.lower_edge_hertz = 20.0
  config.model.log_floor = 1e-4
  # TDNN frame layers (x-vector style 1-D convolutions, 'same' padding so that
  # frame t stays frame t of the grid): channels, kernel sizes and dilations,
  # one entry per layer; ReLU then batch normalisation.
  config.model.channels = (128, 128, 128, 128)
  config.model.kernel_sizes = (5, 3, 3, 1)
  config.model.dilations = (1, 2, 3, 1)
  # Momentum of the batch-norm moving statistics (used at inference).
  config.model.batch_norm_momentum = 0.99
  # The frame-level bottleneck: the exported [T, bottleneck_dim] embedding and
  # its activation (a Keras name). 'linear' keeps every unit informative;
  # 'tanh' bounds it but saturates (about half the values beyond |0.9| on
  # the demo corpus), which the decoders then cannot invert.
  config.model.bottleneck_dim = 64
  config.model.bottleneck_activation = "linear"
  # A 1x1 layer that widens the bottleneck before statistics pooling (0 pools
  # the bottleneck itself).
  config.model.pooling_channels = 256
  # Segment layers after mean+std pooling (ReLU + batch norm), then a linear
  # segment embedding of `embedding_dim` (L2-normalised for the head and for
  # the `utterance_embedding` export).
  config.model.segment_units = (128,)
  config.model.embedding_dim = 128
  # Additive-margin softmax head (training only): logits = scale * (cos - margin
  # on the true class).
  config.model.margin = 0.2
  config.model.scale = 30.0

  # Training data: the manifest's items with a `speaker`, split per speaker.
  config.data = ml_collections.ConfigDict()
  # Fraction of each speaker's utterances held out (at least one stays for
  # training; speakers with one utterance hold none out).
  config.data.heldout_fraction = 0.2
  # Random crops of this many seconds (shorter utterances are tiled).
  config.data.crop_seconds = 2.0
  # Crops per batch.
  config.data.batch_size = 32
  # Random gain in dB, uniform in [-gain_db, +gain_db] (0 disables).
  config.data.gain_db = 6.0
  # White noise added to a crop with this probability, at an SNR drawn
  # uniformly from `noise_snr_db` (low, high) in dB.
  config.data.noise_probability = 0.3
  config.data.noise_snr_db = (10.0, 40.0)

  # tf.distribute: the speaker-encoder trainer runs on one device only
  # ('default': the first GPU, else the CPU); other values are refused.
  config.distribution = "default"

  # Optimisation and bookkeeping (as for the decoders, e2s_tf/training).
  config.train = ml_collections.ConfigDict()
  # Total optimiser steps; the same command resumes up to this many.
  config.train.num_steps = 600
  # Stop at this many wall-clock minutes even before num_steps (0 = no limit);
  # a checkpoint is written when it stops.
  config.train.max_minutes = 0.0
  # Peak learning rate of Adam; `lr_warmup_steps` of linear warm-up (at most
  # num_steps - 1), then cosine decay to `final_lr_fraction` x peak at
  # num_steps (or at max_minutes, whichever comes first).
  config.train.learning_rate = 3e-3
  config.train.lr_warmup_steps = 50
  config.train.final_lr_fraction = 0.02
  # Adam betas (those of Keras' AdamW defaults).
  config.train.adam_b1 = 0.9
  config.train.adam_b2 = 0.999
  # Global gradient-norm clipping (0 disables) and decoupled weight decay
  # (AdamW; 0 gives plain Adam).
  config.train.clip_norm = 5.0
  config.train.weight_decay = 1e-4
  # Console + TensorBoard scalars every N steps.
  config.train.log_every = 25
  # Held-out accuracy (whole utterances) every N steps.
  config.train.eval_every = 200
  # Checkpoint every N steps, keeping the last K.
  config.train.checkpoint_every = 200
  config.train.keep_checkpoints = 2
  # Finite divergence: stop when the logged loss is more than
  # divergence_factor x the median of the earlier logged losses at
  # divergence_patience logs in a row; a checkpoint whose weights already
  # give such a loss (over the batches of the last log interval) is not
  # written, so the last one stays good (0 disables). Lower than the
  # decoders' 10: the additive-margin loss is bounded (a diverged encoder
  # scores about ln(speakers) + scale x margin, 8 on the demo corpus, against
  # a median of about 1 over a good run).
  config.train.divergence_factor = 4.0
  config.train.divergence_patience = 3
  # Seed of the split, initialisation and the crops (batch k is a function of
  # (seed, k) alone, so a resumed run sees the same batches).
  config.train.seed = 0

  _VARIANTS[variant](config)
  config.lock()
  return config


def _default(config: ml_collections.ConfigDict) -> None:
  del config


def _testing(config: ml_collections.ConfigDict) -> None:
  """A tiny model and a few dozen steps: seconds on one CPU core."""
  m = config.model
  m.num_mel_bins = 24
  m.channels = (16, 16)
  m.kernel_sizes = (5, 3)
  m.dilations = (1, 2)
  m.batch_norm_momentum = 0.8
  m.pooling_channels = 32
  m.segment_units = ()
  m.embedding_dim = 16
  config.data.crop_seconds = 1.0
  config.data.batch_size = 8
  t = config.train
  t.num_steps = 30
  t.lr_warmup_steps = 3
  t.learning_rate = 1e-2
  t.log_every = 5
  t.eval_every = 15
  t.checkpoint_every = 10


_VARIANTS = {"default": _default, "testing": _testing}
