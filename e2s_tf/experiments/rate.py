r"""Rate experiment: interpolate a slower embedding onto the STFT frames, or
upsample it in the decoder.

    python -m e2s_tf.experiments.rate --data_dir=T --out=DIR [--steps=500] \
        [--config=multiscale] [--seeds=0,1] [--split=valid] [--max_items=0] \
        [--upsampler=transposed|repeat]

`T` is a dataset whose embedder runs at a multiple r of the STFT's hop (its
dataset_info.json has a non-identity `frame_mapping`, e.g. a 20 ms embedder:
r = 2). The same decoder config trains twice per seed, with the same seed,
initial decoder weights, batches and reconstruction loss: `interpolated`
(the embedding linearly interpolated at the STFT frame centres, what the
project does) and `upsampled` (the embedding at its own rate, a learned
r-fold upsampling at the decoder's input, shifted by whole frames onto the
STFT frames: the residual centre offset is reported). Both are scored on
`--split`; DIR/results.json and DIR/report.md hold the numbers. Without
--config, the `multiscale` decoder at a modest size (rate_lib.default_config).
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import configs
from e2s_tf.experiments import common
from e2s_tf.experiments import rate_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Output of e2s_tf.preprocess whose embedder's hop is a "
    "multiple of the STFT's.", required=True)
_OUT = flags.DEFINE_string("out", None, "Folder for results.json and "
                           "report.md.", required=True)
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A packaged config (multiscale, cnn, testing) or a config "
    "file (`--config.x=y` overrides); default: multiscale at a modest size.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps per arm and seed "
                              "(default: the config's num_steps).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds; each trains both arms.")
_SPLIT = flags.DEFINE_string("split", "valid", "Split to score.")
_MAX_ITEMS = flags.DEFINE_integer("max_items", 0,
                                  "Items scored per arm (0: the whole split).")
_UPSAMPLER = flags.DEFINE_enum("upsampler", "transposed", rate_lib.UPSAMPLERS,
                               "The upsampled arm's learned upsampling.")


def parse_flags(argv):
  """absl's parsing, with packaged config names resolved (`--config=cnn`)."""
  return app.parse_flags_with_usage(configs.resolve_argv(argv))


def main(argv):
  del argv
  config = _CONFIG.value or rate_lib.default_config()
  rate_lib.run(_DATA_DIR.value, _OUT.value, config, steps=_STEPS.value,
               seeds=[int(s) for s in _SEEDS.value], split=_SPLIT.value,
               max_items=_MAX_ITEMS.value or None,
               upsampler=_UPSAMPLER.value,
               command=common.command_line("e2s_tf.experiments.rate"),
               log=lambda *args: print(*args, flush=True))


def run():
  """`python -m e2s_tf.experiments.rate`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__, parse_flags))


if __name__ == "__main__":
  run()
