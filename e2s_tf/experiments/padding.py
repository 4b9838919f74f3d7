r"""Padding experiment: one model, data and step budget per batching mode.

    python -m e2s_tf.experiments.padding [--steps=150] [--quick] \
        [--work_dir=/tmp/e2s_padding] [--out=docs/experiments/padding.md]

Trains the default `multiscale` decoder from scratch with each batching mode
(`bucket` with masks, `crop`, and the original `repeat_longest`,
`crop_shortest`, `mean_length`) on the default corpus (logmel, held-out
speakers), and tabulates validation lsd_db and pesq_wb (the exported model
with Griffin-Lim), the filler-frame share of the mode over a train epoch,
training frames per second and wall time.
"""

import os
import sys

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf.experiments import padding_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/e2s_padding",
                                "Scratch space (corpus, runs).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "An existing preprocessed dataset (default: the demo "
    "corpus, made under --work_dir).")
_OUT = flags.DEFINE_string("out", "docs/experiments/padding.md",
                           "Markdown table to write (+ .json beside it).")
_STEPS = flags.DEFINE_integer("steps", 150, "Training steps per mode.")
_MAX_ITEMS = flags.DEFINE_integer("max_items", 16,
                                  "Validation items evaluated per mode.")
_QUICK = flags.DEFINE_bool("quick", False,
                           "A tiny corpus, model and budget (for tests).")
_MODES = flags.DEFINE_list("modes", list(padding_lib.MODES), "Modes to compare.")


def main(argv):
  del argv
  padding_lib.run(
      _WORK_DIR.value, _DATA_DIR.value, _OUT.value, _STEPS.value,
      _MAX_ITEMS.value, _QUICK.value, _MODES.value,
      " ".join(["python -m e2s_tf.experiments.padding"] + sys.argv[1:]))


def run():
  """The `e2s-experiment-padding` console script:
  `python -m e2s_tf.experiments.padding`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
