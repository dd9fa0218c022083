"""Delta (incremental) ADS: subscription updates from DeltaDiscoveryRequests and diff-based responses.

Per-resource versions are content hashes. LDS/CDS arrive as legacy wildcard (empty first subscribe),
EDS/RDS by name, incrementally; unsubscribes are honoured whatever their nonce. `initial_resource_versions`
on reconnect seeds what the client has, so the diff resends only what differs and removes what no longer
exists. Responses are byte concatenations of the cache's pre-built Resource frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from istiod_lite.xds import wire
from istiod_lite.xds.cache import CacheEntry, TypeResources
from istiod_lite.xds.subscription import REMOVED, Pending, TypeState
from istiod_lite.xds.types import WILDCARD_TYPES

FLAVOUR = "delta"


@dataclass(frozen=True, slots=True)
class RequestKind:
    kind: str  # "request" | "ack" | "nack" | "stale"
    error: str = ""


def on_request(ts: TypeState, req) -> RequestKind:
    """Apply one DeltaDiscoveryRequest to the type's state; say whether it ACKs/NACKs the pending response."""
    subscribe = list(req.resource_names_subscribe)
    if not ts.requested:
        ts.requested = True
        ts.must_respond = True
        ts.known.update(req.initial_resource_versions)
        if not subscribe and ts.type_url in WILDCARD_TYPES:
            ts.wildcard = True  # legacy wildcard: Envoy never sends "*" for LDS/CDS
    for name in subscribe:
        if name == "*":
            if not ts.wildcard:
                ts.wildcard = True
                ts.must_respond = True
        elif name not in ts.names:
            ts.names.add(name)
            ts.must_respond = True
    for name in req.resource_names_unsubscribe:
        if name == "*":
            ts.wildcard = False
            for known in [n for n in ts.known if n not in ts.names]:
                ts.known.pop(known)
        else:
            ts.names.discard(name)
            if not ts.wildcard:
                # the client drops it itself; a later subscribe must send it again
                ts.known.pop(name, None)
                ts.rejected.pop(name, None)
    nonce = req.response_nonce
    if not nonce:
        return RequestKind("request")
    if ts.pending is None and ts.abandoned is not None and ts.abandoned.nonce == nonce:
        return RequestKind("stale" if req.HasField("error_detail") else "late_ack")
    if ts.pending is None or ts.pending.nonce != nonce:
        return RequestKind("stale")
    if req.HasField("error_detail"):
        return RequestKind("nack", req.error_detail.message or f"code {req.error_detail.code}")
    return RequestKind("ack")


def diff(ts: TypeState, entries: TypeResources, allow_removals: bool) -> tuple[list[CacheEntry], list[str]]:
    held = ts.rejected if ts.hold_version == entries.version else {}
    upserts = []
    for name in sorted(ts.targets(entries)):
        entry = entries.get(name)
        if entry is not None and ts.known.get(name) != entry.version and held.get(name) != entry.version:
            upserts.append(entry)
    removed: list[str] = []
    if allow_removals:
        removed = [
            name
            for name in sorted(ts.known)
            if name not in entries and (ts.wildcard or name in ts.names) and held.get(name) != REMOVED
        ]
    return upserts, removed


def has_work(ts: TypeState, entries: TypeResources) -> bool:
    if ts.must_respond:
        return True
    upserts, removed = diff(ts, entries, allow_removals=True)
    return bool(upserts or removed)


def build(
    ts: TypeState, entries: TypeResources, allow_removals: bool, nonce: str, now: float
) -> tuple[bytes, int] | None:
    """Build the next response for this type (recording it as pending), or None if nothing is due."""
    ts.release_hold(entries.version)
    upserts, removed = diff(ts, entries, allow_removals)
    if not upserts and not removed and not ts.must_respond:
        return None
    body = b"".join(
        [
            wire.ld_str(1, entries.version),
            *(e.delta_frame for e in upserts),
            wire.ld_str(4, ts.type_url),
            wire.ld_str(5, nonce),
            *(wire.ld_str(6, name) for name in removed),
        ]
    )
    replaced = tuple(e.name for e in upserts if e.name in ts.known)
    for entry in upserts:
        ts.known[entry.name] = entry.version
    for name in removed:
        ts.known.pop(name, None)
    pending = Pending(nonce, now, entries.version, entries.version, {e.name: e.version for e in upserts},
                      tuple(removed), replaced)
    ts.record_sent(pending, len(upserts))
    return body, len(upserts)


def resend_endpoints(eds: TypeState | None, clusters: TypeResources, replaced: tuple[str, ...]) -> None:
    """Envoy 1.40 Delta: an updated EDS cluster re-warms and waits for its endpoints, but Envoy sends no new
    subscribe for a name it already has, so the server must resend the ClusterLoadAssignment (otherwise the
    cluster warms until initial_fetch_timeout and the CDS ACK is withheld)."""
    if eds is None:
        return
    for name in replaced:
        entry = clusters.get(name)
        if entry is not None and entry.eds_name is not None:
            eds.known.pop(entry.eds_name, None)


def in_sync(ts: TypeState, entries: TypeResources) -> bool:
    """ACKed, nothing left to send, and no rejected content held."""
    held = bool(ts.rejected) and ts.hold_version == entries.version
    return ts.pending is None and not held and not has_work(ts, entries)
