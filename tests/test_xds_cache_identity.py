"""SnapshotCache serializes once per change: the very same message object handed again is not re-serialized,
while equal-but-new and changed objects still go through the content hash."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2

from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.types import CLUSTER


def cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=name, connect_timeout=duration_pb2.Duration(seconds=timeout_s))


def test_same_objects_are_not_serialized_again():
    cache = SnapshotCache()
    msgs = {n: cluster(n) for n in ("a", "b", "c")}
    assert cache.set_resources("g", {CLUSTER: msgs}) == {CLUSTER}
    typed = cache.get("g")[CLUSTER]
    assert cache.serializations == 3
    assert cache.set_resources("g", {CLUSTER: dict(msgs)}) == set()
    assert cache.serializations == 3  # identity: nothing serialized
    assert cache.get("g")[CLUSTER] is typed  # nor re-sorted/re-hashed


def test_one_new_object_among_same_ones_serializes_only_it():
    cache = SnapshotCache()
    msgs = {n: cluster(n) for n in ("a", "b", "c")}
    cache.set_resources("g", {CLUSTER: msgs})
    before = cache.get("g")[CLUSTER]
    changed = {**msgs, "b": cluster("b", timeout_s=7)}
    assert cache.set_resources("g", {CLUSTER: changed}) == {CLUSTER}
    after = cache.get("g")[CLUSTER]
    assert cache.serializations == 4
    assert after["a"] is before["a"] and after["c"] is before["c"] and after["b"].version != before["b"].version
    assert after.version != before.version


def test_equal_new_objects_are_hashed_then_remembered():
    cache = SnapshotCache()
    cache.set_resources("g", {CLUSTER: {"a": cluster("a")}})
    entry = cache.get("g")[CLUSTER]["a"]
    fresh = cluster("a")  # equal content, another object
    assert cache.set_resources("g", {CLUSTER: {"a": fresh}}) == set()
    assert cache.serializations == 2 and cache.get("g")[CLUSTER]["a"] is entry
    assert cache.set_resources("g", {CLUSTER: {"a": fresh}}) == set()
    assert cache.serializations == 2  # the newest object is the one remembered


def test_removed_name_and_removed_group_forget_messages():
    cache = SnapshotCache()
    msgs = {n: cluster(n) for n in ("a", "b")}
    cache.set_resources("g", {CLUSTER: msgs})
    assert cache.set_resources("g", {CLUSTER: {"a": msgs["a"]}}) == {CLUSTER}
    assert list(cache.get("g")[CLUSTER]) == ["a"]
    cache.remove_group("g")
    assert cache.set_resources("g", {CLUSTER: msgs}) == {CLUSTER}
    assert cache.serializations == 4  # a re-created group serializes again
