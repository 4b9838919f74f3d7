# embed2spec: `make test` and `make demo` create .venv and install on first use
# (and again when requirements.txt or pyproject.toml change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: test demo demo-clean build-file clean browser

# `make demo` variables: point the chain at your own audio and embedder.
# EMBEDDER: logmel (default) | mfcc | savedmodel:PATH | speaker | speaker20ms;
# `speaker` and `speaker20ms` first train the learned speaker encoder on the
# corpus (e2s_tf.train_embedder) and export it into $(DEMO_DIR)/speaker_encoder
# at its 10 ms hop, or every 20 ms (320 samples at 16 kHz: the means of pairs of
# its frames); re-runs reuse a complete export. The later stages do not see
# a change of EMBEDDER in a DEMO_DIR that already holds a trained decoder:
# `make demo-clean` first, or pick another DEMO_DIR, e.g.
#   make demo EMBEDDER=speaker20ms DEMO_DIR=demo_speaker20ms
# CONFIG: auto (default: multiscale for logmel and mfcc, cnn for a
# learned encoder; see docs/experiments/decoders.md) or a packaged config.
# FLOOR_MINUTES: training budget of the retention floor (the same config on
# the `energy` embedder; 0: no floor). The demo also trains a speaker judge
# and a content judge (a phone recogniser) on the train split for the
# evaluation's profile; see e2s_tf/demo.py.
DEMO_DIR ?= demo
AUDIO_DIR ?=
LAYOUT ?= speaker_dirs
VAD ?= 0
EMBEDDER ?= logmel
CONFIG ?= auto
TRAIN_MINUTES ?= 14
FLOOR_MINUTES ?= 3

# The pinned, tested stack (requirements.txt), then the project itself in
# editable mode (pyproject.toml): the console scripts (e2s-train, ...) land in
# .venv/bin. The project installs without build isolation, so nothing beyond
# requirements.txt is downloaded where the venv has setuptools (Python 3.11's
# venv does; an older or missing one is installed first).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 64)' \
	  || $(PY) -m pip install --quiet 'setuptools>=64'
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The browser test of report.html (tests/aspects_html_report_test.py) opens it
# in a real headless Chromium: Debian's chromium and chromium-driver, installed
# here when missing (as root, e.g. in CI; otherwise it says what to run). The
# test fails rather than skips without them.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install \
	      -y -qq --no-install-recommends chromium chromium-driver; \
	  else \
	    echo "make test: the browser test needs Debian's chromium and" \
	      "chromium-driver: sudo apt-get install chromium chromium-driver"; \
	  fi; \
	fi

test: $(STAMP) browser
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15 tests

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m e2s_tf.demo --demo_dir=$(DEMO_DIR) \
	  --audio_dir=$(AUDIO_DIR) --layout=$(LAYOUT) --vad=$(if $(filter 1 true yes,$(VAD)),true,false) \
	  --embedder=$(EMBEDDER) --config=$(CONFIG) --train_minutes=$(TRAIN_MINUTES) \
	  --floor_minutes=$(FLOOR_MINUTES)

demo-clean:
	rm -rf $(DEMO_DIR)

# Regenerates BUILD from the sources (tests/build_test.py checks it is true).
build-file: $(STAMP)
	$(PY) tools/update_build.py

clean:
	rm -rf $(VENV)
