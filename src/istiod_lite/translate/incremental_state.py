"""The state the incremental translator keeps per waypoint (translate/incremental.py): what the last translation
built per *unit* (`_Unit`: one bound service, or the waypoint's TCP listeners as the pseudo unit `TCP_UNIT`) and
per cluster (`_Cluster`), the waypoint-level parts fixed by the waypoint's shape (`_State`), and the copy-on-write
bookkeeping of one translation step (`_Update`: resource patches, route source counters, issue counts).

Nothing here translates; the builders are in incremental_units.py and incremental_hbone.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, TypeVar

from istiod_lite.model.gateway import Gateway
from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import TranslateResult, authz, route_scopes
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef
from istiod_lite.translate.options import TranslateOptions
from istiod_lite.translate.waypoint import Waypoint
from istiod_lite.xds.types import Encoded, encode

SERVICE_KINDS = frozenset({"Service", "ServiceEntry"})
CONFIG_KINDS = frozenset({"VirtualService", "DestinationRule", "AuthorizationPolicy"})
TCP_UNIT = "\x00tcp"  # the units key of the waypoint's TCP listeners (never a hostname)
M = TypeVar("M")


class _Full(Exception):
    """This change needs a full translation of the waypoint (internal control flow)."""


class KeyIndex:
    """name -> the unit keys that use it (cluster users, destination hosts). A name with one unit key (most of
    them) stores the bare key, not a set (~200 bytes each: ~4 MB at 5,000 services x 3 clusters). `get` returns
    a set the caller must not change; a name whose last key is discarded is dropped."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, str | set[str]] = {}

    def get(self, name: str, default: set[str] | None = None) -> set[str] | None:
        v = self._d.get(name)
        if v is None:
            return default
        return {v} if isinstance(v, str) else v

    def add(self, name: str, key: str) -> None:
        v = self._d.get(name)
        if v is None:
            self._d[name] = key
        elif isinstance(v, str):
            if v != key:
                self._d[name] = {v, key}
        else:
            v.add(key)

    def discard(self, name: str, key: str) -> None:
        v = self._d.get(name)
        if v is None:
            return
        if isinstance(v, str):
            if v == key:
                del self._d[name]
            return
        v.discard(key)
        if len(v) == 1:
            self._d[name] = next(iter(v))

    def pop(self, name: str, default: object = None) -> object:
        return self._d.pop(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


@dataclass(slots=True)
class _Unit:
    service: Service | None  # None: the TCP pseudo unit
    # HTTP listener port -> (virtual host name, its serialized VirtualHost): bytes, not messages (a kept upb
    # message costs ~10x its serialized size and pins the arena it was built in)
    vhosts: dict[int, tuple[str, bytes]]
    sources: dict[int, frozenset[ConfigKey]]  # HTTP listener port -> route sources contributed
    refs: dict[str, ClusterRef]  # cluster name -> first ref (inbound refs, then route refs)
    dest_hosts: frozenset[str]
    issues: tuple[Issue, ...]
    # resources the unit owns alone (HBONE RouteConfigurations, TCP listeners): (type URL, name) -> (resource,
    # sources); the builders hand messages, incremental_units.emit_extra replaces them with their Encoded
    extra: dict[tuple[str, str], tuple[object, tuple[str, ...]]] = field(default_factory=dict)
    inbound: frozenset[str] = frozenset()  # names of the service's inbound-vip clusters (clusters.inbound_refs)


@dataclass(slots=True)
class _Cluster:
    ref: ClusterRef
    cluster: Encoded
    endpoint: Encoded | None
    sources: tuple[str, ...]
    eds_sources: tuple[str, ...] | None
    issues: tuple[Issue, ...]


@dataclass
class _State:
    snapshot: ConfigSnapshot
    gateway: Gateway
    services: dict[str, Service]  # hostname -> bound service
    by_lower: dict[str, str]  # lowercased hostname -> hostname
    ports: tuple[int, ...]  # HTTP listener ports
    doms: dict[int, dict[str, list[str]]]
    base_issues: tuple[Issue, ...]  # resolve, listeners, domains, HBONE claims
    near: frozenset[str]
    options: TranslateOptions = TranslateOptions()
    # HBONE listener: hostname -> the HTTP ports that got a main_internal chain (None: no HBONE listener)
    hbone: dict[str, tuple[ServicePort, ...]] | None = None
    attach: dict[ConfigKey, tuple[Issue, ...]] | None = None  # attachment issues per near policy
    units: dict[str, _Unit] = field(default_factory=dict)
    clusters: dict[str, _Cluster] = field(default_factory=dict)
    users: KeyIndex = field(default_factory=lambda: KeyIndex())  # cluster name -> unit keys
    dest_index: KeyIndex = field(default_factory=lambda: KeyIndex())  # destination hostname -> unit keys
    plans: dict[int, route_scopes.ScopePlan] = field(default_factory=dict)  # Scoped RDS listener ports
    shared_of: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # port -> hostname -> shared configs
    route_sources: dict[int, Counter] = field(default_factory=dict)
    issue_counts: Counter = field(default_factory=Counter)
    issues_sorted: tuple[Issue, ...] | None = None
    selectors: tuple[Issue, ...] = ()
    services_tuple: tuple[Service, ...] | None = None
    dr_memo: dict = field(default_factory=dict)  # DestinationRules lookups of the current snapshot
    authz_memo: dict = field(default_factory=dict)  # translate/authz.py's per-translation memo, same lifetime
    out: dict[str, dict[str, object]] = field(default_factory=dict)
    fixed_sources: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    result: TranslateResult | None = None


class _Update:
    """Copy-on-write bookkeeping of one translation step (earlier results stay unchanged)."""

    def __init__(self, st: _State, first: bool) -> None:
        self.st = st
        self.first = first
        self.copied: set = set()
        self.patches: dict[str, dict[str, object | None]] = {}

    def counter(self, lp: int) -> Counter:
        if lp not in self.copied:
            self.copied.add(lp)
            self.st.route_sources[lp] = Counter(self.st.route_sources.get(lp, ()))
        return self.st.route_sources[lp]

    def issues(self, items: Iterable[Issue], sign: int) -> None:
        counts = self.st.issue_counts
        for i in items:
            before = counts[i]
            counts[i] = before + sign
            if (before > 0) != (counts[i] > 0):
                self.st.issues_sorted = None
            if counts[i] <= 0:
                del counts[i]

    def put(self, type_url: str, name: str, msg: object | None) -> Encoded | None:
        """Patch resource `name` (None: remove it). A message is serialized once into an `Encoded` (xds/types.py),
        which goes into the result and is returned for the caller to keep: the state and the results keep bytes,
        never messages. An Encoded is put as is."""
        enc = None if msg is None else encode(type_url, msg, name)
        self.patches.setdefault(type_url, {})[name] = enc
        return enc

    def sources(self, key: tuple[str, str], value: tuple[str, ...] | None) -> None:
        if "fixed" not in self.copied:
            self.copied.add("fixed")
            self.st.fixed_sources = dict(self.st.fixed_sources)
        if value is None:
            self.st.fixed_sources.pop(key, None)
        else:
            self.st.fixed_sources[key] = value


def compact(msg: M) -> M:
    """A copy of `msg` in an arena of its own. upb fuses arenas when a sub-message is copied or merged into
    another message, so a message built from shared templates or other messages can pin all of them. (The
    state and results keep no messages at all since they keep `Encoded` bytes; this is for callers that must
    keep a message.)"""
    return type(msg).FromString(msg.SerializeToString())  # type: ignore[attr-defined]


def shape(s: Service) -> tuple:
    """What waypoint-level parts read of a bound service (a change of it means a full translation)."""
    return (s.key, s.hostname, s.ports, s.addresses, s.waypoint)


def scratch(st: _State, snapshot: ConfigSnapshot) -> tuple[Waypoint, DestinationRules]:
    """A Waypoint + DestinationRules to build one unit or cluster with (issues collected per unit)."""
    wp = scratch_wp(st, snapshot)
    return wp, DestinationRules(wp, report_selectors=False, shared=st.dr_memo)


def scratch_wp(st: _State, snapshot: ConfigSnapshot) -> Waypoint:
    """`scratch` without DestinationRules (a unit's RBAC configs read none)."""
    if st.services_tuple is None:
        st.services_tuple = tuple(st.services.values())
    wp = Waypoint(snapshot=snapshot, gateway=st.gateway, options=st.options, services=st.services_tuple)
    wp.__dict__[authz._ATTACHMENT_REPORTED] = True  # reported per policy by the state (`attach`)
    wp.__dict__[authz._MEMO] = st.authz_memo  # equal policies (a root policy on every unit) built once per update
    return wp


def sorted_text(keys: Iterable[ConfigKey]) -> tuple[str, ...]:
    return tuple(sorted(str(k) for k in keys))
