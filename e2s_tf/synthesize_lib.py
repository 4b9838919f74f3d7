"""Embeddings -> 16-bit WAV files through an exported decoder.

Inputs: one `.npy` file, a folder of them (`[T, D]`, or `[D, T]` with
`transpose`), or `DATA_DIR:split` (the raw embeddings stored by
e2s_tf.preprocess). Items are batched by similar length.

What is written where, and what is skipped:
  - An item's WAV is `<out_dir>/<id>.wav`. The id of a .npy file is its path
    relative to the input folder without `.npy`, sub-folders kept
    (`a/x.npy` -> `a/x.wav`, `b/x.npy` -> `b/x.wav`), each segment mapped to
    the id rule (`manifest.id_segment`: "my take (2).npy" -> "my_take_2_").
    The id of a record is its stored id; a record whose id is not a valid
    id (`../../x`, `/abs/x`) is reported and skipped. Paths are built by
    `fileio.unique_output_path`: they never leave out_dir, and two items
    never write one file (a repeat gets `-2`, `-3`, ...).
  - A bad item (unreadable, an .npz archive, not 2-D, complex or other
    non-real dtype, wrong dimension, empty, NaN/Inf) is reported by file
    name and reason and skipped; the others are still written.
  - `written` lists exactly the files written, one per item.
  - A truncated or corrupted shard, a full disk or an unusable export stop
    the run with one message (records.CorruptShardError, OSError,
    export_lib.ExportError); the files written so far are complete.
  - `out_dir` is locked for the run (fileio.FolderLock).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Iterator, Optional

import numpy as np
import tqdm

from e2s_tf import audio as audio_lib
from e2s_tf import export_lib
from e2s_tf import fileio
from e2s_tf import manifest as manifest_lib
from e2s_tf import records
from e2s_tf.embedders import npy


@dataclasses.dataclass
class Item:
  item_id: str
  embedding: Optional[np.ndarray] = None
  speaker: int = -1
  error: Optional[str] = None
  path: Optional[str] = None  # the WAV file it is written to


def _load_npy(path: str, item_id: str, dim: int, transpose: bool) -> Item:
  try:
    array = npy.read_embedding(path, transpose)
  except npy.NpyError as e:
    return Item(item_id, error=f"{path}: {e.detail}")
  if array.shape[1] != dim:
    hint = "" if transpose or array.shape[0] != dim else (
        " (stored [D, T]? use --transpose)")
    return Item(item_id, error=f"{path}: embedding dimension {array.shape[1]},"
                f" the model expects {dim}{hint}")
  if array.shape[0] == 0:
    return Item(item_id, error=f"{path}: empty (0 frames)")
  return Item(item_id, array)


def _npy_id(relative: str) -> str:
  """The item id of a .npy file from its '/'-separated relative path."""
  return manifest_lib.path_id(os.path.splitext(relative)[0])


def iter_items(source: str, dim: int, transpose: bool = False
               ) -> Iterator[Item]:
  """Items of `source`: a .npy file, a folder of .npy files, or DIR:split.

  Raises:
    FileNotFoundError: no such input, or a folder without .npy files.
    records.CorruptShardError: a shard of DIR:split cannot be read.
    ValueError: DIR:split holds embeddings of another dimension than `dim`.
  """
  if fileio.isfile(source):
    yield _load_npy(source, _npy_id(os.path.basename(source)), dim, transpose)
    return
  if fileio.isdir(source):
    found = []  # (relative '/'-separated path, path), as glob's `**/*.npy`
    for top, folders, files in fileio.walk(source, followlinks=True):
      folders[:] = sorted(f for f in folders if not f.startswith("."))
      relative = fileio.relpath(top, source).replace(os.sep, "/")
      for name in files:
        if name.endswith(".npy") and not name.startswith("."):
          found.append((name if relative == "." else f"{relative}/{name}",
                        os.path.join(top, name)))
    if not found:
      raise FileNotFoundError(f"{source}: no .npy files")
    for relative, p in sorted(found, key=lambda f: f[1]):
      yield _load_npy(p, _npy_id(relative), dim, transpose)
    return
  data_dir, sep, split = source.rpartition(":")
  if not sep or not fileio.isdir(data_dir):
    raise FileNotFoundError(
        f"--input={source!r} is neither a .npy file, a folder, nor DATA_DIR:split")
  files = records.split_files(data_dir, split)
  for ex in records.read_examples(files):
    emb = ex["embedding"]
    if emb.shape[1] != dim:
      raise ValueError(f"{data_dir}: embeddings of dimension {emb.shape[1]}, "
                       f"the model expects {dim}")
    item_id = ex["id"]
    if not np.all(np.isfinite(emb)):
      yield Item(item_id, error=f"{data_dir}:{split}: item {item_id!r}: "
                 "NaN/Inf values")
      continue
    yield Item(item_id, emb, int(ex["speaker_index"]))


def synthesize(model_dir: str, source: str, out_dir: str, batch_size: int = 8,
               transpose: bool = False, speaker: Optional[int] = None,
               progress: bool = True) -> dict:
  """Writes `<out_dir>/<id>.wav` for every good item; returns a summary.

  See the module docstring for names, skipped items and errors.

  Returns:
    {"written": [paths], "errors": [messages], "audio_seconds", "seconds",
     "rtf"}.

  Raises:
    FileNotFoundError, ValueError (records.CorruptShardError,
    export_lib.ExportError), fileio.FolderInUse, OSError (a full disk).
  """
  decoder = export_lib.LoadedDecoder(model_dir)
  sr = decoder.stft.sample_rate
  items = list(iter_items(source, decoder.dim, transpose))
  errors = [it.error for it in items if it.error]
  good = [it for it in items if not it.error]
  if decoder.with_speaker:
    for it in good:
      if speaker is not None:
        it.speaker = speaker
      if it.speaker < 0:
        errors.append(f"{it.item_id}: the model is speaker-conditioned; give "
                      "--speaker=<index> (see e2s_export.json speakers)")
    good = [it for it in good if it.speaker >= 0]
  written, audio_seconds, compute = [], 0.0, 0.0
  with fileio.FolderLock(out_dir, "synthesize"):
    # Names first, in input order (deterministic), before any compute.
    taken = set()
    for it in good:
      try:
        it.path = fileio.unique_output_path(out_dir, it.item_id, ".wav", taken)
      except fileio.InvalidItemId as e:
        errors.append(f"{e}; skipped")
    good = sorted((it for it in good if it.path),
                  key=lambda it: it.embedding.shape[0])
    with tqdm.tqdm(total=len(good), desc="synthesize", unit="item",
                   disable=not progress) as bar:
      for start in range(0, len(good), batch_size):
        batch = good[start:start + batch_size]
        emb, lengths = export_lib.pad_batch([it.embedding for it in batch],
                                            decoder.dim)
        spk = np.array([it.speaker for it in batch], np.int32)
        t0 = time.perf_counter()
        audio, audio_lengths = decoder.waveform(
            emb, lengths, spk if decoder.with_speaker else None)
        compute += time.perf_counter() - t0
        for it, wav, n in zip(batch, audio, audio_lengths):
          try:
            audio_lib.save_wav(it.path, wav[:n], sr)
          except OSError as e:
            if fileio.is_no_space(e):
              raise OSError(e.errno, e.strerror, out_dir) from None
            errors.append(f"{it.item_id}: "
                          f"{fileio.describe_os_error(e, it.path)}; skipped")
            continue
          written.append(it.path)
          audio_seconds += n / sr
        bar.update(len(batch))
  return {"written": written, "errors": errors, "audio_seconds": audio_seconds,
          "seconds": compute,
          "rtf": compute / audio_seconds if audio_seconds else float("nan")}
