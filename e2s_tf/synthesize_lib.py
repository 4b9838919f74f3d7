"""Embeddings -> 16-bit WAV files through an exported decoder.

Inputs: one `.npy` file, a folder of them (`[T, D]`, or `[D, T]` with
`transpose`), or `DATA_DIR:split` (the raw embeddings stored by
e2s_tf.preprocess). Items are batched by similar length; a bad item (wrong
dimension, NaN/Inf, empty, unreadable) is reported by name and the others are
still written.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf
import tqdm

from e2s_tf import audio as audio_lib
from e2s_tf import export_lib
from e2s_tf import records


@dataclasses.dataclass
class Item:
  item_id: str
  embedding: Optional[np.ndarray] = None
  speaker: int = -1
  error: Optional[str] = None


def _load_npy(path: str, dim: int, transpose: bool) -> Item:
  item_id = os.path.splitext(os.path.basename(path))[0]
  try:
    array = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    return Item(item_id, error=f"{path}: unreadable .npy ({e})")
  if array.ndim != 2:
    return Item(item_id, error=f"{path}: expected a 2-D array, got shape "
                f"{array.shape}")
  if transpose:
    array = array.T
  if array.shape[1] != dim:
    hint = "" if transpose or array.shape[0] != dim else (
        " (stored [D, T]? use --transpose)")
    return Item(item_id, error=f"{path}: embedding dimension {array.shape[1]},"
                f" the model expects {dim}{hint}")
  if array.shape[0] == 0:
    return Item(item_id, error=f"{path}: empty (0 frames)")
  if not np.all(np.isfinite(array)):
    return Item(item_id, error=f"{path}: NaN/Inf values")
  return Item(item_id, np.asarray(array, np.float32))


def iter_items(source: str, dim: int, transpose: bool = False
               ) -> Iterator[Item]:
  """Items of `source`: a .npy file, a folder of .npy files, or DIR:split."""
  if os.path.isfile(source):
    yield _load_npy(source, dim, transpose)
    return
  if os.path.isdir(source):
    paths = sorted(glob.glob(os.path.join(source, "**", "*.npy"),
                             recursive=True))
    if not paths:
      raise FileNotFoundError(f"{source}: no .npy files")
    for p in paths:
      yield _load_npy(p, dim, transpose)
    return
  data_dir, sep, split = source.rpartition(":")
  if not sep or not os.path.isdir(data_dir):
    raise FileNotFoundError(
        f"--input={source!r} is neither a .npy file, a folder, nor DATA_DIR:split")
  files = records.split_files(data_dir, split)
  for raw in tf.data.TFRecordDataset(files):
    ex = records.parse_example(raw)
    emb = ex["embedding"].numpy()
    if emb.shape[1] != dim:
      raise ValueError(f"{data_dir}: embeddings of dimension {emb.shape[1]}, "
                       f"the model expects {dim}")
    yield Item(ex["id"].numpy().decode(), emb, int(ex["speaker_index"]))


def synthesize(model_dir: str, source: str, out_dir: str, batch_size: int = 8,
               transpose: bool = False, speaker: Optional[int] = None,
               progress: bool = True) -> dict:
  """Writes `<out_dir>/<id>.wav` for every good item; returns a summary.

  Returns:
    {"written": [paths], "errors": [messages], "audio_seconds", "seconds",
     "rtf"}.
  """
  decoder = export_lib.LoadedDecoder(model_dir)
  sr = decoder.stft.sample_rate
  items = list(iter_items(source, decoder.dim, transpose))
  errors = [it.error for it in items if it.error]
  good = sorted((it for it in items if not it.error),
                key=lambda it: it.embedding.shape[0])
  if decoder.with_speaker:
    for it in good:
      if speaker is not None:
        it.speaker = speaker
      if it.speaker < 0:
        errors.append(f"{it.item_id}: the model is speaker-conditioned; give "
                      "--speaker=<index> (see e2s_export.json speakers)")
    good = [it for it in good if it.speaker >= 0]
  os.makedirs(out_dir, exist_ok=True)
  written, audio_seconds, compute = [], 0.0, 0.0
  bar = tqdm.tqdm(total=len(good), desc="synthesize", unit="item",
                  disable=not progress)
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
      path = os.path.join(out_dir, f"{it.item_id}.wav")
      audio_lib.save_wav(path, wav[:n], sr)
      written.append(path)
      audio_seconds += n / sr
    bar.update(len(batch))
  bar.close()
  return {"written": written, "errors": errors, "audio_seconds": audio_seconds,
          "seconds": compute,
          "rtf": compute / audio_seconds if audio_seconds else float("nan")}
