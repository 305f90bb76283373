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

.PHONY: setup certs data run test test-debug test-slow bench load peak-day overload lint clean crash

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Rebuild (Cython core + generated stubs) whenever a source of either changes.
$(BUILT): $(BIN)/python pyproject.toml setup.py core/_core.pyx $(wildcard core/*.pxi) $(wildcard protos/yidi/v1/*.proto)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The clearing charts name provinces in Chinese: a CJK font (Debian fonts-noto-cjk), installed when
# missing and apt is usable here (root); elsewhere install it by hand or set YIDI_CJK_FONT.
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
$(CJK_FONT):
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing fonts-noto-cjk (Chinese in the clearing charts)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null; }; \
	else echo "warning: no CJK font at $(CJK_FONT); install fonts-noto-cjk or set YIDI_CJK_FONT" >&2; fi

setup: $(BUILT) $(CJK_FONT) $(CERTS)/ca.pem

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

# The benchmark suite: core, start-up and memory, load against an empty call, the peak day, overload; writes
# bench/results/latest.{json,md}, a dated copy and latency.png (bench/report.py; about 15 minutes).
bench: data
	$(BIN)/python bench/report.py --data-dir $(DATA)

# A burst of 4,000 calls at once against 100 in flight, with overload control on and off (bench/overload.py;
# about a minute, no data set needed): refused- and admitted-call latency, each outcome counted.
overload: setup
	mkdir -p bench/results
	$(BIN)/python bench/overload.py --json bench/results/overload.json

# Locust, headless, against a gateway started here on the national data set (USERS, SECONDS to taste).
USERS   ?= 40
SECONDS ?= 60
load: data
	rm -rf build/load && mkdir -p build/load
	$(BIN)/yidi serve --data-dir $(DATA) --ledger build/load/ledger.sqlite --listen 127.0.0.1:50061 > build/load/serve.out 2> build/load/serve.log & \
	  echo $$! > build/load/pid; until grep -q SERVING build/load/serve.out; do sleep 1; done; \
	  YIDI_DATA=$(DATA) $(BIN)/locust -f bench/locustfile.py --headless -u $(USERS) -r 10 -t $(SECONDS)s \
	    --host 127.0.0.1:50061 --csv build/load/locust --only-summary; status=$$?; \
	  kill $$(cat build/load/pid); exit $$status

# A national peak day (2,000,000 settlements in the published mix) replayed through the gateway, then checked.
SETTLEMENTS ?= 2000000
peak-day: data
	mkdir -p bench/results
	$(BIN)/python bench/peak_day.py --data-dir $(DATA) --settlements $(SETTLEMENTS) --json bench/results/peak_day.json

lint: setup
	$(BIN)/ruff check core gateway tests bench datagen

clean:
	rm -rf build *.egg-info core/_core.c core/_core*.so gateway/_pb/yidi $(BUILT) $(CERTS)
