"""After a push, long-lived state keeps serialized bytes, not Envoy messages (issue 6, memory): the incremental
translator's state and results, the App's last results and the xds cache hold `xds.types.Encoded` resources (the
cache serves their very bytes objects), and messages are parsed only on demand (`.message`, /debug/config_dump).

The retention check walks everything reachable from the App (gc.get_referents, not into classes, modules or
functions) and collects protobuf messages: only the SDS Secrets (built by the mesh CA per rotation) may remain."""

from __future__ import annotations

import asyncio
import copy
import gc
import types as pytypes
from collections import Counter

import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from istiod_lite.app import App
from istiod_lite.model.meta import ConfigKey
from istiod_lite.settings import Settings
from istiod_lite.translate import translate
from istiod_lite.translate.incremental import IncrementalTranslator
from istiod_lite.xds import types
from istiod_lite.xds.cache import SnapshotCache, make_entry
from istiod_lite.xds.types import Encoded, as_message
from testsupport.manifests import BOTH_LISTENERS, hbone_echo_input

WP = ConfigKey("Gateway", "default", "waypoint")
_OPAQUE = (type, pytypes.ModuleType, pytypes.FunctionType, pytypes.BuiltinFunctionType, pytypes.MethodType,
           pytypes.CodeType, pytypes.FrameType)


def live_messages(root: object) -> Counter:
    """Protobuf message types (full names) reachable from `root`, with counts (data only: classes, modules and
    functions are not entered, so module-level templates do not count)."""
    found: Counter = Counter()
    seen = {id(root)}
    todo = [root]
    while todo:
        obj = todo.pop()
        if isinstance(obj, Message):
            found[obj.DESCRIPTOR.full_name] += 1
            continue
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, _OPAQUE):
                seen.add(id(ref))
                todo.append(ref)
    return found


_EXTRA = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other, namespace: default}
spec:
  hosts: [other.example.com]
  addresses: [240.240.0.6]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.6, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.example.com]
  http: [{route: [{destination: {host: other.example.com, subset: v1}, weight: 100}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: other, namespace: default}
spec:
  host: other.example.com
  subsets: [{name: v1, labels: {version: v1}}]
"""


def _docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(hbone_echo_input(BOTH_LISTENERS) + _EXTRA) if d]


def _doc(docs: list[dict], kind: str, name: str) -> dict:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name))


def test_after_pushes_only_secrets_are_kept_as_messages() -> None:
    app = App(Settings())
    docs = _docs()
    for d in docs:
        app.store.upsert("t", d)
    asyncio.run(app.push({"startup"}))
    # incremental steps: a route change, a cluster (DestinationRule) change, a policy-only change, an endpoint
    vs = _doc(docs, "VirtualService", "echo")
    vs["spec"]["http"][0]["timeout"] = "3s"
    dr = _doc(docs, "DestinationRule", "other")
    dr["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConnections": 5}}}
    policy = _doc(docs, "AuthorizationPolicy", "only-client")
    policy["spec"]["rules"][0]["from"][0]["source"]["principals"].append("cluster.local/ns/default/sa/other")
    se = _doc(docs, "ServiceEntry", "other")
    se["spec"]["endpoints"][0]["address"] = "10.1.0.7"
    for changed in (vs, dr, policy, se):
        app.store.upsert("t", changed)
        key = ConfigKey(changed["kind"], "default", changed["metadata"]["name"])
        asyncio.run(app.push({key}))
    stats = app._translator.stats
    assert stats["full"] == 1 and stats["incremental"] == 4, stats
    resources = app.resources["default/waypoint"].resources
    assert all(isinstance(r, Encoded) for by_name in resources.values() for r in by_name.values())
    assert len(resources[types.CLUSTER]) >= 4 and resources[types.ENDPOINT]
    kept = live_messages(app)
    assert set(kept) == {"envoy.extensions.transport_sockets.tls.v3.Secret"}, kept
    # and what is served is what translate() builds for the same snapshot, byte for byte
    full = translate(app.store.snapshot(), WP, app.options).resources.resources
    cached = app.cache.get("default/waypoint")
    for type_url, by_name in full.items():
        assert {n: e.any_bytes for n, e in cached[type_url].items()} == \
            {n: any_pb2.Any(type_url=type_url, value=m.SerializeToString(deterministic=True)).SerializeToString()
             for n, m in by_name.items()}, type_url


def test_the_walk_finds_messages_that_are_kept() -> None:
    """The check above could not pass by not looking: a cache handed messages keeps (and the walk finds) them."""
    snap = App(Settings()).store
    for d in _docs():
        snap.upsert("t", d)
    cache = SnapshotCache()
    rs = translate(snap.snapshot(), WP).resources
    cache.set_resources("g", {t: rs.messages(t) for t in rs.resources})  # parsed: messages handed to the cache
    assert live_messages(cache)["envoy.config.cluster.v3.Cluster"] >= 4


def test_the_cache_serves_an_encoded_resources_own_bytes() -> None:
    c = cluster_pb2.Cluster(name="a", type=cluster_pb2.Cluster.EDS)
    c.eds_cluster_config.service_name = "a-eds"
    c.connect_timeout.seconds = 1
    enc = Encoded.of(types.CLUSTER, c)
    assert enc.any_bytes == any_pb2.Any(type_url=types.CLUSTER, value=c.SerializeToString(deterministic=True)) \
        .SerializeToString()
    from_message, from_bytes = make_entry(types.CLUSTER, "a", c), make_entry(types.CLUSTER, "a", enc)
    assert from_bytes.any_bytes is enc.any_bytes  # shared, not copied
    assert (from_bytes.version, from_bytes.delta_frame, from_bytes.eds_name) == \
        (from_message.version, from_message.delta_frame, "a-eds")
    plain = Encoded.of(types.CLUSTER, cluster_pb2.Cluster(name="b", type=cluster_pb2.Cluster.EDS))
    assert make_entry(types.CLUSTER, "b", plain).eds_name == "b"
    cache = SnapshotCache()
    cache.set_resources("g", {types.CLUSTER: {"a": enc}})
    again = Encoded.of(types.CLUSTER, c)  # equal bytes, another object: same entry, nothing new served
    assert cache.set_resources("g", {types.CLUSTER: {"a": again}}) == set()
    same_bytes = Encoded.__new__(Encoded)  # the very bytes object (as the translator hands unchanged resources)
    same_bytes.name, same_bytes.any_bytes, same_bytes._at, same_bytes._cls = "a", enc.any_bytes, enc._at, enc._cls
    before = cache.serializations
    assert cache.set_resources("g", {types.CLUSTER: {"a": same_bytes}}) == set()
    assert cache.serializations == before  # not even hashed again


def test_encoded_parses_fresh_messages_and_compares_by_bytes() -> None:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="x")
    enc = Encoded.of(types.ENDPOINT, cla, "x")
    one, two = enc.message, as_message(enc)
    assert one == cla and two == cla and one is not two and type(one) is endpoint_pb2.ClusterLoadAssignment
    one.cluster_name = "changed"
    assert enc.message.cluster_name == "x"  # nothing parsed is shared or kept
    assert enc == cla and enc == Encoded.of(types.ENDPOINT, cla, "x") and enc != Encoded.of(types.ENDPOINT, one, "x")
    assert enc.SerializeToString(deterministic=True) == cla.SerializeToString(deterministic=True)
    assert as_message(cla) is cla


def test_incremental_results_hold_encoded_even_after_a_full_fallback() -> None:
    from istiod_lite.model.store import snapshot_from_text

    snap = snapshot_from_text(hbone_echo_input(BOTH_LISTENERS))
    inc = IncrementalTranslator()
    missing = inc.translate(snap, ConfigKey("Gateway", "default", "nope"))  # translate()'s own (fallback) result
    got = inc.translate(snap, WP)
    for result in (missing, got):
        assert all(isinstance(r, Encoded) for by_name in result.resources.resources.values() for r in by_name.values())
    assert got.resources.resources[types.CLUSTER]


def test_key_index_stores_one_key_bare_and_behaves_like_sets() -> None:
    from istiod_lite.translate.incremental_state import KeyIndex

    idx = KeyIndex()
    idx.add("c", "a")
    idx.add("c", "a")
    assert idx.get("c") == {"a"} and idx._d["c"] == "a"  # one user: no set kept
    idx.add("c", "b")
    assert idx.get("c") == {"a", "b"}
    idx.discard("c", "a")
    assert idx.get("c") == {"b"} and idx._d["c"] == "b"
    idx.discard("c", "x")
    idx.discard("c", "b")
    assert "c" not in idx and idx.get("c") is None and idx.get("c", set()) == set() and len(idx) == 0
    idx.discard("missing", "a")
    idx.add("d", "a")
    assert list(idx) == ["d"] and idx.pop("d") == "a"
