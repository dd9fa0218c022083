"""Raw Kubernetes-shaped dicts -> typed model objects plus Issues (never exceptions for user input).

`parse_object` is the single entry: it checks apiVersion/kind/metadata, validates `spec` against the CRD
schema, runs the semantic checks of `validate.py`, and returns a `Parsed` value (or None when the object
is unusable) with every Issue found. Kubernetes core kinds are parsed in `parse_core.py`.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any

from istiod_lite.model import parse_core, schema, validate
from istiod_lite.model.gateway import Gateway, GatewayListener
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, ObjectMeta, error, warning

ISTIO_GROUPS = {
    "VirtualService": "networking.istio.io",
    "DestinationRule": "networking.istio.io",
    "ServiceEntry": "networking.istio.io",
    "AuthorizationPolicy": "security.istio.io",
    "Gateway": "gateway.networking.k8s.io",
    "GatewayClass": "gateway.networking.k8s.io",
}
CORE_KINDS = {
    "Namespace": "v1",
    "Service": "v1",
    "Pod": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
}
CLUSTER_SCOPED = {"Namespace", "GatewayClass"}
# Kept despite spec errors (the errors stay in the snapshot's issues): dropping an invalid AuthorizationPolicy
# would fail open, so the translator keeps it and denies the traffic it targets (translate/authz.py).
KEEP_INVALID = frozenset({"AuthorizationPolicy"})
SUPPORTED_KINDS = frozenset(ISTIO_GROUPS) | frozenset(CORE_KINDS)


@dataclass(frozen=True, slots=True)
class Parsed:
    """One parsed object: `value` is a model type (Gateway, IstioConfig, parse_core.* ...)."""

    key: ConfigKey
    value: Any
    file: str | None = None


def object_key(obj: Any) -> ConfigKey | None:
    """kind/namespace/name of a raw object, or None when it has no usable identity."""
    if not isinstance(obj, dict):
        return None
    kind = obj.get("kind")
    md = obj.get("metadata")
    if not isinstance(kind, str) or not isinstance(md, dict) or not isinstance(md.get("name"), str):
        return None
    ns = "" if kind in CLUSTER_SCOPED else md.get("namespace") or "default"
    if not isinstance(ns, str):
        return None
    return ConfigKey(kind, ns, md["name"])


def parse_object(obj: Any, file: str | None = None) -> tuple[Parsed | None, list[Issue]]:
    issues = _check_envelope(obj)
    if issues:
        return None, [i.with_file(file) for i in issues]
    key = object_key(obj)
    assert key is not None
    kind = key.kind
    api_version = obj["apiVersion"]
    meta = _meta(obj, key, file)
    if kind in CORE_KINDS:
        if api_version != CORE_KINDS[kind]:
            return None, [error(key, "apiVersion", f"expected {CORE_KINDS[kind]}, got {api_version}").with_file(file)]
        value, issues = parse_core.parse(kind, obj, meta)
        issues = [i.with_file(file) for i in issues]
        if value is None or any(i.is_error for i in issues):
            return None, issues
        return Parsed(key, value, file), issues

    sch = schema.schema_for(api_version, kind)
    if sch is None or not api_version.startswith(ISTIO_GROUPS[kind] + "/"):
        versions = ", ".join(schema.known_versions(kind))
        return None, [error(key, "apiVersion", f"unsupported apiVersion {api_version!r} for {kind}; "
                                               f"expected one of {versions}").with_file(file)]
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        return None, [error(key, "spec", "expected object").with_file(file)]
    issues = schema.validate({"spec": spec}, key, sch)
    if not any(i.is_error for i in issues):
        issues += validate.semantic(kind, spec, key)
    issues = [i.with_file(file) for i in issues]
    if any(i.is_error for i in issues) and kind not in KEEP_INVALID:
        return None, issues
    if kind == "Gateway":
        return Parsed(key, _gateway(spec, meta), file), issues
    if kind == "GatewayClass":
        return Parsed(key, spec, file), issues
    if kind == "ServiceEntry":
        return Parsed(key, IstioConfig(meta, spec), file), issues
    return Parsed(key, IstioConfig(meta, spec), file), issues


_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _check_envelope(obj: Any) -> list[Issue]:
    if not isinstance(obj, dict):
        return [error(None, "", f"expected a mapping (a Kubernetes object), got {type(obj).__name__}")]
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        return [error(None, "kind", "missing or not a string")]
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return [error(ConfigKey(kind, "", "?"), "metadata", "missing or not an object")]
    name = md.get("name")
    if not isinstance(name, str) or not name:
        return [error(ConfigKey(kind, "", "?"), "metadata.name", "missing or not a string")]
    ns = md.get("namespace")
    if ns is not None and not isinstance(ns, str):
        return [error(ConfigKey(kind, "", name), "metadata.namespace", "not a string")]
    key = object_key(obj)
    if kind not in SUPPORTED_KINDS:
        return [warning(key, "kind", f"kind {kind} is not read by istiod-lite; ignored", "UnsupportedKind")]
    if not isinstance(obj.get("apiVersion"), str):
        return [error(key, "apiVersion", "missing or not a string")]
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + f"... ({len(name)} characters)"
        return [error(key, "metadata.name", f"invalid name {shown!r}: must be a lowercase RFC 1123 subdomain "
                                            "(a-z, 0-9, '-', '.'; at most 253 characters)")]
    if isinstance(ns, str) and ns and (len(ns) > 63 or not _DNS1123_LABEL.fullmatch(ns)):
        return [error(key, "metadata.namespace", "invalid namespace: must be a lowercase RFC 1123 label "
                                                 "(a-z, 0-9, '-'; at most 63 characters)")]
    for field in ("labels", "annotations"):
        value = md.get(field)
        if value is not None and (not isinstance(value, dict)
                                  or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            return [error(key, f"metadata.{field}", "must be a map of string to string")]
    return []


def _meta(obj: dict[str, Any], key: ConfigKey, file: str | None) -> ObjectMeta:
    md = obj["metadata"]
    gen = md.get("generation")
    return ObjectMeta(
        key=key,
        labels=tuple(sorted((md.get("labels") or {}).items())),
        annotations=tuple(sorted((md.get("annotations") or {}).items())),
        generation=gen if isinstance(gen, int) else 0,
        resource_version=str(md.get("resourceVersion") or ""),
        creation_timestamp=str(md.get("creationTimestamp") or ""),
        file=file,
        uid=str(md.get("uid") or ""),
    )


def _gateway(spec: dict[str, Any], meta: ObjectMeta) -> Gateway:
    listeners = []
    for ln in spec.get("listeners") or []:
        allowed = ((ln.get("allowedRoutes") or {}).get("namespaces") or {}).get("from", "Same")
        listeners.append(GatewayListener(ln["name"], int(ln["port"]), ln["protocol"], ln.get("hostname"), allowed))
    addresses = tuple(a["value"] for a in spec.get("addresses") or [] if a.get("type", "IPAddress") == "IPAddress")
    return Gateway(meta, spec.get("gatewayClassName", ""), tuple(listeners), addresses)
