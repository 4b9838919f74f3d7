"""Speaker-encoder data: the per-speaker split and the crops."""

import numpy as np
import pytest

from e2s_tf import manifest as manifest_lib
from e2s_tf.configs import speaker_encoder as encoder_config
from e2s_tf.speaker import sampling


def test_split_is_per_speaker_and_deterministic():
  utterances = [sampling.Utterance(f"{s}_{i}", s, np.zeros(1))
                for s in ("x", "y") for i in range(10)] + [
                    sampling.Utterance("z_0", "z", np.zeros(1))]
  train, heldout = sampling.split_utterances(utterances, 0.3, seed=1)
  again = sampling.split_utterances(utterances[::-1], 0.3, seed=1)
  assert [u.id for u in heldout] == [u.id for u in again[1]]
  count = {s: sum(u.speaker == s for u in heldout) for s in "xyz"}
  assert count == {"x": 3, "y": 3, "z": 0}  # z keeps its only utterance
  assert len(train) == 15
  other = sampling.split_utterances(utterances, 0.3, seed=2)[1]
  assert [u.id for u in other] != [u.id for u in heldout]
  train, heldout = sampling.split_utterances(
      utterances, 0.0, seed=0, heldout_ids=["x_1", "y_2"])
  assert [u.id for u in heldout] == ["x_1", "y_2"]
  with pytest.raises(ValueError, match=r"speakers \['z'\] have no training"):
    sampling.split_utterances(utterances, 0.0, 0, heldout_ids=["z_0"])
  with pytest.raises(ValueError, match="not among the usable items"):
    sampling.split_utterances(utterances, 0.0, 0, heldout_ids=["q"])


def test_crops_are_a_function_of_the_step():
  utterances = [sampling.Utterance("a", "a", np.arange(100.0)),
                sampling.Utterance("b", "b", -np.arange(1, 31.0))]
  data = encoder_config.get_config("testing").data
  data.gain_db, data.noise_probability = 0.0, 0.0
  sampler = sampling.CropSampler(utterances, [0, 1], 40, 16, data, 3)
  waves, labels = sampler.batch(7)
  np.testing.assert_array_equal(sampler.batch(7)[0], waves)
  assert not np.array_equal(sampler.batch(8)[0], waves)
  assert set(labels.tolist()) == {0, 1}
  for wave, label in zip(waves, labels):
    if label == 0:  # a contiguous crop of the ramp
      np.testing.assert_array_equal(np.diff(wave), 1.0)
    else:  # the 30-sample utterance, tiled to 40
      assert set(wave.tolist()) <= set(range(-30, 0))


def test_load_utterances_skips_short_items_and_needs_speakers(speech_corpus,
                                                              tmp_path):
  items = manifest_lib.read_manifest(speech_corpus)
  lines = []
  got = sampling.load_utterances(speech_corpus, 16000, 480, log=lines.append)
  assert [u.id for u in got] == [it["id"] for it in items]
  assert all(u.audio.dtype == np.float32 and u.audio.ndim == 1 for u in got)
  # With its own length as the threshold, the longest item alone is kept.
  longest = max(got, key=lambda u: u.audio.shape[0])
  kept = sampling.load_utterances(speech_corpus, 16000,
                                  longest.audio.shape[0], log=lines.append)
  assert [u.id for u in kept] == [longest.id]
  assert any(f"skipped {len(items) - 1} item(s)" in line for line in lines)
  with pytest.raises(ValueError, match="no usable items"):
    sampling.load_utterances(speech_corpus, 16000,
                             longest.audio.shape[0] + 1, log=lines.append)
  del items[2]["speaker"]
  manifest = str(tmp_path / "manifest.jsonl")
  manifest_lib.write_manifest(items, manifest)
  with pytest.raises(manifest_lib.ManifestError, match=items[2]["id"]):
    sampling.load_utterances(manifest, 16000, 480, log=lines.append)
