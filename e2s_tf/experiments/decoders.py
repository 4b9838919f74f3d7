r"""Decoder experiment: every decoder on every embedder at one wall-clock
budget, a GAN against its generator alone, and an ablation.

    python -m e2s_tf.experiments.decoders [--minutes=2.5] [--max_items=24] \
        [--embedders=logmel,mfcc,speaker,speaker20ms] \
        [--decoders=cnn,multiscale,gan,conformer,conformer_gan] \
        [--ablation_embedder=speaker] [--ablation_decoder=conformer] \
        [--ablations=half,double,double_time,no_context] \
        [--work_dir=/tmp/e2s_decoders] [--out=docs/experiments/decoders.md]

Makes the demo corpus (espeak-ng, 8 voices x 40 utterances, split by
utterance) under --work_dir, trains the project's speaker encoder on its
train split (exported at 10 and 20 ms), preprocesses it with each embedder,
then trains, exports and scores each decoder (see decoders_lib). The table
goes to --out and the numbers to the .json beside it; the default decoder of
each kind of embedder (e2s_tf/configs/__init__.py `DEFAULT_DECODERS`) is
chosen from it. `--quick`: a tiny corpus, models and budget (tests).
"""

import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.experiments import common
from e2s_tf.experiments import decoders_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/e2s_decoders",
                                "Scratch space (corpus, datasets, runs).")
_OUT = flags.DEFINE_string("out", "docs/experiments/decoders.md",
                           "Markdown report to write (+ .json beside it).")
_MINUTES = flags.DEFINE_float("minutes", 2.5,
                              "Wall-clock training budget of every run.")
_MAX_ITEMS = flags.DEFINE_integer("max_items", 24,
                                  "Validation items scored per run.")
_QUICK = flags.DEFINE_bool("quick", False,
                           "A tiny corpus, model and budget (for tests).")
_EMBEDDERS = flags.DEFINE_list("embedders", list(decoders_lib.EMBEDDERS),
                               "Embedders of the grid.")
_DECODERS = flags.DEFINE_list("decoders", list(decoders_lib.DECODERS),
                              "Decoders of the grid.")
_ABLATION_EMBEDDER = flags.DEFINE_string("ablation_embedder", "speaker",
                                         "Embedder of the ablation.")
_ABLATION_DECODER = flags.DEFINE_string("ablation_decoder", "conformer",
                                        "Decoder of the ablation.")
_ABLATIONS = flags.DEFINE_list("ablations", list(decoders_lib.ABLATIONS),
                               "Ablation variants (empty: none).")
_WARMUP_SHARE = flags.DEFINE_float(
    "warmup_share", 0.5, "A GAN's reconstruction warm-up, as a share of the "
    "steps its generator alone took in the budget.")


def main(argv):
  del argv
  try:
    decoders_lib.run(
        _WORK_DIR.value, _OUT.value, _MINUTES.value, _MAX_ITEMS.value or None,
        _QUICK.value, _EMBEDDERS.value, _DECODERS.value,
        _ABLATION_EMBEDDER.value, _ABLATION_DECODER.value, _ABLATIONS.value,
        _WARMUP_SHARE.value,
        command=common.command_line("e2s_tf.experiments.decoders"),
        log=lambda *args: print(*args, flush=True))
  except ValueError as e:
    raise SystemExit(f"decoders: error: {e}") from None


def run():
  """`python -m e2s_tf.experiments.decoders`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
