"""What a run is decided to do, before the first item is processed.

`Settings` holds every setting of a run with its default and `check`s them;
`plan_preprocess` checks the manifest, the embedder and the split without
touching the output folder; `prepare` (once the folder is held) learns what
needs the data (an npy embedder's dimension), cuts long items into piece
tasks and fixes the shard counts.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Mapping, Optional
import zipfile

import numpy as np
import tensorflow as tf
import tqdm

from e2s_tf import alignment
from e2s_tf import audio as audio_lib
from e2s_tf import manifest as manifest_lib
from e2s_tf import embedders
from e2s_tf import fileio
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.embedders import npy as npy_embedder
from e2s_tf.embedders import registry as embedder_registry
from e2s_tf.preprocessing import pieces
from e2s_tf.preprocessing import splits
from e2s_tf.preprocessing.errors import PreprocessError

# Items read to learn an embedder's dimension by majority (`prepare`): up to
# _DIM_SAMPLE that give one, among the first _DIM_SAMPLE * 4.
_DIM_SAMPLE = 16


@dataclasses.dataclass(frozen=True)
class Settings:
  """The settings of a run (the flags of `e2s_tf.preprocess`).

  Attributes:
    embedder_spec: logmel | mfcc | npy | savedmodel:PATH | onnx:PATH.
    embedder_options: the embedder's options (a JSON object's dict).
    config: the STFT grid.
    split_by, valid_fraction, test_fraction, seed: the split
      (`splits.assign_splits`).
    frame_tolerance: trailing frames that may be trimmed when an item has
      more or fewer embedding frames than its embedder's grid gives for its
      audio (real off-by-a-frame data; the mapping of other grids onto the
      STFT frames is not a trim).
    items_per_shard: examples per TFRecord shard.
    embedding_dtype: how the records store the embedding: float16 (half the
      bytes; the default) or float32 (`records.EMBEDDING_DTYPES`).
    max_item_seconds: items longer than this become pieces (0: never).
    num_workers: worker processes (None: the cores, at most 8).
    max_rejected_fraction: the run fails when more items are rejected.
    overwrite: replace a dataset made from another manifest or settings.
    progress: print progress and the closing line.
  """
  embedder_spec: str = "logmel"
  embedder_options: Optional[Mapping[str, Any]] = None
  config: spectral.StftConfig = spectral.DEFAULT
  split_by: str = "speaker"
  valid_fraction: float = 0.1
  test_fraction: float = 0.1
  seed: int = 0
  frame_tolerance: int = 0
  items_per_shard: int = 64
  embedding_dtype: str = records.DEFAULT_EMBEDDING_DTYPE
  max_item_seconds: float = pieces.DEFAULT_MAX_ITEM_SECONDS
  num_workers: Optional[int] = None
  max_rejected_fraction: float = 0.2
  overwrite: bool = False
  progress: bool = True

  def check(self) -> None:
    """Raises PreprocessError for settings no run can use (named by flag)."""
    problems = []
    if self.split_by not in splits.SPLIT_MODES:
      problems.append(f"--split_by must be one of {splits.SPLIT_MODES}, got "
                      f"{self.split_by!r}")
    for flag in ("valid_fraction", "test_fraction"):
      value = getattr(self, flag)
      if not 0 <= value < 1:
        problems.append(f"--{flag} must be in [0, 1), got {value}")
    if self.valid_fraction + self.test_fraction >= 1:
      problems.append("--valid_fraction and --test_fraction must add up to "
                      f"less than 1, got {self.valid_fraction} + "
                      f"{self.test_fraction}")
    if self.frame_tolerance < 0:
      problems.append("--frame_tolerance must be >= 0, got "
                      f"{self.frame_tolerance}")
    if self.items_per_shard < 1:
      problems.append("--items_per_shard must be >= 1, got "
                      f"{self.items_per_shard}")
    if self.embedding_dtype not in records.EMBEDDING_DTYPES:
      problems.append("--embedding_dtype must be one of "
                      f"{', '.join(records.EMBEDDING_DTYPES)}, got "
                      f"{self.embedding_dtype!r}")
    if not 0 <= self.max_rejected_fraction <= 1:
      problems.append("--max_rejected_fraction must be in [0, 1], got "
                      f"{self.max_rejected_fraction}")
    if self.num_workers is not None and self.num_workers < 1:
      problems.append(f"--num_workers must be >= 1, got {self.num_workers}")
    seconds = self.max_item_seconds
    if not (seconds == 0 or seconds >= pieces.MIN_MAX_ITEM_SECONDS
            ) or not math.isfinite(seconds):
      problems.append("--max_item_seconds must be 0 (no splitting) or at "
                      f"least {pieces.MIN_MAX_ITEM_SECONDS:g}, got {seconds}")
    if problems:
      raise PreprocessError("; ".join(problems))
    if self.embedder_options is not None and not isinstance(
        self.embedder_options, Mapping):
      raise PreprocessError("--embedder_options: must be a JSON object, got "
                            f"{type(self.embedder_options).__name__}")

  def fingerprinted(self) -> dict[str, Any]:
    """The settings that make a dataset (what its fingerprint covers)."""
    # The schema version too: a re-run after a schema change rebuilds.
    return dict(schema_version=records.SCHEMA_VERSION,
                embedder=self.embedder_spec,
                options=dict(self.embedder_options or {}),
                stft=self.config.to_dict(), split_by=self.split_by,
                valid_fraction=self.valid_fraction,
                test_fraction=self.test_fraction, seed=self.seed,
                frame_tolerance=self.frame_tolerance,
                items_per_shard=self.items_per_shard,
                embedding_dtype=self.embedding_dtype,
                max_item_seconds=float(self.max_item_seconds))


@dataclasses.dataclass
class Plan:
  """Everything decided before the first item is processed.

  `plan_preprocess` fills in the settings, items, embedder and splits;
  `output.open_output` sets `complete` (the existing dataset_info when
  `out_dir` already holds this manifest's result with these settings:
  nothing to do) and `previous` (whether `out_dir` holds a complete dataset);
  `prepare` the tasks (pieces included) and shard counts.
  """
  manifest: str
  out_dir: str
  fingerprint: str
  complete: Optional[dict[str, Any]] = None
  previous: bool = False
  config: spectral.StftConfig = spectral.DEFAULT
  embedder: Optional[embedders.Embedder] = None
  embedder_spec: str = ""
  embedder_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  split_by: str = "speaker"
  seed: int = 0
  frame_tolerance: int = 0
  items_per_shard: int = 64
  embedding_dtype: str = records.DEFAULT_EMBEDDING_DTYPE
  max_item_seconds: float = pieces.DEFAULT_MAX_ITEM_SECONDS
  frame_mapping: Optional[alignment.FrameMapping] = None
  items: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  splits: dict[str, str] = dataclasses.field(default_factory=dict)
  speakers: list[str] = dataclasses.field(default_factory=list)
  num_shards: dict[str, int] = dataclasses.field(default_factory=dict)
  split_items: int = 0
  _tasks: Optional[list[tuple[dict[str, Any], int]]] = None

  def tasks(self) -> list[tuple[dict[str, Any], int]]:
    """`(item with its "_split" [and "_piece"], speaker_index)` per task, in
    manifest order, the pieces of an item in their order (after `prepare`).
    """
    if self._tasks is None:
      raise RuntimeError("Plan.tasks() before prepare()")
    return self._tasks

  def shard_names(self, split: str) -> list[str]:
    n = self.num_shards[split]
    return [records.shard_name(split, i, n) for i in range(n)]

  def shard_paths(self, split: str) -> list[str]:
    return [os.path.join(self.out_dir, n) for n in self.shard_names(split)]

  def all_shard_paths(self) -> list[str]:
    return [p for s in self.num_shards for p in self.shard_paths(s)]


def build_embedder(spec: str, config: spectral.StftConfig,
                   options: Mapping[str, Any]) -> embedders.Embedder:
  """The embedder, with errors that name the flag at fault.

  Raises:
    PreprocessError: `--embedder_options: ...` for options the embedder does
      not take (unknown names, wrong types) or that it refuses,
      `--embedder: ...` for an unknown name or a spec it cannot load.
  """
  if not isinstance(options, Mapping):
    raise PreprocessError("--embedder_options: must be a JSON object, got "
                          f"{type(options).__name__}")
  try:
    embedder_registry.check_options(spec, options)
  except embedder_registry.OptionError as e:
    raise PreprocessError(f"--embedder_options: {e}") from None
  except ValueError as e:
    raise PreprocessError(f"--embedder: {e}") from None
  try:
    return embedders.get_embedder(spec, config, **options)
  except (ValueError, TypeError, OSError, tf.errors.OpError) as e:
    lines = str(getattr(e, "message", e)).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    # A value the embedder refuses is an OptionError ("num_mel_bins must be
    # positive"); anything else is about the spec (a model that is not there).
    flag = ("--embedder_options" if isinstance(e, embedder_registry.OptionError)
            else "--embedder")
    raise PreprocessError(f"{flag}: {text}") from None


def _fingerprint(manifest_path: str, settings: Settings) -> str:
  h = hashlib.sha256()
  h.update(fileio.read_bytes(manifest_path))
  h.update(json.dumps(settings.fingerprinted(), sort_keys=True).encode())
  return h.hexdigest()[:16]


def plan_preprocess(manifest: str, out_dir: str, settings: Settings) -> Plan:
  """Checks the settings, the manifest, the embedder and the split.

  Reads the manifest (and builds the embedder, which may load a model), but
  neither reads nor writes `out_dir`: whatever is wrong fails here, before
  anything there is touched.

  Raises:
    PreprocessError: bad settings or embedder options, no items, an embedder
      whose hop or window is not a whole number of samples at the STFT's
      rate.
    ValueError, FileNotFoundError: a malformed or missing manifest, a split
      the items cannot fill (e.g. no speaker left for train).
  """
  settings.check()
  config = settings.config
  embedder_options = dict(settings.embedder_options or {})
  items = manifest_lib.read_manifest(manifest)
  if not items:
    raise PreprocessError(f"{manifest}: no items")
  plan = Plan(manifest=manifest, out_dir=out_dir,
              fingerprint=_fingerprint(manifest, settings), config=config,
              embedder_spec=settings.embedder_spec, split_by=settings.split_by,
              seed=settings.seed, frame_tolerance=settings.frame_tolerance,
              items_per_shard=settings.items_per_shard,
              embedding_dtype=settings.embedding_dtype,
              max_item_seconds=float(settings.max_item_seconds))
  # The embedder is built here: a bad spec or option fails before any work,
  # and its description goes into dataset_info.
  embedder = build_embedder(settings.embedder_spec, config, embedder_options)
  try:
    plan.frame_mapping = alignment.FrameMapping.between(embedder.grid, config)
  except alignment.GridError as e:
    raise PreprocessError(f"embedder {embedder.name!r} ({embedder.spec}): {e}"
                          ) from None
  if not plan.frame_mapping.identity and settings.progress:
    print(f"note: {plan.frame_mapping.summary()}")
  plan.embedder, plan.embedder_options, plan.items = (embedder,
                                                      embedder_options, items)
  plan.splits = splits.assign_splits(items, settings.split_by,
                                     settings.valid_fraction,
                                     settings.test_fraction, settings.seed)
  plan.speakers = sorted({it["speaker"] for it in items if it.get("speaker")})
  return plan


def _npy_dim(item: Mapping[str, Any], transpose: bool) -> Optional[int]:
  """The dimension of the item's .npy embedding, from the file's header
  alone; None when the file is missing or not a 2-D real .npy array."""
  path = item.get(npy_embedder.EMBEDDING_FIELD)
  if not path:
    return None
  try:
    with fileio.open(os.fspath(path), "rb") as f:
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      shape, _, dtype = read_header(f)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile,
          tf.errors.OpError):
    return None
  if len(shape) != 2 or dtype.fields is not None or not (
      np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
    return None
  return int(shape[0] if transpose else shape[1])


def _embedded_dim(item: Mapping[str, Any], embedder: embedders.Embedder,
                  config: spectral.StftConfig) -> Optional[int]:
  """The dimension of the item's embedding, by embedding it; None when it
  cannot be embedded."""
  try:
    wav = audio_lib.load_audio(item["audio"], config.sample_rate,
                               item.get("start"), item.get("end"))
    fresh = embedders.get_embedder(embedder.spec, config, **embedder.options())
    return int(fresh.embed(wav, dict(item)).shape[1])
  except (audio_lib.AudioError, embedders.EmbedderError, IndexError):
    return None


def _majority_dim(items, embedder: embedders.Embedder,
                  config: spectral.StftConfig) -> int:
  """The embedding dimension most of the first items have (an npy file's
  read from its header, others' by embedding the item)."""
  if isinstance(embedder, npy_embedder.NpyEmbedder):
    dim_of = lambda it: _npy_dim(it, embedder.transpose)
  else:
    dim_of = lambda it: _embedded_dim(it, embedder, config)
  dims = collections.Counter()
  for it in items[:_DIM_SAMPLE * 4]:
    dim = dim_of(it)
    if dim is None:
      continue
    dims[dim] += 1
    if sum(dims.values()) >= _DIM_SAMPLE:
      break
  if not dims:
    raise PreprocessError(
        f"embedder {embedder.name!r}: could not embed any of the first items "
        "to learn the embedding dimension; give it with --embedder_options")
  return dims.most_common(1)[0][0]


def prepare(plan: Plan, progress: bool = True) -> None:
  """Decides what needs the data: the tasks (items longer than
  `plan.max_item_seconds` cut into pieces, in the item's split) and the
  shards, and an npy embedder's dimension when not given.

  Raises:
    PreprocessError: a piece id is not a valid id or is taken by an item.
  """
  config, embedder = plan.config, plan.embedder
  if embedder.dim is None:
    # Embedders that learn their dimension from the data (npy, a SavedModel
    # without a declared dim): fix it here, by majority over a sample of
    # items, so that every worker enforces the same one.
    dim = _majority_dim(plan.items, embedder, config)
    plan.embedder_options["dim"] = dim
    plan.embedder = embedders.get_embedder(plan.embedder_spec, config,
                                           **plan.embedder_options)
  index = {s: i for i, s in enumerate(plan.speakers)}
  ids = {it["id"] for it in plan.items}
  hop = plan.frame_mapping.frame_step
  steps = {"embedding_step": hop}
  if not plan.embedder.needs_audio:
    # Precomputed frames belong to the whole item: cuts lie on both grids.
    steps["step"] = math.lcm(hop, config.frame_step)
  tasks, plan.split_items = [], 0
  items = plan.items
  if plan.max_item_seconds > 0 and progress and len(items) > 1000:
    items = tqdm.tqdm(items, desc="lengths", unit="item")
  for it in items:
    task = dict(it, _split=plan.splits[it["id"]])
    speaker = index.get(it.get("speaker"), -1)
    cut = None
    if plan.max_item_seconds > 0:
      length = pieces.probe_length(it, config.sample_rate)
      if length is not None:
        cut = pieces.plan_pieces(length, plan.max_item_seconds, config)
    if cut is None:
      tasks.append((task, speaker))
      continue
    try:
      names = pieces.piece_ids(it["id"], cut["count"])
    except fileio.InvalidItemId as e:
      raise PreprocessError(
          f"item {it['id']!r} is longer than --max_item_seconds="
          f"{plan.max_item_seconds:g} but its pieces cannot be named: {e}"
      ) from None
    taken = ids.intersection(names)
    if taken:
      raise PreprocessError(
          f"item {it['id']!r} is longer than --max_item_seconds="
          f"{plan.max_item_seconds:g}, but the id of its piece "
          f"{sorted(taken)[0]!r} is taken by another item")
    plan.split_items += 1
    offset = int(round(it["start"] * config.sample_rate)) if "start" in it \
        else 0
    for k, name in enumerate(names):
      tasks.append((dict(task, id=name, _piece=dict(
          cut, index=k, offset=offset, source=it["id"], **steps)),
                    speaker))
  plan._tasks = tasks  # pylint: disable=protected-access
  planned = collections.Counter(t["_split"] for t, _ in tasks)
  plan.num_shards = {s: max(1, math.ceil(planned[s] / plan.items_per_shard))
                     for s in records.SPLITS if planned[s]}
  if plan.split_items and progress:
    print(f"cutting {plan.split_items} items longer than "
          f"{plan.max_item_seconds:g} s into pieces at pauses "
          f"({len(tasks) - len(plan.items) + plan.split_items} pieces)")
