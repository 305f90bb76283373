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

.PHONY: setup certs data run cluster test test-debug test-slow bench bench-keys soak load peak-day overload lint clean crash tamper race \
        ha ha-down failover

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Rebuild (Cython core + generated stubs) whenever a source of either changes.
$(BUILT): $(BIN)/python pyproject.toml setup.py tools/wire_numbers.py core/_core.pyx core/money.py $(wildcard core/*.pxi) $(wildcard protos/*/*/*.proto) \
          $(wildcard protos/*/*/*/*.proto)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages some targets need, installed when missing and apt is usable here (root); elsewhere
# install them by hand. $(call apt,PACKAGE,why) installs PACKAGE.
define apt
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(1) ($(2))"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; }; \
	else echo "warning: $(1) is not installed ($(2)); install it by hand" >&2; fi
endef

# The clearing charts name provinces in Chinese: a CJK font (Debian fonts-noto-cjk), or set YIDI_CJK_FONT.
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
$(CJK_FONT):
	$(call apt,fonts-noto-cjk,Chinese in the clearing charts)

# Plain protoc (Debian protobuf-compiler): tests/e2e/test_contract.py compiles protos/ with it alone.
/usr/bin/protoc:
	$(call apt,protobuf-compiler,the contract test compiles protos/ with plain protoc)

# The PostgreSQL server (Debian postgresql: initdb, pg_ctl): the PostgreSQL store's tests start a throwaway cluster
# of their own (tests/pg_cluster.py); nothing uses the package's own cluster.
PG_PACKAGE := /usr/share/doc/postgresql/copyright
$(PG_PACKAGE):
	$(call apt,postgresql,the PostgreSQL store's tests run a real PostgreSQL)

# buf, grpc-js, proto-loader, protobufjs (tools/package.json, pinned by its lock file) for the contract tests.
NODE_TOOLS := tools/node_modules/.package-lock.json
$(NODE_TOOLS): tools/package.json tools/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tools --no-audit --no-fund --loglevel=error; \
	else echo "warning: no npm: buf and the Node.js client test are skipped (install Node.js 20)" >&2; fi

# promtool checks and unit-tests the alerting rules (deploy/prometheus/). It is taken out of Debian's
# prometheus package without installing the package (which would start a Prometheus server).
PROMTOOL := build/tools/bin/promtool
$(PROMTOOL):
	@mkdir -p build/tools/deb && cd build/tools/deb && rm -f prometheus_*.deb \
	  && { apt-get download prometheus >/dev/null 2>&1 \
	       || { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } \
	  && dpkg-deb -x prometheus_*.deb root && mkdir -p ../bin && cp root/usr/bin/promtool ../bin/ \
	  && rm -rf root prometheus_*.deb \
	  || echo "warning: no promtool (Debian package prometheus): the alert-rule tests are skipped" >&2

# PostgreSQL with Patroni and etcd (Debian packages postgresql, patroni, etcd-server): deploy/patroni/ is the
# production recipe; `make ha` runs it on this machine and tests/e2e/test_ha_recipe.py kills its primary.
/usr/bin/patroni:
	$(call apt,patroni postgresql,the PostgreSQL high-availability recipe: make ha and its test)

/usr/bin/etcd:
	$(call apt,etcd-server,the PostgreSQL high-availability recipe: make ha and its test)

setup: $(BUILT) $(CJK_FONT) /usr/bin/protoc $(PG_PACKAGE) $(NODE_TOOLS) $(PROMTOOL) $(CERTS)/nodes/node-a.pem \
       $(CERTS)/seal.key /usr/bin/patroni /usr/bin/etcd

# Development certificates (mTLS): a CA, the server's, one per province and national, one per gateway node
# (git-ignored; made again, CA included, where the node certificates are missing), and the ledger's development
# seal key (production keeps its key outside the data directory: README).
$(CERTS)/nodes/node-a.pem: | $(BUILT)
	$(BIN)/yidi certs --out $(CERTS)

$(CERTS)/seal.key: | $(CERTS)/nodes/node-a.pem
	$(BIN)/yidi keys --out $@

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
# checks on, YIDI_DEBUG=1), built in a copy of the tracked tree under build/, with a made-up fund layer and
# accumulator declared in its core/money.py: a ledger recorded with the project's own build replays there
# unchanged (tests/money_layer.py, tests/core/test_core_money_layer.py).
DEBUG_TREE := build/debug-tree
MONEY_LAYER := build/money-layer
test-debug: setup
	rm -rf $(DEBUG_TREE) $(MONEY_LAYER) && mkdir -p $(DEBUG_TREE) $(MONEY_LAYER)
	git ls-files -z | xargs -0 cp --parents -t $(DEBUG_TREE)
	$(BIN)/python tests/money_layer.py record $(MONEY_LAYER)
	$(BIN)/python tests/money_layer.py extend $(DEBUG_TREE)
	cd $(DEBUG_TREE) && YIDI_DEBUG=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace >build.log 2>&1 \
	  || { cat build.log; exit 1; }
	cd $(DEBUG_TREE) && $(CURDIR)/$(BIN)/python -c "import core._core as c, sys; sys.exit(not c.__file__.startswith('$(CURDIR)/$(DEBUG_TREE)/'))"
	cd $(DEBUG_TREE) && YIDI_MONEY_LAYER_LEDGER=$(CURDIR)/$(MONEY_LAYER) $(CURDIR)/$(BIN)/python -m pytest -q \
	  -p no:cacheprovider tests/core/test_core_*.py tests/core/test_engine_property.py

test-slow: setup
	$(BIN)/python -m pytest -q tests bench --benchmark-disable --runslow

# Crash safety, proven: TLS clients retrying with the same request_id while the gateway is
# SIGKILLed at random moments CRASHES times; ends with one JSON line (tests/crash.py).
crash: setup
	$(BIN)/python tests/crash.py --crashes $(CRASHES)

# Reversals (冲正) racing their originals while Ping is asked throughout (tests/race.py; one JSON line).
PAIRS ?= 10000
race: setup
	$(BIN)/python tests/race.py --pairs $(PAIRS)

# Damage to the ledger's files, every case (tests/tamper.py): verify-ledger, start-up and the answers checked;
# ends with one JSON line whose served_silently must be 0 (tests/e2e/test_tamper.py runs it in the default run).
tamper: setup
	$(BIN)/python tests/tamper.py

# The benchmark suite: core, start-up and memory, load against an empty call, the peak day, overload; writes
# latest.{json,md}, a dated copy and latency.png into BENCH_OUT (bench/report.py; about 15 minutes).
# BENCH_OUT is outside the tracked tree unless asked: `make bench BENCH_OUT=bench/results` publishes.
BENCH_OUT ?= build/bench
bench: data
	$(BIN)/python bench/report.py --data-dir $(DATA) --out $(BENCH_OUT)

# Idempotency keys at constant cost: WINDOWS × CAPACITY fresh settlements through SettleBatch and unary settle with
# the recent-key cache at CAPACITY keys; server CPU µs per settlement per window of CAPACITY (bench/keys.py).
CAPACITY ?= 10000
WINDOWS  ?= 6
bench-keys: data
	mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/keys.py --data-dir $(DATA) --capacity $(CAPACITY) --windows $(WINDOWS) --json $(BENCH_OUT)/keys.json

# A bounded soak (bench/soak.py): SOAK_SECONDS of unary and batch load, then the collector's pauses under load per
# generation from /metrics; fails if any was over 10 ms or any call was refused. CI's short form: SOAK_SECONDS=30.
SOAK_SECONDS ?= 180
soak: data
	mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/soak.py --data-dir $(DATA) --seconds $(SOAK_SECONDS) --json $(BENCH_OUT)/soak.json

# A burst of 4,000 calls at once against 100 in flight, with overload control on and off (bench/overload.py;
# about a minute, no data set needed): refused- and admitted-call latency, each outcome counted.
overload: setup
	mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/overload.py --json $(BENCH_OUT)/overload.json

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
	mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/peak_day.py --data-dir $(DATA) --settlements $(SETTLEMENTS) --json $(BENCH_OUT)/peak_day.json

lint: setup
	$(BIN)/ruff check core gateway tests bench datagen

clean:
	rm -rf build *.egg-info core/_core.c core/_core*.so core/_wire_numbers.pxi core/_wire_numbers.py gateway/_pb/yidi $(BUILT) $(CERTS)

# A PostgreSQL cluster as deploy/patroni/ describes it, on loopback: three nodes (a primary, a synchronous
# standby, a replica) and one etcd; prints the DSN (the password is in $(HA_DIR)/pgpass: PGPASSFILE).
HA_DIR ?= /tmp/yidi-ha
ha: setup
	$(BIN)/python tools/ha.py up --dir $(HA_DIR)

ha-down:
	$(BIN)/python tools/ha.py down --dir $(HA_DIR)

# A local cluster for a newcomer: the Patroni recipe above (in $(CLUSTER_DIR)/pg) and two gateway nodes serving
# $(DATA) on a ledger of two partitions, each node a process per partition: node-a-p0 (127.0.0.1:50061, partition
# 0's owner), node-a-p1 (:50062), node-b-p0 (:50063), node-b-p1 (:50064, partition 1's owner); prints how to call them.
# Ctrl-C stops all of it and removes $(CLUSTER_DIR).  A smaller data set loads faster: make cluster PERSONS=200000
CLUSTER_DIR ?= /tmp/yidi-cluster
cluster: data
	$(BIN)/python tools/cluster.py --data-dir $(DATA) --dir $(CLUSTER_DIR)

# Two gateway machines on a PostgreSQL ledger of two partitions, each running a process per partition (the owner
# of one, the standby for the other), under clients retrying every settlement through every process: NODE_KILLS
# kill -9s of a partition's owner picked at random (its standby takes over; the killed one comes back as a
# standby) and PG_FAILOVERS kills of the PostgreSQL primary (the Patroni recipe of tools/ha.py); one JSON line
# (tools/failover.py: takeover times by partition, acknowledged, lost, duplicated, accumulator mismatches, clearing).
NODE_KILLS   ?= 3
PG_FAILOVERS ?= 1
failover: setup
	$(BIN)/python tools/failover.py --node-kills $(NODE_KILLS) --pg-failovers $(PG_FAILOVERS)
