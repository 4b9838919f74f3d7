"""The `cnn` decoder with the base training settings, and 6000 steps.

The default decoder of learned embedders (`--config=auto`): at about 6.7
steps per second on 2 CPU cores (6000-frame batches), the 14 minutes of
`make demo` reach about 5600 steps; the learning-rate decay follows the
clock (`train.max_minutes`) when that comes first.
"""

from e2s_tf.configs import base


def get_config():
  config = base.get_config("cnn")
  config.train.num_steps = 6000
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  return config
