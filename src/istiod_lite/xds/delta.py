"""Delta (incremental) ADS: subscription updates from DeltaDiscoveryRequests and diff-based responses.

Per-resource versions are content hashes. LDS/CDS arrive as legacy wildcard (empty first subscribe),
EDS/RDS by name, incrementally; unsubscribes are honoured whatever their nonce. `initial_resource_versions`
on reconnect seeds what the client has, so the diff resends only what differs and removes what no longer
exists. Responses are byte concatenations of the cache's pre-built Resource frames.

The diff is O(changed) for a stream in step with the cache: what the client has is a shared TypeResources plus
a per-stream overlay (xds/subscription.py), so when that TypeResources is the one the current one was derived
from (`entries.base`), only `entries.changed | entries.removed` and the overlay can differ; otherwise (two or
more versions behind, first response, reconnect) every name is compared. Both paths apply the same rule per
name (`_decide`), so they cannot disagree; `FAST = False` forces the full path (tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass

from istiod_lite.xds import wire
from istiod_lite.xds.cache import CacheEntry, TypeResources
from istiod_lite.xds.shared import Shared
from istiod_lite.xds.subscription import REMOVED, UNKNOWN, Pending, TypeState, Versions
from istiod_lite.xds.types import WILDCARD_TYPES

FLAVOUR = "delta"
FAST = True  # tests flip it to check that the O(changed) path answers exactly like the full diff


@dataclass(frozen=True, slots=True)
class RequestKind:
    kind: str  # "request" | "ack" | "nack" | "stale"
    error: str = ""


def on_request(ts: TypeState, req) -> RequestKind:
    """Apply one DeltaDiscoveryRequest to the type's state; say whether it ACKs/NACKs the pending response."""
    subscribe = req.resource_names_subscribe
    if not ts.requested:
        ts.requested = True
        ts.must_respond = True
        ts.materialize()
        ts.overlay.update(req.initial_resource_versions)
        if not subscribe and ts.type_url in WILDCARD_TYPES:
            ts.subscribe_wildcard()  # legacy wildcard: Envoy never sends "*" for LDS/CDS
    for name in subscribe:
        if name == "*":
            if not ts.wildcard:
                ts.subscribe_wildcard()
                ts.must_respond = True
        elif name not in ts.names:
            ts.subscribe(name)
            ts.must_respond = True
    for name in req.resource_names_unsubscribe:
        if name == "*":
            ts.unsubscribe_wildcard()
        else:
            ts.unsubscribe(name)
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


def candidates(ts: TypeState, entries: TypeResources) -> tuple[set[str] | frozenset[str], bool]:
    """The names whose client state can differ from `entries`, and whether that set is every name (full)."""
    base = ts.base
    extra = ts.overlay.keys() | ts.rejected.keys() if ts.rejected else ts.overlay.keys()
    if FAST:
        if base is entries:
            return (set(extra) if extra else frozenset()), False
        if entries.base is base:
            changed = entries.changed | entries.removed
            return (changed | extra if extra else changed), False
    if ts.wildcard:
        return set(entries) | set(base) | extra | ts.names, True
    return ts.names | extra, True


def _decide(ts: TypeState, entries: TypeResources, names, allow_removals: bool):
    held = ts.rejected if ts.hold_version == entries.version else {}
    upserts: list[CacheEntry] = []
    removed: list[str] = []
    wildcard, subscribed = ts.wildcard, ts.names
    for name in names:
        if not (wildcard or name in subscribed):
            continue
        entry = entries.get(name)
        if entry is not None:
            if ts.known(name) != entry.version and held.get(name) != entry.version:
                upserts.append(entry)
        elif allow_removals and ts.known(name) is not None and held.get(name) != REMOVED:
            removed.append(name)
    return upserts, removed


def diff(ts: TypeState, entries: TypeResources, allow_removals: bool) -> tuple[list[CacheEntry], list[str]]:
    names, _ = candidates(ts, entries)
    upserts, removed = _decide(ts, entries, names, allow_removals)
    upserts.sort(key=lambda e: e.name)
    removed.sort()
    return upserts, removed


def has_work(ts: TypeState, entries: TypeResources) -> bool:
    if ts.must_respond:
        return True
    if FAST and ts.base is entries and not ts.overlay:
        return False  # in step with the cache and nothing differs
    upserts, removed = diff(ts, entries, allow_removals=True)
    return bool(upserts or removed)


def _frames(upserts):
    for e in upserts:
        yield e.delta_head
        yield e.any_bytes


@dataclass(frozen=True, slots=True)
class _Response:
    head: bytes | None  # version, resources, type_url (None: nothing to send)
    tail: bytes  # removed_resources
    count: int
    carried: object  # Pending.upserts (read-only, may be shared)
    removed: tuple[str, ...]
    replaced: tuple[str, ...]
    overlay: dict  # the stream's overlay after it (copied per stream)


def _compute(ts: TypeState, entries: TypeResources, allow_removals: bool) -> _Response:
    """The next response and the state after it, without changing `ts`."""
    names, _ = candidates(ts, entries)
    upserts, removed = _decide(ts, entries, names, allow_removals)
    after = {e.name: e.version for e in upserts}
    after.update((name, None) for name in removed)
    overlay = ts.overlay_after(entries, names, after)
    if not upserts and not removed and not ts.must_respond:
        return _Response(None, b"", 0, {}, (), (), overlay)
    upserts.sort(key=lambda e: e.name)
    removed.sort()
    head = b"".join([wire.ld_str(1, entries.version), *_frames(upserts), wire.ld_str(4, ts.type_url)])
    tail = b"".join([wire.ld_str(6, name) for name in removed])
    replaced = tuple(e.name for e in upserts if ts.known(e.name) is not None)
    carried = Versions(entries) if len(upserts) == len(entries) else {e.name: e.version for e in upserts}
    return _Response(head, tail, len(upserts), carried, tuple(removed), replaced, overlay)


def build(
    ts: TypeState, entries: TypeResources, allow_removals: bool, nonce: str, now: float,
    shared: Shared | None = None,
) -> tuple[bytes, int] | None:
    """Build the next response for this type (recording it as pending), or None if nothing is due.

    Either way the stream's state is re-based on `entries` (O(what can differ)). With `shared` (one per group
    and type: xds/shared.py), streams in step with `entries.base` reuse one another's work: the response
    depends only on (`entries`, `allow_removals`, which changed names the stream subscribes)."""
    ts.release_hold(entries.version)
    if (shared is not None and FAST and not ts.overlay and not ts.rejected and not ts.must_respond
            and ts.base is entries.base):
        changed = entries.changed | entries.removed
        key = (allow_removals, True if ts.wildcard else frozenset(n for n in changed if n in ts.names))
        response = shared.get(entries, key) or shared.put(key, _compute(ts, entries, allow_removals))
    else:
        response = _compute(ts, entries, allow_removals)
    ts.base = entries
    ts.overlay = dict(response.overlay) if response.overlay else {}
    if response.head is None:
        return None
    pending = Pending(nonce, now, entries.version, entries.version, response.carried,  # type: ignore[arg-type]
                      response.removed, response.replaced)
    ts.record_sent(pending, response.count)
    return b"".join([response.head, wire.ld_str(5, nonce), response.tail]), response.count


def resend_endpoints(eds: TypeState | None, clusters: TypeResources, replaced: tuple[str, ...]) -> None:
    """Envoy 1.40 Delta: an updated EDS cluster re-warms and waits for its endpoints, but Envoy sends no new
    subscribe for a name it already has, so the server must resend the ClusterLoadAssignment (otherwise the
    cluster warms until initial_fetch_timeout and the CDS ACK is withheld)."""
    if eds is None:
        return
    for name in replaced:
        entry = clusters.get(name)
        if entry is not None and entry.eds_name is not None and eds.known(entry.eds_name) is not None:
            eds.set_known(entry.eds_name, UNKNOWN)  # resent; and removed if it leaves the cache meanwhile


def in_sync(ts: TypeState, entries: TypeResources) -> bool:
    """ACKed, nothing left to send, and no rejected content held."""
    held = bool(ts.rejected) and ts.hold_version == entries.version
    return ts.pending is None and not held and not has_work(ts, entries)


def idle(ts: TypeState, entries: TypeResources) -> bool:
    """Nothing to send, known in O(1): the stream holds exactly `entries` (shared) and no request waits."""
    return FAST and not ts.must_respond and ts.base is entries and not ts.overlay
