"""Waypoint readiness: the informer of the waypoint Deployments istiod-lite owns (label selector, ready
replicas) and the leader's duties against the fake API server: the Gateway is Programmed and gets its address
only once its Deployment reports a ready replica."""

from __future__ import annotations

import asyncio
import contextlib

import yaml

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.ops.leader import LeaderDuties, LeaderElector
from istiod_lite.ops.waypoint_objects import MANAGED_BY, MANAGED_BY_LABEL
from istiod_lite.ops.waypoint_readiness import DeploymentReadiness
from istiod_lite.sources.kube import KubeSource
from istiod_lite.sources.kube_kinds import WAYPOINT_DEPLOYMENTS
from testsupport.fake_apiserver import FakeApiServer

GW = ConfigKey("Gateway", "shop", "lite")


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def fast_sleep(_: float) -> None:
    await asyncio.sleep(0.01)


def deployment(name: str, ready: int | None, managed: bool = True, gateway: str = "lite") -> dict:
    labels = {"gateway.networking.k8s.io/gateway-name": gateway}
    if managed:
        labels[MANAGED_BY_LABEL] = MANAGED_BY
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "shop", "labels": labels},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}}}
    if ready is not None:
        obj["status"] = {"replicas": 1, "readyReplicas": ready}
    return obj


def set_ready(fake: FakeApiServer, name: str, ready: int) -> None:
    obj = fake.get("Deployment", "shop", name)
    obj["status"] = {"replicas": 1, "readyReplicas": ready, "availableReplicas": ready}
    fake.upsert(obj)


@contextlib.asynccontextmanager
async def watching_deployments(api, sink):
    source = KubeSource(api, kinds=(WAYPOINT_DEPLOYMENTS,), sleep=fast_sleep, watch_timeout=30)
    task = asyncio.create_task(source.run(sink))
    try:
        yield source
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_informer_tracks_ready_replicas_of_our_deployments_only(fake, api):
    fake.upsert(deployment("lite", ready=None))
    fake.upsert(deployment("impostor", ready=3, managed=False))  # not ours: filtered by the API server
    changes = []
    readiness = DeploymentReadiness(on_change=lambda: changes.append(readiness.snapshot()))
    async with watching_deployments(api, readiness):
        await until(lambda: readiness.synced, what="synced")
        assert readiness.ready_replicas(GW) == 0 and not readiness.ever_ready(GW)
        await until(lambda: fake.open_watches() >= 1, what="watch open")
        set_ready(fake, "lite", 1)
        await until(lambda: readiness.ready_replicas(GW) == 1, what="ready")
        assert readiness.ever_ready(GW)
        fake.delete("Deployment", "shop", "lite")
        await until(lambda: readiness.ready_replicas(GW) == 0, what="deleted")
        assert readiness.ever_ready(GW)  # an address once published stays
    assert changes == [{GW: 0}, {GW: 1}, {}]  # the first sync, then each change of the ready count
    selectors = {r.query.get("labelSelector") for r in fake.requests_to("GET", "/deployments")}
    assert selectors == {f"{MANAGED_BY_LABEL}={MANAGED_BY}"}
    assert all("/namespaces/" not in r.path for r in fake.requests_to("GET", "/deployments"))  # cluster-wide


CONFIG = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/use-waypoint: lite}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: lite, namespace: shop, generation: 1, uid: 0b7f6c2e-8d1a-4c3b-9e5f-112233445566}
spec:
  gatewayClassName: istiod-lite-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: lite, namespace: shop}
spec: {clusterIP: 10.96.0.30, ports: [{name: mesh, port: 15008}]}
"""


def programmed(fake: FakeApiServer):
    status = (fake.get("Gateway", "shop", "lite") or {}).get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or []}
    return conds.get("Programmed"), status.get("addresses")


async def test_leader_programs_the_gateway_once_its_waypoint_pod_is_ready(fake, api):
    for doc in yaml.safe_load_all(CONFIG):
        fake.upsert(doc)
    elector = LeaderElector(api, "istio-system", "istiod-lite-leader", "pod-a", sleep=fast_sleep,
                            lease_duration=3, renew_deadline=2, retry_period=1)
    source = KubeSource(api, kinds=(WAYPOINT_DEPLOYMENTS,), sleep=fast_sleep, watch_timeout=30)
    duties = LeaderDuties(elector, api, classes=("istiod-lite-waypoint",), readiness_source=source)
    duties.submit(snapshot_from_text(CONFIG), [])
    task = asyncio.create_task(duties.run())
    try:
        # the leader creates our GatewayClass and the waypoint's objects; the Deployment has no ready pod yet
        dep = await until(lambda: fake.get("Deployment", "shop", "lite"), what="waypoint Deployment")
        assert dep["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
        assert fake.get("GatewayClass", "", "istio-waypoint") is None  # Istio's class is left alone
        cond, addresses = await until(lambda: programmed(fake)[0] and programmed(fake), what="Gateway status")
        assert (cond["status"], cond["reason"]) == ("False", "NoResources") and not addresses
        await until(lambda: ((fake.get("GatewayClass", "", "istiod-lite-waypoint") or {}).get("status")),
                    what="GatewayClass status")
        # the kubelet reports a ready pod: Programmed, with the address istiod routes bound traffic to
        set_ready(fake, "lite", 1)
        await until(lambda: programmed(fake)[0]["status"] == "True", what="Programmed=True")
        assert programmed(fake)[1] == [{"type": "Hostname", "value": "lite.shop.svc.cluster.local"}]
        # the pod goes away: Programmed=False again, the address stays
        set_ready(fake, "lite", 0)
        await until(lambda: programmed(fake)[0]["status"] == "False", what="Programmed=False")
        assert programmed(fake)[1] == [{"type": "Hostname", "value": "lite.shop.svc.cluster.local"}]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
