"""Every settle path answers and records alike, byte for byte.

The engine property test's traffic (tests/settle_traffic.py: admissions, fee uploads, refunds, withdrawals,
discharge and mid-stay settlements, cancellations, outpatient settlements, account adjustments) is sent to
one gateway per path (tests/settle_paths.py: each item through its unary RPC, runs of items as SettleBatch,
as SettleStream, and the batch path with the core's item reader turned off), over real gRPC with mTLS.
An engine in this process decides the same commands first: it is the reference.  For every path:

* every answer is the reference's, byte for byte: the unary answer's bytes, or the refusal's
  google.rpc.Status bytes, its details in canonical form (a batch's and a stream's outcomes are unwrapped,
  not parsed);
* every ledger record is the reference's (seq, kind, caller, request id, digest, key, event body, response)
  and its checksum is the one those bytes give; the ledger's chain verifies under its own key, so equal
  checksums in equal order are equal chains under one key;
* the records' checksums and the answers are those of the recorded run of the code before the batch moved
  into the core (``data/settle_paths.json``, which also holds the steps the property test's strategy drew for
  it: Hypothesis draws the same steps again only within the same session context, so the recorded steps are
  replayed; ``YIDI_RECORD_SETTLE_PATHS=1`` draws and records anew, which is only right when the traffic
  itself was changed on purpose).

Equal to one reference, the paths are equal to each other.  A new path (a later stage of the batch in C)
is one more entry in ``PATHS`` and, if it is sent differently, in ``settle_paths.SENDERS``.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
from hypothesis import Phase, given, settings, strategies as st

from core import Index, YidiError, events
from core.archive import MemoryArchive
from core.engine import Engine
from datagen.spec_fixture import write_spec_dataset
from gateway.store import chain, open_store
from gateway.testing import ledger_key, seal_key
from gateway.transport.convert import encode_reply, request_digest
from gateway.transport.status import status_proto
from settle_paths import SENDERS, Call, call_of, groups, refused
from settle_traffic import Traffic, step

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "settle_paths.json")
EXAMPLES = 120         # sequences of up to 40 steps each
GROUP_MOST = 12        # calls in one batch or stream
# path -> (how its calls are sent, the gateway's extra options)
PATHS = {
    "unary": ("unary", ()),
    "batch": ("batch", ()),
    "stream": ("stream", ()),
}


def drawn_traffic() -> list[list[tuple]]:
    """The step sequences, drawn as the property test draws them (derandomized), to be recorded with the run."""
    drawn: list[list[tuple]] = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, phases=[Phase.generate], deadline=None)
    @given(st.lists(step, min_size=1, max_size=40))
    def collect(steps):
        drawn.append(steps)

    collect()
    return drawn


class Reference:
    """The engine deciding the traffic in this process: each call's answer and each record it makes."""

    def __init__(self, data_dir: str) -> None:
        index = Index()
        index.load_dir(data_dir)
        self.engine = Engine(index, MemoryArchive())
        self.records: list[tuple] = []   # (seq, kind, caller, request_id, digest, key, body, response)

    def run(self, command, call: Call) -> tuple[str, bytes]:
        seq = len(self.records) + 1
        try:
            decision = self.engine.decide(command, seq)
        except YidiError as err:
            return refused(status_proto(err).SerializeToString())
        event, response = decision.event, encode_reply(decision.result)
        body = events.encode(event)
        self.engine.apply(events.decode(body), seq)
        self.engine.archive.replies[seq] = response
        self.records.append((seq, event.kind, call.caller, command.request_id, request_digest(call.request),
                             event.key, body, response))
        return ("ok", response)


RECORDING = os.environ.get("YIDI_RECORD_SETTLE_PATHS") == "1"


def recorded_run() -> dict:
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """(data dir, the steps, the groups of calls to send, the reference's answer to each, its records)."""
    names = write_spec_dataset(tmp_path_factory.mktemp("paths") / "data")
    reference = Reference(names["dir"])
    drawn = drawn_traffic() if RECORDING else recorded_run()["steps"]
    calls, answers = [], []
    for example, steps in enumerate(drawn):
        made = Traffic(names, prefix=f"e{example}-")
        made.sn = 100_000 * example   # fee line numbers unique over all sequences
        for n, (kind, a, b) in enumerate(steps):
            command = made.command(reference.engine, n, kind, a, b)
            if command is not None:
                call = call_of(command)
                calls.append(call)
                answers.append(reference.run(command, call))
    sent, expected = [], []
    position = 0
    for group in groups(calls, GROUP_MOST):
        mine = answers[position:position + len(group)]
        position += len(group)
        # A batchable run ends with a retry of its first settled call: answered as first, recording nothing.
        settled = [i for i, answer in enumerate(mine) if answer[0] == "ok"]
        if group[0].item and settled:
            group, mine = group + [group[settled[0]]], mine + [mine[settled[0]]]
        sent.append(group)
        expected.append(mine)
    return names["dir"], drawn, sent, expected, reference.records


def _short(answer: tuple[str, bytes]) -> str:
    return f"{answer[0]}:{hashlib.blake2b(answer[1], digest_size=8).hexdigest()}"


def _record_tuple(record) -> tuple:
    return (record.seq, record.kind, record.caller, record.request_id, record.digest, record.key, record.body,
            record.response)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_settle_path_answers_and_records_as_the_reference_and_the_recorded_run(traffic, gateways, tmp_path, path):
    data_dir, drawn, sent, expected, reference_records = traffic
    how, options = PATHS[path]
    ledger = str(tmp_path / "ledger.sqlite")
    gw = gateways(data_dir, ledger, *options)
    clients = {caller: gw.client(caller) for caller in {call.caller for group in sent for call in group}}
    answered = []
    for number, (group, want) in enumerate(zip(sent, expected, strict=True)):
        got = SENDERS[how](clients[group[0].caller], group)
        for call, answer, expect in zip(group, got, want, strict=True):
            assert answer == expect, (f"{path}: group {number}, {call.method.rsplit('/', 1)[1]} "
                                      f"{call.request.request_id}: {_short(answer)} where the reference "
                                      f"answered {_short(expect)}")
        answered.extend(got)
    assert gw.stop() == 0
    store = open_store(ledger, seal_key())
    try:
        records = list(store.scan())
    finally:
        store.close()
    chain.verify(ledger, records, ledger_key(ledger))
    assert [_record_tuple(r) for r in records] == reference_records
    assert [r.checksum for r in records] == [chain.checksum(*r[:8]) for r in reference_records]
    recorded = {"records": [r.checksum.hex() for r in records], "answers": [_short(a) for a in answered]}
    if RECORDING and path == "unary":
        with open(GOLDEN, "w", encoding="utf-8") as f:
            json.dump({"steps": drawn, **recorded}, f, separators=(",", ":"))
            f.write("\n")
    golden = recorded_run()
    assert recorded == {k: golden[k] for k in recorded}, f"{path} differs from the recorded run of {GOLDEN}"
