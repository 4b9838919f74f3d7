"""The `conformer_gan` decoder with the base training settings."""

from e2s_tf.configs import base


def get_config():
  config = base.get_config("conformer_gan")
  return config
