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
    base: list[tuple[str, int]] = [(service.hostname, 0)]
    if service.is_kubernetes:
        fqdn, name, name_ns, name_ns_svc = (kubernetes_short_names(service.hostname, domain_suffix) + ("", "", ""))[:4]
        if name:
            base += [(name_ns_svc, 1), (name_ns, 2), (name, 3)]
    base += [(vip, 0) for vip in service.addresses]
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for host, rank in base:
        bare = f"[{host.lower()}]" if ":" in host and not host.startswith("[") else host.lower()
        for d in (bare, names.host_with_port(host.lower(), port)):
            if d not in seen:
                seen.add(d)
                out.append((d, rank))
    return out


def assign(wp: Waypoint, served: list[tuple[Service, int]], listener: str) -> dict[str, list[str]]:
    """virtual host name -> its domains (in candidate order), collisions resolved and reported."""
    claims: dict[str, list[tuple[int, str, str, Service]]] = {}
    order: dict[str, list[str]] = {}
    for svc, port in served:
        vh = names.virtual_host_name(svc.hostname, port)
        order[vh] = []
        for d, rank in candidates(svc, port, wp.snapshot.domain_suffix):
            claims.setdefault(d, []).append((rank, svc.namespace, svc.hostname, svc))
            order[vh].append(d)
    winner = {d: min(c, key=lambda x: x[:3]) for d, c in claims.items()}
    out: dict[str, list[str]] = {}
    lost: dict[str, tuple[Service, list[str], set[str]]] = {}
    for svc, port in served:
        vh = names.virtual_host_name(svc.hostname, port)
        out[vh] = []
        for d in order[vh]:
            w = winner[d][3]
            if w is svc:
                out[vh].append(d)
            else:
                entry = lost.setdefault(vh, (svc, [], set()))
                entry[1].append(d)
                entry[2].add(w.hostname)
    for vh, (svc, dropped, winners) in sorted(lost.items()):
        wp.report(warning(svc.key, "", f"on listener {listener}, host names {', '.join(dropped)} also belong to "
                          f"{', '.join(sorted(winners))} and route there, not to {svc.hostname}", "DomainConflict"))
    return out
