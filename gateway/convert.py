"""Translation between protobuf messages and the core's plain rows (SPEC §3 shapes).

Translation only: shapes and enum names.  Business rules stay in ``core``.
"""
from __future__ import annotations

from core.errors import YidiError

from ._pb.yidi.v1 import common_pb2 as pb


class EnumMap:
    """proto enum <-> SPEC string, e.g. FILING_KIND_REFERRAL <-> "referral"."""

    def __init__(self, enum, prefix: str, what: str, by_number: bool = False) -> None:
        self.to_str: dict[int, str] = {}
        for value in enum.DESCRIPTOR.values:
            if value.number == 0:
                continue
            self.to_str[value.number] = str(value.number) if by_number else value.name[len(prefix):].lower()
        self.to_pb = {s: n for n, s in self.to_str.items()}
        self.what = what

    def str(self, number: int, *, required: bool = True) -> str:
        if number == 0 and not required:
            return ""
        try:
            return self.to_str[number]
        except KeyError:
            allowed = "、".join(self.to_str.values())
            raise YidiError("INVALID_ENUM", f"{self.what}取值 {number} 无效，应为：{allowed}。") from None

    def pb(self, value: str) -> int:
        return self.to_pb.get(value, 0)


INSUTYPE = EnumMap(pb.Insutype, "INSUTYPE_", "险种 insutype ", by_number=True)
PERSON_TYPE = EnumMap(pb.PersonType, "PERSON_TYPE_", "人员类别 person_type ")
PERSON_STATUS = EnumMap(pb.PersonStatus, "PERSON_STATUS_", "参保状态 status ")
FILING_KIND = EnumMap(pb.FilingKind, "FILING_KIND_", "备案类型 kind ")
FILING_STATUS = EnumMap(pb.FilingStatus, "FILING_STATUS_", "备案状态 status ")
VISIT_KIND = EnumMap(pb.VisitKind, "VISIT_KIND_", "就诊类型 ")
VISIT_STATUS = EnumMap(pb.VisitStatus, "VISIT_STATUS_", "就诊状态 ")
SETTLEMENT_STATUS = EnumMap(pb.SettlementStatus, "SETTLEMENT_STATUS_", "结算状态 ")


def mask_certno(certno: str) -> str:
    """Show the first 6 and last 4 characters only."""
    return certno[:6] + "*" * max(0, len(certno) - 10) + certno[-4:] if len(certno) > 10 else "*" * len(certno)


def person_row(p: pb.Person) -> dict:
    return {
        "psn_no": p.psn_no,
        "certno": p.certno,
        "name": p.name,
        "insuplc_admdvs": p.insuplc_admdvs,
        "insutype": INSUTYPE.str(p.insutype),
        "person_type": PERSON_TYPE.str(p.person_type),
        "status": PERSON_STATUS.str(p.status),
        "assistance": p.assistance,
        "card_no": p.card_no,
        "card_version": p.card_version,
    }


def person_pb(row: dict) -> pb.Person:
    return pb.Person(
        psn_no=row["psn_no"],
        certno=mask_certno(row["certno"]),
        name=row["name"],
        insuplc_admdvs=row["insuplc_admdvs"],
        insutype=INSUTYPE.pb(row["insutype"]),
        person_type=PERSON_TYPE.pb(row["person_type"]),
        status=PERSON_STATUS.pb(row["status"]),
        assistance=row["assistance"],
        card_no=row.get("card_no", ""),
        card_version=row.get("card_version", ""),
    )


def filing_row(f: pb.Filing, *, partial: bool = False) -> dict:
    """A filing row; ``partial`` (a revision) allows kind and status to be left unset."""
    return {
        "filing_id": f.filing_id,
        "psn_no": f.psn_no,
        "kind": FILING_KIND.str(f.kind, required=not partial),
        "dest_admdvs": f.dest_admdvs,
        "fixmedins_codes": list(f.fixmedins_codes),
        "valid_from": f.valid_from,
        "valid_to": f.valid_to,
        "status": FILING_STATUS.str(f.status, required=False) or ("" if partial else "active"),
    }


def filing_pb(row: dict) -> pb.Filing:
    return pb.Filing(
        filing_id=row["filing_id"],
        psn_no=row["psn_no"],
        kind=FILING_KIND.pb(row["kind"]),
        dest_admdvs=row["dest_admdvs"],
        fixmedins_codes=row["fixmedins_codes"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        status=FILING_STATUS.pb(row["status"]),
    )


def fee_lines(lines) -> list[tuple[str, str, str, int, int, int]]:
    return [(x.feedetl_sn, x.code, x.name, x.unit_price_fen, x.qty_milli, x.fee_date) for x in lines]


def settlement_pb(s: dict) -> pb.Settlement:
    return pb.Settlement(
        setl_id=s["setl_id"],
        mdtrt_id=s["mdtrt_id"],
        psn_no=s["psn_no"],
        psn_name=s["psn_name"],
        fixmedins_code=s["fixmedins_code"],
        fixmedins_name=s["fixmedins_name"],
        insuplc_admdvs=s["insuplc_admdvs"],
        mdtrtarea_admdvs=s["mdtrtarea_admdvs"],
        visit_kind=VISIT_KIND.pb(s["visit_kind"]),
        insutype=INSUTYPE.pb(s["insutype"]),
        filing_id=s["filing_id"],
        filing_kind=FILING_KIND.pb(s["filing_kind"]),
        setl_date=s["setl_date"],
        policy_effective_from=s["policy_effective_from"],
        breakdown=pb.Breakdown(**s["breakdown"]),
        lines=[
            pb.LineResult(
                feedetl_sn=x["feedetl_sn"], code=x["code"], chrgitm_lv=x["chrgitm_lv"],
                det_item_fee_sumamt=x["amount_fen"], fulamt_ownpay_amt=x["fulamt_ownpay_amt"],
                overlmt_selfpay=x["overlmt_selfpay"], preselfpay_amt=x["preselfpay_amt"],
                inscp_scp_amt=x["inscp_scp_amt"],
            )
            for x in s["lines"]
        ],
        status=SETTLEMENT_STATUS.pb(s["status"]),
        cancel_date=s.get("cancel_date", 0),
    )
