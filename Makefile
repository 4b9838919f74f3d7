# embed2spec: `make test` and `make demo` create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: test demo demo-clean build-file clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15 tests

# Regenerates BUILD from the sources (tests/build_test.py checks it is true).
build-file: $(STAMP)
	$(PY) tools/update_build.py

clean:
	rm -rf $(VENV)
