"""State-of-the-World ADS: a response for a wildcard type (LDS/CDS/SRDS) carries the full set; for a named type
(RDS/EDS/SDS) it carries the requested resources the proxy does not have at their current version (Envoy's SotW
mux updates only the watches whose resources a response names, so one changed RouteConfiguration among 5,000
costs Envoy one, bench/route_granularity.py). `version_info` is the version of the whole requested content.

A request is classified by nonce and version: ACK = the version we sent + its nonce; NACK = an older version
+ the nonce + `error_detail`; after recovery Envoy may ACK the new version while still carrying the old
`error_detail`, which is an ACK. A change of `resource_names` can arrive with the previous nonce/version (it
looks like a repeated ACK), so names are compared on every request.
"""

from __future__ import annotations

from istiod_lite.xds import wire
from istiod_lite.xds.cache import CacheEntry, TypeResources, aggregate_version
from istiod_lite.xds.delta import RequestKind
from istiod_lite.xds.subscription import Pending, TypeState
from istiod_lite.xds.types import WILDCARD_TYPES

FLAVOUR = "sotw"


def on_request(ts: TypeState, req) -> RequestKind:
    names = set(req.resource_names) - {"*"}
    wildcard = "*" in req.resource_names or (not names and ts.type_url in WILDCARD_TYPES)
    if not ts.requested:
        ts.requested = True
        ts.must_respond = True
    elif names != ts.names or wildcard != ts.wildcard:
        ts.must_respond = True
    ts.names, ts.wildcard = names, wildcard
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


def content(ts: TypeState, entries: TypeResources, allow_removals: bool) -> dict[str, CacheEntry]:
    targets = entries.keys() if ts.wildcard else ts.names
    out = {name: entries[name] for name in targets if name in entries}
    if not allow_removals:
        for name, entry in ts.sotw_sent.items():
            if name not in out and (ts.wildcard or name in ts.names):
                out[name] = entry
    return dict(sorted(out.items()))


def has_work(ts: TypeState, entries: TypeResources) -> bool:
    if ts.must_respond:
        return True
    return aggregate_version(content(ts, entries, True).values()) != ts.sotw_version


def build(
    ts: TypeState, entries: TypeResources, allow_removals: bool, nonce: str, now: float
) -> tuple[bytes, int] | None:
    ts.release_hold(entries.version)
    carried = content(ts, entries, allow_removals)
    version = aggregate_version(carried.values())
    if not ts.must_respond and version == ts.sotw_version:
        return None  # includes: the same content was NACKed; wait for the cache to change
    if ts.type_url in WILDCARD_TYPES:
        sent = carried
    else:  # named type: only what the proxy lacks (unknown after a NACK / ACK timeout counts as lacking)
        sent = {n: e for n, e in carried.items() if ts.known.get(n) != e.version}
    body = b"".join(
        [
            wire.ld_str(1, version),
            *(e.sotw_frame for e in sent.values()),
            wire.ld_str(4, ts.type_url),
            wire.ld_str(5, nonce),
        ]
    )
    removed = tuple(name for name in ts.sotw_sent if name not in carried)
    pending = Pending(nonce, now, version, entries.version, {n: e.version for n, e in sent.items()}, removed)
    ts.sotw_sent = carried
    ts.sotw_version = version
    ts.known = {n: (ts.known[n] if n not in sent and n in ts.known else e.version) for n, e in carried.items()}
    ts.record_sent(pending, len(sent))
    return body, len(sent)


def in_sync(ts: TypeState, entries: TypeResources) -> bool:
    """ACKed, nothing left to send, and no rejected content held."""
    held = bool(ts.rejected) and ts.hold_version == entries.version
    return ts.pending is None and not held and not has_work(ts, entries)
