"""`istiod-lite serve --kubeconfig` against the fake API server, driving a real Envoy: requests route as the
cluster's VirtualService says, a change in the cluster reaches Envoy (also across a dropped watch), and the
elected leader writes the Lease, object status and the waypoint objects."""

from __future__ import annotations

import json
import sys

import pytest

from testsupport import manifests
from testsupport.fake_apiserver import FakeApiServer
from testsupport.http import request
from testsupport.procs import ManagedProcess, ProcessGroup, free_port, wait_until

from istiod_lite.model.gateway import WAYPOINT_CLASS  # noqa: F401 - the package is importable

WAYPOINT = "default/waypoint"


@pytest.fixture
def procs():
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()


def start_istiod(fake: FakeApiServer, tmp_path, procs: ProcessGroup, name: str = "istiod") -> tuple[ManagedProcess, dict]:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    ready = tmp_path / f"{name}.ready.json"
    argv = [sys.executable, "-m", "istiod_lite", "serve", "--kubeconfig", kubeconfig,
            "--xds-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0", "--ready-file", str(ready),
            "--waypoint-xds-address", "istiod-lite.istio-system.svc:15010"]
    proc = procs.add(ManagedProcess(name, argv, tmp_path / f"{name}.log",
                                    env={"POD_NAME": f"{name}-pod", "POD_NAMESPACE": "istio-system"}))

    def ports():
        proc.check_alive()
        return json.loads(ready.read_text()) if ready.exists() else None

    return proc, wait_until(ports, 30, message=lambda: proc.log_tail())


def served_by(port: int) -> str | None:
    try:
        return request(port, "/", host="reviews", timeout=2).headers.get("x-served-by")
    except OSError:
        return None


def test_cluster_config_routes_through_envoy(fake, tmp_path, procs, envoy_factory, backend_factory):
    v1, v2 = backend_factory("reviews-v1"), backend_factory("reviews-v2")
    http_port = free_port()
    for doc in [manifests.namespace(), manifests.waypoint_gateway(http_port),
                *manifests.kube_service("reviews", {"v1": v1.port, "v2": v2.port}),
                manifests.destination_rule_subsets("reviews", ["v1", "v2"]),
                manifests.weighted_virtual_service("reviews", {"v1": 100})]:
        fake.upsert(doc)
    proc, ports = start_istiod(fake, tmp_path, procs)
    envoy_factory.for_waypoint(WAYPOINT, int(ports["xds_port"]))
    wait_until(lambda: served_by(http_port) == "reviews-v1", 30, message=lambda: proc.log_tail())

    # a change in the cluster reaches Envoy
    fake.upsert(manifests.weighted_virtual_service("reviews", {"v2": 100}))
    wait_until(lambda: served_by(http_port) == "reviews-v2", 30, message=lambda: proc.log_tail())

    # a dropped watch and a compacted history: the re-list still converges on the server's state
    fake.drop_watches()
    fake.upsert(manifests.weighted_virtual_service("reviews", {"v1": 100}))
    fake.compact()
    wait_until(lambda: served_by(http_port) == "reviews-v1", 30, message=lambda: proc.log_tail())

    # the only replica is the leader: Lease, waypoint objects, status
    lease = wait_until(lambda: fake.get("Lease", "istio-system", "istiod-lite-leader"), 30,
                       message=lambda: proc.log_tail())
    assert lease["spec"]["holderIdentity"] == "istiod-pod"
    wait_until(lambda: fake.get("Deployment", "default", "waypoint"), 30, message=lambda: proc.log_tail())
    assert fake.get("GatewayClass", "", "istio-waypoint")["spec"]["controllerName"] == "istio.io/mesh-controller"
    assert fake.get("ConfigMap", "default", "waypoint-envoy-bootstrap") is not None

    def vs_condition():
        vs = fake.get("VirtualService", "default", "reviews")
        conds = (vs.get("status") or {}).get("conditions") or []
        return conds[0] if conds else None

    cond = wait_until(vs_condition, 30, message=lambda: proc.log_tail())
    assert (cond["type"], cond["status"]) == ("WaypointAccepted", "True")
    def gateway_conditions():
        status = fake.get("Gateway", "default", "waypoint").get("status") or {}
        return {c["type"]: c for c in status.get("conditions") or []}, status.get("addresses")

    # the waypoint Service exists (applied by the leader) but no waypoint pod is ready: not Programmed, no address
    conds, addresses = wait_until(
        lambda: (gateway_conditions()[0].get("Programmed") or {}).get("reason") == "NoResources" and
        gateway_conditions(), 30, message=lambda: proc.log_tail())
    assert conds["Accepted"]["status"] == "True" and conds["Programmed"]["status"] == "False"
    assert not addresses
    # the waypoint pod becomes ready (what the kubelet and the Deployment controller would report)
    dep = fake.get("Deployment", "default", "waypoint")
    dep["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    fake.upsert(dep)
    wait_until(lambda: gateway_conditions()[0]["Programmed"]["status"] == "True", 30,
               message=lambda: proc.log_tail())
    assert gateway_conditions()[1] == [{"type": "Hostname", "value": "waypoint.default.svc.cluster.local"}]
