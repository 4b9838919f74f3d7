r"""Synthesises WAV files from embeddings with an exported decoder.

    python -m e2s_tf.synthesize --model=exports/multiscale \
        --input=(file.npy | dir/ | data/tfrecords:test) --out_dir=out/wav

`dir/a/x.npy` is written to `out/wav/a/x.wav`. Every bad input is reported
on stderr ("error: <file>: <reason>") and skipped; the exit status is 1 when
any was. The count printed is the number of WAV files written. A corrupted
shard, an unusable export or a full disk stop with one line
"synthesize: error: ..." and exit status 1.
"""

import os
import sys

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import synthesize_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_string(
    "model", None, "Export directory (an export is code: loading it runs its "
    "graph with your file access; load only trusted ones).", required=True)
_INPUT = flags.DEFINE_string(
    "input", None, "A .npy file, a folder of .npy files, or DATA_DIR:split.",
    required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the WAV files go.",
                               required=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Items per batch.")
_TRANSPOSE = flags.DEFINE_bool("transpose", False,
                               ".npy files are stored [D, T].")
_SPEAKER = flags.DEFINE_integer(
    "speaker", None, "Speaker index for a speaker-conditioned model.")


def main(argv):
  del argv
  try:
    result = synthesize_lib.synthesize(
        _MODEL.value, _INPUT.value, _OUT_DIR.value, _BATCH_SIZE.value,
        _TRANSPOSE.value, _SPEAKER.value)
  except (FileNotFoundError, ValueError, fileio.FolderInUse) as e:
    raise SystemExit(f"synthesize: error: {e}") from None
  except OSError as e:
    raise SystemExit(f"synthesize: error: {fileio.describe_os_error(e)}"
                     ) from None
  for message in result["errors"]:
    print(f"error: {message}", file=sys.stderr)
  print(f"wrote {len(result['written'])} WAV files to {_OUT_DIR.value} "
        f"({result['audio_seconds']:.1f} s of audio, RTF {result['rtf']:.3f})"
        + (f"; {len(result['errors'])} failed" if result["errors"] else ""))
  if result["errors"]:
    sys.exit(1)


def run():
  """The `e2s-synthesize` console script: `python -m e2s_tf.synthesize`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
