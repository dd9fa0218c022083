"""State-of-the-World ADS: a response for a wildcard type (LDS/CDS/SRDS) carries the full set; for a named type
(RDS/EDS/SDS) it carries the requested resources the proxy does not have at their current version (Envoy's SotW
mux updates only the watches whose resources a response names, so one changed RouteConfiguration among 5,000
costs Envoy one, bench/route_granularity.py). `version_info` is the version of the whole requested content.

A request is classified by nonce and version: ACK = the version we sent + its nonce; NACK = an older version
+ the nonce + `error_detail`; after recovery Envoy may ACK the new version while still carrying the old
`error_detail`, which is an ACK. A change of `resource_names` can arrive with the previous nonce/version (it
looks like a repeated ACK), so names are compared on every request.

Wildcard types share work across streams: when the carried content is the whole TypeResources (the usual case),
it is kept by reference (no per-stream copy), its version is `entries.version` (O(1)), and the response body
minus the nonce is built once per TypeResources and group (xds/shared.py) for every stream that sends it.
"""

from __future__ import annotations

from collections.abc import Mapping

from istiod_lite.xds import wire
from istiod_lite.xds.cache import EMPTY, CacheEntry, TypeResources, aggregate_version
from istiod_lite.xds.delta import RequestKind
from istiod_lite.xds.shared import Shared
from istiod_lite.xds.subscription import Pending, TypeState, Versions
from istiod_lite.xds.types import WILDCARD_TYPES

FLAVOUR = "sotw"
FAST = True  # tests flip it to check the shortcuts answer exactly like the general path


def on_request(ts: TypeState, req) -> RequestKind:
    names = set(req.resource_names) - {"*"}
    wildcard = "*" in req.resource_names or (not names and ts.type_url in WILDCARD_TYPES)
    if not ts.requested:
        ts.requested = True
        ts.must_respond = True
    elif names != ts.names or wildcard != ts.wildcard:
        ts.must_respond = True
    if wildcard != ts.wildcard or names != ts.names:
        ts.materialize()  # the scope changes: keep what the client has without the shared base
        ts.names, ts.wildcard, ts.names_changed = names, wildcard, True
    nonce = req.response_nonce
    if not nonce:
        return RequestKind("request")
    if ts.pending is None and ts.abandoned is not None and ts.abandoned.nonce == nonce:
        return RequestKind("late_ack" if req.version_info == ts.abandoned.version else "stale")
    if ts.pending is None or ts.pending.nonce != nonce:
        return RequestKind("stale")
    if req.version_info == ts.pending.version:
        return RequestKind("ack")  # possibly with a stale error_detail from an earlier NACK
    error = req.error_detail.message if req.HasField("error_detail") else ""
    return RequestKind("nack", error or "rejected (older version_info, no error_detail)")


def _held_back(ts: TypeState, entries: TypeResources) -> list[str]:
    """Wildcard: names of the last response no longer in the cache (kept while removals must wait)."""
    sent = ts.sotw_sent
    if FAST:
        if sent is entries:
            return []
        if sent is entries.base:
            return sorted(entries.removed)
    return sorted(name for name in sent if name not in entries)


def content(ts: TypeState, entries: TypeResources, allow_removals: bool) -> Mapping[str, CacheEntry]:
    """What a response carries now: the whole TypeResources itself when that is all of it."""
    if ts.wildcard:
        held = [] if allow_removals else _held_back(ts, entries)
        if not held and FAST:
            return entries
        out = dict(entries)
        out.update((name, ts.sotw_sent[name]) for name in held)
        return out
    out = {name: entries[name] for name in ts.names if name in entries}
    if not allow_removals:
        for name, entry in ts.sotw_sent.items():
            if name not in out and name in ts.names:
                out[name] = entry
    return out


def _version(carried: Mapping[str, CacheEntry]) -> str:
    if isinstance(carried, TypeResources):
        return carried.version
    return aggregate_version(carried.values())


def has_work(ts: TypeState, entries: TypeResources) -> bool:
    if ts.must_respond:
        return True
    return _version(content(ts, entries, True)) != ts.sotw_version


def _sorted(sent: Mapping[str, CacheEntry]) -> list[CacheEntry]:
    return [sent[n] for n in sorted(sent)]


def _frames(sent):
    for e in sent:
        yield e.sotw_head
        yield e.any_bytes


def _head(version: str, sent, type_url: str) -> bytes:
    return b"".join([wire.ld_str(1, version), *_frames(sent), wire.ld_str(4, type_url)])


def _replaced(ts: TypeState, entries: TypeResources, sent: Mapping[str, CacheEntry]) -> tuple[str, ...]:
    """Names the client had and gets a new version of (an updated EDS cluster re-warms: server.py)."""
    names = sent.keys()
    if FAST and sent is entries and ts.base is entries.base:
        names = entries.changed | ts.overlay.keys()
    out = []
    for name in names:
        entry = sent.get(name)
        if entry is not None:
            before = ts.known(name)
            if before is not None and before != entry.version:
                out.append(name)
    return tuple(sorted(out))


def build(
    ts: TypeState, entries: TypeResources, allow_removals: bool, nonce: str, now: float,
    shared: Shared | None = None,
) -> tuple[bytes, int] | None:
    """Build the next response (recording it as pending), or None if nothing is due. With `shared` (one per
    group and type: xds/shared.py), a response carrying the whole TypeResources is assembled once for all."""
    ts.release_hold(entries.version)
    carried = content(ts, entries, allow_removals)
    version = _version(carried)
    if not ts.must_respond and version == ts.sotw_version:
        return None  # includes: the same content was NACKed; wait for the cache to change
    if ts.type_url in WILDCARD_TYPES:
        sent = carried
    else:  # named type: only what the proxy lacks (unknown after a NACK / ACK timeout counts as lacking)
        sent = {n: e for n, e in carried.items() if ts.known(n) != e.version}
    if sent is entries and shared is not None:
        head = shared.get(entries, "whole") or shared.put("whole", _head(version, _sorted(entries), ts.type_url))
    else:
        head = _head(version, _sorted(sent), ts.type_url)
    body = head + wire.ld_str(5, nonce)
    if carried is entries:
        removed = tuple(_held_back(ts, entries))
    else:
        removed = tuple(sorted(name for name in ts.sotw_sent if name not in carried))
    replaced = _replaced(ts, entries, sent)
    upserts = Versions(entries) if sent is entries else {n: e.version for n, e in sent.items()}
    pending = Pending(nonce, now, version, entries.version, upserts, removed, replaced)
    ts.sotw_sent = carried
    ts.sotw_version = version
    if isinstance(carried, TypeResources):
        ts.base, ts.overlay = carried, {}  # the client has exactly `carried` (wildcard: every name in scope)
    else:
        ts.base, ts.overlay = EMPTY, {n: e.version for n, e in carried.items()}
    ts.record_sent(pending, len(sent))
    return body, len(sent)


def in_sync(ts: TypeState, entries: TypeResources) -> bool:
    """ACKed, nothing left to send, and no rejected content held."""
    held = bool(ts.rejected) and ts.hold_version == entries.version
    return ts.pending is None and not held and not has_work(ts, entries)


def idle(ts: TypeState, entries: TypeResources) -> bool:
    """Nothing to send, known in O(1): a wildcard stream whose last response was exactly `entries`."""
    return FAST and not ts.must_respond and ts.wildcard and ts.sotw_sent is entries
