"""The train/valid/test split of a manifest's items."""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

SPLIT_MODES = ("speaker", "utterance")


def assign_splits(items: Sequence[Mapping[str, Any]], split_by: str,
                  valid_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, str]:
  """Deterministic split of item ids into train/valid/test.

  `speaker`: whole speakers are held out (at least one each for valid and test
  when their fraction is positive and there are enough speakers); a VAD
  region goes with its speaker. `utterance`: items are shuffled and cut.
  """
  if split_by not in SPLIT_MODES:
    raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
  if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or (
      valid_fraction + test_fraction >= 1):
    raise ValueError("need 0 <= valid_fraction, test_fraction and their sum < 1")
  rng = random.Random(seed)
  if split_by == "speaker":
    missing = [it["id"] for it in items if not it.get("speaker")]
    if missing:
      raise ValueError(
          f"--split_by=speaker needs a speaker for every item; {len(missing)} "
          f"have none (e.g. {missing[0]!r}); use --split_by=utterance")
    units = sorted({it["speaker"] for it in items})
    key = lambda it: it["speaker"]
  else:
    units = sorted(it["id"] for it in items)
    key = lambda it: it["id"]
  rng.shuffle(units)
  n = len(units)

  def count(fraction):
    if fraction <= 0:
      return 0
    return max(1, int(round(fraction * n))) if n >= 3 else 0

  n_test, n_valid = count(test_fraction), count(valid_fraction)
  if n_test + n_valid >= n:
    raise ValueError(f"{n} {split_by}s are too few for the valid/test "
                     f"fractions {valid_fraction}/{test_fraction}")
  unit_split = {}
  for i, unit in enumerate(units):
    unit_split[unit] = ("test" if i < n_test else
                        "valid" if i < n_test + n_valid else "train")
  return {it["id"]: unit_split[key(it)] for it in items}
