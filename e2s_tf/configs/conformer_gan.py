"""The `conformer_gan` decoder with the base training settings, but a shorter
learning-rate warm-up: at about half the steps per second of `multiscale` on
2 CPU cores, 200 warm-up steps ate most of a few minutes' budget (on the
speaker encoder's frames, 90 s: LSD 10.85 dB after 123 steps with 200, 9.47
dB after 153 with 50)."""

from e2s_tf.configs import base


def get_config():
  config = base.get_config("conformer_gan")
  config.train.lr_warmup_steps = 50
  return config
