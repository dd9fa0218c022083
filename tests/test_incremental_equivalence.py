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


@pytest.mark.parametrize("seed", range(6))
def test_synthetic_mesh(seed: int) -> None:
    inc = _run(_synthetic(), seed=seed, steps=60)
    assert inc.stats["incremental"] + inc.stats["reused"] > 10 and inc.stats["incremental"] > 3  # the incremental path is what was compared, not only full rebuilds


@pytest.mark.parametrize("seed", range(2))
def test_mixed_golden_inputs_with_hbone(seed: int) -> None:
    rng = random.Random(seed)
    docs = [d for case in rng.sample(CASES, 4) for d in _golden_docs(case)]
    _run(docs, seed=seed, steps=30)
