"""Speaker similarity and closed-set identification."""

import numpy as np
import pytest

from e2s_tf import spectral
from e2s_tf.speaker import identification


def test_enroll_identify_and_cosine():
  embeddings = np.array([[1.0, 0.1], [2.0, -0.2], [0.0, 1.0], [0.1, 3.0]])
  enrolment = identification.enroll(embeddings, ["b", "b", "a", "a"])
  assert enrolment.labels == ["a", "b"]
  np.testing.assert_allclose(np.linalg.norm(enrolment.centroids, axis=1), 1.0)
  np.testing.assert_allclose(enrolment.centroids[1], [1.0, 0.0], atol=1e-12)
  assert identification.identify([[3.0, 1.0], [-0.2, 1.0]], enrolment) == [
      "b", "a"]
  assert identification.identification_accuracy(
      [[3.0, 1.0], [-0.2, 1.0]], ["a", "a"], enrolment) == 0.5
  assert np.isnan(identification.identification_accuracy(
      np.zeros([0, 2]), [], enrolment))
  got = identification.cosine([[1.0, 0.0], [1.0, 1.0]],
                              [[2.0, 0.0], [0.0, 5.0]])
  np.testing.assert_allclose(got, [1.0, np.sqrt(0.5)])
  assert identification.cosine([3.0, 4.0], [-3.0, -4.0]) == pytest.approx(-1.0)
  with pytest.raises(ValueError, match="N labels"):
    identification.enroll(embeddings, ["a"])


def test_embed_utterances_checks_the_waveforms():
  stft = spectral.StftConfig()
  calls = []

  def function(w):
    calls.append(w.shape.as_list())
    return w[:, :3] * 2.0

  got = identification.embed_utterances(
      function, [np.arange(480.0), np.ones(1000)], stft)
  assert calls == [[1, 480], [1, 1000]]
  np.testing.assert_array_equal(got, [[0.0, 2.0, 4.0], [2.0, 2.0, 2.0]])
  assert got.dtype == np.float32
  with pytest.raises(ValueError, match="shorter than one frame"):
    identification.embed_utterances(lambda w: w, [np.zeros(10)], stft)
  with pytest.raises(ValueError, match=r"expected \[samples\]"):
    identification.embed_utterances(lambda w: w, [np.zeros([2, 480])], stft)
  with pytest.raises(ValueError, match="no waveforms"):
    identification.embed_utterances(lambda w: w, [], stft)
