# Yidi: the commands a newcomer can guess.  Everything runs from the .venv
# virtualenv at the repo root, which `setup` creates and keeps built.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DATA    ?= data/national
PERSONS ?= 1800000
SEED    ?= 2026
LISTEN  ?= 127.0.0.1:50051
BUILT   := $(VENV)/.built

CERTS   ?= certs/dev
CRASHES ?= 100

.PHONY: setup certs data run test test-debug test-slow bench lint clean crash

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Rebuild (Cython core + generated stubs) whenever a source of either changes.
$(BUILT): $(BIN)/python pyproject.toml setup.py core/_core.pyx $(wildcard core/*.pxi) $(wildcard protos/yidi/v1/*.proto)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BUILT) $(CERTS)/ca.pem

# Development certificates (mTLS): a CA, the server's, one per province and national (git-ignored).
$(CERTS)/ca.pem: | $(BUILT)
	$(BIN)/yidi certs --out $(CERTS)

certs: setup

# The realistic national data set (git-ignored), regenerated when the size or seed changes.
data: setup
	@$(BIN)/python -c "import json,sys; m=json.load(open('$(DATA)/manifest.json')); sys.exit(m['persons']!=$(PERSONS) or m['seed']!=$(SEED))" 2>/dev/null \
	  || $(BIN)/yidi datagen --out $(DATA) --persons $(PERSONS) --seed $(SEED)

run: data
	$(BIN)/yidi serve --data-dir $(DATA) --listen $(LISTEN) --certs $(CERTS)

# The default test run: unit, contract (real gRPC on loopback), crash, and the
# benchmark suite in its short smoke form.  Long runs: `make test-slow`.
test: setup test-debug
	$(BIN)/ruff check core gateway tests bench datagen
	$(BIN)/python -m pytest -q tests bench --benchmark-disable

# The core's tests again on a debug build (Cython bounds and initialisation
# checks on, YIDI_DEBUG=1), built in a copy of the tracked tree under build/.
DEBUG_TREE := build/debug-tree
test-debug: setup
	rm -rf $(DEBUG_TREE) && mkdir -p $(DEBUG_TREE)
	git ls-files -z | xargs -0 cp --parents -t $(DEBUG_TREE)
	cd $(DEBUG_TREE) && YIDI_DEBUG=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace >build.log 2>&1 \
	  || { cat build.log; exit 1; }
	cd $(DEBUG_TREE) && $(CURDIR)/$(BIN)/python -c "import core._core as c, sys; sys.exit(not c.__file__.startswith('$(CURDIR)/$(DEBUG_TREE)/'))"
	cd $(DEBUG_TREE) && $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_core_*.py tests/test_engine_property.py

test-slow: setup
	$(BIN)/python -m pytest -q tests bench --benchmark-disable --runslow

# Crash safety, proven: TLS clients retrying with the same request_id while the gateway is
# SIGKILLed at random moments CRASHES times; ends with one JSON line (tests/crash.py).
crash: setup
	$(BIN)/python tests/crash.py --crashes $(CRASHES)

bench: setup
	$(BIN)/python -m pytest -q bench --benchmark-only --benchmark-columns=min,median,mean,ops,rounds

lint: setup
	$(BIN)/ruff check core gateway tests bench datagen

clean:
	rm -rf build *.egg-info core/_core.c core/_core*.so gateway/_pb/yidi $(BUILT) $(CERTS)
