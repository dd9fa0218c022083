"""Protocol tests for route granularity: SRDS (ScopedRouteConfiguration) is a wildcard type for Envoy 1.40 in Delta
and SotW, pushed after listeners and before routes; SotW responses of a named type (RDS) carry only the resources
the proxy lacks, and after a NACK the rejected ones again once content changes."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from testsupport.ads_client import AdsClient, names_of
from testsupport.xds_harness import GROUP, ads_server

from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.types import PUSH_ORDER, ROUTE, SCOPED_ROUTE, SHORT_NAMES, WILDCARD_TYPES


def _resources(scopes=("a", "b"), routes=("http.80/a", "http.80/b"), **bump) -> dict:
    out = {SCOPED_ROUTE: {}, ROUTE: {}}
    for k in scopes:
        s = scoped_route_pb2.ScopedRouteConfiguration(name=f"http.80|{k}", route_configuration_name=f"http.80/{k}")
        s.key.fragments.add(string_key="80")
        s.key.fragments.add(string_key=k)
        out[SCOPED_ROUTE][s.name] = s
    for r in routes:
        cfg = route_pb2.RouteConfiguration(name=r)
        cfg.virtual_hosts.add(name=r, domains=[r.split("/")[1]]).routes.add().direct_response.status = 200 + bump.get(
            r.split("/")[1], 0)
        out[ROUTE][r] = cfg
    return out


def test_srds_is_wildcard_and_ordered_between_listeners_and_routes():
    assert SCOPED_ROUTE in WILDCARD_TYPES and SHORT_NAMES[SCOPED_ROUTE] == "SRDS"
    order = list(PUSH_ORDER)
    assert order.index(SCOPED_ROUTE) == order.index(ROUTE) - 1


async def test_delta_srds_legacy_wildcard_gets_every_scope_then_only_changes():
    cache = SnapshotCache()
    cache.set_resources(GROUP, _resources())
    async with ads_server(cache) as server, AdsClient(server.test_port, "delta") as c:
        await c.delta(SCOPED_ROUTE)  # Envoy 1.40: empty first subscribe, never "*"
        first = await c.recv_type(SCOPED_ROUTE)
        assert sorted(r.name for r in first.resources) == ["http.80|a", "http.80|b"]
        await c.ack(first)
        cache.set_resources(GROUP, _resources(scopes=("a",)))
        await server.notify({GROUP})
        resp = await c.recv_type(SCOPED_ROUTE)
        assert list(resp.removed_resources) == ["http.80|b"] and not resp.resources


async def test_sotw_srds_empty_names_is_wildcard_and_rds_sends_only_changed_routes():
    cache = SnapshotCache()
    cache.set_resources(GROUP, _resources())
    async with ads_server(cache) as server, AdsClient(server.test_port, "sotw") as c:
        await c.sotw(SCOPED_ROUTE)
        scopes = await c.recv_type(SCOPED_ROUTE)
        assert names_of(scopes) == ["http.80|a", "http.80|b"]
        await c.ack(scopes)
        await c.sotw(ROUTE, ["http.80/a", "http.80/b"])
        first = await c.recv_type(ROUTE)
        assert names_of(first) == ["http.80/a", "http.80/b"]
        await c.ack(first)
        cache.set_resources(GROUP, _resources(b=1))
        await server.notify({GROUP})
        resp = await c.recv_type(ROUTE)
        assert names_of(resp) == ["http.80/b"] and resp.version_info != first.version_info
        await c.nack(resp, "rejected")
        assert await c.barrier() == []  # the rejected content is held until the cache changes
        cache.set_resources(GROUP, _resources(a=1, b=1))
        await server.notify({GROUP})
        again = await c.recv_type(ROUTE)
        assert names_of(again) == ["http.80/a", "http.80/b"]  # a changed; b's state is unknown after the NACK
        await c.ack(again)
        assert await c.barrier() == []
        [conn] = server.connections()
        assert conn.types[ROUTE].in_sync and conn.types[SCOPED_ROUTE].in_sync
