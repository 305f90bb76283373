"""The benchmarks count successes only: refusals by reason beside the rate, and an unexpected one fails the run.

The loads here are real (a gateway on the SPEC fixture over mTLS); what is asserted is counting, never speed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from bench import loadgen, outcomes
from gateway._pb.yidi.v1 import settlement_pb2 as spb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def refused(reason: str) -> spb.SettleOutcome:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="yidi"))
    return spb.SettleOutcome(refused=status_pb2.Status(code=9, message=f"… [{reason}]", details=[detail]))


def test_a_batch_counts_its_settled_items_and_its_refusals_by_reason():
    answers = [spb.SettleOutcome(settlement=spb.SettlementResponse()), refused("DUPLICATE_ADMISSION"),
               spb.SettleOutcome(admitted=spb.AdmitResponse()), refused("OVERLOADED"), refused("DUPLICATE_ADMISSION"),
               spb.SettleOutcome(refused=status_pb2.Status(code=13))]
    settled, refusals = outcomes.batch_tally(spb.SettleBatchResponse(outcomes=answers).outcomes)
    assert settled == 2
    assert refusals == {"DUPLICATE_ADMISSION": 2, "OVERLOADED": 1, "code 13": 1}


def test_only_expected_reasons_pass():
    outcomes.require_expected("x", {"DUPLICATE_ADMISSION": 3, "OVERLOADED": 0}, ("DUPLICATE_ADMISSION",))
    with pytest.raises(outcomes.UnexpectedRefusals) as err:
        outcomes.require_expected("x", {"DUPLICATE_ADMISSION": 3, "UNAUTHENTICATED": 1}, ("DUPLICATE_ADMISSION",))
    assert err.value.unexpected == {"UNAUTHENTICATED": 1} and "no rate" in str(err.value)


@pytest.fixture(scope="module")
def spec_gateway(tmp_path_factory):
    """A gateway on the SPEC fixture with a data set the load's workload can draw from."""
    from datagen import generate

    base = tmp_path_factory.mktemp("loadcount")
    data = str(base / "data")
    generate(data, persons=2000, seed=2026)
    proc, target = loadgen.start_gateway(data, tempfile.mkdtemp(dir=base))
    yield data, proc, target
    proc.terminate()
    proc.wait(60)
    proc.stdout.close()


def test_a_load_counts_only_what_was_answered(spec_gateway):
    data, proc, target = spec_gateway
    row = loadgen.run_load(target, "batch", data, 1, 1, 1.0, server_pid=proc.pid, warmup=0.2,
                           cpu_groups={"gateway": (proc.pid,)})
    assert row["refusals"] == {} and row["settlements"] == row["calls"] * loadgen.BATCH_ITEMS
    assert row["settlements_per_s"] == row["settlements"] / 1.0
    by = row["cpu_us_per_settlement_by"]   # where the CPU went: the named group, the client, the whole machine
    assert by["gateway"] > 0 and by["clients"] > 0 and by["machine"] >= max(by["gateway"], by["clients"])
    assert row["machine_busy_cores"] > 0   # no upper bound: the samples' window is aligned to 50 ms, not exact


def test_a_stream_load_counts_each_outcome_as_a_batch_does(spec_gateway):
    data, proc, target = spec_gateway
    row = loadgen.run_load(target, "stream", data, 1, 1, 1.0, server_pid=proc.pid, warmup=0.2)
    assert row["calls"] >= 1 and row["refusals"] == {}
    assert row["settlements"] == row["calls"] * loadgen.BATCH_ITEMS and row["server_cpu_us_per_settlement"] > 0


@pytest.fixture(scope="module")
def one_at_a_time(spec_gateway, tmp_path_factory):
    """A gateway that admits one Yidi call at a time: eight settlements in flight meet OVERLOADED, which stands
    for any refusal a closed loop does not expect."""
    data, _proc, _target = spec_gateway
    proc, target = loadgen.start_gateway(data, str(tmp_path_factory.mktemp("one")), "--max-concurrent-rpcs", "1")
    yield data, target
    proc.terminate()
    proc.wait(60)
    proc.stdout.close()


def test_a_load_of_refusals_fails_instead_of_reporting_a_rate(one_at_a_time):
    data, target = one_at_a_time
    with pytest.raises(outcomes.UnexpectedRefusals) as err:
        loadgen.run_load(target, "outpatient", data, 1, 8, 1.0, warmup=0.1)
    assert set(err.value.unexpected) == {"OVERLOADED"}
    row = loadgen.run_load(target, "outpatient", data, 1, 8, 1.0, warmup=0.1, expected=("OVERLOADED",))
    assert row["refusals"]["OVERLOADED"] > 0 and row["calls"] == row["settlements"]


def test_the_command_exits_non_zero_on_an_unexpected_refusal(one_at_a_time):
    data, target = one_at_a_time
    run = subprocess.run([sys.executable, "bench/loadgen.py", "--target", target, "--data-dir", data,
                          "--rpcs", "outpatient", "--seconds", "1", "--processes", "1", "--concurrency", "8"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "unexpected refusals {'OVERLOADED'" in run.stderr, run.stderr[-2000:]
    assert "| outpatient |" not in run.stdout


def test_batches_for_a_routing_client_are_each_of_one_partitions_insured(spec_gateway):
    """bench/partitions.py sends a routed batch to the owner of its items' partition: every item's person must be
    insured in the partition the batch names (else the owner would forward half of it on)."""
    from core.partition import PartitionMap
    from datagen.workload import Workload

    data = spec_gateway[0]
    workload = Workload(data, seed=7, persons=100_000)   # loadgen's draws (the same seed)
    insured = {case.psn_no: case.insured_province for case in (workload.outpatient() for _ in range(2500))}
    pmap, parts = PartitionMap(2), set()
    for _, make in loadgen._requests("batch", data, 7, 200, partitions=2):
        batch = spb.SettleBatchRequest.FromString(make(0))
        part = pmap.of_province(make.insured_province)
        assert {pmap.of_province(insured[item.outpatient.psn_no]) for item in batch.items} == {part}
        parts.add(part)
    assert parts == {0, 1}
