"""The core's outpatient settle loop (core/settle.pxi) settles exactly as the engine's Python path.

Random runs of outpatient settlements — some that must be refused (a person never filed, an institution of
another province, a negative price, a repeated line number), some the loop leaves to the Python path
(a chronic-disease visit, a refund line) — go through two engines on the same data: one decides each with
``Engine.perform`` as today, the other hands each run to ``settle_outpatients``, deciding on the Python path
only what the loop hands back.  Every record (event body, answer bytes, archive changes) and the state
after each run (accumulators, balances, clearing months, positions, same-day counts) are equal; the loop
settles every plain item itself and hands back every other one without changing anything.
"""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core import Index, YidiError, events
from core import commands as cmd
from core._core import on_site_sample, plain_outpatient, settle_outpatients
from core.archive import MemoryArchive
from core.engine import Engine
from core.events import FeeLine
from datagen.spec_fixture import PERSONS as SPEC_PERSONS, write_spec_dataset
from settle_traffic import ACCOUNTS, CODES, PERSONS, fee_line

item = st.tuples(
    st.sampled_from(PERSONS + ACCOUNTS + ("unfiled",)),
    st.lists(fee_line, min_size=1, max_size=3),
    st.sampled_from(("plain", "plain", "plain", "negative_price", "repeated_sn", "chronic", "refund", "card")),
    st.booleans(), st.booleans())


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    return write_spec_dataset(tmp_path_factory.mktemp("settle") / "data")


def engine_of(names) -> Engine:
    index = Index()
    index.load_dir(names["dir"])
    return Engine(index, MemoryArchive())


def command_of(names, n: int, spec) -> cmd.OutpatientSettle:
    who, lines, how, own, family = spec
    lines = [FeeLine(f"{n}-{i}", code, "", price, qty, 20260320) for i, (code, price, qty) in enumerate(lines)]
    fields = {}
    if how == "negative_price":
        lines[0] = msgspec.structs.replace(lines[0], unit_price_fen=-1)
    elif how == "repeated_sn" and len(lines) > 1:
        lines[1] = msgspec.structs.replace(lines[1], feedetl_sn=lines[0].feedetl_sn)
    elif how == "chronic":
        fields = {"med_type": "chronic", "dise_codg": "M01600"}
    elif how == "refund":
        lines.append(FeeLine(f"{n}-r", lines[0].code, "", lines[0].unit_price_fen, -1, 20260320, lines[0].feedetl_sn))
    elif how == "card" and who in SPEC_PERSONS:   # the person's own card (another's is refused)
        person = SPEC_PERSONS[who] if n % 2 else SPEC_PERSONS["retired"]
        fields = {"card": cmd.Card(card_no=person["card_no"], card_version=person["card_version"])}
    return cmd.OutpatientSettle(request_id=f"o{n}", person=cmd.PersonId(psn_no=names["psn"][who]),
                                fixmedins_code=names["inst"]["hk_l1"], setl_date=20260320, lines=tuple(lines),
                                acct_used_flag=own, acct_mulaid_flag=family, **fields)


def state_of(engine: Engine, names) -> bytes:
    psn_nos = sorted(names["psn"].values())
    return msgspec.msgpack.encode((
        [engine.index.accumulators(p, 2026) for p in psn_nos], [engine.accounts.balance(p) for p in psn_nos],
        engine.funds.export(), sorted(engine.archive.visits.items()), sorted(engine.archive.settlements.items())))


def python_record(engine: Engine, command, seq: int):
    try:
        decision, changes = engine.perform(command, seq)
    except YidiError as err:
        return err.reason
    return ("settled", decision.event.key, events.encode(decision.event), decision.result.data, tuple(changes))


def core_record(record: dict) -> tuple:
    return (record["kind"], record["key"], record["body"], record["response"], record["changes"])


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(item, min_size=1, max_size=6), min_size=1, max_size=6))
def test_the_settle_loop_settles_as_the_python_path(names, runs):
    python, core = engine_of(names), engine_of(names)
    seq = n = 0   # the last record, the same on both engines after each run
    for run in runs:
        commands = [command_of(names, n + i, spec) for i, spec in enumerate(run)]
        n += len(commands)
        expected, at = [], seq
        for command in commands:   # today's path
            expected.append(python_record(python, command, at + 1))
            at += isinstance(expected[-1], tuple)
        got, pending, in_core = [], list(commands), 0
        while pending:   # the loop, with what it hands back decided on the Python path
            plain = 0
            while plain < len(pending) and plain_outpatient(pending[plain]):
                plain += 1
            settled = settle_outpatients(core, "460000", [(c, b"\0" * 16) for c in pending[:plain]], seq + 1,
                                         True, lambda c: None, dict)
            got.extend(core_record(r) for r in settled)
            seq += len(settled)
            in_core += len(settled)
            pending = pending[len(settled):]
            if pending:
                got.append(python_record(core, pending.pop(0), seq + 1))
                seq += isinstance(got[-1], tuple)
        assert got == expected
        # the loop settled every plain item that was settled, and handed back every other one
        assert in_core == sum(isinstance(r, tuple) and plain_outpatient(c) for c, r in zip(commands, expected, strict=True))
        assert state_of(core, names) == state_of(python, names)


def test_the_loop_takes_plain_items_and_hands_back_the_rest(names):
    engine = engine_of(names)
    plain = command_of(names, 1, ("acct", [(CODES[0], 1250, 2000)], "plain", True, True))
    refused = command_of(names, 2, ("unfiled", [(CODES[0], 1250, 2000)], "plain", False, False))
    before = state_of(engine, names)
    assert settle_outpatients(engine, "460000", [(refused, b"d"), (plain, b"d")], 1, False, lambda c: None, dict) == []
    assert state_of(engine, names) == before   # handed back untouched
    records = settle_outpatients(engine, "460000", [(plain, b"d"), (refused, b"d")], 1, False, lambda c: None, dict)
    assert [r["key"] for r in records] == ["S000000000000001"] and records[0]["request_id"] == "o1"
    assert not plain_outpatient(command_of(names, 3, ("acct", [(CODES[0], 1, 1)], "chronic", False, False)))
    assert not plain_outpatient(command_of(names, 4, ("acct", [(CODES[0], 1, 1)], "refund", False, False)))

    def deny(_command):
        raise YidiError("PERMISSION_DENIED", caller="440000", action="办理该机构的结算")

    again = command_of(names, 5, ("acct", [(CODES[0], 1250, 2000)], "plain", False, False))
    assert settle_outpatients(engine, "460000", [(again, b"d")], 2, False, deny, dict) == []


def test_the_loop_settles_only_what_the_caller_may_settle(names):
    """With ``authorize``, an item the OutpatientSettle rule (core/access.py) refuses the caller is handed back
    untouched, before its decision: at an institution of another province, at an unknown one, or from a caller
    that is no province; the institution's own province settles it."""
    from core.access import authorize

    engine = engine_of(names)
    plain = command_of(names, 1, ("acct", [(CODES[0], 1250, 2000)], "plain", False, False))   # at hk_l1, Hainan
    elsewhere = msgspec.structs.replace(plain, fixmedins_code=names["inst"]["gz_l3"])           # Guangdong
    unknown = msgspec.structs.replace(plain, fixmedins_code="H46019999999")
    before = state_of(engine, names)
    refused = [("440000", plain), ("national", plain), ("046000", plain), ("46000", plain), ("4600000", plain),
               ("", plain), ("460000", elsewhere), ("460000", unknown)]
    for caller, command in refused:
        with pytest.raises(YidiError):
            authorize("SettlementService/OutpatientSettle", caller, command, engine.owners)
        assert settle_outpatients(engine, caller, [(command, b"d")], 1, True, lambda c: None, dict) == []
    assert state_of(engine, names) == before
    authorize("SettlementService/OutpatientSettle", "460000", plain, engine.owners)
    records = settle_outpatients(engine, "460000", [(plain, b"d"), (elsewhere, b"d")], 1, True, lambda c: None, dict)
    assert [r["request_id"] for r in records] == ["o1"]   # and stops before the item of another province


def test_records_are_the_ones_their_class_makes(names):
    """A slotted dataclass's records (gateway/store/parts.Record) are filled slot by slot: equal to the class's own,
    defaults included; any other maker is called with the fields."""
    from gateway.store.parts import Record

    batch = [(command_of(names, n, ("acct", [(CODES[0], 1250, 2000)], "plain", True, False)), b"d") for n in (1, 2)]
    made = settle_outpatients(engine_of(names), "460000", batch, 7, False, lambda c: None, Record)
    fields = settle_outpatients(engine_of(names), "460000", batch, 7, False, lambda c: None, dict)
    assert made == [Record(**f) for f in fields]
    assert [(r.key, r.seq, r.checksum, r.chain) for r in made] == [("S000000000000007", 7, b"", b""),
                                                                   ("S000000000000008", 8, b"", b"")]


def test_the_loop_samples_for_on_site_checks_as_funds_does():
    """The loop's keyed BLAKE2b (ledger.pxi's, from a state keyed once) picks the settlements funds.on_site_check
    picks."""
    from core.funds import on_site_check

    ids = [f"S{n:015d}" for n in range(1, 5001)] + ["S1", "结算"]
    assert [on_site_sample(i) for i in ids] == [on_site_check(i) for i in ids]
    assert 900 < sum(on_site_sample(i) for i in ids) < 1100   # both about a fifth, not both never


def test_a_failure_while_applying_is_apply_failed(names):
    """As Engine.perform: once an item is being applied, a failure is ApplyFailed naming its event (the gateway
    then stops: memory may differ from the ledger)."""
    from core.engine import ApplyFailed

    class Unwritable(MemoryArchive):
        def record(self, changes, seq) -> None:
            raise OSError("the archive cannot be written")

    engine = engine_of(names)
    engine.archive = Unwritable()
    plain = command_of(names, 1, ("acct", [(CODES[0], 1250, 2000)], "plain", False, False))
    with pytest.raises(ApplyFailed) as failed:
        settle_outpatients(engine, "460000", [(plain, b"d")], 1, False, lambda c: None, dict)
    assert failed.value.event.settlement.setl_id == "S000000000000001"
    assert isinstance(failed.value.__cause__, OSError)
