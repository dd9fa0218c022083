"""Delta ADS protocol tests against the real grpc.aio server with a scripted client."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from testsupport.ads_client import AdsClient
from testsupport.xds_harness import GROUP, ads_server, cla, resources

from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.types import CLUSTER, ENDPOINT


def names(resp) -> list[str]:
    return sorted(r.name for r in resp.resources)


async def test_first_request_answered_even_when_empty():
    async with ads_server() as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        resp = await c.recv_type(CLUSTER)
        assert list(resp.resources) == [] and list(resp.removed_resources) == []
        await c.ack(resp)
        assert await c.barrier() == []
        [conn] = server.connections()
        assert conn.flavour == "delta" and conn.group == GROUP and conn.node_id == "default/waypoint~1"
        assert conn.types[CLUSTER].in_sync and conn.types[CLUSTER].subscribed == "*"


async def test_wildcard_sends_all_then_only_changes_and_removals():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1", "c2"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)  # legacy wildcard: empty first subscribe
        resp = await c.recv_type(CLUSTER)
        assert names(resp) == ["c1", "c2"]
        v1 = {r.name: r.version for r in resp.resources}
        assert v1["c1"] == cache.get(GROUP)[CLUSTER]["c1"].version
        await c.ack(resp)

        assert cache.set_resources(GROUP, resources(clusters=["c1", "c2"], c1=7)) == {CLUSTER}
        await server.notify({GROUP})
        resp = await c.recv_type(CLUSTER)
        assert names(resp) == ["c1"] and resp.resources[0].version != v1["c1"]
        await c.ack(resp)

        cache.set_resources(GROUP, resources(clusters=["c1"], c1=7))
        await server.notify({GROUP})
        resp = await c.recv_type(CLUSTER)
        assert names(resp) == [] and list(resp.removed_resources) == ["c2"]
        await c.ack(resp)
        assert await c.barrier() == []
        assert server.resources_sent == 3


async def test_named_subscribe_and_unsubscribe_with_empty_nonce_before_ack():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(endpoints=["e1", "e2", "e3"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(ENDPOINT, subscribe=["e1", "e2"])
        first = await c.recv_type(ENDPOINT)
        assert names(first) == ["e1", "e2"]
        # unsubscribe arrives with an empty nonce before the ACK: must be honoured
        await c.delta(ENDPOINT, unsubscribe=["e2"])
        await c.ack(first)
        assert await c.barrier() == []
        cache.set_resources(GROUP, resources(endpoints=["e1", "e2", "e3"], e2=9))
        await server.notify({GROUP})
        assert await c.barrier() == [], "e2 was unsubscribed: its change must not be pushed"
        # incremental subscribe of one more name sends only that name
        await c.delta(ENDPOINT, subscribe=["e3"])
        resp = await c.recv_type(ENDPOINT)
        assert names(resp) == ["e3"]
        await c.ack(resp)
        # re-subscribing e2 sends it again (the client dropped it)
        await c.delta(ENDPOINT, subscribe=["e2"])
        resp = await c.recv_type(ENDPOINT)
        assert names(resp) == ["e2"]
        await c.ack(resp)
        assert await c.barrier() == []
        [conn] = server.connections()
        assert conn.types[ENDPOINT].subscribed == ["e1", "e2", "e3"] and conn.types[ENDPOINT].in_sync


async def test_subscribe_of_missing_name_is_answered():
    async with ads_server() as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(ENDPOINT, subscribe=["nope"])
        resp = await c.recv_type(ENDPOINT)
        assert names(resp) == []


async def test_reconnect_with_initial_versions_sends_only_differences():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1", "c2", "c3"]))
    async with ads_server(cache) as server:
        async with AdsClient(server.test_port, "delta") as c:
            await c.delta(CLUSTER)
            resp = await c.recv_type(CLUSTER)
            have = {r.name: r.version for r in resp.resources}
            await c.ack(resp)
        sent_before = server.resources_sent
        # same state: the reconnect gets an (empty) answer and nothing else
        async with AdsClient(server.test_port, "delta") as c:
            await c.delta(CLUSTER, initial=have)
            resp = await c.recv_type(CLUSTER)
            assert list(resp.resources) == [] and list(resp.removed_resources) == []
            await c.ack(resp)
            assert await c.barrier() == []
        assert server.resources_sent == sent_before
        # state moved on while disconnected: c2 changed, c3 gone, c4 new
        cache.set_resources(GROUP, resources(clusters=["c1", "c2", "c4"], c2=5))
        async with AdsClient(server.test_port, "delta") as c:
            await c.delta(CLUSTER, initial=have)
            resp = await c.recv_type(CLUSTER)
            assert names(resp) == ["c2", "c4"]
            assert list(resp.removed_resources) == ["c3"]


async def test_nack_recorded_not_repushed_then_repaired_on_change():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["good", "bad"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        resp = await c.recv_type(CLUSTER)
        await c.nack(resp, "cluster bad: ring hash min > max")
        assert await c.barrier() == []  # no re-push loop
        [info] = server.test_nacks
        assert info.type_url == CLUSTER and info.nonce == resp.nonce and "ring hash" in info.error_detail
        assert set(info.resource_names) == {"good", "bad"}
        [conn] = server.connections()
        assert conn.types[CLUSTER].nacks == 1 and "ring hash" in conn.types[CLUSTER].last_error
        assert not conn.types[CLUSTER].in_sync and server.nacks == 1
        # a notify without a content change pushes nothing
        cache.set_resources(GROUP, resources(clusters=["good", "bad"]))
        await server.notify({GROUP})
        assert await c.barrier() == []
        # the fix changes "bad": the push repairs every resource of the NACKed response
        cache.set_resources(GROUP, resources(clusters=["good", "bad"], bad=3))
        await server.notify({GROUP})
        resp = await c.recv_type(CLUSTER)
        assert names(resp) == ["bad", "good"]
        await c.ack(resp)
        assert await c.barrier() == []
        assert server.connections()[0].types[CLUSTER].in_sync


async def test_one_unacked_push_per_type_coalesces_newer_state():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        first = await c.recv_type(CLUSTER)
        for timeout in (2, 3, 4):
            cache.set_resources(GROUP, resources(clusters=["c1", f"x{timeout}"], c1=timeout))
            await server.notify({GROUP})
        assert await c.barrier() == [], "nothing more while the first push is un-ACKed"
        assert server.connections()[0].types[CLUSTER].pending_nonce == first.nonce
        await c.ack(first)
        resp = await c.recv_type(CLUSTER)
        assert names(resp) == ["c1", "x4"]
        assert resp.resources[0].version == cache.get(GROUP)[CLUSTER]["c1"].version
        await c.ack(resp)
        assert await c.barrier() == []


async def test_ack_timeout_abandons_pending_and_sends_newer_state():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1"]))
    async with ads_server(cache, ack_timeout=0.3) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        await c.recv_type(CLUSTER)  # never ACKed (Envoy stuck on a warming cluster)
        cache.set_resources(GROUP, resources(clusters=["c1", "c2"]))
        await server.notify({GROUP})
        resp = await c.recv_type(CLUSTER, timeout=5)
        assert "c2" in names(resp)
        assert any(name == "ack_timeout" for name, _ in server.test_events)
        assert server.connections()[0].types[CLUSTER].ack_timeouts == 1


async def test_ack_timeout_without_change_does_not_repush():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1"]))
    async with ads_server(cache, ack_timeout=0.2) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        await c.recv_type(CLUSTER)
        while server.ack_timeouts == 0:  # poll the condition
            await c.barrier()
        assert await c.barrier() == []


async def test_unknown_node_refused_with_invalid_argument():
    async with ads_server() as server:
        async with AdsClient(server.test_port, "delta", waypoint=None) as c:
            await c.delta(CLUSTER)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.recv()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "WAYPOINT" in err.value.details()
        assert server.connections() == []


async def test_updated_cluster_gets_its_endpoints_resent():
    """Envoy re-warms an updated EDS cluster and waits for its endpoints without re-subscribing."""
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1", "c2"], endpoints=["c1", "c2"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        await c.delta(ENDPOINT, subscribe=["c1", "c2"])
        for resp in await c.barrier():
            await c.ack(resp)
        cache.set_resources(GROUP, resources(clusters=["c1", "c2"], endpoints=["c1", "c2"], c1=5))
        await server.notify({GROUP})
        cds, eds = await c.barrier()
        assert (cds.type_url, names(cds)) == (CLUSTER, ["c1"])
        assert (eds.type_url, names(eds)) == (ENDPOINT, ["c1"])  # unchanged content, resent
        await c.ack(cds)
        await c.ack(eds)
        assert await c.barrier() == []
        # an endpoint-only change sends only EDS
        state = resources(clusters=["c1", "c2"], endpoints=["c1", "c2"], c1=5)
        state[ENDPOINT]["c2"] = cla("c2", port=9)
        assert cache.set_resources(GROUP, state) == {ENDPOINT}
        await server.notify({GROUP})
        [eds] = await c.barrier()
        assert (eds.type_url, names(eds)) == (ENDPOINT, ["c2"])


async def test_late_ack_after_timeout_puts_the_proxy_back_in_sync():
    """Envoy can take longer than the ACK timeout to apply a large CDS response (15,000 clusters: > 5 s). When
    its ACK finally arrives and nothing newer was sent, the proxy has exactly that content: in sync, not STALE."""
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1", "c2"]))
    async with ads_server(cache, ack_timeout=0.2) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        resp = await c.recv_type(CLUSTER)
        while server.ack_timeouts == 0:  # poll the condition
            await c.barrier()
        assert not server.connections()[0].types[CLUSTER].in_sync
        await c.ack(resp)  # the late ACK
        assert await c.barrier() == []  # nothing re-sent
        info = server.connections()[0].types[CLUSTER]
        assert info.in_sync and info.acks == 1 and info.version_acked == resp.system_version_info


async def test_held_server_answers_nothing_until_released():
    """A restarted control plane holds its streams until its first state is computed: answering a reconnecting
    proxy from an empty cache would tell it (Delta, initial_resource_versions) that all its resources are gone."""
    cache = SnapshotCache()
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        server.hold()
        await c.delta(CLUSTER, initial={"c1": "v-old"})
        pending = asyncio.ensure_future(c.recv_type(CLUSTER))
        done, _ = await asyncio.wait({pending}, timeout=0.3)  # an absence: nothing to poll for
        assert not done, "a held server answered"
        cache.set_resources(GROUP, resources(clusters=["c1"]))
        server.release()
        resp = await pending
        assert names(resp) == ["c1"] and list(resp.removed_resources) == []


def test_ack_deadline_grows_with_the_response_size():
    """A response of many resources gets more time before its ACK is given up on (Envoy applies ~0.25 ms per
    cluster, XDS-FACTS.md): abandoning a 15,000-cluster CDS after a flat 5 s would resend it whole, again and
    again, to a proxy that is still applying it."""
    from istiod_lite.xds import delta
    from istiod_lite.xds.server import AdsServer, _Stream
    from istiod_lite.xds.subscription import Pending

    server = AdsServer(SnapshotCache(), group_for_node=lambda node: GROUP, ack_timeout=0.2,
                       ack_timeout_per_resource=0.5, clock=lambda: 0.0)
    stream = _Stream(1, "node", GROUP, delta, 0.0)
    small, big = stream.state(CLUSTER), stream.state(ENDPOINT)
    small.requested = big.requested = True
    small.pending = Pending("n1", 0.0, "v", "v", {"a": "1"})
    big.pending = Pending("n2", 0.0, "v", "v", {"a": "1", "b": "1", "c": "1"})
    assert server._next_deadline(stream) == pytest.approx(0.7)  # seconds from now (0): 0.2 + 1 x 0.5
    server._abandon_expired(stream, 0.69)
    assert small.pending is not None and big.pending is not None
    server._abandon_expired(stream, 0.71)
    assert small.pending is None and big.pending is not None  # 3 resources: 0.2 + 3 x 0.5 = 1.7
    server._abandon_expired(stream, 1.69)
    assert big.pending is not None
    server._abandon_expired(stream, 1.71)
    assert big.pending is None and server.ack_timeouts == 2
