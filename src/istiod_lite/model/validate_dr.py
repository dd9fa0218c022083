"""DestinationRule semantic checks (Istio ``validation.ValidateDestinationRule``) the CRD schema cannot express,
plus the limits the real Envoy enforces only when it builds a cluster (a Maglev table size that is not prime, a
ring larger than Envoy's maximum): such a cluster would otherwise be stuck warming in Envoy (XDS-FACTS 8).

An error drops the whole DestinationRule (the parser's rule), as istiod's validating webhook would reject it.
Durations of the top-level ``trafficPolicy`` are checked by validate.py; this module checks those inside
``portLevelSettings`` and subset policies, and the duration fields validate.py does not list.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from istiod_lite.model.duration import parse_duration
from istiod_lite.model.meta import ConfigKey, Issue, error

MAX_RING_SIZE = 8_388_608  # Envoy RingHashLbConfig.maximum_ring_size default
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TOP_LEVEL_DURATIONS_CHECKED_ELSEWHERE = frozenset({
    "connectionPool.tcp.connectTimeout", "connectionPool.tcp.maxConnectionDuration", "connectionPool.tcp.idleTimeout",
    "connectionPool.tcp.tcpKeepalive.time", "connectionPool.tcp.tcpKeepalive.interval",
    "connectionPool.http.idleTimeout", "outlierDetection.interval", "outlierDetection.baseEjectionTime",
    "loadBalancer.consistentHash.httpCookie.ttl", "loadBalancer.warmup.duration",
})
_DURATIONS = (*sorted(_TOP_LEVEL_DURATIONS_CHECKED_ELSEWHERE), "loadBalancer.warmupDurationSecs",
              "connectionPool.http.http2KeepAlive.interval", "connectionPool.http.http2KeepAlive.timeout")


def check(spec: dict[str, Any], key: ConfigKey) -> list[Issue]:
    issues: list[Issue] = []
    if not spec.get("host"):
        issues.append(error(key, "spec.host", "required field is missing"))
    issues.extend(_export_to(spec.get("exportTo") or [], key))
    seen: set[str] = set()
    for i, s in enumerate(spec.get("subsets") or []):
        name = s.get("name")
        if not name:
            issues.append(error(key, f"spec.subsets[{i}].name", "required field is missing"))
        elif name in seen:
            issues.append(error(key, f"spec.subsets[{i}].name", f"duplicate subset name {name!r}"))
        seen.add(name)
    for path, policy, top in _policies(spec):
        issues.extend(_policy(policy, path, key, top))
    return issues


def _policies(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    if spec.get("trafficPolicy") is not None:
        yield "spec.trafficPolicy", spec["trafficPolicy"], True
    for i, s in enumerate(spec.get("subsets") or []):
        if s.get("trafficPolicy") is not None:
            yield f"spec.subsets[{i}].trafficPolicy", s["trafficPolicy"], False


def _export_to(values: list[Any], key: ConfigKey) -> list[Issue]:
    out = []
    for i, v in enumerate(values):
        v = str(v)
        if v not in ("*", ".", "~") and not _NAMESPACE.match(v):
            out.append(error(key, f"spec.exportTo[{i}]", f"{v!r} is not '*', '.', '~' or a namespace name"))
    if "~" in values and len(values) > 1:
        out.append(error(key, "spec.exportTo", "'~' (not exported) cannot be combined with other values"))
    if len(set(values)) != len(values):
        out.append(error(key, "spec.exportTo", "duplicate entries"))
    return out


def _get(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return None
        node = node[part]
    return node


def _duration_ok(value: Any) -> str | None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        return str(exc)
    if seconds < 0.001:
        return f"duration {value!r} must be at least 1ms"
    return None


def _policy(policy: dict[str, Any], path: str, key: ConfigKey, top: bool) -> list[Issue]:
    issues: list[Issue] = []
    fields = ("connectionPool", "outlierDetection", "loadBalancer", "tls", "portLevelSettings", "tunnel",
              "proxyProtocol", "retryBudget")
    if not any(policy.get(f) is not None for f in fields):
        issues.append(error(key, path, "traffic policy must have at least one field"))
    issues.extend(_components(policy, path, key, skip_checked=top))
    ports: set[int] = set()
    for i, pls in enumerate(policy.get("portLevelSettings") or []):
        ppath = f"{path}.portLevelSettings[{i}]"
        number = (pls.get("port") or {}).get("number")
        if not number:
            issues.append(error(key, f"{ppath}.port.number", "port traffic policy must have a port number"))
        elif number in ports:
            issues.append(error(key, f"{ppath}.port.number", f"duplicate port level settings for port {number}"))
        else:
            ports.add(number)
        if number and not 0 < int(number) < 65536:
            issues.append(error(key, f"{ppath}.port.number", "port must be between 1 and 65535"))
        if not any(pls.get(f) is not None for f in ("connectionPool", "outlierDetection", "loadBalancer", "tls")):
            issues.append(error(key, ppath, "port traffic policy must have at least one field"))
        issues.extend(_components(pls, ppath, key, skip_checked=False))
    return issues


def _components(policy: dict[str, Any], path: str, key: ConfigKey, skip_checked: bool) -> list[Issue]:
    issues: list[Issue] = []
    for dotted in _DURATIONS:
        if skip_checked and dotted in _TOP_LEVEL_DURATIONS_CHECKED_ELSEWHERE:
            continue
        value = _get(policy, dotted)
        if value is not None and (msg := _duration_ok(value)):
            issues.append(error(key, f"{path}.{dotted}", msg))
    issues.extend(_load_balancer(policy.get("loadBalancer") or {}, f"{path}.loadBalancer", key))
    issues.extend(_outlier(policy.get("outlierDetection") or {}, f"{path}.outlierDetection", key))
    issues.extend(_tls(policy.get("tls") or {}, f"{path}.tls", key))
    pool = policy.get("connectionPool") or {}
    for section in ("tcp", "http"):
        for f, v in (pool.get(section) or {}).items():
            if isinstance(v, int) and not isinstance(v, bool) and v < 0:
                issues.append(error(key, f"{path}.connectionPool.{section}.{f}", "must not be negative"))
    budget = policy.get("retryBudget") or {}
    if budget.get("percent") is not None and not 0 <= float(budget["percent"]) <= 100:
        issues.append(error(key, f"{path}.retryBudget.percent", "must be in range [0, 100]"))
    return issues


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def _load_balancer(lb: dict[str, Any], path: str, key: ConfigKey) -> list[Issue]:
    issues: list[Issue] = []
    ch = lb.get("consistentHash")
    if ch:
        if lb.get("simple"):
            issues.append(error(key, path, "only one of simple or consistentHash can be set"))
        keys = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName") if ch.get(k)]
        if len(keys) > 1:
            issues.append(error(key, f"{path}.consistentHash", f"only one hash key can be set, got {keys}"))
        cookie = ch.get("httpCookie")
        if cookie is not None:
            if not cookie.get("name"):
                issues.append(error(key, f"{path}.consistentHash.httpCookie.name", "name required for HttpCookie"))
            if cookie.get("ttl") is None:
                issues.append(error(key, f"{path}.consistentHash.httpCookie.ttl", "ttl required for HttpCookie"))
        algos = [a for a in ("ringHash", "maglev") if ch.get(a) is not None]
        if len(algos) > 1 or (algos and ch.get("minimumRingSize")):
            issues.append(error(key, f"{path}.consistentHash", "only one of minimumRingSize, ringHash or maglev "
                                "can be set"))
        ring = ch.get("minimumRingSize") or (ch.get("ringHash") or {}).get("minimumRingSize")
        if ring and int(ring) > MAX_RING_SIZE:
            issues.append(error(key, f"{path}.consistentHash", f"minimumRingSize {ring} exceeds Envoy's maximum "
                                f"ring size {MAX_RING_SIZE}"))
        table = (ch.get("maglev") or {}).get("tableSize")
        if table and not _is_prime(int(table)):
            issues.append(error(key, f"{path}.consistentHash.maglev.tableSize", f"table size {table} must be a "
                                "prime number (Envoy rejects the cluster otherwise)"))
    issues.extend(_locality(lb.get("localityLbSetting") or {}, f"{path}.localityLbSetting", key))
    warmup = lb.get("warmup") or {}
    if warmup:
        if warmup.get("duration") is None:
            issues.append(error(key, f"{path}.warmup.duration", "required field is missing"))
        if warmup.get("minimumPercent") is not None and not 0 <= float(warmup["minimumPercent"]) <= 100:
            issues.append(error(key, f"{path}.warmup.minimumPercent", "must be in range [0, 100]"))
        if warmup.get("aggression") is not None and float(warmup["aggression"]) < 1:
            issues.append(error(key, f"{path}.warmup.aggression", "must be at least 1"))
        if lb.get("warmupDurationSecs"):
            issues.append(error(key, path, "only one of warmup or warmupDurationSecs can be set"))
    return issues


def _locality(setting: dict[str, Any], path: str, key: ConfigKey) -> list[Issue]:
    issues: list[Issue] = []
    if setting.get("distribute") and setting.get("failover"):
        issues.append(error(key, path, "can not simultaneously set 'distribute' and 'failover'"))
    for i, d in enumerate(setting.get("distribute") or []):
        frm = str(d.get("from", ""))
        if not frm:
            issues.append(error(key, f"{path}.distribute[{i}].from", "required field is missing"))
        total = 0
        for loc, w in (d.get("to") or {}).items():
            if not 1 <= int(w) <= 100:
                issues.append(error(key, f"{path}.distribute[{i}].to[{loc}]", "locality weight must be in range "
                                    "[1, 100]"))
            total += int(w)
        if total != 100:
            issues.append(error(key, f"{path}.distribute[{i}].to", f"total locality weight {total} != 100"))
    for i, f in enumerate(setting.get("failover") or []):
        if f.get("from") == f.get("to"):
            issues.append(error(key, f"{path}.failover[{i}]", "locality lb failover settings must specify "
                                "different regions"))
        if "/" in str(f.get("from", "")) or "/" in str(f.get("to", "")):
            issues.append(error(key, f"{path}.failover[{i}]", "locality lb failover only supports region"))
    return issues


def _outlier(od: dict[str, Any], path: str, key: ConfigKey) -> list[Issue]:
    issues = []
    for f in ("maxEjectionPercent", "minHealthPercent"):
        if od.get(f) is not None and not 0 <= int(od[f]) <= 100:
            issues.append(error(key, f"{path}.{f}", "must be in range [0, 100]"))
    for f in ("consecutive5xxErrors", "consecutiveGatewayErrors", "consecutiveLocalOriginFailures"):
        if od.get(f) is not None and int(od[f]) < 0:
            issues.append(error(key, f"{path}.{f}", "must not be negative"))
    for i, code in enumerate(od.get("outlierDetectionHttpErrorCodes") or []):
        if not 100 <= int(code) <= 599:
            issues.append(error(key, f"{path}.outlierDetectionHttpErrorCodes[{i}]", "must be an HTTP status code"))
    return issues


def _tls(tls: dict[str, Any], path: str, key: ConfigKey) -> list[Issue]:
    issues = []
    mode = tls.get("mode")
    if mode == "ISTIO_MUTUAL" and tls.get("insecureSkipVerify"):
        issues.append(error(key, f"{path}.insecureSkipVerify", "cannot set InsecureSkipVerify to true for "
                            "ISTIO_MUTUAL"))
    if mode in ("SIMPLE", "MUTUAL") and tls.get("credentialName"):
        if any(tls.get(f) for f in ("clientCertificate", "privateKey", "caCertificates", "caCrl")):
            issues.append(error(key, path, "cannot specify client certificates or CA certificate or CA CRL if "
                                "credentialName is set"))
        return issues
    if mode == "MUTUAL":
        if not tls.get("clientCertificate"):
            issues.append(error(key, f"{path}.clientCertificate", "client certificate required for mutual tls"))
        if not tls.get("privateKey"):
            issues.append(error(key, f"{path}.privateKey", "private key required for mutual tls"))
    return issues
