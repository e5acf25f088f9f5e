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

# The simulator's seeds (tests/sim) are pure CPU and open no port: they run
# beside lint, which is CPU too but short, and the rest of the suite starts
# once both are done, so no cluster test shares the two cores with them.
# Either failing fails make test.
test: $(STAMP)
	@$(VENV)/bin/pytest -p no:cacheprovider tests/sim > $(VENV)/sim-tests.log 2>&1 & sim=$$!; \
	$(MAKE) --no-print-directory lint; linted=$$?; \
	wait $$sim; sim_status=$$?; \
	echo "---- tests/sim (run beside lint) ----"; cat $(VENV)/sim-tests.log; \
	if [ $$linted -ne 0 ] || [ $$sim_status -ne 0 ]; then exit 1; fi; \
	$(VENV)/bin/pytest --ignore=tests/sim

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
