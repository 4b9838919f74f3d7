r"""Trains the frame-level speaker encoder and exports it as an embedder.

    python -m e2s_tf.train_embedder --manifest=demo/corpus/manifest.jsonl \
        --workdir=runs/speaker_encoder [--export_dir=WORKDIR/export] \
        [--export_frame_step=320] [--config=speaker_encoder[:testing]] \
        [--config.train.num_steps=800]

Re-running the same command resumes from the last checkpoint. The export is
usable as `--embedder=savedmodel:EXPORT_DIR` (frames `[T, 64]` on the
project's grid, or every `--export_frame_step` samples: the means of groups
of the encoder's frames, see e2s_tf/speaker/export.py) and by
`e2s_tf.speaker.export.load_encoder` (utterance embeddings, identification:
e2s_tf.speaker.identification).
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf import configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.speaker import export as speaker_export  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.speaker import training as speaker_training  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf.training.errors import TrainingError  # pylint: disable=g-import-not-at-top,wrong-import-position

_DEFAULT_CONFIG = configs.resolve("speaker_encoder")

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "Config file (`--config.x=y` overrides; `:testing` for the tiny variant).")
_MANIFEST = flags.DEFINE_string(
    "manifest", None, "Manifest whose items have a `speaker`.", required=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Checkpoints, TensorBoard, config.json, speakers.json.",
    required=True)
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None,
    "Where to write the SavedModel (default WORKDIR/export).")
_EXPORT_FRAME_STEP = flags.DEFINE_integer(
    "export_frame_step", None,
    "Hop of the exported frames in samples: an integer multiple r of the "
    "encoder's hop (config.stft.frame_step, 160 = 10 ms at 16 kHz), each "
    "exported frame the mean of r consecutive encoder frames; e.g. 320 for "
    "a 20 ms embedder. Default: the encoder's hop.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Replace --export_dir even when it holds something else than an encoder "
    "export (a previous one is always replaced).")


def main(argv):
  del argv
  export_dir = _EXPORT_DIR.value or os.path.join(_WORKDIR.value, "export")
  try:
    # A hop the export would refuse is refused before training.
    speaker_export.pooling_factor(int(_CONFIG.value.stft.frame_step),
                                  _EXPORT_FRAME_STEP.value)
    speaker_training.train(_CONFIG.value, _MANIFEST.value, _WORKDIR.value)
    meta = speaker_export.export(_WORKDIR.value, export_dir,
                                 overwrite=_OVERWRITE.value,
                                 frame_step=_EXPORT_FRAME_STEP.value)
  except (TrainingError, ValueError, FileNotFoundError,
          fileio.FolderInUse) as e:
    raise SystemExit(f"train_embedder: error: {e}") from None
  except OSError as e:
    where = export_dir if fileio.is_no_space(e) else None
    raise SystemExit(
        f"train_embedder: error: {fileio.describe_os_error(e, where)}"
    ) from None
  evaluation = meta["evaluation"]
  accuracy = ", ".join(f"{k}={v:.4f}" for k, v in evaluation.items()
                       if k != "step")
  print(f"exported the speaker encoder (step {meta['step']}, "
        f"{len(meta['speakers'])} speakers, frames [T, {meta['frame_dim']}] "
        f"every {meta['export_frame_step']} samples"
        f"{'; ' + accuracy if accuracy else ''}) to {export_dir}: use "
        f"--embedder=savedmodel:{export_dir}")


def parse_flags(argv):
  """absl's flag parsing, with `--config=<name>` naming a packaged config."""
  return flags.FLAGS(configs.resolve_argv(argv))


def run():
  """The `e2s-train-embedder` script: `python -m e2s_tf.train_embedder`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__, parse_flags))


if __name__ == "__main__":
  run()
