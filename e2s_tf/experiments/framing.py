r"""Framing experiment: how to align the STFT with 30 ms / 10 ms embeddings.

    python -m e2s_tf.experiments.framing [--steps=150] [--quick] \
        [--work_dir=/tmp/e2s_framing] [--out=docs/experiments/framing.md]

The embeddings stay on the 30 ms / 10 ms grid (logmel, 480-sample window, hop
160). The target STFT is framed four ways: `aligned` (480-sample window in a
512 FFT: frame t covers the embedding's samples), `window_512` (the original
authors' 512-sample window: centred 1 ms later, 2 ms wider), and `shift_+1` /
`shift_-1` (embedding frame t paired with STFT frame t+1 / t-1: a deliberate
one-hop misalignment). Each trains the same decoder for the same steps; the
table gives validation lsd_db and pesq_wb against each variant's own audio.
"""

import os

from absl import app

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.experiments import common
from e2s_tf.experiments import framing_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_FLAGS = common.define_flags("framing", "variant", max_items=20,
                             scratch="corpus, datasets, runs",
                             data="aligned logmel dataset")


def main(argv):
  del argv
  framing_lib.run(*_FLAGS.values(),
                  common.command_line("e2s_tf.experiments.framing"))


def run():
  """`e2s-experiment-framing`: `python -m e2s_tf.experiments.framing`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
