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
from typing import Any, Mapping

from istiod_lite.model.hosts import resolve_short_name
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, error
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


def ref_for(wp: Waypoint, service: Service, port: ServicePort, subset: Subset | None,
            protocol: str = "http") -> ClusterRef:
    if wp.is_bound(service):
        return inbound_ref(service, port, subset, protocol)
    name = names.outbound_cluster(port.number, service.hostname, subset.name if subset else "")
    return ClusterRef(name, service, port, subset, False)


def resolve_destination(wp: Waypoint, drs: DestinationRules, vs: IstioConfig, dest: Mapping[str, Any], path: str,
                        own: Service, own_port: ServicePort, protocol: str = "http") -> ClusterRef | None:
    """`dest` is an Istio ``Destination`` at `path` (``spec.http[i].route[j].destination``); `protocol` picks
    the inbound-vip cluster variant (``http`` or ``tcp``)."""
    key: ConfigKey = vs.key
    host = resolve_short_name(str(dest.get("host", "")), vs.namespace, wp.snapshot.domain_suffix)
    if "*" in host:
        wp.report(error(key, f"{path}.host", f"destination host {host!r} must not be a wildcard", "InvalidHost"))
        return None
    service = own if host.lower() == own.hostname.lower() else wp.snapshot.service(host, vs.namespace)
    if service is None:
        wp.report(error(key, f"{path}.host", f"destination host {host} does not exist (no Service or "
                        "ServiceEntry)", "HostNotFound"))
        return None
    port_spec = dest.get("port") or {}
    port: ServicePort | None
    if "number" in port_spec:
        port = service.port(int(port_spec["number"]))
        if port is None:
            wp.report(error(key, f"{path}.port.number", f"service {host} has no port {port_spec['number']}",
                            "PortNotFound"))
            return None
    elif service.port(own_port.number) is not None and service.hostname == own.hostname:
        port = own_port
    elif len(service.ports) == 1:
        port = service.ports[0]
    else:
        wp.report(error(key, f"{path}.port", f"service {host} has several ports: destination.port.number is "
                        "required", "PortRequired"))
        return None
    subset = None
    subset_name = dest.get("subset")
    if subset_name:
        rule = drs.for_service(service)
        subset = rule.subset(str(subset_name)) if rule else None
        if subset is None:
            wp.report(error(key, f"{path}.subset", f"subset {subset_name!r} of host {host} is not defined in any "
                            "DestinationRule", "SubsetNotFound"))
            return None
    return ref_for(wp, service, port, subset, protocol)
