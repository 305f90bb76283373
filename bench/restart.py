"""Restart time and memory against the length of the ledger, with and without a snapshot.

    python bench/restart.py --data-dir data/national [--records 10000 100000 1000000]

Builds ledgers of N outpatient settlement records (realistic cases from
datagen.workload, decided by the real engine and written as the gateway
writes them: event, reply and archive changes in one record), a snapshot at
their end, and then starts the real gateway (``python -m gateway serve``) on
an empty ledger and on each ledger without and with its snapshot, timing
start to SERVING and reading the process's resident memory (VmRSS) when it
serves.  Target (issue "Reshape the house"): with a snapshot, restart time and
RSS with 10^6 records within 20% of an empty ledger's.

Writes bench/results/restart.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from the repo root or elsewhere

from core import Index, events  # noqa: E402
from core import commands as cmd  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.errors import YidiError  # noqa: E402
from datagen.workload import Workload  # noqa: E402
from gateway.store import snapshot  # noqa: E402
from gateway.transport.convert import encode_reply  # noqa: E402
from gateway.store import Record, SqliteStore  # noqa: E402
from gateway.testing import dev_certs, seal_key  # noqa: E402

COMMIT_RECORDS = 5000


class Discard:
    """An archive that keeps nothing in memory (the store keeps the rows): settlements never read it."""

    def visit(self, _mdtrt_id):
        return None

    def settlement(self, _setl_id):
        return None

    def problem(self, _problem_id):
        return None

    def reply(self, _seq):
        return None

    def record(self, _changes, _seq) -> None:
        pass


def build_ledgers(data_dir: str, counts: list[int], workdir: str) -> dict[int, str]:
    """One ledger (with a snapshot at its end) per count, each a prefix of the next."""
    index = Index()
    index.load_dir(data_dir)
    engine = Engine(index, Discard())
    workload = Workload(data_dir, seed=7)
    path = os.path.join(workdir, "building.sqlite")
    store = SqliteStore(path, seal_key())
    out, seq, n = {}, 0, 0
    for target in sorted(counts):
        batch: list[Record] = []
        while n < target:
            case = workload.outpatient()
            request_id = f"{case.treatment_province}-{workload.date}-{n:09d}"
            command = cmd.OutpatientSettle(request_id=request_id, person=cmd.PersonId(psn_no=case.psn_no),
                                           fixmedins_code=case.fixmedins_code, setl_date=workload.date,
                                           lines=case.lines)
            try:
                decision = engine.decide(command, seq + 1)
            except YidiError:
                continue  # an annual cap or a rare refusal: draw another case
            seq += 1
            n += 1
            changes = engine.apply(decision.event, seq)
            batch.append(Record(kind=decision.event.kind, caller=case.treatment_province, request_id=request_id,
                                digest=seq.to_bytes(16, "big"), key=decision.event.key,
                                body=events.encode(decision.event), response=encode_reply(decision.result),
                                seq=seq, changes=tuple(changes)))
            if len(batch) == COMMIT_RECORDS:
                store.append(batch)
                batch = []
        store.append(batch)
        store.pragma("wal_checkpoint(TRUNCATE)")
        ledger = os.path.join(workdir, f"ledger-{target}.sqlite")
        shutil.copy(path, ledger)
        blob = snapshot.seal(seq, snapshot.encode(seq, data_dir, engine.export_state()), store.chain_at(seq), store.key)
        snapshot.Snapshots(ledger + ".snapshots").write(blob, seq)
        out[target] = ledger
        print(f"built {target:,} records ({os.path.getsize(ledger) / 1e6:.0f} MB, snapshot "
              f"{len(blob) / 1e6:.1f} MB)", file=sys.stderr)
    store.close()
    return out


def restart(data_dir: str, ledger: str, snapshots: str) -> tuple[float, int, float]:
    """Seconds from start to SERVING, VmRSS (bytes) then, and seconds from start until the background
    verification of the whole ledger (gateway/store/sqlite/verify.py) says OK."""
    start = time.monotonic()
    log = ledger + ".restart.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--data-dir", data_dir, "--ledger", ledger,
             "--snapshots", snapshots, "--listen", "127.0.0.1:0", "--seal-key", dev_certs().seal_key],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    try:
        for line in proc.stdout:
            if line.startswith(b"SERVING "):
                elapsed = time.monotonic() - start
                with open(f"/proc/{proc.pid}/status") as f:
                    rss = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:"))
                return elapsed, rss, _verified_s(log, start)
        raise RuntimeError(f"gateway exited with {proc.wait()} before SERVING")
    finally:
        proc.terminate()
        proc.wait(60)
        proc.stdout.close()


def _verified_s(log: str, start: float, timeout_s: float = 600) -> float:
    """Seconds from ``start`` until the gateway logs that its ledger is verified (it logs it once)."""
    while time.monotonic() - start < timeout_s:
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if "ledger verified in" in text:
            return time.monotonic() - start
        if "ledger damaged" in text:
            raise RuntimeError(f"the background verification failed: {text[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("the background verification did not end")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--repeat", type=int, default=2, help="restarts per case (the minimum is reported)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "restart.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.data_dir))) as workdir:
        ledgers = build_ledgers(args.data_dir, args.records, workdir)
        empty = os.path.join(workdir, "empty.sqlite")
        SqliteStore(empty, seal_key()).close()
        cases = [("empty", 0, empty, False)]
        cases += [(f"{n:,} records", n, ledgers[n], False) for n in sorted(ledgers)]
        cases += [(f"{n:,} records + snapshot", n, ledgers[n], True) for n in sorted(ledgers)]
        rows = []
        for label, n, ledger, with_snapshot in cases:
            snaps = ledger + ".snapshots" if with_snapshot else os.path.join(workdir, "none")
            runs = [restart(args.data_dir, ledger, snaps) for _ in range(args.repeat)]
            rows.append({"case": label, "records": n, "snapshot": with_snapshot,
                         "serving_s": min(r[0] for r in runs), "rss_bytes": min(r[1] for r in runs),
                         "verified_s": min(r[2] for r in runs)})
            print(f"{label}: {rows[-1]['serving_s']:.1f} s, {rows[-1]['rss_bytes'] / 2**20:.0f} MiB, whole ledger "
                  f"verified at {rows[-1]['verified_s']:.1f} s", file=sys.stderr)
    base = rows[0]
    print("| ledger | start to SERVING | vs empty | RSS | vs empty | whole ledger verified (background) |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['serving_s']:.1f} s | {r['serving_s'] / base['serving_s']:.2f}× | "
              f"{r['rss_bytes'] / 2**20:,.0f} MiB | {r['rss_bytes'] / base['rss_bytes']:.2f}× | "
              f"{r['verified_s']:.1f} s after start |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"data_dir": args.data_dir, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
