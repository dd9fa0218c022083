"""kill -9 istiod-lite under steady traffic (real Envoy, Delta xDS): Envoy keeps serving with zero failed
requests; a new istiod-lite on the same port is reconnected to and converges; thanks to
`initial_resource_versions` it re-sends no unchanged resource (counted by /metrics and /debug/syncz)."""

from __future__ import annotations

from testsupport import manifests
from testsupport.http import served_by_counts
from testsupport.procs import free_port, wait_until
from testsupport.stack import Factories, Traffic, all_in_sync, metric, proxies, start_stack


def test_kill_9_under_traffic_then_restart(tmp_path):
    xds = ("--xds-address", f"127.0.0.1:{free_port()}")
    f = Factories(tmp_path)
    try:
        stack = start_stack(f, tmp_path, delta=True, istiod_args=xds)
        envoy, first = stack.envoy, stack.istiod
        wait_until(lambda: all_in_sync(first), 20, message=stack.diagnostics)
        assert metric(first, "istiod_lite_xds_resources_sent_total") > 0

        with Traffic(stack.listener_port, host="reviews") as traffic:
            traffic.wait_more()
            first.proc.proc.kill()  # SIGKILL: no goodbye on the stream
            first.proc.proc.wait(10)
            envoy.wait_stats(lambda s: s.get("control_plane.connected_state") == 0,
                             filter_regex="control_plane", what="Envoy notices the control plane is gone")
            traffic.wait_more(50)  # Envoy serves on from its last config

            second = f.istiod(stack.config_dir, extra_args=xds)
            stack.istiod = second
            envoy.wait_connected(30)
            wait_until(lambda: all_in_sync(second), 30, message=stack.diagnostics)
            # nothing changed, so nothing is re-sent: the reconnect carried initial_resource_versions.
            # (SDS Secrets are left out: a new process may hold a new workload certificate.)
            config_types = ("CDS", "EDS", "LDS", "RDS")
            sent = {t: metric(second, "istiod_lite_xds_resources_sent_total", type=t) for t in config_types}
            assert sent == dict.fromkeys(config_types, 0), sent
            [proxy] = proxies(second)
            assert proxy["flavour"] == "delta"
            by_type = {t["type"]: t for t in proxy["types"]}
            assert set(by_type) >= set(config_types)
            assert all(by_type[t]["resources_sent"] == 0 and by_type[t]["acks"] >= 1 for t in config_types), by_type
            traffic.wait_more()

            # and it converges on new config: a VirtualService change sends routes only
            stack.write("reviews-virtualservice.yaml", [manifests.weighted_virtual_service("reviews", {"v2": 100})])
            wait_until(lambda: served_by_counts(stack.listener_port, 10) == {"reviews-v2": 10}, 20,
                       message=stack.diagnostics)
            wait_until(lambda: all_in_sync(second), 20, message=stack.diagnostics)
            # only routes changed: RouteConfigurations are re-sent, no cluster, endpoint or listener
            assert 1 <= metric(second, "istiod_lite_xds_resources_sent_total", type="RDS") <= by_type["RDS"]["subscribed"]
            for t in ("CDS", "EDS", "LDS"):
                assert metric(second, "istiod_lite_xds_resources_sent_total", type=t) == 0
            traffic.wait_more()
        assert traffic.failures == [], traffic.failures[:5]
    finally:
        f.stop_all()
