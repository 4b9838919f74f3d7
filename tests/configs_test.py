"""How a --config value finds a packaged config, from any folder."""

import os

import pytest

from e2s_tf import configs


def test_names_and_configs_paths_find_the_packaged_file(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  packaged = os.path.join(configs.PACKAGE_DIR, "multiscale.py")
  assert configs.resolve("multiscale") == packaged
  assert configs.resolve("configs/multiscale.py") == packaged
  assert configs.resolve("testing:cnn") == (
      os.path.join(configs.PACKAGE_DIR, "testing.py") + ":cnn")
  assert configs.resolve("configs/testing.py:cnn") == (
      os.path.join(configs.PACKAGE_DIR, "testing.py") + ":cnn")
  assert {"base", "cnn", "gan", "multiscale", "speaker_encoder",
          "testing"} <= set(configs.available())


def test_a_file_of_the_current_folder_comes_first(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "multiscale.py").write_text("def get_config(): 1\n")
  (tmp_path / "multiscale").write_text("")
  assert configs.resolve("configs/multiscale.py") == "configs/multiscale.py"
  assert configs.resolve("multiscale") == "multiscale"


def test_unknown_values_stay_as_given_for_the_loader_to_report(tmp_path,
                                                               monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert configs.resolve("nothere") == "nothere"
  assert configs.resolve("configs/nothere.py") == "configs/nothere.py"
  assert configs.resolve("elsewhere/multiscale.py") == "elsewhere/multiscale.py"
  assert configs.resolve_argv(["prog", "--config=cnn", "--x=1"]) == [
      "prog", "--config=" + os.path.join(configs.PACKAGE_DIR, "cnn.py"),
      "--x=1"]
  assert configs.resolve_argv(["prog", "--config", "gan"])[2] == (
      os.path.join(configs.PACKAGE_DIR, "gan.py"))


def _info(spec):
  return {"embedder": {"spec": spec}}


def test_the_kind_of_embedder_picks_the_default_decoder():
  assert configs.embedder_kind(_info("logmel")) == "filterbank"
  assert configs.embedder_kind(_info("mfcc")) == "cepstral"
  for spec in ("npy", "savedmodel:/x/encoder", "onnx:/x/hubert.onnx"):
    assert configs.embedder_kind(_info(spec)) == "learned"
  assert set(configs.DEFAULT_DECODERS) == {"filterbank", "cepstral",
                                           "learned"}
  assert set(configs.DEFAULT_DECODERS.values()) <= set(configs.available())


def test_auto_reads_the_dataset_info_of_data_dir(speech_data, tmp_path):
  chosen = configs.DEFAULT_DECODERS["filterbank"]  # speech_data is logmel
  packaged = os.path.join(configs.PACKAGE_DIR, f"{chosen}.py")
  for argv in (["prog", "--config=auto", f"--data_dir={speech_data}"],
               ["prog", f"--data_dir={speech_data}", "--config", "auto"],
               ["prog", "--config=auto", "--data_dir", speech_data]):
    resolved = configs.resolve_argv(argv)
    assert packaged in resolved or f"--config={packaged}" in resolved, resolved
  assert configs.resolve_argv(
      ["prog", "--config=auto:x", f"--data_dir={speech_data}"])[1] == (
          f"--config={packaged}:x")
  with pytest.raises(ValueError, match="give --data_dir"):
    configs.resolve_argv(["prog", "--config=auto"])
  with pytest.raises(FileNotFoundError, match="dataset_info.json"):
    configs.resolve_argv(["prog", "--config=auto",
                          f"--data_dir={tmp_path}"])
