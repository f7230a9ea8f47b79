# Precise MRD — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# e.g. BENCH_ARGS=--benchmark-compare (against the last saved run), plus
# --benchmark-compare-fail=mean:10% to fail on a slowdown
BENCH_ARGS ?=
# Commands the tests drive, each with the Debian package that provides it (installed when missing).
TEST_TOOLS := chromium=chromium shellcheck=shellcheck nginx=nginx

.PHONY: help venv test-tools test test-fast coverage check fmt lint types arch docs demo bench \
	bench-kernels image serverless-bundle bench-cold-start clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	@# NB: compiles the numba kernels into .venv/numba-cache once (~40 s), so no first run does
	$(BIN)/precise-mrd warm-cache
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the locked dependencies

AZURITE := $(VENV)/azurite/node_modules/.bin/azurite-blob
AZURITE_VERSION := 3.37.0
# checkov, cfn-lint and actionlint (a binary in a wheel) pin versions the project's lock cannot
# share: an environment of their own
IAC_STAMP := $(VENV)/iac/.installed

test-tools: $(AZURITE) $(IAC_STAMP)  ## install the tools the tests drive (Debian packages, Azurite, IaC scanners) when missing
	@scripts/ensure-debian-tools.sh $(TEST_TOOLS)

$(AZURITE):  # the Azure Blob emulator the storage tests start (npm; Node.js is on the machine)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/azurite azurite@$(AZURITE_VERSION)

$(IAC_STAMP): requirements-iac.lock | $(STAMP)
	test -x $(VENV)/iac/bin/python || $(PYTHON) -m venv $(VENV)/iac
	$(VENV)/iac/bin/pip install -q --upgrade pip
	$(VENV)/iac/bin/pip install -q -r requirements-iac.lock
	touch $(IAC_STAMP)

test: $(STAMP) test-tools  ## run the whole test suite (unit, integration, slow statistical tests)
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP) test-tools  ## the suite without slow statistical tests
	$(BIN)/pytest -n 2 -m "not slow" $(PYTEST_ARGS)

coverage: $(STAMP) test-tools  ## the whole suite with line coverage: HTML report in htmlcov/, total printed
	$(BIN)/pytest -n 2 --dist loadgroup --cov=src/precise_mrd --cov-report=html \
		--cov-report=term:skip-covered $(PYTEST_ARGS)

fmt: $(STAMP)  ## format the code
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

lint: $(STAMP)  ## format check + ruff lint
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

types: $(STAMP)  ## mypy, strict on src/
	$(BIN)/mypy

arch: $(STAMP)  ## the layer dependency rule (import-linter)
	$(BIN)/lint-imports

check: lint types arch test  ## format check + lint + types + architecture rule + tests

docs: $(STAMP)  ## regenerate docs/configuration.md from PipelineParams (a test checks it)
	$(BIN)/precise-mrd config-docs --out docs/configuration.md

demo: $(STAMP)  ## simulate a small sample, run the pipeline on it, print where the report is
	$(BIN)/precise-mrd demo --out demo_out

bench: $(STAMP)  ## benchmark against samtools and umi_tools on the standard sample
	$(BIN)/python benchmarks/bench_pipeline.py

bench-kernels: $(STAMP)  ## time the hot paths (tests/test_benchmarks.py) into .benchmarks/; BENCH_ARGS=--benchmark-compare
	$(BIN)/pytest tests/test_benchmarks.py -p no:xdist --benchmark-only --benchmark-autosave \
		--benchmark-storage=.benchmarks $(BENCH_ARGS)

image:  ## build the container image (needs a Docker engine; none runs on the project's CI machine)
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine answers here; run it where one does (docker build -t precise-mrd-api .)"; exit 1; }
	docker build -t precise-mrd-api .
	docker build --build-arg EXTRAS=ml,aws -t precise-mrd-api:lambda .

serverless-bundle: $(STAMP)  ## the package's wheel and the lock beside the GCP and Azure function sources
	rm -rf serverless/gcp/wheels serverless/azure/wheels
	$(BIN)/pip wheel -q --no-deps -w serverless/gcp/wheels .
	mkdir -p serverless/azure/wheels && cp serverless/gcp/wheels/*.whl serverless/azure/wheels/
	grep -v '^torch' requirements.lock > serverless/gcp/constraints.txt
	cp serverless/gcp/constraints.txt serverless/azure/constraints.txt
	@ls serverless/*/wheels/*.whl

bench-cold-start: $(STAMP)  ## serverless handlers: import-to-first-response time, beside a bare app
	$(BIN)/python benchmarks/bench_cold_start.py

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage
