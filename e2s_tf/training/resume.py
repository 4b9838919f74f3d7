"""What a run checks before it resumes a workdir: the same data, the same
model config, a checkpoint that fits. Nothing here writes."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import ml_collections
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import records
from e2s_tf.training import configio
from e2s_tf.training.errors import TrainingError


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix.rstrip("."): d}
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return out


def differing(old: Any, new: Any, name: str) -> tuple[list[str], list[str]]:
  """The entries of two (nested) dicts that differ, as `name.key value`
  (`no name.key` where one lacks it): (old's, new's), in the same order."""
  a, b = _flatten(old or {}), _flatten(new or {})
  keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  show = lambda d, k: f"{name}.{k} {d[k]!r}" if k in d else f"no {name}.{k}"  # pylint: disable=unnecessary-lambda-assignment
  return [show(a, k) for k in keys], [show(b, k) for k in keys]


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                       name: str) -> Optional[str]:
  """`"model.channels 16 in the workdir, 32 now; ..."`, or None if equal."""
  was, now = differing(old, new, name)
  if not was:
    return None
  return "; ".join(f"{a} in the workdir, {b.split(' ', 1)[-1]} now"
                   for a, b in zip(was, now))


def data_mismatch(old: dict[str, Any], new: dict[str, Any],
                  with_speakers: bool) -> Optional[tuple[str, str]]:
  """(what a run was trained on, what the new data has), or None if a model
  trained on `old` (a dataset_info) can go on training on `new`.

  The embedder (name, dim, grid, options) and the STFT must be equal, and the
  speaker vocabulary when the model is speaker-conditioned; other data of the
  same embedder (other items, other statistics) is allowed.
  """
  oe, ne = old.get("embedder") or {}, new.get("embedder") or {}
  was = [f"{oe.get('name', '?')} dim {oe.get('dim', '?')}"]
  now = [f"{ne.get('name', '?')} dim {ne.get('dim', '?')}"]
  differs = (oe.get("name"), oe.get("dim")) != (ne.get("name"), ne.get("dim"))
  # The embedder's settings matter when it is the same one.
  pairs = [] if differs else [differing(oe.get(k), ne.get(k), f"embedder.{k}")
                              for k in ("grid", "options")]
  pairs.append(differing(old.get("stft"), new.get("stft"), "stft"))
  for a, b in pairs:
    differs |= bool(a)
    was += a
    now += b
  if with_speakers and old.get("speakers") != new.get("speakers"):
    differs = True
    was.append(f"speakers {old.get('speakers')}")
    now.append(f"speakers {new.get('speakers')}")
  return (", ".join(was), ", ".join(now)) if differs else None


def check_resume(workdir: str, checkpoint_dir: str, data_dir: str,
                 config: ml_collections.ConfigDict,
                 info: dict[str, Any]) -> Optional[str]:
  """Refuses to resume a workdir's decoder run with other data or another
  model.

  Reads the workdir's checkpoint state, config.json and dataset_info.json and
  writes nothing. Returns the latest checkpoint (None: a fresh start).

  Raises:
    TrainingError: what differs ("trained on logmel dim 64; this data_dir
      has mfcc dim 20", "model.channels 16 in the workdir, 32 now").
  """
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest is None:
    return None
  problems = []
  info_path = os.path.join(workdir, records.DATASET_INFO)
  if fileio.exists(info_path):
    old_info = fileio.read_json(info_path)
    mismatch = data_mismatch(old_info, info,
                             config.model.speaker_conditioning != "none")
    if mismatch:
      problems.append(f"it was trained on {mismatch[0]}; this data_dir "
                      f"({data_dir}) has {mismatch[1]}")
  if fileio.exists(os.path.join(workdir, configio.CONFIG_FILE)):
    differences = config_differences(
        configio.read(workdir).model.to_dict(),
        json.loads(configio.to_json(config))["model"], "model")
    if differences:
      problems.append(f"its model config differs: {differences}")
  if problems:
    raise refusal(workdir, latest, problems, "the data_dir and config")
  return latest


def refusal(workdir: str, latest: str, problems: list[str],
            inputs: str) -> TrainingError:
  """The one-line refusal to resume `workdir` at `latest` for `problems`;
  `inputs`: what the run must be resumed with ("the data_dir and config")."""
  return TrainingError(
      f"cannot resume {workdir} (at {os.path.basename(latest)}): "
      f"{'; '.join(problems)}. Resume it with {inputs} it was trained with, "
      "or use another --workdir; nothing in the workdir was changed")
