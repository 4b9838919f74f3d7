"""What the programs' entry points share: `python -m e2s_tf.<program>` and
the `e2s-<program>` console scripts of pyproject.toml run the same `run()`.

    def run():
      app.run(main, flags_parser=cli.flags_parser(__name__, parse_flags))

`flags_parser` returns `parse` (absl's own by default) with two changes:

- Asking for help (`--help`, `--helpshort`, `--helpfull`, `--helpxml`) is a
  success: the usage is printed and the exit status is 0, not absl's 1, so
  that `e2s-train --help` can check an installation.
- Under a console script the program's module is not `__main__`, and absl's
  `--help` shows the docstring and the flags of `__main__` alone (the
  script's stub: none). The module's docstring and flags are shown instead,
  as under `python -m`.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags

FlagsParser = Callable[[Sequence[str]], Sequence[str]]

# absl's help flags (`-?` is the short name of `--help`).
_HELP_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml")


def _asks_for_help(argv: Sequence[str]) -> bool:
  """Whether the command line holds one of absl's help flags."""
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg.startswith("-") and arg.lstrip("-").split("=")[0] in _HELP_FLAGS:
      return True
  return False


def _present_as_main(module_name: str) -> None:
  """Makes absl's usage show `module_name`'s docstring and flags, as it
  does for a module run as `__main__` (whose flags absl files under
  `sys.argv[0]`)."""
  main = sys.modules.get("__main__")
  module = sys.modules.get(module_name)
  if main is not None and module is not None and not main.__doc__:
    main.__doc__ = module.__doc__
  program = sys.argv[0] if sys.argv else ""
  # absl's own table of which module defined which flags: moved, as if the
  # module had defined them as `__main__`.
  filed = flags.FLAGS.flags_by_module_dict()
  for flag in filed.pop(module_name, []):
    flags.FLAGS.register_flag_by_module(program, flag)


def flags_parser(module_name: str,
                 parse: Optional[FlagsParser] = None) -> FlagsParser:
  """The flags parser of the program defined in `module_name` (its
  `__name__`): `parse` (default: absl's `parse_flags_with_usage`), with
  help exit 0 and the program's own help under a console script."""
  parse = parse or app.parse_flags_with_usage

  def parse_program_flags(argv: Sequence[str]) -> Sequence[str]:
    if module_name != "__main__":
      _present_as_main(module_name)
    try:
      return parse(argv)
    except SystemExit as e:
      # absl prints the usage of a help flag, then exits with status 1.
      if e.code == 1 and _asks_for_help(argv):
        sys.exit(0)
      raise

  return parse_program_flags
