"""Per-stream, per-type subscription state shared by the Delta and SotW handlers.

`TypeState` records what a proxy asked for (wildcard / names), what we believe it has, the one un-ACKed response
in flight (`pending`), and the ACK/NACK bookkeeping: after a NACK or an abandoned ACK every resource of that
response becomes unknown, and its content is held (not re-pushed) until the cache content of that type changes.

What the proxy has is stored as a reference to a cache `TypeResources` plus a small per-stream overlay, never as
a per-stream copy of every name (40,001 resources x 100 streams was most of the server's memory):
`known(name)` is `overlay[name]` when the name is in the overlay (a version, UNKNOWN, or None = "the proxy does
not have it"), else the version of `base[name]` when the name is in `base` and in the subscription's scope
(wildcard, or a subscribed name), else None. Every response re-bases the state on the TypeResources it was built
from, keeping in the overlay only the names where the proxy differs from it (held-back removals, NACKed content),
so a stream in sync with the cache costs one shared reference and an empty dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from istiod_lite.xds.cache import EMPTY, TypeResources

UNKNOWN = "\0unknown"  # the client's state of this name is unknown (after a NACK or ACK timeout)
REMOVED = "\0removed"  # marker in `rejected`: a removal was rejected
_MISSING = object()


class Versions(Mapping[str, str]):
    """Read-only name -> version view of a whole TypeResources (a response that carried all of it), so that a
    first response of 40,001 resources records what it carried without a per-stream dict."""

    __slots__ = ("_entries",)

    def __init__(self, entries: TypeResources):
        self._entries = entries

    def __getitem__(self, name: str) -> str:
        return self._entries[name].version

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class Pending:
    """A response sent and not yet ACKed/NACKed."""

    nonce: str
    sent_at: float
    version: str  # SotW version_info / Delta system_version_info
    type_version: str  # the cache's aggregate version of the type when the response was built
    upserts: Mapping[str, str]  # name -> version carried
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()  # names the client had (any version) and got a new version of


@dataclass(slots=True)
class TypeState:
    type_url: str
    requested: bool = False  # first request of the type seen on this stream
    wildcard: bool = False
    names: set[str] | frozenset[str] = field(default_factory=set)  # frozenset: shared with replicas, never mutated
    names_changed: bool = False  # `names` changed since the server last shared it (xds/server.py)
    must_respond: bool = False  # a request awaits an answer (first request, subscription change)
    # what we believe the client has (see the module docstring): shared `base` + per-stream `overlay`
    base: TypeResources = field(default_factory=lambda: EMPTY)
    overlay: dict[str, str | None] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # name -> version not to re-push (held)
    hold_version: str | None = None  # cache type version the hold applies to; a change releases it
    pending: Pending | None = None
    abandoned: Pending | None = None  # the last response given up on (ACK timeout); its ACK may still come
    # SotW: the last response's content (a TypeResources when it was all of one), to keep removals out of a
    # "make" push
    sotw_sent: Mapping = field(default_factory=dict)  # name -> CacheEntry
    sotw_version: str = ""  # content version of the last SotW response
    # observability
    version_sent: str = ""
    nonce_sent: str = ""
    version_acked: str = ""
    last_error: str = ""
    acks: int = 0
    nacks: int = 0
    ack_timeouts: int = 0
    resources_sent: int = 0

    # ---- what the client has ----
    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def known(self, name: str) -> str | None:
        """The version we believe the client has of `name` (UNKNOWN after a NACK), or None."""
        v = self.overlay.get(name, _MISSING)
        if v is not _MISSING:
            return v  # type: ignore[return-value]
        entry = self.base.get(name)
        if entry is not None and (self.wildcard or name in self.names):
            return entry.version
        return None

    def set_known(self, name: str, version: str | None) -> None:
        self.overlay[name] = version

    def known_dict(self) -> dict[str, str]:
        """Everything the client has, materialized (O(resources): debugging, tests, rare transitions)."""
        out = {n: e.version for n, e in self.base.items() if self.in_scope(n) and n not in self.overlay}
        out.update((n, v) for n, v in self.overlay.items() if v is not None)
        return out

    def materialize(self) -> None:
        """Drop the shared base (before the scope rule changes in a way the base cannot express)."""
        if self.base is not EMPTY:
            self.overlay = self.known_dict()
            self.base = EMPTY

    def overlay_after(self, entries: TypeResources, touched, updates: Mapping[str, str | None]) -> dict:
        """The overlay that, on base `entries`, says what the client has once `updates` (name -> version or None)
        are applied. The client's state of every name outside `touched` (an iterable that includes `updates`)
        must already equal what `entries` says (same entry as in the old base, or out of scope in both)."""
        overlay: dict[str, str | None] = {}
        for name in touched:
            v = updates[name] if name in updates else self.known(name)
            in_scope = self.wildcard or name in self.names
            if v == UNKNOWN and not in_scope:
                continue  # as good as absent: never removed, and sent again if subscribed again
            entry = entries.get(name)
            rule = entry.version if entry is not None and in_scope else None
            if v != rule:
                overlay[name] = v
        return overlay

    # ---- subscription changes ----
    def _own_names(self) -> set[str]:
        """`names`, made this stream's own (copied if it is a set shared with other streams) to change it."""
        if isinstance(self.names, frozenset):
            self.names = set(self.names)
        self.names_changed = True
        return self.names  # type: ignore[return-value]

    def subscribe(self, name: str) -> None:
        """A newly subscribed name: the client has it only if it said so (initial_resource_versions)."""
        if not self.wildcard and name not in self.overlay and name in self.base:
            self.overlay[name] = None
        self._own_names().add(name)

    def unsubscribe(self, name: str) -> None:
        """The client drops the name itself; a later subscribe must send it again."""
        if name in self.names:
            self._own_names().discard(name)
        if not self.wildcard:
            self.overlay.pop(name, None)
            self.rejected.pop(name, None)

    def subscribe_wildcard(self) -> None:
        self.materialize()  # names of the base outside `names` are not with the client
        self.wildcard = True

    def unsubscribe_wildcard(self) -> None:
        self.wildcard = False
        for name in [n for n in self.overlay if n not in self.names]:
            self.overlay.pop(name)

    # ---- responses ----
    def release_hold(self, type_version: str) -> None:
        """Forget rejected content once the cache content of the type has changed."""
        if self.hold_version is not None and self.hold_version != type_version:
            self.rejected.clear()
            self.hold_version = None

    def record_sent(self, pending: Pending, count: int) -> None:
        self.pending = pending
        self.abandoned = None  # newer state is out: a late ACK of the abandoned response says nothing now
        self.must_respond = False
        self.version_sent = pending.version
        self.nonce_sent = pending.nonce
        self.resources_sent += count

    def ack(self) -> Pending:
        done, self.pending = self.pending, None
        assert done is not None
        self.acks += 1
        self.version_acked = done.version
        return done

    def forget(self) -> Pending:
        """NACK or ACK timeout: the response's resources become unknown and are held until a change."""
        done, self.pending = self.pending, None
        assert done is not None
        for name, version in done.upserts.items():
            self.overlay[name] = UNKNOWN
            self.rejected[name] = version
        for name in done.removed:
            self.overlay[name] = UNKNOWN
            self.rejected[name] = REMOVED
        self.hold_version = done.type_version
        return done

    def nack(self, error: str) -> Pending:
        self.nacks += 1
        self.last_error = error
        return self.forget()

    def abandon(self) -> Pending:
        self.ack_timeouts += 1
        self.abandoned = self.forget()
        return self.abandoned

    def late_ack(self) -> Pending:
        """The ACK of the abandoned response arrived (Envoy took longer than the timeout, e.g. applying
        15,000 clusters) and nothing newer was sent since: the client has exactly that content."""
        done, self.abandoned = self.abandoned, None
        assert done is not None
        for name, version in done.upserts.items():
            self.overlay[name] = version
            self.rejected.pop(name, None)
        for name in done.removed:
            self.overlay[name] = None
            self.rejected.pop(name, None)
        if not self.rejected:
            self.hold_version = None
        self.acks += 1
        self.version_acked = done.version
        return done
