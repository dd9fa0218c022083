"""Kubernetes core kinds as istiod-lite reads them: Namespace, Service, EndpointSlice, Pod.

Only the fields the waypoint needs are kept (labels, IPs, ports), each checked with its field path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from istiod_lite.model.meta import Issue, ObjectMeta, error


@dataclass(frozen=True, slots=True)
class KubePort:
    name: str
    port: int
    protocol: str  # TCP | UDP | SCTP
    app_protocol: str | None
    target_port: int | str | None


@dataclass(frozen=True, slots=True)
class KubeService:
    meta: ObjectMeta
    cluster_ips: tuple[str, ...]
    ports: tuple[KubePort, ...]
    selector: tuple[tuple[str, str], ...]
    service_type: str


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool
    pod: str | None  # targetRef name when kind Pod
    zone: str


@dataclass(frozen=True, slots=True)
class KubeEndpointSlice:
    meta: ObjectMeta
    service: str  # label kubernetes.io/service-name
    ports: tuple[tuple[str, int], ...]  # (port name, port)
    endpoints: tuple[SliceEndpoint, ...]


@dataclass(frozen=True, slots=True)
class KubePod:
    meta: ObjectMeta
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KubeNamespace:
    meta: ObjectMeta


def parse(kind: str, obj: dict[str, Any], meta: ObjectMeta) -> tuple[Any, list[Issue]]:
    return _PARSERS[kind](obj, meta)


def _dict(obj: dict[str, Any], field: str, meta: ObjectMeta, issues: list[Issue]) -> dict[str, Any]:
    v = obj.get(field)
    if v is None:
        return {}
    if not isinstance(v, dict):
        issues.append(error(meta.key, field, "expected object"))
        return {}
    return v


def _list(v: Any, path: str, meta: ObjectMeta, issues: list[Issue]) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        issues.append(error(meta.key, path, "expected list"))
        return []
    return v


def _ip(v: Any, path: str, meta: ObjectMeta, issues: list[Issue]) -> str | None:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        issues.append(error(meta.key, path, f"not an IP address: {v!r}"))
        return None


def _port(v: Any, path: str, meta: ObjectMeta, issues: list[Issue]) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536:
        return v
    issues.append(error(meta.key, path, f"port must be an integer between 1 and 65535, got {v!r}"))
    return None


def _namespace(obj: dict[str, Any], meta: ObjectMeta) -> tuple[Any, list[Issue]]:
    return KubeNamespace(meta), []


def _service(obj: dict[str, Any], meta: ObjectMeta) -> tuple[Any, list[Issue]]:
    issues: list[Issue] = []
    spec = _dict(obj, "spec", meta, issues)
    ips = []
    raw_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    for i, ip in enumerate(_list(raw_ips, "spec.clusterIPs", meta, issues)):
        if ip == "None":
            continue
        parsed = _ip(ip, f"spec.clusterIPs[{i}]", meta, issues)
        if parsed:
            ips.append(parsed)
    ports = []
    for i, p in enumerate(_list(spec.get("ports"), "spec.ports", meta, issues)):
        path = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            issues.append(error(meta.key, path, "expected object"))
            continue
        number = _port(p.get("port"), f"{path}.port", meta, issues)
        if number is None:
            continue
        target = p.get("targetPort")
        if target is not None and not isinstance(target, (int, str)):
            issues.append(error(meta.key, f"{path}.targetPort", "expected integer or string"))
            target = None
        ports.append(KubePort(str(p.get("name") or ""), number, str(p.get("protocol") or "TCP"),
                              p.get("appProtocol"), target))
    selector = spec.get("selector") or {}
    if not isinstance(selector, dict):
        issues.append(error(meta.key, "spec.selector", "expected map"))
        selector = {}
    return KubeService(meta, tuple(ips), tuple(ports), tuple(sorted(selector.items())),
                       str(spec.get("type") or "ClusterIP")), issues


def _endpoint_slice(obj: dict[str, Any], meta: ObjectMeta) -> tuple[Any, list[Issue]]:
    issues: list[Issue] = []
    service = meta.label("kubernetes.io/service-name")
    if not service:
        issues.append(error(meta.key, "metadata.labels[kubernetes.io/service-name]",
                            "EndpointSlice without the service-name label cannot be associated with a Service"))
        return None, issues
    ports = []
    for i, p in enumerate(_list(obj.get("ports"), "ports", meta, issues)):
        if not isinstance(p, dict):
            issues.append(error(meta.key, f"ports[{i}]", "expected object"))
            continue
        number = _port(p.get("port"), f"ports[{i}].port", meta, issues)
        if number is not None:
            ports.append((str(p.get("name") or ""), number))
    endpoints = []
    for i, e in enumerate(_list(obj.get("endpoints"), "endpoints", meta, issues)):
        path = f"endpoints[{i}]"
        if not isinstance(e, dict):
            issues.append(error(meta.key, path, "expected object"))
            continue
        addrs = []
        for j, a in enumerate(_list(e.get("addresses"), f"{path}.addresses", meta, issues)):
            ip = _ip(a, f"{path}.addresses[{j}]", meta, issues)
            if ip:
                addrs.append(ip)
        cond = e.get("conditions") or {}
        ready = cond.get("ready", True) if isinstance(cond, dict) else True
        ref = e.get("targetRef") or {}
        pod = ref.get("name") if isinstance(ref, dict) and ref.get("kind") == "Pod" else None
        endpoints.append(SliceEndpoint(tuple(addrs), ready is not False, pod, str(e.get("zone") or "")))
    return KubeEndpointSlice(meta, service, tuple(ports), tuple(endpoints)), issues


def _pod(obj: dict[str, Any], meta: ObjectMeta) -> tuple[Any, list[Issue]]:
    issues: list[Issue] = []
    status = _dict(obj, "status", meta, issues)
    ips = []
    for i, p in enumerate(_list(status.get("podIPs"), "status.podIPs", meta, issues)):
        if isinstance(p, dict) and p.get("ip"):
            ip = _ip(p["ip"], f"status.podIPs[{i}].ip", meta, issues)
            if ip:
                ips.append(ip)
    if not ips and status.get("podIP"):
        ip = _ip(status["podIP"], "status.podIP", meta, issues)
        if ip:
            ips.append(ip)
    return KubePod(meta, tuple(ips)), issues


_PARSERS = {
    "Namespace": _namespace,
    "Service": _service,
    "EndpointSlice": _endpoint_slice,
    "Pod": _pod,
}
