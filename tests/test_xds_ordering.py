"""Push ordering (make before break), and resources serialized once for every stream of a group."""

from __future__ import annotations

import asyncio

from testsupport.ads_client import AdsClient, names_of
from testsupport.xds_harness import GROUP, ads_server, cla, cluster, listener, route

from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE


def state(clusters, route_to, listener_port_tag="r", prefix="/"):
    rc = route("r1", route_to)
    rc.virtual_hosts[0].routes[0].match.prefix = prefix
    return {
        CLUSTER: {c: cluster(c) for c in clusters},
        ENDPOINT: {c: cla(c) for c in clusters},
        LISTENER: {"l1": listener("l1", listener_port_tag)},
        ROUTE: {"r1": rc},
    }


def types_of(responses) -> list[str]:
    return [r.type_url for r in responses]


async def test_delta_make_before_break():
    cache = SnapshotCache()
    cache.set_resources(GROUP, state(["c1"], "c1"))
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        # all four requested at once: CDS and EDS go first, LDS/RDS wait for their ACKs
        await c.delta(CLUSTER)
        await c.delta(ENDPOINT, subscribe=["c1"])
        await c.delta(LISTENER)
        await c.delta(ROUTE, subscribe=["r1"])
        cds, eds = await c.barrier()
        assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
        await c.ack(cds)
        assert await c.barrier() == []
        await c.ack(eds)
        lds, rds = await c.barrier()
        assert (lds.type_url, rds.type_url) == (LISTENER, ROUTE)
        await c.ack(lds)
        await c.ack(rds)
        assert await c.barrier() == []

        # a new cluster and a route to it: CDS first; RDS only after the CDS ACK
        cache.set_resources(GROUP, state(["c1", "c2"], "c2"))
        await server.notify({GROUP})
        [cds] = await c.barrier()
        assert cds.type_url == CLUSTER and [r.name for r in cds.resources] == ["c2"]
        # like Envoy: subscribe the new cluster's endpoints while withholding the CDS ACK
        await c.delta(ENDPOINT, subscribe=["c2"])
        [eds] = await c.barrier()
        assert eds.type_url == ENDPOINT and [r.name for r in eds.resources] == ["c2"]
        await c.ack(eds)
        assert await c.barrier() == [], "routes wait for the CDS ACK"
        await c.ack(cds)
        [rds] = await c.barrier()
        assert rds.type_url == ROUTE
        await c.ack(rds)

        # removing c1 while listener and route change: LDS, RDS first, the removal only after their ACKs
        cache.set_resources(GROUP, state(["c2"], "c2", listener_port_tag="rr", prefix="/v2"))
        await server.notify({GROUP})
        lds, rds = await c.barrier()
        assert types_of([lds, rds]) == [LISTENER, ROUTE]
        await c.ack(lds)
        assert await c.barrier() == []
        await c.ack(rds)
        cds, eds = await c.barrier()
        assert types_of([cds, eds]) == [CLUSTER, ENDPOINT]
        assert list(cds.removed_resources) == ["c1"] and list(cds.resources) == []
        assert list(eds.removed_resources) == ["c1"]


async def test_sotw_cluster_removal_waits_for_routes():
    cache = SnapshotCache()
    cache.set_resources(GROUP, state(["c1", "c2"], "c1"))
    async with ads_server(cache) as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(CLUSTER)
        cds = await c.recv_type(CLUSTER)
        await c.ack(cds)
        await c.sotw(ROUTE, ["r1"])
        rds = await c.recv_type(ROUTE)
        await c.ack(rds)
        assert await c.barrier() == []
        cache.set_resources(GROUP, state(["c2"], "c2"))
        await server.notify({GROUP})
        [rds] = await c.barrier()  # the full CDS set minus c1 is held back
        assert rds.type_url == ROUTE
        await c.ack(rds)
        [cds] = await c.barrier()
        assert cds.type_url == CLUSTER and names_of(cds) == ["c2"]


async def test_each_resource_serialized_once_for_all_streams():
    cache = SnapshotCache()
    cache.set_resources(GROUP, state(["c1", "c2", "c3"], "c1"))
    assert cache.serializations == 8
    async with ads_server(cache) as server:
        async with AdsClient(server.test_port, "delta", node_id="a") as a, \
                AdsClient(server.test_port, "delta", node_id="b") as b, \
                AdsClient(server.test_port, "sotw", node_id="s") as s:
            await a.delta(CLUSTER)
            await b.delta(CLUSTER)
            await s.sotw(CLUSTER)
            ra, rb, rs = await a.recv(), await b.recv(), await s.recv()
            assert [r.SerializeToString() for r in ra.resources] == [r.SerializeToString() for r in rb.resources]
            assert [r.resource.SerializeToString() for r in ra.resources] == \
                [x.SerializeToString() for x in rs.resources]
            entries = cache.get(GROUP)[CLUSTER]
            assert [x.SerializeToString() for x in rs.resources] == [e.any_bytes for e in entries.values()]
        assert cache.serializations == 8  # streams never serialize resources
        assert server.resources_sent == 9
        # an unchanged resource keeps its cached entry object across set_resources
        before = cache.get(GROUP)[CLUSTER]["c2"]
        cache.set_resources(GROUP, state(["c1", "c2", "c3"], "c2"))
        assert cache.get(GROUP)[CLUSTER]["c2"] is before


async def test_delta_routes_do_not_wait_for_a_cluster_update_that_adds_nothing():
    """Make before break is about NEW clusters: a route to a cluster Envoy lacks answers 503. An update of a
    cluster the proxy already has (a DestinationRule edit) keeps the old version serving while the new one warms,
    so the route change of the same edit goes out without waiting for the CDS ACK (one round trip, not two)."""
    cache = SnapshotCache()
    cache.set_resources(GROUP, state(["c1"], "c1"))
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(CLUSTER)
        await c.delta(ENDPOINT, subscribe=["c1"])
        await c.delta(LISTENER)
        await c.delta(ROUTE, subscribe=["r1"])
        for r in await c.barrier():
            await c.ack(r)
        for r in await c.barrier():
            await c.ack(r)
        assert await c.barrier() == []
        updated = state(["c1"], "c1", prefix="/v2")
        updated[CLUSTER]["c1"] = cluster("c1", timeout_s=7)  # the existing cluster changes
        cache.set_resources(GROUP, updated)
        await server.notify({GROUP})
        got = await c.barrier()
        assert sorted(types_of(got)) == sorted([CLUSTER, ENDPOINT, ROUTE]), "RDS did not wait for the CDS ACK"


async def test_a_connect_storm_is_bounded_by_the_bytes_in_flight():
    """Streams owed a new response wait while un-ACKed responses exceed `max_bytes_in_flight` (gRPC would
    otherwise buffer every proxy's first state at once); a stream in the middle of a sync is never held, and no
    stream waits longer than `max_budget_wait`."""
    cache = SnapshotCache()
    cache.set_resources(GROUP, state(["c1"], "c1"))
    async with ads_server(cache, max_bytes_in_flight=1, max_budget_wait=30.0) as server, \
            AdsClient(server.test_port, "delta", node_id="a") as a, \
            AdsClient(server.test_port, "delta", node_id="b") as b:
        await a.delta(CLUSTER)
        cds_a = await a.recv_type(CLUSTER)
        assert server.bytes_in_flight > 0
        await a.delta(ENDPOINT, subscribe=["c1"])  # `a` is mid-sync: not held although over budget
        eds_a = await a.recv_type(ENDPOINT)
        await b.delta(CLUSTER)  # `b` has nothing in flight: it waits for the budget
        for _ in range(500):
            if any(s.node_id == "b" for s in server._budget_waiters):
                break
            await asyncio.sleep(0.01)  # polling the server's state
        else:
            raise AssertionError("stream b was never held for the budget")
        held = [c for c in server.connections() if c.node_id == "b"]
        assert held and held[0].types[CLUSTER].pending_nonce is None and held[0].types[CLUSTER].resources_sent == 0
        await a.ack(cds_a)
        await a.ack(eds_a)  # budget free again: `b` is served
        assert names_of(await b.recv_type(CLUSTER)) == ["c1"]
    async with ads_server(cache, max_bytes_in_flight=1, max_budget_wait=0.2) as server, \
            AdsClient(server.test_port, "delta", node_id="a") as a, \
            AdsClient(server.test_port, "delta", node_id="b") as b:
        await a.delta(CLUSTER)
        await a.recv_type(CLUSTER)  # never ACKed (a stuck proxy)
        await b.delta(CLUSTER)
        assert names_of(await b.recv_type(CLUSTER, timeout=5)) == ["c1"]  # served after max_budget_wait
