"""The `conformer_gan` decoder with the conformer's training settings
(configs/conformer.py)."""

from e2s_tf.configs import base
from e2s_tf.configs import conformer


def get_config():
  return conformer.conformer_training(base.get_config("conformer_gan"))
