r"""Synthesises the offline espeak-ng corpus.

    python -m e2s_tf.make_corpus --out_dir=data/corpus \
        [--speakers=8 --utterances=40 --seed=0]
    python -m e2s_tf.make_corpus --out_dir=/tmp/scale/corpus \
        --speakers=40 --hours=10

Writes data/corpus/wav/<speaker>/<id>.wav, speakers.json and manifest.jsonl.
`--hours=H` sets the utterances per speaker for about H hours of audio
(`corpus.utterances_for_hours`: the utterances average
`corpus.MEAN_UTTERANCE_SECONDS`);
the summary line gives the hours the corpus holds.
"""

import collections
import time

from absl import app
from absl import flags
import soundfile

from e2s_tf import corpus
from e2s_tf import manifest as manifest_lib

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory.",
                               required=True)
_SPEAKERS = flags.DEFINE_integer("speakers", 8, "Number of speakers.")
_UTTERANCES = flags.DEFINE_integer("utterances", 40, "Utterances per speaker.")
_HOURS = flags.DEFINE_float(
    "hours", None, "About this many hours of audio: sets --utterances to "
    "ceil(hours x 3600 / (speakers x 4.8 s)) (not with --utterances).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of voices, sentences, pauses.")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 16000,
                                    "Sample rate of the WAV files.")
_WORKERS = flags.DEFINE_integer(
    "workers", None, "Concurrent espeak-ng processes (default: CPU count).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  del argv
  start = time.time()
  utterances = _UTTERANCES.value
  try:
    if _HOURS.value is not None:
      if flags.FLAGS["utterances"].present:
        raise ValueError("give --hours or --utterances, not both")
      utterances = corpus.utterances_for_hours(_HOURS.value, _SPEAKERS.value)
    manifest = corpus.make_corpus(
        _OUT_DIR.value, speakers=_SPEAKERS.value, utterances=utterances,
        seed=_SEED.value, sample_rate=_SAMPLE_RATE.value,
        progress=_PROGRESS.value, workers=_WORKERS.value)
  except (ValueError, RuntimeError, OSError) as e:
    raise SystemExit(f"make_corpus: error: {e}") from None
  items = manifest_lib.read_manifest(manifest)
  per_speaker = collections.Counter(item["speaker"] for item in items)
  seconds = sum(soundfile.info(item["audio"]).duration for item in items)
  print(f"make_corpus: {len(items)} utterances of {len(per_speaker)} speakers "
        f"({seconds / 3600.0:.2f} h of audio) -> {manifest} "
        f"({time.time() - start:.1f} s)")


def run():
  """The `e2s-make-corpus` console script: `python -m e2s_tf.make_corpus`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
