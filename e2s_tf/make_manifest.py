r"""Builds a manifest from a directory of audio files.

    python -m e2s_tf.make_manifest --audio_dir=/data/LibriSpeech/dev-clean \
        --out=data/dev-clean.jsonl [--layout=speaker_dirs|flat] [--vad]

`speaker_dirs`: <audio_dir>/<speaker>/**/<file> (LibriSpeech, VCTK); `flat`:
every .wav/.flac/.ogg file under audio_dir, without speakers. With --vad, one
item per voice-active region (start/end in seconds, on the frame grid).

Ids come from the file names and are always valid ids (they become output
file names): characters other than letters, digits, '.', '_' and '-' map to
'_' ("my take (2).wav" -> "my_take_2_"), accents are dropped, and repeats get
"-2", "-3", ... (see manifest.build_manifest).
"""

from absl import app
from absl import flags

from e2s_tf import audio
from e2s_tf import manifest as manifest_lib
from e2s_tf import spectral

_AUDIO_DIR = flags.DEFINE_string("audio_dir", None, "Root of the audio files.",
                                 required=True)
_OUT = flags.DEFINE_string("out", None, "Manifest to write (.jsonl).",
                           required=True)
_LAYOUT = flags.DEFINE_enum("layout", "speaker_dirs",
                            list(manifest_lib.LAYOUTS),
                            "Directory layout of audio_dir.")
_VAD = flags.DEFINE_bool(
    "vad", False, "One item per voice-active region instead of per file.")


def _define_fields(prefix, defaults, helps):
  """A flag `<prefix><field>` per field of `helps`, its default the field's
  value in `defaults` (an int or float flag by its type): {field: holder}."""
  holders = {}
  for field, help_text in helps.items():
    default = getattr(defaults, field)
    define = (flags.DEFINE_integer if isinstance(default, int) else
              flags.DEFINE_float)
    holders[field] = define(prefix + field, default, help_text)
  return holders


_VAD_OPTIONS = _define_fields("vad_", audio.VadOptions(), {
    "threshold_db":
        "Speech frames are within this many dB of the loudest frame (<= 0).",
    "floor_db": "Frames below this energy (dB full scale) are never speech.",
    "min_region_frames": "Drop regions shorter than this many frames.",
    "hangover_frames": "Extend each speech run by this many frames.",
    "min_gap_frames": "Also merge regions separated by fewer frames than this.",
})
_GRID = _define_fields("", spectral.DEFAULT, {
    "sample_rate": "Sample rate of the grid.",
    "frame_length": "Frame window in samples.",
    "frame_step": "Frame hop in samples.",
    "fft_length": "FFT size of the grid.",
})
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  del argv
  try:
    config = spectral.StftConfig(
        **{k: holder.value for k, holder in _GRID.items()})
    vad_options = audio.VadOptions(
        **{k: holder.value for k, holder in _VAD_OPTIONS.items()})
    count = manifest_lib.build_manifest(
        _AUDIO_DIR.value, _OUT.value, layout=_LAYOUT.value, vad=_VAD.value,
        config=config, vad_options=vad_options, progress=_PROGRESS.value)
  except (ValueError, OSError) as e:
    raise SystemExit(f"make_manifest: error: {e}") from None
  unit = "voice-active regions" if _VAD.value else "files"
  print(f"make_manifest: {count} items ({unit}, layout {_LAYOUT.value}) "
        f"-> {_OUT.value}")


def run():
  """The `e2s-make-manifest` script: `python -m e2s_tf.make_manifest`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
