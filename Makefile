# The two set-up commands: `make demo` (train + translate on an embedded default data set, with a report)
# and `make test` (the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test benchmark venv clean

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m duiit demo -o duiit-demo

test: venv
	$(PY) -m pytest Testing -q

benchmark: venv
	$(PY) -m Testing.benchmarks.run_all

clean:
	rm -rf $(VENV) duiit-demo
