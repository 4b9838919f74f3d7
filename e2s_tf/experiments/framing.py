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
import sys

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf.experiments import framing_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/e2s_framing",
                                "Scratch space (corpus, datasets, runs).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "An existing aligned logmel dataset (default: the demo "
    "corpus, made under --work_dir).")
_OUT = flags.DEFINE_string("out", "docs/experiments/framing.md",
                           "Markdown table to write (+ .json beside it).")
_STEPS = flags.DEFINE_integer("steps", 150, "Training steps per variant.")
_MAX_ITEMS = flags.DEFINE_integer("max_items", 20,
                                  "Validation items evaluated per variant.")
_QUICK = flags.DEFINE_bool("quick", False,
                           "A tiny corpus, model and budget (for tests).")


def main(argv):
  del argv
  framing_lib.run(
      _WORK_DIR.value, _DATA_DIR.value, _OUT.value, _STEPS.value,
      _MAX_ITEMS.value, _QUICK.value,
      " ".join(["python -m e2s_tf.experiments.framing"] + sys.argv[1:]))


def run():
  """The `e2s-experiment-framing` console script:
  `python -m e2s_tf.experiments.framing`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
