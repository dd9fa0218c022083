"""DestinationRule connection pool and outlier detection -> Cluster fields (Istio ``cluster_traffic_policy.go``
``applyConnectionPool``, ``applyH2Upgrade``, ``applyOutlierDetection``), for one effective policy
(destination_rules.effective_policy). Load balancing is in cluster_lb.py, upstream TLS in cluster_tls.py.

Connection pool (Istio defaults when a field is absent, and also without any DestinationRule):
- circuit breakers: one threshold set, every limit MaxUint32, ``track_remaining``; ``tcp.maxConnections``,
  ``http.http1MaxPendingRequests``, ``http.http2MaxRequests``, ``http.maxRetries`` override when > 0;
  ``retryBudget{percent, minRetryConcurrency}`` -> ``thresholds.retry_budget``;
- ``tcp.connectTimeout`` -> ``connect_timeout`` (else the mesh connectTimeout, TranslateOptions);
- ``tcp.tcpKeepalive{probes,time,interval}`` -> ``upstream_connection_options.tcp_keepalive`` (seconds);
- ``http.idleTimeout`` (else ``tcp.idleTimeout``), ``http.maxRequestsPerConnection``,
  ``tcp.maxConnectionDuration`` -> ``common_http_protocol_options`` of the upstream ``HttpProtocolOptions``;
- HTTP/2 upstream when the port protocol is HTTP2/GRPC/GRPC-WEB or ``h2UpgradePolicy: UPGRADE``
  (``DO_NOT_UPGRADE`` wins over the port protocol, ``DEFAULT`` = mesh default = do not upgrade);
  ``maxConcurrentStreams`` and ``http2KeepAlive{interval,timeout}`` go to its ``http2_protocol_options``;
- ``useClientProtocol`` -> ``use_downstream_protocol_config`` (HTTP/1.1 or HTTP/2 as the client spoke);
- upstream TLS without ``sni`` -> ``upstream_http_protocol_options.auto_sni`` (+ ``auto_san_validation``
  unless SANs are listed or verification is skipped), as Istio's ENABLE_AUTO_SNI / VERIFY_CERTIFICATE_AT_CLIENT.

Outlier detection (only when set): ``enforcing_success_rate 0``; consecutive5xxErrors / consecutiveGatewayErrors
(enforcing 100 when > 0); interval; baseEjectionTime; maxEjectionPercent (> 0); split local-origin errors;
``minHealthPercent`` -> ``common_lb_config.healthy_panic_threshold`` (set even when 0: panic mode off);
``outlierDetectionHttpErrorCodes`` -> ``HttpProtocolOptions.outlier_detection.error_matcher`` (``:status``
exact matches ORed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.common.matcher.v3 import matcher_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from google.protobuf import any_pb2

from istiod_lite.model.service import ServicePort
from istiod_lite.translate import names
from istiod_lite.translate.durations import to_duration

MAX_UINT32 = 2**32 - 1
H2_PROTOCOLS = frozenset({"HTTP2", "GRPC", "GRPC-WEB"})


@dataclass(frozen=True)
class UpstreamTls:
    """What cluster_tls tells the protocol options about upstream TLS."""

    auto_sni: bool = False
    auto_san_validation: bool = False


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


def _duration(spec: Mapping[str, Any], key: str):
    value = spec.get(key)
    return to_duration(value) if value is not None and value != "" else None


def apply_connection_pool(c: cluster_pb2.Cluster, pool: Mapping[str, Any] | None, port: ServicePort,
                          retry_budget: Mapping[str, Any] | None = None, tls: UpstreamTls = UpstreamTls(),
                          outlier: Mapping[str, Any] | None = None) -> None:
    pool = pool or {}
    http = pool.get("http") or {}
    tcp = pool.get("tcp") or {}
    t = default_thresholds()
    common = protocol_pb2.HttpProtocolOptions()
    if _positive(http, "http2MaxRequests"):
        t.max_requests.value = _positive(http, "http2MaxRequests")
    if _positive(http, "http1MaxPendingRequests"):
        t.max_pending_requests.value = _positive(http, "http1MaxPendingRequests")
    if _positive(http, "maxRetries"):
        t.max_retries.value = _positive(http, "maxRetries")
    if _positive(tcp, "maxConnections"):
        t.max_connections.value = _positive(tcp, "maxConnections")
    if retry_budget is not None:
        budget = t.retry_budget
        budget.SetInParent()
        if retry_budget.get("percent") is not None:
            budget.budget_percent.value = float(retry_budget["percent"])
        if retry_budget.get("minRetryConcurrency") is not None:
            budget.min_retry_concurrency.value = int(retry_budget["minRetryConcurrency"])
    idle = _duration(http, "idleTimeout") or _duration(tcp, "idleTimeout")
    if idle is not None:
        common.idle_timeout.CopyFrom(idle)
    if _positive(http, "maxRequestsPerConnection"):
        common.max_requests_per_connection.value = _positive(http, "maxRequestsPerConnection")
    if (d := _duration(tcp, "maxConnectionDuration")) is not None:
        common.max_connection_duration.CopyFrom(d)
    if (d := _duration(tcp, "connectTimeout")) is not None:
        c.connect_timeout.CopyFrom(d)
    ka = tcp.get("tcpKeepalive")
    if ka is not None:
        keep = c.upstream_connection_options.tcp_keepalive
        keep.SetInParent()
        if _positive(ka, "probes"):
            keep.keepalive_probes.value = _positive(ka, "probes")
        if (d := _duration(ka, "time")) is not None:
            keep.keepalive_time.value = max(1, d.seconds)
        if (d := _duration(ka, "interval")) is not None:
            keep.keepalive_interval.value = max(1, d.seconds)
    del c.circuit_breakers.thresholds[:]
    c.circuit_breakers.thresholds.append(t)
    _protocol_options(c, http, port, common, tls, outlier)


def use_http2(http: Mapping[str, Any], port: ServicePort) -> bool:
    policy = http.get("h2UpgradePolicy") or "DEFAULT"
    if policy == "UPGRADE":
        return True
    if policy == "DO_NOT_UPGRADE":
        return False
    return port.protocol in H2_PROTOCOLS


def _protocol_options(c: cluster_pb2.Cluster, http: Mapping[str, Any], port: ServicePort,
                      common: protocol_pb2.HttpProtocolOptions, tls: UpstreamTls,
                      outlier: Mapping[str, Any] | None) -> None:
    opts = hpo.HttpProtocolOptions()
    h2 = protocol_pb2.Http2ProtocolOptions()
    if _positive(http, "maxConcurrentStreams"):
        h2.max_concurrent_streams.value = _positive(http, "maxConcurrentStreams")
    keepalive = http.get("http2KeepAlive")
    if keepalive:
        if (d := _duration(keepalive, "interval")) is not None:
            h2.connection_keepalive.interval.CopyFrom(d)
        if (d := _duration(keepalive, "timeout")) is not None:
            h2.connection_keepalive.timeout.CopyFrom(d)
    if http.get("useClientProtocol"):
        opts.use_downstream_protocol_config.http_protocol_options.SetInParent()
        opts.use_downstream_protocol_config.http2_protocol_options.CopyFrom(h2)
    elif use_http2(http, port):
        opts.explicit_http_config.http2_protocol_options.CopyFrom(h2)
    else:
        opts.explicit_http_config.http_protocol_options.SetInParent()
    if common.ByteSize():
        opts.common_http_protocol_options.CopyFrom(common)
    if tls.auto_sni:
        opts.upstream_http_protocol_options.auto_sni = True
        opts.upstream_http_protocol_options.auto_san_validation = tls.auto_san_validation
    codes = (outlier or {}).get("outlierDetectionHttpErrorCodes") or ()
    if codes:
        _error_matcher(opts, [int(x) for x in codes])
    if opts.HasField("explicit_http_config") and opts.explicit_http_config.HasField("http_protocol_options") \
            and not (opts.HasField("common_http_protocol_options") or opts.HasField("upstream_http_protocol_options")
                     or opts.HasField("outlier_detection")):
        return  # plain HTTP/1.1 with Envoy defaults: leave the cluster as it is (Envoy's default is HTTP/1.1)
    packed = any_pb2.Any()
    packed.Pack(opts)
    c.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(packed)


def _error_matcher(opts: hpo.HttpProtocolOptions, codes: list[int]) -> None:
    preds = []
    for code in codes:
        p = matcher_pb2.MatchPredicate()
        p.http_response_headers_match.headers.append(
            rc.HeaderMatcher(name=":status", string_match={"exact": str(code)}))
        preds.append(p)
    if len(preds) == 1:
        opts.outlier_detection.error_matcher.CopyFrom(preds[0])
    else:
        opts.outlier_detection.error_matcher.or_match.rules.extend(preds)


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
    if (d := _duration(od, "interval")) is not None:
        out.interval.CopyFrom(d)
    if (d := _duration(od, "baseEjectionTime")) is not None:
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
