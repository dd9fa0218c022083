"""DestinationRule traffic policy -> Cluster fields (Istio ``cluster_traffic_policy.go``), for one effective
policy (destination_rules.effective_policy): connection pool -> circuit breakers (Istio defaults: every threshold
MaxUint32, track_remaining), connect timeout, HTTP protocol options, TCP keepalive; outlier detection; simple
load balancer."""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from google.protobuf import any_pb2

from istiod_lite.model.service import ServicePort
from istiod_lite.translate import names
from istiod_lite.translate.durations import to_duration

MAX_UINT32 = 2**32 - 1
H2_PROTOCOLS = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})
LB_POLICIES = {
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}


def default_thresholds() -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    t = circuit_breaker_pb2.CircuitBreakers.Thresholds(track_remaining=True)
    for f in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        getattr(t, f).value = MAX_UINT32
    return t


def _positive(spec: Mapping[str, Any], key: str) -> int:
    try:
        v = int(spec.get(key, 0) or 0)
    except (TypeError, ValueError):
        return 0
    return v if v > 0 else 0


def apply_connection_pool(c: cluster_pb2.Cluster, pool: Mapping[str, Any] | None, port: ServicePort) -> None:
    pool = pool or {}
    http = pool.get("http") or {}
    tcp = pool.get("tcp") or {}
    t = default_thresholds()
    common = protocol_pb2.HttpProtocolOptions()
    has_common = False
    if _positive(http, "http2MaxRequests"):
        t.max_requests.value = _positive(http, "http2MaxRequests")
    if _positive(http, "http1MaxPendingRequests"):
        t.max_pending_requests.value = _positive(http, "http1MaxPendingRequests")
    if _positive(http, "maxRetries"):
        t.max_retries.value = _positive(http, "maxRetries")
    if http.get("idleTimeout") and (d := to_duration(http["idleTimeout"])) is not None:
        common.idle_timeout.CopyFrom(d)
        has_common = True
    if _positive(http, "maxRequestsPerConnection"):
        common.max_requests_per_connection.value = _positive(http, "maxRequestsPerConnection")
        has_common = True
    if tcp.get("connectTimeout") and (d := to_duration(tcp["connectTimeout"])) is not None:
        c.connect_timeout.CopyFrom(d)
    if _positive(tcp, "maxConnections"):
        t.max_connections.value = _positive(tcp, "maxConnections")
    if tcp.get("maxConnectionDuration") and (d := to_duration(tcp["maxConnectionDuration"])) is not None:
        common.max_connection_duration.CopyFrom(d)
        has_common = True
    if tcp.get("idleTimeout") and not common.HasField("idle_timeout"):
        if (d := to_duration(tcp["idleTimeout"])) is not None:
            common.idle_timeout.CopyFrom(d)
            has_common = True
    ka = tcp.get("tcpKeepalive")
    if ka is not None:
        keep = c.upstream_connection_options.tcp_keepalive
        keep.SetInParent()
        if _positive(ka, "probes"):
            keep.keepalive_probes.value = _positive(ka, "probes")
        if ka.get("time") and (d := to_duration(ka["time"])) is not None:
            keep.keepalive_time.value = max(1, d.seconds)
        if ka.get("interval") and (d := to_duration(ka["interval"])) is not None:
            keep.keepalive_interval.value = max(1, d.seconds)
    del c.circuit_breakers.thresholds[:]
    c.circuit_breakers.thresholds.append(t)
    _protocol_options(c, http, port, common if has_common else None)


def _protocol_options(c: cluster_pb2.Cluster, http: Mapping[str, Any], port: ServicePort,
                      common: protocol_pb2.HttpProtocolOptions | None) -> None:
    opts = hpo.HttpProtocolOptions()
    h2 = protocol_pb2.Http2ProtocolOptions()
    if _positive(http, "maxConcurrentStreams"):
        h2.max_concurrent_streams.value = _positive(http, "maxConcurrentStreams")
    use_h2 = port.protocol in H2_PROTOCOLS or http.get("h2UpgradePolicy") == "UPGRADE"
    if http.get("useClientProtocol"):
        opts.use_downstream_protocol_config.http_protocol_options.SetInParent()
        opts.use_downstream_protocol_config.http2_protocol_options.CopyFrom(h2)
    elif use_h2:
        opts.explicit_http_config.http2_protocol_options.CopyFrom(h2)
    elif common is not None:
        opts.explicit_http_config.http_protocol_options.SetInParent()
    else:
        return
    if common is not None:
        opts.common_http_protocol_options.CopyFrom(common)
    packed = any_pb2.Any()
    packed.Pack(opts)
    c.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(packed)


def apply_outlier_detection(c: cluster_pb2.Cluster, od: Mapping[str, Any] | None) -> None:
    if od is None:
        return
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0
    if od.get("consecutive5xxErrors") is not None:
        v = int(od["consecutive5xxErrors"])
        out.consecutive_5xx.value = v
        out.enforcing_consecutive_5xx.value = 100 if v > 0 else 0
    if od.get("consecutiveGatewayErrors") is not None:
        v = int(od["consecutiveGatewayErrors"])
        out.consecutive_gateway_failure.value = v
        out.enforcing_consecutive_gateway_failure.value = 100 if v > 0 else 0
    if od.get("interval") and (d := to_duration(od["interval"])) is not None:
        out.interval.CopyFrom(d)
    if od.get("baseEjectionTime") and (d := to_duration(od["baseEjectionTime"])) is not None:
        out.base_ejection_time.CopyFrom(d)
    if _positive(od, "maxEjectionPercent"):
        out.max_ejection_percent.value = min(100, _positive(od, "maxEjectionPercent"))
    if od.get("splitExternalLocalOriginErrors"):
        out.split_external_local_origin_errors = True
        if _positive(od, "consecutiveLocalOriginFailures"):
            out.consecutive_local_origin_failure.value = _positive(od, "consecutiveLocalOriginFailures")
            out.enforcing_consecutive_local_origin_failure.value = 100
        out.enforcing_local_origin_success_rate.value = 0
    c.outlier_detection.CopyFrom(out)
    min_health = int(od.get("minHealthPercent", 0) or 0)
    if min_health >= 0:
        c.common_lb_config.healthy_panic_threshold.value = float(min_health)


def apply_load_balancer(c: cluster_pb2.Cluster, lb: Mapping[str, Any] | None) -> None:
    simple = (lb or {}).get("simple") or "LEAST_REQUEST"
    c.lb_policy = LB_POLICIES.get(simple, cluster_pb2.Cluster.LEAST_REQUEST)
