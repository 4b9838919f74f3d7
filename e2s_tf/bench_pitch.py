r"""Compares pitch trackers on a corpus: speed, and agreement with each other,
with known tones and with an oracle Griffin-Lim copy of each item
(e2s_tf/benchmarks/pitch.py; the run behind the prosody metrics' tracker is
docs/experiments/pitch_tracker.md).

    python -m e2s_tf.bench_pitch --manifest=demo/corpus/manifest.jsonl \
        [--max_items=40] [--sample_rate=16000]

Prints a Markdown table.
"""

import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import manifest as manifest_lib
from e2s_tf.benchmarks import pitch
# pylint: enable=g-import-not-at-top,wrong-import-position

_MANIFEST = flags.DEFINE_string("manifest", None,
                                "manifest.jsonl of the speech to track.",
                                required=True)
_MAX_ITEMS = flags.DEFINE_integer("max_items", 0,
                                  "Use the first N items (0: all).")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 16000,
                                    "Rate the audio is analysed at.")


def main(argv):
  del argv
  try:
    items = manifest_lib.read_manifest(_MANIFEST.value)
  except (OSError, ValueError) as e:
    raise SystemExit(f"bench_pitch: error: {e}") from None
  if _MAX_ITEMS.value > 0:
    items = items[:_MAX_ITEMS.value]
  print(pitch.markdown(pitch.compare_trackers([it["audio"] for it in items],
                                              _SAMPLE_RATE.value)))


def run():
  """The `e2s-bench-pitch` console script: `python -m e2s_tf.bench_pitch`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
