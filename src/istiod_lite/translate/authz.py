"""AuthorizationPolicy -> Envoy RBAC, enforced at the waypoint per virtual host.

Every HTTP listener carries the same four RBAC filters, whatever policies exist (`http_filters`), each with an
empty config (no ``rules`` = no enforcement), in Istio's order:

1. ``istiod-lite.rbac.audit``  AUDIT policies, RBAC action LOG (marks requests for the access log, never denies);
2. ``istiod-lite.rbac.custom`` CUSTOM policies: ext_authz providers are not supported, so a request a CUSTOM rule
   selects is denied (fail closed) and the policy is reported as unsupported;
3. ``istiod-lite.rbac.deny``   DENY policies, plus a deny-all entry per invalid policy (fail closed);
4. ``istiod-lite.rbac.allow``  ALLOW policies: when at least one applies, a request must match one of their rules
   (no rules at all = deny everything).

Policies take effect through ``RBACPerRoute`` in the virtual host's ``typed_per_filter_config``
(`virtual_host_config`): adding, editing or removing a policy changes routes (RDS) only, which applies to
kept-alive connections and never drains a listener. Denied requests get Envoy's 403 ``RBAC: access denied``.

Policy names in RBAC: ``ns[<ns>]-policy[<name>]-rule[<i>]`` (Istio's), ``...-invalid`` for fail-closed entries.
An AuthorizationPolicy whose spec has errors (the parser keeps it for this reason, with its Issues) is never
translated into an allow: the traffic it targets is denied until it is fixed. Rule semantics: authz_rules.py;
attachment: authz_attach.py; matchers: authz_match.py.
"""

from __future__ import annotations

from dataclasses import replace

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, warning
from istiod_lite.model.service import Service
from istiod_lite.translate import authz_attach, authz_match, wire
from istiod_lite.translate.authz_rules import ALLOW, AUDIT, CUSTOM, DENY, RuleContext, build_policy
from istiod_lite.translate.waypoint import Waypoint, http_ports

RBAC_AUDIT_FILTER = "istiod-lite.rbac.audit"
RBAC_CUSTOM_FILTER = "istiod-lite.rbac.custom"
RBAC_DENY_FILTER = "istiod-lite.rbac.deny"
RBAC_ALLOW_FILTER = "istiod-lite.rbac.allow"
FILTERS = (RBAC_AUDIT_FILTER, RBAC_CUSTOM_FILTER, RBAC_DENY_FILTER, RBAC_ALLOW_FILTER)
_ENVOY_ACTION = {RBAC_AUDIT_FILTER: rbac_config.RBAC.LOG, RBAC_CUSTOM_FILTER: rbac_config.RBAC.DENY,
                 RBAC_DENY_FILTER: rbac_config.RBAC.DENY, RBAC_ALLOW_FILTER: rbac_config.RBAC.ALLOW}
_ATTACHMENT_REPORTED = "_istiod_lite_attachment_reported"
_MEMO = "_istiod_lite_authz_memo"
_FILTER_OF = {AUDIT: RBAC_AUDIT_FILTER, CUSTOM: RBAC_CUSTOM_FILTER, DENY: RBAC_DENY_FILTER, ALLOW: RBAC_ALLOW_FILTER}


def http_filters() -> list[hcm.HttpFilter]:
    """The RBAC filters of every waypoint HTTP listener (independent of policies: no listener churn)."""
    out = []
    for name in FILTERS:
        cfg = any_pb2.Any()
        cfg.Pack(rbac_pb2.RBAC())
        out.append(hcm.HttpFilter(name=name, typed_config=cfg))
    return out


def policy_name(policy: IstioConfig, suffix: str) -> str:
    return f"ns[{policy.namespace}]-policy[{policy.name}]-{suffix}"


def policy_keys(wp: Waypoint, service: Service) -> set[ConfigKey]:
    """The AuthorizationPolicies that shape `service`'s virtual hosts (dependency tracking)."""
    return {p.key for p in attached(wp, service)}


def _is_invalid(wp: Waypoint, policy: IstioConfig) -> bool:
    return any(i.is_error and i.path.startswith("spec") for i in wp.snapshot.issues_for(policy.key))


def _action(policy: IstioConfig) -> str:
    spec = policy.spec if isinstance(policy.spec, dict) else {}
    return str(spec.get("action") or ALLOW)


def _served_port(service: Service, port: int | None) -> int | None:
    if port is not None:
        return port
    ports = http_ports(service)
    return ports[0].number if ports else None


def _memo(wp: Waypoint) -> dict:
    """Per-translation memo (lives on the Waypoint, so it never outlives one snapshot)."""
    memo = wp.__dict__.get(_MEMO)
    if memo is None:
        memo = wp.__dict__[_MEMO] = {}
    return memo


def attached(wp: Waypoint, service: Service) -> list[IstioConfig]:
    """authz_attach.attached, memoised per translation (policy_keys and virtual_host_config both ask)."""
    memo = _memo(wp)
    hit = memo.get(("attached", id(service)))
    if hit is not None and hit[0] is service:
        return hit[1]
    refs = memo.get("policy refs")
    if refs is None:
        refs = memo["policy refs"] = {}
    found = authz_attach.attached(wp, service, refs)
    memo[("attached", id(service))] = (service, found)
    return found


def _info(wp: Waypoint, policy: IstioConfig) -> tuple[IstioConfig, str, str, bool]:
    """(policy, action, repr of its rules, invalid), once per policy per translation (a root-namespace policy
    is attached to every service)."""
    memo = _memo(wp)
    hit = memo.get(("info", id(policy)))
    if hit is None or hit[0] is not policy:
        hit = memo[("info", id(policy))] = (policy, _action(policy), repr(policy.spec.get("rules") or ()),
                                            _is_invalid(wp, policy))
    return hit


def _rules(wp: Waypoint, policy: IstioConfig, action: str, port: int | None, peer_identity: str
           ) -> list[tuple[str, rbac_config.Policy | None, tuple[Issue, ...]]]:
    """(name suffix, built RBAC policy or None, issues) per rule of `policy`. The built policies depend on the
    rules' content, the action, the namespace, the port and `peer_identity` only, so equal policies (the same
    rules in many policies, a root-namespace policy attached to every service) are built once per translation;
    the messages are shared read-only (copied into each RBAC map). Issues are re-keyed to `policy`."""
    rules = policy.spec.get("rules") or ()
    memo = _memo(wp)
    ck = ("rules", action, policy.namespace, port, peer_identity, _info(wp, policy)[2])
    hit = memo.get(ck)
    if hit is None:
        hit = []
        for i, rule in enumerate(rules):
            ctx = RuleContext(policy, action, port, peer_identity=peer_identity)
            built = build_policy(ctx, rule or {}, f"spec.rules[{i}]")
            hit.append((f"rule[{i}]", built, tuple(ctx.issues), policy.key))
        memo[ck] = hit
    return [(suffix, built, issues if key == policy.key else tuple(replace(x, key=policy.key) for x in issues))
            for suffix, built, issues, key in hit]


RBAC_PER_ROUTE_TYPE = "type.googleapis.com/" + rbac_pb2.RBACPerRoute.DESCRIPTOR.full_name


def _policy_bytes(memo: dict, policy: rbac_config.Policy) -> bytes:
    """The serialized (deterministic) bytes of a memoised, read-only RBAC policy message, once per message."""
    hit = memo.get(("policy bytes", id(policy)))
    if hit is None or hit[0] is not policy:
        hit = memo[("policy bytes", id(policy))] = (policy, policy.SerializeToString(deterministic=True))
    return hit[1]


def _pack_bytes(wp: Waypoint, name: str, policies: dict[str, rbac_config.Policy]) -> bytes:
    """The serialized ``RBACPerRoute`` of one filter (the Any's value), encoded from the policies' cached bytes:
    the same bytes `_pack` gives (deterministic: map entries in key order, fields in number order;
    tests/test_translate_wire.py compares them)."""
    memo = _memo(wp)
    key = ("pack", name, *[(k, id(v)) for k, v in policies.items()])  # equal inputs (a root policy alone in its
    hit = memo.get(key)                                               # filter on every service): encoded once
    if hit is not None:
        return hit[0]
    entries = b"".join(wire.ld(2, wire.string(1, k) + wire.ld(2, _policy_bytes(memo, policies[k])))
                       for k in sorted(policies))
    action = _ENVOY_ACTION[name]
    rules = (wire.uint(1, action) if action else b"") + entries  # config.v3.RBAC: action, policies
    packed = wire.ld(2, wire.ld(1, rules))  # RBACPerRoute.rbac (2) -> RBAC.rules (1)
    memo[key] = (packed, policies)  # keeps the keyed messages alive (their ids stay theirs)
    return packed


def _pack(name: str, policies: dict[str, rbac_config.Policy]) -> any_pb2.Any:
    per_route = rbac_pb2.RBACPerRoute(rbac=rbac_pb2.RBAC(rules=rbac_config.RBAC(
        action=_ENVOY_ACTION[name], policies={k: policies[k] for k in sorted(policies)})))
    packed = any_pb2.Any()
    packed.Pack(per_route, deterministic=True)  # `policies` is a map: fixed bytes, stable hashes
    return packed


def virtual_host_config(wp: Waypoint, service: Service, port: int | None = None,
                        peer_identity: str = "tls") -> dict[str, any_pb2.Any]:
    """Filter name -> packed ``RBACPerRoute`` for the virtual host of `service` (served on service `port`; the
    service's first HTTP port when not given). Empty when no policy applies. `peer_identity`: "tls" (identity
    fields match the TLS peer; plaintext listeners have none) or "filter_state" (the HBONE chains: the caller's
    SPIFFE id in filter state ``io.istio.peer_principal``, see authz_rules)."""
    return {name: any_pb2.Any(type_url=RBAC_PER_ROUTE_TYPE, value=value)
            for name, value in virtual_host_config_bytes(wp, service, port, peer_identity).items()}


def virtual_host_config_bytes(wp: Waypoint, service: Service, port: int | None = None,
                              peer_identity: str = "tls") -> dict[str, bytes]:
    """`virtual_host_config` as filter name -> the packed Any's value (serialized ``RBACPerRoute``, type URL
    RBAC_PER_ROUTE_TYPE): what routes.py encodes into the virtual host without building messages."""
    if not wp.__dict__.get(_ATTACHMENT_REPORTED):  # once per translation (they do not depend on the service)
        wp.__dict__[_ATTACHMENT_REPORTED] = True
        for issue in authz_attach.attachment_issues(wp):
            wp.report(issue)
    policies = attached(wp, service)
    if not policies:
        return {}
    memo = _memo(wp)
    per_filter: dict[str, list[tuple[str, bytes]]] = {}
    has_allow = False
    served = _served_port(service, port)
    for policy in policies:
        filt, action, invalid, entries, issues = _entries(wp, memo, policy, served, peer_identity)
        if invalid:
            wp.report(warning(policy.key, "spec", f"the policy is invalid: requests to {service.hostname} are "
                              "denied until it is fixed (fail closed)", "FailClosed"))
        else:
            if action == CUSTOM:
                wp.report(warning(policy.key, "spec.action", "CUSTOM (ext_authz) providers are not supported: "
                                  "requests this policy selects are denied (fail closed)"))
            has_allow |= action == ALLOW
            for issue in issues:
                wp.report(issue)
        if entries:
            found = per_filter.get(filt)
            if found is None:
                per_filter[filt] = list(entries)
            else:
                found.extend(entries)
    out: dict[str, bytes] = {}
    for name in FILTERS:
        entries = per_filter.get(name)
        if not entries and not (name == RBAC_ALLOW_FILTER and has_allow):
            continue
        out[name] = _pack_entries(memo, name, entries or [])
    return out


def _entries(wp: Waypoint, memo: dict, policy: IstioConfig, served: int | None, peer_identity: str
             ) -> tuple[str, str, bool, tuple[tuple[str, bytes], ...], tuple[Issue, ...]]:
    """(filter, action, invalid, RBAC map entries as (policy name, encoded map entry), rule issues) of one policy
    on a virtual host served on `served`, once per (policy, port, peer identity) per translation (a
    root-namespace policy is attached to every service)."""
    ck = ("entries", id(policy), served, peer_identity)
    hit = memo.get(ck)
    if hit is not None and hit[0] is policy:
        return hit[1]
    _, action, _, invalid = _info(wp, policy)
    if invalid:
        name = policy_name(policy, "invalid")
        value = (RBAC_DENY_FILTER, action, True, ((name, _entry(memo, name, _DENY_ALL)),), ())
    else:
        entries = []
        flat: list[Issue] = []
        for suffix, built, issues in _rules(wp, policy, action, served, peer_identity):
            flat.extend(issues)
            if built is not None:
                name = policy_name(policy, suffix)
                entries.append((name, _entry(memo, name, built)))
        value = (_FILTER_OF[action], action, False, tuple(entries), tuple(flat))
    memo[ck] = (policy, value)
    return value


def _entry(memo: dict, name: str, policy: rbac_config.Policy) -> bytes:
    """One encoded ``map<string, Policy>`` entry of RBAC.policies (field 2): key (1), value (2)."""
    return wire.ld(2, wire.string(1, name) + wire.ld(2, _policy_bytes(memo, policy)))


def _pack_entries(memo: dict, name: str, entries: list[tuple[str, bytes]]) -> bytes:
    """The serialized ``RBACPerRoute`` of filter `name` from encoded map entries: the bytes `_pack` gives
    (deterministic: map entries in key order, fields in number order; tests/test_translate_wire.py)."""
    if len(entries) > 1:
        entries.sort(key=lambda e: e[0])
    key = ("packed", name, *[id(e[1]) for e in entries])  # equal inputs (a root policy alone in its filter on
    hit = memo.get(key)                                    # every service): encoded once
    if hit is not None:
        return hit[0]
    action = _ENVOY_ACTION[name]
    rules = (wire.uint(1, action) if action else b"") + b"".join(e[1] for e in entries)  # RBAC: action, policies
    packed = wire.ld(2, wire.ld(1, rules))  # RBACPerRoute.rbac (2) -> RBAC.rules (1)
    memo[key] = (packed, [e[1] for e in entries])  # keeps the keyed bytes alive (their ids stay theirs)
    return packed


def _match_all() -> rbac_config.Policy:
    return rbac_config.Policy(permissions=[authz_match.perm_any()], principals=[authz_match.princ_any()])


_DENY_ALL = _match_all()  # shared read-only: only ever copied into RBAC maps

