"""Shared pytest set-up: quiet TensorFlow, repo root importable."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus_manifest(tmp_path_factory):
  """A corpus of 2 speakers x 2 utterances (made once): its manifest path.
  Tests only read it."""
  from e2s_tf import corpus  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("corpus")
  return corpus.make_corpus(str(out), speakers=2, utterances=2, seed=0,
                            progress=False)


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory):
  """A tiny real espeak-ng corpus: 3 speakers x 4 utterances (made once)."""
  from e2s_tf import corpus  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("speech_corpus")
  return corpus.make_corpus(str(out), speakers=3, utterances=4, seed=0,
                            progress=False)


@pytest.fixture(scope="session")
def speech_data(speech_corpus, tmp_path_factory):
  """The corpus above through `logmel` preprocessing, split by utterance."""
  from e2s_tf import preprocess_lib  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("speech_data")
  preprocess_lib.run_preprocess(speech_corpus, str(out), "logmel",
                                split_by="utterance", valid_fraction=0.2,
                                test_fraction=0.2, seed=0, num_workers=1,
                                progress=False)
  return str(out)


@pytest.fixture(scope="session")
def tiny_export(speech_data, tmp_path_factory):
  """A `multiscale` decoder trained a few steps on `speech_data`, exported."""
  from tests import data_testlib  # pylint: disable=g-import-not-at-top
  return data_testlib.train_and_export(
      "multiscale", speech_data, str(tmp_path_factory.mktemp("tiny_export")),
      steps=3, griffin_lim_iterations=8)
