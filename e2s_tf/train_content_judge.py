r"""Trains the content judge (a CTC phone recogniser) and exports it.

    python -m e2s_tf.train_content_judge --manifest=demo/corpus/manifest.jsonl \
        --workdir=runs/content_judge [--export_dir=WORKDIR/export] \
        [--config=content_judge[:testing]] [--config.train.num_steps=500] \
        [--export_weights=best|last]

The manifest should hold the train split's items, with their `text`: the
judge learns espeak-ng's phones of the text (`--config.language`, en-us by
default) from the ORIGINAL audio; a `--config.data.heldout_fraction` of the
items scores its phone error rate (PER). Items without `text` are skipped
and counted. Re-running the same command resumes from the last checkpoint.

The export (a SavedModel + content_judge.json) is read by
`e2s_tf.content.export.load_judge`: `.transcribe(waveforms)` gives phones,
`.phonemes(text)` the reference. An export is a program: load only trusted
ones.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf import configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.content import export as judge_export  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.content import training as judge_training  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.content import workdir as judge_workdir  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.training.errors import TrainingError  # pylint: disable=g-import-not-at-top,wrong-import-position

_DEFAULT_CONFIG = configs.resolve("content_judge")

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "Config file (`--config.x=y` overrides; `:testing` for the small variant).")
_MANIFEST = flags.DEFINE_string(
    "manifest", None, "Manifest of the training items, with their `text`.",
    required=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Checkpoints, TensorBoard, config.json, judge.json.",
    required=True)
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None,
    "Where to write the SavedModel (default WORKDIR/export).")
_EXPORT_WEIGHTS = flags.DEFINE_enum(
    "export_weights", "best", judge_workdir.WEIGHTS,
    "Export the weights of the lowest held-out PER (`best`; the last step "
    "when nothing is held out) or of the last step.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Replace --export_dir even when it holds something else than a judge "
    "export (a previous one is always replaced).")


def main(argv):
  del argv
  export_dir = _EXPORT_DIR.value or os.path.join(_WORKDIR.value, "export")
  try:
    judge_training.train(_CONFIG.value, _MANIFEST.value, _WORKDIR.value)
    meta = judge_export.export(_WORKDIR.value, export_dir,
                               weights=_EXPORT_WEIGHTS.value,
                               overwrite=_OVERWRITE.value)
  except (TrainingError, ValueError, FileNotFoundError,
          fileio.FolderInUse) as e:
    raise SystemExit(f"train_content_judge: error: {e}") from None
  except OSError as e:
    where = export_dir if fileio.is_no_space(e) else None
    raise SystemExit(
        f"train_content_judge: error: {fileio.describe_os_error(e, where)}"
    ) from None
  per = meta["held_out_per"]
  print(f"exported the content judge ({meta['weights']} weights, step "
        f"{meta['step']}, {len(meta['phones'])} {meta['language']} phones, "
        f"held-out PER "
        f"{'n/a (nothing held out)' if per is None else f'{per:.4f}'} on "
        f"{meta['num_heldout_items']} items) to {export_dir}")


def parse_flags(argv):
  """absl's flag parsing, with `--config=<name>` naming a packaged config."""
  return flags.FLAGS(configs.resolve_argv(argv))


def run():
  """The `e2s-train-content-judge` script: `python -m
  e2s_tf.train_content_judge`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__, parse_flags))


if __name__ == "__main__":
  run()
