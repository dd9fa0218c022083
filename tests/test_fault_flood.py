"""A config directory flooded with 500 edits in 5 s while istiod-lite serves a real Envoy (Delta): the
debouncer coalesces them into a few pushes, the config finally served equals the translation of the final
files (and Envoy is in sync with it and routes by it), and istiod-lite's memory stays bounded."""

from __future__ import annotations

import json
import time

from google.protobuf import json_format

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_files
from istiod_lite.translate import translate
from istiod_lite.xds import types
from testsupport import manifests
from testsupport.http import served_by_counts
from testsupport.procs import wait_until
from testsupport.stack import Factories, Traffic, all_in_sync, metric, start_stack

EDITS = 500
SECONDS = 5.0
# the edited objects are VirtualServices: they shape routes (and which clusters exist). Listeners are left out
# of the comparison: their addresses depend on serve flags the offline translation does not know.
CONFIG_TYPES = (types.CLUSTER, types.ENDPOINT, types.ROUTE)


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def expected_dump(config_dir) -> dict:
    """What /debug/config_dump must show: the offline translation of the files now in the directory."""
    snapshot = snapshot_from_files(sorted(config_dir.glob("*.yaml")))
    rs = translate(snapshot, ConfigKey("Gateway", "default", "waypoint")).resources
    return {types.SHORT_NAMES[t]: [json_format.MessageToDict(
        types.as_message(rs.resources[t][n]), preserving_proto_field_name=True)
                                   for n in sorted(rs.resources[t])] for t in CONFIG_TYPES}


def test_500_edits_in_5_seconds(tmp_path):
    f = Factories(tmp_path)
    try:
        stack = start_stack(f, tmp_path, istiod_args=("--debounce", "0.2", "--debounce-max", "1.0"))
        istiod = stack.istiod
        wait_until(lambda: all_in_sync(istiod), 20, message=stack.diagnostics)
        pushes_before = metric(istiod, "istiod_lite_push_duration_seconds_count")
        rss_before = rss_kib(istiod.proc.pid)

        with Traffic(stack.listener_port, host="reviews") as traffic:
            start = time.monotonic()
            for i in range(EDITS):
                if i % 2:
                    w = i % 101
                    stack.write("reviews-virtualservice.yaml",
                                [manifests.weighted_virtual_service("reviews", {"v1": w, "v2": 100 - w})])
                else:
                    stack.write("ratings-virtualservice.yaml", [manifests.resilient_virtual_service(
                        manifests.RATINGS_HOST, f"{100 + i}ms", 1 + i % 5, name="ratings")])
                delay = start + SECONDS * (i + 1) / EDITS - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            # the final state
            stack.write("reviews-virtualservice.yaml", [manifests.weighted_virtual_service("reviews", {"v2": 100})])
            stack.write("ratings-virtualservice.yaml", [manifests.resilient_virtual_service(
                manifests.RATINGS_HOST, "3s", 2, name="ratings")])
            flood_seconds = time.monotonic() - start

            expected = expected_dump(stack.config_dir)

            def served_is_final() -> bool:
                dump = istiod.config_dump("default/waypoint")
                return {k: dump.get(k) for k in expected} == expected

            def mismatch() -> str:
                dump = istiod.config_dump("default/waypoint")
                return "\n".join(f"{k}: served {json.dumps(dump.get(k))[:1500]}\n   expected {json.dumps(expected[k])[:1500]}"
                                 for k in expected if dump.get(k) != expected[k])

            wait_until(served_is_final, 20, message=mismatch)
            wait_until(lambda: all_in_sync(istiod), 20, message=stack.diagnostics)
            assert served_by_counts(stack.listener_port, 10) == {"reviews-v2": 10}
            routes = stack.envoy.route_configs()
            assert "3s" in str(routes) and "reviews" in str(routes)
        assert traffic.failures == [], traffic.failures[:5]

        pushes = metric(istiod, "istiod_lite_push_duration_seconds_count") - pushes_before
        events = metric(istiod, "istiod_lite_source_events_total")
        assert flood_seconds < SECONDS * 2, "the flood itself was too slow to mean anything"
        assert events >= 30, f"the file source saw only {events} changes"
        assert 1 <= pushes <= 25, f"{pushes} pushes for {EDITS} edits ({events} source events)"
        growth_mib = (rss_kib(istiod.proc.pid) - rss_before) / 1024
        assert growth_mib < 40, f"RSS grew by {growth_mib:.1f} MiB"
    finally:
        f.stop_all()
