"""The collector by generation: pauses, the longest and the objects freed, counted per generation in process and
served on /metrics beside the overall figures (scraped over HTTP after real gRPC traffic)."""
from __future__ import annotations

import gc
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from builders import DRUG_A
from datagen.spec_fixture import write_spec_dataset
from gateway._pb.yidi.v1 import common_pb2 as pb, settlement_pb2 as spb
from gateway.operations.gcwatch import GcWatch


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_each_collection_is_counted_under_its_generation():
    watch = GcWatch()
    watch.install()
    enabled = gc.isenabled()
    gc.disable()   # only the collections asked for below
    try:
        gc.collect()
        before = list(watch.collections)
        gc.collect(0)
        gc.collect(1)
        for _ in range(1000):
            Cycle()
        gc.collect(2)
    finally:
        watch.uninstall()
        if enabled:
            gc.enable()
    assert [a - b for a, b in zip(watch.collections, before, strict=True)] == [1, 1, 1]
    assert watch.collected[2] >= 1000          # the cycles, freed by the full collection
    assert [sum(b) for b in watch.pause_buckets_by_generation] == watch.collections
    assert max(watch.max_pause_ms_by_generation) == watch.max_pause_ms
    # CPU time of one thread cannot run ahead of the wall clock (1 µs for the order the clocks are read in)
    assert all(0 < cpu <= wall + 0.001 for cpu, wall in zip(watch.max_pause_cpu_ms_by_generation,
                                                           watch.max_pause_ms_by_generation, strict=True))
    assert abs(sum(watch.pause_total_ms_by_generation) - watch.pause_total_ms) < 1e-6
    assert all(most <= total <= wall_total + 0.003 for most, total, wall_total in zip(
        watch.max_pause_cpu_ms_by_generation, watch.pause_cpu_total_ms_by_generation,
        watch.pause_total_ms_by_generation, strict=True))
    # the wait for a core is part of the wall time, and what is left of the longest pause is in the wall time too
    assert all(0 <= waited <= wall_total + 0.003 for waited, wall_total in zip(
        watch.pause_waited_total_ms_by_generation, watch.pause_total_ms_by_generation, strict=True))
    assert all(0 < unwaited <= wall + 0.001 for unwaited, wall in zip(
        watch.max_pause_unwaited_ms_by_generation, watch.max_pause_ms_by_generation, strict=True))


def test_metrics_serve_the_collector_by_generation(tmp_path, gateways):
    names = write_spec_dataset(tmp_path / "data")
    gw = gateways(names["dir"], str(tmp_path / "ledger.sqlite"), "--metrics-listen", "127.0.0.1:0")
    hainan = gw.client("460000")
    items = [spb.SettleItem(outpatient=spb.OutpatientSettleRequest(
        request_id=f"gc-{n}", psn_no=names["psn"]["in_service"], fixmedins_code=names["inst"]["hk_l1"],
        setl_date=20260315, lines=[pb.FeeLine(feedetl_sn="1", code=DRUG_A, unit_price_fen=100, qty_milli=1000)]))
        for n in range(300)]
    for k in range(0, 300, 100):   # enough objects made and dropped for the young generation to be collected
        hainan(hainan.settlement.SettleBatch, spb.SettleBatchRequest(items=items[k:k + 100]))
    with urllib.request.urlopen(gw.metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples = {(s.name, s.labels.get("generation"), s.labels.get("le")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    count = [samples[("yidi_gc_generation_pause_seconds_count", str(g), None)] for g in range(3)]
    longest = [samples[("yidi_gc_generation_pause_max_seconds", str(g), None)] for g in range(3)]
    assert count[0] >= 1 and count[2] >= 1           # young collections under traffic; the full one before freeze()
    assert sum(count) == samples[("yidi_gc_pause_seconds_count", None, None)]
    assert max(longest) == samples[("yidi_gc_pause_max_seconds", None, None)] > 0
    for g in range(3):
        assert samples[("yidi_gc_generation_pause_seconds_bucket", str(g), "+Inf")] == count[g]
        assert samples[("yidi_gc_generation_pause_seconds_bucket", str(g), "0.01")] <= count[g]
    # Start-up leaves cyclic garbage (``import ssl``'s temporary enum class, among others), freed by the full
    # collection before freeze() or by a young one before it, as the allocations since start-up fall.
    assert sum(samples[("yidi_gc_collected_objects_total", str(g), None)] for g in range(3)) > 0
    assert ("yidi_gc_uncollectable_objects_total", "0", None) in samples
    assert all(0 < samples[("yidi_gc_generation_pause_cpu_max_seconds", str(g), None)] <= longest[g] + 1e-6
               for g in (0, 2))
    assert all(samples[("yidi_gc_generation_pause_cpu_max_seconds", str(g), None)]
               <= samples[("yidi_gc_generation_pause_cpu_seconds_total", str(g), None)]
               <= samples[("yidi_gc_generation_pause_seconds_sum", str(g), None)] + 1e-5 for g in range(3))
    assert all(0 < samples[("yidi_gc_generation_pause_unwaited_max_seconds", str(g), None)] <= longest[g] + 1e-6
               and samples[("yidi_gc_generation_pause_waited_seconds_total", str(g), None)]
               <= samples[("yidi_gc_generation_pause_seconds_sum", str(g), None)] + 1e-5 for g in (0, 2))
    # start-up's state frozen; what is tracked outside it is what the calls in flight and the scrape hold
    assert samples[("yidi_gc_tracked_objects", "permanent", None)] > 10 * sum(
        samples[("yidi_gc_tracked_objects", str(g), None)] for g in range(3))
