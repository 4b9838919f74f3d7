"""How a --config value finds a packaged config, from any folder."""

import os

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
