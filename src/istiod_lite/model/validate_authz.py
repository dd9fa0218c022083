"""Semantic validation of AuthorizationPolicy specs (what the CRD schema cannot say; Istio's
``ValidateAuthorizationPolicy`` and ``pkg/config/security``).

Errors carry the field path (``spec.rules[0].to[0].operation.paths[1]``). An AuthorizationPolicy with errors is
still kept in the snapshot (model/parse.py) so that the translator can fail closed for the traffic it targets:
dropping an invalid DENY policy would silently allow what it meant to deny.

Checked: selector vs targetRef(s) exclusivity; CUSTOM <-> provider; empty ``from`` / ``to`` / source /
operation; empty values; IPs and CIDRs; ports; path patterns (``*`` only as a whole value, a single leading or
trailing wildcard, or ``{*}`` / ``{**}`` template segments with ``{**}`` last); service accounts; ``when`` keys
(known attributes only, ``a[b]`` form for map keys) and that each condition has values or notValues.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from istiod_lite.model.meta import ConfigKey, Issue, error

_SOURCE_LISTS = ("principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
                 "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks",
                 "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains")
_OPERATION_LISTS = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
_EXACT_KEYS = {"source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
               "source.trustDomain", "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
               "destination.ip", "destination.port", "connection.sni"}
_MAP_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
_REPLACED = {"destination.namespace": "replaced by metadata.namespace",
             "destination.labels": "replaced by the workload selector / targetRefs",
             "destination.name": "only supported in v1alpha1", "destination.user": "only supported in v1alpha1"}
_LITERAL = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")


def check(spec: dict[str, Any], key: ConfigKey) -> list[Issue]:
    issues: list[Issue] = []

    def err(path: str, msg: str) -> None:
        issues.append(error(key, path, msg))

    if spec.get("selector") and (spec.get("targetRef") or spec.get("targetRefs")):
        err("spec.selector", "only one of targetRefs or selector can be set")
    if spec.get("targetRef") and spec.get("targetRefs"):
        err("spec.targetRef", "only one of targetRef or targetRefs can be set")
    action = spec.get("action") or "ALLOW"
    if action == "CUSTOM" and not (spec.get("provider") or {}).get("name"):
        err("spec.provider", "a CUSTOM policy needs provider.name")
    if action != "CUSTOM" and spec.get("provider"):
        err("spec.provider", f"provider is only allowed with action CUSTOM, not {action}")
    for i, rule in enumerate(spec.get("rules") or ()):
        path = f"spec.rules[{i}]"
        if not isinstance(rule, dict):
            continue
        _check_entries(rule, "from", "source", _SOURCE_LISTS, path, err, _check_source)
        _check_entries(rule, "to", "operation", _OPERATION_LISTS, path, err, _check_operation)
        for j, cond in enumerate(rule.get("when") or ()):
            _check_condition(cond, f"{path}.when[{j}]", err)
    return issues


def _check_entries(rule, field, inner, lists, path, err, check_one) -> None:
    entries = rule.get(field)
    if entries is None:
        return
    if not entries:
        err(f"{path}.{field}", f"`{field}` must not be empty (omit it to match any)")
        return
    for j, entry in enumerate(entries):
        p = f"{path}.{field}[{j}].{inner}"
        body = (entry or {}).get(inner)
        if not body or not any(body.get(k) for k in lists):
            err(p, f"`{field}.{inner}` must not be empty")
            continue
        for k in lists:
            for n, v in enumerate(body.get(k) or ()):
                if v == "":
                    err(f"{p}.{k}[{n}]", "empty value not allowed")
        check_one(body, p, err)


def _check_source(src: dict[str, Any], path: str, err) -> None:
    for f in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
        for n, v in enumerate(src.get(f) or ()):
            msg = ip_problem(v)
            if msg:
                err(f"{path}.{f}[{n}]", msg)
    if (src.get("serviceAccounts") or src.get("notServiceAccounts")) and any(
            src.get(f) for f in ("principals", "notPrincipals", "namespaces", "notNamespaces")):
        err(f"{path}.serviceAccounts", "cannot set serviceAccounts with namespaces or principals")
    for f in ("serviceAccounts", "notServiceAccounts"):
        for n, v in enumerate(src.get(f) or ()):
            msg = service_account_problem(v)
            if msg:
                err(f"{path}.{f}[{n}]", msg)


def _check_operation(op: dict[str, Any], path: str, err) -> None:
    for f in ("ports", "notPorts"):
        for n, v in enumerate(op.get(f) or ()):
            msg = port_problem(v)
            if msg:
                err(f"{path}.{f}[{n}]", msg)
    for f in ("paths", "notPaths"):
        for n, v in enumerate(op.get(f) or ()):
            msg = path_problem(v)
            if msg:
                err(f"{path}.{f}[{n}]", msg)


def _check_condition(cond: Any, path: str, err) -> None:
    if not isinstance(cond, dict):
        return
    k = str(cond.get("key") or "")
    values, not_values = cond.get("values") or [], cond.get("notValues") or []
    if not values and not not_values:
        err(path, "a condition needs values or notValues")
    msg = key_problem(k)
    if msg:
        err(f"{path}.key", msg)
        return
    for f, vals in (("values", values), ("notValues", not_values)):
        for n, v in enumerate(vals):
            p = f"{path}.{f}[{n}]"
            if v == "":
                err(p, "empty value not allowed")
            elif k in ("source.ip", "remote.ip", "destination.ip"):
                m = ip_problem(v)
                if m:
                    err(p, m)
            elif k == "destination.port":
                m = port_problem(v)
                if m:
                    err(p, m)
            elif k == "source.serviceAccount":
                m = service_account_problem(v)
                if m:
                    err(p, m)


def key_problem(key: str) -> str | None:
    if key in _EXACT_KEYS:
        return None
    if key in _REPLACED or any(key.startswith(k + "[") for k in _REPLACED):
        base = key.split("[", 1)[0]
        return f"attribute {base} is not supported: {_REPLACED[base]}"
    for prefix in _MAP_KEYS:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if prefix.endswith("."):  # experimental.envoy.filters.<filter>[<key>]
                ok = "[" in rest and rest.index("[") > 0
                rest = rest[rest.index("["):] if ok else rest
            else:
                ok = True
            ok = ok and rest.startswith("[") and rest.endswith("]") and len(rest) > 2
            return None if ok else f"bad key {key!r}: expected the form {prefix.rstrip('.')}[name]"
    return f"unknown condition key {key!r}"


def ip_problem(value: Any) -> str | None:
    try:
        if "/" in str(value):
            ipaddress.ip_network(str(value), strict=False)
        else:
            ipaddress.ip_address(str(value))
    except ValueError:
        return f"bad IP address or CIDR range {value!r}"
    return None


def port_problem(value: Any) -> str | None:
    s = str(value)
    if not s.isdigit() or int(s) > 65535:
        return f"bad port {value!r}: must be a number between 0 and 65535"
    return None


def service_account_problem(value: Any) -> str | None:
    s = str(value)
    if "*" in s:
        return "wildcards are not allowed in service accounts"
    if s.count("/") > 1 or any(not part for part in s.split("/")):
        return f"expected 'serviceAccount' or 'namespace/serviceAccount', got {s!r}"
    if len(s) > 320:
        return "service account longer than 320 characters"
    return None


def path_problem(value: Any) -> str | None:
    """None for an exact path, `*`, `*suffix`, `prefix*`, or a template of `{*}` / `{**}` segments."""
    s = str(value)
    if "{" in s or "}" in s:
        return _template_problem(s)
    if s == "*":
        return None
    if len(s) > 1 and s.startswith("*") and s.endswith("*"):
        return f"bad path {s!r}: a wildcard may be a prefix or a suffix, not both"
    core = s[1:] if s.startswith("*") else s[:-1] if s.endswith("*") else s
    if "*" in core:
        return f"bad path {s!r}: `*` is only allowed at the start or the end (or use {{*}} / {{**}} templates)"
    return None


def _template_problem(s: str) -> str | None:
    if not s.startswith("/"):
        return f"bad path template {s!r}: must start with /"
    seen_any = False
    for seg in s.strip("/").split("/"):
        if seg in ("{*}", "{**}"):
            if seen_any:
                return f"bad path template {s!r}: {{**}} must be the last operator"
            seen_any = seg == "{**}"
            continue
        if "{" in seg or "}" in seg:
            return f"bad path template {s!r}: only {{*}} and {{**}} segments are supported"
        if not _LITERAL.match(seg):
            return f"bad path template {s!r}: segment {seg!r} is not a valid literal"
    return None
