"""Per-stream, per-type subscription state shared by the Delta and SotW handlers.

`TypeState` records what a proxy asked for (wildcard / names), what we believe it has (`known`:
name -> version), the one un-ACKed response in flight (`pending`), and the ACK/NACK bookkeeping:
after a NACK or an abandoned ACK every resource of that response becomes unknown, and its content is
held (not re-pushed) until the cache content of that type changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UNKNOWN = "\0unknown"  # the client's state of this name is unknown (after a NACK or ACK timeout)
REMOVED = "\0removed"  # marker in `rejected`: a removal was rejected


@dataclass(slots=True)
class Pending:
    """A response sent and not yet ACKed/NACKed."""

    nonce: str
    sent_at: float
    version: str  # SotW version_info / Delta system_version_info
    type_version: str  # the cache's aggregate version of the type when the response was built
    upserts: dict[str, str]  # name -> version carried
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()  # names the client had (any version) and got a new version of


@dataclass(slots=True)
class TypeState:
    type_url: str
    requested: bool = False  # first request of the type seen on this stream
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    must_respond: bool = False  # a request awaits an answer (first request, subscription change)
    known: dict[str, str] = field(default_factory=dict)  # name -> version we believe the client has
    rejected: dict[str, str] = field(default_factory=dict)  # name -> version not to re-push (held)
    hold_version: str | None = None  # cache type version the hold applies to; a change releases it
    pending: Pending | None = None
    abandoned: Pending | None = None  # the last response given up on (ACK timeout); its ACK may still come
    # SotW: the last response's content, to keep removals out of a "make" push
    sotw_sent: dict = field(default_factory=dict)  # name -> CacheEntry
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
            self.known[name] = UNKNOWN
            self.rejected[name] = version
        for name in done.removed:
            self.known[name] = UNKNOWN
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
            self.known[name] = version
            self.rejected.pop(name, None)
        for name in done.removed:
            self.known.pop(name, None)
            self.rejected.pop(name, None)
        if not self.rejected:
            self.hold_version = None
        self.acks += 1
        self.version_acked = done.version
        return done

    def targets(self, names_in_cache) -> set[str]:
        return set(names_in_cache) | self.names if self.wildcard else set(self.names)
