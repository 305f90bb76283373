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

.PHONY: setup data run test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Rebuild (Cython core + generated stubs) whenever a source of either changes.
$(BUILT): $(BIN)/python pyproject.toml setup.py core/_core.pyx $(wildcard core/*.pxi) $(wildcard protos/yidi/v1/*.proto)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BUILT)

# The realistic national data set (git-ignored), regenerated when the size or seed changes.
data: setup
	@$(BIN)/python -c "import json,sys; m=json.load(open('$(DATA)/manifest.json')); sys.exit(m['persons']!=$(PERSONS) or m['seed']!=$(SEED))" 2>/dev/null \
	  || $(BIN)/yidi datagen --out $(DATA) --persons $(PERSONS) --seed $(SEED)

run: data
	$(BIN)/yidi serve --data-dir $(DATA) --listen $(LISTEN)

# The default test run: unit, contract (real gRPC on loopback), crash, and the
# benchmark suite in its short smoke form.  Long runs: `make test-slow`.
test: setup
	$(BIN)/ruff check core gateway tests bench
	$(BIN)/python -m pytest -q tests bench --benchmark-disable

test-slow: setup
	$(BIN)/python -m pytest -q tests bench --benchmark-disable --runslow

bench: setup
	$(BIN)/python -m pytest -q bench --benchmark-only --benchmark-columns=min,median,mean,ops,rounds

lint: setup
	$(BIN)/ruff check core gateway tests bench

clean:
	rm -rf build *.egg-info core/_core.c core/_core*.so gateway/_pb/yidi $(BUILT)
