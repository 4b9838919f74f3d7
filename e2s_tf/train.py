r"""Trains a decoder.

    python -m e2s_tf.train --config=configs/multiscale.py \
        --data_dir=data/tfrecords --workdir=runs/multiscale \
        [--config.train.num_steps=2000] [--profile_steps=100,110]

Re-running the same command resumes from the last checkpoint.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf import train_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file: configs/<model>.py (`--config.x=y` overrides).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Output of e2s_tf.preprocess.",
                                required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and TensorBoard.",
                               required=True)
_PROFILE_STEPS = flags.DEFINE_list(
    "profile_steps", [], "A,B: write a profiler trace of steps [A, B).")
flags.mark_flag_as_required("config")


def main(argv):
  del argv
  profile = [int(s) for s in _PROFILE_STEPS.value]
  try:
    train_lib.train(_CONFIG.value, _DATA_DIR.value, _WORKDIR.value,
                    profile_steps=profile)
  except (train_lib.TrainingError, ValueError, FileNotFoundError) as e:
    raise SystemExit(f"train: error: {e}") from None


if __name__ == "__main__":
  app.run(main)
