"""tf.distribute for the trainers: the strategy of a config, the chief, and
a step run on every replica."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

DISTRIBUTIONS = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
  """`default` (one device), `mirrored` (the local GPUs, or CPUs) or
  `multi_worker` (MultiWorkerMirroredStrategy from TF_CONFIG)."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"config.distribution must be one of {DISTRIBUTIONS}, got "
                   f"{name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the worker that writes summaries and the real checkpoints."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0 and
      "chief" not in resolver.cluster_spec().as_dict())


def on_replicas(fn: Callable, strategy: tf.distribute.Strategy,
                distributed: bool) -> Callable:
  """`fn(*args) -> dict of scalars` run on every replica of `strategy`, the
  values averaged over them; `fn` itself when not `distributed`."""
  if not distributed:
    return fn

  def run(*args):
    out = strategy.run(fn, args=args)
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in out.items()}
  return run
