r"""Exports a trained decoder (latest checkpoint) as a SavedModel.

    python -m e2s_tf.export --workdir=runs/multiscale --export_dir=exports/multiscale

A previous export in --export_dir is replaced when the new one is complete;
a folder that is not an export is refused unless --overwrite. A failed
export (a full disk, say) exits with status 1 and leaves the previous one
intact. See e2s_tf.export_lib.
"""

import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf import export_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.",
                               required=True)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Where to write.",
                                  required=True)
_GL_ITERATIONS = flags.DEFINE_integer(
    "griffin_lim_iterations", export_lib.GRIFFIN_LIM_ITERATIONS,
    "Griffin-Lim iterations of the waveform endpoint.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Replace --export_dir even when it holds something else than an export "
    "(a previous export is always replaced).")


def main(argv):
  del argv
  try:
    meta = export_lib.export(_WORKDIR.value, _EXPORT_DIR.value,
                             _GL_ITERATIONS.value, overwrite=_OVERWRITE.value)
  except (FileNotFoundError, ValueError, fileio.FolderInUse) as e:
    raise SystemExit(f"export: error: {e}") from None
  except OSError as e:
    where = _EXPORT_DIR.value if fileio.is_no_space(e) else None
    raise SystemExit(f"export: error: {fileio.describe_os_error(e, where)}"
                     ) from None
  print(f"exported {meta['model']['name']} ({meta['embedder']['name']}, "
        f"dim {meta['embedding_dim']}) to {_EXPORT_DIR.value}")


def run():
  """The `e2s-export` console script: `python -m e2s_tf.export`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
