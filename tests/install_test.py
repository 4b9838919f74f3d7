"""`pip install .` into a fresh virtual environment, then the programs run
from a folder outside the repository.

Offline and fast: the fresh venv borrows this interpreter's third-party
packages (TensorFlow and the rest, pip, setuptools) through a folder of links
that leaves out every copy of e2s_tf, and pip installs with `--no-index
--no-deps --no-build-isolation` from a copy of the checkout's files.
"""

import json
import os
import shutil
import site
import subprocess
import sysconfig
import tomllib
import venv


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "e2s_tf"
MAIN_BLOCK = 'if __name__ == "__main__":'
# What a build or a run could leave beside the sources.
BUILD_OUTPUTS = ("build", "dist", "e2s_tf.egg-info", "e2s_tf-0.1.0", "run")
# What the checkout's own copies of e2s_tf leave in site-packages: the
# package, its metadata, and the finder or path file of an editable install.
OWN_ENTRIES = ("e2s_tf", "e2s-tf", "__editable__", "_e2s_tf")
# Two steps on small batches, one validation at the end, one checkpoint.
TRAIN_OVERRIDES = (
    "--config.data.frames_per_batch=1200", "--config.train.num_steps=2",
    "--config.train.eval_every=1000", "--config.train.checkpoint_every=1000")


def _source_files():
  """Repo-relative paths of the checkout's files a clean clone would have
  (tracked, or new and not ignored); the package's and its metadata's alone
  when git cannot tell."""
  try:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    paths = [p for p in listed.decode().split("\0") if p]
  except (OSError, subprocess.SubprocessError):
    paths = ["pyproject.toml", "README.md"]
    for d, dirs, files in os.walk(os.path.join(ROOT, PACKAGE)):
      dirs[:] = [x for x in dirs if x != "__pycache__"]
      paths += [os.path.relpath(os.path.join(d, f), ROOT) for f in files]
  return [p for p in paths if os.path.isfile(os.path.join(ROOT, p))
          and "__pycache__" not in p.split("/") and not p.endswith(".pyc")]


def _copy_checkout(dst):
  """The checkout's files under `dst`: the build writes build/ and
  *.egg-info beside its sources, and never in the checkout."""
  for rel in _source_files():
    target = os.path.join(dst, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(ROOT, rel), target)


def _own(name):
  lower = name.lower()
  return any(lower.startswith(prefix) for prefix in OWN_ENTRIES)


def _borrowed_site_packages(dst):
  """A folder of links to this interpreter's site-packages entries, all but
  e2s_tf's: a fresh venv imports TensorFlow from there without finding the
  checkout or an (editable) install of it."""
  os.makedirs(dst)
  dirs = site.getsitepackages() + [sysconfig.get_paths()["purelib"]]
  if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
  seen = set()
  for d in dirs:
    real = os.path.realpath(d)
    if real in seen or not os.path.isdir(real):
      continue
    seen.add(real)
    for name in sorted(os.listdir(real)):
      # .pth files are not read from a folder on sys.path: left out, so no
      # path or finder of an editable install comes along either.
      if _own(name) or name.endswith(".pth") or name == "__pycache__":
        continue
      link = os.path.join(dst, name)
      if not os.path.lexists(link):
        os.symlink(os.path.join(real, name), link)
  return dst


def _fresh_venv(root):
  """A venv under `root` whose site-packages holds only a path file to the
  borrowed packages; returns (python, bin folder, site-packages)."""
  env_dir = os.path.join(root, "venv")
  venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
  python = os.path.join(env_dir, "bin", "python")
  purelib = subprocess.run(
      [python, "-c", "import sysconfig; print(sysconfig.get_paths()"
       "['purelib'])"], capture_output=True, text=True, check=True,
      timeout=60).stdout.strip()
  borrowed = _borrowed_site_packages(os.path.join(root, "borrowed"))
  with open(os.path.join(purelib, "borrowed_site_packages.pth"), "w") as f:
    f.write(borrowed + "\n")
  return python, os.path.dirname(python), purelib


def _env(bin_dir):
  """Environment of the fresh venv's programs: nothing points at the
  checkout."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                      "PYTHONUSERBASE", "VIRTUAL_ENV")}
  env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""),
             VIRTUAL_ENV=os.path.dirname(bin_dir), PYTHONNOUSERSITE="1",
             TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
  return env


def _run(cmd, cwd, env, timeout=600):
  return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _console_scripts():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["scripts"]


def _package_files(top):
  """Paths under `top` of the package's files (no __pycache__)."""
  out = set()
  for d, dirs, files in os.walk(top):
    dirs[:] = [x for x in dirs if x != "__pycache__"]
    out |= {os.path.relpath(os.path.join(d, f), top) for f in files
            if not f.endswith(".pyc")}
  return out


_INSPECT = r"""
import importlib.metadata, importlib.util, json, os, sys
import e2s_tf, e2s_tf.configs
dist = importlib.metadata.distribution("e2s-tf")
scripts = {}
for ep in dist.entry_points.select(group="console_scripts"):
  module, _, attr = ep.value.partition(":")
  spec = importlib.util.find_spec(module)
  source = open(spec.origin).read() if spec and spec.origin else ""
  scripts[ep.name] = {"value": ep.value, "origin": spec and spec.origin,
                      "defines": f"def {attr}():" in source}
print(json.dumps({
    "file": e2s_tf.__file__, "version": e2s_tf.__version__,
    "configs_dir": e2s_tf.configs.PACKAGE_DIR,
    "configs": e2s_tf.configs.available(),
    "multiscale": e2s_tf.configs.resolve("multiscale"),
    "record": [f.as_posix() for f in dist.files],
    "scripts": scripts,
    "sys_path": [os.path.realpath(p) for p in sys.path]}))
"""


def test_installs_and_runs_outside_the_repository(speech_data, tmp_path):
  root = str(tmp_path)
  present = {n for n in BUILD_OUTPUTS if os.path.exists(os.path.join(ROOT, n))}
  src = os.path.join(root, "src")
  _copy_checkout(src)
  python, bin_dir, purelib = _fresh_venv(root)
  env = _env(bin_dir)
  elsewhere = os.path.join(root, "elsewhere")
  os.makedirs(elsewhere)

  # Before the install nothing of the project can be imported there (neither
  # the checkout nor .venv's editable install), but TensorFlow and pip can.
  before = _run([python, "-c", "import e2s_tf"], elsewhere, env)
  assert before.returncode != 0, "e2s_tf importable before the install"
  assert "No module named 'e2s_tf'" in before.stderr, before.stderr[-2000:]
  tools = _run([python, "-c", "import setuptools, pip; "
                "print(setuptools.__version__)"], elsewhere, env)
  assert tools.returncode == 0, (
      "the test interpreter needs setuptools>=64 and pip (make installs "
      "them into .venv): " + tools.stderr[-2000:])

  install = _run([python, "-m", "pip", "install", "--no-index", "--no-deps",
                  "--no-build-isolation", src], elsewhere, env)
  assert install.returncode == 0, (install.stdout[-3000:]
                                   + install.stderr[-3000:])

  # The installed copy is the one imported, with its configs inside it.
  got = _run([python, "-c", _INSPECT], elsewhere, env, timeout=300)
  assert got.returncode == 0, got.stderr[-3000:]
  info = json.loads(got.stdout.strip().splitlines()[-1])
  installed = os.path.join(purelib, PACKAGE)
  assert info["file"] == os.path.join(installed, "__init__.py"), info
  assert not any(p == ROOT or p.startswith(ROOT + os.sep)
                 for p in info["sys_path"]), info["sys_path"]
  assert info["configs_dir"] == os.path.join(installed, "configs")
  assert {"base", "cnn", "gan", "multiscale", "testing"} <= set(
      info["configs"]), info["configs"]
  assert info["multiscale"] == os.path.join(installed, "configs",
                                            "multiscale.py")
  # Every file of the package and its sub-packages, and nothing else of
  # the repository (tests, tools), was installed.
  assert _package_files(installed) == _package_files(os.path.join(src,
                                                                  PACKAGE))
  tops = {f.split("/")[0] for f in info["record"]}
  assert {t for t in tops if not t.endswith(".dist-info")} <= {
      PACKAGE, "..", "bin"}, tops
  assert not os.path.exists(os.path.join(purelib, "tests"))
  assert not os.path.exists(os.path.join(purelib, "tools"))
  # A console script for every program, each pointing at a `run()`.
  scripts = _console_scripts()
  assert set(info["scripts"]) == set(scripts)
  for name, script in info["scripts"].items():
    assert script["origin"] and script["origin"].startswith(installed), script
    assert script["defines"], f"{name}: {script['value']} has no run()"
    assert os.access(os.path.join(bin_dir, name), os.X_OK), name

  # --help succeeds and shows the program's flags, as a script and a module.
  for command in ([os.path.join(bin_dir, "e2s-train")],
                  [python, "-m", "e2s_tf.train"]):
    helped = _run(command + ["--help"], elsewhere, env, timeout=300)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "Trains a decoder" in helped.stdout, helped.stdout
    assert "--config:" in helped.stdout and "--workdir:" in helped.stdout, (
        helped.stdout)

  workdir = os.path.join(elsewhere, "run")
  train = _run([python, "-m", "e2s_tf.train", "--config=multiscale",
                f"--data_dir={speech_data}", f"--workdir={workdir}",
                *TRAIN_OVERRIDES], elsewhere, env)
  assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
  assert "done: step 2" in train.stdout + train.stderr
  checkpoints = os.path.join(workdir, "checkpoints")
  assert any(n.startswith("ckpt-2") for n in os.listdir(checkpoints)), (
      os.listdir(checkpoints))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["name"] == "multiscale"
  # The build and the run wrote nothing into the checkout.
  assert not [n for n in BUILD_OUTPUTS
              if n not in present and os.path.exists(os.path.join(ROOT, n))]


def test_every_program_has_a_console_script():
  """Each module with a `__main__` block is an `e2s-...` script's `run()`."""
  programs = set()
  for d, dirs, files in os.walk(os.path.join(ROOT, PACKAGE)):
    dirs[:] = [x for x in dirs if x != "__pycache__"]
    for f in files:
      path = os.path.join(d, f)
      if not f.endswith(".py"):
        continue
      with open(path) as source:
        if MAIN_BLOCK in source.read():
          programs.add(os.path.relpath(path, ROOT)[:-3].replace(os.sep, "."))
  scripts = _console_scripts()
  assert {v.split(":")[0] for v in scripts.values()} == programs
  for name, value in scripts.items():
    module, attr = value.split(":")
    assert name.startswith("e2s-") and attr == "run", (name, value)
    with open(os.path.join(ROOT, *module.split(".")) + ".py") as f:
      source = f.read()
    assert "\ndef run():\n" in source, module
    assert source.rstrip().endswith(MAIN_BLOCK + "\n  run()"), module
