"""Library of the framing experiment (see e2s_tf/experiments/framing.py)."""


import os


from e2s_tf import spectral
from e2s_tf.experiments import common

COLUMNS = (("variant", "STFT framing", ""), ("window", "window", "d"),
           ("offset_ms", "centre offset (ms)", "+.1f"),
           ("lsd_db", "valid lsd_db ↓", ".2f"),
           ("pesq_wb", "valid pesq_wb ↑", ".2f"), ("stoi", "valid stoi ↑", ".3f"),
           ("train_frames_per_sec", "train frames/s", ".0f"),
           ("wall_seconds", "wall s", ".0f"))


def _variants(stft: spectral.StftConfig):
  """name -> (STFT config, transform of an aligned example, centre offset)."""
  hop = stft.frame_step
  wide = spectral.StftConfig.original()

  def aligned(ex):
    return ex

  def window_512(ex):
    log_stft = spectral.log_stft(ex["audio"], wide).numpy()
    t = log_stft.shape[0]
    return dict(ex, embedding=ex["embedding"][:t], log_stft=log_stft,
                audio=ex["audio"][:wide.num_samples(t)])

  def shift(k):
    def fn(ex):
      t = ex["embedding"].shape[0] - abs(k)
      if t <= 0:
        return None
      if k > 0:  # embedding frame i <-> STFT frame i + k
        return dict(ex, embedding=ex["embedding"][:t],
                    log_stft=ex["log_stft"][k:],
                    audio=ex["audio"][k * hop:k * hop + stft.num_samples(t)])
      return dict(ex, embedding=ex["embedding"][-k:],
                  log_stft=ex["log_stft"][:t],
                  audio=ex["audio"][:stft.num_samples(t)])
    return fn

  ms = 1000.0 / stft.sample_rate
  return {
      "aligned": (stft, aligned, 0.0),
      "window_512": (wide, window_512,
                     (wide.frame_length - stft.frame_length) / 2 * ms),
      "shift_+1": (stft, shift(1), hop * ms),
      "shift_-1": (stft, shift(-1), -hop * ms),
  }


def run(work_dir, data_dir, out, steps, max_items, quick, command,
        variants=None):
  data_dir = data_dir or common.demo_data(work_dir, quick)
  stft = spectral.StftConfig()
  rows = []
  for name, (config_stft, transform, offset) in _variants(stft).items():
    if variants and name not in variants:
      continue
    variant_dir = common.derive_dataset(
        data_dir, os.path.join(work_dir, "data", name), config_stft, transform)
    config = common.experiment_config("multiscale", steps, quick)
    print(f"== {name}", flush=True)
    result = common.train_and_evaluate(
        config, variant_dir, os.path.join(work_dir, "runs", name),
        max_items=max_items, log=lambda *_: None)
    rows.append({"variant": name, "window": config_stft.frame_length,
                 "offset_ms": offset, **result})
    common.print_row(COLUMNS, rows[-1])
  intro = (
      "Embeddings: `logmel` on the 30 ms / 10 ms grid (480-sample window, hop "
      "160, no centring) of the default espeak-ng corpus, held-out speakers. "
      "The target log-STFT is framed four ways (hop 160, 512-point FFT "
      "throughout); the same `multiscale` decoder trains "
      f"{steps} steps on each and is evaluated (exported model, Griffin-Lim 32 "
      f"iterations) on the first {max_items} validation items against the "
      "audio its own STFT frames cover. Centre offset: how far the STFT frame's "
      "centre sits from the embedding frame's.")
  notes = ("`window_512` has one frame fewer whenever (N - 480) mod 160 < 32; "
           "its embedding is trimmed to match (the project's "
           "`--frame_tolerance` does the same in preprocessing).")
  return common.write_report(
      out, "Framing experiment: aligning the STFT with 30 ms / 10 ms "
      "embedding frames", command, intro, notes, COLUMNS, rows, steps, quick)
