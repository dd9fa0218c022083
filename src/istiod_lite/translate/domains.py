"""Virtual host domains: the host names a client may use for a service, unique across one RouteConfiguration.

Forms, each also with ``:<service port>``: the hostname (FQDN / ServiceEntry host), for Kubernetes Services
``name.ns.svc``, ``name.ns`` and ``name`` (model.hosts.kubernetes_short_names), and every VIP; an IPv6 VIP is
bracketed in both forms (``[2001:db8::a]``, ``[2001:db8::a]:80``), as it appears in a Host header (RFC 3986).
Envoy rejects a RouteConfiguration where two virtual hosts share a domain, so each domain goes to one virtual
host: the one whose form is most specific (hostname/VIP > ``name.ns.svc`` > ``name.ns`` > ``name``), ties by
(namespace, hostname). The losing service gets a warning Issue naming the winner.
"""

from __future__ import annotations

from istiod_lite.model.hosts import kubernetes_short_names
from istiod_lite.model.meta import warning
from istiod_lite.model.service import Service
from istiod_lite.translate import names
from istiod_lite.translate.waypoint import Waypoint


def candidates(service: Service, port: int, domain_suffix: str) -> list[tuple[str, int]]:
    """(domain, rank) pairs; lower rank = more specific."""
    host = service.hostname
    if not service.addresses and ":" not in host and service.meta.key.kind != "Service":  # the usual ServiceEntry
        low = host.lower()
        return [(low, 0), (f"{low}:{port}", 0)]
    base: list[tuple[str, int]] = [(host, 0)]
    if service.is_kubernetes:
        fqdn, name, name_ns, name_ns_svc = (kubernetes_short_names(service.hostname, domain_suffix) + ("", "", ""))[:4]
        if name:
            base += [(name_ns_svc, 1), (name_ns, 2), (name, 3)]
    base += [(vip, 0) for vip in service.addresses]
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for host, rank in base:
        low = host.lower()
        if ":" in host and not host.startswith("["):  # an IPv6 literal
            pair = (f"[{low}]", f"[{low}]:{port}")
        else:
            pair = (low, f"{low}:{port}")  # names.host_with_port
        for d in pair:
            if d not in seen:
                seen.add(d)
                out.append((d, rank))
    return out


def _contest(first: dict, contested: dict, domain: str, claim: tuple) -> None:
    """`claim` wants `domain`, which `first[domain]` claimed before: both (and later ones) contest it."""
    if domain in contested:
        contested[domain].append(claim)
    else:
        contested[domain] = [first[domain], claim]


def assign(wp: Waypoint, served: list[tuple[Service, int]], listener: str) -> dict[str, list[str]]:
    """virtual host name -> its domains (in candidate order), collisions resolved and reported. One pass: a
    domain claimed once (the usual) is its claimant's; only contested domains are ranked."""
    suffix = wp.snapshot.domain_suffix
    rows: list[tuple[str, Service, list[str]]] = []
    first: dict[str, tuple[int, str, str, Service]] = {}  # domain -> its first claim
    contested: dict[str, list[tuple[int, str, str, Service]]] = {}  # domain -> all its claims, when several
    for svc, port in served:
        ns, host = svc.meta.key.namespace, svc.hostname
        if not svc.addresses and ":" not in host and svc.meta.key.kind != "Service":  # `candidates`' usual case
            low = host.lower()
            c = (0, ns, host, svc)  # (one claim for both domains: they differ)
            ds = [low, f"{low}:{port}"]
            for d in ds:
                if first.setdefault(d, c) is not c:
                    _contest(first, contested, d, c)
            rows.append((f"{host}:{port}", svc, ds))  # names.virtual_host_name
            continue
        ds = []
        for d, rank in candidates(svc, port, suffix):
            c = (rank, ns, host, svc)
            if first.setdefault(d, c) is not c:
                _contest(first, contested, d, c)
            ds.append(d)
        rows.append((names.virtual_host_name(host, port), svc, ds))
    if not contested:
        out = {vh: ds for vh, _, ds in rows}
        if len(out) == len(rows):
            return out
    elif len({vh for vh, _, _ in rows}) == len(rows):
        return _split(wp, listener, rows, {d: min(c, key=lambda x: x[:3])[3] for d, c in contested.items()})
    return _assign_general(wp, served, listener)  # two services with one virtual host name


def _split(wp: Waypoint, listener: str, rows: list[tuple[str, Service, list[str]]],
           winner: dict[str, Service]) -> dict[str, list[str]]:
    """virtual host name -> the domains of its row its service won (`winner`: domain -> the service it goes to;
    a domain not in it is the row's own); the lost ones reported. A later row of the same name replaces the
    earlier's list."""
    out: dict[str, list[str]] = {}
    lost: dict[str, tuple[Service, list[str], set[str]]] = {}
    for vh, svc, ds in rows:
        mine = out[vh] = []
        for d in ds:
            w = winner.get(d, svc)
            if w is svc:
                mine.append(d)
            else:
                entry = lost.setdefault(vh, (svc, [], set()))
                entry[1].append(d)
                entry[2].add(w.hostname)
    _report_lost(wp, listener, lost)
    return out


def _report_lost(wp: Waypoint, listener: str, lost: dict[str, tuple[Service, list[str], set[str]]]) -> None:
    for vh, (svc, dropped, winners) in sorted(lost.items()):
        wp.report(warning(svc.key, "", f"on listener {listener}, host names {', '.join(dropped)} also belong to "
                          f"{', '.join(sorted(winners))} and route there, not to {svc.hostname}", "DomainConflict"))


def _assign_general(wp: Waypoint, served: list[tuple[Service, int]], listener: str) -> dict[str, list[str]]:
    """`assign` as first written (claims ranked per domain): the reference for virtual host names shared by
    several served services (a later one's domain list replaces the earlier's)."""
    claims: dict[str, list[tuple[int, str, str, Service]]] = {}
    order: dict[str, list[str]] = {}
    for svc, port in served:
        vh = names.virtual_host_name(svc.hostname, port)
        order[vh] = []
        for d, rank in candidates(svc, port, wp.snapshot.domain_suffix):
            claims.setdefault(d, []).append((rank, svc.namespace, svc.hostname, svc))
            order[vh].append(d)
    rows = [(vh, svc, order[vh]) for vh, svc in ((names.virtual_host_name(s.hostname, p), s) for s, p in served)]
    return _split(wp, listener, rows, {d: min(c, key=lambda x: x[:3])[3] for d, c in claims.items()})
