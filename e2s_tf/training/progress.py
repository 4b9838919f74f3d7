"""The words of training logs and errors."""

from __future__ import annotations

from typing import Mapping


def format_values(values: Mapping[str, float]) -> str:
  """`{"loss": 0.5}` -> `"loss=0.5000"`."""
  return " ".join(f"{k}={v:.4f}" for k, v in values.items())


def duration(seconds: float) -> str:
  """`m:ss`, or `h:mm:ss` from an hour on."""
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def sentence(text: str) -> str:
  """`text` with its first letter upper-case."""
  return text[:1].upper() + text[1:]


def first_line(error: BaseException) -> str:
  """The first line of an error's message (TF errors: of `.message`)."""
  text = str(getattr(error, "message", None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__
