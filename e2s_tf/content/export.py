"""The content-judge export, and the export loaded back.

`export(workdir, export_dir)` writes a SavedModel with one signature,

    serving_default(waveform [B, S] f32, lengths [B] i32)
        -> {"log_probs": [B, T', K + 1] f32, "frames": [B] i32}

per-frame CTC log-probabilities (log-softmax; class 0 the blank, class i + 1
phone i of the inventory) and the valid frames of each utterance, T' =
ceil(num_frames(lengths) / frame_stack) on the StftConfig grid (0 for a
waveform shorter than one STFT frame); padding beyond `lengths` does not
change the valid frames. Greedy decoding is the argmax of each valid frame,
repeats merged, blanks dropped. It loads with plain `tf.saved_model.load`.

Beside it, `content_judge.json`: the phone inventory, the language of the
G2P (espeak-ng) and the espeak-ng version, the sample rate and STFT grid,
the frame stack, the held-out PER of the exported weights, the training
config, and the signature's description. `load_judge` gives transcriptions
and G2P from the export alone.

An export is a program: loading one runs its graph with the user's file
access; load only trusted ones.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from e2s_tf import fileio
from e2s_tf import spectral
from e2s_tf.aspects import content as content_metrics
from e2s_tf.content import decoding
from e2s_tf.content import g2p
from e2s_tf.content import network
from e2s_tf.content import workdir as workdir_lib
from e2s_tf.training import checkpoints

JUDGE_JSON = "content_judge.json"
SIGNATURE = "serving_default"
LOG_PROBS = "log_probs"
FRAMES = "frames"
FORMAT = 1


class JudgeModule(tf.Module):
  """The exported signature (see the module docstring)."""

  def __init__(self, net: network.ContentJudgeNetwork):
    super().__init__(name="e2s_content_judge")
    # The weights, by Keras path, are what the SavedModel tracks; the Keras
    # model itself is only called (tracking it would make Keras add a
    # default signature of its first call argument alone).
    self.judge_weights = checkpoints.weights_of(net)
    frame_length = net.stft_config.frame_length

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="waveform"),
        tf.TensorSpec([None], tf.int32, name="lengths")])
    def log_probs(waveform, lengths):
      lengths = tf.minimum(lengths, tf.shape(waveform)[1])

      def run():
        logits, frames = net(waveform, lengths, training=False)
        return tf.nn.log_softmax(logits, axis=-1), frames

      def no_frames():
        # The STFT of fewer samples than a frame has no frame to convolve.
        batch = tf.shape(waveform)[0]
        return (tf.zeros([batch, 0, net.num_classes]),
                tf.zeros([batch], tf.int32))

      out, frames = tf.cond(tf.shape(waveform)[1] >= frame_length, run,
                            no_frames)
      return {LOG_PROBS: out, FRAMES: frames}

    self.log_probs = log_probs


def export(workdir: str, export_dir: str, weights: str = "best",
           overwrite: bool = False) -> dict[str, Any]:
  """Exports a checkpoint of `workdir`; returns content_judge.json.

  Writes the SavedModel and `content_judge.json` into a temporary sibling,
  then swaps it in (`fileio.write_folder`): a previous judge export (or an
  empty folder) is replaced, anything else only with `overwrite`; a folder
  holding `workdir` never.

  Args:
    workdir: a content-judge workdir with a checkpoint.
    export_dir: the export's folder.
    weights: "best" (the lowest held-out PER; the last step when the run
      held nothing out) or "last".
    overwrite: replace a folder holding something else than an export.
  """
  trained = workdir_lib.restore_trained(workdir, weights)
  net, judge = trained.network, trained.judge
  evaluation = workdir_lib.read_evaluation(workdir)
  if trained.weights == "best":
    per = evaluation.get("best_per")
  else:
    per = evaluation.get("heldout_per") if evaluation.get(
        "step") == trained.step else None
  module = JudgeModule(net)
  stft_config = net.stft_config
  meta = {
      "format": FORMAT,
      "phones": judge["phones"],
      "blank_index": network.BLANK,
      "language": judge["language"],
      "g2p": {"backend": "espeak-ng", "version": g2p.espeak_version(),
              "tokens": "espeak-ng phoneme mnemonics, no stress, pauses or "
                        "word boundaries (e2s_tf.content.g2p)"},
      "sample_rate": stft_config.sample_rate,
      "stft": stft_config.to_dict(),
      "frame_stack": net.frame_stack,
      "frame_seconds": net.frame_stack * stft_config.hop_seconds,
      "min_samples": decoding.min_samples(stft_config),
      "step": trained.step,
      "weights": trained.weights,
      "held_out_per": per,
      "num_train_items": len(judge["train"]),
      "num_heldout_items": len(judge["heldout"]),
      "skipped_items": {k: len(v) for k, v in judge["skipped"].items()},
      "evaluation": evaluation,
      "config": trained.config.to_dict(),
      "endpoints": {
          SIGNATURE: f"(waveform [B,S] f32, lengths [B] i32) -> {LOG_PROBS} "
                     f"[B,T,{net.num_classes}] f32 (CTC log-probabilities, "
                     f"blank {network.BLANK}, phone i = class i+1), {FRAMES} "
                     "[B] i32 (valid frames)"},
  }

  def write(tmp):
    tf.saved_model.save(module, tmp, signatures={SIGNATURE: module.log_probs})
    fileio.write_json(os.path.join(tmp, JUDGE_JSON), meta, indent=1,
                      sort_keys=True, default=list)

  fileio.write_folder(export_dir, write, marker=JUDGE_JSON,
                      overwrite=overwrite, program="train_content_judge",
                      protect=[workdir])
  return meta


class ContentJudge:
  """An exported judge, NumPy in and out; needs only the export.

  Attributes:
    meta: content_judge.json.
    phones: the phone inventory.
    language: the espeak-ng language of its G2P.
    held_out_per: the held-out PER of the exported weights (None when the
      run held nothing out).
    sample_rate: of the waveforms `transcribe` takes.
    stft_config: the front end's grid.
  """

  def __init__(self, export_dir: str):
    path = os.path.join(export_dir, JUDGE_JSON)
    if not fileio.isfile(path):
      raise ValueError(f"{path} not found: is {export_dir!r} an export of "
                       "e2s_tf.train_content_judge?")
    self.meta = workdir_lib.read_json(path)
    if self.meta.get("format") != FORMAT:
      raise ValueError(f"{path}: format {self.meta.get('format')!r}, this "
                       f"version reads format {FORMAT}")
    self.export_dir = export_dir
    self.phones = list(self.meta["phones"])
    self.language = str(self.meta["language"])
    self.held_out_per = self.meta.get("held_out_per")
    self.stft_config = spectral.StftConfig.from_dict(self.meta["stft"])
    self.sample_rate = int(self.meta["sample_rate"])
    self.module = tf.saved_model.load(export_dir)
    signature = self.module.signatures[SIGNATURE]

    def function(waveform, lengths):
      out = signature(waveform=tf.constant(waveform),
                      lengths=tf.constant(lengths))
      return out[LOG_PROBS].numpy(), out[FRAMES].numpy()

    self._function = function

  def log_probs(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per waveform its `[frames, K + 1]` CTC log-probabilities (one call
    per waveform)."""
    waves = decoding.check_waveforms(waveforms)
    out = []
    for w in waves:
      if w.shape[0] < decoding.min_samples(self.stft_config):
        out.append(np.zeros([0, len(self.phones) + 1], np.float32))
        continue
      values, frames = self._function(w[np.newaxis],
                                      np.array([w.shape[0]], np.int32))
      out.append(values[0, :int(frames[0])])
    return out

  def transcribe(self, waveforms: Sequence[np.ndarray],
                 batch_size: int = decoding.BATCH_SIZE) -> list[list[str]]:
    """Greedy CTC phones of each `[samples]` float waveform (at
    `sample_rate`), batched and padded; [] for audio shorter than one STFT
    frame (`meta["min_samples"]` samples)."""
    return decoding.transcribe(self._function, waveforms, self.phones,
                               self.stft_config, batch_size)

  def phonemes(self, text: str) -> list[str]:
    """espeak-ng's phones of `text` in the judge's language: the reference
    a transcription is scored against."""
    return g2p.phonemes(text, self.language)

  def phone_error_rate(self, text: str,
                       waveform: np.ndarray) -> Optional[float]:
    """PER of one waveform's transcription against `phonemes(text)` (None
    for a text without phones)."""
    return content_metrics.error_rate(self.phonemes(text),
                              self.transcribe([waveform])[0])


def load_judge(export_dir: str) -> ContentJudge:
  """Loads an export of `export` (e2s_tf.train_content_judge).

  Raises:
    ValueError: the folder has no content_judge.json (naming the file).
  """
  return ContentJudge(export_dir)
