# Local Kubernetes control plane for tests (etcd, kube-apiserver,
# kube-controller-manager and kubectl built from Go modules): see
# tests/cluster/README.md. Included by the top-level Makefile.
CLUSTER_PYTHON ?= python3
CLUSTER_CTL     = $(CLUSTER_PYTHON) tests/cluster/controlplane.py

.PHONY: cluster-up cluster-down cluster-status cluster-build cluster-test helm-build

# Builds .cluster/bin/kube-harness (+ kubectl), starts the control plane in the
# background, waits for /readyz and writes .cluster/kubeconfig{,-tenant,-operator}.
# A second call notices the running instance and returns.
cluster-up:
	$(CLUSTER_CTL) up

# Stops it and removes its state (.cluster/state and the kubeconfigs).
cluster-down:
	$(CLUSTER_CTL) down

cluster-status:
	$(CLUSTER_CTL) status

cluster-build:
	$(CLUSTER_CTL) build

# .cluster/bin/helm from tests/cluster/helm (its own Go module): the chart tests use it.
helm-build:
	$(CLUSTER_CTL) build-helm

# The control-plane tests alone, in the project's virtualenv (tests/conftest.py
# imports the project and loads tests.cluster.fixtures).
cluster-test: $(VENV)/.installed-dev
	$(BIN)/pytest tests/cluster -q
