"""One item -> an example or a rejection whose reason is a typed value."""

import numpy as np
import pytest
import soundfile as sf

from e2s_tf import records
from e2s_tf import spectral
from e2s_tf.embedders import base as embedder_base
from e2s_tf.embedders import logmel
from e2s_tf.preprocessing import items
from e2s_tf.preprocessing import stats

CONFIG = spectral.StftConfig()


class _Failing(embedder_base.Embedder):
  """Raises an EmbedderError with the given reason and words."""

  name = "failing"

  def __init__(self, reason, detail):
    super().__init__(CONFIG)
    self._reason, self._detail = reason, detail

  @property
  def dim(self):
    return 4

  @property
  def grid(self):
    return embedder_base.Grid.from_stft(CONFIG)

  def _embed(self, audio, item):
    raise self.error(item, self._detail, reason=self._reason)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
  path = tmp_path_factory.mktemp("audio") / "a.wav"
  rng = np.random.default_rng(0)
  sf.write(path, (rng.standard_normal(8000) * 3000).astype(np.int16), 16000)
  return str(path)


def test_reasons_are_the_words_of_the_report():
  assert [str(r) for r in items.Reason] == [
      "missing_audio", "unreadable_audio", "empty_audio", "too_short",
      "non_finite", "embedding_error", "wrong_dimension", "length_mismatch"]
  assert set(embedder_base.REASONS) <= {r.value for r in items.Reason}


@pytest.mark.parametrize("reason, detail", [
    # The reason the embedder gives is kept whatever its words say.
    (embedder_base.WRONG_DIMENSION, "the model returned 3 channels"),
    (embedder_base.EMBEDDING_ERROR, "dim option unsupported; NaN in finite"),
    (embedder_base.NON_FINITE, "bad values"),
])
def test_the_embedders_reason_is_carried_not_read_from_its_words(
    wav, reason, detail):
  r = items.process_item({"id": "x", "audio": wav, "_split": "train"},
                         _Failing(reason, detail), CONFIG)
  assert not r.ok and r.reason is items.Reason(reason)
  assert detail in r.detail and r.split == "train"


def test_audio_reasons_come_from_the_file(wav, tmp_path):
  embedder = logmel.LogMelEmbedder(CONFIG)
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(b"RIFF....not audio at all" * 10)
  empty = tmp_path / "empty.wav"
  sf.write(empty, np.zeros(0, np.int16), 16000)
  short = tmp_path / "short.wav"
  sf.write(short, np.ones(300, np.int16), 16000)
  cases = {
      "missing_audio": {"audio": str(tmp_path / "gone.wav")},
      "unreadable_audio": {"audio": str(garbage)},
      "empty_audio": {"audio": str(empty)},
      "too_short": {"audio": str(short)},
  }
  for expected, item in cases.items():
    r = items.process_item(dict(item, id=expected), embedder, CONFIG)
    assert r.reason is items.Reason(expected), (expected, r.detail)
    assert r.detail
  # A region outside the audio has no samples.
  outside = items.process_item({"id": "r", "audio": wav, "start": 0.6,
                                "end": 0.9}, embedder, CONFIG)
  assert outside.reason is items.Reason.EMPTY_AUDIO


def test_an_accepted_item_and_its_sums(wav):
  embedder = logmel.LogMelEmbedder(CONFIG)
  r = items.process_item({"id": "a", "audio": wav, "speaker": "s",
                          "_split": "valid"}, embedder, CONFIG,
                         speaker_index=2)
  assert r.ok and r.split == "valid"
  ex = records.parse_example(r.example, CONFIG, with_audio=True)
  assert int(ex["length"]) == r.num_frames == CONFIG.num_frames(8000)
  assert int(ex["speaker_index"]) == 2
  np.testing.assert_allclose(r.log_stft_sum,
                             ex["log_stft"].numpy().astype(np.float64).sum(0),
                             rtol=1e-6)


def test_a_crashing_embedder_is_a_rejection_not_a_crash(wav, monkeypatch):
  processor = items.ItemProcessor("logmel", {}, CONFIG.to_dict(), 0)
  monkeypatch.setattr(processor.embedder, "embed",
                      lambda *_: (_ for _ in ()).throw(KeyError("boom")))
  r = processor(({"id": "a", "audio": wav}, -1))
  assert r.reason is items.Reason.EMBEDDING_ERROR
  assert r.detail == "KeyError: 'boom'"
  row = stats.Summary().add(r).rejected[0]
  assert row == {"id": "a", "split": "", "reason": "embedding_error",
                 "detail": "KeyError: 'boom'"}
  assert type(row["reason"]) is str


def test_the_schema_readme_lists_the_reasons_and_fields_as_written():
  import os  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  from e2s_tf.preprocessing import reports  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "tfrecords", "README.md")) as f:
    text = f.read()
  section = text.split("## rejected.jsonl")[1].split("\n## ")[0]
  cells = re.findall(r"^\| `(\w+)` +\|", section, re.M)
  assert cells == list(reports.REJECTED_FIELDS) + [str(r) for r in
                                                   items.Reason]
