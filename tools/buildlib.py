"""Reads the project's sources and its BUILD file (a Starlark subset).

Used by tools/update_build.py (writes BUILD) and tests/build_test.py (checks
that BUILD is true: a target per module, test and program, and every
dependency an existing target or a pinned requirement).
"""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "e2s_tf"
SOURCE_DIRS = ("e2s_tf", "tests", "configs", "tools", "bench")
# Import name -> requirements.txt distribution name, where they differ.
DISTRIBUTIONS = {
    "tensorflow": "tensorflow", "tensorflow_io": "tensorflow-io",
    "keras": "keras", "numpy": "numpy", "scipy": "scipy",
    "soundfile": "soundfile", "absl": "absl-py",
    "ml_collections": "ml-collections", "espeakng_loader": "espeakng-loader",
    "tqdm": "tqdm", "pytest": "pytest", "pystoi": "pystoi", "pesq": "pesq",
    "matplotlib": "matplotlib", "librosa": "librosa",
    "apache_beam": "apache-beam", "tensorboard_plugin_profile":
    "tensorboard-plugin-profile", "tensorboard": "tensorboard",
}

# Packages a module needs that its imports do not show: naturalness reads
# DNSMOS's ONNX model from the speechmos wheel's files.
EXTRA_REQUIREMENTS = {
    "e2s_tf/aspects/naturalness.py": ("speechmos",),
}


def python_files():
  """Repo-relative paths of every .py file that needs a target."""
  out = []
  for top in SOURCE_DIRS:
    base = os.path.join(ROOT, top)
    for d, _, files in os.walk(base):
      if "__pycache__" in d:
        continue
      for f in files:
        if f.endswith(".py"):
          out.append(os.path.relpath(os.path.join(d, f), ROOT))
  return sorted(out)


def target_name(path):
  """`e2s_tf/models/gan.py` -> `models_gan`; `tests/x_test.py` -> `x_test`."""
  parts = path[:-3].split(os.sep)
  if parts[-1] == "__init__":
    # A package: e2s_tf -> "e2s_tf", e2s_tf/models -> "models", tests -> "tests".
    return "_".join(parts[1:-1]) or parts[0]
  if parts[0] in (PACKAGE, "tests", "tools"):
    parts = parts[1:]
  return "_".join(parts)


def kind(path):
  src = open(os.path.join(ROOT, path)).read()
  if path.startswith("tests" + os.sep) and path.endswith("_test.py"):
    return "py_test"
  if re.search(r"^if __name__ == .__main__.:", src, re.M):
    return "py_binary"
  return "py_library"


def imports(path):
  """(project modules imported, third-party top-level packages imported)."""
  tree = ast.parse(open(os.path.join(ROOT, path)).read(), path)
  local, external = set(), set()
  own = {p.split(os.sep)[0] for p in python_files()}

  def add_module(mod):
    candidates = [mod.replace(".", os.sep) + ".py",
                  os.path.join(mod.replace(".", os.sep), "__init__.py")]
    for c in candidates:
      if os.path.exists(os.path.join(ROOT, c)):
        local.add(c)
        return True
    return False

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        top = a.name.split(".")[0]
        if top in own:
          add_module(a.name)
        else:
          external.add(top)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      top = node.module.split(".")[0]
      if top in own:
        for a in node.names:
          if not add_module(f"{node.module}.{a.name}"):
            add_module(node.module)
      else:
        external.add(top)
  local.discard(path)
  return sorted(local), sorted(external)


def requirements():
  names = set()
  for line in open(os.path.join(ROOT, "requirements.txt")):
    line = line.split("#")[0].strip()
    if line:
      names.add(re.split(r"[=<>!~\[ ]", line)[0].lower())
  return names


def parse_build(text):
  """Executes BUILD with stub rules; returns {name: dict(rule=..., ...)}."""
  targets = {}

  def rule(kind_):
    def fn(**kw):
      name = kw["name"]
      if name in targets:
        raise ValueError(f"duplicate target {name}")
      targets[name] = dict(kw, rule=kind_)
    return fn

  env = {"py_library": rule("py_library"), "py_test": rule("py_test"),
         "py_binary": rule("py_binary"), "load": lambda *a, **k: None,
         "requirement": lambda n: "@pip//" + n.replace("-", "_"),
         "package": lambda **k: None, "glob": lambda *a, **k: [],
         "exports_files": lambda *a, **k: None}
  exec(compile(text, "BUILD", "exec"), env)  # pylint: disable=exec-used
  return targets
