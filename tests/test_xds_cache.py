"""SnapshotCache: content-hash versions, change detection, pre-built frames that parse as real protos."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from testsupport.xds_harness import cluster, resources

from istiod_lite.xds import wire
from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE


def test_changed_types_and_versions():
    cache = SnapshotCache()
    assert cache.set_resources("g", resources(clusters=["a", "b"], endpoints=["a"])) == {CLUSTER, ENDPOINT}
    v = cache.get("g")[CLUSTER]
    assert cache.set_resources("g", resources(clusters=["a", "b"], endpoints=["a"])) == set()
    assert cache.get("g")[CLUSTER] is v  # unchanged type keeps its object (and version)
    assert cache.set_resources("g", resources(clusters=["a", "b"], endpoints=["a"], b=5)) == {CLUSTER}
    v2 = cache.get("g")[CLUSTER]
    assert v2["a"] is v["a"] and v2["b"].version != v["b"].version and v2.version != v.version
    # a type that disappears counts as changed; LDS/RDS were empty before and after
    assert cache.set_resources("g", {CLUSTER: {}}) == {CLUSTER, ENDPOINT}
    assert cache.groups() == ["g"]
    cache.remove_group("g")
    assert cache.groups() == [] and cache.get("g") == {}


def test_version_is_content_hash_independent_of_group_and_order():
    cache = SnapshotCache()
    cache.set_resources("g1", {CLUSTER: {"a": cluster("a"), "b": cluster("b")}})
    cache.set_resources("g2", {CLUSTER: {"b": cluster("b"), "a": cluster("a")}})
    assert cache.get("g1")[CLUSTER].version == cache.get("g2")[CLUSTER].version
    assert cache.get("g1")[CLUSTER]["a"].version == cache.get("g2")[CLUSTER]["a"].version
    assert cache.get("g1")[CLUSTER]["a"].version != cache.get("g1")[CLUSTER]["b"].version


def test_frames_parse_as_discovery_responses():
    cache = SnapshotCache()
    cache.set_resources("g", resources(clusters=["a", "b"]))
    entries = cache.get("g")[CLUSTER]
    body = wire.ld_str(1, "v1") + b"".join(e.sotw_frame for e in entries.values()) + wire.ld_str(4, CLUSTER) \
        + wire.ld_str(5, "n1")
    sotw = discovery_pb2.DiscoveryResponse.FromString(body)
    assert sotw.version_info == "v1" and sotw.nonce == "n1" and sotw.type_url == CLUSTER
    parsed = [cluster_pb2.Cluster.FromString(a.value) for a in sotw.resources]
    assert parsed == [cluster("a"), cluster("b")]
    body = b"".join(e.delta_frame for e in entries.values()) + wire.ld_str(6, "gone")
    delta = discovery_pb2.DeltaDiscoveryResponse.FromString(body)
    assert [(r.name, r.version) for r in delta.resources] == [("a", entries["a"].version), ("b", entries["b"].version)]
    assert delta.resources[0].resource.type_url == CLUSTER and list(delta.removed_resources) == ["gone"]


def test_varint_and_large_payloads():
    for n in (0, 1, 127, 128, 300, 2**21, 2**35):
        encoded = wire.varint(n)
        value = sum((b & 0x7F) << (7 * i) for i, b in enumerate(encoded))
        assert value == n and all(b & 0x80 for b in encoded[:-1]) and not encoded[-1] & 0x80
    big = cluster_pb2.Cluster(name="x" * 70000)
    cache = SnapshotCache()
    cache.set_resources("g", {CLUSTER: {"big": big}, LISTENER: {}, ROUTE: {}})
    resp = discovery_pb2.DiscoveryResponse.FromString(cache.get("g")[CLUSTER]["big"].sotw_frame)
    assert cluster_pb2.Cluster.FromString(resp.resources[0].value) == big
