"""Development electronic-voucher tokens (SPEC §10.5), from a data set's voucher_keys.jsonl.

A real voucher is issued by the insured province's platform to the patient's
phone; this module issues the same kind of token from the keys of a generated
data set, for tests, demos and ``yidi voucher``.  The mac is computed by the
core's own function (``core.voucher_mac``), so the format is stated once.
Keys are read here and never printed.
"""
from __future__ import annotations

import datetime
import os

import orjson

from core import province_code
from core import voucher_mac


def keys_of(data_dir: str) -> dict[str, bytes]:
    """Province -> voucher key of a data set (empty when it has none)."""
    path = os.path.join(data_dir, "voucher_keys.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        rows = [orjson.loads(line) for line in f if line.strip()]
    return {r["province"]: bytes.fromhex(r["key_hex"]) for r in rows}


def token(key: bytes, psn_no: str, expiry_utc_minute: int) -> str:
    """``psn_no.yyyymmddhhmm.mac``."""
    expiry = f"{expiry_utc_minute:012d}"
    return f"{psn_no}.{expiry}.{voucher_mac(key, psn_no, expiry)}"


def minute(at: datetime.datetime) -> int:
    """A UTC time as yyyymmddhhmm."""
    at = at.astimezone(datetime.timezone.utc)
    return int(at.strftime("%Y%m%d%H%M"))


def insured_province(data_dir: str, psn_no: str) -> str:
    """The insured province of a person of the data set (a scan of persons.jsonl: a development tool)."""
    needle = f'"psn_no":"{psn_no}"'.encode()
    with open(os.path.join(data_dir, "persons.jsonl"), "rb") as f:
        for line in f:
            if needle in line.replace(b'": "', b'":"'):
                return province_code(orjson.loads(line)["insuplc_admdvs"])
    raise KeyError(psn_no)


def issue(data_dir: str, psn_no: str, minutes: int, now: datetime.datetime | None = None) -> str:
    """A token for a person of the data set, valid for ``minutes`` from now."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    province = insured_province(data_dir, psn_no)
    key = keys_of(data_dir).get(province)
    if key is None:
        raise KeyError(f"no voucher key for province {province}")
    return token(key, psn_no, minute(now + datetime.timedelta(minutes=minutes)))
