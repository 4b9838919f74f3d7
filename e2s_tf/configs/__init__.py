"""The experiment configs that ship with the package, and how a `--config`
value finds one.

    --config=multiscale                  the packaged e2s_tf/configs/multiscale.py
    --config=testing:cnn                 the same, with get_config's argument
    --config=configs/multiscale.py       a file of that name in the current
                                         folder, else the packaged one
    --config=/path/to/mine.py[:arg]      any config file
    --config=auto                        the default decoder of the dataset's
                                         kind of embedder (e2s_tf.train,
                                         which reads --data_dir's
                                         dataset_info.json)

`resolve(value)` turns such a value into a path that ml_collections'
`config_flags` loads; `resolve_argv(argv)` does it for the `--config=`
arguments of a command line, `auto` included when the line has a
`--data_dir=`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def available() -> list[str]:
  """Names of the packaged configs (`multiscale`, `testing`, ...)."""
  return sorted(f[:-3] for f in os.listdir(PACKAGE_DIR)
                if f.endswith(".py") and not f.startswith("_"))


# The config chosen for each kind of embedder (`embedder_kind`), from the
# decoder experiment (docs/experiments/decoders.md: every decoder on logmel,
# mfcc and the project's speaker encoder at 10 and 20 ms, 3 minutes each on
# 2 CPU cores): multiscale wins on logmel (its filterbank prior) and mfcc; on
# both learned encoders the plain cnn wins on LSD, MCD, STOI and PESQ, as it
# takes about twice the steps of multiscale and four times those of
# conformer in the same time, and the ablation shows time, not context, to
# be what the learned rows lack at that budget.
DEFAULT_DECODERS = {"filterbank": "multiscale", "cepstral": "multiscale",
                    "learned": "cnn"}
AUTO = "auto"


def embedder_kind(info: Mapping[str, Any]) -> str:
  """The kind of a dataset's embedder (its dataset_info.json):
  `filterbank` (a log filterbank the decoder inverts in closed form first:
  logmel), `cepstral` (mfcc) or `learned` (anything else: npy, savedmodel,
  onnx, the project's speaker encoder)."""
  from e2s_tf import embedders  # pylint: disable=g-import-not-at-top
  spec = str(info["embedder"]["spec"])
  cls = embedders.embedder_class(spec)
  if cls.offers_filterbank():
    return "filterbank"
  if spec.split(":", 1)[0] == "mfcc":
    return "cepstral"
  return "learned"


def default_for_dataset(data_dir: str) -> str:
  """The packaged config name for the dataset in `data_dir`
  (`DEFAULT_DECODERS` of its embedder's kind)."""
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  return DEFAULT_DECODERS[embedder_kind(records.read_dataset_info(data_dir))]


def resolve(value: str) -> str:
  """The config file (and `:argument`) that `value` names.

  An existing file is taken as it is. Otherwise a bare name (`multiscale`)
  or a path ending in `configs/<name>.py` names the packaged config of that
  name. Anything else is returned unchanged, so that the loader reports it
  as not found.
  """
  path, sep, argument = value.partition(":")
  if not path or os.path.exists(path):
    return value
  name = os.path.basename(path)
  name = name[:-3] if name.endswith(".py") else name
  parent = os.path.basename(os.path.dirname(path))
  named = path == name or (path.endswith(".py") and parent == "configs")
  packaged = os.path.join(PACKAGE_DIR, f"{name}.py")
  if named and name in available() and os.path.exists(packaged):
    return packaged + sep + argument
  return value


def _data_dir(argv: Sequence[str]) -> Optional[str]:
  for i, arg in enumerate(argv):
    if arg.startswith("--data_dir="):
      return arg.split("=", 1)[1]
    if arg == "--data_dir" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def resolve_auto(value: str, argv: Sequence[str]) -> str:
  """`value` with `auto` replaced by `default_for_dataset(--data_dir)`."""
  path, sep, argument = value.partition(":")
  if path != AUTO or os.path.exists(path):
    return value
  data_dir = _data_dir(argv)
  if data_dir is None:
    raise ValueError("--config=auto chooses the decoder from --data_dir's "
                     "dataset_info.json: give --data_dir")
  return default_for_dataset(data_dir) + sep + argument


def resolve_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """`argv` with the value of every `--<flag>=V` (or `--<flag> V`) resolved
  (`auto`: see `resolve_auto`)."""
  out = list(argv)
  prefix = f"--{flag}="
  for i, arg in enumerate(out):
    if arg.startswith(prefix):
      out[i] = prefix + resolve(resolve_auto(arg[len(prefix):], argv))
    elif arg == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve(resolve_auto(out[i + 1], argv))
  return out
