"""A change that reaches a unit (a bound service) only through AuthorizationPolicies re-encodes only its RBAC
configs (incremental_units.rebuild_authz): no route, VirtualService or DestinationRule lookup is redone, and the
result still equals a full translate() byte for byte (resources, sources, issues). Covers policies added, edited,
made invalid, removed, DENY / ALLOW / AUDIT / CUSTOM actions, identity rules, on Scoped RDS listeners, a wildcard
host's single RouteConfiguration and HBONE waypoints (RBAC in the main_internal RouteConfigurations); a change
that reaches a unit through something else as well rebuilds it in full. Also: routes.authz_offset splits a
virtual host's bytes at typed_per_filter_config exactly."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import ConfigStore
from istiod_lite.translate import incremental, routes, translate
from istiod_lite.translate.incremental import IncrementalTranslator
from istiod_lite.xds import types

WP = ConfigKey("Gateway", "m", "wp")
ROOT_NS = "istio-system"


def _se(i: int, hosts: list[str], addresses: list[str]) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": f"s{i}", "namespace": "m"},
            "spec": {"hosts": hosts, "addresses": addresses, "location": "MESH_INTERNAL", "resolution": "STATIC",
                     "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"},
                               {"number": 9090, "name": "http2", "protocol": "HTTP"}],
                     "endpoints": [{"address": f"10.0.{i}.1", "labels": {"version": "v1"}},
                                   {"address": f"10.0.{i}.2", "labels": {"version": "v2"}}]}}


def _mesh(layout: str, n: int = 4) -> list[dict]:
    """Waypoint m/wp with HTTP listeners 8080 and 9090 (plus HBONE for "hbone"); services s0..s{n-1} with VS
    routes to each other and subsets; a root-namespace policy on every waypoint (GatewayClass)."""
    ns_labels = {"istio.io/use-waypoint": "wp"}
    listeners = [{"name": "http", "port": 8080, "protocol": "HTTP"}, {"name": "http2", "port": 9090, "protocol": "HTTP"}]
    if layout == "hbone":
        ns_labels["istio.io/dataplane-mode"] = "ambient"
        listeners.append({"name": "mesh", "port": 15008, "protocol": "HBONE"})
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "m", "labels": ns_labels}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ROOT_NS}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "wp", "namespace": "m"},
         "spec": {"gatewayClassName": "istio-waypoint", "listeners": listeners}},
        _root_policy("DENY", ["/admin"]),
    ]
    for i in range(n):
        h = f"s{i}.m.example"
        docs.append(_se(i, [h], [f"240.0.0.{i + 1}"]))
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": f"s{i}", "namespace": "m"},
                     "spec": {"hosts": [h], "http": [
                         {"match": [{"uri": {"prefix": "/other"}}],
                          "route": [{"destination": {"host": f"s{(i + 1) % n}.m.example"}}]},
                         {"route": [{"destination": {"host": h, "subset": "v1"}, "weight": 70},
                                    {"destination": {"host": h, "subset": "v2"}, "weight": 30}]}]}})
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": f"s{i}", "namespace": "m"},
                     "spec": {"host": h, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                     {"name": "v2", "labels": {"version": "v2"}}]}})
    if layout in ("wildcard", "hbone"):  # a wildcard host: one RouteConfiguration per listener (no Scoped RDS)
        docs.append(_se(n, ["*.wild.example"], [] if layout == "wildcard" else ["240.0.1.1"]))
    return docs


def _root_policy(action: str, paths: list[str], **extra) -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "root", "namespace": ROOT_NS},
            "spec": {"targetRefs": [{"kind": "GatewayClass", "group": "gateway.networking.k8s.io", "name": "istio-waypoint"}],
                     "action": action, "rules": [{"to": [{"operation": {"paths": paths}}]}], **extra}}


def _service_policy(name: str, target: str, spec: dict) -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": "m"},
            "spec": {"targetRefs": [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": target}], **spec}}


_IDENTITY = {"action": "ALLOW", "rules": [
    {"from": [{"source": {"principals": ["cluster.local/ns/m/sa/client"]}}, {"source": {"namespaces": ["m"]}}],
     "to": [{"operation": {"methods": ["GET"]}}]},
    {"when": [{"key": "source.principal", "values": ["cluster.local/ns/m/sa/admin"]}]}]}
_GATEWAY_POLICY = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "gw", "namespace": "m"},
                   "spec": {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp"}],
                            "action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/m/*"]}}]}]}}

# (what, documents to upsert, keys to delete): every step changes AuthorizationPolicies only
STEPS = [
    ("edit root paths", [_root_policy("DENY", ["/admin", "/debug*"])], []),
    ("root ALLOW", [_root_policy("ALLOW", ["/api"])], []),
    ("root AUDIT", [_root_policy("AUDIT", ["/audited"])], []),
    ("root CUSTOM", [_root_policy("CUSTOM", ["/ext"], provider={"name": "ext"})], []),
    ("add identity ALLOW on s1", [_service_policy("p1", "s1", _IDENTITY)], []),
    ("add DENY on s2", [_service_policy("p2", "s2", {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]})], []),
    ("s1 policy invalid", [_service_policy("p1", "s1", {"action": "PERMIT", "rules": [{}]})], []),
    ("s2 policy invalid path", [_service_policy("p2", "s2", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/a*b"]}}]}]})], []),
    ("add gateway policy", [_GATEWAY_POLICY], []),
    ("s1 policy valid again, allow nothing", [_service_policy("p1", "s1", {"action": "ALLOW"})], []),
    ("retarget p2 to s3", [_service_policy("p2", "s3", {"action": "AUDIT", "rules": [{}]})], []),
    ("remove root", [], [ConfigKey("AuthorizationPolicy", ROOT_NS, "root")]),
    ("remove gateway policy and p1", [], [ConfigKey("AuthorizationPolicy", "m", "gw"), ConfigKey("AuthorizationPolicy", "m", "p1")]),
    ("re-add root", [_root_policy("DENY", ["/admin"])], []),
]


def _assert_equal(snap, got, step: str) -> None:
    full = translate(dataclasses.replace(snap), WP)  # fresh indexes: built from scratch
    for t in (types.LISTENER, types.SCOPED_ROUTE, types.ROUTE, types.CLUSTER, types.ENDPOINT):
        a, b = full.resources.resources.get(t, {}), got.resources.resources.get(t, {})
        assert list(a) == list(b), f"{step}: {types.SHORT_NAMES[t]} names differ"
        for name in a:
            assert a[name].SerializeToString(deterministic=True) == b[name].SerializeToString(deterministic=True), \
                f"{step}: {name} differs"
    assert dict(full.resources.sources) == dict(got.resources.sources), f"{step}: sources differ"
    assert list(full.resources.sources) == list(got.resources.sources), f"{step}: sources order differs"
    assert set(full.issues) == set(got.issues), f"{step}: issues differ: {set(full.issues) ^ set(got.issues)}"


class _Counts:
    def __init__(self, monkeypatch) -> None:
        self.units = 0  # incremental_units.build_unit calls (full unit rebuilds)
        self.routes = 0  # routes.virtual_host_route_bytes calls (route parts built)
        build_unit, route_bytes = incremental.build_unit, routes.virtual_host_route_bytes

        def counting_build_unit(*a, **k):
            self.units += 1
            return build_unit(*a, **k)

        def counting_route_bytes(*a, **k):
            self.routes += 1
            return route_bytes(*a, **k)

        monkeypatch.setattr(incremental, "build_unit", counting_build_unit)
        monkeypatch.setattr(routes, "virtual_host_route_bytes", counting_route_bytes)

    def translate(self, inc: IncrementalTranslator, snap):
        self.units = self.routes = 0
        return inc.translate(snap, WP)


@pytest.mark.parametrize("layout", ["scoped", "wildcard", "hbone"])
def test_policy_only_changes_rebuild_rbac_only_and_equal_a_full_translation(layout: str, monkeypatch) -> None:
    store = ConfigStore(root_namespace=ROOT_NS)
    for d in _mesh(layout):
        store.upsert("t", d)
    counts = _Counts(monkeypatch)
    inc = IncrementalTranslator()
    prev = counts.translate(inc, store.snapshot())
    assert counts.units == (4 if layout == "scoped" else 5)  # the first translation builds every unit
    if layout == "hbone":
        assert "main_internal" in prev.resources.resources[types.LISTENER]
    _assert_equal(store.snapshot(), prev, "initial")
    for i, (what, docs, deleted) in enumerate(STEPS):
        for d in docs:
            store.upsert("t", d)
        for key in deleted:
            store.delete("t", key)
        got = counts.translate(inc, store.snapshot())
        assert inc.stats["incremental"] == i + 1 and inc.stats["full"] == 1, what
        assert (counts.units, counts.routes) == (0, 0), f"{what}: routes were rebuilt"
        assert got.changes and set(got.changes) == {types.ROUTE}, f"{what}: {got.changes}"  # RBAC: routes only
        assert got.resources.resources[types.CLUSTER] is prev.resources.resources[types.CLUSTER], what
        _assert_equal(store.snapshot(), got, what)
        prev = got
    if layout == "hbone":  # identity rules on the HBONE chains read the peer principal from filter state
        store.upsert("t", _service_policy("p1", "s1", _IDENTITY))
        got = counts.translate(inc, store.snapshot())
        assert counts.units == 0
        assert "io.istio.peer_principal" in str(got.resources.resources[types.ROUTE]["inbound-vip|8080|http|s1.m.example"])
        _assert_equal(store.snapshot(), got, "identity on HBONE")


def test_a_unit_also_reached_by_another_change_is_rebuilt_in_full(monkeypatch) -> None:
    store = ConfigStore(root_namespace=ROOT_NS)
    docs = _mesh("hbone")
    for d in docs:
        store.upsert("t", d)
    counts = _Counts(monkeypatch)
    inc = IncrementalTranslator()
    counts.translate(inc, store.snapshot())
    s2 = inc._states[WP].units["s2.m.example"]  # type: ignore[union-attr]
    vs = copy.deepcopy(next(d for d in docs if d["kind"] == "VirtualService" and d["metadata"]["name"] == "s2"))
    vs["spec"]["http"][1]["route"][0]["weight"], vs["spec"]["http"][1]["route"][1]["weight"] = 40, 60
    store.upsert("t", vs)  # the same snapshot: a VS of s2 and the root policy (every service)
    store.upsert("t", _root_policy("ALLOW", ["/x"]))
    got = counts.translate(inc, store.snapshot())
    assert counts.units == 1  # s2 only; the other services' RBAC re-encoded
    assert counts.routes == len(s2.vhosts) + len(s2.extra) == 4  # s2's: listeners 8080, 9090, 2 HBONE chains
    assert inc.stats["incremental"] == 1
    _assert_equal(store.snapshot(), got, "VS + policy")


def test_authz_offset_splits_a_virtual_host_at_its_rbac_configs() -> None:
    store = ConfigStore(root_namespace=ROOT_NS)
    for d in _mesh("scoped") + [_service_policy("p1", "s1", _IDENTITY)]:
        store.upsert("t", d)
    inc = IncrementalTranslator()
    inc.translate(store.snapshot(), WP)
    units = inc._states[WP].units  # type: ignore[union-attr]
    for unit in units.values():
        for _, vh in unit.vhosts.values():
            at = routes.authz_offset(vh)
            assert 0 < at < len(vh)  # every service has the root policy
            assert vh[at] == (15 << 3) | 2  # typed_per_filter_config's tag
            assert routes.authz_offset(vh[:at]) == at  # no RBAC config before it
    assert routes.authz_offset(b"") == 0
