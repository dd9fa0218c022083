"""RejectionTracker (ops/nack.py): last good versions, pins after a NACK, release when a blamed input
object changes, and the RejectedByEnvoy issues."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from istiod_lite.model.meta import ConfigKey
from istiod_lite.ops.nack import REASON, RejectionTracker
from istiod_lite.xds.cache import make_entry
from istiod_lite.xds.server import NackInfo
from istiod_lite.xds.types import CLUSTER

G = "default/waypoint"
SOURCES = {(CLUSTER, "a"): ("DestinationRule/default/a", "Service/default/a"), (CLUSTER, "b"): ("Service/default/b",)}


def cluster(name: str, ms: int) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.FromMilliseconds(ms)
    return c


def serve(t: RejectionTracker, resources: dict) -> dict[str, str]:
    versions = {n: make_entry(CLUSTER, n, m).version for n, m in resources[CLUSTER].items()}
    t.served(G, resources, {CLUSTER: versions}, SOURCES)
    return versions


def nack(versions: dict[str, str], names=None) -> NackInfo:
    names = names or sorted(versions)
    return NackInfo("default/waypoint~1", G, "delta", CLUSTER, "1-2", "boom", tuple(names),
                    {n: versions[n] for n in names})


def test_pin_serves_last_good_until_a_blamed_object_changes():
    t = RejectionTracker(clock=lambda: 0.0)
    v1 = serve(t, {CLUSTER: {"a": cluster("a", 1000), "b": cluster("b", 1000)}})
    t.acked(G, CLUSTER, v1)
    v2 = serve(t, {CLUSTER: {"a": cluster("a", 2000), "b": cluster("b", 1000)}})
    [pin] = t.rejected(nack(v2))  # b did not change: only a is blamed
    assert (pin.name, pin.sources, pin.good_version) == ("a", SOURCES[(CLUSTER, "a")], v1["a"])
    newer = {CLUSTER: {"a": cluster("a", 3000), "b": cluster("b", 5000)}}
    applied = t.apply(G, newer)
    assert applied[CLUSTER]["a"].connect_timeout.seconds == 1 and applied[CLUSTER]["b"].connect_timeout.seconds == 5
    issues = t.issues()
    assert {i.key for i in issues} == {ConfigKey("DestinationRule", "default", "a"), ConfigKey("Service", "default", "a")}
    assert all(i.reason == REASON and "boom" in i.message and i.is_error for i in issues)
    assert t.release([ConfigKey("Service", "default", "b")]) == []  # not a contributor of a
    assert [p.name for p in t.release([ConfigKey("DestinationRule", "default", "a")])] == ["a"]
    assert t.apply(G, newer)[CLUSTER]["a"].connect_timeout.seconds == 3 and not t.issues()


def test_never_accepted_resource_is_left_out_and_removal_forgets_it():
    t = RejectionTracker()
    v = serve(t, {CLUSTER: {"a": cluster("a", 1000)}})
    [pin] = t.rejected(nack(v))
    assert pin.good is None and pin.describe()["serving"] == "(left out)"
    assert t.apply(G, {CLUSTER: {"a": cluster("a", 1000)}}) == {CLUSTER: {}}
    assert [p.name for p in t.forget_group(G)] == ["a"] and not t.pinned()
