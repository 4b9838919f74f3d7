"""The stop of a run whose loss goes non-finite or diverges."""

from __future__ import annotations

import math

import numpy as np


class DivergenceMonitor:
  """Tells a finite divergence from the noise and the warm-up of a run.

  A logged loss above `factor` x the median of the earlier logged losses is
  suspect; `patience` suspect logs in a row are a divergence. Suspect losses
  do not join the history, so a diverging run cannot raise its own median;
  the first log has no history and a run's high start only raises the
  median, so a warm-up never looks like a divergence. `factor` 0 disables.
  """

  def __init__(self, factor: float, patience: int):
    self.factor = float(factor)
    self.patience = max(int(patience), 1)
    self.history: list[float] = []
    self.streak = 0

  @property
  def median(self) -> float:
    return float(np.median(self.history)) if self.history else math.nan

  def too_high(self, loss: float) -> bool:
    """Whether `loss` is above `factor` x the median (never without one)."""
    return (self.factor > 0 and bool(self.history) and self.median > 0 and
            loss > self.factor * self.median)

  def anchor(self, loss: float) -> None:
    """Starts the history with the loss of a run's first step (before its
    first update), so a run that diverges before its first log is caught."""
    if self.factor > 0 and not self.history and math.isfinite(loss):
      self.history.append(loss)

  def update(self, loss: float) -> bool:
    """Records a logged loss; True when it completes a divergence."""
    if self.factor <= 0 or not math.isfinite(loss):
      return False
    if self.too_high(loss):
      self.streak += 1
      return self.streak >= self.patience
    self.streak = 0
    self.history.append(loss)
    return False

  def diverged_message(self, step: int, loss: float, what: str, kept: str,
                       learning_rate: float) -> str:
    """The one-line stop of a divergence at `step`."""
    return (f"training diverged at step {step}: {what} {loss:.4g} vs median "
            f"{self.median:.4g} of the earlier logged losses (more than "
            f"train.divergence_factor={self.factor:g} times); stopped. "
            f"{kept[:1].upper() + kept[1:]}: lower train.learning_rate (now "
            f"{learning_rate:g}) or check the data, then re-run to resume "
            "from it")


def non_finite_message(step: int, what: str, kept: str) -> str:
  """The one-line stop of a non-finite loss at `step` (`what`: the values)."""
  return (f"non-finite loss at step {step}: {what}; stopped. "
          f"{kept[:1].upper() + kept[1:]}: lower train.learning_rate or "
          "check the data, then re-run to resume from it")


def kept_message(latest_checkpoint) -> str:
  """What a stopped run keeps, as words for its message."""
  if latest_checkpoint is None:
    return "no checkpoint was written (none had good weights)"
  return f"the last good checkpoint ({latest_checkpoint}) is kept"
