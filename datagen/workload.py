"""Realistic settlement requests drawn from a generated data set.

Used by the benchmarks, the load generators and the month simulation: each
case is a filed, active person at an institution their filing covers, with a
bill shaped like the published cross-province figures (outpatient and pharmacy
visits of a few lines and a couple of hundred yuan; inpatient stays of about
twenty lines and about ¥23,700, SPEC §7–§8's reference month of September
2019).  Only a prefix of persons.jsonl and filings.jsonl is read (persons are
written in random province order, so a prefix is a fair sample), which keeps
a client's start-up short; ``every=k`` takes every k-th person instead, so that
the cases spread over the whole data set (and over the whole of an index
loaded from it: its rows are in file order).  Deterministic for a given seed.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import orjson

from core.events import FeeLine

DATE = 20261120          # inside the generated filings' validity (the generator's as_of is 20261122)
INPATIENT_LINES = (12, 8)         # drug lines, treatment/service/material lines of a stay
INPATIENT_SELF_PAID_LINES = 2     # of them, items outside the fund's scope (calibration: see Workload.inpatient)


@dataclass(frozen=True, slots=True)
class Case:
    psn_no: str
    fixmedins_code: str
    treatment_province: str   # the caller that settles it
    insured_province: str
    lines: tuple[FeeLine, ...]
    dise_codg: str = ""            # SPEC §10.2: a chronic-disease visit (med_type 14)
    acct_used_flag: bool = False   # SPEC §10.1: the person has a personal account and uses it


def _province(admdvs: str) -> str:
    return admdvs[:2] + "0000"


def _psn_no_of(line: bytes) -> str | None:
    """A filing line's psn_no read without parsing the line (None if it is not written as datagen writes it)."""
    at = line.find(b'"psn_no":"')
    if at < 0:
        return None
    at += len(b'"psn_no":"')
    return line[at:line.find(b'"', at)].decode("ascii", "replace")


def _covers(dest: str, region: str) -> bool:
    if dest.endswith("0000"):
        return region[:2] == dest[:2]
    if dest.endswith("00"):
        return region[:4] == dest[:4]
    return region == dest


class Workload:
    """Cases for outpatient one-stop and inpatient settlements on ``date``."""

    def __init__(self, data_dir: str, *, seed: int = 1, persons: int = 200_000, date: int = DATE,
                 every: int = 1) -> None:
        self.rng = random.Random(f"yidi-workload:{seed}")
        self.date = date
        self._class_c: dict[tuple[int, str], list[tuple[str, str, int]]] = {}
        self._institutions(data_dir)
        self._catalog(data_dir)
        self._filed(data_dir, persons, every)

    # ------------------------------------------------------------ loading
    def _institutions(self, data_dir: str) -> None:
        self.chronic_at: dict[str, set[str]] = {}       # institution code -> chronic diseases it is open for
        self.outpatient_at: dict[str, list[str]] = {}   # region (city, and province) -> codes
        self.inpatient_at: dict[str, list[str]] = {}
        self.institution_region: dict[str, str] = {}
        with open(os.path.join(data_dir, "institutions.jsonl"), "rb") as f:
            for line in f:
                row = orjson.loads(line)
                code, region = row["fixmedins_code"], row["admdvs"]
                self.institution_region[code] = region
                if row.get("chronic_diseases"):
                    self.chronic_at[code] = set(row["chronic_diseases"])
                for enabled, by_region in ((row["outpatient"], self.outpatient_at), (row["inpatient"], self.inpatient_at)):
                    if enabled:
                        by_region.setdefault(region, []).append(code)
                        by_region.setdefault(_province(region), []).append(code)

    def _catalog(self, data_dir: str) -> None:
        """Per treatment province: (code, class, price cap) of drugs and of treatments/services/materials."""
        self.drugs: dict[str, list[tuple[str, str, int]]] = {}
        self.treatments: dict[str, list[tuple[str, str, int]]] = {}
        with open(os.path.join(data_dir, "catalog.jsonl"), "rb") as f:
            for line in f:
                row = orjson.loads(line)
                kind = self.drugs if row["category"] == "drug" else self.treatments
                kind.setdefault(row["province"], []).append((row["code"], row["class"], row["price_cap_fen"]))

    def _filed(self, data_dir: str, limit: int, every: int) -> None:
        """Active persons of the first ``limit`` rows (of every ``every``-th row) with the institutions their active
        filings cover today."""
        active: dict[str, str] = {}
        diseases: dict[str, list[str]] = {}
        self.with_account: set[str] = set()
        with open(os.path.join(data_dir, "persons.jsonl"), "rb") as f:
            for n, line in enumerate(f):
                if n >= limit * every:
                    break
                if n % every:
                    continue
                row = orjson.loads(line)
                if row["status"] == "active":
                    active[row["psn_no"]] = row["insuplc_admdvs"]
                    if row.get("acct_balance_fen"):
                        self.with_account.add(row["psn_no"])
                    if row.get("chronic_diseases"):
                        diseases[row["psn_no"]] = row["chronic_diseases"]
        # (psn_no, insured region, [(institution, disease)]) for chronic-disease visits (SPEC §10.2)
        self.chronic_cases: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.outpatient_cases: list[tuple[str, str, list[str]]] = []  # (psn_no, insured region, institution codes)
        self.inpatient_cases: list[tuple[str, str, list[str]]] = []
        with open(os.path.join(data_dir, "filings.jsonl"), "rb") as f:
            for line in f:
                psn_no = _psn_no_of(line) if every > 1 else None
                if psn_no is not None and psn_no not in active:   # most lines: skipped before parsing
                    continue
                row = orjson.loads(line)
                insured = active.get(row["psn_no"])
                if insured is None or row["status"] != "active" or not self._valid(row):
                    continue
                for at, cases in ((self.outpatient_at, self.outpatient_cases),
                                  (self.inpatient_at, self.inpatient_cases)):
                    codes = self._institutions_for(row, at)
                    if codes:
                        cases.append((row["psn_no"], insured, codes))
                    if codes and at is self.outpatient_at and row["psn_no"] in diseases:
                        pairs = [(c, d) for c in codes for d in diseases[row["psn_no"]] if d in self.chronic_at.get(c, ())]
                        if pairs:
                            self.chronic_cases.append((row["psn_no"], insured, pairs))
                if len(self.outpatient_cases) >= limit:
                    break
        if not self.outpatient_cases or not self.inpatient_cases:
            raise ValueError(f"{data_dir}: no filed person can be settled on {self.date}")

    def _valid(self, filing: dict) -> bool:
        return filing["valid_from"] <= self.date and (filing["valid_to"] == 0 or self.date <= filing["valid_to"])

    def _institutions_for(self, filing: dict, at: dict[str, list[str]]) -> list[str]:
        if filing["fixmedins_codes"]:
            return [c for c in filing["fixmedins_codes"] if c in at.get(self.institution_region.get(c, ""), ())]
        return at.get(filing["dest_admdvs"], [])

    # -------------------------------------------------------------- cases
    def outpatient(self) -> Case:
        """门诊 or pharmacy: 1–5 lines, mostly drugs, about ¥200 in all."""
        psn_no, insured, codes = self.rng.choice(self.outpatient_cases)
        code = self.rng.choice(codes)
        province = _province(self.institution_region[code])
        n = self.rng.choice((1, 2, 3, 3, 4, 5))
        lines = [self._line(str(i + 1), self.drugs, province, 1_500, 8_000, (1_000, 1_000, 2_000)) for i in range(n)]
        return Case(psn_no, code, province, _province(insured), tuple(lines),
                    acct_used_flag=psn_no in self.with_account)

    def chronic(self) -> Case:
        """门诊慢特病 (SPEC §10.2): a month's drugs for a chronic disease, or a dialysis session (M07803)."""
        psn_no, insured, pairs = self.rng.choice(self.chronic_cases)
        code, disease = self.rng.choice(pairs)
        province = _province(self.institution_region[code])
        if disease == "M07803":   # haemodialysis: the session, its materials
            lines = [self._line("1", self.treatments, province, 30_000, 60_000, (1_000,)),
                     self._line("2", self.treatments, province, 5_000, 20_000, (1_000, 2_000))]
        else:
            n = self.rng.choice((2, 3, 3, 4))
            lines = [self._line(str(i + 1), self.drugs, province, 3_000, 20_000, (2_000, 3_000, 4_000))
                     for i in range(n)]
        return Case(psn_no, code, province, _province(insured), tuple(lines), dise_codg=disease,
                    acct_used_flag=psn_no in self.with_account)

    def inpatient(self) -> Case:
        """住院: 20 lines — bed, treatments, materials and drugs — about ¥23,700 in all.

        Calibrated against the published national month of September 2019
        (¥23,700 per cross-province inpatient settlement, fund 59.8% of fees;
        `yidi simulate-month` prints both beside its own): INPATIENT_SELF_PAID_LINES
        of the 20 are items outside the fund's scope (class C: imported drugs,
        special materials, single rooms), which is what brings the fund's
        share from the policies' 80-90% ratios down to about 60%.
        """
        psn_no, insured, codes = self.rng.choice(self.inpatient_cases)
        code = self.rng.choice(codes)
        province = _province(self.institution_region[code])
        drugs, treatments = INPATIENT_LINES
        lines = [self._line(str(i + 1), self.drugs, province, 3_000, 30_000, (2_000, 5_000, 10_000))
                 for i in range(drugs)]
        lines += [self._line(str(drugs + i + 1), self.treatments, province, 20_000, 180_000, (1_000, 2_000))
                  for i in range(treatments)]
        for n in range(INPATIENT_SELF_PAID_LINES):  # out-of-scope items, in place of ordinary ones
            items = self.drugs if n % 2 else self.treatments
            lines[n * 3] = self._line(lines[n * 3].feedetl_sn, items, province, 60_000, 200_000, (1_000, 2_000),
                                      self_paid=True)
        return Case(psn_no, code, province, _province(insured), tuple(lines))

    def _line(self, sn: str, items: dict, province: str, low_fen: int, high_fen: int, qtys: tuple[int, ...],
              self_paid: bool = False) -> FeeLine:
        choices = self._self_paid(items, province) if self_paid else items[province]
        code, _cls, cap = self.rng.choice(choices)
        price = self.rng.randint(low_fen, high_fen)
        if cap and self.rng.random() < 0.9:  # most hospitals price at or under the cap
            price = min(price, cap)
        return FeeLine(sn, code, "", price, self.rng.choice(qtys))

    def _self_paid(self, items: dict, province: str) -> list[tuple[str, str, int]]:
        """The class C items of a province's drugs or treatments (outside the fund's scope)."""
        key = (id(items), province)
        found = self._class_c.get(key)
        if found is None:
            found = self._class_c[key] = [x for x in items[province] if x[1] == "C"] or items[province]
        return found
