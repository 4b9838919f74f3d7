"""Manifests: the list of items a dataset is made from, and the id rules.

A manifest is JSON lines, one item an object: `id` (unique, and a valid id:
`fileio.check_item_id`, since ids become output file names), `audio` (path,
relative to the manifest's directory allowed), optional `speaker`, `start` and
`end` (seconds, a voice-active region), `embedding` (path to .npy), `text`.

`read_manifest` loads and validates one; `write_manifest` writes one
atomically. `build_manifest` scans a directory of audio (`speaker_dirs`:
LibriSpeech/VCTK style `<root>/<speaker>/**/<file>`, or `flat`) into a
manifest, optionally one item per voice-active region; its ids follow from the
file names (`id_segment`, `path_id`, `unique_ids`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import unicodedata
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from absl import logging
import tqdm

from e2s_tf import audio as audio_lib
from e2s_tf import fileio
from e2s_tf import spectral


class ManifestError(ValueError):
  """A malformed manifest; the message names the file and line."""


def write_manifest(items: Iterable[Mapping[str, Any]], path: str) -> int:
  """Writes items as JSON lines, atomically (`fileio.replacing`)."""
  count = 0
  with fileio.replacing(path) as f:
    for item in items:
      f.write(json.dumps(dict(item), ensure_ascii=False) + "\n")
      count += 1
  return count


_PATH_FIELDS = ("audio", "embedding")


def read_manifest(path: str) -> list[dict[str, Any]]:
  """Reads and validates a manifest; relative paths become absolute.

  `audio` and `embedding` paths are resolved against the manifest's
  directory. Blank lines are skipped.

  Raises:
    FileNotFoundError: no such manifest.
    ManifestError: malformed JSON, an item that is not an object, a missing or
      empty `id`/`audio`, an id that breaks the id rule (`../x`, `/x`, a
      space, ...: `fileio.item_id_problem` says why), a duplicate id, or
      invalid `start`/`end`; the message names the file and line number.
  """
  if not fileio.isfile(path):
    raise FileNotFoundError(f"manifest {path} not found")
  root = fileio.dirname(fileio.abspath(path))
  items, seen = [], {}
  with fileio.open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      where = f"{path}:{number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError:
        raise ManifestError(f"{where}: not UTF-8 text") from None
      if not line.strip():
        continue
      try:
        item = json.loads(line)
      except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: malformed JSON: {e.msg} "
                            f"(column {e.colno})") from None
      if not isinstance(item, dict):
        raise ManifestError(f"{where}: expected a JSON object, got "
                            f"{type(item).__name__}")
      for key in ("id", "audio"):
        if not isinstance(item.get(key), str) or not item[key]:
          raise ManifestError(f"{where}: missing or empty {key!r}")
      problem = fileio.item_id_problem(item["id"])
      if problem:
        raise ManifestError(f"{where}: invalid id {item['id']!r}: {problem}")
      if item["id"] in seen:
        raise ManifestError(f"{where}: duplicate id {item['id']!r} (first on "
                            f"line {seen[item['id']]})")
      seen[item["id"]] = number
      _check_region(item, where)
      for key in _PATH_FIELDS:
        if isinstance(item.get(key), str) and not fileio.isabs(item[key]):
          item[key] = fileio.normpath(os.path.join(root, item[key]))
      items.append(item)
  return items


def _check_region(item: Mapping[str, Any], where: str) -> None:
  bounds = {k: item[k] for k in ("start", "end") if k in item}
  for key, value in bounds.items():
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or value < 0:
      raise ManifestError(f"{where}: {key!r} must be a non-negative number of "
                          f"seconds, got {value!r}")
  if len(bounds) == 2 and bounds["start"] >= bounds["end"]:
    raise ManifestError(f"{where}: start {bounds['start']} is not before "
                        f"end {bounds['end']}")


def _speaker_from_dirs(relative: str) -> Optional[str]:
  parts = relative.split("/")
  return parts[0] if len(parts) > 1 else None


def _no_speaker(relative: str) -> Optional[str]:
  del relative
  return None


# layout -> (speaker of a relative path, whether a speaker is required).
LAYOUTS: dict[str, tuple[Callable[[str], Optional[str]], bool]] = {
    "speaker_dirs": (_speaker_from_dirs, True),
    "flat": (_no_speaker, False),
}


def find_audio(audio_dir: str) -> list[str]:
  """Sorted '/'-separated paths, relative to `audio_dir`, of its audio files.

  Hidden files and directories (".name") are skipped.
  """
  if not fileio.isdir(audio_dir):
    raise FileNotFoundError(f"audio directory {audio_dir} not found")
  found = []
  for directory, subdirs, files in fileio.walk(audio_dir):
    subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    for name in files:
      if (not name.startswith(".") and
          os.path.splitext(name)[1].lower() in audio_lib.AUDIO_EXTENSIONS):
        relative = fileio.relpath(os.path.join(directory, name), audio_dir)
        found.append(relative.replace(os.sep, "/"))
  return sorted(found)


# Room left in a generated id for the suffixes "_r<k>" (regions) and "-<n>"
# (to keep ids unique) within fileio.MAX_ID_LENGTH.
_ID_SUFFIX_ROOM = 24


def id_segment(name: str) -> str:
  """`name` as one segment of a valid item id; the same name, the same id.

  Letters are decomposed and stripped of accents ("é" -> "e"); every run of
  other characters outside letters, digits, `.`, `_` and `-` becomes one `_`
  ("my take (2)" -> "my_take_2_"); a segment `.` or `..` becomes `_`, an
  empty one `_`.
  """
  folded = "".join(c for c in unicodedata.normalize("NFKD", name)
                   if not unicodedata.combining(c))
  out, replaced = [], False
  for c in folded:
    if c.isascii() and (c.isalnum() or c in "._-"):
      out.append(c)
      replaced = False
    elif not replaced:
      out.append("_")
      replaced = True
  segment = "".join(out)
  return "_" if segment in ("", ".", "..") else segment


def path_id(relative: str, max_length: int = fileio.MAX_ID_LENGTH) -> str:
  """A '/'-separated relative path as a valid id, its segments `id_segment`.

  Longer than `max_length` characters: cut at `max_length` (then a trailing
  '/' or '.'/'..' segment is mended); ids made unique by `unique_ids`.
  """
  item_id = "/".join(id_segment(p) for p in relative.split("/") if p) or "_"
  if len(item_id) > max_length:
    item_id = "/".join(id_segment(p) for p in
                       item_id[:max_length].split("/") if p)
  return item_id


def unique_ids(ids: Sequence[str]) -> list[str]:
  """`ids` with repeats renamed `<id>-2`, `<id>-3`, ... in order.

  The first occurrence keeps its id; a new name never takes any id of the
  input, so the result is unique and depends only on the input order.
  """
  reserved, used, out = set(ids), set(), []
  for item_id in ids:
    name, number = item_id, 1
    while name in used or (name != item_id and name in reserved):
      number += 1
      name = f"{item_id}-{number}"
    used.add(name)
    out.append(name)
  return out


def _file_ids(relatives: Sequence[str]) -> list[str]:
  """Valid, unique ids of audio files (relative '/'-separated paths).

  The file stem ("p1/001.wav" -> "001") when the stems are unique, else the
  path without its extension with '/' -> '_' ("p1_001"); either way each
  character an id may not hold is mapped by `id_segment` ("my take (2).wav"
  -> "my_take_2_"), and names that still repeat get `-2`, `-3`, ...
  (`unique_ids`, in the sorted order of the paths).
  """
  room = fileio.MAX_ID_LENGTH - _ID_SUFFIX_ROOM
  stems = [path_id(os.path.splitext(r.rsplit("/", 1)[-1])[0], room)
           for r in relatives]
  if len(set(stems)) == len(stems):
    return stems
  logging.warning("file names are not unique; ids are relative paths instead")
  return unique_ids([path_id(os.path.splitext(r)[0].replace("/", "_"), room)
                     for r in relatives])


def build_manifest(audio_dir: str, out: str, layout: str = "speaker_dirs",
                   vad: bool = False,
                   config: spectral.StftConfig = spectral.DEFAULT,
                   vad_options: audio_lib.VadOptions = audio_lib.VadOptions(),
                   progress: bool = False) -> int:
  """Writes a manifest of the audio files under `audio_dir`.

  Args:
    audio_dir: root directory, scanned for .wav, .flac and .ogg files.
    out: manifest path; `audio` paths are written relative to its directory.
    layout: "speaker_dirs" (speaker = first directory below the root; files
      directly in the root are skipped with a warning) or "flat" (no speaker).
    vad: one item per voice-active region, with `start`/`end` in seconds and
      id `<file id>_r<k>`, instead of one per file. Files that fail to load
      are skipped with a warning naming them; files without a region give none.
    config: the frame grid of the regions (and the rate audio is loaded at).
    vad_options: settings of `audio.vad_regions`.
    progress: show a progress bar.

  Ids are made from the file names, always valid (`fileio.check_item_id`) and
  unique: see `_file_ids` (characters an id may not hold become `_`, e.g.
  "my take (2).wav" -> "my_take_2_"; repeats get `-2`, `-3`, ...).

  Returns:
    The number of items written.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; known: {sorted(LAYOUTS)}")
  speaker_of, needs_speaker = LAYOUTS[layout]
  relatives = []
  for relative in find_audio(audio_dir):
    if needs_speaker and speaker_of(relative) is None:
      logging.warning("%s: not inside a speaker directory; skipped",
                      os.path.join(audio_dir, relative))
      continue
    relatives.append(relative)
  out_dir = fileio.dirname(fileio.abspath(out))
  items, failed = [], 0
  for relative, file_id in tqdm.tqdm(
      list(zip(relatives, _file_ids(relatives))), desc="manifest",
      unit="file", disable=not progress):
    path = os.path.join(audio_dir, relative)
    base = {"id": file_id,
            "audio": fileio.relpath(fileio.abspath(path), out_dir).replace(
                os.sep, "/")}
    speaker = speaker_of(relative)
    if speaker is not None:
      base["speaker"] = speaker
    if not vad:
      items.append(base)
      continue
    try:
      waveform = audio_lib.load_audio(path, config.sample_rate)
    except audio_lib.AudioError as e:
      logging.warning("skipped: %s", e)
      failed += 1
      continue
    regions = audio_lib.vad_regions(waveform, config,
                                    **dataclasses.asdict(vad_options))
    for k, region in enumerate(regions):
      start, end = audio_lib.frames_to_seconds(region, config)
      items.append({**base, "id": f"{file_id}_r{k}", "start": start,
                    "end": end})
  # A region id "<file id>_r<k>" may equal another file's id: keep them apart.
  for item, item_id in zip(items, unique_ids([it["id"] for it in items])):
    item["id"] = fileio.check_item_id(item_id)
  count = write_manifest(items, out)
  logging.info("%s: %d items from %d files (%d unreadable)", out, count,
               len(relatives), failed)
  return count
