"""Manifest templates for behaviour tests: the demo's topology with ports chosen at run time, written into a
tmp directory. A waypoint `default/waypoint` (HBONE `mesh` listener + plain HTTP listener), `reviews` as a
Kubernetes Service with one EndpointSlice and Pod per version (subsets v1/v2 select Pod labels), and
`ratings.example.com` as a ServiceEntry with an inline endpoint; every endpoint is 127.0.0.1:<free port>.

Why a Kubernetes Service for `Host: reviews`: Istio resolves the short name `reviews` in a VirtualService or
DestinationRule of namespace `default` to `reviews.default.svc.cluster.local`, and only a Kubernetes Service
owns that name together with its short forms (`reviews`, `reviews.default`, ...) as virtual-host domains.
A ServiceEntry's hosts are used exactly as written (no short-name expansion), so a ServiceEntry is addressed
by its full host (`Host: ratings.example.com`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

NAMESPACE = "default"
WAYPOINT = "waypoint"
SERVICE_PORT = 9080


def namespace(name: str = NAMESPACE, waypoint: str = WAYPOINT) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"istio.io/use-waypoint": waypoint}}}


def waypoint_gateway(http_port: int, name: str = WAYPOINT, ns: str = NAMESPACE,
                     hbone_port: int | None = None) -> dict[str, Any]:
    """A waypoint as `istioctl waypoint generate` emits it (the `mesh` HBONE listener) plus a plain HTTP
    listener on `http_port` where tests send requests with a Host header. The HBONE listener gets a free port
    (not 15008) so that tests never bind a fixed port."""
    if hbone_port is None:
        from testsupport.procs import free_port

        hbone_port = free_port()
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "labels": {"istio.io/waypoint-for": "service"}},
        "spec": {"gatewayClassName": "istio-waypoint",
                 "listeners": [{"name": "mesh", "port": hbone_port, "protocol": "HBONE"},
                               {"name": "http", "port": http_port, "protocol": "HTTP"}]},
    }


def service_entry(host: str, endpoints: Iterable[tuple[int, dict[str, str]]], ns: str = NAMESPACE,
                  port: int = SERVICE_PORT, name: str | None = None) -> dict[str, Any]:
    """`endpoints`: (backend port on 127.0.0.1, labels)."""
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": name or host.split(".")[0], "namespace": ns},
        "spec": {
            "hosts": [host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": "127.0.0.1", "ports": {"http": p}, "labels": dict(labels)}
                          for p, labels in endpoints],
        },
    }


def kube_service(name: str, versions: dict[str, int], ns: str = NAMESPACE, port: int = SERVICE_PORT,
                 cluster_ip: str = "10.96.0.10") -> list[dict[str, Any]]:
    """A Kubernetes Service plus, per version, a Pod (labels app/version, IP 127.0.0.1) and an EndpointSlice
    pointing at it on that version's backend port (`versions`: version -> port)."""
    docs: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"clusterIP": cluster_ip, "selector": {"app": name},
                 "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]},
    }]
    for version, backend_port in versions.items():
        pod = f"{name}-{version}"
        docs.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": pod, "namespace": ns, "labels": {"app": name, "version": version}},
                     "spec": {"containers": [{"name": name, "image": f"example/{name}:{version}"}]},
                     "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})
        docs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": pod, "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                     "addressType": "IPv4",
                     "ports": [{"name": "http", "port": backend_port, "protocol": "TCP"}],
                     "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True},
                                    "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}}]})
    return docs


def destination_rule_subsets(host: str, versions: Iterable[str], ns: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": host, "namespace": ns},
        "spec": {"host": host, "subsets": [{"name": v, "labels": {"version": v}} for v in versions]},
    }


def weighted_virtual_service(host: str, weights: dict[str, int], ns: str = NAMESPACE,
                             name: str | None = None) -> dict[str, Any]:
    """All traffic for `host` split between subsets by weight (weights of 0 are left out)."""
    route = [{"destination": {"host": host, "subset": subset}, "weight": w} for subset, w in weights.items() if w]
    if len(route) == 1:
        route[0].pop("weight")
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name or host, "namespace": ns},
            "spec": {"hosts": [host], "http": [{"route": route}]}}


def resilient_virtual_service(host: str, timeout: str = "1s", attempts: int = 3, retry_on: str = "5xx",
                              ns: str = NAMESPACE, name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name or host, "namespace": ns},
            "spec": {"hosts": [host],
                     "http": [{"timeout": timeout, "retries": {"attempts": attempts, "retryOn": retry_on},
                               "route": [{"destination": {"host": host}}]}]}}


RATINGS_HOST = "ratings.example.com"


def demo_files(http_port: int, ports: dict[str, int], reviews_weights: dict[str, int] | None = None,
               ratings_timeout: str = "1s", ratings_attempts: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The demo topology as {file name: documents}. `ports` maps reviews-v1, reviews-v2, ratings -> port."""
    weights = reviews_weights if reviews_weights is not None else {"v1": 80, "v2": 20}
    return {
        "waypoint.yaml": [namespace(), waypoint_gateway(http_port)],
        "reviews.yaml": kube_service("reviews", {"v1": ports["reviews-v1"], "v2": ports["reviews-v2"]}),
        "ratings.yaml": [service_entry(RATINGS_HOST, [(ports["ratings"], {"app": "ratings", "version": "v1"})])],
        "reviews-destinationrule.yaml": [destination_rule_subsets("reviews", ["v1", "v2"])],
        "reviews-virtualservice.yaml": [weighted_virtual_service("reviews", weights)],
        "ratings-virtualservice.yaml": [resilient_virtual_service(RATINGS_HOST, ratings_timeout, ratings_attempts,
                                                                  name="ratings")],
    }


def write_docs(path: Path, docs: list[dict[str, Any]]) -> Path:
    """Write documents atomically (temp file + rename) so a watcher never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(path)
    return path


def write_files(directory: Path, files: dict[str, list[dict[str, Any]]]) -> Path:
    for name, docs in files.items():
        write_docs(directory / name, docs)
    return directory


# The translator tests' smallest mesh head: namespace `shop` bound to waypoint `shop/waypoint` (one HTTP listener
# on 8080); tests append their services and config as YAML text.
def waypoint_header(ns: str) -> str:
    """Namespace `ns` bound to waypoint `ns/waypoint` (one HTTP listener on 8080), as YAML text."""
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{istio.io/use-waypoint: waypoint}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: {ns}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: http, port: 8080, protocol: HTTP}}]
"""


SHOP_WAYPOINT_HEADER = waypoint_header("shop")
def two_port_shop_service(name: str, host: str, index: int, policy: str, subsets: str) -> str:
    """YAML of a shop ServiceEntry `name` for `host` (HTTP ports 9080 and 9090, one v1 endpoint 10.0.0.<index+1>)
    and its DestinationRule with top-level trafficPolicy `policy` (flow YAML) and `subsets` (YAML list items)."""
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}, {{number: 9090, name: http2, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.{index + 1}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: shop}}
spec:
  host: {host}
  trafficPolicy: {policy}
  subsets:{subsets}
"""


# a bound shop service without VirtualService or DestinationRule (the default route, no subsets)
SHOP_SERVICE_WITHOUT_RULES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: nodr, namespace: shop}
spec:
  hosts: [nodr.shop.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.1.1}]
"""


def hbone_echo_input(listeners: str, ns_labels: str = "istio.io/dataplane-mode: ambient", annotations: str = "{}") -> str:
    """A waypoint `default/waypoint` with `listeners`, a mesh ServiceEntry `echo.example.com` (VIP 240.240.0.5,
    endpoint 10.1.0.5) and a policy allowing only `sa/client` on it: the HBONE translator tests' input."""
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: default, labels: {{istio.io/use-waypoint: waypoint, {ns_labels}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: default, annotations: {annotations}}}
spec:
  gatewayClassName: istiod-lite-waypoint
  listeners: {listeners}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.example.com]
  addresses: [240.240.0.5]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.1.0.5}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: only-client, namespace: default}}
spec:
  targetRefs: [{{kind: ServiceEntry, group: networking.istio.io, name: echo}}]
  rules: [{{from: [{{source: {{principals: [cluster.local/ns/default/sa/client]}}}}]}}]
"""


HBONE_LISTENERS = "[{name: mesh, port: 15008, protocol: HBONE}]"
HTTP_LISTENERS = "[{name: http, port: 8080, protocol: HTTP}]"
BOTH_LISTENERS = "[{name: mesh, port: 15008, protocol: HBONE}, {name: http, port: 8080, protocol: HTTP}]"


BOOKINFO_WAYPOINT_HEADER = waypoint_header("bookinfo")


def shop_service(i: int, subsets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Service i of namespace shop (under SHOP_WAYPOINT_HEADER): a STATIC ServiceEntry svc-i.shop.example:9080 with
    the same two endpoints (version v1, v2) as every other i, and its DestinationRule (maxConnections 7, `subsets`)."""
    host, name = f"svc-{i}.shop.example", f"svc-{i}"
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": name, "namespace": "shop"},
         "spec": {"hosts": [host], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": "10.0.0.1", "labels": {"version": "v1"}},
                                {"address": "10.0.0.2", "labels": {"version": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": name, "namespace": "shop"},
         "spec": {"host": host, "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 7}}},
                  "subsets": subsets}},
    ]
