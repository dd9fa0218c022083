"""AdsServer: a grpc.aio Aggregated Discovery Service (Delta and SotW) serving a SnapshotCache.

Generic handlers with no response serializer: responses are wire bytes assembled from the cache's frames.
Per stream, one loop pushes types in PUSH_ORDER (CDS, EDS, LDS, RDS, ...), with at most one un-ACKed
response per type (newer state coalesces while waiting). Listeners and routes wait for the CDS/EDS ACK
(make before break); cluster/endpoint removals wait until listeners and routes are settled (break after).
A pending ACK older than `ack_timeout` (plus `ack_timeout_per_resource` for each resource the response carried:
Envoy needs ~0.25 ms per cluster, so a first CDS of 15,000 clusters must not be abandoned and resent whole after
5 s) is abandoned (logged, `ack_timeout` event) and newer state is sent.

Per-stream cost is O(changed): a type in step with the cache is skipped by an identity check (`proto.idle`), a
stream is woken (and takes a push slot) only when something may be sent, and the replicas of a waypoint share
their responses (xds/shared.py) and their subscribed name sets (one frozenset per distinct subscription).

Security: `start(address, credentials)` serves TLS/mTLS (see xds/tls.py); with an `authorize` callback,
a stream whose peer identity is not entitled to the requested group is refused with PERMISSION_DENIED.
Observers: `on_event(name, data)` for connect/disconnect/push (resources, bytes)/ack (upserts)/nack/
ack_timeout/refused, `on_nack(NackInfo)` to attribute a rejection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from istiod_lite.xds import delta, sotw
from istiod_lite.xds.cache import EMPTY, SnapshotCache
from istiod_lite.xds.shared import Shared
from istiod_lite.xds.subscription import UNKNOWN, TypeState
from istiod_lite.xds.types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_MAKE_FIRST = (CLUSTER, ENDPOINT)  # listeners/routes wait for these to be ACKed
_BREAK_AFTER = (LISTENER, ROUTE)  # cluster/endpoint removals wait for these to settle (scopes name no cluster)


@dataclass(frozen=True)
class NackInfo:
    node_id: str
    group: str
    flavour: str
    type_url: str
    nonce: str
    error_detail: str
    resource_names: tuple[str, ...]
    versions: dict[str, str]


@dataclass
class TypeInfo:
    type_url: str
    version_sent: str
    nonce_sent: str
    version_acked: str
    last_error: str
    pending_nonce: str | None
    in_sync: bool
    resources_sent: int
    acks: int
    nacks: int
    ack_timeouts: int
    subscribed: list[str] | str  # "*" for wildcard


@dataclass
class ConnectionInfo:
    stream_id: int
    node_id: str
    group: str
    flavour: str
    connected_at: float
    types: dict[str, TypeInfo] = field(default_factory=dict)

    @property
    def in_sync(self) -> bool:
        return all(t.in_sync for t in self.types.values())


class _Stream:
    def __init__(self, stream_id: int, node_id: str, group: str, proto, now: float):
        self.id = stream_id
        self.node_id = node_id
        self.group = group
        self.proto = proto
        self.connected_at = now
        self.types: dict[str, TypeState] = {}
        self.wake = asyncio.Event()
        self.closed = False
        self.nonces = itertools.count(1)
        self.inflight: dict[str, int] = {}  # type URL -> bytes of its un-ACKed response (AdsServer budget)
        self.held_since: float | None = None  # waiting for the byte budget since (AdsServer._hold_for_budget)
        self._ordered: list[tuple[str, TypeState]] = []

    def state(self, type_url: str) -> TypeState:
        ts = self.types.get(type_url)
        if ts is None:
            ts = self.types[type_url] = TypeState(type_url)
            self._ordered = [(t, self.types[t]) for t in self.ordered_types()]
        return ts

    def ordered_types(self) -> list[str]:
        known = [t for t in PUSH_ORDER if t in self.types]
        return known + sorted(t for t in self.types if t not in PUSH_ORDER)

    def ordered_states(self) -> list[tuple[str, TypeState]]:
        return self._ordered


class AdsServer:
    def __init__(
        self,
        cache: SnapshotCache,
        group_for_node: Callable[[Any], str | None],
        ack_timeout: float = 5.0,
        ack_timeout_per_resource: float = 0.001,
        on_nack: Callable[[NackInfo], None] | None = None,
        on_event: Callable[[str, dict], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_concurrent_pushes: int = 64,
        max_bytes_in_flight: int = 64 * 1024 * 1024,
        max_budget_wait: float = 1.0,
        authorize: Callable[[Mapping[str, Sequence[bytes]], str], str | None] | None = None,
    ):
        """`authorize(auth_context, group)` returns None to allow a stream, or the reason to refuse it."""
        self.cache = cache
        self.group_for_node = group_for_node
        self.ack_timeout = ack_timeout
        self.ack_timeout_per_resource = ack_timeout_per_resource
        self.on_nack = on_nack
        self.on_event = on_event
        self.authorize = authorize
        self.clock = clock
        self.resources_sent = 0
        self.responses_sent = 0
        self.nacks = 0
        self.ack_timeouts = 0
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self._push_slots = asyncio.Semaphore(max_concurrent_pushes)
        # Bytes of un-ACKed responses across all streams. A stream with nothing in flight starts a new response
        # only under this budget: a connect storm of 100 proxies each owed a 10 MB first state would otherwise
        # have gRPC buffer a gigabyte at once (and cancel streams under memory pressure). A stream already in the
        # middle of a sync (CDS sent, EDS owed: Envoy withholds the CDS ACK until EDS arrives) is never held, and
        # no stream waits longer than `max_budget_wait` (proxies that never ACK must not starve the others).
        self.max_bytes_in_flight = max_bytes_in_flight
        self.max_budget_wait = max_budget_wait
        self.bytes_in_flight = 0
        self._budget_waiters: set[_Stream] = set()
        self._shared: dict[tuple[str, str, str], Shared] = {}  # (flavour, group, type) -> work of replicas
        self._names: dict[tuple[str, str], dict[frozenset[str], frozenset[str]]] = {}  # subscribed name sets
        self._open = asyncio.Event()  # streams are answered only once the cache holds a complete first state
        self._open.set()

    # ---- lifecycle ----
    async def start(self, address: str = "127.0.0.1:0", credentials: grpc.ServerCredentials | None = None) -> int:
        """Listen on `address` (plaintext, or TLS with `credentials`); returns the bound port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ]
        )
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._serve_sotw,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=None,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._serve_delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=None,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        await server.start()
        self._server = server
        return port

    async def stop(self, grace: float = 0.5) -> None:
        """End every stream cleanly (status OK, the proxies reconnect elsewhere), then stop the server."""
        for stream in list(self._streams.values()):
            stream.closed = True
            stream.wake.set()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def notify(self, groups: set[str] | frozenset[str]) -> None:
        """The cache changed for these groups: wake their streams (each pushes the latest state)."""
        for stream in list(self._streams.values()):
            if stream.group in groups:
                stream.wake.set()

    # ---- observability ----
    def connections(self) -> list[ConnectionInfo]:
        out = []
        for s in list(self._streams.values()):
            resources = self.cache.get(s.group)
            info = ConnectionInfo(s.id, s.node_id, s.group, s.proto.FLAVOUR, s.connected_at)
            for type_url, ts in s.types.items():
                info.types[type_url] = TypeInfo(
                    type_url=type_url,
                    version_sent=ts.version_sent,
                    nonce_sent=ts.nonce_sent,
                    version_acked=ts.version_acked,
                    last_error=ts.last_error,
                    pending_nonce=ts.pending.nonce if ts.pending else None,
                    in_sync=s.proto.in_sync(ts, resources.get(type_url, EMPTY)),
                    resources_sent=ts.resources_sent,
                    acks=ts.acks,
                    nacks=ts.nacks,
                    ack_timeouts=ts.ack_timeouts,
                    subscribed="*" if ts.wildcard else sorted(ts.names),
                )
            out.append(info)
        return out

    def _event(self, name: str, stream: _Stream, **data) -> None:
        self._notify_event(name, {"node_id": stream.node_id, "group": stream.group,
                                  "flavour": stream.proto.FLAVOUR, **data})

    def _notify_event(self, name: str, data: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, data)
            except Exception:  # an observer must not break the stream
                log.exception("on_event callback failed")

    # ---- streams ----
    async def _serve_sotw(self, request_iterator, context) -> None:
        await self._serve(sotw, context)

    async def _serve_delta(self, request_iterator, context) -> None:
        await self._serve(delta, context)

    def hold(self) -> None:
        """Accept connections but answer no stream until `release()`: a restarted control plane whose cache is
        still empty would otherwise tell a reconnecting proxy (Delta initial_resource_versions) that every
        resource it has was removed."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _serve(self, proto, context: grpc.aio.ServicerContext) -> None:
        await self._open.wait()
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        node = first.node
        group = self.group_for_node(node)
        if group is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node {node.id!r} maps to no waypoint: set node.metadata WAYPOINT to 'namespace/name' "
                "of a known waypoint",
            )
            return
        if self.authorize is not None:
            try:
                refusal = self.authorize(context.auth_context(), group)
            except Exception as exc:  # a broken policy refuses rather than leaks config
                log.exception("authorize callback failed")
                refusal = f"identity check failed: {exc}"
            if refusal is not None:
                log.warning("ADS %s stream refused: node %s group %s: %s", proto.FLAVOUR, node.id, group, refusal)
                self._notify_event("refused", {"node_id": node.id, "group": group, "flavour": proto.FLAVOUR,
                                               "reason": refusal})
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
                return
        stream = _Stream(next(self._ids), node.id, group, proto, self.clock())
        self._streams[stream.id] = stream
        self._event("connect", stream)
        log.info("ADS %s stream %d connected: node %s group %s", proto.FLAVOUR, stream.id, node.id, group)
        self._on_request(stream, first)
        reader = asyncio.create_task(self._read(stream, context), name=f"ads-read-{stream.id}")
        loop = asyncio.get_running_loop()
        try:
            while not stream.closed:
                stream.wake.clear()
                if self._may_send(stream) and not self._hold_for_budget(stream):
                    async with self._push_slots:
                        for body in self._plan(stream):
                            await context.write(body)
                timeout = self._next_deadline(stream)
                if timeout is None:
                    await stream.wake.wait()
                else:  # an ACK deadline: wake then (cheaper than wait_for, which wraps the wait in a task)
                    timer = loop.call_later(timeout, stream.wake.set)
                    try:
                        await stream.wake.wait()
                    finally:
                        timer.cancel()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.info("ADS stream %d read failed: %r", stream.id, reader.exception())
        finally:
            reader.cancel()
            self._budget_waiters.discard(stream)
            for type_url in list(stream.inflight):
                self._release(stream, type_url)
            self._streams.pop(stream.id, None)
            if not any(s.group == stream.group for s in self._streams.values()):
                for key in [k for k in self._shared if k[1] == stream.group]:
                    del self._shared[key]  # the last stream of the group: keep no content alive for it
                for key in [k for k in self._names if k[0] == stream.group]:
                    del self._names[key]
            self._event("disconnect", stream)
            log.info("ADS stream %d closed (node %s)", stream.id, stream.node_id)

    async def _read(self, stream: _Stream, context) -> None:
        try:
            while True:
                req = await context.read()
                if req is grpc.aio.EOF:
                    return
                self._on_request(stream, req)
                if self._may_send(stream):  # an ACK that unblocks nothing wakes no one
                    stream.wake.set()
        finally:
            stream.closed = True
            stream.wake.set()

    def _on_request(self, stream: _Stream, req) -> None:
        type_url = req.type_url
        if not type_url:
            return
        ts = stream.state(type_url)
        result = stream.proto.on_request(ts, req)
        if ts.names_changed:
            ts.names = self._shared_names(stream.group, type_url, ts.names)
            ts.names_changed = False
        short = SHORT_NAMES.get(type_url, type_url)
        if result.kind in ("ack", "nack"):
            self._release(stream, type_url)
        if result.kind == "ack":
            done = ts.ack()
            self._event("ack", stream, type_url=type_url, nonce=done.nonce, version=done.version,
                        latency=self.clock() - done.sent_at, upserts=done.upserts, removed=done.removed)
        elif result.kind == "nack":
            done = ts.nack(result.error)
            self.nacks += 1
            info = NackInfo(stream.node_id, stream.group, stream.proto.FLAVOUR, type_url, done.nonce,
                            result.error, tuple(sorted(done.upserts)) + done.removed, dict(done.upserts))
            log.warning("NACK %s from %s (group %s) nonce %s: %s", short, stream.node_id, stream.group,
                        done.nonce, result.error)
            self._event("nack", stream, type_url=type_url, nonce=done.nonce, error_detail=result.error,
                        resource_names=info.resource_names)
            if self.on_nack is not None:
                try:
                    self.on_nack(info)
                except Exception:
                    log.exception("on_nack callback failed")
        elif result.kind == "late_ack":
            done = ts.late_ack()
            log.info("late ACK of %s nonce %s from %s after %.1fs", short, done.nonce, stream.node_id,
                     self.clock() - done.sent_at)
            self._event("ack", stream, type_url=type_url, nonce=done.nonce, version=done.version,
                        latency=self.clock() - done.sent_at, upserts=done.upserts, removed=done.removed)
        elif result.kind == "stale":
            log.debug("stale nonce %s for %s from %s", req.response_nonce, short, stream.node_id)

    def _abandon_expired(self, stream: _Stream, now: float) -> None:
        for ts in stream.types.values():
            if ts.pending is not None and now >= self._deadline(ts.pending):
                done = ts.abandon()
                self._release(stream, ts.type_url)
                self.ack_timeouts += 1
                log.warning("no ACK for %s nonce %s from %s after %.1fs: sending newer state anyway",
                            SHORT_NAMES.get(ts.type_url, ts.type_url), done.nonce, stream.node_id,
                            now - done.sent_at)
                self._event("ack_timeout", stream, type_url=ts.type_url, nonce=done.nonce)

    def _settled(self, stream: _Stream, type_url: str, resources) -> bool:
        ts = stream.types.get(type_url)
        if ts is None or not ts.requested:
            return True
        if ts.pending is not None:
            return False
        entries = resources.get(type_url, EMPTY)
        return stream.proto.idle(ts, entries) or not stream.proto.has_work(ts, entries)

    def _shared_names(self, group: str, type_url: str, names) -> frozenset[str]:
        """One frozenset for every stream of a group subscribing the same names (replicas): 20,000 EDS/RDS names
        are ~2.5 MB per stream otherwise. O(names), on subscription changes only."""
        frozen = frozenset(names)
        known = self._names.setdefault((group, type_url), {})
        found = known.get(frozen)
        if found is None:
            found = known[frozen] = frozen
            while len(known) > 4:  # the sets the group's streams use now; older ones stay with whoever has them
                del known[next(iter(known))]
        return found

    def _shared_for(self, stream: _Stream, type_url: str) -> Shared:
        key = (stream.proto.FLAVOUR, stream.group, type_url)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = Shared()
        return shared

    def _may_send(self, stream: _Stream) -> bool:
        """Whether `_plan` may have something to send (checked before taking a push slot): an ACK timeout to
        act on, or a requested type without a response in flight that is not idle."""
        self._abandon_expired(stream, self.clock())
        resources = self.cache.get(stream.group)
        idle = stream.proto.idle
        making = _making(stream)  # new clusters/endpoints in flight: listeners and routes wait (see _plan)
        for type_url, ts in stream.ordered_states():
            if not ts.requested or ts.pending is not None:
                continue
            if not idle(ts, resources.get(type_url, EMPTY)) and not (making and type_url in _BREAK_AFTER):
                return True
        return False

    def _plan(self, stream: _Stream) -> list[bytes]:
        """Responses to send now, in push order; records each as pending on its type.

        A type in step with the cache (`proto.idle`: it holds the cache's current TypeResources and nothing
        differs) costs an identity check; the others diff only what changed (xds/delta.py)."""
        now = self.clock()
        self._abandon_expired(stream, now)
        resources = self.cache.get(stream.group)
        proto = stream.proto
        out = []
        settled: bool | None = None
        for type_url, ts in stream.ordered_states():
            if not ts.requested or ts.pending is not None:
                continue
            entries = resources.get(type_url, EMPTY)
            if proto.idle(ts, entries):
                continue
            if type_url in _BREAK_AFTER and _making(stream):
                continue  # make before break: new clusters/endpoints first
            if type_url in _MAKE_FIRST and settled is None:  # once per plan
                settled = all(self._settled(stream, t, resources) for t in _BREAK_AFTER)
            allow_removals = type_url not in _MAKE_FIRST or bool(settled)
            nonce = f"{stream.id}-{next(stream.nonces)}"
            built = proto.build(ts, entries, allow_removals, nonce, now, self._shared_for(stream, type_url))
            if built is None:
                continue
            body, count = built
            if type_url == CLUSTER and ts.pending is not None and ts.pending.replaced:
                _resend_endpoints(stream, resources.get(CLUSTER, EMPTY), ts.pending.replaced)
            out.append(body)
            stream.inflight[type_url] = len(body)
            self.bytes_in_flight += len(body)
            self.resources_sent += count
            self.responses_sent += 1
            self._event("push", stream, type_url=type_url, nonce=nonce, resources=count, bytes=len(body))
        return out

    def _hold_for_budget(self, stream: _Stream) -> bool:
        """True (and the stream is woken when bytes are released) when a new sync must wait for the budget."""
        if stream.inflight or self.bytes_in_flight < self.max_bytes_in_flight:
            stream.held_since = None
            return False
        now = self.clock()
        if stream.held_since is None:
            stream.held_since = now
        elif now - stream.held_since >= self.max_budget_wait:
            stream.held_since = None  # waited long enough: go ahead over budget
            return False
        self._budget_waiters.add(stream)
        return True

    def _release(self, stream: _Stream, type_url: str) -> None:
        """The response of `type_url` is ACKed, NACKed or abandoned: its bytes leave the budget."""
        size = stream.inflight.pop(type_url, 0)
        if not size:
            return
        self.bytes_in_flight -= size
        if self._budget_waiters and self.bytes_in_flight < self.max_bytes_in_flight:
            waiters, self._budget_waiters = self._budget_waiters, set()
            for waiter in waiters:
                waiter.wake.set()

    def _deadline(self, pending) -> float:
        """When a pending response's ACK is given up on: `ack_timeout` plus an allowance per resource carried."""
        return pending.sent_at + self.ack_timeout + self.ack_timeout_per_resource * (
            len(pending.upserts) + len(pending.removed))

    def _next_deadline(self, stream: _Stream) -> float | None:
        deadlines = [self._deadline(ts.pending) for ts in stream.types.values() if ts.pending is not None]
        if stream.held_since is not None:
            deadlines.append(stream.held_since + self.max_budget_wait)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self.clock())


def _making(stream: _Stream) -> bool:
    """Listeners and routes wait while a cluster/endpoint response that may ADD resources is un-ACKed (a route
    to a cluster Envoy does not have yet would answer 503). A Delta response that only replaces resources the
    proxy already has does not hold them back: Envoy keeps serving an updated cluster while the new version warms,
    so a DestinationRule + VirtualService edit costs one round trip, not two. SotW responses carry whole sets:
    always wait."""
    for t in _MAKE_FIRST:
        ts = stream.types.get(t)
        if ts is None or ts.pending is None:
            continue
        if stream.proto is not delta or len(ts.pending.upserts) > len(ts.pending.replaced):
            return True
    return False


def _resend_endpoints(stream: _Stream, clusters, replaced: tuple[str, ...]) -> None:
    """An updated EDS cluster re-warms and waits for its ClusterLoadAssignment, but Envoy sends no new request for
    a name it already has (Delta: no subscribe; SotW: the same names, no visible change), so after such a CDS
    response the server answers EDS again with those assignments."""
    eds = stream.types.get(ENDPOINT)
    if eds is None or not eds.requested:
        return
    if stream.proto is delta:
        delta.resend_endpoints(eds, clusters, replaced)
        return
    for name in replaced:
        entry = clusters.get(name)
        if entry is not None and entry.eds_name in eds.names:
            eds.must_respond = True
            eds.set_known(entry.eds_name, UNKNOWN)  # SotW EDS sends only what the proxy lacks: resend this one
