"""/debug/syncz: for every connected proxy and every xDS type, what was sent (version, nonce), what the
proxy ACKed, the last NACK with Envoy's error text, and whether the proxy is in sync; plus the resources
currently pinned to their last good version after a NACK."""

from __future__ import annotations

from typing import Iterable

from istiod_lite.xds.server import ConnectionInfo
from istiod_lite.xds.types import PUSH_ORDER, SHORT_NAMES

_ORDER = {t: i for i, t in enumerate(PUSH_ORDER)}


def type_status(t) -> str:
    """SYNCED | NACKED | STALE (sent, not ACKed yet) | NOT SENT (like istioctl proxy-status)."""
    if t.in_sync:
        return "SYNCED"
    if t.last_error and not t.pending_nonce and t.version_acked != t.version_sent:
        return "NACKED"
    if not t.version_sent:
        return "NOT SENT"
    return "STALE"


def connection_json(c: ConnectionInfo) -> dict:
    types = []
    for type_url, t in sorted(c.types.items(), key=lambda kv: (_ORDER.get(kv[0], 99), kv[0])):
        types.append({
            "type": SHORT_NAMES.get(type_url, type_url), "type_url": type_url, "status": type_status(t),
            "version_sent": t.version_sent, "nonce_sent": t.nonce_sent, "version_acked": t.version_acked,
            "pending_nonce": t.pending_nonce, "last_nack": t.last_error or None, "in_sync": t.in_sync,
            "resources_sent": t.resources_sent, "acks": t.acks, "nacks": t.nacks, "ack_timeouts": t.ack_timeouts,
            "subscribed": t.subscribed if isinstance(t.subscribed, str) else len(t.subscribed),
        })
    return {"node_id": c.node_id, "waypoint": c.group, "flavour": c.flavour, "stream_id": c.stream_id,
            "connected_at": c.connected_at, "in_sync": c.in_sync, "types": types}


def syncz(connections: Iterable[ConnectionInfo], pinned: Iterable[dict] = ()) -> dict:
    return {"proxies": [connection_json(c) for c in sorted(connections, key=lambda c: (c.group, c.node_id))],
            "rejected": list(pinned)}
