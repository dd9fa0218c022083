"""One AuthorizationPolicy rule -> one Envoy RBAC Policy (Istio's `pilot/pkg/security/authz/model`).

Structure (as Istio): a rule's ``from`` entries become the Policy's principals (ORed), its ``to`` entries its
permissions (ORed); inside an entry every field is ANDed, the values of a field ORed, ``notX`` / ``notValues``
become ``not(or(values))``; each ``when`` condition is ANDed into every principal (source/request keys) or
every permission (destination/connection keys). A missing ``from`` / ``to`` means "any".

Fields that cannot be honoured follow Istio's ``checkError``: in an ALLOW policy the whole rule is dropped (the
allow gets narrower), in DENY / AUDIT / CUSTOM the field is ignored and the rule kept (the deny gets wider).
That applies to JWT fields (``requestPrincipals``, ``request.auth.*``: RequestAuthentication is not supported).

Identity fields (``principals``, ``namespaces``, ``serviceAccounts``, ``trustDomains``, ``source.principal``,
``source.namespace``, ``source.serviceAccount``, ``source.trustDomain``) match the peer's mTLS identity
(``authenticated.principal_name``). This waypoint's HTTP listeners take plaintext peers, which have no identity:
such a value never matches, exactly as Istio behaves for a plaintext peer (so an ALLOW rule with ``principals``
allows nobody, a DENY rule with ``notPrincipals`` denies everybody). A warning says so on the field.
At the HBONE chains (``peer_identity="filter_state"``, translate/hbone.py) the same matchers apply to the
caller's SPIFFE id that connect_terminate stored in filter state ``io.istio.peer_principal`` (no TLS exists
inside main_internal), without a warning.

Ports (``ports``, ``destination.port``) are the service port of the virtual host (a waypoint's listener port is
not the service port), so they are evaluated here, as Istio's ``AmbientDestinationPortAdapations`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from envoy.config.rbac.v3 import rbac_pb2

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import Issue, warning
from istiod_lite.translate import authz_match as m

ALLOW, DENY, AUDIT, CUSTOM = "ALLOW", "DENY", "AUDIT", "CUSTOM"


class _Skip(Exception):
    """A field that cannot be honoured (its message becomes a warning)."""


@dataclass
class RuleContext:
    policy: IstioConfig
    action: str
    port: int | None  # the service port of the virtual host
    issues: list[Issue] = field(default_factory=list)
    peer_identity: str = "tls"  # "filter_state" at the HBONE chains: identities match io.istio.peer_principal

    def warn(self, path: str, message: str, reason: str = "Unsupported") -> None:
        self.issues.append(warning(self.policy.key, path, message, reason))


_IDENTITY_NOTE = ("needs the peer's mTLS identity, which plaintext peers of this waypoint don't have: "
                  "this condition never matches (as in Istio)")
_JWT_NOTE = "needs RequestAuthentication (JWT), which istiod-lite does not support"


def _identity(fn: Callable[[str], Any]) -> Callable[[RuleContext, str, str], Any]:
    def gen(ctx: RuleContext, path: str, value: str) -> Any:
        if ctx.peer_identity == "filter_state":
            return m.peer_principal_from_filter_state(fn(value))
        ctx.warn(path, f"{path.rsplit('.', 1)[-1].split('[', 1)[0]} {_IDENTITY_NOTE}", "NoPeerIdentity")
        return fn(value)
    return gen


def _plain(fn: Callable[[str], Any]) -> Callable[[RuleContext, str, str], Any]:
    return lambda ctx, path, value: fn(value)


def _jwt(ctx: RuleContext, path: str, value: str) -> Any:
    raise _Skip(_JWT_NOTE)


def _port(ctx: RuleContext, path: str, value: str) -> Any:
    """True (None: no condition) when the virtual host's service port is `value`, else never."""
    return None if ctx.port is not None and str(ctx.port) == str(value).strip() else False


def _service_account(ctx: RuleContext, path: str, value: str) -> Any:
    if ctx.peer_identity == "filter_state":
        return m.peer_principal_from_filter_state(m.princ_service_account(value, ctx.policy.namespace))
    ctx.warn(path, f"serviceAccounts {_IDENTITY_NOTE}", "NoPeerIdentity")
    return m.princ_service_account(value, ctx.policy.namespace)


SOURCE_FIELDS: list[tuple[str, str, Callable]] = [  # field, not-field, generator (principal)
    ("principals", "notPrincipals", _identity(m.princ_principal)),
    ("requestPrincipals", "notRequestPrincipals", _jwt),
    ("namespaces", "notNamespaces", _identity(m.princ_namespace)),
    ("serviceAccounts", "notServiceAccounts", _service_account),
    ("trustDomains", "notTrustDomains", _identity(m.princ_trust_domain)),
    ("ipBlocks", "notIpBlocks", _plain(m.princ_direct_ip)),
    ("remoteIpBlocks", "notRemoteIpBlocks", _plain(m.princ_remote_ip)),
]
OPERATION_FIELDS: list[tuple[str, str, Callable]] = [  # field, not-field, generator (permission)
    ("hosts", "notHosts", _plain(m.perm_host)),
    ("methods", "notMethods", _plain(m.perm_method)),
    ("paths", "notPaths", _plain(m.perm_path)),
    ("ports", "notPorts", _port),
]


def when_generator(key: str) -> tuple[str, Callable] | None:
    """('principal' | 'permission', generator) for a `when` key, None when the key is unknown."""
    if key.startswith("request.headers[") and key.endswith("]"):
        name = key[len("request.headers["):-1]
        return "principal", _plain(lambda v: m.princ_header(name, v))
    if key.startswith("request.auth.claims[") or key in ("request.auth.principal", "request.auth.audiences",
                                                         "request.auth.presenter"):
        return "principal", _jwt
    if key.startswith("experimental.envoy.filters.") and key.endswith("]") and "[" in key:
        return "permission", _plain(lambda v: m.perm_envoy_filter_metadata(key, v))
    return {
        "source.ip": ("principal", _plain(m.princ_direct_ip)),
        "remote.ip": ("principal", _plain(m.princ_remote_ip)),
        "source.namespace": ("principal", _identity(m.princ_namespace)),
        "source.principal": ("principal", _identity(m.princ_principal)),
        "source.serviceAccount": ("principal", _service_account),
        "source.trustDomain": ("principal", _identity(m.princ_trust_domain)),
        "destination.ip": ("permission", _plain(m.perm_destination_ip)),
        "destination.port": ("permission", _port),
        "connection.sni": ("permission", _plain(m.perm_sni)),
    }.get(key)


def _condition(ctx: RuleContext, kind: str, gen: Callable, values: list[str], not_values: list[str],
               path: str, not_path: str) -> list[Any]:
    """The ANDed leaves of one field: [or(values)], [not(or(notValues))]. Raises _Skip."""
    out: list[Any] = []
    or_ = m.perm_or if kind == "permission" else m.princ_or
    not_ = m.perm_not if kind == "permission" else m.princ_not
    never = m.perm_never() if kind == "permission" else m.princ_not(m.princ_any())
    for vals, p, negate in ((values, path, False), (not_values, not_path, True)):
        if not vals:
            continue
        leaves = [gen(ctx, f"{p}[{i}]", str(v)) for i, v in enumerate(vals)]
        if gen is _port:  # evaluated here: None = this port, False = another port
            hit = any(x is None for x in leaves)
            if hit == negate:
                out.append(never)
            continue
        node = leaves[0] if len(leaves) == 1 else or_(leaves)
        out.append(not_(node) if negate else node)
    return out


def build_policy(ctx: RuleContext, rule: dict[str, Any], path: str) -> rbac_pb2.Policy | None:
    """The RBAC policy of one rule, or None when an ALLOW rule has to be dropped."""
    when_perms: list[rbac_pb2.Permission] = []
    when_princs: list[rbac_pb2.Principal] = []
    try:
        for i, cond in enumerate(rule.get("when") or ()):
            cpath = f"{path}.when[{i}]"
            kind, gen = when_generator(str(cond.get("key", ""))) or ("", None)
            if gen is None:
                _cannot(ctx, f"{cpath}.key", _Skip(f"unknown condition key {cond.get('key')!r}"))
                continue
            leaves = _field(ctx, kind, gen, cond.get("values"), cond.get("notValues"),
                            f"{cpath}.values", f"{cpath}.notValues")
            (when_perms if kind == "permission" else when_princs).extend(leaves)

        principals = []
        for i, entry in enumerate(rule.get("from") or ()):
            src = (entry or {}).get("source") or {}
            leaves: list[Any] = []
            for f, nf, gen in SOURCE_FIELDS:
                p = f"{path}.from[{i}].source"
                leaves += _field(ctx, "principal", gen, src.get(f), src.get(nf), f"{p}.{f}", f"{p}.{nf}")
            principals.append(m.princ_and(leaves + when_princs))
        if not principals:
            principals.append(m.princ_and(when_princs))

        permissions = []
        for i, entry in enumerate(rule.get("to") or ()):
            op = (entry or {}).get("operation") or {}
            leaves = []
            for f, nf, gen in OPERATION_FIELDS:
                p = f"{path}.to[{i}].operation"
                leaves += _field(ctx, "permission", gen, op.get(f), op.get(nf), f"{p}.{f}", f"{p}.{nf}")
            permissions.append(m.perm_and(leaves + when_perms))
        if not permissions:
            permissions.append(m.perm_and(when_perms))
    except _DropRule:
        return None
    return rbac_pb2.Policy(permissions=permissions, principals=principals)


class _DropRule(Exception):
    pass


def _field(ctx: RuleContext, kind: str, gen: Callable, values: Any, not_values: Any, path: str,
           not_path: str) -> list[Any]:
    """Leaves of one field, applying Istio's checkError rule when it cannot be honoured."""
    try:
        return _condition(ctx, kind, gen, list(values or ()), list(not_values or ()), path, not_path)
    except (_Skip, ValueError) as exc:
        _cannot(ctx, path if values else not_path, exc)
        return []


def _cannot(ctx: RuleContext, where: str, exc: Exception) -> None:
    """Istio's checkError: drop an ALLOW rule (raises _DropRule), ignore the field of any other rule."""
    if ctx.action == ALLOW:
        ctx.warn(where, f"{exc}; this ALLOW rule is ignored (it allows less, never more)")
        raise _DropRule from exc
    ctx.warn(where, f"{exc}; the condition is ignored, so this {ctx.action} rule applies more widely")
