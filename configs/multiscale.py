"""The `multiscale` decoder with the base training settings.

The default of `make demo`: 1200 steps take about 10 minutes on 2 CPU cores.
"""

from configs import base


def get_config():
  config = base.get_config("multiscale")
  config.train.num_steps = 1200
  config.train.eval_every = 400
  config.train.checkpoint_every = 400
  return config
