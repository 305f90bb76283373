"""A commit group packed by the core (core/ledger.pxi, ``GroupPacker``) is byte for byte what the ledger's Python
definitions make of it: the row bodies (packed.encode), every checksum and chain value (chain.checksum_of,
LedgerKey.link), the idempotency rows (rows.keys_of, rows.request_hash) and every derived row's tag
(LedgerKey.tag, msgspec's msgpack), for random groups, row sizes and derived values."""
from __future__ import annotations

import hashlib

from hypothesis import Phase, given, settings, strategies as st

from bench.ledger_append import make_settlements
import msgspec

from core import GroupRules, blake2b_digest
from core.archive import ArchivedSettlement, PutSettlement, SettlementCancelledChange, VisitStatus
from core.events import REVERSED_KIND
from gateway.store import Record, chain, packed
from gateway.store.rows import derive, keys_of, request_hash
from gateway.store.seal import SealKey

KEY = SealKey(bytes(range(32))).for_ledger("0123456789abcdef0123456789abcdef")
SETTINGS = settings(max_examples=150, derandomize=True, database=None, phases=[Phase.generate], deadline=None)


def reference(records, last: int, previous: bytes, row_records: int, derive_rows) -> tuple:
    """(rows, chain, requests, derived) of a group as the Python definitions give them."""
    fields, seq = [], last
    for r in records:
        seq += 1
        kind, caller, rid, name = r.kind.encode(), r.caller.encode(), r.request_id.encode(), r.key.encode()
        sum_ = chain.checksum_of(seq, kind, caller, rid, r.digest, name, r.body, r.response)
        previous = KEY.link(previous, sum_)
        fields.append((kind, caller, rid, r.digest, name, r.body, r.response, sum_, previous))
    step = row_records or len(fields)
    rows = [(last + min(i + step, len(fields)), last + i + 1, packed.encode(fields[i:i + step]))
            for i in range(0, len(fields), step)]
    requests = [(r.caller, rid, h, seq, KEY.tag("requests", (h, seq)))
                for seq, r in enumerate(records, last + 1) for rid in keys_of(r)
                for h in (request_hash(r.caller, rid),)]
    derived: dict[str, list[tuple]] = {}
    for seq, r in enumerate(records, last + 1):
        if r.kind == packed.REFERENCE_KIND:
            derived.setdefault("reference_loads", []).append((seq, KEY.tag("reference_loads", (seq,))))
        if r.changes:
            for table, values in derive_rows(r.changes, seq):
                derived.setdefault(table, []).append((*values, KEY.tag(table, values)))
    return rows, previous, requests, derived


def packed_by_core(records, last: int, previous: bytes, row_records: int, derive_rows) -> tuple:
    rules = GroupRules(derive_rows, PutSettlement, REVERSED_KIND, packed.REFERENCE_KIND)
    return KEY.packer().pack(records, last, previous, row_records, rules)


text = st.text(max_size=40)
kinds = st.one_of(st.sampled_from(["settled", REVERSED_KIND, packed.REFERENCE_KIND, "admitted"]), text)
# Values of every msgpack form msgspec picks: each int width either side of its bounds, short and long text
# and bytes; and what the core hands back to Python's tag (None, bool, float, a nested tuple).
bounds = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -1, -32, -33,
          -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]
values = st.one_of(st.sampled_from(bounds), st.integers(-2**63, 2**64 - 1), st.text(max_size=300),
                   st.binary(max_size=70000), st.none(), st.booleans(), st.floats(allow_nan=False),
                   st.tuples(st.integers(-2**63, 2**64 - 1)))
derived_rows = st.lists(st.tuples(st.sampled_from(["recon", "cancellations", "visit_status", "x" * 40]),
                                  st.lists(values, max_size=17).map(tuple)), max_size=3)


@st.composite
def records(draw) -> Record:
    rows = draw(derived_rows)
    return Record(draw(kinds), draw(text), draw(text), draw(st.binary(max_size=32)), draw(text),
                  draw(st.binary(max_size=3000)), draw(st.binary(max_size=300)), changes=tuple(rows))


def rows_given(changes, seq):
    """The test's derive: the change objects are the rows themselves."""
    return changes


@SETTINGS
@given(st.lists(records(), min_size=1, max_size=40), st.integers(0, 10**13), st.binary(min_size=32, max_size=32),
       st.sampled_from([0, 1, 3, 64]))
def test_core_packs_a_group_as_the_python_definitions_do(group, last, previous, row_records):
    assert packed_by_core(group, last, previous, row_records, rows_given) == \
        reference(group, last, previous, row_records, rows_given)


def test_settlements_and_cancellations_pack_as_the_python_definitions_do():
    """Real archive changes: a settlement's recon row (made in C; by rows.recon_row where the insutype is not
    plain digits), a cancellation and a visit's status (rows.derive), ids the gateway did not issue."""
    group = make_settlements(130, 7_000_000)
    for i, (insutype, setl_id, code) in enumerate([(" 310", "S000000007000011", "H1"), ("0", "X12", "医院-1"),
                                                   ("310", "S00000000700001x", ""), ("١٢", "S1", "H2")]):
        facts = msgspec.structs.replace(group[11 + i].changes[0].settlement.facts, insutype=insutype,
                                        setl_id=setl_id, fixmedins_code=code)
        group[11 + i] = Record(*[getattr(group[11 + i], f) for f in ("kind", "caller", "request_id", "digest",
                                                                      "key", "body", "response")],
                               changes=(PutSettlement(ArchivedSettlement(facts, 11 + i)),))
    group[5] = Record("settlement_cancelled", group[5].caller, "c-5", b"d" * 16, group[5].key, b"b", b"r",
                      changes=(SettlementCancelledChange("S000000007000005", 20260101, 3, clearing_month=202601),
                               VisitStatus("M1", "settled", "S000000007000005")))
    group[9] = Record(REVERSED_KIND, group[9].caller, "rev-9", b"d" * 16, group[8].request_id, b"b", b"r")
    for row_records in (0, 64):
        got = packed_by_core(group, 41, KEY.genesis, row_records, derive)
        assert got == reference(group, 41, KEY.genesis, row_records, derive)
        assert {"recon", "cancellations", "visit_status"} <= set(got[3])
    made = packed.group(group, 41, KEY.genesis, KEY, 64)
    assert (made.rows, made.head.chain, made.requests, made.derived) == \
        reference(group, 41, KEY.genesis, 64, derive)
    assert made.added["records"] == 130 and made.added["groups"] == 3 and made.added["requests"] == 131


@SETTINGS
@given(st.binary(max_size=1000), st.integers(1, 64), st.binary(max_size=64))
def test_core_blake2b_is_hashlibs(data, digest_size, key):
    if key and not data:   # the core never MACs an empty message (its key block is compressed up front)
        return
    assert blake2b_digest(data, digest_size, key) == hashlib.blake2b(data, digest_size=digest_size, key=key).digest()


def test_postgresql_copies_a_groups_projection_rows_made_in_c(pg_url):
    """A group past COPY_MIN_ROWS goes by COPY BINARY made by the core (copy_binary): every requests and recon
    row arrives with the values and tag the group made, and the records are found through them."""
    import psycopg

    from gateway.store import open_store
    from gateway.store.postgresql.store import COPY_MIN_ROWS
    from gateway.store.rows import checked
    from gateway.testing import seal_key

    group = make_settlements(COPY_MIN_ROWS + 9, 8_000_000)
    group[3] = Record(group[3].kind, group[3].caller, "请求-3", group[3].digest, group[3].key, group[3].body,
                      group[3].response, changes=group[3].changes)   # text beyond ASCII
    store = open_store(pg_url, seal_key())
    try:
        made = packed.group(group, 0, store.head().chain, store.key)
        store.append(group)
        assert store.find_request(group[3].caller, "请求-3").seq == 4
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        requests = conn.execute("SELECT caller, request_id, h, seq, tag FROM requests ORDER BY seq").fetchall()
        recon = conn.execute("SELECT inst, setl_date, setl_no, insutype, medfee, fund, cash, flags, tag FROM recon "
                             "ORDER BY setl_no").fetchall()
    assert [tuple(r[:4]) + (bytes(r[4]),) for r in requests] == made.requests
    assert [tuple(r[:8]) + (bytes(r[8]),) for r in recon] == sorted(made.derived["recon"], key=lambda r: r[2])
    for row in recon:
        checked(store.key, pg_url, "recon", tuple(row))
