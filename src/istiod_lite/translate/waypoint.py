"""The waypoint being translated: its Gateway, the services bound to it, its HTTP listeners, and the issue
collector shared by the other translate modules for one `translate()` call.

Which service port does an HTTP listener serve (``served_port``)? Requests arriving on the waypoint's HTTP
listener on port P for a service S go to S's port P when S has an HTTP port numbered P; otherwise to S's first
HTTP port (in declaration order). A service with no HTTP port is not served by HTTP listeners (warning).
UNKNOWN-protocol ports count as HTTP (Istio sniffs them; a waypoint treats them as HTTP).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from istiod_lite.model.gateway import Gateway, GatewayListener
from istiod_lite.model.meta import ConfigKey, Issue, error, warning
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate.options import TranslateOptions

HBONE = "HBONE"
HTTP = "HTTP"


@dataclass
class Waypoint:
    """Everything one translation needs about its waypoint. `issues` collects problems (deduplicated later)."""

    snapshot: ConfigSnapshot
    gateway: Gateway
    options: TranslateOptions
    services: tuple[Service, ...]
    issues: list[Issue] = field(default_factory=list)

    @property
    def key(self) -> ConfigKey:
        return self.gateway.key

    @property
    def namespace(self) -> str:
        return self.gateway.key.namespace

    def report(self, issue: Issue) -> None:
        self.issues.append(issue)

    def is_bound(self, service: Service) -> bool:
        return service.waypoint == self.key

    def http_listeners(self) -> tuple[GatewayListener, ...]:
        """The Gateway's HTTP listeners, one per port (first by declaration wins), others reported."""
        out: dict[int, GatewayListener] = {}
        for i, lst in enumerate(self.gateway.listeners):
            path = f"spec.listeners[{i}]"
            proto = lst.protocol.upper()
            if proto == HBONE:
                continue  # served by translate/hbone.py
            if proto == "TCP":
                continue  # served by translate/tcp.py
            if proto != HTTP:
                self.report(warning(self.key, f"{path}.protocol",
                                    f"listener protocol {lst.protocol} is not supported yet", "UnsupportedProtocol"))
                continue
            if lst.port in out:
                self.report(error(self.key, f"{path}.port", f"port {lst.port} is already used by listener "
                                  f"{out[lst.port].name!r}; listener {lst.name!r} ignored", "PortConflict"))
                continue
            out[lst.port] = lst
        if not out and not any(lst.protocol.upper() == HBONE for lst in self.gateway.listeners):
            self.report(warning(self.key, "spec.listeners", "waypoint has no HTTP listener: no routes are served",
                                "NoHTTPListener"))
        return tuple(sorted(out.values(), key=lambda x: x.port))


def http_ports(service: Service) -> tuple[ServicePort, ...]:
    ports = service.ports
    if len(ports) == 1:  # (the usual)
        return ports if ports[0].is_http else ()
    return tuple([p for p in ports if p.is_http])


def served_port(service: Service, listener_port: int) -> ServicePort | None:
    """The service port that requests on HTTP listener `listener_port` are routed to (see module doc)."""
    ports = http_ports(service)
    for p in ports:
        if p.number == listener_port:
            return p
    return ports[0] if ports else None


def resolve(snapshot: ConfigSnapshot, key: ConfigKey, options: TranslateOptions) -> tuple[Waypoint | None, Issue | None]:
    gw = snapshot.gateway(key)
    if gw is None:
        return None, error(key, "", f"waypoint Gateway {key.namespace}/{key.name} does not exist", "WaypointNotFound")
    if not gw.is_waypoint:
        return None, error(key, "spec.gatewayClassName",
                           f"Gateway class {gw.class_name!r} is not a waypoint class", "NotAWaypoint")
    wp = Waypoint(snapshot=snapshot, gateway=gw, options=options, services=())
    by_host: dict[str, Service] = {}
    for svc in sorted(snapshot.services_for_waypoint(key), key=_service_order):
        chosen = snapshot.service(svc.hostname, svc.namespace)
        if svc.hostname in by_host or (chosen is not None and chosen is not svc and chosen.waypoint == key):
            wp.report(warning(svc.key, "", f"host {svc.hostname} is also defined by another bound service; "
                              "this one is ignored", "DuplicateHost"))
            continue
        by_host[svc.hostname] = svc
    wp.services = tuple(by_host.values())
    services = wp.services
    for svc in services:
        if not http_ports(svc):
            wp.report(warning(svc.key, "spec.ports", f"service {svc.hostname} has no HTTP port; it is served "
                              "only through the waypoint's TCP listeners (translate/tcp.py)", "NoHTTPPort"))
    return wp, None


def _service_order(s: Service) -> tuple[str, str, ConfigKey]:
    key = s.meta.key
    return (key.namespace, s.hostname, key)
