"""The action of one VirtualService http rule (Istio ``route.go translateRoute`` / ``applyHTTPRouteDestination``).

Exactly one of: ``redirect`` / ``directResponse`` (route_redirect.py), or ``route[]`` destinations:
- one destination -> ``cluster``; several -> ``weighted_clusters`` (``weight: 0`` entries omitted; weights are
  relative: Istio passes them through as given and Envoy 1.40 splits by weight / sum of weights, so 30/30 is an
  even split and does not need to sum to 100);
- per-destination ``headers``: one destination -> merged into the route's header operations (its authority only
  when the rule does not rewrite it); several -> on the ClusterWeight (authority -> host_rewrite_literal);
- a destination that cannot be resolved (unknown host/port/subset, reported by destinations.py) is dropped;
  when no destination is left the route answers 503 (``direct_response``) so the rule still matches and later
  rules keep their meaning;
- ``rewrite.uri`` -> prefix_rewrite, ``rewrite.uriRegexRewrite`` -> regex_rewrite (wins over uri),
  ``rewrite.authority`` or a request header set/add of ``:authority``/``host`` -> host_rewrite_literal;
- ``timeout`` -> ``timeout`` and the deprecated ``max_grpc_timeout`` (Istio default 0s = disabled), as Istio does:
  any ``max_stream_duration`` switches Envoy 1.40 to its "new timeouts", where ``timeout`` is ignored for
  plain HTTP requests (measured: a 1s VirtualService timeout then never fires; tests/test_e2e_routing.py);
- ``retries`` -> retries.py (no previous_hosts predicate when a destination uses consistent hashing);
- ``mirror``/``mirrors`` -> route_mirror.py; consistent-hash ``hash_policy`` per destination from the
  DestinationRule (destination_rules.hash_policies).
Rule-level ``headers`` apply to every kind of action; ``fault``/``corsPolicy`` become per-route filter configs
(route_fault.py, route_cors.py).

Cost (issue 6): routes.py asks `plain_tail` first (the usual rule: destinations of the service itself, in one
pass, its bytes from per-translation runs around the cluster names), then `route_tail`, which keeps no Action for
a rule of destinations only (its route bytes are Route.route alone); the usual destinations resolve per rule (destinations.
resolve_route_destinations); consistent-hash policies are looked up only when a DestinationRule names a
loadBalancer (`_route_hashes`); the fields shared by equal rules are encoded once per translation (`_common_bytes`).
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import any_pb2
from google.protobuf.message import Message

from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.service import Service, ServicePort
from istiod_lite.translate import names, wire
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import REFS_MEMO, ClusterRef, memo_ref, resolve_route_destinations
from istiod_lite.translate.durations import to_duration
from istiod_lite.translate.retries import retry_policy
from istiod_lite.translate.route_cors import cors_policy
from istiod_lite.translate.route_fault import fault_config
from istiod_lite.translate.route_headers import HeaderOps, header_ops
from istiod_lite.translate.route_mirror import mirror_policies
from istiod_lite.translate.route_redirect import apply_direct_response, apply_redirect
from istiod_lite.translate.waypoint import Waypoint


NO_DESTINATION_BODY = "no valid destination for this route (see istiod-lite issues)"


_NO_SPEC: Mapping[str, Any] = {}
_NO_HEADERS = HeaderOps()  # shared read-only (Actions without header operations)
_NO_CONFIGS: dict[str, any_pb2.Any] = {}  # shared read-only


class Action:
    """What a rule does on each of its Envoy routes. `refs` are the clusters it sends (or mirrors) to. `route` is
    the serialized RouteAction (bytes: routes are built as wire fragments, see wire.py), None when the rule
    redirects, responds directly, or has no destination left. (A plain slotted class: one is built per rule.)"""

    __slots__ = ("route", "direct_status", "spec", "headers", "filter_configs", "refs", "wp", "vs", "path",
                 "listener_port", "_tail")

    def __init__(self, route: bytes | None = None, direct_status: int = 0, spec: Mapping[str, Any] | None = None,
                 headers: HeaderOps | None = None, filter_configs: dict[str, any_pb2.Any] | None = None,
                 refs: list[ClusterRef] | None = None, wp: Waypoint | None = None, vs: IstioConfig | None = None,
                 path: str = "", listener_port: int = 0, _tail: bytes | None = None) -> None:
        self.route = route
        self.direct_status = direct_status
        self.spec = spec if spec is not None else _NO_SPEC
        self.headers = headers if headers is not None else _NO_HEADERS
        self.filter_configs = filter_configs if filter_configs is not None else _NO_CONFIGS
        self.refs = refs if refs is not None else []
        self.wp = wp
        self.vs = vs
        self.path = path
        self.listener_port = listener_port
        self._tail = _tail

    def apply(self, r: rc.Route) -> None:
        if self.spec.get("redirect") and self.wp is not None and self.vs is not None:
            apply_redirect(self.wp, self.vs, self.spec["redirect"], f"{self.path}.redirect", r, self.listener_port)
        elif self.spec.get("directResponse") and self.wp is not None and self.vs is not None:
            apply_direct_response(self.wp, self.vs, self.spec["directResponse"], f"{self.path}.directResponse", r)
        elif self.route is not None:
            r.route.MergeFromString(self.route)
        else:
            r.direct_response.status = self.direct_status
            r.direct_response.body.inline_string = NO_DESTINATION_BODY
        self.headers.apply(r)
        for name in sorted(self.filter_configs):
            r.typed_per_filter_config[name].CopyFrom(self.filter_configs[name])

    def route_bytes(self) -> bytes:
        """What `apply` sets on a Route, serialized (a wire fragment: append the route's name and match). Built
        once per action; redirects and direct responses (which may report per route) go through `apply`."""
        if self._tail is not None:
            return self._tail
        if self.route is not None and not self.filter_configs and self.headers.is_empty():
            tail = wire.ld(2, self.route)  # Route.route
        else:
            r = rc.Route()
            self.apply(r)
            tail = r.SerializeToString()
            if self.spec.get("redirect") or self.spec.get("directResponse"):
                return tail  # not cached: apply reports per route
        self._tail = tail
        return tail


def _pack(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def set_timeout(action: rc.RouteAction, timeout: Any) -> None:
    d = to_duration(timeout) if timeout is not None else None
    if d is None:
        d = _ZERO
    action.timeout.CopyFrom(d)
    action.max_grpc_timeout.CopyFrom(d)  # not max_stream_duration: see the module docstring


_ZERO = to_duration("0s")  # read-only (copied into routes)
_PLAIN = "plain"
_MEMO = "_istiod_lite_action_memo"


def _common_bytes(wp: Waypoint, rewrite: Mapping[str, Any] | None, authority: str, timeout: Any, retries: Any,
                  hashed: bool, hashes: list[rc.RouteAction.HashPolicy]) -> bytes:
    """The serialized RouteAction fields every route of this shape shares (all but the destination clusters
    and mirrors): rewrites, host rewrite, hash policies, timeouts, retry policy. Content-keyed per translation
    (most routes have equal ones), so the messages are built once per distinct shape."""
    memo = wp.__dict__.get(_MEMO)
    if memo is None:
        memo = wp.__dict__[_MEMO] = {}
    if hashed or hashes or authority or rewrite is not None or timeout is not None or retries is not None:
        key: Any = (repr(rewrite), authority, repr(timeout), repr(retries), hashed,
                    tuple([h.SerializeToString() for h in hashes]))
    else:
        key = _PLAIN  # the usual: every default (no hash policy, so `hashed` is False)
    hit = memo.get(key)
    if hit is None:
        action = rc.RouteAction()
        if rewrite:
            authority = _rewrite(action, rewrite) or authority
        action.hash_policy.extend(hashes)
        if authority:
            action.host_rewrite_literal = authority
        set_timeout(action, timeout)
        policy = retry_policy(retries, wp.options, consistent_hash=hashed)
        if policy is not None:
            action.retry_policy.CopyFrom(policy)
        hit = memo[key] = action.SerializeToString()
    return hit


def default_action(wp: Waypoint, ref: ClusterRef) -> Action:
    """The route of a bound service without VirtualService: its cluster, timeout 0s, default retries."""
    hashes = DestinationRules.of(wp).route_hashes(ref.service, ref.port.number, ref.subset)
    route = wire.string(1, ref.name) + _common_bytes(wp, None, "", None, None, bool(hashes), hashes)
    return Action(route=route, refs=[ref], _tail=wire.ld(2, route))


def _filter_configs(wp: Waypoint, vs: IstioConfig, rule: Mapping[str, Any], path: str) -> dict[str, any_pb2.Any]:
    out: dict[str, any_pb2.Any] = {}
    if rule.get("fault"):
        fault = fault_config(wp, vs, rule["fault"], f"{path}.fault")
        if fault is not None:
            out[names.FAULT_FILTER] = _pack(fault)
    if rule.get("corsPolicy"):
        out[names.CORS_FILTER] = _pack(cors_policy(rule["corsPolicy"]))
    return out


def _rewrite(action: rc.RouteAction, rewrite: Mapping[str, Any]) -> str:
    """Applies uri rewrites; returns the authority rewrite ("" when none)."""
    regex = rewrite.get("uriRegexRewrite")
    if regex:
        action.regex_rewrite.pattern.regex = str(regex.get("match", ""))
        action.regex_rewrite.substitution = str(regex.get("rewrite", ""))
    elif rewrite.get("uri"):
        action.prefix_rewrite = str(rewrite["uri"])
    return str(rewrite.get("authority") or "")


_WEIGHTS: dict[int, bytes] = {}  # weight -> ClusterWeight.weight field (a UInt32Value; 0: present, empty)


def _cluster_weight(ref: ClusterRef, weight: int, dest_headers: Mapping[str, Any] | None) -> bytes:
    """One serialized WeightedCluster.ClusterWeight (name, weight wrapper, per-destination headers)."""
    w = _WEIGHTS.get(weight)
    if w is None:
        w = _WEIGHTS[weight] = wire.ld(2, wire.uint(1, weight) if weight else b"")
    body = wire.string(1, ref.name) + w
    if dest_headers:
        cw = rc.WeightedCluster.ClusterWeight()
        dops = header_ops(dest_headers)
        dops.apply(cw)
        if dops.authority:
            cw.host_rewrite_literal = dops.authority
        body += cw.SerializeToString()
    return body


def _load_balanced(policy: Mapping[str, Any] | None) -> bool:
    """Whether a DR traffic policy names a loadBalancer (top level or a portLevelSettings entry)."""
    if not policy:
        return False
    if "loadBalancer" in policy:
        return True
    pls = policy.get("portLevelSettings")
    if not pls:
        return False
    for p in pls:
        if "loadBalancer" in p:
            return True
    return False


def _route_hashes(index: DestinationRules, ref: ClusterRef) -> list[rc.RouteAction.HashPolicy]:
    """`index.route_hashes(ref's service, port, subset)`, which is [] unless the effective policy has a
    loadBalancer (destination_rules.consistent_hash). destination_rules.effective_policy takes it from the rule's
    or the subset's policy (top level or port level) only, so without one there (the usual) it is [] at once."""
    service, subset = ref.service, ref.subset
    rule = index.for_service(service)
    if rule is None:
        return []  # effective policy {}
    name = subset.name if subset is not None else None
    sub = rule.subset(name) if name else None
    if not _load_balanced(rule.traffic_policy) and (sub is None or not _load_balanced(sub.traffic_policy)):
        return []
    return index.route_hashes(service, ref.port.number, subset)


_PLAIN_RULE = frozenset({"name", "match", "route"})  # rules whose action is only route destinations
DESTINATION_FIELDS = frozenset({"destination", "weight", "headers"})  # the fields of an http route destination


def build_action(wp: Waypoint, drs: DestinationRules, vs: IstioConfig, rule: Mapping[str, Any], path: str,
                 own: Service, own_port: ServicePort, listener_port: int = 0) -> Action:
    built = _build(wp, drs, vs, rule, path, own, own_port, listener_port)
    if type(built) is tuple:
        route, refs = built
        return Action(route=route, refs=refs, _tail=wire.ld(2, route))
    return built


def route_tail(wp: Waypoint, drs: DestinationRules, vs: IstioConfig, rule: Mapping[str, Any], path: str,
               own: Service, own_port: ServicePort, listener_port: int = 0
               ) -> tuple[bytes | None, list[ClusterRef], Action | None]:
    """`build_action` as the routes use it: (its `route_bytes()`, its refs, None) when they are the same for
    every match of the rule (the usual: no Action is kept), else (None, refs, the action) for redirects and
    direct responses, whose `route_bytes()` is asked per route (they may report per route)."""
    built = _build(wp, drs, vs, rule, path, own, own_port, listener_port)
    if type(built) is tuple:
        return wire.ld(2, built[0]), built[1], None  # Route.route alone
    if built.spec.get("redirect") or built.spec.get("directResponse"):
        return None, built.refs, built
    return built.route_bytes(), built.refs, None


def plain_tail(wp: Waypoint, drs: DestinationRules, rule: Mapping[str, Any], own: Service, own_port: ServicePort
               ) -> tuple[bytes, list[ClusterRef]] | None:
    """`route_tail`'s (bytes, refs) of the usual rule, in one pass: no field but name/match/route, every
    destination a dict of destination/weight/headers naming the service itself (its exact hostname, no port, a
    subset its DestinationRule defines or none, no headers: what destinations.resolve_route_destinations resolves
    without reporting), at least one left after dropping zero weights, no consistent hashing; None for any other
    rule (nothing reported: the caller asks `route_tail`). Only the destinations kept are looked up as refs (a zero
    weight's subset is checked); the bytes are `plain_segments` joined with the cluster names. (No comprehension
    on this path: each is a function call before Python 3.12.)"""
    if not rule.keys() <= _PLAIN_RULE:
        return None
    dests = rule.get("route")
    if not dests:
        return None  # (a destination with fields but destination/weight/headers: declined, see routes._usual)
    own_host = own.hostname
    if "." not in own_host or "*" in own_host or (own_port not in own.ports and own.port(own_port.number) is None):
        return None
    merged = drs.for_service(own)
    kept = []  # (subset, weight) of each destination
    for r in dests:
        if type(r) is not dict or not r.keys() <= DESTINATION_FIELDS:
            return None
        dest = r.get("destination")
        if type(dest) is not dict or dest.get("host") != own_host or dest.get("port") or r.get("headers"):
            return None
        name = dest.get("subset")
        if name:
            if merged is None:
                return None  # SubsetNotFound: reported by resolve_destination
            for subset in merged.subsets:  # (merged.subset(name))
                if subset.name == name:
                    kept.append((subset, r.get("weight", 0)))
                    break
            else:
                return None  # SubsetNotFound (or a name that is not a string): reported by resolve_destination
        else:
            kept.append((None, r.get("weight", 0)))
    several = len(kept) > 1
    if several:  # zero weights dropped (no comprehension: a function call each, before Python 3.12)
        nonzero = []
        for sw in kept:
            w = sw[1]
            if type(w) is not int:
                w = int(w or 0)
                sw = (sw[0], w)
            if w:
                nonzero.append(sw)
        if not nonzero:
            return None  # 503
        kept = nonzero
    d = wp.__dict__
    memo = d.get(REFS_MEMO)
    if memo is None:
        memo = d[REFS_MEMO] = {}
    bound = own.waypoint == wp.gateway.meta.key
    sid, pid = id(own), id(own_port)
    refs = []
    for subset, _ in kept:
        hit = memo.get((sid, pid, id(subset), "http", bound))  # destinations.memo_ref, inlined (a hit holds the
        if hit is None:  # objects whose ids key it, so no other live object has those ids: no identity check)
            hit = memo_ref(wp, own, own_port, subset, "http", bound)
        refs.append(hit)
    index = d.get(_DR_INDEX)  # DestinationRules.of(wp): `_route_hashes` of each ref (all are `own`'s)
    if index is not drs:
        if not isinstance(index, DestinationRules):
            index = DestinationRules.of(wp)
        merged = index.for_service(own)
    if merged is not None:
        tp = merged.traffic_policy
        if tp and ("loadBalancer" in tp or "portLevelSettings" in tp) and _load_balanced(tp):
            return None
        for subset, _ in kept:
            if subset is not None:
                if index is not drs:
                    subset = merged.subset(subset.name)
                if subset is not None and subset.traffic_policy and _load_balanced(subset.traffic_policy):
                    return None
    memo = d.get(_SEGMENTS)
    if memo is None:
        memo = d[_SEGMENTS] = {}
    if not several:
        name = refs[0].name.encode()
        segments = memo.get(len(name))
        if segments is None:
            segments = memo[len(name)] = plain_segments(_common_bytes(wp, None, "", None, None, False, []),
                                                         len(name))
        return name.join(segments), refs
    if len(refs) == 1:  # (the usual: a 100/0 split)
        name = refs[0].name.encode()
        key: Any = ((len(name), kept[0][1]),)
        segments = memo.get(key)
        if segments is None:
            segments = memo[key] = plain_segments(_common_bytes(wp, None, "", None, None, False, []), key)
        return name.join(segments), refs
    names_ = []
    lengths = []
    for ref, (_, w) in zip(refs, kept):
        name = ref.name.encode()
        names_.append(name)
        lengths.append((len(name), w))
    key = tuple(lengths)
    segments = memo.get(key)
    if segments is None:
        segments = memo[key] = plain_segments(_common_bytes(wp, None, "", None, None, False, []), key)
    out = [segments[0]]
    for name, seg in zip(names_, segments[1:]):
        out += (name, seg)
    return b"".join(out), refs


_SEGMENTS = "_istiod_lite_plain_segments"  # plain_tail's memo: plain_segments per key


def plain_segments(common: bytes, key: int | tuple[tuple[int, int], ...]) -> list[bytes]:
    """The bytes of a `plain_tail` (Route.route (2): a RouteAction with `cluster` (1), or `weighted_clusters`
    (3) of ClusterWeights (name, weight) of (name length, weight) `key` pairs, then `common`) as the runs
    between its cluster names (`key`: the one name's length, or the pairs): the encoding around a name depends on
    its length only, so a tail is the runs joined with the encoded names."""
    varint = wire.varint
    if type(key) is int:
        return [b"\x12" + varint(1 + len(varint(key)) + key + len(common)) + b"\x0a" + varint(key), common]
    weights = []
    for _, weight in key:
        w = _WEIGHTS.get(weight)
        if w is None:
            w = _WEIGHTS[weight] = wire.ld(2, wire.uint(1, weight))
        weights.append(w)
    sizes = [1 + len(varint(n)) + n + len(w) for (n, _), w in zip(key, weights)]  # each ClusterWeight
    clusters = sum(1 + len(varint(c)) + c for c in sizes)  # WeightedCluster.clusters (1)
    weighted = 1 + len(varint(clusters)) + clusters  # RouteAction.weighted_clusters (3)
    out = []
    run = b"\x12" + varint(weighted + len(common)) + b"\x1a" + varint(clusters)
    for (n, _), w, c in zip(key, weights, sizes):
        out.append(run + b"\x0a" + varint(c) + b"\x0a" + varint(n))
        run = w
    out.append(run + common)
    return out


_DR_INDEX = "_istiod_lite_destination_rules"  # where DestinationRules.of finds this translation's index


def _build(wp: Waypoint, drs: DestinationRules, vs: IstioConfig, rule: Mapping[str, Any], path: str,
           own: Service, own_port: ServicePort, listener_port: int) -> Action | tuple[bytes, list[ClusterRef]]:
    """The rule's Action, or (its serialized RouteAction, its refs) when that is all it has (no header
    operation nor per-route filter config: its route_bytes() is Route.route alone)."""
    get = rule.get
    if rule.keys() <= _PLAIN_RULE:  # the usual (no header, filter config, redirect, rewrite, timeout, ...)
        ops = configs = None
    else:
        ops = header_ops(get("headers")) if get("headers") else None
        configs = _filter_configs(wp, vs, rule, path) if get("fault") or get("corsPolicy") else None
        if get("redirect") or get("directResponse"):
            return Action(spec=rule, headers=ops, filter_configs=configs, wp=wp, vs=vs, path=path,
                          listener_port=listener_port)
    authority = ops.authority if ops is not None else ""
    dests = get("route") or ()
    several = len(dests) > 1
    chosen: list[tuple[ClusterRef, int, Mapping[str, Any] | None]] = []
    for r, ref in zip(dests, resolve_route_destinations(wp, drs, vs, dests, path, own, own_port)):
        if ref is None:
            continue
        weight = int(r.get("weight", 0) or 0)
        if several and weight == 0:
            continue
        chosen.append((ref, weight, r.get("headers")))
    if not chosen:
        return Action(direct_status=503, headers=ops, filter_configs=configs)
    index = DestinationRules.of(wp)
    if not several:
        ref, _, dest_headers = chosen[0]
        clusters = wire.string(1, ref.name)  # RouteAction.cluster
        if dest_headers:
            if ops is None:
                ops = HeaderOps()
            dops = header_ops(dest_headers)
            ops.request_add += dops.request_add
            ops.request_remove += dops.request_remove
            ops.response_add += dops.response_add
            ops.response_remove += dops.response_remove
            authority = authority or dops.authority
        hashes = _route_hashes(index, ref)
        hashed = bool(hashes)
        refs = [ref]
    else:
        hashed = False
        hashes = []
        weighted = []
        refs = []
        for ref, weight, dest_headers in chosen:
            weighted.append(_cluster_weight(ref, weight, dest_headers))
            hashes += _route_hashes(index, ref)
            refs.append(ref)
        clusters = wire.ld(3, wire.lds(1, weighted))  # RouteAction.weighted_clusters
    route = clusters + _common_bytes(wp, get("rewrite"), authority, get("timeout"), get("retries"), hashed, hashes)
    if get("mirror") or get("mirrors"):
        mirrors, mirror_refs = mirror_policies(wp, drs, vs, rule, path, own, own_port)
        if mirrors:
            extra = rc.RouteAction()
            extra.request_mirror_policies.extend(mirrors)
            route += extra.SerializeToString()
        refs += mirror_refs
    if ops is None and configs is None:  # route_bytes() is Route.route alone
        return route, refs
    return Action(route=route, headers=ops, filter_configs=configs, refs=refs)
