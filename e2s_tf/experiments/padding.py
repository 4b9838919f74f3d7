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

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.experiments import common
from e2s_tf.experiments import padding_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_FLAGS = common.define_flags("padding", "mode", max_items=16,
                             scratch="corpus, runs",
                             data="preprocessed dataset")
_MODES = flags.DEFINE_list("modes", list(padding_lib.MODES), "Modes to compare.")


def main(argv):
  del argv
  padding_lib.run(*_FLAGS.values(), _MODES.value,
                  common.command_line("e2s_tf.experiments.padding"))


def run():
  """`e2s-experiment-padding`: `python -m e2s_tf.experiments.padding`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
