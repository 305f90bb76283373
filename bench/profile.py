"""Where the server's CPU goes under load: py-spy samples of a gateway, grouped by layer.

    python bench/profile.py --rpc outpatient --seconds 12        (the unary settle path)
    python bench/profile.py --rpc batch                          (SettleBatch)
    python bench/profile.py --rpc ping                           (the empty call, for comparison)

Starts a gateway on the data set, drives it with bench/loadgen.py (closed
loop), records the server with ``py-spy record --threads`` (busy samples only) in
the middle of the run, and prints a Markdown table: each thread's share of
the busy samples, and the main thread's samples by the innermost frame of ours
(``core/``, ``gateway/``) or, when there is none, by the library it is in.
docs/performance.md quotes its output.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import loadgen  # noqa: E402

# (substring of a frame's file, layer) — the first match from the innermost frame outwards names the layer.
OURS = (
    ("core/engine.py", "engine (decide/apply, Python)"),
    ("core/funds.py", "engine (funds booking)"),
    ("core/", "core (other)"),
    ("gateway/store/ledger.py", "ledger front end"),
    ("gateway/store/sqlite/", "ledger front end"),   # the store's reads on the loop (find_request ...)
    ("gateway/store/postgresql/", "ledger front end"),
    ("gateway/transport/forward.py", "forwarding"),
    ("gateway/partitions.py", "partition routing"),
    ("gateway/store/idempotency.py", "idempotency keys"),
    ("gateway/transport/convert.py", "request/response translation"),
    ("gateway/app.py", "gateway execute path"),
    ("gateway/operations/metrics.py", "metrics"),
    ("gateway/transport/services/", "service handlers"),
    ("gateway/security/auth.py", "caller identity"),
    ("gateway/", "gateway (other)"),
)
LIBRARIES = (
    ("prometheus_client", "metrics"),
    ("grpc/", "gRPC aio runtime"),
    ("asyncio/", "event loop (asyncio/uvloop)"),
    ("uvloop", "event loop (asyncio/uvloop)"),
    ("google/protobuf", "protobuf"),
    ("sqlite3", "SQLite"),
    ("psycopg", "psycopg"),
)


# Frames every stack of the main thread starts with: below them is the event loop.
ENTRY = ("<frozen runpy>", "gateway/__main__.py", "gateway/cli/", "gateway/transport/server.py", "uvloop/__init__.py")


def layer(frames: list[str]) -> str:
    """The layer a main-thread stack is in: its innermost frame of ours or of a known library."""
    for frame in reversed(frames):
        if frame.startswith("Runner.run (asyncio/runners.py"):
            # Python frames end here: gRPC's Cython server and uvloop run in C below the loop
            return "gRPC aio runtime and uvloop (C, under the loop)"
        if any(e in frame for e in ENTRY):
            break
        for needle, name in OURS + LIBRARIES:
            if needle in frame and ("site-packages" not in frame or (needle, name) in LIBRARIES):
                return name
    return "other (interpreter, C extensions)"


def summarise(raw_path: str) -> str:
    threads: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    main_total = total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            name = frames[0]   # "thread (TID): NAME"
            total += n
            kind = ("main" if name.endswith("MainThread") else "ledger writer" if "ledger-writer" in name
                    else "other threads")
            threads[kind] += n   # PostgreSQL's ledger writer is the same thread name
            if kind == "main":
                main_total += n
                layers[layer(frames[1:])] += n
    out = ["| thread | share of samples |", "|---|---|"]
    out += [f"| {k} | {v / total * 100:.1f}% |" for k, v in threads.most_common()]
    out += ["", "| main thread, busy: layer | share |", "|---|---|"]
    out += [f"| {k} | {v / main_total * 100:.1f}% |" for k, v in layers.most_common()]
    return "\n".join(out)


def wait_until_busy(pid: int, timeout: float = 120) -> None:
    """Until the server uses half a core (the clients have drawn their cases and started sending)."""
    deadline = time.monotonic() + timeout
    before = loadgen._cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = loadgen._cpu_seconds(pid)
        if now - before > 0.25:
            time.sleep(1.0)   # past the clients' first calls
            return
        before = now
    raise RuntimeError("the server never got busy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--rpc", default="outpatient", choices=sorted(loadgen.RPCS))
    p.add_argument("--seconds", type=float, default=12.0, help="seconds recorded (the load runs longer)")
    p.add_argument("--raw", default="", help="keep py-spy's raw (collapsed) output here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        proc, target = loadgen.start_gateway(args.data_dir, work)
        raw = args.raw or os.path.join(work, "profile.txt")
        try:
            concurrency = 2 if args.rpc in loadgen.BATCHED else 32
            rows: list = []
            load = threading.Thread(target=lambda: rows.append(loadgen.run_load(
                target, args.rpc, args.data_dir, 2, concurrency, args.seconds + 10, server_pid=proc.pid)))
            load.start()
            wait_until_busy(proc.pid)
            subprocess.run(["py-spy", "record", "-p", str(proc.pid), "-d", str(int(args.seconds)), "-r", "250",
                            "-f", "raw", "-o", raw, "--threads", "--nonblocking"],
                           check=True, capture_output=True, env=dict(os.environ, PATH=os.path.dirname(sys.executable)
                                                                    + os.pathsep + os.environ["PATH"]))
            load.join()
        finally:
            proc.terminate()
            proc.wait(60)
        print(loadgen.table(rows))
        print()
        print(summarise(raw))


if __name__ == "__main__":
    main()
