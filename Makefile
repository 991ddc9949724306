# The two commands a new user needs: `make run` and `make test`.
# Everything else here is what those two set up on a fresh Debian machine.

PYTHON        ?= python3
VENV          ?= .venv
STATE_DIR     ?= var
APT_PACKAGES  := softhsm2 poppler-utils qpdf openssl curl jq wrk nginx-light chromium tinyproxy faketime slapd ldap-utils
BIN           := $(VENV)/bin
# A fresh box's unattended-upgrades may hold the package lock for minutes: wait for it, don't fail.
APT_WAIT      := -o DPkg::Lock::Timeout=300

.PHONY: run test lint bench system-deps clean

## Serve the box on 127.0.0.1:8080 with a dev token and dev PKI (created on first start).
run: $(VENV)/.installed
	$(BIN)/esignbox --state-dir $(STATE_DIR) serve --dev

## Run the whole test suite (real SoftHSM2 token, real PKI servers on loopback), after the linters.
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

## ruff and mypy as configured in pyproject.toml (mypy strict for hsm/ and firmware/operations/).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

## Print signing throughput, latency, CPU and memory beside the token's and the TSA's own rates (not a
## test; ~5 min; also written to bench/last-report.md). BENCH_ARGS=--quick checks it works in ~2 min;
## --profile adds where a worker's Python time goes per request.
bench: $(VENV)/.installed
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

## Install the Debian packages the box and its tests call (needs root; skipped when present).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get $(APT_WAIT) update -qq && DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

clean:
	rm -rf $(VENV) $(STATE_DIR) .pytest_cache

# Appliance images (root, slow, downloads Debian packages; not part of `make test`): image/README.md.
.PHONY: image test-image
IMAGE_ARCHS ?= amd64 arm64

## Bootable disk images (x86-64 UEFI, Raspberry Pi 4 arm64) and signed RAUC bundles in image/build/.
image:
	bash image/build-images.sh $(IMAGE_ARCHS)

## Build the x86-64 root filesystem and check it: firmware self-test inside it, systemd-analyze verify.
test-image:
	bash image/test-image.sh
