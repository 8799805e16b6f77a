# The two commands the README starts with: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint typecheck imports manifests bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs are stamped so a second `make run` starts at once.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/settings-controller watch examples --output-dir out

# Under CI the node's Debian packages are installed first (tests/node fail
# rather than skip there); a developer machine without them skips those tests.
test: lint typecheck imports $(if $(filter true 1 yes,$(CI)),node-deps)
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check controller tests
	$(BIN)/ruff format --check controller tests

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports

# Regenerates deploy/crd and the admission policies from schemas/, then deploy/install.yaml and
# the Helm chart's templates from `kubectl kustomize deploy/` (the harness's kubectl, built
# from Go modules). Tests fail on drift.
manifests: $(VENV)/.installed
	$(BIN)/settings-controller crds --output-dir deploy/crd --policy-file deploy/policy/generated.yaml
	$(CLUSTER_CTL) build
	$(BIN)/python deploy/chart/generate.py --kubectl $${KUBE_HARNESS_DIR:-.cluster}/bin/kubectl

# Benchmarks, about an hour (Kyverno and 25,000 accounts included): not part of `make test` (see tests/bench/README.md).
bench: $(VENV)/.installed-dev
	$(BIN)/python -m tests.bench

# The long fuzz run (make test runs the same tests with a small budget).
fuzz: $(VENV)/.installed-dev
	FUZZ_BUDGET=100000 $(BIN)/pytest tests/reliability tests/providers -q -k fuzz

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache

-include tests/harness/cluster.mk
