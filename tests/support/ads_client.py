"""Scripted ADS client for protocol tests: a grpc.aio channel + the real ADS stub, Delta or SotW.

It checks wire invariants on every response (non-empty unique nonces, a type URL, SotW version_info,
Delta resources named and versioned, never both sent and removed) and offers `barrier()`: a request for a
probe type that the server answers after everything it had to push, so tests can assert that nothing
else was sent without sleeping.
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

PROBE = "type.googleapis.com/zz.test.Probe"  # sorts after every real type URL: answered last


def make_node(node_id: str, waypoint: str | None) -> base_pb2.Node:
    node = base_pb2.Node(id=node_id, cluster="waypoint")
    if waypoint is not None:
        node.metadata.CopyFrom(struct_pb2.Struct(fields={"WAYPOINT": struct_pb2.Value(string_value=waypoint)}))
    return node


class AdsClient:
    def __init__(self, port: int, flavour: str, node_id: str = "default/waypoint~1",
                 waypoint: str | None = "default/waypoint"):
        assert flavour in ("delta", "sotw")
        self.port = port
        self.flavour = flavour
        self.node = make_node(node_id, waypoint)
        self.channel: grpc.aio.Channel | None = None
        self.call = None
        self.nonces: set[str] = set()
        self.received: list = []
        self.names: dict[str, list[str]] = {}  # SotW: last names requested per type
        self.acked_version: dict[str, str] = {}  # SotW: last version ACKed per type
        self._node_sent = False
        self._probe = 0
        self._probe_last = None

    async def __aenter__(self) -> "AdsClient":
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.DeltaAggregatedResources() if self.flavour == "delta" else stub.StreamAggregatedResources()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    # ---- sending ----
    def _with_node(self, req):
        if not self._node_sent:
            req.node.CopyFrom(self.node)
            self._node_sent = True
        return req

    async def delta(self, type_url: str, subscribe=(), unsubscribe=(), nonce: str = "",
                    initial: dict[str, str] | None = None, error: str | None = None) -> None:
        assert self.flavour == "delta"
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
            initial_resource_versions=initial or {})
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        await self.call.write(self._with_node(req))

    async def sotw(self, type_url: str, names=(), version: str = "", nonce: str = "",
                   error: str | None = None) -> None:
        assert self.flavour == "sotw"
        self.names[type_url] = list(names)
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                             version_info=version, response_nonce=nonce)
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        await self.call.write(self._with_node(req))

    async def ack(self, resp, names=None) -> None:
        if self.flavour == "delta":
            await self.delta(resp.type_url, nonce=resp.nonce)
        else:
            self.acked_version[resp.type_url] = resp.version_info
            await self.sotw(resp.type_url, self.names.get(resp.type_url, []) if names is None else names,
                            version=resp.version_info, nonce=resp.nonce)

    async def nack(self, resp, message: str = "rejected by test") -> None:
        if self.flavour == "delta":
            await self.delta(resp.type_url, nonce=resp.nonce, error=message)
        else:
            await self.sotw(resp.type_url, self.names.get(resp.type_url, []),
                            version=self.acked_version.get(resp.type_url, ""), nonce=resp.nonce, error=message)

    # ---- receiving ----
    async def recv(self, timeout: float = 5.0):
        resp = await asyncio.wait_for(self.call.read(), timeout)
        assert resp is not grpc.aio.EOF, "stream ended"
        self._check(resp)
        self.received.append(resp)
        return resp

    def _check(self, resp) -> None:
        assert resp.type_url, "response without type_url"
        assert resp.nonce, "response without nonce"
        assert resp.nonce not in self.nonces, f"nonce {resp.nonce} reused"
        self.nonces.add(resp.nonce)
        for any_ in resp.resources:
            if self.flavour == "sotw":
                assert any_.type_url == resp.type_url
        if self.flavour == "sotw":
            assert resp.version_info, "SotW response without version_info"
        else:
            names = [r.name for r in resp.resources]
            assert all(names) and all(r.version for r in resp.resources), "unnamed/unversioned resource"
            assert all(r.resource.type_url == resp.type_url for r in resp.resources)
            assert not set(names) & set(resp.removed_resources), "resource both sent and removed"

    async def recv_type(self, type_url: str, timeout: float = 5.0):
        resp = await self.recv(timeout)
        assert resp.type_url == type_url, f"expected {type_url}, got {resp.type_url}"
        return resp

    async def barrier(self, timeout: float = 5.0) -> list:
        """Probe the server; return every non-probe response received before the probe's answer."""
        self._probe += 1
        name = f"p{self._probe}"
        last = self._probe_last
        if self.flavour == "delta":
            await self.delta(PROBE, subscribe=[name], nonce=last.nonce if last else "")
        else:
            await self.sotw(PROBE, [name], version=last.version_info if last else "",
                            nonce=last.nonce if last else "")
        before = []
        while True:
            resp = await self.recv(timeout)
            if resp.type_url == PROBE:
                self._probe_last = resp
                return before
            before.append(resp)

    async def status(self) -> grpc.StatusCode:
        return await self.call.code()


def names_of(resp) -> list[str]:
    """Resource names in a response (Delta: Resource.name; SotW: the `name`/`cluster_name` in each Any)."""
    if isinstance(resp, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in resp.resources]
    out = []
    for any_ in resp.resources:
        msg = _parse_any(any_)
        out.append(msg.cluster_name if msg.DESCRIPTOR.name == "ClusterLoadAssignment" else msg.name)
    return out


def _parse_any(any_):
    from google.protobuf import descriptor_pool, message_factory

    desc = descriptor_pool.Default().FindMessageTypeByName(any_.type_url.split("/", 1)[1])
    msg = message_factory.GetMessageClass(desc)()
    msg.ParseFromString(any_.value)
    return msg
