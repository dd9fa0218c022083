"""Route granularity of a plain HTTP listener: Scoped RDS keyed by (listener port, Host without port), one
RouteConfiguration per service, so a change to one service's routes costs Envoy O(that service).

Layout (names.py has the names):
- the HCM has ``scoped_routes`` (``scoped_rds`` over ADS) with key fragments
  1. header ``x-istiod-lite-listener-port``, set (overwriting any client value) by an early header mutation of
     the HCM to the listener port: Envoy subscribes SRDS as one wildcard for every listener, so each listener's
     scopes must carry its port, and early header mutations run before the scope is chosen;
  2. ``:authority`` split at ``:``, element 0 (the port is split off);
- one ScopedRouteConfiguration per key (``http.P|KEY``), KEY = a domain form without port (domains.py);
- the key's RouteConfiguration: ``http.P/HOST`` holding the one virtual host of the service that owns every
  domain with that key, or ``http.P/key/KEY`` holding the virtual hosts of all services having a domain with that
  key when several do (an IPv6 VIP ``[2001:db8::1]`` has key ``[2001``; ``name`` and ``name:8080`` can belong to
  two services after domain conflicts). Envoy's virtual host domain matching then picks the host inside it.
- A Host no key matches: Envoy answers 404 (no scope = NullConfigImpl, no route), as an unknown virtual host
  did. There is no "no scope matched" fallback in Envoy, and a scope key is exact, so a listener serving a
  wildcard host (ServiceEntry ``*.example.com``) keeps the single RouteConfiguration ``http.P`` of routes.py
  (RDS): suffix matching needs Envoy's virtual host domains. Adding/removing such a host switches the listener's
  layout (a listener change).
- Scope keys are exact strings, Host matching of virtual hosts is case-insensitive: our domains are lowercase
  and clients send lowercase hosts; a mixed-case Host finds no scope (404) where it used to match.

Why Scoped RDS (bench/route_granularity.py, bench/RESULTS-route-granularity.md; real Envoy 1.40, loopback,
one service's routes changed among N, ms from the RDS response written to its ACK, median of 7):

    | layout | N | Delta push->ACK | SotW push->ACK | Delta set->ACK |
    |---|---|---|---|---|
    | single RouteConfiguration | 1,000 | 32.8 | 31.5 | 35.9 |
    | Scoped RDS (chosen)       | 1,000 | 1.2  | 2.2  | 11.6 |
    | single RouteConfiguration | 5,000 | 159.8 | 156.4 | 172.9 |
    | Scoped RDS (chosen)       | 5,000 | 1.3  | 7.4  | 71.1 |

    (set->ACK adds the Python per-push work of the xds cache/diff, still O(resources): see the results file.)

- single RouteConfiguration: Envoy re-parses and rebuilds every virtual host (O(N));
- Scoped RDS: Envoy applies one small RouteConfiguration (O(1) in N), over Delta and SotW (a SotW response of
  a named type carries only the resources the proxy lacks, xds/sotw.py);
- VHDS: not built. Envoy supports it over Delta only (SotW must work), needs the on_demand filter, and
  ``RouteConfigUpdateReceiverImpl::onVhdsUpdate`` rebuilds the whole route table (a new ConfigImpl of every
  virtual host) on each update: it saves bytes on the wire, not Envoy's O(N) apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2, scoped_route_pb2

from istiod_lite.model.meta import ConfigKey
from istiod_lite.translate import names, wire
from istiod_lite.xds import types
from istiod_lite.xds.types import Encoded

MAX_DIRECT_RESPONSE_BODY = 1024 * 1024


def scope_key(domain: str) -> str:
    """The key Envoy extracts from a Host equal to `domain` (split at ':', element 0)."""
    return domain.split(":", 1)[0]


def is_scoped(doms: dict[str, list[str]]) -> bool:
    """Whether a listener with these virtual host domains uses Scoped RDS (no wildcard domain)."""
    for ds in doms.values():
        for d in ds:
            if "*" in d:
                return False
    return True


def key_owners(doms: dict[str, list[str]]) -> dict[str, list[str]]:
    """scope key -> virtual host names having a domain with that key (sorted), keys sorted."""
    owners: dict[str, list[str]] = {}  # (each virtual host's domains are seen together: a repeat is the last)
    for vh, ds in doms.items():
        for d in ds:
            k = d.split(":", 1)[0]  # scope_key
            found = owners.get(k)
            if found is None:
                owners[k] = [vh]
            elif found[-1] != vh:
                found.append(vh)
    out = {}
    for k in sorted(owners):
        vhs = owners[k]
        out[k] = vhs if len(vhs) == 1 else sorted(vhs)
    return out


def new_config(name: str, scoped: bool) -> route_pb2.RouteConfiguration:
    cfg = route_pb2.RouteConfiguration(name=name)
    cfg.validate_clusters.value = False
    cfg.max_direct_response_body_size_bytes.value = MAX_DIRECT_RESPONSE_BODY
    if scoped:
        cfg.request_headers_to_remove.append(names.LISTENER_PORT_HEADER)
    return cfg


def with_vhosts(name: str, vhosts: list[rc.VirtualHost], scoped: bool = True) -> route_pb2.RouteConfiguration:
    cfg = new_config(name, scoped)
    cfg.virtual_hosts.extend(sorted(vhosts, key=lambda v: v.name))
    return cfg


_HEADS = {scoped: new_config("", scoped).SerializeToString() for scoped in (False, True)}


def with_vhost_bytes(name: str, vhosts: list[tuple[str, bytes]], scoped: bool = True) -> Encoded:
    """`with_vhosts` from serialized virtual hosts ((name, bytes) pairs, routes.virtual_host_bytes), as the
    `Encoded` resource (xds/types.py) the cache serves: no message is built. The bytes are the message's
    deterministic serialization (fields in number order: name (1), virtual_hosts (2), then the fixed head
    fields, all numbered above 2; tests/test_translate_encoded.py)."""
    if len(vhosts) == 1:  # (a service's own RouteConfiguration)
        body = wire.ld(2, vhosts[0][1])
    else:  # RouteConfiguration.virtual_hosts
        body = wire.lds(2, [b for _, b in sorted(vhosts, key=lambda v: v[0])])
    return Encoded(types.ROUTE, name, wire.string(1, name) + body + _HEADS[scoped], route_pb2.RouteConfiguration)


def own_config(port: int, hostname: str, vhost: bytes, vhost_tail: bytes = b"") -> Encoded:
    """`with_vhost_bytes(names.service_route_config_name(port, hostname), [(..., vhost + vhost_tail)])`: a
    service's own RouteConfiguration (scoped), from its one serialized virtual host (given in two parts: the
    caller need not join them)."""
    n = len(vhost) + len(vhost_tail)
    return _named(types.ROUTE, f"http.{port}/{hostname}",  # names.service_route_config_name
                  b"".join((b"\x12", _LEN[n] if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) if n < 0x4000
                            else wire.varint(n), vhost, vhost_tail, _HEADS[True])),
                  route_pb2.RouteConfiguration)


_named = Encoded.named
_LEN = wire.LEN


def scope(port: int, key: str, route_config: str, port_fragment: bytes | None = None) -> Encoded:
    """`port_fragment`: `port_fragment(port)`, when the caller has it."""
    # name (1), route_configuration_name (2), key (3) { fragments (1) { string_key (1, a oneof: "" is set) } }
    fragments = (port_fragment or _port_fragment(port)) + wire.ld(1, wire.string(1, key))
    scope_name = names.route_scope_name(port, key)
    return _scope(scope_name, wire.string(1, scope_name) + wire.string(2, route_config) + wire.ld(3, fragments))


def _port_fragment(port: int) -> bytes:
    return wire.ld(1, wire.string(1, str(port)))


def _scope(name: str, value: bytes) -> Encoded:
    """A ScopedRouteConfiguration as the cache's `Encoded`: its fields name (1), route_configuration_name (2),
    key (3) written in number order are its deterministic serialization."""
    return Encoded(types.SCOPED_ROUTE, name, value, scoped_route_pb2.ScopedRouteConfiguration)


@dataclass
class ScopePlan:
    """The scoped layout of one listener: which RouteConfiguration each key's scope names."""

    port: int
    vh_host: dict[str, str]  # virtual host name -> service hostname
    owners: dict[str, list[str]]  # scope key -> virtual host names
    shared: dict[str, list[str]] = field(default_factory=dict)  # shared config name -> virtual host names
    own: set[str] = field(default_factory=set)  # virtual hosts with a RouteConfiguration of their own

    def config_of_key(self, key: str) -> str:
        vhs = self.owners[key]
        if len(vhs) == 1:
            return names.service_route_config_name(self.port, self.vh_host[vhs[0]])
        return names.shared_route_config_name(self.port, key)

    def scopes(self) -> list[Encoded]:
        port, vh_host, fragment = self.port, self.vh_host, _port_fragment(self.port)
        string = wire.string
        out = []
        for k, vhs in self.owners.items():  # `scope` of each key, inlined
            cfg = names.service_route_config_name(port, vh_host[vhs[0]]) if len(vhs) == 1 \
                else names.shared_route_config_name(port, k)  # config_of_key
            key = string(1, k)
            scope_name = names.route_scope_name(port, k)
            out.append(_scope(scope_name, string(1, scope_name) + string(2, cfg)
                              + wire.ld(3, fragment + wire.ld(1, key))))
        return out

    def scopes_and_sources(self, service_keys: dict[str, ConfigKey], waypoint: ConfigKey
                           ) -> tuple[list[Encoded], dict[str, tuple[str, ...]]]:
        """(`scopes()`, `scope_sources(service_keys, waypoint)`) in one pass over the keys."""
        port, vh_host = self.port, self.vh_host
        ld, string, varint = wire.ld, wire.string, wire.varint
        key_heads: dict[int, bytes] = {}
        named, scoped_type, scoped_class = _named, types.SCOPED_ROUTE, scoped_route_pb2.ScopedRouteConfiguration
        fragment = _port_fragment(port)
        head = f"http.{port}|"  # names.route_scope_name(port, key) = head + key
        cfg_head = f"http.{port}/"  # names.service_route_config_name(port, host) = cfg_head + host
        w = str(waypoint)
        scopes = []
        sources: dict[str, tuple[str, ...]] = {}
        for k, vhs in self.owners.items():
            scope_name = head + k
            if len(vhs) == 1:  # the usual: the service's own RouteConfiguration; sources sorted({w, s})
                host = vh_host[vhs[0]]
                cfg = cfg_head + host
                s = str(service_keys[host])
                srcs: tuple[str, ...] = (w,) if s == w else (w, s) if w < s else (s, w)
            else:
                cfg = names.shared_route_config_name(port, k)
                srcs = tuple(sorted({w} | {str(service_keys[vh_host[v]]) for v in vhs}))
            raw_cfg, raw_key = cfg.encode(), k.encode()
            n = len(raw_cfg)
            key_head = key_heads.get(len(raw_key))  # key (3) up to the key string's bytes: by their length
            if key_head is None:
                full = ld(3, fragment + ld(1, string(1, k)))
                key_head = key_heads[len(raw_key)] = full[:len(full) - len(raw_key)]
            scopes.append(named(scoped_type, scope_name, b"".join((b"\x12", _LEN[n] if n < 0x80 else varint(n),
                                                                   raw_cfg, key_head, raw_key)),
                                scoped_class))  # (`_scope`: route_configuration_name (2), key (3))
            sources[scope_name] = srcs
        return scopes, sources

    def scope_sources(self, service_keys: dict[str, ConfigKey], waypoint: ConfigKey) -> dict[str, tuple[str, ...]]:
        """scope name -> sources (the waypoint and the services owning the key); `service_keys` by hostname."""
        w = str(waypoint)
        out: dict[str, tuple[str, ...]] = {}
        for k, vhs in self.owners.items():
            if len(vhs) == 1:  # the usual: sorted({w, s})
                s = str(service_keys[self.vh_host[vhs[0]]])
                srcs: tuple[str, ...] = (w,) if s == w else (w, s) if w < s else (s, w)
            else:
                srcs = tuple(sorted({w} | {str(service_keys[self.vh_host[v]]) for v in vhs}))
            out[names.route_scope_name(self.port, k)] = srcs
        return out


def plan(port: int, doms: dict[str, list[str]], vh_host: dict[str, str]) -> ScopePlan:
    owners = key_owners({vh: ds for vh, ds in doms.items() if ds})
    p = ScopePlan(port, vh_host, owners)
    for k, vhs in owners.items():
        if len(vhs) > 1:
            p.shared[names.shared_route_config_name(port, k)] = vhs
        else:
            p.own.add(vhs[0])
    return p
