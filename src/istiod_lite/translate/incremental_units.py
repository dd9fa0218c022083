"""Building and bookkeeping of the incremental translator's units and clusters (translate/incremental.py):

- `build_unit`: one bound service's virtual hosts on the HTTP listeners, its HBONE RouteConfigurations
  (incremental_hbone.py), the cluster refs they use, the destination hosts it looked up, its issues; the same
  builder calls `translate()` makes (routes.virtual_host, clusters.inbound_refs' rule, hbone.service_route);
- `rebuild_authz`: a unit that only AuthorizationPolicy changes reach: the same unit with its RBAC configs
  (virtual hosts' typed_per_filter_config, in the HTTP virtual hosts' bytes and the HBONE RouteConfigurations)
  re-encoded, its policy sources and policy issues replaced; routes, refs and destinations kept;
- `set_unit`: install a unit in the state (cluster users, destination index, route source counters, issues);
- `emit_extra`: patch the resources a unit owns alone (HBONE routes, TCP listeners) against its previous unit;
- `sync_clusters`: bring clusters (and their ClusterLoadAssignments) in line with the units' refs, rebuilding
  only those whose inputs changed (clusters.build_cluster, endpoints.eds_assignment, hbone.rewrite_upstream).
"""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from istiod_lite.model.service import Service
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import clusters, dr_report, endpoints, hbone, names, routes
from istiod_lite.translate import incremental_hbone as ih
from istiod_lite.translate.destinations import ClusterRef, inbound_ref
from istiod_lite.translate.incremental_dirty import destination_hosts
from istiod_lite.translate.incremental_state import (_Cluster, _Full, _State, _Unit, _Update, scratch, scratch_wp,
                                                     sorted_text)
from istiod_lite.translate.waypoint import http_ports, served_port
from istiod_lite.xds import types
from istiod_lite.xds.types import Encoded, encode

_NO_CONFIG = route_pb2.RouteConfiguration()  # RouteResult's config slot: the unit keeps virtual host bytes only


def build_unit(st: _State, snapshot: ConfigSnapshot, svc: Service) -> _Unit:
    wp, drs = scratch(st, snapshot)
    refs: dict[str, ClusterRef] = {}
    rule = drs.for_service(svc)
    for port in http_ports(svc):  # clusters.inbound_refs for this service
        for ref in [inbound_ref(svc, port)] + [inbound_ref(svc, port, s) for s in (rule.subsets if rule else ())]:
            refs.setdefault(ref.name, ref)
    inbound = frozenset(refs)
    vhosts: dict[int, tuple[str, bytes]] = {}
    sources: dict = {}
    dests: set[str] = set()
    for lp in st.ports:
        p = served_port(svc, lp)
        if p is None:
            continue
        doms = st.doms[lp].get(names.virtual_host_name(svc.hostname, p.number))
        if not doms:
            continue
        rr = routes.RouteResult(_NO_CONFIG)
        vhosts[lp] = (names.virtual_host_name(svc.hostname, p.number),
                      routes.virtual_host_bytes(wp, drs, svc, p, doms, rr, lp))  # bytes: no message kept
        sources[lp] = frozenset(rr.sources | routes.dr_sources(drs, rr.refs))
        for ref in rr.refs:
            refs.setdefault(ref.name, ref)
            dests.add(ref.service.hostname.lower())
    extra = ih.hbone_routes(st, wp, drs, svc, refs, dests)
    # destinations are looked up by host whether they resolve or not: track every VS destination host
    for vs in snapshot.virtual_services_for_host(svc.hostname):
        dests.update(destination_hosts(vs, snapshot.domain_suffix))
    return _Unit(svc, vhosts, sources, refs, frozenset(dests), tuple(wp.issues), extra, inbound)


_POLICY = "AuthorizationPolicy"
_POLICY_TEXT = _POLICY + "/"  # str(ConfigKey) of a policy


def rebuild_authz(st: _State, snapshot: ConfigSnapshot, old: _Unit) -> _Unit:
    """What `build_unit` gives for `old`'s service when only AuthorizationPolicies changed since `old` was built
    (incremental_dirty.dirty's `policy_only`): a virtual host is its route part (routes.virtual_host_route_bytes,
    which reads no policy: kept, bytes and all) followed by its RBAC part (routes.virtual_host_authz_bytes:
    re-encoded). A unit's policy sources are exactly its AuthorizationPolicy keys (routes add no other policy
    key) and its policy issues exactly its issues keyed to an AuthorizationPolicy (authz.py keys every issue it
    reports to its policy; attachment issues are the state's, not the unit's), so both are swapped as a whole.
    Refs, destinations and inbound clusters do not depend on policies: the same objects."""
    assert old.service is not None
    svc = st.services[old.service.hostname]  # (its Service did not change, or the unit would not be policy-only)
    ports = {names.inbound_vip_cluster(p.number, svc.hostname): p for p in (st.hbone or {}).get(svc.hostname, ())}
    if any(key[1] not in ports for key in old.extra):  # (never: a service unit's own resources are its HBONE
        return build_unit(st, snapshot, svc)          # routes, one per claimed port)
    wp = scratch_wp(st, snapshot)
    rr = routes.RouteResult(_NO_CONFIG)
    vhosts: dict[int, tuple[str, bytes]] = {}
    sources: dict = {}
    for lp, (name, vh) in old.vhosts.items():
        port = served_port(svc, lp)
        assert port is not None
        rr.sources = set()
        tail = routes.virtual_host_authz_bytes(wp, svc, port, rr)
        at = routes.authz_offset(vh)
        vhosts[lp] = (name, vh if vh[at:] == tail else vh[:at] + tail)
        sources[lp] = frozenset(k for k in old.sources[lp] if k.kind != _POLICY) | rr.sources
    extra = old.extra
    if extra:
        extra = {}
        for key, (msg, src) in old.extra.items():
            port = ports[key[1]]
            rr.sources = set()
            tail = routes.virtual_host_authz_bytes(wp, svc, port, rr, peer_identity=hbone.FILTER_STATE)
            extra[key] = (ih.with_rbac(msg, tail),
                          tuple(sorted([s for s in src if not s.startswith(_POLICY_TEXT)] + [str(k) for k in rr.sources])))
    issues = tuple(i for i in old.issues if i.key is None or i.key.kind != _POLICY) + tuple(wp.issues)
    return _Unit(svc, vhosts, sources, old.refs, old.dest_hosts, issues, extra, old.inbound)


def build_cluster(st: _State, snapshot: ConfigSnapshot, ref: ClusterRef, inbound: bool) -> _Cluster:
    """`inbound`: the cluster is one of a bound service's inbound-vip clusters (HBONE rewrites those)."""
    wp, drs = scratch(st, snapshot)
    rule = drs.for_service(ref.service)
    for key in rule.keys if rule else ():
        dr_report.report_destination_rule(wp, snapshot.config(key))
    c, eds, src = clusters.build_cluster(wp, drs, ref)
    cla = endpoints.eds_assignment(wp, ref) if eds else None
    eds_src = None
    if eds:
        eds_src = sorted_text({ref.service.key} | ({ref.subset.source} if ref.subset else set()))
        if inbound and st.hbone is not None:
            hbone.rewrite_upstream(wp, ref, c, cla)
    # kept as bytes (serialized once here; the xds cache serves these very bytes): no message outlives the build
    return _Cluster(ref, Encoded.of(types.CLUSTER, c, ref.name),
                    Encoded.of(types.ENDPOINT, cla, ref.name) if cla is not None else None,
                    sorted_text(src), eds_src, tuple(wp.issues))


def set_unit(st: _State, up: _Update, key: str, unit: _Unit) -> None:
    old = st.units.get(key)
    if old is not None:
        if old.dest_hosts != unit.dest_hosts:
            for h in old.dest_hosts - unit.dest_hosts:
                st.dest_index.discard(h, key)
        for name in old.refs.keys() - unit.refs.keys():
            st.users.discard(name, key)
        if old.sources != unit.sources:
            for lp, src in old.sources.items():
                if lp not in st.plans:
                    up.counter(lp).subtract(src)
        up.issues(old.issues, -1)
    emit_extra(up, old, unit)
    st.units[key] = unit
    for h in unit.dest_hosts:
        st.dest_index.add(h, key)
    for name in unit.refs:
        st.users.add(name, key)
    if old is None or old.sources != unit.sources:
        for lp, src in unit.sources.items():
            if lp not in st.plans:
                up.counter(lp).update(src)
    up.issues(unit.issues, +1)


def emit_extra(up: _Update, old: _Unit | None, unit: _Unit) -> None:
    """Patch the unit's own resources: new or changed ones (serialized once: the unit keeps their Encoded; equal
    bytes keep the previous Encoded object), changed sources, removed names."""
    before = old.extra if old is not None else {}
    for key, (msg, src) in unit.extra.items():
        prev = before.get(key)
        enc = encode(key[0], msg, key[1])
        if prev is not None and (prev[0] is enc or prev[0] == enc):
            unit.extra[key] = (prev[0], src)
        else:
            unit.extra[key] = (enc, src)
            up.put(key[0], key[1], enc)
        if prev is None or prev[1] != src:
            up.sources(key, src)
    for key in before.keys() - unit.extra.keys():
        up.put(key[0], key[1], None)
        up.sources(key, None)


def sync_clusters(st: _State, up: _Update, snapshot: ConfigSnapshot, names_: set[str], fresh: set[str],
                  dirty_hosts: set[str]) -> None:
    """Bring the clusters named in `names_` in line with the units' refs (`fresh`: units just rebuilt)."""
    for name in sorted(names_):
        users = st.users.get(name)
        rec = st.clusters.get(name)
        if not users:
            st.users.pop(name, None)
            if rec is not None:
                del st.clusters[name]
                up.issues(rec.issues, -1)
                up.put(types.CLUSTER, name, None)
                up.sources((types.CLUSTER, name), None)
                if rec.endpoint is not None:
                    up.put(types.ENDPOINT, name, None)
                    up.sources((types.ENDPOINT, name), None)
            continue
        ref = rec.ref if rec is not None and (users - fresh) else None
        for h in (fresh & users if len(fresh) < len(users) else users & fresh):
            r = st.units[h].refs[name]
            if ref is None:
                ref = r
            elif r is not ref and r != ref:
                raise _Full()  # two different refs share a cluster name: order-dependent, rebuild all
        assert ref is not None
        if rec is not None and ref.service.hostname.lower() not in dirty_hosts and (rec.ref is ref or rec.ref == ref):
            continue
        owner = st.units.get(ref.service.hostname)
        new = build_cluster(st, snapshot, ref, owner is not None and name in owner.inbound)
        if rec is not None:
            up.issues(rec.issues, -1)
            if rec.cluster == new.cluster:
                new.cluster = rec.cluster
            if rec.endpoint is not None and new.endpoint is not None and rec.endpoint == new.endpoint:
                new.endpoint = rec.endpoint
        up.issues(new.issues, +1)
        st.clusters[name] = new
        if rec is None or new.cluster is not rec.cluster:
            up.put(types.CLUSTER, name, new.cluster)
        if rec is None or rec.sources != new.sources:
            up.sources((types.CLUSTER, name), new.sources)
        if new.endpoint is not None and (rec is None or new.endpoint is not rec.endpoint):
            up.put(types.ENDPOINT, name, new.endpoint)
        elif new.endpoint is None and rec is not None and rec.endpoint is not None:
            up.put(types.ENDPOINT, name, None)
        if new.eds_sources != (rec.eds_sources if rec is not None else None):
            up.sources((types.ENDPOINT, name), new.eds_sources)
