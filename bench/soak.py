"""A bounded soak: load for a set time, then the collector's longest pause per generation against 10 ms.

    make soak                                        (SOAK_SECONDS=180)
    python bench/soak.py --data-dir data/national --seconds 180 [--limit-ms 10]

Starts a gateway on the data set (mTLS, a fresh ledger, ``--metrics-listen``)
and runs bench/loadgen.py against it, unary OutpatientSettle (32 in flight)
and SettleBatch of 500 (2 in flight) in turns of up to 30 s, until the time
is up.  The gateway's /metrics are read after start-up and at the end; the
difference is the load's: per generation, the collections, the pauses over
the limit, the objects freed, and the longest pause — exact when it is longer
than any pause of start-up (the full collection before ``gc.freeze()`` walks
the whole loaded state), else bounded by start-up's longest and the
histogram's bucket.  Exit status
1 if any pause under load was longer than ``--limit-ms``, or if any call or
item was refused (bench/outcomes.py).  A pause is read in C at the
collection's start and end (core.GcClock): its wall time is the collecting
thread's CPU time, plus the time it waited for a core (Linux's run-queue
delay: the OS gave the cores to other processes), plus any time it was
blocked; the table shows the three summed under load and the longest since
start.  The objects each generation tracks outside the frozen start-up
state are read after start-up and once the load has stopped: what the load
left behind, garbage not collected yet included (a settlement itself leaves
nothing: tests/gateway/test_gc_survivors.py).  Prints a Markdown table;
``--json`` writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import loadgen, outcomes  # noqa: E402
from gateway.operations.gcwatch import PAUSE_BUCKETS_MS  # noqa: E402

PAUSE_BUCKETS_US = {round(b * 1000) for b in PAUSE_BUCKETS_MS}

TURNS = (("outpatient", 32), ("batch", 2))
TURN_S = 30.0


def generations(metrics_url: str) -> list[dict]:
    """Per generation since start: collections, pause buckets (le ms -> count), the longest pause, objects freed."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]
    rows = []
    for g in map(str, range(3)):
        mine = {(name, labels.get("le")): value for name, labels, value in samples if labels.get("generation") == g}
        rows.append({"generation": int(g), "collections": int(mine[("yidi_gc_generation_pause_seconds_count", None)]),
                     "buckets": {float(le) * 1000: int(v) for (name, le), v in mine.items()
                                 if name == "yidi_gc_generation_pause_seconds_bucket"},
                     "max_pause_ms": mine[("yidi_gc_generation_pause_max_seconds", None)] * 1000,
                     "max_pause_cpu_ms": mine[("yidi_gc_generation_pause_cpu_max_seconds", None)] * 1000,
                     "pause_total_ms": mine[("yidi_gc_generation_pause_seconds_sum", None)] * 1000,
                     "pause_cpu_total_ms": mine[("yidi_gc_generation_pause_cpu_seconds_total", None)] * 1000,
                     "pause_waited_total_ms": mine[("yidi_gc_generation_pause_waited_seconds_total", None)] * 1000,
                     "max_pause_unwaited_ms": mine[("yidi_gc_generation_pause_unwaited_max_seconds", None)] * 1000,
                     "tracked_objects": int(mine[("yidi_gc_tracked_objects", None)]),
                     "collected_objects": int(mine[("yidi_gc_collected_objects_total", None)])})
    return rows


def under_load(start: dict, end: dict, limit_ms: float) -> dict:
    """One generation's figures between two readings: counts subtracted, the longest pause exact or bounded."""
    grown = {le: n - start["buckets"].get(le, 0) for le, n in end["buckets"].items()}
    collections = end["collections"] - start["collections"]
    within = grown.get(limit_ms)
    if end["max_pause_ms"] > start["max_pause_ms"]:
        longest = f"{end['max_pause_ms']:.2f}"
    elif collections:   # none longer than start-up's longest, nor than the first bucket holding them all
        longest = f"≤ {min(min(le for le, n in grown.items() if n == collections), end['max_pause_ms']):.2f}"
    else:
        longest = "—"
    return {"generation": end["generation"], "collections": collections, "longest_pause_ms": longest,
            "pauses_over_limit": None if within is None else collections - within,
            "pause_total_ms": round(end["pause_total_ms"] - start["pause_total_ms"], 1),
            "pause_cpu_total_ms": round(end["pause_cpu_total_ms"] - start["pause_cpu_total_ms"], 1),
            "pause_waited_total_ms": round(end["pause_waited_total_ms"] - start["pause_waited_total_ms"], 1),
            "tracked_objects_start_end": (start["tracked_objects"], end["tracked_objects"]),
            "collected_objects": end["collected_objects"] - start["collected_objects"],
            "longest_pause_ms_since_start": round(end["max_pause_ms"], 2),
            "longest_pause_unwaited_ms_since_start": round(end["max_pause_unwaited_ms"], 2),
            "longest_pause_cpu_ms_since_start": round(end["max_pause_cpu_ms"], 2)}


def soak(data_dir: str, seconds: float, workdir: str, processes: int = 2,
         serve_options: tuple[str, ...] = ()) -> tuple[list[dict], list[dict], list[dict]]:
    """(the load rows, the per-generation figures right after start-up, the same at the end)."""
    proc, target = loadgen.start_gateway(data_dir, workdir, "--metrics-listen", "127.0.0.1:0", *serve_options)
    metrics_url = proc.serving[proc.serving.index("metrics") + 1]
    rows = []
    try:
        at_start = generations(metrics_url)
        end = time.monotonic() + seconds
        turn = 0
        while (left := end - time.monotonic()) > 1:
            kind, concurrency = TURNS[turn % len(TURNS)]
            rows.append(loadgen.run_load(target, kind, data_dir, processes, concurrency, min(TURN_S, left),
                                         server_pid=proc.pid, warmup=0.0))
            print(loadgen.table(rows[-1:]).splitlines()[-1], file=sys.stderr)
            turn += 1
        return rows, at_start, generations(metrics_url)
    finally:
        proc.terminate()
        proc.wait(60)
        proc.stdout.close()


def table(gens: list[dict], limit_ms: float) -> str:
    out = [f"| generation | collections under load | longest pause ms | pauses over {limit_ms:g} ms "
           "| pause total ms: wall / waiting for a core / CPU | mean CPU µs | objects freed "
           "| tracked objects: start / end | longest since start (start-up included): wall / less the wait / CPU ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {g['generation']} | {g['collections']:,} | {g['longest_pause_ms']} | {g['pauses_over_limit']} "
            f"| {g['pause_total_ms']:,} / {g['pause_waited_total_ms']:,} / {g['pause_cpu_total_ms']:,} "
            f"| {g['pause_cpu_total_ms'] * 1000 / g['collections'] if g['collections'] else 0:,.0f} "
            f"| {g['collected_objects']:,} | {g['tracked_objects_start_end'][0]:,} / {g['tracked_objects_start_end'][1]:,} "
            f"| {g['longest_pause_ms_since_start']} / {g['longest_pause_unwaited_ms_since_start']} "
            f"/ {g['longest_pause_cpu_ms_since_start']} |" for g in gens]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--limit-ms", type=float, default=10.0, help="the longest pause allowed (10: the target)")
    p.add_argument("--processes", type=int, default=2, help="load client processes")
    p.add_argument("--serve-option", action="append", default=[], metavar="OPTION",
                   help="one more `yidi serve` option for the gateway, e.g. --serve-option=--max-queue-wait-ms=0 (on a "
                        "machine other work saturates, so that calls wait instead of being refused OVERLOADED)")
    p.add_argument("--json", default="")
    args = p.parse_args()
    if args.limit_ms * 1000 not in PAUSE_BUCKETS_US:
        raise SystemExit(f"--limit-ms must be a bound of the pause histogram: {sorted(b / 1000 for b in PAUSE_BUCKETS_US)}")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.data_dir))) as tmp:
        try:
            rows, at_start, at_end = soak(args.data_dir, args.seconds, tmp, args.processes, tuple(args.serve_option))
        except outcomes.UnexpectedRefusals as err:
            raise SystemExit(f"soak: {err}") from None
    gens = [under_load(s, e, args.limit_ms) for s, e in zip(at_start, at_end, strict=True)]
    settled = sum(r["settlements"] for r in rows)
    print(f"soak: {args.seconds:g} s of load, {settled:,} settlements answered, no refusals")
    print(table(gens, args.limit_ms))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": args.seconds, "settlements": settled, "limit_ms": args.limit_ms,
                       "serve_options": args.serve_option, "generations": gens, "load_rows": rows}, f, indent=1)
    over = sum(g["pauses_over_limit"] for g in gens)
    if over:
        raise SystemExit(f"soak: {over} collector pauses under load were over {args.limit_ms:g} ms")


if __name__ == "__main__":
    main()
