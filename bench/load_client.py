"""xDS load client: many Delta ADS streams (grpc.aio, `DeltaAggregatedResources`) standing in for waypoint
Envoys. Each stream subscribes like Envoy 1.40 (CDS and LDS wildcard, EDS and RDS by the names the clusters and
listeners reference) and ACKs every response at once.

Usage: `python bench/load_client.py --xds-port P --streams ns/name=COUNT[,ns/name=COUNT...]`, then commands on
stdin, one JSON answer per line on stdout:
  ready TIMEOUT                 every stream has a response of each type and nothing arrived for 200 ms
  mark                          forget what arrived so far (per-stream response counts, first/last times)
  wait {"ns/name": n} QUIET T   until n streams of each named group got a response since `mark`, then QUIET s
                                of silence; answers first/last ACK times (time.monotonic, comparable across
                                processes) and responses per group since `mark` (groups not named included)
  quit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
STREAMS_PER_CHANNEL = 50
_parsed: dict[tuple[str, str, str], tuple[str, ...]] = {}  # (type, name, version) -> referenced names


def referenced(res) -> tuple[str, ...]:
    """EDS names a cluster needs / RDS names a listener needs (cached by name+version across streams)."""
    key = (res.resource.type_url, res.name, res.version)
    if key in _parsed:
        return _parsed[key]
    out: tuple[str, ...] = ()
    if res.resource.type_url == CLUSTER:
        c = cluster_pb2.Cluster()
        res.resource.Unpack(c)
        if c.type == cluster_pb2.Cluster.EDS:
            out = (c.eds_cluster_config.service_name or c.name,)
    elif res.resource.type_url == LISTENER:
        lst = listener_pb2.Listener()
        res.resource.Unpack(lst)
        names = []
        for chain in lst.filter_chains:
            for f in chain.filters:
                if f.typed_config.type_url == HCM:
                    hcm = hcm_pb2.HttpConnectionManager()
                    f.typed_config.Unpack(hcm)
                    if hcm.HasField("rds"):
                        names.append(hcm.rds.route_config_name)
                    elif hcm.HasField("scoped_routes"):
                        names.append(SCOPED_ROUTE)  # scoped RDS: a wildcard SRDS subscription
        out = tuple(names)
    elif res.resource.type_url == SCOPED_ROUTE:
        scope = scoped_route_pb2.ScopedRouteConfiguration()
        res.resource.Unpack(scope)
        out = (scope.route_configuration_name,)
    _parsed[key] = out
    return out


class Stream:
    def __init__(self, group: str, index: int) -> None:
        self.group = group
        self.node = base_pb2.Node(id=f"{group}~load-{index}", cluster=group,
                                  metadata=struct_pb2.Struct(fields={"WAYPOINT": struct_pb2.Value(string_value=group)}))
        self.types: set[str] = set()
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def mark(self) -> None:
        self.count, self.first, self.last = 0, 0.0, 0.0

    async def run(self, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        queue: asyncio.Queue = asyncio.Queue()

        async def requests():
            while True:
                yield await queue.get()

        for type_url in (CLUSTER, LISTENER):
            queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(node=self.node, type_url=type_url))
        subscribed: dict[str, set[str]] = {ENDPOINT: set(), ROUTE: set()}
        scoped = False
        call = stub.DeltaAggregatedResources(requests())
        async for resp in call:
            wanted = {CLUSTER: ENDPOINT, LISTENER: ROUTE, SCOPED_ROUTE: ROUTE}.get(resp.type_url)
            if wanted is not None:
                names = {n for r in resp.resources for n in referenced(r)} - subscribed[wanted]
                if SCOPED_ROUTE in names:
                    names.discard(SCOPED_ROUTE)
                    if not scoped:  # like Envoy 1.40: SRDS is a wildcard (empty first subscribe)
                        scoped = True
                        queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=SCOPED_ROUTE))
                if names:
                    subscribed[wanted] |= names
                    queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(
                        type_url=wanted, resource_names_subscribe=sorted(names)))
            queue.put_nowait(discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce))
            now = time.monotonic()  # the ACK is queued now
            self.types.add(resp.type_url)
            self.count += 1
            self.first = self.first or now
            self.last = now


class Client:
    def __init__(self, port: int, spec: str) -> None:
        self.port = port
        self.streams = [Stream(group, i) for part in spec.split(",") if part
                        for group, count in [part.split("=")] for i in range(int(count))]
        self.tasks: list[asyncio.Task] = []
        self.channels: list[grpc.aio.Channel] = []

    def start(self) -> None:
        for i, stream in enumerate(self.streams):
            if i % STREAMS_PER_CHANNEL == 0:
                self.channels.append(grpc.aio.insecure_channel(
                    f"127.0.0.1:{self.port}", options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]))
            self.tasks.append(asyncio.create_task(stream.run(self.channels[-1])))

    def last_activity(self) -> float:
        return max((s.last for s in self.streams), default=0.0)

    async def quiet(self, seconds: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if time.monotonic() - self.last_activity() >= seconds:
                return
            await asyncio.sleep(0.01)

    def check(self) -> None:
        for t in self.tasks:
            if t.done() and t.exception() is not None:
                raise RuntimeError(f"stream failed: {t.exception()!r}")

    async def ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while any(len(s.types) < 4 for s in self.streams):
            self.check()
            if time.monotonic() > deadline:
                return {"ok": False, "missing": sum(len(s.types) < 4 for s in self.streams)}
            await asyncio.sleep(0.02)
        await self.quiet(0.2, timeout)
        return {"ok": True, "streams": len(self.streams)}

    async def wait(self, expected: dict[str, int], quiet: float, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        ok = True
        while True:
            self.check()
            got = defaultdict(int)
            for s in self.streams:
                got[s.group] += s.count > 0
            if all(got[g] >= n for g, n in expected.items()):
                break
            if time.monotonic() > deadline:
                ok = False
                break
            await asyncio.sleep(0.002)
        await self.quiet(quiet, timeout)
        updated = [s for s in self.streams if s.count]
        per_group: dict[str, int] = defaultdict(int)
        for s in self.streams:
            per_group[s.group] += s.count
        return {"ok": ok, "first": min((s.first for s in updated), default=0.0),
                "last": max((s.last for s in updated), default=0.0), "streams_updated": len(updated),
                "per_group": per_group}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--xds-port", type=int, required=True)
    p.add_argument("--streams", required=True)
    args = p.parse_args()
    client = Client(args.xds_port, args.streams)
    client.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        cmd, _, rest = line.partition(" ")
        if cmd == "ready":
            answer = await client.ready(float(rest or 300))
        elif cmd == "mark":
            for s in client.streams:
                s.mark()
            answer = {"mark": time.monotonic()}
        elif cmd == "wait":
            expected, quiet, timeout = rest.rsplit(" ", 2)
            answer = await client.wait(json.loads(expected), float(quiet), float(timeout))
        else:
            answer = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(answer), flush=True)
    for t in client.tasks:
        t.cancel()
    for ch in client.channels:
        await ch.close()


if __name__ == "__main__":
    asyncio.run(main())
