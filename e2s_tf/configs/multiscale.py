"""The `multiscale` decoder with the base training settings.

The default of `make demo`, which stops it after 14 minutes: about 1100 of the
1200 steps on 2 CPU cores (the learning-rate decay follows that budget).
"""

from e2s_tf.configs import base


def get_config():
  config = base.get_config("multiscale")
  config.train.num_steps = 1200
  config.train.eval_every = 400
  config.train.checkpoint_every = 400
  return config
