"""Loading reference data on a ledger split in two partitions (docs/postgresql.md, Partitions: every partition's
calls), over real gRPC and mTLS against a real PostgreSQL: one LoadReferenceData call at any node loads the data
set at both partitions' owners, each partition records it once (its copy keyed apart in the shared index), a
retry is answered byte for byte without loading again, and a standby restarts on its partition's record (exit
70) and comes back on the new data set.
"""
from __future__ import annotations

import json
import os

import psycopg

from core.partition import part_of_seq
from gateway._pb.yidi.v1 import admin_pb2 as apb
from gateway.store.postgresql import scan_every_partition
from test_partitions import partition_nodes

import failover
from failover import two_province_dataset

LOAD = "/yidi.v1.AdminService/LoadReferenceData"
NEW_INSTITUTION = "H46010900099"


def newer_dataset(path) -> str:
    """The nodes' data set with one more Hainan institution."""
    data_dir = two_province_dataset(path)
    with open(os.path.join(data_dir, "institutions.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"fixmedins_code": NEW_INSTITUTION, "name": "海口市新区医院", "admdvs": "460100",
                            "kind": "hospital", "level": 2, "inpatient": True, "outpatient": True},
                           ensure_ascii=False) + "\n")
    return data_dir


def loads_recorded(url: str) -> dict[int, int]:
    """Per partition, its ledger's reference_loaded records."""
    with psycopg.connect(url) as conn:
        found: dict[int, int] = {}
        for record in scan_every_partition(conn, url):
            if record.kind == "reference_loaded":
                found[part_of_seq(record.seq)] = found.get(part_of_seq(record.seq), 0) + 1
        return found


def test_one_load_at_any_node_loads_every_partitions_owner_and_its_standbys(tmp_path, pg_url):
    nodes = partition_nodes(tmp_path, pg_url)
    standby = failover.Node("p1-standby", nodes[0].data_dir, str(tmp_path), pg_url, "--partitions", "2",
                            "--partition", "1")
    standby.start("STANDBY")
    try:
        before = [apb.ReferenceDataStatus.FromString(node.gw.client("national").raw(
            "/yidi.v1.AdminService/GetReferenceDataStatus", apb.GetReferenceDataStatusRequest()))
            for node in nodes]
        new_dir = newer_dataset(tmp_path / "new")
        national = nodes[1].gw.client("national")   # partition 1's owner takes the call
        request = apb.LoadReferenceDataRequest(request_id="load-both", data_dir=new_dir)
        first = national.raw(LOAD, request)
        loaded = apb.ReferenceDataStatus.FromString(first)
        assert loaded.data_dir == new_dir
        assert dict(loaded.counts) == dict(before[0].counts, institutions=before[0].counts["institutions"] + 1)
        for node in nodes:   # both owners answer from the new data set
            now = apb.ReferenceDataStatus.FromString(node.gw.client("national").raw(
                "/yidi.v1.AdminService/GetReferenceDataStatus", apb.GetReferenceDataStatusRequest()))
            assert (now.data_dir, dict(now.counts)) == (new_dir, dict(loaded.counts)), node.name
        assert loads_recorded(pg_url) == {0: 1, 1: 1}

        # The retry, at the other node: the same answer, nothing loaded again.
        assert nodes[0].gw.client("national").raw(LOAD, request) == first
        assert loads_recorded(pg_url) == {0: 1, 1: 1}

        # Partition 1's standby met the record: it exits 70 to load the data at its restart, and does.
        assert standby.gw.proc.wait(60) == 70
        assert standby.gw.stop() == 70
        standby.start("STANDBY")
        restarted = apb.ReferenceDataStatus.FromString(standby.gw.client("national").raw(
            "/yidi.v1.AdminService/GetReferenceDataStatus", apb.GetReferenceDataStatusRequest()))
        assert (restarted.data_dir, dict(restarted.counts)) == (new_dir, dict(loaded.counts))
    finally:
        for node in (*nodes, standby):
            if node.gw is not None:
                node.gw.stop()
