"""Tests of e2s_tf.masking: the frame-mask helpers."""

import numpy as np
import tensorflow as tf

from e2s_tf import masking

MASK = np.array([[1, 1, 0], [1, 0, 0]], np.float32)


def test_expand_mask_adds_trailing_dims_in_the_dtype():
  expanded = masking.expand_mask(MASK, 4, tf.float16)
  assert expanded.dtype == tf.float16
  assert expanded.shape == (2, 3, 1, 1)
  np.testing.assert_array_equal(expanded.numpy()[..., 0, 0], MASK)


def test_zero_padding_hides_inf_and_nan_from_value_and_gradient():
  values = tf.constant([[[1.0], [2.0], [np.inf]], [[3.0], [np.nan], [4.0]]])
  with tf.GradientTape() as tape:
    tape.watch(values)
    clean = masking.zero_padding(values, MASK)
    total = tf.reduce_sum(clean * clean)
  np.testing.assert_array_equal(clean.numpy()[..., 0], [[1, 2, 0], [3, 0, 0]])
  np.testing.assert_array_equal(tape.gradient(total, values).numpy()[..., 0],
                                [[2, 4, 0], [6, 0, 0]])


def test_apply_mask_keeps_the_values_dtype():
  values = tf.ones([2, 3, 2], tf.bfloat16)
  masked = masking.apply_mask(values, MASK)
  assert masked.dtype == tf.bfloat16
  np.testing.assert_array_equal(masked.numpy().astype(np.float32)[..., 1],
                                MASK)
