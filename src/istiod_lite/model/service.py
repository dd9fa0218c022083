"""Services as a waypoint sees them: Kubernetes Services (joined with EndpointSlices and Pods) and
ServiceEntries, one `Service` per hostname, with their ports, VIPs, endpoints and waypoint binding."""

from __future__ import annotations

from dataclasses import dataclass

from istiod_lite.model.meta import ConfigKey, ObjectMeta

# Istio's protocol names (https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/)
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})
TCP_PROTOCOLS = frozenset({"TCP", "TLS", "HTTPS", "MONGO", "REDIS", "MYSQL"})


@dataclass(frozen=True, order=True, slots=True)
class ServicePort:
    number: int
    name: str = ""
    protocol: str = "UNKNOWN"  # Istio protocol name, upper case; UNKNOWN means "sniffed" (treated as HTTP at a waypoint)
    target_port: int | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS or self.protocol == "UNKNOWN"


@dataclass(frozen=True, order=True, slots=True)
class Endpoint:
    """One workload address behind a service. `ports` maps service port number -> endpoint port."""

    address: str
    ports: tuple[tuple[int, int], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    weight: int = 0
    locality: str = ""

    def port_for(self, service_port: int) -> int | None:
        for svc_port, ep_port in self.ports:
            if svc_port == service_port:
                return ep_port
        return None

    def matches(self, selector: dict[str, str] | tuple[tuple[str, str], ...]) -> bool:
        items = selector.items() if isinstance(selector, dict) else selector
        own = dict(self.labels)
        return all(own.get(k) == v for k, v in items)


@dataclass(frozen=True, slots=True)
class Service:
    """One hostname of a Service or ServiceEntry (a ServiceEntry with N hosts gives N of these)."""

    meta: ObjectMeta  # kind "Service" or "ServiceEntry"
    hostname: str  # FQDN, e.g. reviews.default.svc.cluster.local
    ports: tuple[ServicePort, ...]
    addresses: tuple[str, ...] = ()  # VIPs: clusterIPs, ServiceEntry addresses
    endpoints: tuple[Endpoint, ...] = ()
    resolution: str = "STATIC"  # STATIC | DNS | DNS_ROUND_ROBIN | NONE
    location: str = "MESH_INTERNAL"
    waypoint: ConfigKey | None = None  # the waypoint Gateway this service is bound to
    export_to: tuple[str, ...] = ()

    @property
    def key(self) -> ConfigKey:
        return self.meta.key

    @property
    def namespace(self) -> str:
        return self.meta.key.namespace

    @property
    def is_kubernetes(self) -> bool:
        return self.meta.key.kind == "Service"

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None
