"""The plan of a run: settings, fingerprint, an npy embedder's dimension."""

import numpy as np
import pytest

from e2s_tf import embedders
from e2s_tf import spectral
from e2s_tf.preprocessing import plan
from e2s_tf.preprocessing.errors import PreprocessError

CONFIG = spectral.StftConfig()


def test_settings_are_checked_by_flag():
  plan.Settings().check()
  with pytest.raises(PreprocessError) as e:
    plan.Settings(split_by="speakers", valid_fraction=1.0, num_workers=0,
                  max_item_seconds=0.5).check()
  message = str(e.value)
  for flag in ("--split_by", "--valid_fraction", "--num_workers",
               "--max_item_seconds"):
    assert flag in message, message
  with pytest.raises(PreprocessError) as e:
    plan.Settings(embedding_dtype="bfloat16").check()
  message = str(e.value)
  for flag in ("--embedding_dtype must be one of float16, float32",):
    assert flag in message, message
  with pytest.raises(PreprocessError, match="--embedder_options: must be a "
                     "JSON object, got list"):
    plan.Settings(embedder_options=[1]).check()
  with pytest.raises(TypeError):
    plan.Settings(workers=2)  # pylint: disable=unexpected-keyword-arg


def test_the_fingerprint_covers_the_dataset_settings_only():
  # These keys and values are what datasets of this schema were
  # fingerprinted with: a re-run with the same settings recognises them. The
  # schema version is among them, so that a dataset of an older schema
  # (version 3: float32 audio and a stored log-STFT) is rebuilt, not taken as
  # done; so is the embedding's storage type.
  assert plan.Settings(num_workers=3, overwrite=True,
                       progress=False).fingerprinted() == {
      "schema_version": 4, "embedder": "logmel", "options": {}, "stft": CONFIG.to_dict(),
      "split_by": "speaker", "valid_fraction": 0.1, "test_fraction": 0.1,
      "seed": 0, "frame_tolerance": 0, "items_per_shard": 64,
      "embedding_dtype": "float16", "max_item_seconds": 30.0}


def _npy_items(tmp_path, shapes):
  out = []
  for i, shape in enumerate(shapes):
    path = tmp_path / f"e{i}.npy"
    np.save(path, np.zeros(shape, np.float32))
    # The audio is not there: the dimension comes from the .npy header.
    out.append({"id": f"i{i}", "audio": str(tmp_path / "gone.wav"),
                "embedding": str(path)})
  return out


def test_an_npy_dimension_is_the_majority_of_the_headers(tmp_path):
  items = _npy_items(tmp_path, [(10, 64), (12, 64), (9, 32), (11, 64)])
  (tmp_path / "e3.npy").write_bytes(b"not an npy file")
  items.append({"id": "none", "audio": "x.wav"})
  embedder = embedders.get_embedder("npy", CONFIG)
  assert plan._majority_dim(items, embedder, CONFIG) == 64
  transposed = _npy_items(tmp_path, [(64, 10), (64, 12), (32, 9)])
  embedder = embedders.get_embedder("npy", CONFIG, transpose=True)
  assert plan._majority_dim(transposed, embedder, CONFIG) == 64


def test_no_dimension_to_learn_is_one_clear_error(tmp_path):
  items = _npy_items(tmp_path, [(3, 4, 5)])
  items.append({"id": "none", "audio": "x.wav"})
  np.save(tmp_path / "c.npy", np.zeros((3, 2), np.complex64))
  items.append({"id": "c", "audio": "x.wav", "embedding":
                str(tmp_path / "c.npy")})
  with pytest.raises(PreprocessError,
                     match="'npy': could not embed any of the first items to "
                     "learn the embedding dimension; give it with "
                     "--embedder_options"):
    plan._majority_dim(items, embedders.get_embedder("npy", CONFIG), CONFIG)
