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

h2load counts an HTTP 200 as a success, and a refused gRPC call is an HTTP
200 whose trailers say otherwise, so the calls are counted from the gateway's
own /metrics instead (``yidi_rpc_duration_seconds_count`` by method and
status, before and after each run): the rate is of calls answered OK, the
refusals are shown beside it by status, and any refusal ends the run with
exit status 1 (bench/outcomes.py).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import outcomes  # noqa: E402
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


def h2load(target: str, path: str, body_file: str, seconds: float, clients: int, streams: int) -> tuple[int, float]:
    """(calls done, seconds h2load took); every one answered over HTTP (gRPC statuses are read from /metrics)."""
    out = subprocess.run(
        ["h2load", "-D", str(int(seconds)), "-c", str(clients), "-m", str(streams), "-d", body_file,
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{target}{path}"], capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if int(done.group(2)) != int(done.group(1)):
        raise RuntimeError(f"h2load: not every call was answered over HTTP:\n{out}")
    took = re.search(r"finished in ([\d.]+)(\w+),", out)
    return int(done.group(1)), float(took.group(1)) / (1000 if took.group(2) == "ms" else 1)


def statuses(metrics_url: str, path: str) -> dict[str, int]:
    """Calls of the RPC at path the gateway has answered, by gRPC status code (its /metrics)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    method = path.lstrip("/").removeprefix("yidi.v1.")
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {s.labels["code"]: int(s.value) for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "yidi_rpc_duration_seconds_count" and s.labels.get("method") == method}


def answered(metrics_url: str, path: str, before: dict[str, int]) -> tuple[int, dict[str, int]]:
    """(calls answered OK, the others by status) since ``before``."""
    after = statuses(metrics_url, path)
    grown = {code: n - before.get(code, 0) for code, n in after.items() if n > before.get(code, 0)}
    return grown.pop("OK", 0), grown


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
        proc, target = start_gateway(args.data_dir, tmp, "--insecure", "--insecure-caller", caller,
                                     "--metrics-listen", "127.0.0.1:0")
        metrics_url = proc.serving[proc.serving.index("metrics") + 1]
        try:
            print("| rpc (h2load) | calls answered OK /s | refused | server CPU µs/call |\n|---|---|---|---|")
            for name, (path, _caller, body) in calls.items():
                body_file = os.path.join(tmp, "body.bin")
                with open(body_file, "wb") as f:
                    f.write(body)
                before = statuses(metrics_url, path)
                h2load(target, path, body_file, 2, 1, 1)  # warm up (and settle the replayed one once)
                warm_ok, refused = answered(metrics_url, path, before)
                outcomes.require_expected(f"h2load {name} warm-up", refused)
                before = statuses(metrics_url, path)
                cpu0 = _cpu_seconds(proc.pid)
                done, took = h2load(target, path, body_file, args.seconds, args.clients, args.streams)
                cpu = _cpu_seconds(proc.pid) - cpu0
                ok, refused = answered(metrics_url, path, before)
                outcomes.require_expected(f"h2load {name}", refused)
                # h2load stops with calls in flight: the gateway may answer up to clients × streams more
                if not warm_ok or not done <= ok <= done + args.clients * args.streams:
                    raise SystemExit(f"h2load {name}: {done} calls done, the gateway answered {ok} OK")
                print(f"| {name} | {done / took:,.0f} | {sum(refused.values())} | {cpu / ok * 1e6:.0f} |")
        except outcomes.UnexpectedRefusals as err:
            raise SystemExit(f"h2load_grpc: {err}") from None
        finally:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
