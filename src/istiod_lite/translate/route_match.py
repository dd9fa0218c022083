"""VirtualService ``http[].match[]`` -> Envoy RouteMatch (Istio ``route.go translateRouteMatch``).

Several match blocks are ORed (one Envoy route each); fields inside one block are ANDed. ``uri`` exact/prefix/
regex -> path/prefix/safe_regex (none -> prefix "/"); ``ignoreUriCase`` -> case_sensitive (always set, as Istio);
``headers``/``withoutHeaders`` (sorted by name; regex ``*`` or an empty matcher -> present_match), ``method``/
``authority``/``scheme`` -> pseudo-header matchers; ``queryParams``; ``port`` must equal the served port or the
block is dropped. ``sourceLabels``/``sourceNamespace`` cannot apply at a waypoint: the block is dropped with a
warning (Istio drops sourceLabels matches at waypoints, istio/istio#51565). A block whose ``gateways`` names
neither ``mesh`` nor this waypoint (``ns/name``, or ``name`` in the waypoint's namespace) is for other gateways
and is skipped (``gateway_applies``). Header matches on JWT claims (``@request.auth.claims...``) need the
request-authentication feature: the block is dropped with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import warning
from istiod_lite.translate.waypoint import Waypoint

SUPPORTED = frozenset({"name", "uri", "ignoreUriCase", "headers", "withoutHeaders", "method", "authority", "scheme",
                       "queryParams", "port", "statPrefix", "sourceLabels", "sourceNamespace", "gateways"})


@dataclass(frozen=True)
class Match:
    name: str
    match: rc.RouteMatch
    catch_all: bool  # matches every request: later rules are unreachable
    stat_prefix: str = ""


def string_matcher(spec: Mapping[str, Any]) -> string_pb2.StringMatcher | None:
    """Istio StringMatch -> Envoy StringMatcher; None means "present" (empty matcher, regex "*", empty prefix)."""
    if "exact" in spec:
        return string_pb2.StringMatcher(exact=str(spec["exact"]))
    if "prefix" in spec and spec["prefix"]:
        return string_pb2.StringMatcher(prefix=str(spec["prefix"]))
    if "regex" in spec and spec["regex"] not in ("", "*"):
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=str(spec["regex"])))
    return None


def header_matcher(name: str, spec: Mapping[str, Any] | None, invert: bool = False) -> rc.HeaderMatcher:
    sm = string_matcher(spec or {})
    hm = rc.HeaderMatcher(name=name)
    if sm is None:
        hm.present_match = True
    else:
        hm.string_match.CopyFrom(sm)
        if invert:
            hm.treat_missing_header_as_empty = True
    if invert:
        hm.invert_match = True
    return hm


def _uri(m: rc.RouteMatch, uri: Mapping[str, Any] | None) -> bool:
    """Sets the path specifier; True when the URI part matches everything."""
    uri = uri or {}
    if "exact" in uri:
        m.path = str(uri["exact"])
    elif "prefix" in uri:
        m.prefix = str(uri["prefix"]) or "/"
    elif "regex" in uri and uri["regex"] not in ("", "*"):
        m.safe_regex.regex = str(uri["regex"])
    else:
        m.prefix = "/"
    kind = m.WhichOneof("path_specifier")
    return (kind == "prefix" and m.prefix == "/") or (kind == "safe_regex" and m.safe_regex.regex == ".*")


def build_match(spec: Mapping[str, Any]) -> Match:
    m = rc.RouteMatch()
    everything = _uri(m, spec.get("uri"))
    m.case_sensitive.value = not bool(spec.get("ignoreUriCase", False))
    headers = [header_matcher(k, v) for k, v in sorted((spec.get("headers") or {}).items())]
    headers += [header_matcher(k, v, invert=True) for k, v in sorted((spec.get("withoutHeaders") or {}).items())]
    for field, pseudo in (("method", ":method"), ("authority", ":authority"), ("scheme", ":scheme")):
        if spec.get(field) is not None:
            headers.append(header_matcher(pseudo, spec[field]))
    m.headers.extend(headers)
    for k, v in sorted((spec.get("queryParams") or {}).items()):
        qp = rc.QueryParameterMatcher(name=k)
        sm = string_matcher(v or {})
        if sm is None:
            qp.present_match = True
        else:
            qp.string_match.CopyFrom(sm)
        m.query_parameters.append(qp)
    catch_all = everything and not headers and not m.query_parameters
    return Match(str(spec.get("name", "")), m, catch_all, str(spec.get("statPrefix", "")))


def gateway_applies(gateways: Any, wp: Waypoint, namespace: str) -> bool:
    """True when a ``gateways`` list (VirtualService or match level) includes this waypoint: empty, ``mesh``,
    ``<waypoint ns>/<waypoint name>``, or ``<waypoint name>`` written in the waypoint's namespace."""
    if not gateways:
        return True
    own = f"{wp.namespace}/{wp.gateway.key.name}"
    for g in gateways:
        g = str(g)
        if g == "mesh" or g == own or (g == wp.gateway.key.name and namespace == wp.namespace):
            return True
    return False


def _jwt_claim_header(spec: Mapping[str, Any]) -> str | None:
    for f in ("headers", "withoutHeaders"):
        for k in spec.get(f) or {}:
            if str(k).startswith("@request.auth.claims"):
                return f"{f}[{k}]"
    return None


def build_matches(wp: Waypoint, vs: IstioConfig, rule: Mapping[str, Any], path: str, served_port: int) -> list[Match]:
    """The Envoy matches of one http rule; a rule without ``match`` is one catch-all match. An empty list means
    every block was dropped (the rule produces no route)."""
    blocks = rule.get("match") or []
    if not blocks:
        return [no_match(wp)]
    out = []
    for i, spec in enumerate(blocks):
        mpath = f"{path}.match[{i}]"
        for field in sorted(set(spec) - SUPPORTED):
            wp.report(warning(vs.key, f"{mpath}.{field}", f"match field {field} is not supported yet; ignored"))
        if spec.get("sourceLabels") or spec.get("sourceNamespace"):
            field = "sourceLabels" if spec.get("sourceLabels") else "sourceNamespace"
            wp.report(warning(vs.key, f"{mpath}.{field}", f"{field} cannot be matched at a waypoint; this match "
                              "block is dropped", "UnsupportedAtWaypoint"))
            continue
        if not gateway_applies(spec.get("gateways"), wp, vs.namespace):
            continue  # this block applies to other gateways only
        claim = _jwt_claim_header(spec)
        if claim:
            wp.report(warning(vs.key, f"{mpath}.{claim}", "JWT claim routing needs RequestAuthentication, which "
                              "istiod-lite does not support yet; this match block is dropped", "Unsupported"))
            continue
        port = spec.get("port")
        if port is not None and int(port) != served_port:
            continue  # Istio: a port match only applies to that port
        out.append(_memo_match(wp, spec))
    return out


_MEMO = "_istiod_lite_match_memo"
_NO_MATCH = repr({})


def no_match(wp: Waypoint) -> Match:
    """The one Match of a rule without ``match`` (a catch-all): `_memo_match(wp, {})`."""
    memo = wp.__dict__.get(_MEMO)
    hit = memo.get(_NO_MATCH) if memo is not None else None  # (the usual: kept by repr)
    return hit[0] if hit is not None else _memo_match(wp, {})


def _memo_match(wp: Waypoint, spec: Mapping[str, Any]) -> Match:
    """build_match(spec), once per distinct block per translation (most rules have no match, or equal ones):
    the Match and its message are shared read-only (routes copy them, as bytes: `match_bytes`)."""
    memo = wp.__dict__.get(_MEMO)
    if memo is None:
        memo = wp.__dict__[_MEMO] = {}
    key = repr(spec)
    hit = memo.get(key)
    if hit is None:
        m = build_match(spec)
        hit = memo[key] = (m, m.match.SerializeToString())
        memo[id(m)] = hit
    return hit[0]


def match_bytes(wp: Waypoint, m: Match) -> bytes:
    """The serialized RouteMatch of a Match from build_matches (cached per translation)."""
    memo = wp.__dict__.get(_MEMO)
    hit = memo.get(id(m)) if memo is not None else None
    if hit is None or hit[0] is not m:
        return m.match.SerializeToString()
    return hit[1]
