"""VirtualService semantic checks that the CRD schema cannot express (Istio ``pkg/config/validation``
``ValidateVirtualService`` / ``validateHTTPRoute`` and friends), each an error Issue with its field path.
An object with an error is not admitted (as Istio's webhook would refuse it), so nothing invalid reaches Envoy;
other VirtualServices and services are unaffected. Durations and RE2 regexes are checked in validate.py.
"""

from __future__ import annotations

import base64
import binascii
import re
from http import HTTPStatus
from typing import Any, Mapping

from istiod_lite.model.duration import parse_duration
from istiod_lite.model.meta import ConfigKey, Issue, error, warning

# Envoy x-envoy-retry-on + x-envoy-retry-grpc-on names Istio accepts (validation.go supportedRetryOnPolicies).
RETRY_ON_POLICIES = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})
GRPC_STATUS = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
_IP = re.compile(r"^[0-9.]+$|:")
MB = 1024 * 1024


class _Checker:
    def __init__(self, key: ConfigKey) -> None:
        self.key = key
        self.issues: list[Issue] = []

    def err(self, path: str, msg: str) -> None:
        self.issues.append(error(self.key, path, msg))

    def warn(self, path: str, msg: str) -> None:
        self.issues.append(warning(self.key, path, msg, "Deprecated"))


def _host_error(host: str) -> str | None:
    """Istio ValidateWildcardDomain: DNS labels, a leading ``*`` only as the whole first label."""
    if not host:
        return "host must not be empty"
    if len(host) > 255:
        return "host is longer than 255 characters"
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    elif labels[0].startswith("*"):
        labels[0] = labels[0][1:] or "x"
    for label in labels:
        if not _HOST_LABEL.match(label):
            return f"invalid host {host!r}: label {label!r} is not a DNS-1123 label"
    return None


def _percent(c: _Checker, path: str, spec: Any) -> None:
    if spec is None:
        return
    value = (spec or {}).get("value", 0) if isinstance(spec, dict) else spec
    try:
        v = float(value)
    except (TypeError, ValueError):
        c.err(path, "percentage must be a number")
        return
    if not 0 <= v <= 100:
        c.err(path, f"percentage must be between 0 and 100 (it has {v:g})")


def _status(c: _Checker, path: str, status: Any) -> None:
    if not isinstance(status, int) or not 200 <= status <= 599:
        c.err(path, f"HTTP status {status} is not in range 200-599")


def _header_name(c: _Checker, path: str, name: str, allow_authority: bool = False) -> None:
    if allow_authority and name.lower() in (":authority", "host"):
        return
    if not name:
        c.err(path, "header name must not be empty")
    elif name.startswith(":") or name.lower() == "host":
        c.err(path, f"header {name!r} cannot be modified")
    elif not _TOKEN.match(name):
        c.err(path, f"invalid header name {name!r}")


def _headers(c: _Checker, path: str, spec: Any) -> None:
    for side in ("request", "response"):
        part = (spec or {}).get(side) or {}
        for op in ("set", "add"):
            for name in part.get(op) or {}:
                _header_name(c, f"{path}.{side}.{op}[{name}]", str(name), allow_authority=side == "request")
        for i, name in enumerate(part.get("remove") or ()):
            _header_name(c, f"{path}.{side}.remove[{i}]", str(name))


def _string_match(c: _Checker, path: str, sm: Any, allow_present: bool) -> None:
    if sm is None or not isinstance(sm, dict):
        if not allow_present:
            c.err(path, "must not be null")
        return
    if "prefix" in sm and sm["prefix"] == "" and not allow_present:
        c.err(f"{path}.prefix", "prefix string match should not be empty")
    if "regex" in sm and sm["regex"] == "" and not allow_present:
        c.err(f"{path}.regex", "regex string match should not be empty")


def _match(c: _Checker, path: str, m: Mapping[str, Any]) -> None:
    for f in ("headers", "withoutHeaders"):
        for name, sm in (m.get(f) or {}).items():
            name = str(name)
            if name.startswith("@request.auth.claims"):
                c.err(f"{path}.{f}[{name}]", "JWT claim based routing is only supported for gateways, not for the "
                      "mesh")
            elif not _TOKEN.match(name):
                c.err(f"{path}.{f}[{name}]", f"invalid header name {name!r}")
            if sm is None and f == "headers":
                c.err(f"{path}.{f}[{name}]", f"header match {name} cannot be null")
    for f in ("scheme", "method", "authority"):
        if m.get(f) is not None:
            _string_match(c, f"{path}.{f}", m[f], allow_present=False)
    port = m.get("port")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        c.err(f"{path}.port", "port must be between 1 and 65535")
    ns = m.get("sourceNamespace")
    if ns and not _DNS_LABEL.match(str(ns)):
        c.err(f"{path}.sourceNamespace", f"sourceNamespace match {ns} is invalid")
    _gateways(c, f"{path}.gateways", m.get("gateways"))


def _gateways(c: _Checker, path: str, gateways: Any) -> None:
    for i, g in enumerate(gateways or ()):
        g = str(g)
        if g == "mesh":
            continue
        parts = g.split("/", 1)
        if len(parts) == 2:
            if not parts[0] or not parts[1]:
                c.err(f"{path}[{i}]", "config namespace and gateway name cannot be empty")
            elif not _DNS_LABEL.match(parts[0]):
                c.err(f"{path}[{i}]", f"invalid value for namespace: {parts[0]!r}")
            elif not _DNS_LABEL.match(parts[1]):
                c.err(f"{path}[{i}]", f"invalid value for gateway name: {parts[1]!r}")
        elif _host_error(g):
            c.err(f"{path}[{i}]", f"invalid gateway name {g!r}")


def _destination(c: _Checker, path: str, dest: Any) -> None:
    if not isinstance(dest, dict) or not dest.get("host"):
        c.err(f"{path}.host", "required field is missing")
        return
    host = str(dest["host"])
    if host == "*":
        c.err(f"{path}.host", "invalid destination host *")
    elif _host_error(host):
        c.err(f"{path}.host", _host_error(host) or "")
    subset = dest.get("subset")
    if subset is not None and not _DNS_LABEL.match(str(subset)):
        c.err(f"{path}.subset", f"subset name is invalid: {subset}")
    port = (dest.get("port") or {}).get("number")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        c.err(f"{path}.port.number", "port must be between 1 and 65535")


def _destinations(c: _Checker, path: str, routes: list, with_headers: bool) -> None:
    total = 0
    for j, r in enumerate(routes):
        _destination(c, f"{path}[{j}].destination", (r or {}).get("destination"))
        weight = (r or {}).get("weight", 0) or 0
        if not isinstance(weight, int) or weight < 0:
            c.err(f"{path}[{j}].weight", "weight must not be negative")
        else:
            total += weight
        if with_headers and (r or {}).get("headers"):
            _headers(c, f"{path}[{j}].headers", r["headers"])
    if len(routes) > 1 and total == 0:
        c.err(path, "total destination weight = 0: weights of several destinations must not all be 0")


def _conflicts(c: _Checker, path: str, rule: Mapping[str, Any]) -> None:
    has = {f: bool(rule.get(f)) for f in ("route", "redirect", "directResponse", "fault", "rewrite", "delegate")}
    if has["redirect"]:
        for other in ("route", "fault", "rewrite", "directResponse"):
            if has[other]:
                c.err(path, f"HTTP route cannot contain both {other} and redirect")
    elif has["directResponse"]:
        for other in ("route", "fault", "rewrite"):
            if has[other]:
                c.err(path, f"HTTP route cannot contain both {other} and directResponse")
    elif not has["route"] and not has["delegate"]:
        c.err(path, "one of route, redirect, directResponse or delegate is required")
    if rule.get("mirror") and rule.get("mirrors"):
        c.err(path, "HTTP route cannot contain both mirror and mirrors")


def _rewrite(c: _Checker, path: str, rule: Mapping[str, Any]) -> None:
    rw = rule.get("rewrite")
    if rw is None:
        return
    if rw.get("uri") and rw.get("uriRegexRewrite"):
        c.err(path, "rewrite may only contain one of uri or uriRegexRewrite")
    if not rw.get("uri") and not rw.get("uriRegexRewrite") and not rw.get("authority"):
        c.err(path, "rewrite must specify at least one of uri, uriRegexRewrite or authority")
    rr = rw.get("uriRegexRewrite")
    if rr is not None and (not rr.get("match") or "rewrite" not in rr):
        c.err(f"{path}.uriRegexRewrite", "uriRegexRewrite requires match and rewrite")
    authorities = [v for v in [rw.get("authority")] if v]
    req = (rule.get("headers") or {}).get("request") or {}
    for op in ("set", "add"):
        authorities += [v for k, v in (req.get(op) or {}).items() if str(k).lower() in (":authority", "host")]
    if len(authorities) > 1:
        c.err(path if rw.get("authority") else "headers.request", "authority cannot be set multiple times "
              "(rewrite.authority and a :authority/host header)")


def _redirect(c: _Checker, path: str, red: Mapping[str, Any]) -> None:
    if not any(red.get(f) for f in ("uri", "authority", "scheme", "port", "derivePort")):
        c.err(path, "redirect must specify uri, authority, scheme, or port")
    code = red.get("redirectCode", 0) or 0
    if code and not 300 <= int(code) <= 399:
        c.err(f"{path}.redirectCode", f"{code} is not a valid redirect code, must be 3xx")
    scheme = red.get("scheme")
    if scheme and scheme not in ("http", "https"):
        c.err(f"{path}.scheme", 'invalid redirect scheme, must be "http" or "https"')
    port = red.get("port")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        c.err(f"{path}.port", "port must be between 1 and 65535")


def _direct_response(c: _Checker, path: str, dr: Mapping[str, Any]) -> None:
    _status(c, f"{path}.status", dr.get("status"))
    body = dr.get("body") or {}
    size = 0
    if "string" in body:
        size = len(str(body["string"]).encode())
    elif "bytes" in body:
        try:
            size = len(base64.b64decode(str(body["bytes"]), validate=True))
        except (binascii.Error, ValueError):
            c.err(f"{path}.body.bytes", "body.bytes must be base64-encoded")
    if size > MB:
        c.err(f"{path}.body", "direct response bodies must be smaller than 1MB")
    elif size > 100 * 1024:
        c.issues.append(warning(c.key, f"{path}.body", "large direct responses may impact control plane "
                                "performance", "LargeBody"))


def _retries(c: _Checker, path: str, r: Mapping[str, Any]) -> None:
    attempts = r.get("attempts", 0) or 0
    if attempts < 0:
        c.err(f"{path}.attempts", "attempts must not be negative")
    if attempts == 0 and any(r.get(f) is not None for f in ("perTryTimeout", "retryOn", "retryRemoteLocalities")):
        c.err(path, "http retry policy configured when attempts are set to 0 (disabled)")
    for part in str(r.get("retryOn") or "").split(","):
        part = part.strip()
        if not part or part in RETRY_ON_POLICIES:
            continue
        if part.isdigit() and int(part) in HTTPStatus._value2member_map_:
            continue
        c.err(f"{path}.retryOn", f"{part!r} is not a valid retryOn policy")


def _fault(c: _Checker, path: str, f: Mapping[str, Any]) -> None:
    if not f.get("abort") and not f.get("delay"):
        c.err(path, "HTTP fault injection must have an abort and/or a delay")
    delay = f.get("delay")
    if delay:
        _percent(c, f"{path}.delay.percentage", delay.get("percentage"))
        if delay.get("percent") is not None:
            if not 0 <= int(delay["percent"]) <= 100:
                c.err(f"{path}.delay.percent", "percent must be between 0 and 100")
            c.warn(f"{path}.delay.percent", 'using deprecated setting "percent", use "percentage" instead')
        if delay.get("exponentialDelay") is not None:
            c.err(f"{path}.delay.exponentialDelay", "exponentialDelay not supported yet")
        elif delay.get("fixedDelay") is None:
            c.err(f"{path}.delay.fixedDelay", "delay requires fixedDelay")
    abort = f.get("abort")
    if abort:
        _percent(c, f"{path}.abort.percentage", abort.get("percentage"))
        if abort.get("http2Error") is not None:
            c.err(f"{path}.abort.http2Error", "HTTP/2 abort fault injection not supported yet")
        elif abort.get("grpcStatus") is not None:
            if str(abort["grpcStatus"]) not in GRPC_STATUS:
                c.err(f"{path}.abort.grpcStatus", f"gRPC status {abort['grpcStatus']!r} is not supported, use a "
                      "code name such as UNAVAILABLE")
        elif abort.get("httpStatus") is not None:
            _status(c, f"{path}.abort.httpStatus", abort["httpStatus"])
        else:
            c.err(f"{path}.abort", "abort configured, but error type not set")


def _cors(c: _Checker, path: str, cors: Mapping[str, Any]) -> None:
    for i, o in enumerate(cors.get("allowOrigins") or ()):
        o = o or {}
        if not any(o.get(k) for k in ("exact", "prefix", "regex")):
            c.err(f"{path}.allowOrigins[{i}]", "not a valid match type for CORS allow origins")
    if cors.get("allowOrigin"):
        c.warn(f"{path}.allowOrigin", 'using deprecated setting "allowOrigin", use "allowOrigins" instead')
    for i, m in enumerate(cors.get("allowMethods") or ()):
        if m not in CORS_METHODS:
            c.err(f"{path}.allowMethods[{i}]", f"{m!r} is not a supported HTTP method")
    for f in ("allowHeaders", "exposeHeaders"):
        for i, h in enumerate(cors.get(f) or ()):
            if h != "*" and not _TOKEN.match(str(h)):
                c.err(f"{path}.{f}[{i}]", f"invalid header name {h!r}")
    if cors.get("maxAge") is not None:
        try:
            seconds = parse_duration(cors["maxAge"])
        except ValueError:
            return  # reported by the duration check
        if seconds != int(seconds):
            c.err(f"{path}.maxAge", "max_age duration is accurate only to seconds precision")


def _mirrors(c: _Checker, path: str, rule: Mapping[str, Any]) -> None:
    if rule.get("mirror") is not None:
        _destination(c, f"{path}.mirror", rule["mirror"])
    _percent(c, f"{path}.mirrorPercentage", rule.get("mirrorPercentage"))
    if rule.get("mirrorPercent") is not None:
        if int(rule["mirrorPercent"]) > 100:
            c.err(f"{path}.mirrorPercent", "mirrorPercent must have a max value of 100")
        c.warn(f"{path}.mirrorPercent", 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')
    for i, m in enumerate(rule.get("mirrors") or ()):
        if not (m or {}).get("destination"):
            c.err(f"{path}.mirrors[{i}].destination", "destination is required for mirrors")
            continue
        _destination(c, f"{path}.mirrors[{i}].destination", m["destination"])
        _percent(c, f"{path}.mirrors[{i}].percentage", m.get("percentage"))


def _http(c: _Checker, path: str, rule: Mapping[str, Any]) -> None:
    _conflicts(c, path, rule)
    for i, m in enumerate(rule.get("match") or ()):
        _match(c, f"{path}.match[{i}]", m or {})
    if rule.get("headers"):
        _headers(c, f"{path}.headers", rule["headers"])
    _rewrite(c, f"{path}.rewrite", rule)
    if rule.get("redirect"):
        _redirect(c, f"{path}.redirect", rule["redirect"])
    if rule.get("directResponse"):
        _direct_response(c, f"{path}.directResponse", rule["directResponse"])
    if rule.get("retries"):
        _retries(c, f"{path}.retries", rule["retries"])
    if rule.get("fault") is not None:
        _fault(c, f"{path}.fault", rule["fault"] or {})
    if rule.get("corsPolicy"):
        _cors(c, f"{path}.corsPolicy", rule["corsPolicy"])
    _mirrors(c, path, rule)
    _destinations(c, f"{path}.route", rule.get("route") or [], with_headers=True)


def _export_to(c: _Checker, export: list) -> None:
    values = [str(x) for x in export]
    for i, v in enumerate(values):
        if v in (".", "*", "~"):
            continue
        if not _DNS_LABEL.match(v):
            c.err(f"spec.exportTo[{i}]", f"invalid namespace {v!r}")
    if "~" in values and len(values) > 1:
        c.err("spec.exportTo", "exportTo '~' (no namespace) must be the only entry")
    if "*" in values and len(values) > 1:
        c.err("spec.exportTo", "exportTo '*' (all namespaces) must be the only entry")
    if len(set(values)) != len(values):
        c.err("spec.exportTo", "duplicate entries in exportTo")


def check(spec: Mapping[str, Any], key: ConfigKey) -> list[Issue]:
    c = _Checker(key)
    hosts = [str(h) for h in spec.get("hosts") or ()]
    gateways = spec.get("gateways") or []
    applies_to_mesh = not gateways or "mesh" in gateways
    if not hosts:
        c.err("spec.hosts", "at least one host is required (delegate VirtualServices are not supported)")
    for i, h in enumerate(hosts):
        if applies_to_mesh and h == "*":
            c.err(f"spec.hosts[{i}]", "wildcard host * is not allowed for virtual services bound to the mesh")
        elif _host_error(h) and not _IP.search(h):
            c.err(f"spec.hosts[{i}]", _host_error(h) or "")
    for i in range(len(hosts)):
        for j in range(i + 1, len(hosts)):
            a, b = hosts[i].lower(), hosts[j].lower()
            if a == b or (a.startswith("*") and b.endswith(a[1:])) or (b.startswith("*") and a.endswith(b[1:])):
                c.err(f"spec.hosts[{j}]", f"duplicate hosts in virtual service: {hosts[i]} & {hosts[j]}")
    _gateways(c, "spec.gateways", gateways)
    if not spec.get("http") and not spec.get("tcp") and not spec.get("tls"):
        c.err("spec", "http, tcp or tls must be provided in virtual service")
    for i, rule in enumerate(spec.get("http") or ()):
        if rule is None:
            c.err(f"spec.http[{i}]", "http route may not be null")
            continue
        _http(c, f"spec.http[{i}]", rule)
    for i, rule in enumerate(spec.get("tcp") or ()):
        rule = rule or {}
        for j, m in enumerate(rule.get("match") or ()):
            port = (m or {}).get("port")
            if port is not None and not (isinstance(port, int) and 0 < port < 65536):
                c.err(f"spec.tcp[{i}].match[{j}].port", "port must be between 1 and 65535")
        if not rule.get("route"):
            c.err(f"spec.tcp[{i}].route", "TCP route is required")
        _destinations(c, f"spec.tcp[{i}].route", rule.get("route") or [], with_headers=False)
    if spec.get("exportTo") is not None:
        _export_to(c, list(spec["exportTo"]))
    return c.issues
