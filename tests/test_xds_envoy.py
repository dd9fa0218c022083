"""Sanity check against the real Envoy 1.40: our hand-assembled Delta and SotW responses are accepted,
the empty LDS type is answered (no 15 s initial-fetch stall), updates and removals are applied."""

from __future__ import annotations

import asyncio
import time

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from google.protobuf import duration_pb2
from testsupport.xds_harness import ads_server, cla

from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.types import CLUSTER, ENDPOINT, LISTENER

WAYPOINT = "default/waypoint"


def eds_cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS,
                            connect_timeout=duration_pb2.Duration(seconds=timeout_s))
    c.eds_cluster_config.eds_config.CopyFrom(
        config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                       resource_api_version=config_source_pb2.ApiVersion.V3))
    return c


def state(*names: str, timeout_s: int = 1) -> dict:
    return {CLUSTER: {n: eds_cluster(n, timeout_s) for n in names},
            ENDPOINT: {n: cla(n) for n in names}, LISTENER: {}}


async def until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
async def test_real_envoy_applies_and_acks(envoy_factory, delta):
    cache = SnapshotCache()
    cache.set_resources(WAYPOINT, state("c1", "c2"))
    async with ads_server(cache, ack_timeout=10.0) as server:
        envoy = await asyncio.to_thread(envoy_factory.for_waypoint, WAYPOINT, server.test_port, delta)

        def synced(*type_urls):
            async def check():
                conns = server.connections()
                return (len(conns) == 1 and all(t in conns[0].types for t in type_urls)
                        and all(conns[0].types[t].in_sync for t in type_urls))
            return check

        started = time.monotonic()
        await until(synced(CLUSTER, ENDPOINT, LISTENER), what="CDS, EDS and (empty) LDS ACKed")
        assert time.monotonic() - started < 10, "an unanswered type would stall Envoy for 15 s"
        assert server.connections()[0].flavour == ("delta" if delta else "sotw")

        async def clusters():
            return await asyncio.to_thread(envoy.cluster_names)

        assert {"c1", "c2"} <= await clusters()
        cache.set_resources(WAYPOINT, state("c2", "c3", timeout_s=2))
        await server.notify({WAYPOINT})

        async def applied():
            names = await clusters()
            return "c3" in names and "c1" not in names

        await until(applied, what="c3 added and c1 removed in Envoy")
        # (Delta: the updated EDS cluster c2 re-warms; without an EDS resend the CDS ACK never comes)
        try:
            await until(synced(CLUSTER, ENDPOINT), what="ACKs after the update", timeout=8)
        except AssertionError as exc:
            trail = [(name, data.get("type_url"), data.get("nonce")) for name, data in server.test_events]
            raise AssertionError(f"{exc}; events: {trail}") from None
        assert server.nacks == 0 and server.ack_timeouts == 0
