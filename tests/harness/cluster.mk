# Local Kubernetes control plane for tests (etcd, kube-apiserver,
# kube-controller-manager and kubectl built from Go modules): see
# tests/harness/README.md. Included by the top-level Makefile.
CLUSTER_PYTHON ?= python3
CLUSTER_CTL     = $(CLUSTER_PYTHON) tests/harness/controlplane.py

.PHONY: cluster-up cluster-up-control-plane cluster-down cluster-status cluster-build cluster-test helm-build promtool-build

# Builds .cluster/bin/kube-harness (+ kubectl), starts the control plane in the
# background, waits for /readyz and writes .cluster/kubeconfig{,-tenant,-operator};
# then the node (kubelet, containerd, pod network, kube-scheduler) and waits
# until it is Ready. A second call notices the running instance and returns.
# `make cluster-up-control-plane` starts the control plane alone.
cluster-up: node-deps
	$(CLUSTER_CTL) up --node

cluster-up-control-plane:
	$(CLUSTER_CTL) up

# Stops it and removes its state (.cluster/state and the kubeconfigs).
cluster-down:
	$(CLUSTER_CTL) down

cluster-status:
	$(CLUSTER_CTL) status

cluster-build:
	$(CLUSTER_CTL) build

# .cluster/bin/helm from tests/harness/helm (its own Go module): the chart tests use it.
helm-build:
	$(CLUSTER_CTL) build-helm

# .cluster/bin/promtool from tests/harness/promtool (its own Go module): the tests of
# deploy/prometheus (alerts, dashboard) use it.
promtool-build:
	$(CLUSTER_CTL) build-promtool

# The control-plane tests alone, in the project's virtualenv (tests/conftest.py
# imports the project and loads tests.harness.fixtures).
cluster-test: $(VENV)/.installed-dev
	$(BIN)/pytest tests/harness -q

# --- the operator image and the node (tests/harness/README.md, "Node") -------

.PHONY: lock node-deps image image-build deploy clean-image node-test

# The hashed locks deploy/Dockerfile installs, regenerated from pyproject.toml
# (pip-tools in a virtualenv of its own, so the lock does not depend on what
# the dev virtualenv holds). Commit both files.
LOCK_VENV     = .venv-lock
PIP_TOOLS     = pip-tools==7.5.2
PIP_COMPILE   = env -u PIP_FIND_LINKS $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links --no-header
$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet $(PIP_TOOLS)
lock: $(LOCK_VENV)/bin/pip-compile
	$(PIP_COMPILE) -o deploy/requirements.lock pyproject.toml
	$(PIP_COMPILE) --build-deps-for=wheel --only-build-deps -o deploy/build-requirements.lock pyproject.toml

# Debian packages the image build and the node need (CI starts without them).
NODE_DEBS = buildah mmdebstrap runc socat dnsmasq-base iptables
node-deps:
	@if ! dpkg-query -W -f='$${Status}\n' $(NODE_DEBS) 2>/dev/null | grep -qv '^install ok installed$$' \
	  && [ "$$(dpkg-query -W -f='$${Status}\n' $(NODE_DEBS) 2>/dev/null | wc -l)" = "$(words $(NODE_DEBS))" ]; then \
	  echo "node-deps: $(NODE_DEBS) installed"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(NODE_DEBS); fi

# Builds deploy/Dockerfile with buildah on a Debian base built here.
image-build: node-deps
	$(CLUSTER_PYTHON) tests/harness/image.py build

# Builds it and loads it into the running node's containerd.
image: node-deps
	$(CLUSTER_PYTHON) tests/harness/image.py load

clean-image:
	rm -rf .cluster/image

# deploy/ through tests/harness/overlay (only the image differs), then waits
# until the operator's Deployment is Available on the node.
KUBECTL = .cluster/bin/kubectl --kubeconfig .cluster/kubeconfig
deploy:
	$(KUBECTL) apply -k tests/harness/overlay
	$(KUBECTL) -n settings-controller-system wait --for=condition=Available \
	  deployment/settings-controller --timeout=300s

# The end-to-end tests on the node (also part of `make test`).
node-test: $(VENV)/.installed-dev
	$(BIN)/pytest tests/node -q
