r"""Manifest -> TFRecord shards + dataset_info.json.

    python -m e2s_tf.preprocess --manifest=data/corpus/manifest.jsonl \
        --out_dir=data/tfrecords --embedder=logmel

Without `--runner` the items run over a local process pool
(`preprocess_lib.run_preprocess`). With `--runner=DirectRunner` (or
DataflowRunner, FlinkRunner, SparkRunner, ...) the same work runs as an Apache
Beam pipeline (`beam_preprocess.run_beam_preprocess`), with the same examples
and dataset_info.json. Every flag this program does not define is passed to
Beam as a pipeline option; write them as `--name=value`, e.g.

    python -m e2s_tf.preprocess --manifest=M --out_dir=gs://bucket/T \
        --runner=DataflowRunner --project=my-project --region=europe-west1 \
        --temp_location=gs://bucket/tmp --sdk_container_image=IMAGE

The DirectRunner defaults to `--num_workers` processes
(`--direct_running_mode=multi_processing`); its own `--direct_num_workers` /
`--direct_running_mode` options override that. Unknown flags without
`--runner` are an error.

Everything is checked before the output folder is touched; the folder is
locked for the run (a second run into it fails at once, naming the first);
the new dataset replaces the previous one only once it is complete, and only
this program's files are ever deleted. Items longer than `--max_item_seconds`
become pieces `<id>/part-NNN`, cut at pauses, in the item's split. Every
error is one line `preprocess: error: ...` and exit status 1.
"""

import json

from absl import app
from absl import flags
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import preprocess_lib
from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.preprocessing import pieces
from e2s_tf.preprocessing import splits
from e2s_tf.preprocessing.errors import PreprocessError

_MANIFEST = flags.DEFINE_string("manifest", None, "manifest.jsonl to read.",
                                required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory.",
                               required=True)
_EMBEDDER = flags.DEFINE_string(
    "embedder", "logmel", "logmel | mfcc | npy | savedmodel:PATH | onnx:PATH "
    "(a SavedModel or ONNX model is code: it runs with your file access; use "
    "only trusted ones)")
_EMBEDDER_OPTIONS = flags.DEFINE_string(
    "embedder_options", "{}",
    'JSON options of the embedder, e.g. \'{"transpose": true}\' for npy '
    "arrays stored [D, T], '{\"num_mel_bins\": 80}' for logmel, or "
    "'{\"frame_length\": 400, \"frame_step\": 320, \"center\": false}' to "
    "declare the grid of npy arrays, a SavedModel or an ONNX model (any hop, "
    "window and centring: mapped onto the STFT frames by frame centres).")
_NPY_TRANSPOSED = flags.DEFINE_bool(
    "npy_transposed", False,
    "npy embedder: arrays are stored [D, T] (the original data's (64, 120)).")
_SPLIT_BY = flags.DEFINE_enum("split_by", "speaker",
                              list(splits.SPLIT_MODES),
                              "Hold out whole speakers, or utterances.")
_VALID = flags.DEFINE_float("valid_fraction", 0.1, "Share of speakers/items "
                            "for validation.")
_TEST = flags.DEFINE_float("test_fraction", 0.1, "Share for the test split.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split.")
_FRAME_TOLERANCE = flags.DEFINE_integer(
    "frame_tolerance", 0, "Trim at most this many trailing frames when an "
    "item's embedding has more or fewer frames than its embedder's grid "
    "gives for the audio (real off-by-a-frame data; counted in "
    "dataset_info.json); a larger mismatch rejects the item. Not how grids "
    "are aligned: any hop, window and centring is mapped onto the STFT "
    "frames by frame centres (frame_mapping in dataset_info.json).")
_ITEMS_PER_SHARD = flags.DEFINE_integer("items_per_shard", 64,
                                        "Examples per TFRecord shard.")
_EMBEDDING_DTYPE = flags.DEFINE_enum(
    "embedding_dtype", records.DEFAULT_EMBEDDING_DTYPE,
    list(records.EMBEDDING_DTYPES),
    "How the records store the embedding: float16 halves its bytes (see "
    "docs/scaling.md for what it does to quality); float32 keeps it exact, "
    "and is needed for an embedder whose values exceed float16's range.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "Worker processes, locally or on the DirectRunner "
    "(default: the cores, at most 8).")
_MAX_ITEM_SECONDS = flags.DEFINE_float(
    "max_item_seconds", pieces.DEFAULT_MAX_ITEM_SECONDS,
    "Cut items longer than this (seconds) into pieces <id>/part-NNN at "
    "pauses, each at most this long and in the item's split, so that memory "
    "does not grow with the longest recording; 0: never cut.")
_MAX_REJECTED = flags.DEFINE_float(
    "max_rejected_fraction", 0.2,
    "Fail when more than this share of the items is rejected.")
_RUNNER = flags.DEFINE_string(
    "runner", "", "Apache Beam runner (DirectRunner, DataflowRunner, "
    "FlinkRunner, SparkRunner, ...); empty: the local process pool. Flags "
    "not defined here are passed to Beam as pipeline options.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a dataset made with other settings.")
_FRAME_LENGTH = flags.DEFINE_integer(
    "frame_length", spectral.DEFAULT.frame_length,
    "STFT window in samples (the original authors' setting: the FFT size).")
_FRAME_STEP = flags.DEFINE_integer("frame_step", spectral.DEFAULT.frame_step,
                                   "STFT hop in samples.")
_FFT_LENGTH = flags.DEFINE_integer("fft_length", spectral.DEFAULT.fft_length,
                                   "FFT size.")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate",
                                    spectral.DEFAULT.sample_rate,
                                    "Sample rate of the project.")


def _parse_flags(argv):
  """Parses this program's flags; returns argv[0] and the rest, for Beam."""
  try:
    return flags.FLAGS(argv, known_only=True)
  except flags.Error as e:
    raise SystemExit(f"preprocess: error: {e} (see --helpshort)") from None


def _fail(message: str):
  raise SystemExit(f"preprocess: error: {message}")


def _embedder_options(text: str) -> dict:
  """--embedder_options as a dict, or one line saying what is wrong."""
  try:
    options = json.loads(text)
  except ValueError as e:
    _fail(f"--embedder_options: not valid JSON ({e}): {text!r}")
  if not isinstance(options, dict):
    _fail(f"--embedder_options: must be a JSON object such as "
          f"'{{\"num_mel_bins\": 80}}', got {type(options).__name__} "
          f"{text!r}")
  return options


def _one_line(error: BaseException) -> str:
  text = str(getattr(error, "message", None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def main(argv):
  pipeline_args = argv[1:]
  if pipeline_args and not _RUNNER.value:
    raise app.UsageError(
        f"unknown flags or arguments {pipeline_args}: pipeline options need "
        "--runner (see --helpfull)")
  options = _embedder_options(_EMBEDDER_OPTIONS.value)
  if _NPY_TRANSPOSED.value:
    options["transpose"] = True
  config = spectral.StftConfig(
      sample_rate=_SAMPLE_RATE.value, frame_length=_FRAME_LENGTH.value,
      frame_step=_FRAME_STEP.value, fft_length=_FFT_LENGTH.value)
  kwargs = dict(
      embedder_spec=_EMBEDDER.value, embedder_options=options, config=config,
      split_by=_SPLIT_BY.value, valid_fraction=_VALID.value,
      test_fraction=_TEST.value, seed=_SEED.value,
      frame_tolerance=_FRAME_TOLERANCE.value,
      items_per_shard=_ITEMS_PER_SHARD.value,
      embedding_dtype=_EMBEDDING_DTYPE.value, num_workers=_NUM_WORKERS.value,
      max_rejected_fraction=_MAX_REJECTED.value, overwrite=_OVERWRITE.value,
      max_item_seconds=_MAX_ITEM_SECONDS.value)
  try:
    if _RUNNER.value:
      # Imported only here: Apache Beam is needed by the pipeline path alone.
      from e2s_tf import beam_preprocess  # pylint: disable=g-import-not-at-top
      beam_preprocess.run_beam_preprocess(
          _MANIFEST.value, _OUT_DIR.value, runner=_RUNNER.value,
          pipeline_args=pipeline_args, **kwargs)
    else:
      preprocess_lib.run_preprocess(_MANIFEST.value, _OUT_DIR.value, **kwargs)
  except (PreprocessError, fileio.FolderInUse, ValueError,
          FileNotFoundError) as e:
    _fail(_one_line(e))
  except OSError as e:
    _fail(fileio.describe_os_error(e))
  except tf.errors.OpError as e:
    _fail("no space left on " + _OUT_DIR.value if fileio.is_no_space(e)
          else _one_line(e))


def run():
  """The `e2s-preprocess` console script: `python -m e2s_tf.preprocess`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__, _parse_flags))


if __name__ == "__main__":
  run()
