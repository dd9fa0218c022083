"""Semantic checks the CRD schema cannot express: durations, RE2 regexes, ports, weights, hosts.

VirtualService checks are in validate_vs.py (Istio's webhook rules).
Each check returns Issues with field paths; the parser drops an object that has any error, so nothing
Envoy would reject (a bad regex, a malformed duration) ever reaches the translator.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import re2

from istiod_lite.model import validate_authz, validate_dr, validate_vs
from istiod_lite.model.duration import parse_duration
from istiod_lite.model.meta import ConfigKey, Issue, error

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

# Duration fields of the kinds we read, as path patterns ("*" = any list index or map key).
_DURATIONS = {
    "VirtualService": [
        "http.*.timeout", "http.*.retries.perTryTimeout", "http.*.retries.backoff",
        "http.*.fault.delay.fixedDelay", "http.*.fault.delay.exponentialDelay", "http.*.corsPolicy.maxAge",
    ],
    "DestinationRule": [
        "trafficPolicy.connectionPool.tcp.connectTimeout", "trafficPolicy.connectionPool.tcp.maxConnectionDuration",
        "trafficPolicy.connectionPool.tcp.idleTimeout", "trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
        "trafficPolicy.connectionPool.tcp.tcpKeepalive.interval", "trafficPolicy.connectionPool.http.idleTimeout",
        "trafficPolicy.outlierDetection.interval", "trafficPolicy.outlierDetection.baseEjectionTime",
        "trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl", "trafficPolicy.loadBalancer.warmup.duration",
    ],
}
_REGEXES = {
    "VirtualService": [
        "http.*.match.*.uri.regex", "http.*.match.*.scheme.regex", "http.*.match.*.method.regex",
        "http.*.match.*.authority.regex", "http.*.match.*.headers.*.regex", "http.*.match.*.queryParams.*.regex",
        "http.*.match.*.withoutHeaders.*.regex", "http.*.rewrite.uriRegexRewrite.match",
        "http.*.corsPolicy.allowOrigins.*.regex",
    ],
}


def semantic(kind: str, spec: dict[str, Any], key: ConfigKey) -> list[Issue]:
    issues: list[Issue] = []
    for pattern in _DURATIONS.get(kind, ()):
        # DestinationRule durations become Envoy fields that must be > 0 (connect_timeout, outlier interval...)
        # (a cookie ttl of 0s is valid: Istio's session cookie)
        positive = kind == "DestinationRule" and not pattern.endswith("httpCookie.ttl")
        check = _positive_duration if positive else _duration
        for path, value in _select(spec, pattern.split("."), "spec"):
            issues.extend(_check(key, path, value, check))
    for pattern in _REGEXES.get(kind, ()):
        for path, value in _select(spec, pattern.split("."), "spec"):
            if value == "*" and any(f in path for f in (".headers[", ".withoutHeaders[", ".queryParams[")):
                continue  # Istio: regex "*" means "present"
            if value == "":
                issues.append(error(key, path, "regex string match should not be empty"))
                continue
            issues.extend(_check(key, path, value, _regex))
    extra = _EXTRA.get(kind)
    if extra:
        issues.extend(extra(spec, key))
    return issues


def _check(key: ConfigKey, path: str, value: Any, fn: Callable[[Any], str | None]) -> list[Issue]:
    msg = fn(value)
    return [error(key, path, msg)] if msg else []


def _duration(value: Any) -> str | None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        return str(exc)
    if seconds < 0.001 and seconds != 0:
        return f"duration {value!r} must be at least 1ms"
    return None


def _positive_duration(value: Any) -> str | None:
    msg = _duration(value)
    if msg is None and parse_duration(value) == 0:
        return f"duration {value!r} must be at least 1ms"
    return msg


def _regex(value: Any) -> str | None:
    if not isinstance(value, str):
        return "regex must be a string"
    try:
        re2.compile(value, options=_RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"invalid RE2 regex {value!r}: {detail}"
    if len(value) > 1024:
        return "regex longer than 1024 characters"
    return None


def _select(node: Any, parts: list[str], path: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield path, node
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(node, list):
            for i, item in enumerate(node):
                yield from _select(item, rest, f"{path}[{i}]")
        elif isinstance(node, dict):
            for k, item in node.items():
                yield from _select(item, rest, f"{path}[{k}]" if rest else f"{path}[{k}]")
        return
    if isinstance(node, dict) and head in node and node[head] is not None:
        yield from _select(node[head], rest, f"{path}.{head}")


def _service_entry(spec: dict[str, Any], key: ConfigKey) -> list[Issue]:
    issues = []
    if not spec.get("hosts"):
        issues.append(error(key, "spec.hosts", "at least one host is required"))
    if not spec.get("ports"):
        issues.append(error(key, "spec.ports", "at least one port is required"))
    for i, p in enumerate(spec.get("ports") or []):
        if not 0 < p.get("number", 0) < 65536:
            issues.append(error(key, f"spec.ports[{i}].number", "port must be between 1 and 65535"))
    for i, e in enumerate(spec.get("endpoints") or []):
        if spec.get("resolution") == "STATIC" and not e.get("address"):
            issues.append(error(key, f"spec.endpoints[{i}].address", "required with resolution STATIC"))
    return issues


_EXTRA: dict[str, Callable[[dict[str, Any], ConfigKey], list[Issue]]] = {
    "VirtualService": validate_vs.check,
    "DestinationRule": validate_dr.check,
    "ServiceEntry": _service_entry,
    "AuthorizationPolicy": validate_authz.check,
}
