"""The engine as parts of the domain: each command and each event has exactly one part that handles it, and
what the gateway used to decide itself (a reversal's target, a reload's event) is the core's."""
from __future__ import annotations

import pytest

from core import Index, YidiError
from core import commands as cmd
from core.engine import Engine
from core.events import (
    EVENT_TYPES, Admitted, Breakdown, FilingChanged, Filing, RequestReversed, Settled, SettlementFacts, VisitFacts,
)
from core.settlement import check_reversal, reversal
from datagen.spec_fixture import write_spec_dataset


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    index = Index()
    index.load_dir(write_spec_dataset(tmp_path_factory.mktemp("parts") / "data")["dir"])
    return Engine(index)


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_every_command_has_one_part_that_decides_it(engine):
    # LoadReferenceData needs a newly loaded index first: the gateway loads it and Engine.reloaded takes over
    assert set(engine._decide) == _subclasses(cmd.Command) - {cmd.LoadReferenceData}


def test_every_event_has_one_part_that_applies_it(engine):
    assert set(engine._apply) == set(EVENT_TYPES)


def test_a_type_claimed_by_two_parts_is_refused(engine, monkeypatch):
    from core.visits import Visits
    monkeypatch.setattr(Visits, "decisions", lambda self: {cmd.Admit: None, cmd.FilePerson: None})  # the filings'
    with pytest.raises(TypeError, match="FilePerson is handled by two parts"):
        Engine(engine.index)


def _reverse(original: str = "orig-1", request_id: str = "rev-1") -> cmd.Reverse:
    return cmd.Reverse(request_id=request_id, original_request_id=original, reverse_date=20260320)


def _visit() -> VisitFacts:
    return VisitFacts(mdtrt_id="M000000000000007", psn_no="P1", fixmedins_code="H1", visit_kind="inpatient",
                      adm_date=20260301, filing_id="F1", filing_kind="retired_relocation", insuplc_admdvs="210100",
                      mdtrtarea_admdvs="460100", fixmedins_level=3)


def test_a_reversal_targets_what_its_original_recorded():
    visit = _visit()
    settled = Settled(settlement=SettlementFacts(
        setl_id="S000000000000009", mdtrt_id=visit.mdtrt_id, psn_no="P1", fixmedins_code="H1",
        insuplc_admdvs="210100", mdtrtarea_admdvs="460100", visit_kind="inpatient", insutype="310",
        setl_date=20260310, year=2026, breakdown=Breakdown(*[0] * len(Breakdown.__struct_fields__)), deltas=()))
    target = reversal(_reverse(), settled)
    assert (target.target_kind, target.target_id) == ("settlement", "S000000000000009")
    target = reversal(_reverse(), Admitted(visit=visit))
    assert (target.target_kind, target.target_id) == ("admission", visit.mdtrt_id)
    assert reversal(_reverse(), None) == _reverse()    # nothing recorded: decided as "not performed"


def test_a_reversal_of_anything_else_is_refused_naming_the_original():
    filing = Filing(filing_id="F1", psn_no="P1", kind="referral", dest_admdvs="460000", fixmedins_codes=(),
                    valid_from=20260101, valid_to=20261231, status="active")
    for event in (FilingChanged(filing=filing), RequestReversed(original_request_id="x")):
        with pytest.raises(YidiError) as err:
            reversal(_reverse(), event)
        assert err.value.reason == "INVALID_ARGUMENT" and "orig-1" in err.value.message
        assert err.value.metadata["field"] == "original_request_id"


def test_a_reversal_must_name_another_request():
    with pytest.raises(YidiError) as err:
        check_reversal(_reverse(original="same", request_id="same"))
    assert err.value.reason == "INVALID_ARGUMENT" and err.value.metadata["field"] == "original_request_id"
    with pytest.raises(YidiError) as err:
        check_reversal(_reverse(original=""))
    assert err.value.reason == "INVALID_REQUEST_ID"
    check_reversal(_reverse())


def test_a_reload_carries_the_state_and_names_its_data(engine, tmp_path):
    engine.accounts.changes["P-moved"] = -500
    state = engine.export_state()
    index = Index()
    names = write_spec_dataset(tmp_path / "data")
    index.load_dir(names["dir"])
    reloaded, event = Engine.reloaded(state, index, names["dir"])
    assert event.data_dir == names["dir"] and event.meta == dict(index.meta)
    assert reloaded.accounts.changes == {"P-moved": -500}
    reloaded.apply(event, 1)   # the new data set's opening balances include every change before it
    assert reloaded.accounts.changes == {}
    del engine.accounts.changes["P-moved"]


def test_perform_tells_a_refusal_from_a_failed_apply(engine, monkeypatch):
    """A refusal is raised by the decision and changes nothing; a failure while applying is ApplyFailed (the
    gateway then restarts to rebuild from the ledger), never mistaken for a refusal."""
    from core.engine import ApplyFailed

    before = engine.export_state()
    with pytest.raises(YidiError):
        engine.perform(cmd.CancelAdmission(request_id="r-refused", mdtrt_id="M999999999999999"), 1)
    assert engine.export_state() == before

    def broken(event, seq):
        raise YidiError("INVALID_ARGUMENT", what="x", problem="a bug that looks like a refusal")

    set_prepaid = cmd.SetPrepaid(request_id="r-prepaid", province="210000", amount_fen=100_000_00)
    decision = engine.decide(set_prepaid, 2)
    monkeypatch.setattr(engine, "_apply", {**engine._apply, type(decision.event): broken})
    with pytest.raises(ApplyFailed) as failed:
        engine.perform(set_prepaid, 2)
    assert failed.value.event == decision.event and isinstance(failed.value.__cause__, YidiError)
