"""Unary capacity driven by h2load (nghttp2's C load generator), which costs far less CPU per call than a
Python client, so the server, not the client, is what is measured.

    python bench/h2load_grpc.py --data-dir data/national [--seconds 10] [--clients 4] [--streams 16]

h2load speaks gRPC when it sends a pre-framed request body (1 byte "not
compressed", 4 bytes length, the message) with ``content-type:
application/grpc`` and ``te: trailers``.  It sends the same body every time,
so it can drive the empty RPC (Ping) and the replay of one settlement (its
answer comes from the idempotency path: a read, not a settlement); fresh
settlements, which need a new request_id each, are measured by
bench/loadgen.py.  Needs the Debian package nghttp2-client.

h2load cannot present a client certificate, so this starts the gateway with
a plaintext loopback listener whose one caller is named by the server's own
option (``--insecure --insecure-caller PROVINCE``, for benchmarks only),
never by a header: it measures the server without TLS.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.loadgen import _cpu_seconds, start_gateway  # noqa: E402


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def bodies(data_dir: str) -> dict[str, tuple[str, str, bytes]]:
    """name -> (path, caller, framed body)."""
    from datagen.workload import Workload
    from gateway._pb.yidi.v1 import common_pb2 as pb, diagnostics_pb2 as dpb, settlement_pb2 as spb

    case = Workload(data_dir, seed=5, persons=20_000).outpatient()
    settle = spb.OutpatientSettleRequest(
        request_id="h2load-replay", psn_no=case.psn_no, fixmedins_code=case.fixmedins_code, setl_date=20261120,
        lines=[pb.FeeLine(feedetl_sn=x.feedetl_sn, code=x.code, unit_price_fen=x.unit_price_fen,
                          qty_milli=x.qty_milli) for x in case.lines])
    return {
        "ping": ("/yidi.v1.DiagnosticsService/Ping", "460000", framed(dpb.PingRequest().SerializeToString())),
        "outpatient replay": ("/yidi.v1.SettlementService/OutpatientSettle", case.treatment_province,
                              framed(settle.SerializeToString())),
    }


def h2load(target: str, path: str, body_file: str, seconds: float, clients: int,
           streams: int) -> float:
    out = subprocess.run(
        ["h2load", "-D", str(int(seconds)), "-c", str(clients), "-m", str(streams), "-d", body_file,
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{target}{path}"], capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if int(done.group(2)) != int(done.group(1)):
        raise RuntimeError(f"h2load: not every call succeeded:\n{out}")
    return float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "national"))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--streams", type=int, default=16, help="concurrent streams per connection")
    args = p.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.data_dir))) as tmp:
        calls = bodies(args.data_dir)
        caller = calls["outpatient replay"][1]   # Ping is open to every caller
        proc, target = start_gateway(args.data_dir, tmp, "--insecure", "--insecure-caller", caller)
        try:
            print("| rpc (h2load) | calls/s | server CPU µs/call |\n|---|---|---|")
            for name, (path, _caller, body) in calls.items():
                body_file = os.path.join(tmp, "body.bin")
                with open(body_file, "wb") as f:
                    f.write(body)
                h2load(target, path, body_file, 2, 1, 1)  # warm up (and settle the replayed one once)
                cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
                rate = h2load(target, path, body_file, args.seconds, args.clients, args.streams)
                cpu = (_cpu_seconds(proc.pid) - cpu0) / (rate * (time.monotonic() - t0)) * 1e6
                print(f"| {name} | {rate:,.0f} | {cpu:.0f} |")
        finally:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
