# Set-up commands. Each creates or reuses the virtualenv .venv at the repository root and installs
# requirements.txt and requirements-test.txt into it (pyproject.toml reads its dependencies from
# them). pip keeps a torch already installed that satisfies requirements.txt: on a machine without
# an NVIDIA GPU, install the CPU-only wheel first (README.md, "Set up"). The install ends with
# scripts/check_setup.py (torch, torchvision and transformers load together): on a mismatch it
# prints the fixing command and setup fails, so the next `make setup` installs and checks again.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_output

.PHONY: setup test test-fast test-browser demo clean-demo check-full-size

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(PY) scripts/check_setup.py
	touch $@

# Every test but the browser ones, the end-to-end ones (tests/e2e/, marked slow) included; pytest's
# configuration is in pyproject.toml. TEST_WORKERS processes (pytest-xdist) share the tests a module
# at a time (--dist loadfile: a module's fixtures are built once); the session fixtures are built once
# for all of them (tests/conftest.py). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PY) -m pytest -q -m "not browser" $(XDIST)

# While editing: the unit tests and the stage tests that need no model, no browser and no run of several
# stages (markers in pyproject.toml; `models` is set by tests/conftest.py). Under 90 s on 2 idle cores.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser and not models" $(XDIST) tests/unit tests/stages

# The review page in a real headless Chromium: needs Debian's chromium (apt-get install chromium).
test-browser: setup
	$(PY) -m pytest -q -m browser

# Every model step on random models of the real size (scripts/check_full_size.py): about 45 min and
# 15 GB of memory on 2 CPU cores, 13 GB of disk for full_size_models/. Not part of make test.
check-full-size: setup
	nice -n 10 $(PY) scripts/check_full_size.py --models full_size_models --work full_size_check --overwrite

demo: setup
	PYTHON=$(PY) DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

clean-demo:
	rm -rf $(DEMO_DIR)
