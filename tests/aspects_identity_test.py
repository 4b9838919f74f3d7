"""Identity: the equal error rate and the verification trials."""

import numpy as np
import pytest

from e2s_tf.aspects import identity


def test_eer_of_separable_overlapping_and_inverted_scores():
  assert identity.equal_error_rate([0.9, 0.8], [0.1, 0.2, 0.3]) == 0.0
  # One target below one non-target of three each: at the threshold 0.7 one
  # target in three is missed and one non-target in three accepted.
  assert identity.equal_error_rate([0.9, 0.8, 0.3],
                                   [0.7, 0.2, 0.1]) == pytest.approx(1 / 3)
  assert identity.equal_error_rate([0.1, 0.2], [0.8, 0.9]) == 1.0
  # Scores that say nothing: half and half.
  rng = np.random.default_rng(0)
  same = rng.standard_normal(4000)
  assert identity.equal_error_rate(same[:2000], same[2000:]) == pytest.approx(
      0.5, abs=0.03)
  # Two unit-variance Gaussians 2 apart: EER = Phi(-1) = 0.1587.
  eer = identity.equal_error_rate(rng.standard_normal(20000) + 2.0,
                                  rng.standard_normal(20000))
  assert eer == pytest.approx(0.1587, abs=0.01)


def test_eer_is_none_without_trials_or_with_non_finite_scores():
  assert identity.equal_error_rate([], [0.1]) is None
  assert identity.equal_error_rate([0.5], []) is None
  assert identity.equal_error_rate([np.nan], [0.1]) is None


def test_trials_pair_every_reconstruction_with_every_original():
  originals = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
  labels = ["a", "b", "a"]
  target, nontarget = identity.trial_scores(originals, originals, labels)
  # Same speaker: (0,0) (0,2) (1,1) (2,0) (2,2); the rest different.
  assert target.size == 5 and nontarget.size == 4
  np.testing.assert_allclose(sorted(target)[-3:], [1.0, 1.0, 1.0])
  # Originals against themselves leave out the pairs i = i.
  target, nontarget = identity.trial_scores(originals, originals, labels,
                                            same_item=False)
  assert target.size == 2 and nontarget.size == 4
  np.testing.assert_allclose(target, 1.0 / np.sqrt(1.01))


def test_items_without_a_speaker_are_only_their_own_trial():
  emb = np.eye(3)
  target, nontarget = identity.trial_scores(emb, emb, ["a", "", ""])
  # Only the three pairs i = j: two unlabelled items are not "the same".
  assert target.size == 3 and nontarget.size == 0
  target, nontarget = identity.trial_scores(emb, emb, ["a", "", ""],
                                            same_item=False)
  assert target.size == 0 and nontarget.size == 0
  target, nontarget = identity.trial_scores(np.eye(4), np.eye(4),
                                            ["a", "b", "a", ""])
  assert target.size == 4 + 2 and nontarget.size == 4
