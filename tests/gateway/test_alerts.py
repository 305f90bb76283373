"""The Prometheus alerting rules in deploy/prometheus/: valid (`promtool check rules`) and doing what they
say on made-up series (`promtool test rules`). That every metric they name is one the gateway exports is
checked against a real gateway's /metrics in tests/gateway/test_gateway_metrics.py."""
from __future__ import annotations

import os
import re
import subprocess

from external_tools import need
from gateway_harness import ROOT

RULES = os.path.join(ROOT, "deploy", "prometheus", "yidi-alerts.yml")
RULE_TESTS = os.path.join(ROOT, "deploy", "prometheus", "yidi-alerts.test.yml")
HOW = "make setup extracts it from Debian's prometheus package into build/tools/bin"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([need("promtool", HOW), *args], cwd=os.path.dirname(RULES), capture_output=True,
                          text=True, timeout=120)


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def rule_metrics() -> set[str]:
    """Every yidi_ metric the rules name, in expressions or annotations (a histogram's or counter's by family)."""
    with open(RULES, encoding="utf-8") as f:
        names = set(re.findall(r"\b(yidi_[a-z_]+)", f.read()))
    return {re.sub(r"_(bucket|total)$", "", n) for n in names}


def test_the_rules_cover_what_an_operator_must_hear_of():
    with open(RULES, encoding="utf-8") as f:
        alerts = re.findall(r"- alert: (\w+)", f.read())
    assert alerts == ["YidiGatewayDown", "YidiNotServing", "YidiStorageUnavailable", "YidiNoSyncStandby",
                      "YidiReplicationLagging", "YidiOwnerUnavailable", "YidiInternalErrors",
                      "YidiLongGcPauses", "YidiPrepaidYellow", "YidiPrepaidRed", "YidiPrepaidExhausted"]
    assert {"yidi_serving", "yidi_storage_writable", "yidi_gc_pause_seconds", "yidi_prepaid_level",
            "yidi_pg_standbys", "yidi_forwarded_calls"} <= rule_metrics()
