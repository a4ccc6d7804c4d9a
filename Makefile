# Two commands do all the set-up: `make run` and `make test` (`make lint` checks the layers alone).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?= mnist

.PHONY: run test bench lint clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PY) -m pip install --disable-pip-version-check -q -e '.[bench]'
	touch $@

run: $(VENV)/.base
	$(VENV)/bin/vae-explorer --dataset $(DATASET)

lint: $(VENV)/.test
	$(VENV)/bin/lint-imports

test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests

bench: $(VENV)/.bench
	QT_QPA_PLATFORM=offscreen $(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
