"""Tests of e2s_tf.batching: bucket bounds from the length quantiles."""

import json
import os

import numpy as np
import pytest

from e2s_tf import batching
from e2s_tf import data
from e2s_tf import records
from tests import data_testlib

LENGTHS = {"train": [7, 12, 3, 20, 9, 15, 5, 11], "valid": [6, 14, 4]}


def test_bucket_bounds_from_data_when_info_has_no_quantiles(tmp_path):
  tiny = data_testlib.write_tiny_dataset(tmp_path, LENGTHS, dim=2, bins=3)
  with_table = batching._train_bounds(tiny.data_dir, tiny.info, None, 20)
  info = dict(tiny.info)
  del info["length_quantiles"]
  with open(os.path.join(tiny.data_dir, records.DATASET_INFO), "w") as f:
    json.dump(info, f)
  assert batching._train_bounds(tiny.data_dir, info, None, 20) == with_table
  np.testing.assert_array_equal(
      np.sort(records.split_lengths(tiny.data_dir, "train")),
      sorted(LENGTHS["train"]))
  # The pipeline runs without the table.
  assert list(data.make_dataset(tiny.data_dir, "train", mode="bucket",
                               frames_per_batch=20).as_numpy_iterator())


def test_bucket_upper_bounds_interpolate_quantiles():
  table = [10, 20, 30, 40, 50]  # levels 0, .25, .5, .75, 1
  assert batching.bucket_upper_bounds(table) == [20, 30, 40, 50]
  assert batching.bucket_upper_bounds(table, max_buckets=8) == [
      15, 20, 25, 30, 35, 40, 45, 50]
  assert batching.bucket_upper_bounds([5, 5, 5, 9]) == [5, 9]
  # A table at uneven levels (dataset_info may hold {level: frames}).
  assert batching.bucket_upper_bounds([10, 30, 50], max_buckets=4,
                                      levels=[0.0, 0.5, 1.0]) == [
                                          20, 30, 40, 50]


@pytest.mark.parametrize("num_items,budget,expected", [
    (1000, 80, [20, 30, 40, 50]),  # every quarter fills its batch: no merge
    (8, 80, [30, 40, 50]),  # 2 items of <= 20 frames < 80 // 20: merged up
    (4, 80, [30, 50]),  # 1 item of 31..40 < 80 // 40: merged with the longest
    (4, 100, [50]),  # the left-over longest items join the bucket before
])
def test_bucket_upper_bounds_merge_until_batches_fill(num_items, budget,
                                                      expected):
  bounds = batching.bucket_upper_bounds([10, 20, 30, 40, 50],
                                        num_items=num_items,
                                        frames_per_batch=budget)
  assert bounds == expected


def test_quantile_table_forms():
  # dataset_info forms: per split (as preprocess writes), bare mapping, list.
  for table in ({"train": {"0.0": 10, "0.5": 30, "1.0": 50}, "valid": {}},
                {"1.0": 50, "0.5": 30, "0": 10}, [10, 30, 50]):
    levels, values = batching._quantile_table({"length_quantiles": table})
    assert levels.tolist() == [0.0, 0.5, 1.0]
    assert values.tolist() == [10, 30, 50]
