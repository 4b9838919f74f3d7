"""The `multiscale` decoder with the base training settings."""

from configs import base


def get_config():
  config = base.get_config("multiscale")
  return config
