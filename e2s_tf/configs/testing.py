"""A tiny config for tests: a few steps of a very small model.

`--config=testing:gan` picks the model (cnn | multiscale | conformer | gan |
conformer_gan).
"""

from e2s_tf.configs import base


def get_config(model: str = "multiscale"):
  config = base.get_config(model)
  m = config.model
  m.channels = 16
  if model == "cnn":
    m.num_layers = 2
  else:
    m.num_blocks = 1
    m.refine_channels = 4
    m.refine_layers = 2
  if model in ("conformer", "conformer_gan"):
    m.attention_heads = 2
    m.conv_kernel_size = 5
  if model in ("gan", "conformer_gan"):
    m.adversarial_start_step = 2
    m.disc_channels = (4, 4, 4)
  config.data.frames_per_batch = 1200
  config.data.batch_size = 4
  config.data.shuffle_buffer = 16
  config.train.num_steps = 6
  config.train.lr_warmup_steps = 2
  config.train.log_every = 2
  config.train.eval_every = 4
  config.train.eval_batches = 2
  config.train.summary_items = 2
  config.train.griffin_lim_iterations = 4
  config.train.checkpoint_every = 3
  config.train.keep_checkpoints = 2
  return config
