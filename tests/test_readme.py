"""The README's CLI walk-through, run as written against a real gateway.

The gateway serves a small data set from the same generator and seed as
`make run` (the demo entities and catalogue codes do not depend on size).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from datagen import generate
from gateway_harness import ROOT, start_gateway


def walkthrough(name: str = "walkthrough") -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(rf"<!-- {name}:start -->\n```sh\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert block, f"README lost its {name} block"
    return block.group(1)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    generate(str(base / "data"), persons=2000, seed=2026)
    server = start_gateway(str(base / "data"), str(base / "ledger.sqlite"))
    DATA["dir"] = str(base / "data")
    yield server
    assert server.stop() == 0


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
