"""Library of the padding experiment (see e2s_tf/experiments/padding.py)."""


import os

from e2s_tf import data as data_lib
from e2s_tf.experiments import common

MODES = ("bucket", "crop", "repeat_longest", "crop_shortest", "mean_length")

COLUMNS = (("mode", "mode", ""), ("lsd_db", "valid lsd_db ↓", ".2f"),
           ("pesq_wb", "valid pesq_wb ↑", ".2f"),
           ("filler_share", "filler share", ".1%"),
           ("discarded_share", "discarded share", ".1%"),
           ("train_frames_per_sec", "train frames/s", ".0f"),
           ("wall_seconds", "wall s", ".0f"))


def run(work_dir, data_dir, out, steps, max_items, quick, modes, command):
  data_dir = data_dir or common.demo_data(work_dir, quick)
  rows = []
  for mode in modes:
    config = common.experiment_config("multiscale", steps, quick)
    config.data.mode = mode
    filler = data_lib.filler_share(
        data_dir, "train", mode, frames_per_batch=config.data.frames_per_batch,
        batch_size=config.data.batch_size, crop_frames=config.data.crop_frames,
        deterministic=True)
    print(f"== {mode}: filler {filler['filler_share']:.1%}", flush=True)
    result = common.train_and_evaluate(
        config, data_dir, os.path.join(work_dir, "runs", mode),
        max_items=max_items, log=lambda *_: None)
    rows.append({"mode": mode, **result,
                 "filler_share": filler["filler_share"],
                 "discarded_share": filler["discarded_share"]})
    common.print_row(COLUMNS, rows[-1])
  config = common.experiment_config("multiscale", steps, quick)
  intro = (
      "The same `multiscale` decoder, data (the default espeak-ng corpus, "
      "`logmel`, held-out speakers) and step budget "
      f"({steps} steps, Adam with warm-up and cosine decay) with each batching "
      f"mode. `bucket`: {config.data.frames_per_batch} frames per batch; the "
      f"fixed-size modes: batch {config.data.batch_size}, `crop` windows of "
      f"{config.data.crop_frames} frames. Validation: the exported model "
      f"(Griffin-Lim, 32 iterations) on the first {max_items} validation items "
      "against their audio. Filler: padding or repeated frames over one train "
      "epoch (`e2s_tf.data.filler_share`); discarded: source frames a mode "
      "never delivers.")
  notes = ("Train frames/s: the batches' `length` frames per second, i.e. "
           "valid frames for `bucket`, `crop` and `crop_shortest`, and every "
           "frame slot, repeats included, for `repeat_longest` and "
           "`mean_length`. Wall time includes export and evaluation.")
  return common.write_report(
      out, "Padding experiment: batching sequences of different lengths",
      command, intro, notes, COLUMNS, rows, steps, quick)
