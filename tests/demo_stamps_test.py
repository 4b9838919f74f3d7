"""The demo's stamps: a finished stage is skipped, unless its dataset is of
an older record schema (then preprocess rebuilds it)."""

import json

from e2s_tf import demo
from e2s_tf import fileio
from e2s_tf import records


def test_a_stamped_preprocess_of_an_older_schema_runs_again(tmp_path):
  d = str(tmp_path)
  info = tmp_path / "tfrecords" / records.DATASET_INFO
  info.parent.mkdir()
  command = "python -m e2s_tf.preprocess --out_dir=x"
  fileio.write_json(demo._stamp_path(d, "preprocess"),  # pylint: disable=protected-access
                    {"command": command})
  info.write_text(json.dumps({"version": records.SCHEMA_VERSION}))
  assert demo._done(d, "preprocess", command, [str(info)])  # pylint: disable=protected-access
  assert not demo._done(d, "preprocess", command + " --seed=1", [str(info)])  # pylint: disable=protected-access
  info.write_text(json.dumps({"version": records.SCHEMA_VERSION - 1}))
  assert not demo._done(d, "preprocess", command, [str(info)])  # pylint: disable=protected-access
  info.write_text("{not json")
  assert not demo._done(d, "preprocess", command, [str(info)])  # pylint: disable=protected-access
