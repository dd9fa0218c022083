"""Incremental translation equals a full rebuild, byte for byte, after every step of randomized change sequences.

Objects come from the golden inputs (every feature the translator has) plus a synthetic mesh with cross-service
routes; steps add, edit (a random leaf of the spec or labels), delete and re-add objects, through the real
ConfigStore (so `ConfigSnapshot.changed` is the store's own change reporting). After each step every waypoint's
IncrementalTranslator result is compared with `translate()`: same resource names per type, same
`SerializeToString(deterministic=True)` per resource, same sources, same issues.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import zlib
from pathlib import Path

import pytest
import yaml

from istiod_lite.model.parse import object_key
from istiod_lite.model.store import ConfigStore
from istiod_lite.translate import translate
from istiod_lite.translate.incremental import IncrementalTranslator
from istiod_lite.xds import types

GOLDEN = Path(__file__).parent / "golden"
ORIGIN = "test"


def _golden_docs(case: str) -> list[dict]:
    text = (GOLDEN / case / "input.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def _strip_hbone(doc: dict) -> dict:
    if doc.get("kind") == "Gateway":
        doc = copy.deepcopy(doc)
        doc["spec"]["listeners"] = [ln for ln in doc["spec"].get("listeners", []) if ln.get("protocol") != "HBONE"]
    return doc


def _synthetic(n: int = 12) -> list[dict]:
    """Services s0..sn in ns `mesh` bound to mesh/wp; VS routing to each other (subsets), DRs, APs."""
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mesh",
                                                               "labels": {"istio.io/use-waypoint": "wp"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "wp", "namespace": "mesh"},
         "spec": {"gatewayClassName": "istio-waypoint",
                  "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"},
                                {"name": "http2", "port": 9090, "protocol": "HTTP"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "wild", "namespace": "mesh"},
         "spec": {"hosts": ["*.wild.example"], "location": "MESH_EXTERNAL", "resolution": "NONE",
                  "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "wild-dr", "namespace": "mesh"},
         "spec": {"host": "*.mesh.example", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 7}}}}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "root", "namespace": "istio-system"},
         "spec": {"targetRefs": [{"kind": "GatewayClass", "group": "gateway.networking.k8s.io",
                                  "name": "istio-waypoint"}],
                  "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}},
    ]
    for i in range(n):
        h = f"s{i}.mesh.example"
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                     "metadata": {"name": f"s{i}", "namespace": "mesh"},
                     "spec": {"hosts": [h], "addresses": [f"240.0.0.{i + 1}"], "location": "MESH_INTERNAL",
                              "resolution": "STATIC",
                              "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                              "endpoints": [{"address": f"10.0.{i}.1", "labels": {"version": "v1"}},
                                            {"address": f"10.0.{i}.2", "labels": {"version": "v2"}}]}})
        other = f"s{(i * 7 + 3) % n}.mesh.example"
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                     "metadata": {"name": f"s{i}", "namespace": "mesh"},
                     "spec": {"hosts": [h], "http": [
                         {"match": [{"uri": {"prefix": "/other"}}], "route": [{"destination": {"host": other}}]},
                         {"route": [{"destination": {"host": h, "subset": "v1"}, "weight": 60 + i},
                                    {"destination": {"host": h, "subset": "v2"}, "weight": 40 - i}]}]}})
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                     "metadata": {"name": f"s{i}", "namespace": "mesh"},
                     "spec": {"host": h, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
                              "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                          {"name": "v2", "labels": {"version": "v2"}}]}})
        if i % 3 == 0:
            docs.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                         "metadata": {"name": f"s{i}", "namespace": "mesh"},
                         "spec": {"targetRefs": [{"kind": "ServiceEntry", "group": "networking.istio.io",
                                                  "name": f"s{i}"}],
                                  "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}})
    return docs


def _synthetic_ambient(n: int = 10, http: bool = True, tcp: bool = True) -> list[dict]:
    """An ambient mesh: waypoint `amb/wp` with an HBONE listener (plus an HTTP and a TCP listener when asked).
    Kubernetes Services with clusterIPs, EndpointSlices and Pods (some opted out of the mesh), ServiceEntries with
    addresses (one MESH_EXTERNAL, one without VIP, one sharing another's VIP), cross-service VS routes with
    subsets, a tcp route, DRs, identity-based AuthorizationPolicies (principals, namespaces, source.principal),
    a service bound by its own label from another namespace (re-bound when that label is edited)."""
    gw_listeners = [{"name": "mesh", "port": 15008, "protocol": "HBONE", "allowedRoutes": {"namespaces": {"from": "All"}}}]
    if http:
        gw_listeners.append({"name": "http", "port": 8080, "protocol": "HTTP"})
    if tcp:
        gw_listeners.append({"name": "db", "port": 5432, "protocol": "TCP"})
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "amb", "labels": {
            "istio.io/use-waypoint": "wp", "istio.io/dataplane-mode": "ambient"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "wp", "namespace": "amb"},
         "spec": {"gatewayClassName": "istio-waypoint", "addresses": [{"type": "IPAddress", "value": "10.9.9.9"}],
                  "listeners": gw_listeners}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "wp-ids", "namespace": "amb"},
         "spec": {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp"}],
                  "action": "DENY", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/x/sa/bad"]}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "ext", "namespace": "amb"},
         "spec": {"hosts": ["api.ext.example"], "addresses": ["240.1.0.1"], "location": "MESH_EXTERNAL",
                  "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": "203.0.113.1"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "novip", "namespace": "amb"},
         "spec": {"hosts": ["novip.amb.example"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}], "endpoints": [{"address": "10.2.0.1"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "dup", "namespace": "amb"},
         "spec": {"hosts": ["dup.amb.example"], "addresses": ["240.0.0.1"], "location": "MESH_INTERNAL",
                  "resolution": "STATIC", "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": "10.2.0.2"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "db", "namespace": "amb"},
         "spec": {"hosts": ["db.amb.example"], "addresses": ["240.0.9.1"], "location": "MESH_INTERNAL",
                  "resolution": "STATIC", "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
                  "endpoints": [{"address": "10.3.0.1", "labels": {"version": "v1"}},
                                {"address": "10.3.0.2", "labels": {"version": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "db", "namespace": "amb"},
         "spec": {"hosts": ["db.amb.example"], "tcp": [
             {"match": [{"port": 5432}], "route": [{"destination": {"host": "db.amb.example", "subset": "v1"}, "weight": 70},
                                                  {"destination": {"host": "db.amb.example", "subset": "v2"}, "weight": 30}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "db", "namespace": "amb"},
         "spec": {"host": "db.amb.example", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                         {"name": "v2", "labels": {"version": "v2"}}]}},
        # bound by its own label from a namespace that is not: edits of that label re-bind it
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "far", "namespace": "other",
                                                             "labels": {"istio.io/use-waypoint": "wp",
                                                                        "istio.io/use-waypoint-namespace": "amb"}},
         "spec": {"clusterIP": "10.96.1.1", "selector": {"app": "far"}, "ports": [{"name": "http", "port": 8080}]}},
    ]
    for i in range(n):
        name = f"k{i}"
        docs += [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "amb"},
             "spec": {"clusterIP": f"10.96.0.{i + 1}", "selector": {"app": name},
                      "ports": [{"name": "http", "port": 8080, "targetPort": 9080}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": f"{name}-x", "namespace": "amb", "labels": {"kubernetes.io/service-name": name}},
             "addressType": "IPv4", "ports": [{"name": "http", "port": 9080}],
             "endpoints": [{"addresses": [f"10.1.{i}.1"], "targetRef": {"kind": "Pod", "name": f"{name}-a", "namespace": "amb"}},
                           {"addresses": [f"10.1.{i}.2"], "targetRef": {"kind": "Pod", "name": f"{name}-b", "namespace": "amb"}}]},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-a", "namespace": "amb",
                                                             "labels": {"app": name, "version": "v1"}},
             "spec": {"containers": [{"name": "app", "image": "x"}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-b", "namespace": "amb",
                                                             "labels": {"app": name, "version": "v2",
                                                                        "istio.io/dataplane-mode": "none"}},
             "spec": {"containers": [{"name": "app", "image": "x"}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": name, "namespace": "amb"},
             "spec": {"host": name, "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 10 + i}}},
                      "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}},
        ]
        other = f"k{(i * 3 + 1) % n}"
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                     "metadata": {"name": name, "namespace": "amb"},
                     "spec": {"hosts": [name], "http": [
                         {"match": [{"uri": {"prefix": "/other"}}], "route": [{"destination": {"host": other}}]},
                         {"match": [{"uri": {"prefix": "/ext"}}], "route": [{"destination": {"host": "api.ext.example"}}]},
                         {"route": [{"destination": {"host": name, "subset": "v1"}, "weight": 50 + i},
                                    {"destination": {"host": name, "subset": "v2"}, "weight": 50 - i}]}]}})
        if i % 2 == 0:
            docs.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                         "metadata": {"name": name, "namespace": "amb"},
                         "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": name}], "action": "ALLOW",
                                  "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/amb/sa/c{i}"]}},
                                                      {"source": {"namespaces": ["amb"]}}],
                                             "to": [{"operation": {"methods": ["GET"]}}]},
                                            {"when": [{"key": "source.principal",
                                                       "values": ["cluster.local/ns/amb/sa/admin"]}]}]}})
        se = f"e{i}.amb.example"
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                     "metadata": {"name": f"e{i}", "namespace": "amb"},
                     "spec": {"hosts": [se], "addresses": [f"240.0.0.{i + 1}"], "location": "MESH_INTERNAL",
                              "resolution": "STATIC", "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                              "endpoints": [{"address": f"10.4.{i}.1", "labels": {"istio.io/dataplane-mode": "ambient"}}]}})
    return docs


def _mutate(doc: dict, rng: random.Random) -> dict:
    """Edit one random leaf (int +1 / -1, string suffix, bool flip) in spec or metadata.labels."""
    doc = copy.deepcopy(doc)
    leaves: list[tuple[object, object]] = []

    def walk(node, depth=0):
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, (dict, list)):
                    walk(v, depth + 1)
                else:
                    leaves.append((node, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, (dict, list)):
                    walk(v, depth + 1)
                else:
                    leaves.append((node, i))

    walk(doc.get("spec") or {})
    walk(doc.get("metadata", {}).get("labels") or {})
    if not leaves:
        doc.setdefault("metadata", {}).setdefault("labels", {})["touched"] = str(rng.random())
        return doc
    node, k = rng.choice(leaves)
    v = node[k]  # type: ignore[index]
    if isinstance(v, bool):
        node[k] = not v  # type: ignore[index]
    elif isinstance(v, int):
        node[k] = v + rng.choice((1, -1, 10))  # type: ignore[index]
    elif isinstance(v, str):
        node[k] = rng.choice((v + "x", v.upper(), "v2", "v1", "/", "*.mesh.example", "s1.mesh.example"))  # type: ignore[index]
    return doc


def _assert_equal(store: ConfigStore, inc: IncrementalTranslator, step: str) -> None:
    snap = store.snapshot()
    fresh = dataclasses.replace(snap)  # no indexes seeded from the previous snapshot: built from scratch
    for gw in snap.waypoints():
        full = translate(fresh, gw.key, inc.options)
        got = inc.translate(snap, gw.key)
        for t in (types.LISTENER, types.SCOPED_ROUTE, types.ROUTE, types.CLUSTER, types.ENDPOINT):
            a, b = full.resources.resources.get(t, {}), got.resources.resources.get(t, {})
            assert list(a) == list(b), f"{step}: {gw.key} {types.SHORT_NAMES[t]} names differ"
            for name in a:
                assert a[name].SerializeToString(deterministic=True) == \
                    b[name].SerializeToString(deterministic=True), f"{step}: {gw.key} {name} differs"
        assert dict(full.resources.sources) == dict(got.resources.sources), f"{step}: sources differ"
        assert list(full.resources.sources) == list(got.resources.sources), f"{step}: sources order differs"
        assert set(full.issues) == set(got.issues), f"{step}: issues differ: " \
            f"{set(full.issues) ^ set(got.issues)}"


def _run(docs: list[dict], seed: int, steps: int) -> IncrementalTranslator:
    rng = random.Random(seed)
    store = ConfigStore()
    inc = IncrementalTranslator()
    live: dict = {}
    for d in docs:
        key = object_key(d)
        if key is not None:
            live[key] = d
            store.upsert(ORIGIN, d)
    removed: dict = {}
    _assert_equal(store, inc, "initial")
    for step in range(steps):
        action = rng.random()
        if action < 0.6 and live:
            key = rng.choice(sorted(live))
            doc = _mutate(live[key], rng)
            if object_key(doc) != key:
                continue
            live[key] = doc
            store.upsert(ORIGIN, doc)
            what = f"edit {key}"
        elif action < 0.8 and live:
            key = rng.choice(sorted(live))
            removed[key] = live.pop(key)
            store.delete(ORIGIN, key)
            what = f"delete {key}"
        elif removed:
            key = rng.choice(sorted(removed))
            live[key] = removed.pop(key)
            store.upsert(ORIGIN, live[key])
            what = f"re-add {key}"
        else:
            continue
        _assert_equal(store, inc, f"seed {seed} step {step}: {what}")
    return inc


CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


@pytest.mark.parametrize("case", CASES)
def test_golden_inputs_without_hbone(case: str) -> None:
    docs = [_strip_hbone(d) for d in _golden_docs(case)]
    _run(docs, seed=zlib.crc32(case.encode()), steps=25)


HBONE_TCP_CASES = [c for c in CASES if any(ln.get("protocol") in ("HBONE", "TCP") for d in _golden_docs(c)
                                            if d.get("kind") == "Gateway" for ln in d["spec"].get("listeners", []))]


@pytest.mark.parametrize("case", HBONE_TCP_CASES)
def test_golden_inputs_with_hbone_and_tcp(case: str) -> None:
    _run(_golden_docs(case), seed=zlib.crc32(case.encode()) + 1, steps=25)


@pytest.mark.parametrize("seed", range(5))
def test_synthetic_ambient_mesh(seed: int) -> None:
    inc = _run(_synthetic_ambient(), seed=seed, steps=60)
    assert inc.stats["incremental"] > 10  # HBONE + HTTP + TCP listeners, translated incrementally


@pytest.mark.parametrize("seed", range(3))
def test_synthetic_ambient_mesh_hbone_only(seed: int) -> None:
    inc = _run(_synthetic_ambient(http=False, tcp=False), seed=100 + seed, steps=60)
    assert inc.stats["incremental"] > 10


@pytest.mark.parametrize("seed", range(6))
def test_synthetic_mesh(seed: int) -> None:
    inc = _run(_synthetic(), seed=seed, steps=60)
    assert inc.stats["incremental"] + inc.stats["reused"] > 10 and inc.stats["incremental"] > 3  # the incremental path is what was compared, not only full rebuilds


@pytest.mark.parametrize("seed", range(2))
def test_mixed_golden_inputs_with_hbone(seed: int) -> None:
    rng = random.Random(seed)
    docs = [d for case in rng.sample(CASES, 4) for d in _golden_docs(case)]
    _run(docs, seed=seed, steps=30)
