"""Joins parsed objects into the waypoint's view of services: Kubernetes Service + EndpointSlices + Pod
labels, ServiceEntry hosts, and the `istio.io/use-waypoint` binding (service label beats namespace label,
`none` opts out), as in Istio's pilot/pkg/serviceregistry/ambient/waypoints.go."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from istiod_lite.model.gateway import Gateway
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, ObjectMeta, warning
from istiod_lite.model.parse_core import KubeEndpointSlice, KubePod, KubePort, KubeService
from istiod_lite.model.service import Endpoint, Service, ServicePort

USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"

_APP_PROTOCOLS = {
    "http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "GRPC-WEB", "kubernetes.io/h2c": "HTTP2",
    "tcp": "TCP", "https": "HTTPS", "tls": "TLS", "mongo": "MONGO", "redis": "REDIS", "mysql": "MYSQL",
    "kubernetes.io/ws": "HTTP", "kubernetes.io/wss": "HTTPS",
}


def port_protocol(name: str, app_protocol: str | None, l4: str = "TCP") -> str:
    """Istio protocol selection: appProtocol, else the port name prefix (`http-web` -> HTTP), else UNKNOWN."""
    if l4.upper() == "UDP":
        return "UDP"
    if app_protocol:
        return _APP_PROTOCOLS.get(app_protocol.lower(), "UNKNOWN")
    prefix = name.split("-", 1)[0].lower()
    return _APP_PROTOCOLS.get(prefix, "UNKNOWN")


def kubernetes_service(svc: KubeService, slices: list[KubeEndpointSlice], pods: Mapping[ConfigKey, KubePod],
                       domain_suffix: str) -> Service:
    """One Kubernetes Service joined with its EndpointSlices (ready endpoints) and their Pods' labels."""
    key = svc.meta.key
    ports = tuple(_service_port(p) for p in svc.ports if p.protocol.upper() != "UDP")
    endpoints = []
    for sl in slices:
        slice_ports = dict(sl.ports)
        mapping = []
        for p in svc.ports:
            if p.name in slice_ports:
                mapping.append((p.port, slice_ports[p.name]))
            elif len(svc.ports) == 1 and len(sl.ports) == 1:
                mapping.append((p.port, sl.ports[0][1]))
        for ep in sl.endpoints:
            if not ep.ready:
                continue
            pod = pods.get(ConfigKey("Pod", key.namespace, ep.pod)) if ep.pod else None
            labels = pod.meta.labels if pod else ()
            for addr in ep.addresses:
                endpoints.append(Endpoint(addr, tuple(mapping), labels, locality=ep.zone and f"/{ep.zone}"))
    hostname = f"{key.name}.{key.namespace}.svc.{domain_suffix}"
    return Service(svc.meta, hostname, ports, svc.cluster_ips, tuple(sorted(set(endpoints))))


def _service_port(p: KubePort) -> ServicePort:
    target = p.target_port if isinstance(p.target_port, int) else None
    return ServicePort(p.port, p.name, port_protocol(p.name, p.app_protocol, p.protocol), target)


def service_entry_services(se: IstioConfig) -> list[Service]:
    spec: Mapping[str, Any] = se.spec
    ports = []
    for p in spec.get("ports") or []:
        proto = str(p.get("protocol") or "").upper() or port_protocol(p.get("name", ""), None)
        ports.append(ServicePort(int(p["number"]), p.get("name", ""), proto, p.get("targetPort")))
    endpoints = []
    for e in spec.get("endpoints") or []:
        if not e.get("address"):
            continue
        named = e.get("ports") or {}
        mapping = tuple((p.number, int(named.get(p.name) or p.target_port or p.number)) for p in ports)
        endpoints.append(Endpoint(e["address"], mapping, tuple(sorted((e.get("labels") or {}).items())),
                                  int(e.get("weight") or 0), str(e.get("locality") or "")))
    return [
        Service(se.meta, host, tuple(ports), tuple(spec.get("addresses") or ()), tuple(sorted(set(endpoints))),
                spec.get("resolution") or "NONE", spec.get("location") or "MESH_EXTERNAL",
                export_to=tuple(spec.get("exportTo") or ()))
        for host in spec.get("hosts") or []
    ]


def bind_waypoint(service: Service, namespaces: Mapping[str, ObjectMeta],
                  gateways: Mapping[ConfigKey, Gateway]) -> tuple[Service, list[Issue]]:
    """Resolve the service's waypoint: label on the object, else on its namespace; `none` opts out."""
    meta = service.meta
    name, ns = meta.label(USE_WAYPOINT), meta.label(USE_WAYPOINT_NAMESPACE)
    where = f"metadata.labels[{USE_WAYPOINT}]"
    if name is None:
        ns_meta = namespaces.get(service.namespace)
        if ns_meta is not None:
            name, ns = ns_meta.label(USE_WAYPOINT), ns_meta.label(USE_WAYPOINT_NAMESPACE)
            where = f"Namespace/{service.namespace} {where}"
    if not name or name == "none":
        return service, []
    gw_key = ConfigKey("Gateway", ns or service.namespace, name)
    gw = gateways.get(gw_key)
    if gw is None:
        return service, [warning(meta.key, where, f"waypoint {gw_key.namespace}/{gw_key.name} not found",
                                 "WaypointNotFound")]
    if gw.key == meta.key:
        return service, []
    if not gw.is_waypoint:
        return service, [warning(meta.key, where, f"Gateway {gw_key.namespace}/{name} has class "
                                                  f"{gw.class_name!r}, not a waypoint class", "NotAWaypoint")]
    if gw.waypoint_for not in ("service", "all"):
        return service, [warning(meta.key, where, f"waypoint {gw_key.namespace}/{name} is for "
                                                  f"{gw.waypoint_for!r} traffic, not service traffic",
                                 "UnsupportedTrafficType")]
    if gw_key.namespace != service.namespace and not any(ln.allowed_routes_from == "All" for ln in gw.listeners):
        return service, [warning(meta.key, where, f"waypoint {gw_key.namespace}/{name} does not allow "
                                                  "services from other namespaces (allowedRoutes)",
                                 "AttachmentDenied")]
    return _with_waypoint(service, gw_key), []


def _with_waypoint(service: Service, key: ConfigKey) -> Service:
    return dataclasses.replace(service, waypoint=key)
