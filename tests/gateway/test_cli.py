"""`yidi` against a real gateway over mTLS: who the CLI says it is."""
from __future__ import annotations

import os
import subprocess
import sys

from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import admin_pb2
from gateway_harness import ROOT


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_command_that_calls_the_gateway_needs_a_caller(tmp_path, gateways):
    """Issue 13 item 11d: without --caller the CLI presented the national operator's certificate, the most
    privileged identity (`yidi snapshot` wrote a snapshot).  Now it names the missing option and calls nothing."""
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"))
    env = {k: v for k, v in os.environ.items() if k not in ("YIDI_CALLER", "YIDI_CERT", "YIDI_KEY")}
    env.update(YIDI_TARGET=gw.target, YIDI_CERTS=gw.certs.directory)
    for args in (["snapshot"], ["status"], ["health"], ["positions"], ["accum", "--psn-no", "P1"]):
        run = cli(env, *args)
        assert run.returncode != 0 and run.stdout == "", (args, run.stdout)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "--caller" in lines[0], (args, run.stderr)
    national = gw.client("national")
    status = national(national.admin.GetReferenceDataStatus, admin_pb2.GetReferenceDataStatusRequest())
    assert status.snapshot_seq == 0  # no snapshot was taken in anyone's name
    # Named by the option, the environment or a certificate of one's own, the caller is who it says.
    shown = cli(env, "--caller", "national", "status")
    assert shown.returncode == 0 and shown.stdout.rstrip().endswith("node: single"), shown.stdout
    # status --store reads a PostgreSQL ledger's leases (no caller, no gateway); a SQLite ledger has none
    run = cli(env, "status", "--store", str(tmp_path / "ledger.sqlite"))
    assert run.returncode != 0 and "is not a postgresql:// URL" in run.stderr, run.stderr
    assert cli(dict(env, YIDI_CALLER="460000"), "health").returncode == 0
    run = cli(env, "--cert", gw.certs.client_cert("460000"), "--key", gw.certs.client_key("460000"), "snapshot")
    assert run.returncode != 0 and "PERMISSION_DENIED" in run.stderr  # 海南's certificate, not the operator's
    run = cli(env, "--cert", gw.certs.client_cert("460000"), "status")
    assert run.returncode != 0 and run.stderr.strip().splitlines() == ["yidi: --cert needs --key (the client "
                                                                       "certificate's private key)"]
    # Commands that call no gateway need no caller.
    assert cli(env, "certs", "--out", str(tmp_path / "certs")).returncode == 0
