"""What long-lived state keeps (issue 6, memory): the incremental translator keeps virtual hosts as bytes and
its result messages in arenas of their own, the RejectionTracker keeps references to what was served instead of
per-resource copies, and the mesh CA (with its `cryptography` import) is created only when a waypoint serves
HBONE."""

from __future__ import annotations

import sys

from envoy.config.cluster.v3 import cluster_pb2

from istiod_lite.mesh_identity import WaypointSecrets
from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.ops.nack import RejectionTracker
from istiod_lite.settings import Settings
from istiod_lite.translate import translate
from istiod_lite.translate.incremental import IncrementalTranslator
from istiod_lite.translate.incremental_state import compact
from istiod_lite.xds import types
from testsupport.manifests import BOTH_LISTENERS, HBONE_LISTENERS, HTTP_LISTENERS, hbone_echo_input
from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.server import NackInfo

WP = ConfigKey("Gateway", "default", "waypoint")


_input = hbone_echo_input
HBONE, HTTP, BOTH = HBONE_LISTENERS, HTTP_LISTENERS, BOTH_LISTENERS


def test_incremental_state_keeps_virtual_hosts_as_bytes_and_results_equal_translate() -> None:
    snap = snapshot_from_text(_input(BOTH))
    inc = IncrementalTranslator()
    result = inc.translate(snap, WP)
    st = inc._states[WP]
    assert st is not None and st.units
    vhosts = [vh for u in st.units.values() for vh in u.vhosts.values()]
    assert vhosts and all(isinstance(name, str) and isinstance(raw, bytes) for name, raw in vhosts)
    full = translate(snap, WP).resources.resources
    for type_url, by_name in full.items():
        assert {n: m.SerializeToString(deterministic=True) for n, m in result.resources.resources[type_url].items()} \
            == {n: m.SerializeToString(deterministic=True) for n, m in by_name.items()}, type_url


def test_compact_gives_an_equal_independent_message() -> None:
    c = cluster_pb2.Cluster(name="a")
    c.connect_timeout.seconds = 3
    copy = compact(c)
    assert copy == c and copy is not c and type(copy) is cluster_pb2.Cluster
    c.connect_timeout.seconds = 4
    assert copy.connect_timeout.seconds == 3


def _cluster(ms: int) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name="a")
    c.connect_timeout.FromMilliseconds(ms)
    return c


def test_rejection_tracker_finds_the_acked_message_through_the_caches_type_resources() -> None:
    cache, t, group = SnapshotCache(), RejectionTracker(clock=lambda: 0.0), "ns/wp"
    pushed = []
    for ms in (1000, 2000, 3000):  # three pushes; Envoy ACKs the first one late, then NACKs the third
        res = {types.CLUSTER: {"a": _cluster(ms)}}
        cache.set_resources(group, res)
        t.served(group, res, cache.get(group), {(types.CLUSTER, "a"): ("Service/ns/a",)})
        pushed.append(cache.get(group)[types.CLUSTER]["a"].version)
    history = t._sent[group][types.CLUSTER]
    assert len(history) == 3 and history[-1][0] is cache.get(group)[types.CLUSTER]  # references, not copies
    t.acked(group, types.CLUSTER, {"a": pushed[0]})
    [pin] = t.rejected(NackInfo("n~1", group, "delta", types.CLUSTER, "n", "boom", ("a",), {"a": pushed[2]}))
    assert pin.good_version == pushed[0] and pin.good.connect_timeout.seconds == 1
    t.acked(group, types.CLUSTER, {"a": "not-a-version-we-sent"})
    assert t._good[group][(types.CLUSTER, "a")][0] == pushed[0]


def test_ca_is_created_only_when_a_waypoint_serves_hbone() -> None:
    secrets = WaypointSecrets(Settings(trust_domain="cluster.local", cert_lifetime=3600))
    plain = snapshot_from_text(_input(HTTP))
    resources = translate(plain, WP).resources.resources
    assert secrets.add(plain.gateway(WP), resources) is resources
    secrets.retain([plain.gateway(WP)])
    assert secrets._ca is None and not secrets.due() and secrets.seconds_until_rotation() > 0
    hbone = snapshot_from_text(_input(HBONE))
    served = secrets.add(hbone.gateway(WP), translate(hbone, WP).resources.resources)
    assert secrets._ca is not None and sorted(served[types.SECRET]) == ["ROOTCA", "default"]


def test_app_does_not_import_cryptography_without_tls() -> None:
    import subprocess

    code = ("import sys; from istiod_lite.app import App; from istiod_lite.settings import Settings; "
            "App(Settings()); print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
