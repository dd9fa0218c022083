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
attachment: authz_attach.py; matchers: authz_match.py; encoding as bytes (no messages per virtual host): authz_wire.py.
"""

from __future__ import annotations

import marshal
from dataclasses import replace
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, warning
from istiod_lite.model.service import Service
from istiod_lite.translate import authz_attach, authz_match, authz_wire, wire
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
    """authz_attach.attached, memoised per translation (policy_keys and virtual_host_config both ask); shared:
    read-only."""
    memo = wp.__dict__.get(_MEMO)
    if memo is None:
        memo = _memo(wp)
    hit = memo.get(id(service))  # (the policy memo's keys are strings and tuples)
    if hit is not None and hit[0] is service:
        return hit[1]
    refs = memo.get("policy refs")
    if refs is None:
        refs = memo["policy refs"] = {}
    found = authz_attach.attached(wp, service, refs)
    memo[id(service)] = (service, found)
    return found


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
    entries = [(k, authz_wire.entry(k, wire.ld(2, _policy_bytes(memo, policies[k])))) for k in sorted(policies)]
    return authz_wire.packed(_ACTION_BYTES[name], entries)


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


class _Part:
    """What one attached policy gives a virtual host served on one port for one peer identity: its filter, the
    issues to report with it, and (when it has RBAC map entries) `packed` and `vh`: the filter's serialized
    ``RBACPerRoute`` and the virtual host's ``typed_per_filter_config`` entry when the policy is alone in its filter
    (the usual case), encoded from its content's `Shape`; `entries()` when it shares the filter."""

    __slots__ = ("policy", "filter", "action", "invalid", "prefix", "shape", "report", "_packed", "vh", "quiet")

    def __init__(self, policy: IstioConfig, filt: str, action: str, invalid: bool, prefix: str,
                 shape: authz_wire.Shape, report: tuple[Issue, ...]) -> None:
        self.policy, self.filter, self.action, self.invalid = policy, filt, action, invalid
        self.prefix, self.shape, self.report = prefix, shape, report
        self._packed: bytes | None = None
        if shape.entries:  # shape.encode_vh(prefix), inlined
            raw = prefix.encode()
            runs = shape.runs.get(len(raw))
            vh = raw.join(runs[1]) if runs is not None else shape.encode_vh(prefix)
        else:
            vh = b""
        self.vh = vh
        self.quiet = bool(vh) and not invalid and not report  # nothing to report, an entry in its filter

    @property
    def packed(self) -> bytes:
        """The serialized RBACPerRoute (encoded on first use: virtual hosts need only `vh`)."""
        if self._packed is None:
            self._packed = self.shape.encode(self.prefix)[0] if self.shape.entries else b""
        return self._packed

    def entries(self) -> list[tuple[str, bytes]]:
        """(RBAC policy name, encoded map entry) in name order."""
        return [(self.prefix + suffix, authz_wire.entry(self.prefix + suffix, tail))
                for suffix, tail in self.shape.entries]


class _Shared:
    """A filter's configs when several policies (or an ALLOW policy without rules) share it: `packed`, `vh`."""

    __slots__ = ("packed", "vh", "parts")

    def __init__(self, name: str, entries: list[tuple[str, bytes]], parts: list[_Part]) -> None:
        self.packed = authz_wire.packed(_ACTION_BYTES[name], entries)
        self.vh = authz_wire.vh_entry(_FILTER_KEY[name], self.packed, _TYPE_URL)
        self.parts = parts  # keeps the parts keyed by id in the memo alive (their ids stay theirs)


def virtual_host_config_bytes(wp: Waypoint, service: Service, port: int | None = None,
                              peer_identity: str = "tls") -> dict[str, bytes]:
    """`virtual_host_config` as filter name -> the packed Any's value (serialized ``RBACPerRoute``, type URL
    RBAC_PER_ROUTE_TYPE)."""
    return {name: h.packed for name, h in _filters(wp, service, port, peer_identity)[1].items()}


def virtual_host_part(wp: Waypoint, service: Service, port: int | None = None, peer_identity: str = "tls"
                      ) -> tuple[list[ConfigKey], bytes]:
    """(keys of the attached policies (`policy_keys`), the virtual host's ``typed_per_filter_config`` entries
    (field 15) encoding `virtual_host_config` in key order): what routes.py appends to a virtual host, with one
    attachment lookup for both. The usual case (one or two attached policies whose parts are quiet: valid, nothing
    to report, in distinct filters) is answered inline once the attachment warnings are reported; anything else
    goes through `_grouped` (`_general_part`), which gives the same (tests/test_route_speed_paths.py)."""
    d = wp.__dict__
    memo = d.get(_MEMO)
    refs = memo.get("policy refs") if memo is not None and d.get(_ATTACHMENT_REPORTED) else None
    if refs is not None:  # (the usual: `_grouped` of one or two quiet policies in distinct filters, inlined)
        policies = authz_attach.attached(wp, service, refs)
        n = len(policies)
        if not n:
            return [], b""
        if n <= 2:
            served = port if port is not None else _served_port(service, None)
            parts_memo = memo.get((_PARTS, served, peer_identity))
            if parts_memo is not None:  # (a hit holds its policy: no other live object has its id)
                a = policies[0]
                hit = parts_memo.get(id(a))
                pa = hit[1] if hit is not None else _part(wp, memo, parts_memo, a, served, peer_identity)
                if pa.quiet:
                    if n == 1:
                        return [a.meta.key], pa.vh
                    b = policies[1]
                    hit = parts_memo.get(id(b))
                    pb = hit[1] if hit is not None else _part(wp, memo, parts_memo, b, served, peer_identity)
                    if pb.quiet and pa.filter != pb.filter:  # (map entries in key order: _VH_ORDER)
                        return [a.meta.key, b.meta.key], pa.vh + pb.vh if pa.filter < pb.filter else pb.vh + pa.vh
    return _general_part(wp, service, port, peer_identity)


def _general_part(wp: Waypoint, service: Service, port: int | None, peer_identity: str
                  ) -> tuple[list[ConfigKey], bytes]:
    """`virtual_host_part` through `_grouped` (any policies; reports their issues)."""
    policies, by_filter, memo = _grouped(wp, service, port, peer_identity)
    if len(policies) == 2:  # (the usual: a root or waypoint policy and the service's own)
        keys = [policies[0].meta.key, policies[1].meta.key]
    else:
        keys = [p.meta.key for p in policies]
    n = len(by_filter)
    if n == 2:  # (the usual: two filters, one part each)
        (n1, p1), (n2, p2) = by_filter.items()
        v1 = p1[0].vh if len(p1) == 1 else _shared(memo, n1, p1).vh
        v2 = p2[0].vh if len(p2) == 1 else _shared(memo, n2, p2).vh
        return keys, v1 + v2 if n1 < n2 else v2 + v1  # (map entries in key order: _VH_ORDER)
    if n == 1:
        for name, parts in by_filter.items():
            return keys, parts[0].vh if len(parts) == 1 else _shared(memo, name, parts).vh
    if not n:
        return keys, b""
    return keys, b"".join([parts[0].vh if len(parts) == 1 else _shared(memo, name, parts).vh
                           for name in _VH_ORDER if (parts := by_filter.get(name)) is not None])


def _filters(wp: Waypoint, service: Service, port: int | None, peer_identity: str
             ) -> tuple[list[IstioConfig], dict[str, _Part | _Shared]]:
    """(the attached policies, filter name (in FILTERS order) -> its configs for the virtual host of `service` on
    `port`); reports as `_grouped`."""
    policies, by_filter, memo = _grouped(wp, service, port, peer_identity)
    out: dict[str, _Part | _Shared] = {}
    for name in FILTERS:
        parts = by_filter.get(name)
        if parts is not None:
            out[name] = parts[0] if len(parts) == 1 else _shared(memo, name, parts)
    return policies, out


def _grouped(wp: Waypoint, service: Service, port: int | None, peer_identity: str
             ) -> tuple[list[IstioConfig], dict[str, list[_Part]], dict]:
    """(the attached policies, filter name -> the parts of the policies in it (attachment order; an empty list
    for the ALLOW filter when ALLOW policies have no rule), the memo); reports the policies' issues (in attachment
    order) and, once per translation, the attachment warnings."""
    d = wp.__dict__
    memo = d.get(_MEMO)
    if memo is None:
        memo = _memo(wp)
    refs = memo.get("policy refs")
    if refs is None:
        refs = memo["policy refs"] = {}
    if not d.get(_ATTACHMENT_REPORTED):  # once per translation (they do not depend on the service)
        d[_ATTACHMENT_REPORTED] = True
        for issue in authz_attach.attachment_issues(wp, refs):
            wp.report(issue)
    policies = authz_attach.attached(wp, service, refs)  # (one call per virtual host: not memoised per service)
    if not policies:
        return policies, {}, memo
    served = port if port is not None else _served_port(service, None)
    parts_memo = memo.get((_PARTS, served, peer_identity))  # id(policy) -> (policy, its _Part)
    if parts_memo is None:
        parts_memo = memo[(_PARTS, served, peer_identity)] = {}
    by_filter: dict[str, list[_Part]] = {}
    has_allow = False
    for policy in policies:
        hit = parts_memo.get(id(policy))
        part = hit[1] if hit is not None and hit[0] is policy else \
            _part(wp, memo, parts_memo, policy, served, peer_identity)
        if part.invalid:
            wp.report(warning(policy.key, "spec", f"the policy is invalid: requests to {service.hostname} are "
                              "denied until it is fixed (fail closed)", "FailClosed"))
        else:
            if part.action == ALLOW:
                has_allow = True
            if part.report:
                for issue in part.report:
                    wp.report(issue)
        if part.vh:
            found = by_filter.get(part.filter)
            if found is None:
                by_filter[part.filter] = [part]
            else:
                found.append(part)
    if has_allow and RBAC_ALLOW_FILTER not in by_filter:  # ALLOW policies without any rule: nothing is allowed
        by_filter[RBAC_ALLOW_FILTER] = []
    return policies, by_filter, memo


_PARTS = "parts"


def _part(wp: Waypoint, memo: dict, parts_memo: dict, policy: IstioConfig, served: int | None,
          peer_identity: str) -> _Part:
    """The `_Part` of `policy`, once per (policy, port, peer identity) per translation (a root-namespace policy
    is attached to every service). Its rules are built and encoded once per content (`_content_shape`)."""
    key = policy.meta.key
    spec = policy.spec
    action = spec.get("action") if isinstance(spec, dict) else None
    if type(action) is not str or not action:
        action = str(action or ALLOW)
    prefix = f"ns[{key.namespace}]-policy[{key.name}]-"  # = policy_name(policy, ""): every RBAC name of it
    known = wp.snapshot.issues_for(key)
    if known and any(i.is_error and i.path.startswith("spec") for i in known):  # invalid: fails closed
        shape = memo.get("invalid shape")
        if shape is None:
            tail = authz_wire.ld(2, _DENY_ALL.SerializeToString(deterministic=True))
            shape = memo["invalid shape"] = _shape(RBAC_DENY_FILTER, [("invalid", tail)])
        part = _Part(policy, RBAC_DENY_FILTER, action, True, prefix, shape, ())
    else:
        rules = spec.get("rules") or ()  # `_content_shape`'s memo, looked up inline (the usual: a hit)
        try:
            content: bytes | str = marshal.dumps(rules, 2)
        except ValueError:
            content = repr(rules)
        hit = memo.get(("rules", action, key.namespace, served, peer_identity, content))
        issues, origin, shape = hit if hit is not None else _content_shape(memo, policy, action, served,
                                                                           peer_identity)
        report: tuple[Issue, ...] = ()
        if action == CUSTOM:
            report = (warning(key, "spec.action", "CUSTOM (ext_authz) providers are not supported: requests this "
                              "policy selects are denied (fail closed)"),)
        if issues:
            report += issues if origin == key else tuple(replace(x, key=key) for x in issues)
        part = _Part(policy, _FILTER_OF[action], action, False, prefix, shape, report)
    parts_memo[id(policy)] = (policy, part)
    return part


def _content_shape(memo: dict, policy: IstioConfig, action: str, port: int | None, peer_identity: str
                   ) -> tuple[tuple[Issue, ...], ConfigKey, authz_wire.Shape]:
    """(the rules' issues in rule order, key of the policy they were built for, the `Shape` of the built RBAC
    policies) of `policy`'s rules. They depend on the rules' content, the action, the namespace, the port and
    `peer_identity` only, so equal policies (the same rules in many policies) are built and encoded once per
    translation; the issues are re-keyed by the caller."""
    rules = policy.spec.get("rules") or ()
    try:
        content: bytes | str = marshal.dumps(rules, 2)  # _content(rules), inlined
    except ValueError:
        content = repr(rules)
    ck = ("rules", action, policy.meta.key.namespace, port, peer_identity, content)
    hit = memo.get(ck)
    if hit is None:
        issues: list[Issue] = []
        entries = []
        for i, rule in enumerate(rules):
            ctx = RuleContext(policy, action, port, peer_identity=peer_identity)
            built = build_policy(ctx, rule or {}, f"spec.rules[{i}]")
            if built is not None:
                entries.append((f"rule[{i}]", authz_wire.ld(2, built.SerializeToString(deterministic=True))))
            issues.extend(ctx.issues)
        hit = memo[ck] = (tuple(issues), policy.meta.key, _shape(_FILTER_OF[action], entries))
    return hit


def _shape(filt: str, entries: list[tuple[str, bytes]]) -> authz_wire.Shape:
    return authz_wire.Shape(_FILTER_KEY[filt], _ACTION_BYTES[filt], _TYPE_URL, entries)


def _content(rules: Any) -> bytes | str:
    """A key equal for equal rules only: their marshal encoding (type-exact, a few times cheaper than repr), or
    their repr for what marshal does not encode (a YAML timestamp)."""
    try:
        return marshal.dumps(rules, 2)  # (version 2: no back-references, so equal values give equal bytes)
    except ValueError:
        return repr(rules)


def _first(entry: tuple[str, bytes]) -> str:
    return entry[0]


def _shared(memo: dict, name: str, parts: list[_Part]) -> _Shared:
    """The configs of filter `name` shared by `parts` (none: an ALLOW policy without rules); equal inputs (two
    root policies in one filter on every service) are encoded once."""
    key = ("shared", name, *[id(p) for p in parts])
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = _Shared(name, sorted([e for p in parts for e in p.entries()], key=_first), parts)
    return hit


def _match_all() -> rbac_config.Policy:
    return rbac_config.Policy(permissions=[authz_match.perm_any()], principals=[authz_match.princ_any()])


_DENY_ALL = _match_all()  # shared read-only: only ever copied into RBAC maps
_ACTION_BYTES = {name: wire.uint(1, a) if a else b"" for name, a in _ENVOY_ACTION.items()}  # RBAC.action (1)
_TYPE_URL = wire.string(1, RBAC_PER_ROUTE_TYPE)  # Any.type_url
_FILTER_KEY = {name: wire.string(1, name) for name in FILTERS}
_VH_ORDER = sorted(FILTERS)  # typed_per_filter_config is a map: its entries in key order (deterministic bytes)
