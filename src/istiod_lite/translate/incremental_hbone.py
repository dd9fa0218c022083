"""The HBONE (ambient) and TCP parts of the incremental translator (translate/incremental.py), built with the
same functions `translate()` uses (hbone.py, tcp.py):

- `hbone_layout`, at a full translation: the parts fixed by the Gateway, the options and the bound services'
  shape (listeners connect_terminate / connect_originate, clusters main_internal / connect_originate, the
  VIP:port claims and their NoVIP / VIPConflict issues, and the ``main_internal`` listener assembled from one
  filter chain per claimed service port). A chain depends only on its service port, so VirtualService /
  DestinationRule / AuthorizationPolicy / endpoint changes never change main_internal.
- `hbone_routes`, per unit: the RouteConfiguration of each of the service's chains (hbone.service_route);
  `with_rbac` re-encodes only its RBAC configs (a policy-only change, incremental_units.rebuild_authz).
- per inbound-vip cluster, incremental_units.build_cluster applies hbone.rewrite_upstream (in-mesh endpoints
  through connect_originate) when `st.hbone` is set.
- `build_tcp_unit`: the waypoint's TCP listeners as one pseudo unit (tcp.build_listeners: which service a TCP
  port serves is a choice across services). It is rebuilt when a VirtualService that matches a bound service or
  has ``tcp`` rules changes, or when a host it resolved (destinations, its refs' services) changes.
"""

from __future__ import annotations

from istiod_lite.model.service import Service
from istiod_lite.model.snapshot import ConfigSnapshot
from istiod_lite.translate import hbone, tcp
from istiod_lite.translate.destination_rules import DestinationRules
from istiod_lite.translate.destinations import ClusterRef
from istiod_lite.translate.incremental_dirty import destination_hosts
from istiod_lite.translate.incremental_state import _State, _Unit, _Update, scratch, sorted_text
from istiod_lite.translate.waypoint import Waypoint
from istiod_lite.xds import types
from istiod_lite.xds.types import Encoded


def hbone_layout(st: _State, up: _Update, wp: Waypoint) -> None:
    """Emit the HBONE listener's fixed resources and main_internal; set `st.hbone` (claimed ports per host).
    Reports on `wp` (part of the waypoint's base issues). No-op without an HBONE listener."""
    gl = hbone.hbone_listener(wp)
    if gl is None:
        return
    key = (str(wp.key),)
    for type_url, msg in hbone.fixed_resources(wp, gl):
        up.put(type_url, msg.name, msg)
        up.sources((type_url, msg.name), key)
    table, claimed = hbone.claim_vips(wp)
    ports: dict[str, list] = {}
    for svc, port in claimed:
        ports.setdefault(svc.hostname, []).append(port)
    st.hbone = {h: tuple(p) for h, p in ports.items()}
    lst = hbone.main_internal_listener([hbone.service_chain(s, p) for s, p in claimed], table)
    up.put(types.LISTENER, lst.name, lst)
    up.sources((types.LISTENER, lst.name), sorted_text({wp.key} | {s.key for s, _ in claimed}))


def hbone_routes(st: _State, wp: Waypoint, drs: DestinationRules, svc: Service, refs: dict[str, ClusterRef],
                 dests: set[str]) -> dict[tuple[str, str], tuple[object, tuple[str, ...]]]:
    """The service's main_internal RouteConfigurations (adds their refs to `refs`, their hosts to `dests`)."""
    out: dict[tuple[str, str], tuple[object, tuple[str, ...]]] = {}
    if not st.hbone:
        return out
    for port in st.hbone.get(svc.hostname, ()):
        cfg, src, route_refs = hbone.service_route(wp, drs, svc, port)
        out[(types.ROUTE, cfg.name)] = (cfg, sorted_text(src))
        for ref in route_refs:
            refs.setdefault(ref.name, ref)
            dests.add(ref.service.hostname.lower())
    return out


def with_rbac(cfg, authz_part: bytes):
    """A copy of a service's RouteConfiguration (hbone.service_route: one virtual host) whose virtual host's
    typed_per_filter_config is replaced by `authz_part` (routes.virtual_host_authz_bytes' encoded entries): the
    message `service_route` builds once only AuthorizationPolicies changed. `cfg`: a message or its Encoded."""
    if isinstance(cfg, Encoded):
        new = cfg.message  # a fresh parse: ours to change
    else:
        new = type(cfg)()
        new.CopyFrom(cfg)
    vh = new.virtual_hosts[0]
    vh.ClearField("typed_per_filter_config")
    if authz_part:
        vh.MergeFromString(authz_part)
    return new


def has_tcp_listeners(st: _State) -> bool:
    return any(gl.protocol.upper() == tcp.TCP for gl in st.gateway.listeners)


def build_tcp_unit(st: _State, snapshot: ConfigSnapshot) -> _Unit:
    wp, drs = scratch(st, snapshot)
    extra: dict[tuple[str, str], tuple[object, tuple[str, ...]]] = {}
    refs: dict[str, ClusterRef] = {}
    dests: set[str] = set()
    for tl in tcp.build_listeners(wp, drs):
        extra[(types.LISTENER, tl.listener.name)] = (tl.listener, sorted_text(tl.sources))
        for ref in tl.refs:
            refs.setdefault(ref.name, ref)
            dests.add(ref.service.hostname.lower())
        for key in tl.sources:  # the VirtualServices whose tcp rules were tried: every destination they name
            vs = snapshot.config(key) if key.kind == "VirtualService" else None
            if vs is not None:
                dests.update(destination_hosts(vs, snapshot.domain_suffix, ("tcp",)))
    return _Unit(None, {}, {}, refs, frozenset(dests), tuple(wp.issues), extra)
