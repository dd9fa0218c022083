"""Settings: every switch of `istiod-lite serve`, frozen, built once by the CLI and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """"HOST:PORT", "[::1]:PORT" or "HOST" -> (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, default_port


@dataclass(frozen=True)
class Settings:
    config_dir: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False  # the Kubernetes source with the pod's service account
    pod_name: str = ""  # leader-election identity (POD_NAME); empty: hostname
    pod_namespace: str = "istio-system"  # where the leader-election Lease lives (POD_NAMESPACE)
    waypoint_image: str = "envoyproxy/envoy:v1.40.0"
    waypoint_xds_address: str = "istiod-lite.istio-system.svc:15010"  # what waypoint Envoys dial
    # GatewayClasses whose waypoints istiod-lite deploys and reports on (ops.waypoint_objects.CLASS_CONTROLLERS);
    # beside Istio's ambient mesh: only ("istiod-lite-waypoint",)
    gateway_classes: tuple[str, ...] = ("istio-waypoint", "istiod-lite-waypoint")
    xds_address: str = "127.0.0.1:15010"
    http_address: str = "127.0.0.1:15014"
    debounce: float = 0.1
    debounce_max: float = 1.0
    ack_timeout: float = 5.0
    poll_interval: float = 0.1
    root_namespace: str = "istio-system"
    domain_suffix: str = "cluster.local"
    ready_file: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    # Mesh identity (istiod_lite.identity): SPIFFE trust domain, Istio plug-in CA directory (None: an in-memory
    # self-signed root), lifetime of waypoint certificates in seconds (rotated at half-life).
    trust_domain: str = "cluster.local"
    ca_dir: str | None = None
    cert_lifetime: float = 24 * 3600.0
    listen_address: str = "0.0.0.0"  # waypoint listeners bind here unless the Gateway has spec.addresses
    hbone_upstream_port: int = 15008  # port connect_originate tunnels to (tests on one host change it)
