"""TranslateOptions: every switch the translator reads, passed in explicitly (never read from the environment)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TranslateOptions:
    """Frozen switches for one translation. Defaults follow Istio's mesh defaults."""

    # MeshConfig.connectTimeout: Cluster.connect_timeout when a DestinationRule does not set tcp.connectTimeout.
    connect_timeout_seconds: float = 10.0
    # Listen address of HTTP listeners when the waypoint Gateway has no spec.addresses.
    listen_address: str = "0.0.0.0"
    # Istio's built-in default HTTP retry policy (MeshConfig.defaultHttpRetryPolicy unset).
    default_retry_attempts: int = 2
    default_retry_on: str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    default_host_selection_retry_max_attempts: int = 5
    # HBONE (translate/hbone.py): the mesh trust domain (SPIFFE ids spiffe://TD/...), and the port connect_originate
    # tunnels to on an endpoint's address (ztunnel's 15008; tests on one loopback host use another port).
    trust_domain: str = "cluster.local"
    hbone_upstream_port: int = 15008
