"""The experiment configs that ship with the package, and how a `--config`
value finds one.

    --config=multiscale                  the packaged e2s_tf/configs/multiscale.py
    --config=testing:cnn                 the same, with get_config's argument
    --config=configs/multiscale.py       a file of that name in the current
                                         folder, else the packaged one
    --config=/path/to/mine.py[:arg]      any config file

`resolve(value)` turns such a value into a path that ml_collections'
`config_flags` loads; `resolve_argv(argv)` does it for the `--config=`
arguments of a command line.
"""

from __future__ import annotations

import os
from typing import Sequence

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def available() -> list[str]:
  """Names of the packaged configs (`multiscale`, `testing`, ...)."""
  return sorted(f[:-3] for f in os.listdir(PACKAGE_DIR)
                if f.endswith(".py") and not f.startswith("_"))


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


def resolve_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """`argv` with the value of every `--<flag>=V` (or `--<flag> V`) resolved."""
  out = list(argv)
  prefix = f"--{flag}="
  for i, arg in enumerate(out):
    if arg.startswith(prefix):
      out[i] = prefix + resolve(arg[len(prefix):])
    elif arg == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
  return out
