"""Incremental translation touches only what a change reaches: other waypoints get the very same result object
(the app then pushes nothing to them), and in the affected waypoint unchanged resources keep their Message
objects (so the xds cache skips their serialization)."""

from __future__ import annotations

import copy

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import ConfigStore
from istiod_lite.translate import translate
from istiod_lite.translate.incremental import IncrementalTranslator
from istiod_lite.xds import types


def _mesh(ns: str, n: int) -> list[dict]:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"istio.io/use-waypoint": "wp"}}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "wp", "namespace": ns},
             "spec": {"gatewayClassName": "istio-waypoint",
                      "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}]}}]
    for i in range(n):
        h = f"s{i}.{ns}.example"
        docs += [
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": f"s{i}", "namespace": ns},
             "spec": {"hosts": [h], "location": "MESH_INTERNAL", "resolution": "STATIC",
                      "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                      "endpoints": [{"address": "10.0.0.1", "labels": {"version": "v1"}},
                                    {"address": "10.0.0.2", "labels": {"version": "v2"}}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": f"s{i}", "namespace": ns},
             "spec": {"hosts": [h], "http": [{"route": [{"destination": {"host": h, "subset": "v1"}, "weight": 90},
                                                       {"destination": {"host": h, "subset": "v2"}, "weight": 10}]}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": f"s{i}", "namespace": ns},
             "spec": {"host": h, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                             {"name": "v2", "labels": {"version": "v2"}}]}},
        ]
    return docs


def _setup():
    store = ConfigStore()
    docs = _mesh("a", 5) + _mesh("b", 5)
    for d in docs:
        store.upsert("t", d)
    inc = IncrementalTranslator()
    a, b = ConfigKey("Gateway", "a", "wp"), ConfigKey("Gateway", "b", "wp")
    snap = store.snapshot()
    return store, docs, inc, a, b, snap, inc.translate(snap, a), inc.translate(snap, b)


def test_a_change_in_waypoint_a_leaves_b_untouched_and_reuses_unchanged_messages() -> None:
    store, docs, inc, a, b, snap, ra, rb = _setup()
    vs = copy.deepcopy(next(d for d in docs if d["kind"] == "VirtualService" and d["metadata"] == {"name": "s2", "namespace": "a"}))
    vs["spec"]["http"][0]["route"][0]["weight"] = 50
    vs["spec"]["http"][0]["route"][1]["weight"] = 50
    store.upsert("t", vs)
    snap2 = store.snapshot()
    assert snap2.changed == {ConfigKey("VirtualService", "a", "s2")}
    assert not inc.affected(snap2, b) and inc.affected(snap2, a)
    assert inc.translate(snap2, b) is rb
    ra2 = inc.translate(snap2, a)
    assert inc.stats["incremental"] == 1 and inc.stats["full"] == 2
    old, new = ra.resources.resources, ra2.resources.resources
    # Scoped RDS: only s2's own RouteConfiguration is new; every other one is the very same message
    assert [n for n in old[types.ROUTE] if new[types.ROUTE][n] is not old[types.ROUTE][n]] == ["http.8080/s2.a.example"]
    assert new[types.SCOPED_ROUTE] is old[types.SCOPED_ROUTE]
    assert all(new[types.CLUSTER][n] is old[types.CLUSTER][n] for n in old[types.CLUSTER])
    assert all(new[types.ENDPOINT][n] is old[types.ENDPOINT][n] for n in old[types.ENDPOINT])
    assert new[types.LISTENER] is old[types.LISTENER]
    weights = [c.weight.value for c in next(v for v in new[types.ROUTE]["http.8080/s2.a.example"].message.virtual_hosts
                                            if v.name == "s2.a.example:80").routes[0].route.weighted_clusters.clusters]
    assert weights == [50, 50]
    full = translate(snap2, a)
    assert {n: m.SerializeToString(deterministic=True) for n, m in full.resources.resources[types.ROUTE].items()} == \
        {n: m.SerializeToString(deterministic=True) for n, m in new[types.ROUTE].items()}


def test_a_destination_rule_change_rebuilds_only_that_services_clusters() -> None:
    store, docs, inc, a, b, snap, ra, rb = _setup()
    dr = copy.deepcopy(next(d for d in docs if d["kind"] == "DestinationRule" and d["metadata"] == {"name": "s3", "namespace": "a"}))
    dr["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConnections": 5}}}
    store.upsert("t", dr)
    snap2 = store.snapshot()
    ra2 = inc.translate(snap2, a)
    assert inc.translate(snap2, b) is rb
    old, new = ra.resources.resources[types.CLUSTER], ra2.resources.resources[types.CLUSTER]
    changed = sorted(n for n in old if new[n] is not old[n])
    assert changed == ["inbound-vip|80|http/v1|s3.a.example", "inbound-vip|80|http/v2|s3.a.example",
                       "inbound-vip|80|http|s3.a.example"]
    assert all(new[n].message.circuit_breakers.thresholds[0].max_connections.value == 5 for n in changed)
    assert all(ra2.resources.resources[types.ROUTE][n] is m for n, m in ra.resources.resources[types.ROUTE].items())


def test_unknown_base_falls_back_to_full_translation() -> None:
    store, docs, inc, a, b, snap, ra, rb = _setup()
    other = ConfigStore()
    for d in docs:
        other.upsert("t", d)
    again = inc.translate(other.snapshot(), a)  # a snapshot from elsewhere: its `changed` is not relative to ours
    assert inc.stats["full"] == 3
    assert {n: m.SerializeToString() for n, m in again.resources.resources[types.CLUSTER].items()} == \
        {n: m.SerializeToString() for n, m in ra.resources.resources[types.CLUSTER].items()}


# ---- HBONE (ambient) waypoints ------------------------------------------------------------------------------
def _ambient(n: int) -> list[dict]:
    docs = _mesh("a", n)
    docs[0]["metadata"]["labels"]["istio.io/dataplane-mode"] = "ambient"
    docs[1]["spec"]["listeners"] = [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]
    for i, d in enumerate(d for d in docs if d["kind"] == "ServiceEntry"):
        d["spec"]["addresses"] = [f"240.0.0.{i + 1}"]
    return docs


def _hbone_setup():
    store = ConfigStore()
    docs = _ambient(5)
    for d in docs:
        store.upsert("t", d)
    inc = IncrementalTranslator()
    a = ConfigKey("Gateway", "a", "wp")
    return store, docs, inc, a, inc.translate(store.snapshot(), a)


def _doc(docs: list[dict], kind: str, name: str) -> dict:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name))


def _same_bytes(full, got) -> None:
    for t, by_name in full.resources.resources.items():
        assert {n: m.SerializeToString(deterministic=True) for n, m in by_name.items()} == \
            {n: m.SerializeToString(deterministic=True) for n, m in got.resources.resources[t].items()}


def test_hbone_virtual_service_change_rebuilds_one_route_configuration_only() -> None:
    store, docs, inc, a, r0 = _hbone_setup()
    assert "main_internal" in r0.resources.resources[types.LISTENER]
    vs = _doc(docs, "VirtualService", "s2")
    vs["spec"]["http"][0]["route"][0]["weight"] = 50
    vs["spec"]["http"][0]["route"][1]["weight"] = 50
    store.upsert("t", vs)
    r1 = inc.translate(store.snapshot(), a)
    assert inc.stats["incremental"] == 1 and inc.stats["full"] == 1
    old, new = r0.resources.resources, r1.resources.resources
    assert [n for n in old[types.ROUTE] if new[types.ROUTE][n] is not old[types.ROUTE][n]] == \
        ["inbound-vip|80|http|s2.a.example"]
    assert new[types.LISTENER] is old[types.LISTENER]  # main_internal's chains do not depend on routes
    assert new[types.CLUSTER] is old[types.CLUSTER] and new[types.ENDPOINT] is old[types.ENDPOINT]
    assert r1.changes == {types.ROUTE: frozenset({"inbound-vip|80|http|s2.a.example"})}
    _same_bytes(translate(store.snapshot(), a), r1)


def test_hbone_endpoint_change_rebuilds_that_services_clusters_through_connect_originate() -> None:
    store, docs, inc, a, r0 = _hbone_setup()
    se = _doc(docs, "ServiceEntry", "s3")
    se["spec"]["endpoints"][0]["address"] = "10.0.0.9"
    store.upsert("t", se)
    r1 = inc.translate(store.snapshot(), a)
    assert inc.stats["incremental"] == 1
    old, new = r0.resources.resources, r1.resources.resources
    changed = sorted(n for n in old[types.ENDPOINT] if new[types.ENDPOINT][n] is not old[types.ENDPOINT][n])
    assert changed == ["inbound-vip|80|http/v1|s3.a.example", "inbound-vip|80|http|s3.a.example"]
    cla = new[types.ENDPOINT]["inbound-vip|80|http|s3.a.example"].message  # an Encoded: parsed on demand
    addresses = [lb.endpoint.address for g in cla.endpoints for lb in g.lb_endpoints]
    assert {x.envoy_internal_address.endpoint_id for x in addresses} == {"10.0.0.9:80", "10.0.0.2:80"}
    assert all(x.envoy_internal_address.server_listener_name == "connect_originate" for x in addresses)
    assert all(new[types.CLUSTER][n] is m for n, m in old[types.CLUSTER].items())  # same tunnel settings
    assert new[types.ROUTE] is old[types.ROUTE] and new[types.LISTENER] is old[types.LISTENER]
    _same_bytes(translate(store.snapshot(), a), r1)


def test_hbone_identity_policy_change_rebuilds_its_services_route_only() -> None:
    store, docs, inc, a, r0 = _hbone_setup()
    ap = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "s1", "namespace": "a"},
          "spec": {"targetRefs": [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": "s1"}],
                   "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/client"]}}]}]}}
    store.upsert("t", ap)
    r1 = inc.translate(store.snapshot(), a)
    old, new = r0.resources.resources, r1.resources.resources
    assert [n for n in old[types.ROUTE] if new[types.ROUTE][n] is not old[types.ROUTE][n]] == \
        ["inbound-vip|80|http|s1.a.example"]
    assert "io.istio.peer_principal" in str(new[types.ROUTE]["inbound-vip|80|http|s1.a.example"])
    assert inc.stats["incremental"] == 1
    _same_bytes(translate(store.snapshot(), a), r1)
