"""Never serve what Envoy rejects, and say whose fault it is, with the real Envoy (Delta and SotW).

The TEST-ONLY hook (`serve --test-corrupt-file`, istiod_lite/ops/testhook_corrupt.py) corrupts the ratings
cluster in a way our validation cannot see and Envoy rejects (lb_policy CLUSTER_PROVIDED on an EDS cluster).
Then: Envoy NACKs; istiod-lite blames the input objects of that cluster (issue RejectedByEnvoy with Envoy's
text, log, metric, syncz), keeps serving the last good ratings cluster (traffic to ratings never fails),
every other resource keeps updating (a VirtualService edit reaches Envoy), and once the blamed object changes
the pin is released and the new content is served.
"""

from __future__ import annotations

import json

import pytest

from testsupport import manifests
from testsupport.http import served_by_counts
from testsupport.procs import wait_until
from testsupport.stack import Factories, Traffic, all_in_sync, get_json, metric, start_stack

RATINGS = manifests.RATINGS_HOST
RATINGS_CLUSTER = f"inbound-vip|9080|http|{RATINGS}"


def ratings_rule(max_connections: int) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "ratings", "namespace": "default"},
            "spec": {"host": RATINGS, "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": max_connections}}}}}


def envoy_cluster(envoy, name: str) -> dict | None:
    for c in envoy.config_dump("dynamic_active_clusters").get("configs", []):
        if c.get("cluster", {}).get("name") == name:
            return c["cluster"]
    return None


def max_connections(cluster: dict | None) -> int | None:
    thresholds = (cluster or {}).get("circuit_breakers", {}).get("thresholds", [])
    return thresholds[0].get("max_connections") if thresholds else None


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_rejected_cluster_is_pinned_blamed_and_released(tmp_path, delta):
    corrupt_file = tmp_path / "corrupt.txt"
    f = Factories(tmp_path)
    try:
        stack = start_stack(f, tmp_path, delta=delta, istiod_args=("--test-corrupt-file", str(corrupt_file),
                                                                   "--log-format", "json"))
        istiod, envoy = stack.istiod, stack.envoy
        wait_until(lambda: all_in_sync(istiod), 20, message=stack.diagnostics)
        good = envoy_cluster(envoy, RATINGS_CLUSTER)
        assert good is not None and good.get("lb_policy") != "CLUSTER_PROVIDED"

        with Traffic(stack.listener_port, host=RATINGS) as traffic:
            traffic.wait_more()
            # 1. The next version of the ratings cluster is corrupted by the hook: Envoy rejects it.
            corrupt_file.write_text(RATINGS_CLUSTER + "\n")
            stack.write("ratings-destinationrule.yaml", [ratings_rule(7)])

            def blamed() -> list[dict]:
                return [i for i in get_json(istiod, "/debug/issues") if i["reason"] == "RejectedByEnvoy"]

            issues = wait_until(blamed, 20, message=stack.diagnostics)
            objects = {i["object"] for i in issues}
            assert {"ServiceEntry/default/ratings", "DestinationRule/default/ratings"} <= objects
            assert all(RATINGS_CLUSTER in i["message"] and "cluster provided LB" in i["message"] for i in issues)

            # the last good version is served again and the proxy is back in sync
            wait_until(lambda: all_in_sync(istiod), 20, message=stack.diagnostics)
            syncz = get_json(istiod, "/debug/syncz")
            [pin] = syncz["rejected"]
            assert (pin["type"], pin["name"], pin["waypoint"]) == ("CDS", RATINGS_CLUSTER, "default/waypoint")
            assert "cluster provided LB" in pin["error"] and pin["serving"] != "(left out)"
            cds = next(t for t in syncz["proxies"][0]["types"] if t["type"] == "CDS")
            assert cds["nacks"] >= 1 and "cluster provided LB" in cds["last_nack"]
            assert metric(istiod, "istiod_lite_xds_nacks_total", type="CDS") >= 1
            assert metric(istiod, "istiod_lite_rejected_resources", waypoint="default/waypoint", type="CDS") == 1
            assert metric(istiod, "istiod_lite_rejected_objects", kind="DestinationRule") == 1
            served = envoy_cluster(envoy, RATINGS_CLUSTER)
            assert served.get("lb_policy") != "CLUSTER_PROVIDED" and max_connections(served) != 7
            log_events = [json.loads(line) for line in istiod.log_text().splitlines() if line.startswith("{")]
            assert any(e.get("event") == "rejected_by_envoy" and e.get("name") == RATINGS_CLUSTER and
                       "DestinationRule/default/ratings" in e.get("objects", []) for e in log_events)

            # 2. Every other resource keeps updating: the reviews VirtualService moves all traffic to v2.
            stack.write("reviews-virtualservice.yaml", [manifests.weighted_virtual_service("reviews", {"v2": 100})])
            wait_until(lambda: served_by_counts(stack.listener_port, 10, host="reviews") == {"reviews-v2": 10}, 20,
                       message=stack.diagnostics)
            assert get_json(istiod, "/debug/syncz")["rejected"], "the pin must survive unrelated changes"
            traffic.wait_more()

            # 3. The blamed object changes (and the hook is off): the pin is released, new content served.
            corrupt_file.write_text("")
            stack.write("ratings-destinationrule.yaml", [ratings_rule(9)])
            wait_until(lambda: max_connections(envoy_cluster(envoy, RATINGS_CLUSTER)) == 9, 20,
                       message=stack.diagnostics)
            wait_until(lambda: not blamed() and not get_json(istiod, "/debug/syncz")["rejected"], 20,
                       message=stack.diagnostics)
            wait_until(lambda: all_in_sync(istiod), 20, message=stack.diagnostics)
            traffic.wait_more()
        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.ok > 50
    finally:
        f.stop_all()
