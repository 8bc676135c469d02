# Set-up commands. Each creates or reuses the virtualenv .venv at the repository root and installs
# requirements.txt and requirements-test.txt into it (pyproject.toml reads its dependencies from
# them). pip keeps a torch already installed that satisfies requirements.txt: on a machine without
# an NVIDIA GPU, install the CPU-only wheel first (README.md, "Set up").
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_output

.PHONY: setup test test-browser demo clean-demo check-full-size

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	touch $@

# Every test but the browser ones, the end-to-end ones (tests/e2e/, marked slow) included; pytest's
# configuration is in pyproject.toml.
test: setup
	$(PY) -m pytest -q -m "not browser"

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
