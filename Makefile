# The two commands of the README's quick start, and a few more.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: run test lint check proto sim soak bench clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Starts the local 3-node cluster (configs/local.toml, data in ./data) in the
# foreground; Ctrl-C stops it.
run: $(STAMP)
	$(VENV)/bin/railyard node start -c configs/local.toml

lint: $(STAMP)
	$(VENV)/bin/ruff check railyard tests bench
	$(VENV)/bin/ruff format --check railyard tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

# The simulator over a wide seed range (the issue's acceptance run).
sim: $(STAMP)
	$(PY) -m railyard.sim --nodes 5 --seeds 0-2000

# Long fault-injection runs, kept out of make test.
soak: $(STAMP)
	$(VENV)/bin/pytest -m soak -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/run_matrix.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
