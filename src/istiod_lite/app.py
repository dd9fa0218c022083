"""The composition root: wires source -> store -> debounced push loop -> translate -> xds cache -> ADS
server, plus the operations HTTP server. Runs everything as named asyncio tasks and shuts down cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

from google.protobuf import json_format

from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.store import ConfigStore
from istiod_lite.ops.http import HttpServer, Response
from istiod_lite.ops.metrics import Metrics
from istiod_lite.ops.status import IssueReporter
from istiod_lite.settings import Settings, split_address
from istiod_lite.sources.files import DirectorySource
from istiod_lite.translate import TranslateOptions, translate
from istiod_lite.xds import types as xds_types
from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.debounce import Debouncer
from istiod_lite.xds.server import AdsServer

log = logging.getLogger("istiod_lite")
_ISSUES_ONLY = ConfigKey("", "", "load-issues")  # a change that only touched load issues (e.g. bad YAML)


def waypoint_of_node(node: Any) -> str | None:
    """The waypoint ("ns/name") a connecting Envoy serves: node.metadata WAYPOINT, else node.id "ns/name~..."."""
    fields = node.metadata.fields if node.HasField("metadata") else {}
    if "WAYPOINT" in fields and fields["WAYPOINT"].string_value:
        value = fields["WAYPOINT"].string_value
    else:
        value = node.id.split("~", 1)[0]
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name or "/" in name:
        return None
    return value


def group_name(key: ConfigKey) -> str:
    return f"{key.namespace}/{key.name}"


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.options = TranslateOptions()
        self.debouncer = Debouncer(quiet=settings.debounce, max_delay=settings.debounce_max)
        self.store = ConfigStore(root_namespace=settings.root_namespace, domain_suffix=settings.domain_suffix,
                                 on_change=self._on_change)
        self.cache = SnapshotCache()
        self.metrics = Metrics()
        self.server = AdsServer(self.cache, group_for_node=waypoint_of_node, ack_timeout=settings.ack_timeout,
                                on_event=self.metrics.on_event)
        self.reporter = IssueReporter()
        self.resources: dict[str, xds_types.ResourceSet] = {}
        self.http = HttpServer({
            "/healthz/ready": self._ready,
            "/debug/config_dump": self._config_dump,
            "/debug/issues": lambda q: Response.json(self.reporter.as_json()),
            "/debug/syncz": self._syncz,
            "/metrics": lambda q: Response(200, self.metrics.render(), self.metrics.content_type),
        })
        self.source = DirectorySource(settings.config_dir, settings.poll_interval) if settings.config_dir else None
        self.pushes = 0
        self.ready = asyncio.Event()
        self.xds_port = 0
        self.http_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pushed_version = -1

    # ---- wiring -------------------------------------------------------------------------------------
    def _on_change(self, keys: set[ConfigKey]) -> None:
        """Store callback; sources may call it from worker threads, so hop onto the event loop."""
        batch = keys or {_ISSUES_ONLY}
        if self._loop is None:
            self.debouncer.add(batch)
        else:
            self._loop.call_soon_threadsafe(self.debouncer.add, batch)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        xds_host, xds_port = split_address(self.settings.xds_address, 15010)
        http_host, http_port = split_address(self.settings.http_address, 15014)
        self.xds_port = await self.server.start(f"{xds_host}:{xds_port}" if ":" not in xds_host
                                                else f"[{xds_host}]:{xds_port}")
        self.http_port = await self.http.start(http_host, http_port)
        log.info("xds listening on %s:%d", xds_host, self.xds_port)
        log.info("http listening on %s:%d", http_host, self.http_port)
        tasks = [asyncio.create_task(self._push_loop(), name="push-loop")]
        if self.source is not None:
            tasks.append(asyncio.create_task(self.source.run(self.store), name="directory-source"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.http.stop()
            await self.server.stop()

    async def _push_loop(self) -> None:
        if self.source is not None:
            while not self.source.synced:
                await asyncio.sleep(0.01)
        await self.push({"startup"})
        self._mark_ready()
        while True:
            batch = await self.debouncer.next_batch()
            if self.store.version == self._pushed_version:
                continue  # already pushed (changes that arrived before the start-up push)
            await self.push(batch)

    def _mark_ready(self) -> None:
        self.ready.set()
        if self.settings.ready_file:
            tmp = self.settings.ready_file + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"xds_port": self.xds_port, "http_port": self.http_port, "pid": os.getpid()}, fh)
            os.replace(tmp, self.settings.ready_file)

    async def push(self, cause: Any) -> None:
        """Translate every waypoint from the current snapshot and push what changed."""
        started = time.perf_counter()
        snapshot = self.store.snapshot()
        self._pushed_version = snapshot.version
        issues: list[Issue] = list(snapshot.issues)
        groups = set()
        live = set()
        for wp in snapshot.waypoints():
            name = group_name(wp.key)
            live.add(name)
            result = translate(snapshot, wp.key, self.options)
            issues.extend(result.issues)
            self.resources[name] = result.resources
            if self.cache.set_resources(name, result.resources.resources):
                groups.add(name)
        for name in set(self.cache.groups()) - live:
            self.cache.remove_group(name)
            self.resources.pop(name, None)
            groups.add(name)
        self.reporter.update(issues)
        self.metrics.snapshot_seen(snapshot, issues)
        if groups:
            self.metrics.waypoints_changed(groups, _reason(cause))
            await self.server.notify(groups)
        self.metrics.push_duration.observe(time.perf_counter() - started)
        self.pushes += 1
        log.info("push %d: snapshot v%d, %d waypoint(s) changed %s in %.1f ms (cause: %s)", self.pushes,
                 snapshot.version, len(groups), sorted(groups), (time.perf_counter() - started) * 1000,
                 _describe(cause))

    # ---- HTTP handlers -----------------------------------------------------------------------------
    def _ready(self, query: dict[str, str]) -> Response:
        if self.ready.is_set():
            return Response.text("ready\n")
        return Response.text("not ready\n", 503)

    def _config_dump(self, query: dict[str, str]) -> Response:
        wanted = query.get("waypoint")
        names = [wanted] if wanted else sorted(self.resources)
        out: dict[str, Any] = {}
        for name in names:
            rs = self.resources.get(name)
            if rs is None:
                return Response.json({"error": f"unknown waypoint {name!r}",
                                      "waypoints": sorted(self.resources)}, 404)
            out[name] = {
                xds_types.SHORT_NAMES.get(t, t): [
                    json_format.MessageToDict(rs.resources[t][n], preserving_proto_field_name=True)
                    for n in sorted(rs.resources[t])
                ]
                for t in xds_types.PUSH_ORDER if t in rs.resources
            }
        return Response.json(out[wanted] if wanted else out)

    def _syncz(self, query: dict[str, str]) -> Response:
        return Response.json([_as_dict(c) for c in self.server.connections()])


def _as_dict(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {k: _as_dict(v) for k, v in dataclasses.asdict(obj).items()}
    return obj


def _reason(cause: Any) -> str:
    kinds = sorted({c.kind for c in cause if isinstance(c, ConfigKey) and c.kind})
    return ",".join(kinds) if kinds else "startup" if "startup" in cause else "other"


def _describe(cause: Any) -> str:
    items = sorted(str(c) for c in cause if c != _ISSUES_ONLY)
    if len(items) > 5:
        return ", ".join(items[:5]) + f" and {len(items) - 5} more"
    return ", ".join(items) or "config change"


async def serve(settings: Settings) -> None:
    app = App(settings)
    await app.run()
