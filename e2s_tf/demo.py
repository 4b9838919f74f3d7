r"""The main job end to end: corpus -> preprocess -> train -> export -> synthesize -> evaluate.

    python -m e2s_tf.demo [--demo_dir=demo] [--audio_dir=DIR --layout=speaker_dirs --vad]
                          [--embedder=logmel] [--train_minutes=10]

`--embedder=speaker` or `speaker20ms` first trains the speaker encoder on the
corpus (e2s_tf.train_embedder, its default schedule, into
<demo_dir>/speaker_encoder) and exports it at its own 10 ms hop or every
20 ms (each frame the mean of two of its frames); the chain then runs on
`--embedder=savedmodel:<that export>`. Both share the encoder's workdir, so
the second of them only exports.

Then the judges of the evaluation's profile are trained on the decoder's
train split (unless given): a speaker judge (e2s_tf.train_embedder with
another seed than the embedder's, so it is never the inverted encoder) and a
content judge (e2s_tf.train_content_judge, a CTC phone recogniser, when the
manifest has `text`); and the floor: the same training config on the
`energy` embedder (one number per frame) for `--floor_minutes`. The evaluate
stage scores every system by aspect against them and places the model
between the floor and the oracle (docs/FAQ.md: reading the profile).

Every stage runs the project's own command line (printed before it runs) and
records what it produced in <demo_dir>/.stamps/<stage>: a re-run skips the
stages whose command and inputs are unchanged, so an interrupted demo goes on
where it stopped. `make demo` runs this; `make demo-clean` removes demo_dir.
"""

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Optional

from absl import app
from absl import flags

from e2s_tf import fileio

_DEMO_DIR = flags.DEFINE_string("demo_dir", "demo", "Where everything goes.")
_AUDIO_DIR = flags.DEFINE_string(
    "audio_dir", "", "Your own audio folder instead of the espeak-ng corpus.")
_LAYOUT = flags.DEFINE_string("layout", "speaker_dirs",
                              "Layout of --audio_dir: speaker_dirs | flat.")
_VAD = flags.DEFINE_bool("vad", False,
                         "One item per voice-active region of --audio_dir.")
_EMBEDDER = flags.DEFINE_string(
    "embedder", "logmel", "logmel | mfcc | npy | savedmodel:PATH | speaker | "
    "speaker20ms (a speaker encoder trained here first, e2s_tf.train_embedder, "
    "exported at its 10 ms hop, or every 20 ms for speaker20ms: the means of "
    "pairs of its frames)")
_SPLIT_BY = flags.DEFINE_string("split_by", "",
                                "speaker | utterance (default: speaker, or "
                                "utterance when the audio has no speakers).")
_CONFIG = flags.DEFINE_string(
    "config", "auto",
    "Training config: `auto` (the default decoder of the embedder's kind: "
    "multiscale for logmel and mfcc, cnn for learned encoders), a "
    "packaged name (multiscale, conformer, cnn, gan, conformer_gan) or a file.")
_TRAIN_MINUTES = flags.DEFINE_float(
    "train_minutes", 14.0, "Wall-clock budget of the training stage.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 0,
                                    "Override config.train.num_steps (0: keep).")
_SPEAKERS = flags.DEFINE_integer("speakers", 8, "Speakers of the corpus.")
_UTTERANCES = flags.DEFINE_integer("utterances", 40,
                                   "Utterances per speaker of the corpus.")
_NUM_WAV = flags.DEFINE_integer("num_wav", 8,
                                "Held-out utterances to synthesise as WAV.")
_SPEAKER_JUDGE = flags.DEFINE_string(
    "speaker_judge", "", "An export of e2s_tf.train_embedder that scores "
    "identity (default: one trained here on the train split).")
_CONTENT_JUDGE = flags.DEFINE_string(
    "content_judge", "", "An export of e2s_tf.train_content_judge that scores "
    "phone error rates (default: one trained here when the manifest has text).")
_WORD_JUDGE = flags.DEFINE_enum(
    "word_judge", "auto", ["auto", "pocketsphinx", "none"],
    "auto: pocketsphinx for --audio_dir, taken to be English speech (it "
    "decodes at 0.2-0.5 s per audio second: minutes for a test split), none "
    "for the synthetic corpus, which it cannot transcribe.")
_FLOOR_MINUTES = flags.DEFINE_float(
    "floor_minutes", 3.0, "Training budget of the floor (the same config on "
    "the `energy` embedder; 0: no floor and no retention table).")
_NUM_LISTEN = flags.DEFINE_integer(
    "num_listen", 5, "Test items with players and spectrograms on report.html.")


# Embedders the demo trains before preprocessing (a speaker encoder on the
# corpus's training utterances): name -> hop of the exported frames in
# milliseconds (None: the encoder's own hop, the STFT's).
TRAINED_EMBEDDERS = {"speaker": None, "speaker20ms": 20}
# The encoder's workdir in demo_dir, shared by the trained embedders.
ENCODER_WORKDIR = "speaker_encoder"
# The speaker judge's training seed (the encoder's is the config's, 0).
SPEAKER_JUDGE_SEED = 1


@dataclasses.dataclass(frozen=True)
class EncoderStage:
  """The stage that trains a demo embedder and exports it.

  Attributes:
    stage: the stage's name (its stamp in <demo_dir>/.stamps).
    command: the e2s_tf.train_embedder command line.
    export_dir: the export it writes (complete once `speaker_encoder.json`
      is there).
    embedder: the `--embedder` of the later stages: savedmodel:<export_dir>.
  """

  stage: str
  command: list[str]
  export_dir: str
  embedder: str


def encoder_stage(embedder: str, demo_dir: str, manifest: str,
                  python: str = sys.executable,
                  sample_rate: Optional[int] = None
                  ) -> Optional[EncoderStage]:
  """The training stage of a `TRAINED_EMBEDDERS` embedder; None for others.

  Args:
    embedder: the demo's --embedder.
    demo_dir: the demo folder (absolute).
    manifest: the encoder's training manifest.
    python: the interpreter of the command.
    sample_rate: of the audio, to turn milliseconds into samples (default:
      the StftConfig's, that of the demo).

  Returns:
    The stage, or None: `embedder` is used as it is (logmel, savedmodel:PATH,
    ...).
  """
  if embedder not in TRAINED_EMBEDDERS:
    return None
  workdir = os.path.join(demo_dir, ENCODER_WORKDIR)
  hop_ms = TRAINED_EMBEDDERS[embedder]
  # The encoder's own hop keeps the names (and stamps) of earlier demos.
  suffix = "" if hop_ms is None else f"_{hop_ms}ms"
  export_dir = os.path.join(workdir, "export" + suffix)
  command = [python, "-m", "e2s_tf.train_embedder", f"--manifest={manifest}",
             f"--workdir={workdir}", f"--export_dir={export_dir}"]
  if hop_ms is not None:
    if sample_rate is None:
      from e2s_tf import spectral  # pylint: disable=g-import-not-at-top
      sample_rate = spectral.StftConfig().sample_rate
    frame_step, remainder = divmod(hop_ms * sample_rate, 1000)
    if remainder:
      raise ValueError(f"--embedder={embedder}: {hop_ms} ms is no whole "
                       f"number of samples at {sample_rate} Hz")
    command.append(f"--export_frame_step={frame_step}")
  return EncoderStage(ENCODER_WORKDIR + suffix, command, export_dir,
                      "savedmodel:" + export_dir)


def default_split_by(split_by: str, embedder: str, audio_dir: str,
                     layout: str) -> str:
  """The preprocess --split_by: `split_by`, else by utterance for a speaker
  encoder trained here (it is evaluated by identifying the same speakers) or
  for audio without speakers, else by speaker."""
  if split_by:
    return split_by
  if embedder in TRAINED_EMBEDDERS or (audio_dir and layout == "flat"):
    return "utterance"
  return "speaker"


def _stale(dataset_info):
  """Whether a dataset_info.json is of another schema than this version's."""
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  try:
    with open(dataset_info) as f:
      return json.load(f).get("version", 1) != records.SCHEMA_VERSION
  except (OSError, ValueError):
    return True


def _stamp_path(demo_dir, stage):
  return os.path.join(demo_dir, ".stamps", stage)


def _done(demo_dir, stage, command, outputs):
  path = _stamp_path(demo_dir, stage)
  if not os.path.exists(path) or not all(os.path.exists(o) for o in outputs):
    return False
  for output in outputs:
    if os.path.basename(output) == "dataset_info.json" and _stale(output):
      return False  # records of an older schema: preprocess rebuilds them
  with open(path) as f:
    return json.load(f).get("command") == command


def _stage(index, total, stage, command, outputs, demo_dir, env=None):
  """Runs `command` (a list) unless its stamp says it already ran; returns
  whether it ran."""
  text = " ".join(shlex.quote(c) for c in command)
  head = f"[{index}/{total}] {stage}"
  if _done(demo_dir, stage, text, outputs):
    print(f"{head}: done earlier, skipped ({text})", flush=True)
    return False
  print(f"{head}: {text}", flush=True)
  start = time.time()
  env = dict(env or os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  result = subprocess.run(command, env=env)
  if result.returncode != 0:
    raise SystemExit(f"{head} failed (exit {result.returncode}); fix the "
                     "cause and re-run: finished stages are kept")
  fileio.write_json(_stamp_path(demo_dir, stage),
                    {"command": text, "seconds": round(time.time() - start, 1)},
                    indent=None)
  print(f"{head}: finished in {time.time() - start:.0f} s", flush=True)
  return True


def _pick_wav_inputs(data_dir, out_dir, count):
  """Writes the raw embeddings of `count` test items as .npy files."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from e2s_tf import records  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  files = records.split_files(data_dir, "test")
  written = 0
  for ex in records.read_examples(files):
    if written == count:
      break
    item_id = ex["id"]
    try:
      path = fileio.output_path(out_dir, item_id, ".npy")
    except fileio.InvalidItemId as e:
      print(f"demo: {e}; skipped", file=sys.stderr)
      continue
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, ex["embedding"])
    written += 1


def _encoder_manifest(manifest, out, split_by):
  """The manifest's items of the decoder's train split (same split as
  preprocess with its defaults), so the encoder never hears the utterances
  the decoder is evaluated on."""
  # pylint: disable-next=g-import-not-at-top
  from e2s_tf import manifest as manifest_lib
  # pylint: disable-next=g-import-not-at-top
  from e2s_tf.preprocessing import splits as split_lib
  items = manifest_lib.read_manifest(manifest)
  splits = split_lib.assign_splits(items, split_by, 0.1, 0.1, seed=0)
  manifest_lib.write_manifest(
      [it for it in items if splits[it["id"]] == "train"], out)


def judge_commands(demo_dir: str, train_manifest: str,
                   python: str = sys.executable) -> dict[str, list[str]]:
  """The commands that train the evaluation's judges on `train_manifest`:
  {"speaker_judge": ..., "content_judge": ...}; their exports are
  <demo_dir>/<name>/export. The speaker judge takes another seed than the
  demo's speaker encoder: a judge must not be the encoder it judges."""
  out = {}
  for name, module, extra in [
      ("speaker_judge", "e2s_tf.train_embedder",
       [f"--config.train.seed={SPEAKER_JUDGE_SEED}"]),
      ("content_judge", "e2s_tf.train_content_judge", [])]:
    workdir = os.path.join(demo_dir, name)
    out[name] = [python, "-m", module, f"--manifest={train_manifest}",
                 f"--workdir={workdir}",
                 f"--export_dir={os.path.join(workdir, 'export')}", *extra]
  return out


def _has_text(manifest: str) -> bool:
  from e2s_tf import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  return any(it.get("text") for it in manifest_lib.read_manifest(manifest))


def _num_speakers(manifest: str) -> int:
  from e2s_tf import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  return len({it["speaker"] for it in manifest_lib.read_manifest(manifest)
              if it.get("speaker")})


def main(argv):
  del argv
  py = sys.executable
  d = os.path.abspath(_DEMO_DIR.value)
  os.makedirs(d, exist_ok=True)
  started = time.time()
  # The decoder's train split as a manifest: what the trained embedder and
  # the judges learn from (the name is that of earlier demos' encoder).
  train_manifest = os.path.join(d, "speaker_encoder_manifest.jsonl")
  encoder = encoder_stage(_EMBEDDER.value, d, train_manifest, py)
  if _AUDIO_DIR.value:
    manifest = os.path.join(d, "manifest.jsonl")
    first = ("manifest", [py, "-m", "e2s_tf.make_manifest",
                          f"--audio_dir={_AUDIO_DIR.value}",
                          f"--out={manifest}", f"--layout={_LAYOUT.value}",
                          f"--vad={str(_VAD.value).lower()}"])
  else:
    manifest = os.path.join(d, "corpus", "manifest.jsonl")
    first = ("corpus", [py, "-m", "e2s_tf.make_corpus",
                        f"--out_dir={d}/corpus",
                        f"--speakers={_SPEAKERS.value}",
                        f"--utterances={_UTTERANCES.value}"])
  with_floor = _FLOOR_MINUTES.value > 0
  # corpus, [encoder], judges (2), preprocess, train, export, synthesize,
  # [floor: preprocess, train, export], evaluate.
  total = 8 + bool(encoder) + 3 * with_floor
  counter = iter(range(1, total + 1))

  def stage(name, command, outputs):
    return _stage(next(counter), total, name, command, outputs, d)

  stage(first[0], first[1], [manifest])
  data_dir = os.path.join(d, "tfrecords")
  split_by = default_split_by(_SPLIT_BY.value, _EMBEDDER.value,
                              _AUDIO_DIR.value, _LAYOUT.value)
  _encoder_manifest(manifest, train_manifest, split_by)
  embedder = _EMBEDDER.value
  if encoder:
    stage(encoder.stage, encoder.command,
          [os.path.join(encoder.export_dir, "speaker_encoder.json")])
    embedder = encoder.embedder
  judges = judge_commands(d, train_manifest, py)
  speaker_judge = _SPEAKER_JUDGE.value
  if not speaker_judge and _num_speakers(train_manifest) >= 2:
    speaker_judge = os.path.join(d, "speaker_judge", "export")
    stage("speaker_judge", judges["speaker_judge"],
          [os.path.join(speaker_judge, "speaker_encoder.json")])
  else:
    print(f"[{next(counter)}/{total}] speaker_judge: " + (
        f"{speaker_judge} (given)" if speaker_judge else
        "none: the train split has fewer than 2 speakers (a speaker "
        "encoder needs them)"))
  content_judge = _CONTENT_JUDGE.value
  if not content_judge and _has_text(train_manifest):
    content_judge = os.path.join(d, "content_judge", "export")
    stage("content_judge", judges["content_judge"],
          [os.path.join(content_judge, "content_judge.json")])
  else:
    print(f"[{next(counter)}/{total}] content_judge: " + (
        f"{content_judge} (given)" if content_judge else
        "none: the manifest has no text (phone error rates need it)"))

  cmd = [py, "-m", "e2s_tf.preprocess", f"--manifest={manifest}",
         f"--out_dir={data_dir}", f"--embedder={embedder}",
         f"--split_by={split_by}", "--overwrite"]
  stage("preprocess", cmd, [os.path.join(data_dir, "dataset_info.json")])

  config = _CONFIG.value
  if config == "auto":
    from e2s_tf import configs  # pylint: disable=g-import-not-at-top
    config = configs.default_for_dataset(data_dir)
    print(f"  config: auto -> {config} (the default decoder of this embedder)")
  workdir = os.path.join(d, "run")
  cmd = [py, "-m", "e2s_tf.train", f"--config={_CONFIG.value}",
         f"--data_dir={data_dir}", f"--workdir={workdir}",
         f"--config.train.max_minutes={_TRAIN_MINUTES.value}"]
  if _TRAIN_STEPS.value:
    cmd.append(f"--config.train.num_steps={_TRAIN_STEPS.value}")
  stage("train", cmd, [os.path.join(workdir, "checkpoints")])

  export_dir = os.path.join(d, "export")
  cmd = [py, "-m", "e2s_tf.export", f"--workdir={workdir}",
         f"--export_dir={export_dir}"]
  stage("export", cmd, [os.path.join(export_dir, "e2s_export.json")])

  npy_dir = os.path.join(d, "wav_inputs")
  wav_dir = os.path.join(d, "wav")
  if not os.path.isdir(npy_dir):
    _pick_wav_inputs(data_dir, npy_dir, _NUM_WAV.value)
  cmd = [py, "-m", "e2s_tf.synthesize", f"--model={export_dir}",
         f"--input={npy_dir}", f"--out_dir={wav_dir}"]
  stage("synthesize", cmd, [wav_dir])

  floor_export = os.path.join(d, "floor", "export")
  if with_floor:
    # The floor: the same recipe on frame energy alone.
    floor_data = os.path.join(d, "floor", "tfrecords")
    cmd = [py, "-m", "e2s_tf.preprocess", f"--manifest={manifest}",
           f"--out_dir={floor_data}", "--embedder=energy",
           f"--split_by={split_by}", "--overwrite"]
    stage("floor_preprocess", cmd,
          [os.path.join(floor_data, "dataset_info.json")])
    floor_run = os.path.join(d, "floor", "run")
    cmd = [py, "-m", "e2s_tf.train", f"--config={config}",
           f"--data_dir={floor_data}", f"--workdir={floor_run}",
           f"--config.train.max_minutes={_FLOOR_MINUTES.value}"]
    stage("floor_train", cmd, [os.path.join(floor_run, "checkpoints")])
    cmd = [py, "-m", "e2s_tf.export", f"--workdir={floor_run}",
           f"--export_dir={floor_export}"]
    stage("floor_export", cmd, [os.path.join(floor_export, "e2s_export.json")])

  word_judge = _WORD_JUDGE.value
  if word_judge == "auto":
    word_judge = "pocketsphinx" if _AUDIO_DIR.value else "none"
  eval_dir = os.path.join(d, "eval")
  cmd = [py, "-m", "e2s_tf.evaluate", f"--model={export_dir}",
         f"--data_dir={data_dir}", "--split=test", f"--out_dir={eval_dir}",
         f"--num_audio={_NUM_LISTEN.value}"]
  if speaker_judge:
    cmd.append(f"--speaker_judge={speaker_judge}")
  if content_judge:
    cmd.append(f"--content_judge={content_judge}")
  if word_judge != "none":
    cmd.append(f"--word_judge={word_judge}")
  if with_floor:
    cmd.append(f"--floor={floor_export}")
  evaluated = stage("evaluate", cmd, [os.path.join(eval_dir, "metrics.json")])

  report = os.path.join(eval_dir, "report.md")
  print()
  print(f"demo finished in {time.time() - started:.0f} s (this run)")
  print(f"  WAV files (held-out utterances): {wav_dir}")
  print(f"  report:      {report}")
  print(f"  listen:      {os.path.join(eval_dir, 'report.html')}")
  print(f"  figures:     {os.path.join(eval_dir, 'figures')}")
  print(f"  audio pairs: {os.path.join(eval_dir, 'audio')}")
  print(f"  TensorBoard: tensorboard --logdir={workdir}")
  if not evaluated:  # else the evaluate stage has just printed the tables
    print()
    with open(report) as f:
      for line in f:
        if line.startswith(("|", "**")):
          print(line.rstrip())


def run():
  """The `e2s-demo` console script: `python -m e2s_tf.demo`."""
  from e2s_tf import cli  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=cli.flags_parser(__name__))


if __name__ == "__main__":
  run()
