r"""Evaluates an export against oracle Griffin-Lim and the analytic inverse.

    python -m e2s_tf.evaluate --model=exports/multiscale \
        --data_dir=data/tfrecords --split=test --out_dir=eval/multiscale \
        [--speaker_judge=SPK_EXPORT] [--content_judge=CONTENT_EXPORT] \
        [--word_judge=pocketsphinx] [--floor=ENERGY_EXPORT]

Prints the signal metrics and the profile (content, prosody, identity,
naturalness, and the retention between the floor and the oracle) and writes
metrics.json, profile.json, report.md and report.html (the page to listen).

Exit status 1 with one line "evaluate: error: ..." for a truncated or
corrupted shard, an unusable export or a full disk; also 1 (after writing
the results of the others) when items were skipped because their stored id
cannot be a file name.
"""

import os
import sys

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from e2s_tf import evaluate_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from e2s_tf import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_string(
    "model", None, "Export directory (an export is code: loading it runs its "
    "graph with your file access; load only trusted ones).", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Output of preprocess.",
                                required=True)
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where results go.",
                               required=True)
_MAX_ITEMS = flags.DEFINE_integer("max_items", None,
                                  "Evaluate at most this many items.")
_NUM_FIGURES = flags.DEFINE_integer("num_figures", 3, "Items with a figure.")
_NUM_AUDIO = flags.DEFINE_integer("num_audio", 3,
                                  "Items whose audio is written per system.")
_SYSTEMS = flags.DEFINE_list("systems", [],
                             "Subset of model,oracle_griffin_lim,analytic.")
_SPEAKER_JUDGE = flags.DEFINE_string(
    "speaker_judge", None,
    "An export of e2s_tf.train_embedder that scores speaker cosine and "
    "identification (default: the dataset's embedder when it is one).")
_CONTENT_JUDGE = flags.DEFINE_string(
    "content_judge", None,
    "An export of e2s_tf.train_content_judge (a phone recogniser trained on "
    "the corpus) that scores phone error rates.")
_WORD_JUDGE = flags.DEFINE_enum(
    "word_judge", None, ["pocketsphinx"],
    "pocketsphinx: English word and character error rates (its model ships "
    "in its wheel; for recorded English speech, not for synthetic voices).")
_FLOOR = flags.DEFINE_string(
    "floor", None,
    "An export of a decoder trained on --embedder=energy with the model's "
    "recipe: the `floor` system and the retention table.")
_ASPECTS = flags.DEFINE_list(
    "aspects", ["content", "prosody", "identity", "naturalness"],
    "Aspects scored (an aspect whose judge is missing is left out).")


def main(argv):
  del argv
  try:
    result = evaluate_lib.evaluate(
        _MODEL.value, _DATA_DIR.value, _SPLIT.value, _OUT_DIR.value,
        _MAX_ITEMS.value, _NUM_FIGURES.value, _NUM_AUDIO.value,
        _SYSTEMS.value or None, command=" ".join(["python -m e2s_tf.evaluate"]
                                                 + sys.argv[1:]),
        speaker_judge=_SPEAKER_JUDGE.value,
        content_judge=_CONTENT_JUDGE.value, word_judge=_WORD_JUDGE.value,
        floor=_FLOOR.value, aspects=_ASPECTS.value)
  except (FileNotFoundError, ValueError, fileio.FolderInUse) as e:
    raise SystemExit(f"evaluate: error: {e}") from None
  except OSError as e:
    raise SystemExit(f"evaluate: error: {fileio.describe_os_error(e)}"
                     ) from None
  summary = {n: {k: v for k, v in s.items() if k != "items"}
             for n, s in result.items()}
  print(evaluate_lib.format_table(summary))
  text = evaluate_lib.profile_text(summary)
  if text:
    print()
    print(text)
  print(f"metrics.json, profile.json, report.md, report.html and figures/ in "
        f"{_OUT_DIR.value}")
  skipped = max(s.get("num_skipped", 0) for s in result.values())
  if skipped:
    sys.exit(f"evaluate: error: {skipped} items skipped (ids that cannot be file "
             "names; listed above and in report.md)")


def run():
  """The `e2s-evaluate` console script: `python -m e2s_tf.evaluate`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
