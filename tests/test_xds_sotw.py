"""State-of-the-World ADS protocol tests against the real grpc.aio server with a scripted client."""

from __future__ import annotations

import grpc
import pytest
from testsupport.ads_client import AdsClient, names_of
from testsupport.xds_harness import GROUP, ads_server, resources

from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.types import CLUSTER, ENDPOINT, ROUTE


async def test_first_request_answered_even_when_empty():
    async with ads_server() as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(CLUSTER)
        resp = await c.recv_type(CLUSTER)
        assert list(resp.resources) == [] and resp.version_info
        await c.ack(resp)
        assert await c.barrier() == []
        [conn] = server.connections()
        assert conn.flavour == "sotw" and conn.types[CLUSTER].in_sync
        assert conn.types[CLUSTER].version_acked == resp.version_info


async def test_cds_responses_carry_the_full_set():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1", "c2"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(CLUSTER)
        first = await c.recv_type(CLUSTER)
        assert names_of(first) == ["c1", "c2"]
        await c.ack(first)
        cache.set_resources(GROUP, resources(clusters=["c1", "c2"], c1=4))
        await server.notify({GROUP})
        resp = await c.recv_type(CLUSTER)
        assert names_of(resp) == ["c1", "c2"] and resp.version_info != first.version_info
        await c.ack(resp)
        # a notify with identical content sends nothing
        cache.set_resources(GROUP, resources(clusters=["c1", "c2"], c1=4))
        await server.notify({GROUP})
        assert await c.barrier() == []


async def test_names_change_with_previous_nonce_and_version_is_answered():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(endpoints=["e1", "e2", "e3"], routes=["r1"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(ENDPOINT, ["e1"])
        resp = await c.recv_type(ENDPOINT)
        assert names_of(resp) == ["e1"]
        await c.ack(resp)
        assert await c.barrier() == []
        # same nonce + version as the ACK, but more names: looks like a repeated ACK, is a new request
        await c.sotw(ENDPOINT, ["e1", "e2"], version=resp.version_info, nonce=resp.nonce)
        resp2 = await c.recv_type(ENDPOINT)
        assert names_of(resp2) == ["e2"] and resp2.version_info != resp.version_info  # named type: what it lacks
        await c.ack(resp2)
        # a change of an unrequested name sends nothing; of a requested one, that one
        cache.set_resources(GROUP, resources(endpoints=["e1", "e2", "e3"], routes=["r1"], e3=9))
        await server.notify({GROUP})
        assert await c.barrier() == []
        cache.set_resources(GROUP, resources(endpoints=["e1", "e2", "e3"], routes=["r1"], e3=9, e2=9))
        await server.notify({GROUP})
        resp3 = await c.recv_type(ENDPOINT)
        assert names_of(resp3) == ["e2"]
        await c.ack(resp3)  # (routes wait for the EDS ACK: make before break)
        await c.sotw(ROUTE, ["r1"])
        assert names_of(await c.recv_type(ROUTE)) == ["r1"]


async def test_nack_keeps_old_version_no_loop_then_push_after_change_and_stale_error_ack():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["good", "bad"]))
    async with ads_server(cache) as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(CLUSTER)
        first = await c.recv_type(CLUSTER)
        await c.ack(first)
        cache.set_resources(GROUP, resources(clusters=["good", "bad"], bad=2))
        await server.notify({GROUP})
        bad = await c.recv_type(CLUSTER)
        await c.nack(bad, "bad cluster")  # old version + new nonce + error_detail
        assert await c.barrier() == []
        assert server.nacks == 1 and server.test_nacks[0].nonce == bad.nonce
        [conn] = server.connections()
        assert conn.types[CLUSTER].last_error == "bad cluster" and not conn.types[CLUSTER].in_sync
        assert conn.types[CLUSTER].version_acked == first.version_info
        cache.set_resources(GROUP, resources(clusters=["good", "bad"], bad=3))
        await server.notify({GROUP})
        fixed = await c.recv_type(CLUSTER)
        assert names_of(fixed) == ["bad", "good"]
        # Envoy may ACK the new version while still carrying the old error_detail: that is an ACK
        await c.sotw(CLUSTER, version=fixed.version_info, nonce=fixed.nonce, error="bad cluster")
        assert await c.barrier() == []
        assert server.nacks == 1
        [conn] = server.connections()
        assert conn.types[CLUSTER].version_acked == fixed.version_info and conn.types[CLUSTER].in_sync


async def test_ack_timeout_then_newer_state():
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1"]))
    async with ads_server(cache, ack_timeout=0.3) as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(CLUSTER)
        await c.recv_type(CLUSTER)  # never ACKed
        cache.set_resources(GROUP, resources(clusters=["c1", "c2"]))
        await server.notify({GROUP})
        resp = await c.recv_type(CLUSTER, timeout=5)
        assert names_of(resp) == ["c1", "c2"]
        assert server.ack_timeouts == 1


async def test_unknown_node_refused():
    async with ads_server() as server, AdsClient(server.test_port, "sotw", waypoint="") as c:
        await c.sotw(CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.recv()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_late_ack_after_timeout_puts_the_proxy_back_in_sync():
    """The ACK of a response given up on (ACK timeout) arrives later, nothing newer was sent: in sync again."""
    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1", "c2"]))
    async with ads_server(cache, ack_timeout=0.2) as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(CLUSTER)
        resp = await c.recv_type(CLUSTER)
        while server.ack_timeouts == 0:  # poll the condition
            await c.barrier()
        assert not server.connections()[0].types[CLUSTER].in_sync
        await c.ack(resp)  # the late ACK
        assert await c.barrier() == []
        info = server.connections()[0].types[CLUSTER]
        assert info.in_sync and info.version_acked == resp.version_info
