"""Which Envoy cluster a VirtualService destination (or a bound service's default route) goes to.

`ClusterRef` names one cluster and everything needed to build it and its endpoints. Destinations whose service
is bound to this waypoint use ``inbound-vip|PORT|http|...`` clusters (``tcp`` for TCP-listener routes); other
services use ``outbound|...`` clusters
(Istio ``filterWaypointOutboundServices``). Problems (unknown host, unknown port, undefined subset) are reported
at the destination's field path and the destination is dropped (None).

Destination port rule: ``destination.port.number`` when given (must be a port of the service); else the port the
route's own virtual host serves when the service has it; else the service's only port; else an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from istiod_lite.model.hosts import resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import error
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate import names
from istiod_lite.translate.destination_rules import DestinationRules, Subset
from istiod_lite.translate.waypoint import Waypoint


@dataclass(frozen=True)
class ClusterRef:
    name: str
    service: Service
    port: ServicePort
    subset: Subset | None
    inbound: bool  # bound to this waypoint (inbound-vip) or not (outbound)

    @property
    def sort_key(self) -> str:
        return self.name


def inbound_ref(service: Service, port: ServicePort, subset: Subset | None = None,
                protocol: str = "http") -> ClusterRef:
    name = names.inbound_vip_cluster(port.number, service.hostname, subset.name if subset else "", protocol)
    return ClusterRef(name, service, port, subset, True)


REFS_MEMO = "_istiod_lite_cluster_refs"  # wp.__dict__ key of `memo_ref`'s memo: (id(service), id(port),
# id(subset), protocol, inbound) -> ClusterRef (route_action.plain_tail probes it inline)


def memo_ref(wp: Waypoint, service: Service, port: ServicePort, subset: Subset | None, protocol: str,
             inbound: bool) -> ClusterRef:
    """One ClusterRef object per (service, port, subset, protocol, direction) per translation (a service's
    routes and its inbound clusters share them)."""
    memo = wp.__dict__.get(REFS_MEMO)
    if memo is None:
        memo = wp.__dict__[REFS_MEMO] = {}
    key = (id(service), id(port), id(subset), protocol, inbound)
    hit = memo.get(key)
    if hit is not None and hit.service is service and hit.port is port and hit.subset is subset:
        return hit
    if inbound:
        ref = inbound_ref(service, port, subset, protocol)
    else:
        ref = ClusterRef(names.outbound_cluster(port.number, service.hostname, subset.name if subset else ""),
                         service, port, subset, False)
    memo[key] = ref
    return ref


def wp_inbound_ref(wp: Waypoint, service: Service, port: ServicePort, subset: Subset | None = None,
                   protocol: str = "http") -> ClusterRef:
    """`inbound_ref`, memoised per translation."""
    return memo_ref(wp, service, port, subset, protocol, True)


def wp_inbound_refs(wp: Waypoint, service: Service, port: ServicePort, subsets: Sequence[Subset]) -> list[ClusterRef]:
    """`wp_inbound_ref(wp, service, port, s)` for s in (None, *subsets), in that order: the memo fetched once and
    new refs made without the dataclass __init__ (clusters.inbound_refs makes one per cluster of every bound
    service; same objects, same memo entries)."""
    memo = wp.__dict__.get(REFS_MEMO)
    if memo is None:
        memo = wp.__dict__[REFS_MEMO] = {}
    sid, pid, host, number = id(service), id(port), service.hostname, port.number
    out = []
    for subset in (None, *subsets):
        key = (sid, pid, id(subset), "http", True)
        hit = memo.get(key)
        if hit is None or hit.service is not service or hit.port is not port or hit.subset is not subset:
            hit = memo[key] = _new_object(ClusterRef)
            hit.__dict__.update(name=names.inbound_vip_cluster(number, host, subset.name if subset else ""),
                                service=service, port=port, subset=subset, inbound=True)
        out.append(hit)
    return out


_new_object = object.__new__


def ref_for(wp: Waypoint, service: Service, port: ServicePort, subset: Subset | None,
            protocol: str = "http") -> ClusterRef:
    return memo_ref(wp, service, port, subset, protocol, wp.is_bound(service))


def resolve_destination(wp: Waypoint, drs: DestinationRules, vs: IstioConfig, dest: Mapping[str, Any], path: str,
                        own: Service, own_port: ServicePort, protocol: str = "http") -> ClusterRef | None:
    """`dest` is an Istio ``Destination`` at `path` (``spec.http[i].route[j].destination``); `protocol` picks
    the inbound-vip cluster variant (``http`` or ``tcp``)."""
    raw = dest.get("host", "")
    own_host = own.hostname
    host = raw if type(raw) is str and "." in raw and not raw.startswith("*") else \
        resolve_short_name(str(raw), vs.namespace, wp.snapshot.domain_suffix)  # (names with dots stay as they are)
    if "*" in host:
        wp.report(error(vs.key, f"{path}.host", f"destination host {host!r} must not be a wildcard", "InvalidHost"))
        return None
    same = host == own_host or host.lower() == own_host.lower()
    service = own if same else wp.snapshot.service(host, vs.namespace)
    if service is None:
        wp.report(error(vs.key, f"{path}.host", f"destination host {host} does not exist (no Service or "
                        "ServiceEntry)", "HostNotFound"))
        return None
    port_spec = dest.get("port") or _NO_PORT
    port: ServicePort | None
    if "number" in port_spec:
        port = service.port(int(port_spec["number"]))
        if port is None:
            wp.report(error(vs.key, f"{path}.port.number", f"service {host} has no port {port_spec['number']}",
                            "PortNotFound"))
            return None
    elif (same or service.hostname == own_host) and service.port(own_port.number) is not None:
        port = own_port
    elif len(service.ports) == 1:
        port = service.ports[0]
    else:
        wp.report(error(vs.key, f"{path}.port", f"service {host} has several ports: destination.port.number is "
                        "required", "PortRequired"))
        return None
    subset = None
    subset_name = dest.get("subset")
    if subset_name:
        rule = drs.for_service(service)
        subset = rule.subset(str(subset_name)) if rule else None
        if subset is None:
            wp.report(error(vs.key, f"{path}.subset", f"subset {subset_name!r} of host {host} is not defined in any "
                            "DestinationRule", "SubsetNotFound"))
            return None
    return memo_ref(wp, service, port, subset, protocol, service.waypoint == wp.gateway.key)


_NO_PORT: Mapping[str, Any] = {}
_UNSET = object()


def resolve_route_destinations(wp: Waypoint, drs: DestinationRules, vs: IstioConfig,
                               routes: Sequence[Mapping[str, Any]], path: str, own: Service, own_port: ServicePort,
                               protocol: str = "http") -> list[ClusterRef | None]:
    """`resolve_destination` of each ``route[j].destination`` of the http rule at `path`, in order. The usual
    destination (the service itself by its exact hostname, no port, a defined subset or none) is resolved with
    the per-rule work done once; any other goes through `resolve_destination` (which reports)."""
    own_host = own.hostname
    own_fast = own_port in own.ports or own.port(own_port.number) is not None  # (as resolve_destination's rule)
    bound = own.waypoint == wp.gateway.key
    memo = wp.__dict__.get(REFS_MEMO)
    if memo is None:
        memo = wp.__dict__[REFS_MEMO] = {}
    rule: Any = _UNSET
    out: list[ClusterRef | None] = []
    for j, r in enumerate(routes):
        dest = r.get("destination") or _NO_PORT
        raw = dest.get("host", "")
        if own_fast and raw == own_host and "." in raw and "*" not in raw and not dest.get("port"):
            name = dest.get("subset")
            subset = None
            if name:
                if rule is _UNSET:
                    rule = drs.for_service(own)
                subset = rule.subset(str(name)) if rule else None
            if subset is not None or not name:
                hit = memo.get((id(own), id(own_port), id(subset), protocol, bound))  # memo_ref, inlined
                if hit is not None and hit.service is own and hit.port is own_port and hit.subset is subset:
                    out.append(hit)
                else:
                    out.append(memo_ref(wp, own, own_port, subset, protocol, bound))
                continue
        out.append(resolve_destination(wp, drs, vs, dest, f"{path}.route[{j}].destination", own, own_port, protocol))
    return out
