"""Envoy matchers for AuthorizationPolicy values (Istio's `pilot/pkg/security/authz/matcher`), as RBAC
Permission / Principal leaves.

Generic string semantics (Istio): ``*`` = present (any non-empty value), ``*abc`` = suffix, ``abc*`` = prefix,
anything else exact. Host values are case-insensitive; a host without a port also matches the same host with any
port (``example.com`` matches ``Host: example.com:8080``), a host with a port matches only that port. Paths use
``url_path`` (the path without the query string); ``{*}`` / ``{**}`` path templates use Envoy's uri_template
matcher. Identity values (principals, namespaces, service accounts, trust domains) match
``authenticated.principal_name``, which is empty, and so never matches, for plaintext peers.
"""

from __future__ import annotations

import ipaddress
import re

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import filter_state_pb2, metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

SPIFFE_PREFIX = "spiffe://"
MATCH_ONE_TEMPLATE = "{*}"
MATCH_ANY_TEMPLATE = "{**}"
URI_TEMPLATE_EXTENSION = "envoy.path.match.uri_template.uri_template_matcher"
_PORT_SUFFIX = re.compile(r"^(.*[^:]):([0-9]+)$")


def string_matcher(value: str, prefix: str = "", ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's StringMatcherWithPrefix: `*` -> `.+`, `*x` -> suffix, `x*` -> prefix, else exact."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=_regex(re.escape(prefix) + ".+" if prefix else ".+"))
    if value.startswith("*"):
        if prefix:
            return string_pb2.StringMatcher(safe_regex=_regex(re.escape(prefix) + ".*" + re.escape(value[1:])))
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + value, ignore_case=ignore_case)


def regex_matcher(regex: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=_regex(regex))


def _regex(regex: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=regex)


# ---- Permissions (what is requested) ------------------------------------------------------------------
def perm_any() -> rbac_pb2.Permission:
    return rbac_pb2.Permission(any=True)


def perm_never() -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=perm_any())


def perm_and(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=items or [perm_any()]))


def perm_or(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=items))


def perm_not(item: rbac_pb2.Permission) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=item)


def header_matcher(name: str, value: str, ignore_case: bool = False) -> rc.HeaderMatcher:
    if value == "*":
        return rc.HeaderMatcher(name=name, present_match=True)
    return rc.HeaderMatcher(name=name, string_match=string_matcher(value, ignore_case=ignore_case))


def perm_host(value: str) -> rbac_pb2.Permission:
    """`:authority` match, case-insensitive; a port-less value also matches that host with any port."""
    if value == "*":
        return rbac_pb2.Permission(header=rc.HeaderMatcher(name=":authority", present_match=True))
    if has_port(value) or value.endswith("*"):
        return rbac_pb2.Permission(header=header_matcher(":authority", value, ignore_case=True))
    body = (".*" + re.escape(value[1:])) if value.startswith("*") else re.escape(value)
    m = rc.HeaderMatcher(name=":authority", string_match=regex_matcher(f"(?i){body}(:[0-9]+)?"))
    return rbac_pb2.Permission(header=m)


def has_port(host: str) -> bool:
    """`example.com:80`, `[::1]:80`; a bare IPv6 literal has no port."""
    if host.startswith("["):
        return "]:" in host
    return host.count(":") == 1 and _PORT_SUFFIX.match(host) is not None


def perm_method(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=header_matcher(":method", value))


def is_path_template(value: str) -> bool:
    return MATCH_ONE_TEMPLATE in value or MATCH_ANY_TEMPLATE in value


def perm_path(value: str) -> rbac_pb2.Permission:
    if is_path_template(value):
        template = value.replace(MATCH_ANY_TEMPLATE, "**").replace(MATCH_ONE_TEMPLATE, "*")
        cfg = extension_pb2.TypedExtensionConfig(name=URI_TEMPLATE_EXTENSION)
        cfg.typed_config.Pack(uri_template_match_pb2.UriTemplateMatchConfig(path_template=template))
        return rbac_pb2.Permission(uri_template=cfg)
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=string_matcher(value)))


def cidr(value: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(value, strict=False)
    out = address_pb2.CidrRange(address_prefix=str(net.network_address))
    out.prefix_len.value = net.prefixlen
    return out


def perm_destination_ip(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_ip=cidr(value))


def perm_sni(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(requested_server_name=string_matcher(value))


def perm_envoy_filter_metadata(key: str, value: str) -> rbac_pb2.Permission:
    """`experimental.envoy.filters.a.b[c]` -> dynamic metadata of filter `envoy.filters.a.b`, key `c`;
    a value `[v]` matches a list containing v."""
    filter_name, _, field = key[len("experimental."):].rstrip("]").partition("[")
    if value.startswith("[") and value.endswith("]"):
        inner = value_pb2.ValueMatcher(string_match=string_matcher(value[1:-1]))
        vm = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=inner))
    else:
        vm = value_pb2.ValueMatcher(string_match=string_matcher(value))
    m = metadata_pb2.MetadataMatcher(filter=filter_name, path=[metadata_pb2.MetadataMatcher.PathSegment(key=field)],
                                     value=vm)
    return rbac_pb2.Permission(metadata=m)


# ---- Principals (who is asking) ------------------------------------------------------------------------
def princ_any() -> rbac_pb2.Principal:
    return rbac_pb2.Principal(any=True)


def princ_and(items: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=items or [princ_any()]))


def princ_or(items: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=items))


def princ_not(item: rbac_pb2.Principal) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(not_id=item)


def _authenticated(m: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=m))


def princ_principal(value: str) -> rbac_pb2.Principal:
    return _authenticated(string_matcher(value, prefix=SPIFFE_PREFIX))


def princ_namespace(value: str) -> rbac_pb2.Principal:
    v = ".*".join(re.escape(part) for part in value.split("*"))
    return _authenticated(regex_matcher(f".*/ns/{v}/.*"))


def princ_service_account(value: str, policy_namespace: str) -> rbac_pb2.Principal:
    ns, sep, sa = value.partition("/")
    if not sep:
        ns, sa = policy_namespace, value
    return _authenticated(regex_matcher(f"spiffe://.+/ns/{re.escape(ns)}/(.+/|)sa/{re.escape(sa)}(/.+)?"))


def princ_trust_domain(value: str) -> rbac_pb2.Principal:
    """`td` -> principals `spiffe://td/...`; `*` -> any; `*x` / `x*` -> suffix / prefix of the trust domain."""
    if value == "*":
        return _authenticated(regex_matcher("spiffe://.+"))
    if value.startswith("*"):
        return _authenticated(regex_matcher(f"spiffe://.*{re.escape(value[1:])}/.*"))
    if value.endswith("*"):
        return _authenticated(string_pb2.StringMatcher(prefix=SPIFFE_PREFIX + value[:-1]))
    return _authenticated(string_pb2.StringMatcher(prefix=f"{SPIFFE_PREFIX}{value}/"))


PEER_PRINCIPAL_STATE = "io.istio.peer_principal"


def peer_principal_from_filter_state(principal: rbac_pb2.Principal) -> rbac_pb2.Principal:
    """An ``authenticated`` identity leaf turned into the same match on filter state ``io.istio.peer_principal``
    (the HBONE caller's SPIFFE id, set by connect_terminate): what Istio matches at a waypoint."""
    fs = filter_state_pb2.FilterStateMatcher(key=PEER_PRINCIPAL_STATE,
                                             string_match=principal.authenticated.principal_name)
    return rbac_pb2.Principal(filter_state=fs)


def princ_direct_ip(value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(direct_remote_ip=cidr(value))


def princ_remote_ip(value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(remote_ip=cidr(value))


def princ_header(name: str, value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(header=header_matcher(name, value))
