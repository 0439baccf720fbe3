# Two commands on a fresh clone: `make demo` and `make test`. Both are idempotent:
# the virtualenv is (re)installed only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-unit test-stress bench clean

demo: $(VENV)/.installed
	$(VENV)/bin/brain demo

# Tiers (markers, see tests/conftest.py): `make test` runs unit, integration and cluster (what
# .ci/run runs); `make test-unit` only the engine-free tests; `make test-stress` the stress tier (30x exit
# loops, the scan refreshing every table, the whole demo on S3).
test: $(VENV)/.installed-dev
	$(VENV)/bin/python -m pytest -q -m "not stress"

test-unit: $(VENV)/.installed-dev
	$(VENV)/bin/python -m pytest -q -m unit

test-stress: $(VENV)/.installed-dev
	$(VENV)/bin/python -m pytest -q -m stress tests/integration

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) -e ".[dev]"
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) lake .pytest_cache
