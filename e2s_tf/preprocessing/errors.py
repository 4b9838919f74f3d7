"""The error a preprocessing run stops with."""


class PreprocessError(RuntimeError):
  """The run as a whole cannot produce a usable dataset: bad settings, no
  usable item, too many rejected, a full disk. The message is one line (the
  program prints it as `preprocess: error: ...`)."""
