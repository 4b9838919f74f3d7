"""The profile: means with n/a counts, retention between floor and oracle."""

import pytest

from e2s_tf.aspects import profile


def test_means_leave_out_and_count_what_does_not_apply():
  rows = [{"f0_rmse_cents": 100.0, "dnsmos_ovr": 3.0},
          {"f0_rmse_cents": None, "dnsmos_ovr": float("nan")},
          {"f0_rmse_cents": 50.0}]
  s = profile.summarize(rows, ["f0_rmse_cents", "dnsmos_ovr", "speaker_eer"])
  assert s["f0_rmse_cents"] == 75.0 and s["dnsmos_ovr"] == 3.0
  assert s["speaker_eer"] is None
  assert s["num_na"] == {"f0_rmse_cents": 1, "dnsmos_ovr": 2,
                         "speaker_eer": 3}


def test_retention_places_the_model_between_floor_and_oracle():
  summary = {
      "model": {"phone_error_rate": 0.3, "f0_frame_error": 0.15,
                "speaker_cosine": 0.9, "dnsmos_ovr": 2.0},
      "oracle_griffin_lim": {"phone_error_rate": 0.1, "f0_frame_error": 0.05,
                             "speaker_cosine": 0.95, "dnsmos_ovr": 2.0},
      "floor": {"phone_error_rate": 0.9, "f0_frame_error": 0.1,
                "speaker_cosine": 0.5, "dnsmos_ovr": 2.0},
  }
  r = profile.retention(summary)
  assert list(r) == ["content", "prosody", "identity", "naturalness"]
  # Lower is better: 0.9 -> 0.1 is the way, 0.3 is three quarters along it.
  assert r["content"]["retention"] == pytest.approx(0.75)
  assert r["content"]["metric"] == "phone_error_rate"
  # Worse than the floor reads below 0.
  assert r["prosody"]["retention"] == pytest.approx(-1.0)
  assert r["identity"]["retention"] == pytest.approx(0.4 / 0.45)
  # Floor = oracle: nothing to place the model on.
  assert r["naturalness"]["retention"] is None
  table = profile.retention_table(r)
  assert "| content | phone_error_rate | 0.900 | 0.300 | 0.100 | 0.750 |" in (
      table)
  assert "| naturalness | dnsmos_ovr | 2.000 | 2.000 | 2.000 | n/a |" in table
  # Without a floor there is no retention.
  del summary["floor"]
  assert profile.retention(summary) == {}


def test_retention_falls_back_to_the_transcript_of_the_original():
  summary = {s: {"phone_error_rate": None,
                 "phone_error_rate_vs_original": v}
             for s, v in [("model", 0.5), ("oracle_griffin_lim", 0.0),
                          ("floor", 1.0)]}
  r = profile.retention(summary)
  assert r["content"]["metric"] == "phone_error_rate_vs_original"
  assert r["content"]["retention"] == pytest.approx(0.5)


def test_tables_show_na_counts_and_what_was_not_computed():
  summary = {"reference": {"num_items": 3, "dnsmos_ovr": 3.5,
                           "num_na": {"dnsmos_ovr": 0}},
             "model": {"num_items": 3, "dnsmos_ovr": 2.25,
                       "f0_rmse_cents": None,
                       "num_na": {"dnsmos_ovr": 1, "f0_rmse_cents": 3}}}
  text = profile.markdown_tables(summary, aspects=["prosody", "naturalness"])
  assert "**prosody**" in text and "**naturalness**" in text
  assert "| model | 3 | 2.250 (1 n/a) |" in text
  assert "| reference | 3 | 3.500 |" in text
  assert "| model | 3 | n/a |" in text   # f0: no item had a value
  assert "| reference | 3 | — |" in text  # f0: not computed for originals
  assert profile.finite(float("inf")) is None and profile.finite(2) == 2.0
  assert profile.finite(float("nan")) is None and profile.finite(None) is None
