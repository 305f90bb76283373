"""Every code block of the README runs in CI, as written, against a real gateway.

The gateway serves a small data set from the same generator and seed as
`make run` (the demo entities and catalogue codes do not depend on size).
A block is marked `<!-- name:start -->` ... `<!-- name:end -->` and run by the
test of that name below; a block shown for reading only (a diagram, sample
output) is a ```text block, and the sample output is checked against the run.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from datagen import generate
from external_tools import need
from gateway_harness import ROOT

# The marked blocks, each run by a test of this module.
RUN = ("newcomer", "verify-ledger", "walkthrough", "national", "month-end", "protoc", "client", "buf-curl")


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def walkthrough(name: str = "walkthrough") -> str:
    block = re.search(rf"<!-- {name}:start -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", readme(), re.S)
    assert block, f"README lost its {name} block"
    return block.group(1)


def test_every_code_block_is_run_or_only_shown():
    text = readme()
    marked = {m.start(): m.group(1) for m in re.finditer(r"<!-- ([\w-]+):start -->\n```", text)}
    fences = [m for m in re.finditer(r"^```(\w*)\n.*?^```$", text, re.S | re.M)]
    assert len(fences) >= len(RUN) + 2
    for fence in fences:
        name = next((n for at, n in marked.items() if text.startswith(f"<!-- {n}:start -->\n", at)
                     and at + len(f"<!-- {n}:start -->\n") == fence.start()), None)
        language = fence.group(1)
        assert name in RUN or language == "text", \
            f"README block at line {text[:fence.start()].count(chr(10)) + 1} ({language or 'no language'}) is neither " \
            f"run by a test nor marked text: {fence.group(0)[:80]!r}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, module_gateways):
    base = tmp_path_factory.mktemp("readme")
    generate(str(base / "data"), persons=2000, seed=2026)
    DATA["dir"] = str(base / "data")
    return module_gateways(base / "data", base / "ledger.sqlite")


RAN: set[str] = set()   # blocks already run against the module's gateway
DATA: dict[str, str] = {}


def cli_env(gateway, tmp_path) -> dict:
    # Over TLS: the gateway takes only clients with a certificate of its CA; `yidi --caller X` presents
    # X's development certificate from YIDI_CERTS, as it does from certs/dev after `make setup`.
    assert not gateway.insecure
    return dict(os.environ, YIDI_TARGET=gateway.target, YIDI_CERTS=gateway.certs.directory, TMPDIR=str(tmp_path),
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


def test_readme_walkthrough_runs_as_shown(gateway, tmp_path):
    env = cli_env(gateway, tmp_path)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    RAN.add("walkthrough")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    # "What you see" is true: each line shown (but "...") is a line of the run.
    shown = re.search(r"What you see.*?```text\n(.*?)```", readme(), re.S).group(1).splitlines()
    printed = set((run.stdout + run.stderr).splitlines())
    assert [line for line in shown if line.strip() != "..." and line not in printed] == []
    assert "persons 2,000" in out and "seed 2026" in out
    assert "filing BA210000009001: retired_relocation to 460000" in out
    assert re.search(r"retry answered with the same settlement S\d{15}", out)
    assert "cancelled on 20261121" in out
    assert "北京协和医院" in out and "海南椰岛大药房" in out
    # Every settlement's parts add up: fund + cash = total, printed from integer fen.
    for total, fund, cash in re.findall(
            r"medfee_sumamt 医疗费总额\s+(¥[\d,.]+).*?fund_pay_sumamt 基金支付合计\s+(¥[\d,.]+)\s+"
            r"psn_cash_pay 个人现金支付\s+(¥[\d,.]+)", out, re.S):
        fen = [int(x.strip("¥").replace(",", "").replace(".", "")) for x in (total, fund, cash)]
        assert fen[0] == fen[1] + fen[2]
    assert "NOT_FILED_FOR_DESTINATION" in run.stderr and "北京市市辖区" in run.stderr


def test_readme_month_end_block_runs_after_the_walkthrough(gateway, tmp_path):
    """Month-end operations, on the state the walk-through left (its filings and settlements in November)."""
    env = cli_env(gateway, tmp_path)
    script = walkthrough("month-end") if "walkthrough" in RAN else walkthrough() + walkthrough("month-end")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "黑龙江省" in out and "clearing month 202611: closed" in out
    assert "cancellation booked in 202612" in out and "sum of net positions ¥0.00" in out
    assert "confirmed by 460000" in out and "P46010000001" in out
    assert "amount_dispute" in out and "海口市医保局 王工" in out
    assert os.path.getsize(tmp_path / "yidi-202611" / "clearing-202611-flows.png") > 10_000


def test_readme_national_block_a_chronic_visit_paid_partly_by_the_account(gateway, tmp_path):
    """SPEC §10: a chronic-disease visit by electronic voucher, the personal account paying, and its explanation."""
    env = dict(cli_env(gateway, tmp_path), YIDI_DATA=DATA["dir"])
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough("national")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "personal account 个人账户 of 2100000000000001: balance ¥1,500.00" in out
    assert "H46010000001  海南省人民医院" in out and "M01600" in out
    assert "门诊慢特病 chronic disease M01600" in out
    paid = re.search(r"acct_pay 个人账户支付\s+¥([\d,.]+)", out)
    left = re.search(r"balc 个人账户余额\s+¥([\d,.]+)", out)
    assert paid and left
    paid_fen, left_fen = (int(m.group(1).replace(",", "").replace(".", "")) for m in (paid, left))
    assert paid_fen > 0 and paid_fen + left_fen == 150000
    total, fund, cash = (int(re.search(rf"{k}\s+¥([\d,.]+)", out).group(1).replace(",", "").replace(".", ""))
                         for k in ("medfee_sumamt 医疗费总额", "fund_pay_sumamt 基金支付合计", "psn_cash_pay 个人现金支付"))
    assert total == fund + cash + paid_fen
    assert "settlement S" in out and "explained (结算说明)" in out and "equal to the recorded amounts" in out
    assert f"balance ¥{left_fen // 100:,}.{left_fen % 100:02d}" in out.splitlines()[-1]


def test_readme_client_blocks_compile_the_protos_and_settle_over_mtls(gateway, tmp_path):
    """The protoc command, then the Python client written against its stubs alone."""
    env = cli_env(gateway, tmp_path)
    made = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough("protoc")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "settlement_pb2_grpc.py" in made.stdout
    run = subprocess.run([sys.executable, "-c", walkthrough("client")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert re.search(r"^settled S\d{15} total 7000 fund \d+ cash \d+$", out, re.M), out
    assert 'FAILED_PRECONDITION ErrorInfo reason: "NOT_FILED_FOR_DESTINATION"' in out
    assert "FAILED_PRECONDITION LocalizedMessage locale: \"en-US\"" in out
    assert "INVALID_ARGUMENT BadRequest field_violations {" in out and 'field: "setl_date"' in out


def test_readme_buf_curl_lists_and_calls_by_reflection(gateway, tmp_path):
    need("buf", "make setup runs npm ci in tools/")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough("buf-curl")], cwd=ROOT,
                         env=cli_env(gateway, tmp_path), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "yidi.v1.SettlementService/OutpatientSettle" in run.stdout
    assert re.search(r'"persons": "\d+"', run.stdout), run.stdout[-2000:]


def test_readme_newcomer_make_run_serves(tmp_path):
    """`make run`, the first newcomer command, run as written on a small data set (the Makefile's PERSONS,
    DATA and LISTEN come from the environment); the second, `make test`, is what CI runs (.ci/run). Then
    `yidi verify-ledger` on the ledger it left."""
    lines = [line.split("#")[0].strip() for line in walkthrough("newcomer").splitlines()]
    assert lines == ["make run", "make test"]
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert f.read().rstrip().endswith("make test")
    env = dict(os.environ, PERSONS="2000", DATA=str(tmp_path / "data"), LISTEN="127.0.0.1:0", MAKEFLAGS="")
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(["bash", "-c", lines[0]], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
                                text=True, start_new_session=True)
    try:
        deadline, serving = time.monotonic() + 240, ""
        while time.monotonic() < deadline and not serving:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            serving = line if line.startswith("SERVING ") else ""
        assert serving.startswith("SERVING 127.0.0.1:"), (tmp_path / "run.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        proc.stdout.close()
    # The offline check of the ledger `make run` left (beside its data set), as the README shows it.
    verified = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough("verify-ledger")], cwd=ROOT,
                              env=dict(os.environ, YIDI_LEDGER=str(tmp_path / "yidi-ledger.sqlite")),
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout + verified.stderr
