"""Istio host-name rules: short-name resolution and wildcard matching."""

from __future__ import annotations


def resolve_short_name(host: str, namespace: str, domain_suffix: str = "cluster.local") -> str:
    """Istio's ResolveShortnameToFQDN: a name without dots is a Service in `namespace`.

    `reviews` in namespace `default` -> `reviews.default.svc.cluster.local`. Names with dots and wildcards
    are kept as they are.
    """
    if host == "*" or host.startswith("*"):
        return host
    if "." not in host:
        return f"{host}.{namespace}.svc.{domain_suffix}"
    return host


def host_matches(pattern: str, host: str) -> bool:
    """True when `host` is matched by `pattern` (`*`, `*.example.com`, or exact, case-insensitive)."""
    pattern = pattern.lower()
    host = host.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return pattern == host


def kubernetes_short_names(fqdn: str, domain_suffix: str = "cluster.local") -> tuple[str, ...]:
    """The names a client inside the cluster may use for a Service: name, name.ns, name.ns.svc, FQDN."""
    suffix = f".svc.{domain_suffix}"
    if not fqdn.endswith(suffix):
        return (fqdn,)
    name_ns = fqdn[: -len(suffix)]
    name = name_ns.split(".", 1)[0]
    return (fqdn, name, name_ns, f"{name_ns}.svc")
