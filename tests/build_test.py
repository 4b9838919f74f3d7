"""BUILD stays true: every module, test and program has a target, and every
dependency names an existing target or a pinned requirement."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tools"))
import buildlib  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def targets():
  with open(os.path.join(buildlib.ROOT, "BUILD")) as f:
    return buildlib.parse_build(f.read())


def test_every_python_file_has_a_target_of_the_right_kind(targets):
  by_src = {}
  for name, t in targets.items():
    for src in t.get("srcs", []):
      by_src[src] = t
  missing = [p for p in buildlib.python_files() if p not in by_src]
  assert not missing, f"no BUILD target for {missing}; run `make build-file`"
  wrong = [(p, by_src[p]["rule"], buildlib.kind(p))
           for p in buildlib.python_files()
           if by_src[p]["rule"] != buildlib.kind(p)]
  assert not wrong, f"targets of the wrong kind (path, BUILD, expected): {wrong}"


def test_every_target_source_exists(targets):
  for name, t in targets.items():
    for src in t.get("srcs", []):
      assert os.path.exists(os.path.join(buildlib.ROOT, src)), (
          f"target {name} names missing source {src}")


def test_every_dependency_exists(targets):
  reqs = {r.replace("-", "_") for r in buildlib.requirements()}
  for name, t in targets.items():
    for dep in t.get("deps", []):
      if dep.startswith(":"):
        assert dep[1:] in targets, f"{name} depends on missing target {dep}"
      else:
        assert dep.startswith("@pip//"), f"{name}: unknown dependency {dep}"
        assert dep[len("@pip//"):].lower() in reqs, (
            f"{name} depends on {dep}, which requirements.txt does not pin")


def test_every_project_import_is_a_dependency(targets):
  by_src = {src: t for t in targets.values() for src in t.get("srcs", [])}
  for path in buildlib.python_files():
    local, _ = buildlib.imports(path)
    deps = set(by_src[path].get("deps", []))
    for module in local:
      assert ":" + buildlib.target_name(module) in deps, (
          f"{path} imports {module} but its target lacks that dependency")


def test_parser_catches_a_missing_target():
  text = 'py_library(name = "a", srcs = ["x.py"], deps = [":b"])\n'
  t = buildlib.parse_build(text)
  assert t["a"]["deps"] == [":b"] and "b" not in t
