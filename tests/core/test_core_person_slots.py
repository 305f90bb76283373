"""The persons' table carries the row's key offset and first filing beside each slot (index.pxi, PersonSlotExtra):
kept in step with the rows through every way an index is filled or changed, and a hint only: eligibility's answers
are the rows', whatever the slot holds."""
from __future__ import annotations

import os

import pytest

from core import DEBUG, Index, InvariantError, YidiError
from datagen import generate
from datagen.workload import DATE, Workload

debug_only = pytest.mark.skipif(not DEBUG, reason="needs a debug build (make test-debug)")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("slots"))
    generate(out, persons=3000, seed=2026)
    return out


def persons_and_codes(data_dir: str) -> tuple[list[str], list[str]]:
    import orjson

    with open(os.path.join(data_dir, "persons.jsonl"), "rb") as f:
        persons = [orjson.loads(line)["psn_no"] for line in f]
    with open(os.path.join(data_dir, "institutions.jsonl"), "rb") as f:
        codes = [orjson.loads(line)["fixmedins_code"] for line in f]
    return persons, codes


def covering(data_dir: str) -> dict[str, list[str]]:
    """psn_no -> a few institutions one of the person's active filings covers today (admissions to expect)."""
    workload = Workload(data_dir, seed=3, persons=10**9)
    out: dict[str, list[str]] = {}
    for psn_no, _insured, codes in workload.outpatient_cases + workload.inpatient_cases:
        out.setdefault(psn_no, []).extend(codes[:2])
    return out


def every_answer(ix: Index, persons: list[str], codes: list[str], covered: dict[str, list[str]]) -> list:
    """Every person of the set at a dozen institutions spread over the country and at institutions its filings
    cover (outpatient and inpatient in turn): the visit facts, or the refusal's reason and message."""
    spread = codes[:: max(1, len(codes) // 12)]
    out = []
    for psn_no in persons:
        for n, code in enumerate(spread + covered.get(psn_no, [])):
            try:
                out.append(ix.eligibility(psn_no, code, n % 2 == 0, DATE))
            except YidiError as err:
                out.append((err.reason, err.message))
    return out


def loaded(data_dir: str) -> Index:
    ix = Index()
    ix.load_dir(data_dir)
    return ix


def test_every_answer_alike_from_the_json_lines_the_image_and_huge_pages(data_dir, tmp_path):
    ix = loaded(data_dir)
    persons, codes = persons_and_codes(data_dir)
    ix.check_invariants()
    ix.save_image(str(tmp_path / "i.img"), "fp")
    copy = Index()
    copy.load_image(str(tmp_path / "i.img"), "fp")
    copy.check_invariants()
    copy.use_huge_pages(5.0)
    covered = covering(data_dir)
    expected = every_answer(ix, persons, codes, covered)
    assert sum(isinstance(a, dict) for a in expected) > len(persons)   # admissions, not refusals only
    assert every_answer(copy, persons, codes, covered) == expected


def test_kept_in_step_as_filings_and_persons_are_added_and_the_table_grows(data_dir):
    ix = loaded(data_dir)
    persons, codes = persons_and_codes(data_dir)
    filed = [p for p in persons if ix.filings_of(p)]
    template = ix.filings_of(filed[0])[0]
    # a new filing becomes the person's first: the slot's copy must follow the row (check_invariants compares them)
    for n, psn_no in enumerate(filed[:500]):
        ix.put_filing(dict(template, filing_id=f"NEW{n:06d}", psn_no=psn_no, fixmedins_codes=[],
                           kind="emergency", valid_from=DATE, valid_to=DATE + 10))
    ix.check_invariants()
    assert "NEW000007" in [f["filing_id"] for f in ix.filings_of(filed[7])]
    person = ix.get_person(filed[0])
    for n in range(6000):   # twice the set: the persons' table doubles and every slot is placed again
        ix.put_person(dict(person, psn_no=f"88{n:014d}", certno=certno(n), card_no=f"M{n:08d}"))
    ix.check_invariants()


@debug_only
def test_a_stale_slot_changes_no_answer_and_is_noticed(data_dir):
    ix = loaded(data_dir)
    persons, codes = persons_and_codes(data_dir)
    filed = [p for p in persons[:200] if ix.filings_of(p)]
    covered = covering(data_dir)
    before = every_answer(ix, filed, codes, covered)
    for psn_no in filed:
        ix._debug_corrupt("person_slot_extra", psn_no)
    assert every_answer(ix, filed, codes, covered) == before
    with pytest.raises(InvariantError, match="beside person"):
        ix.check_invariants()


def certno(n: int) -> str:
    """A distinct GB 11643 number (17 digits and their mod-11 check character) for each n."""
    body = f"1101021991{n:07d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]
