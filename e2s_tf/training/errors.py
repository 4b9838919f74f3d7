"""The error a training run stops with."""


class TrainingError(RuntimeError):
  """Training cannot go on: a resume that does not fit, a non-finite loss, a
  divergence, a corrupt shard, a full disk. The message is one line that says
  what happened and what was kept."""
