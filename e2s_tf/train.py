r"""Trains a decoder.

    python -m e2s_tf.train --config=multiscale|conformer|auto|... \
        --data_dir=data/tfrecords --workdir=runs/multiscale \
        [--config.train.num_steps=2000] [--profile_steps=100,110]

Re-running the same command resumes from the last checkpoint. A run that
cannot go on (a resume with other data or another model, a workdir in use by
another run, a divergence, a corrupt shard, a full disk, a config error)
prints one line `train: error: ...` and exits with status 1.
"""

import os
import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf import configs  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import train_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A packaged config (multiscale, conformer, cnn, gan, "
    "conformer_gan, testing:cnn), `auto` (the default decoder of --data_dir's "
    "kind of embedder) or a config file (`--config.x=y` overrides).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Output of e2s_tf.preprocess.",
                                required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and TensorBoard.",
                               required=True)
_PROFILE_STEPS = flags.DEFINE_list(
    "profile_steps", [], "A,B: write a profiler trace of steps [A, B).")
flags.mark_flag_as_required("config")

PROGRAM = "train"


def _fail(message: str) -> None:
  """Prints `train: error: <message>` (one line) and exits with status 1."""
  line = " ".join(str(message).split())
  print(f"{PROGRAM}: error: {line}", file=sys.stderr)
  sys.exit(1)


def _override_naming(field: str, argv) -> str:
  """The `--config.` argument that names `field`, for the message."""
  for arg in argv[1:]:
    path = arg.split("=", 1)[0]
    if path.startswith("--config.") and field in path.split(".")[1:]:
      return path[2:]
  return f"config...{field}"


def parse_flags(argv):
  """absl's flag parsing, with every config error as one line and status 1.

  ml_collections reads the config file and applies `--config.x=y` while
  parsing: an unknown field raises AttributeError/KeyError there, and a
  config file that fails to load only says so when its value is read.
  """
  try:
    resolved = configs.resolve_argv(argv)
  except (ValueError, FileNotFoundError) as e:
    _fail(e)
  for before, after in zip(argv, resolved):
    if before.split("=", 1)[-1].partition(":")[0] == configs.AUTO:
      chosen = os.path.basename(after.split("=", 1)[-1].partition(":")[0])
      print(f"{PROGRAM}: --config=auto is {os.path.splitext(chosen)[0]} (the "
            "default decoder of this dataset's kind of embedder)", flush=True)
  argv = resolved
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    if "Traceback" in str(e):  # the config file's get_config raised
      _fail(_config_load_error(e))
    _fail(e)
  except OSError as e:  # the config file failed to load
    _fail(_config_load_error(e))
  except (AttributeError, KeyError) as e:
    field = str(e).strip("\"' ")
    path = _override_naming(field, argv)
    parent = path.rsplit(".", 1)[0]
    hint = ""
    if parent == "config.model":
      hint = ("; config.model holds the fields of the config file's model: "
              "to train another model, choose its config (--config=<name>, "
              "or --config=testing:<name>)")
    _fail(f"--{path}: {parent} has no field {field!r}{hint}")
  except (TypeError, ValueError) as e:
    _fail(f"bad --config override: {e}")
  return rest


def _config_load_error(error: Exception) -> str:
  """The reason a config file failed to load, in one line."""
  given = [a.split("=", 1)[1] for a in sys.argv[1:]
           if a.startswith("--config=")]
  name = given[-1].split(":", 1)[0] if given else "?"
  text = str(error)
  if "No such file or directory" in text or "Errno 2" in text:
    return f"config file {name} not found"
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  reason = re.sub(r"^Configuration is not available because of an earlier "
                  r"failure to load: ", "", lines[-1] if lines else text)
  return f"config file {name} failed to load: {reason}"


def main(argv):
  del argv
  try:
    config = _CONFIG.value
    config.to_dict()  # a failed load only raises when the value is used
  except (OSError, AttributeError, ValueError) as e:
    _fail(_config_load_error(e))
  try:
    profile = [int(s) for s in _PROFILE_STEPS.value]
  except ValueError:
    _fail(f"--profile_steps must be A,B (integers), got "
          f"{','.join(_PROFILE_STEPS.value)}")
  try:
    train_lib.train(config, _DATA_DIR.value, _WORKDIR.value,
                    profile_steps=profile)
  except (train_lib.TrainingError, fileio.FolderInUse, ValueError,
          FileNotFoundError) as e:
    _fail(e)
  except OSError as e:
    _fail(fileio.describe_os_error(e))


def run():
  """The `e2s-train` console script: `python -m e2s_tf.train`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__, parse_flags))


if __name__ == "__main__":
  run()
