"""Base experiment config: every field commented; the others derive from it.

    python -m e2s_tf.train --config=multiscale --data_dir=T \
        --workdir=W --config.train.num_steps=2000
"""

import ml_collections

from e2s_tf import losses
from e2s_tf import models


def get_config(model: str = "multiscale") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # The decoder: `config.model.name` picks it from the model registry; the
  # other fields are documented in e2s_tf/models/<name>.py. The fields are
  # the named model's, so another model is chosen by its config file
  # (--config=cnn, --config=testing:cnn), not by `--config.model.name`.
  config.model = models.default_model_config(model)

  # The data stream (e2s_tf.data.make_dataset).
  config.data = ml_collections.ConfigDict()
  # Batching: bucket | crop | repeat_longest | crop_shortest | mean_length.
  config.data.mode = "bucket"
  # bucket: frames per batch (padding included); sets per-bucket batch sizes.
  config.data.frames_per_batch = 6000
  # Items longer than this many frames are cut into consecutive windows of at
  # most this length (train and validation), so that one long item cannot
  # need more memory than a batch: with `bucket`, every batch then stays
  # within frames_per_batch. 0 = frames_per_batch.
  config.data.max_item_frames = 0
  # Fixed batch size of the crop and original modes.
  config.data.batch_size = 16
  # crop: window length in frames.
  config.data.crop_frames = 200
  # Shuffle buffer (examples) of the train split.
  config.data.shuffle_buffer = 512
  # Feed speaker ids (required for speaker conditioning).
  config.data.with_speaker = False
  # Fixed order and seeded shuffles (slower; exact resume and tests).
  config.data.deterministic = False
  # Filled from dataset_info.json at the start of training.
  config.data.embedding_dim = -1
  config.data.num_bins = -1

  # Reconstruction loss weights (e2s_tf/losses.py).
  config.loss = losses.default_loss_config()

  # tf.distribute: 'default' (one device), 'mirrored' (all local GPUs, or the
  # CPUs) or 'multi_worker' (MultiWorkerMirroredStrategy, cluster from
  # TF_CONFIG). The batch of config.data is the global batch.
  config.distribution = "default"

  # Optimisation and bookkeeping.
  config.train = ml_collections.ConfigDict()
  # Total optimiser steps; the same command resumes up to this many.
  config.train.num_steps = 3000
  # Stop at this many wall-clock minutes even before num_steps (0 = no limit);
  # a checkpoint is written when it stops.
  config.train.max_minutes = 0.0
  # Peak learning rate of Adam (generator).
  config.train.learning_rate = 2e-3
  # Linear warm-up steps, then cosine decay to `final_lr_fraction` x peak.
  config.train.lr_warmup_steps = 200
  config.train.final_lr_fraction = 0.05
  # Adam betas and gradient-norm clipping (0 disables clipping).
  config.train.adam_b1 = 0.9
  config.train.adam_b2 = 0.98
  config.train.clip_norm = 1.0
  # Learning rate of the discriminator (gan only).
  config.train.d_learning_rate = 1e-3
  # Console + TensorBoard scalars every N steps.
  config.train.log_every = 50
  # Validation (losses, metrics, spectrograms, audio) every N steps.
  config.train.eval_every = 500
  # Validation batches per evaluation (0 = the whole split).
  config.train.eval_batches = 0
  # Fixed validation items shown as images and Griffin-Lim audio.
  config.train.summary_items = 3
  # Griffin-Lim iterations for the audio summaries.
  config.train.griffin_lim_iterations = 32
  # Checkpoint every N steps, keeping the last K.
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 3
  # Compile the train step with XLA.
  config.train.jit_compile = False
  # 'mixed_float16' or 'float32'.
  config.train.precision = "float32"
  # Finite divergence: stop when the logged loss is more than
  # divergence_factor x the median of the earlier logged losses at
  # divergence_patience logs in a row; a checkpoint whose weights already
  # give such a loss is not written, so the last one stays good (0 disables).
  config.train.divergence_factor = 10.0
  config.train.divergence_patience = 3
  # Seed of initialisation and data order.
  config.train.seed = 0
  config.lock()
  return config
