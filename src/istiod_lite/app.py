"""The composition root: wires source -> store -> debounced push loop -> translate -> xds cache -> ADS
server, plus the operations HTTP server. Runs everything as named asyncio tasks and shuts down cleanly.

Between translate and the cache sit two filters: the TEST-ONLY corruption hook (only when asked for) and the
RejectionTracker (ops/nack.py), which keeps resources Envoy NACKed at their last good version until one of
their input objects changes, and turns each rejection into a "RejectedByEnvoy" Issue.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from istiod_lite.mesh_identity import WaypointSecrets
from istiod_lite.model.meta import ConfigKey, Issue
from istiod_lite.model.store import ConfigStore
from istiod_lite.ops.http import HttpServer, Response
from istiod_lite.ops.inputs import inputs_report
from istiod_lite.ops.metrics import Metrics
from istiod_lite.ops.nack import RejectionTracker
from istiod_lite.ops.status import IssueReporter
from istiod_lite.ops.syncz import syncz
from istiod_lite.settings import Settings, split_address
from istiod_lite.sources.files import DirectorySource
from istiod_lite.translate import TranslateOptions
from istiod_lite.translate.incremental import IncrementalTranslator
from istiod_lite.xds import types as xds_types
from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.debounce import Debouncer
from istiod_lite.xds.server import AdsServer, NackInfo

if TYPE_CHECKING:  # xds/tls.py imports `cryptography` (~10 MB): only when serving xDS over TLS
    from istiod_lite.xds.tls import TlsConfig

log = logging.getLogger("istiod_lite")
_ISSUES_ONLY = ConfigKey("", "", "load-issues")  # a change that only touched load issues (e.g. bad YAML)
_REJECTED = ConfigKey("", "", "rejected-by-envoy")  # a NACK pinned resources: push the last good versions


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
    def __init__(self, settings: Settings, *, tls: TlsConfig | None = None,
                 test_corrupt_file: str | None = None) -> None:
        """`tls`: serve xDS over TLS (mTLS + per-waypoint identity check when it has a client CA).
        `test_corrupt_file`: TEST ONLY, see ops/testhook_corrupt.py."""
        self.settings = settings
        self.tls = tls
        self.options = TranslateOptions(trust_domain=settings.trust_domain,
                                        hbone_upstream_port=settings.hbone_upstream_port,
                                        listen_address=settings.listen_address)
        self.identities = WaypointSecrets(settings)  # mesh CA -> SDS Secrets of HBONE waypoints (mesh_identity.py)
        self.debouncer = Debouncer(quiet=settings.debounce, max_delay=settings.debounce_max)
        self.store = ConfigStore(root_namespace=settings.root_namespace, domain_suffix=settings.domain_suffix,
                                 on_change=self._on_change)
        self.cache = SnapshotCache()
        self.metrics = Metrics()
        self.rejections = RejectionTracker()
        authorize = None
        if tls is not None and tls.mutual:
            from istiod_lite.xds.tls import PeerAuthorizer

            authorize = PeerAuthorizer(tls.trust_domain).check
        self.server = AdsServer(self.cache, group_for_node=waypoint_of_node, ack_timeout=settings.ack_timeout,
                                on_event=self._on_xds_event, on_nack=self._on_nack, authorize=authorize)
        self.corrupt = None
        if test_corrupt_file:
            from istiod_lite.ops.testhook_corrupt import CorruptHook

            self.corrupt = CorruptHook(test_corrupt_file)
        self.reporter = IssueReporter()
        self.resources: dict[str, xds_types.ResourceSet] = {}
        self.http = HttpServer({
            "/healthz/ready": self._ready,
            "/debug/config_dump": self._config_dump,
            "/debug/issues": lambda q: Response.json(self.reporter.as_json()),
            "/debug/inputs": self._inputs,
            "/debug/syncz": self._syncz,
            "/metrics": lambda q: Response(200, self.metrics.render(), self.metrics.content_type),
        })
        self.source = DirectorySource(settings.config_dir, settings.poll_interval) if settings.config_dir else None
        self.leader_duties = None
        if settings.kubeconfig or settings.in_cluster:
            self.source, self.leader_duties = _kube_parts(settings)
        self.pushes = 0
        self.ready = asyncio.Event()
        self.xds_port = 0
        self.http_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pushed_version = -1
        self._repush = False  # a NACK asks for a push although no input changed
        self._change_seen_at: float | None = None  # first change of the batch being debounced

    # ---- wiring -------------------------------------------------------------------------------------
    def _on_change(self, keys: set[ConfigKey]) -> None:
        """Store callback; sources may call it from worker threads, so hop onto the event loop."""
        batch = keys or {_ISSUES_ONLY}
        kube = bool(self.settings.kubeconfig or getattr(self.settings, "in_cluster", False))
        self.metrics.source_events.labels("kubernetes" if kube else "files").inc(len(batch))
        if self._change_seen_at is None:
            self._change_seen_at = time.monotonic()
        names = sorted(str(k) for k in keys)
        log.info("config change: %s", _describe(keys) if keys else "load issues only",
                 extra={"fields": {"event": "config_change", "objects": names[:50], "count": len(names)}})
        if self._loop is None:
            self.debouncer.add(batch)
        else:
            self._loop.call_soon_threadsafe(self.debouncer.add, batch)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        xds_host, xds_port = split_address(self.settings.xds_address, 15010)
        http_host, http_port = split_address(self.settings.http_address, 15014)
        credentials = None
        if self.tls is not None:
            from istiod_lite.xds.tls import server_credentials

            credentials = server_credentials(self.tls)
        self.server.hold()  # until the first push is computed (see AdsServer.hold)
        self.xds_port = await self.server.start(f"{xds_host}:{xds_port}" if ":" not in xds_host
                                                else f"[{xds_host}]:{xds_port}", credentials)
        self.http_port = await self.http.start(http_host, http_port)
        log.info("xds listening on %s:%d (%s)", xds_host, self.xds_port,
                 "plaintext" if self.tls is None else "mTLS, per-waypoint identity" if self.tls.mutual else "TLS")
        log.info("http listening on %s:%d", http_host, self.http_port)
        tasks = [asyncio.create_task(self._push_loop(), name="push-loop"),
                 asyncio.create_task(self._rotate_certificates(), name="cert-rotation")]
        if self.source is not None:
            tasks.append(asyncio.create_task(self.source.run(self.store), name=f"{type(self.source).__name__}"))
        if self.leader_duties is not None:
            tasks.append(asyncio.create_task(self.leader_duties.run(), name="leader-duties"))
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
        # The start-up objects live as long as the process: move them out of the garbage collector's view so
        # that full collections stay short and do not stall later pushes (measured: 200+ ms pauses at 5,000
        # services without this).
        gc.collect()
        gc.freeze()
        self.server.release()
        self._mark_ready()
        while True:
            batch = await self.debouncer.next_batch()
            if self.store.version == self._pushed_version and not self._repush:
                continue  # already pushed (changes that arrived before the start-up push)
            await self.push(batch)

    async def _rotate_certificates(self) -> None:
        """Mesh identity: push again when a waypoint certificate reaches half-life (new Secret over SDS)."""
        await self.ready.wait()
        while True:
            await asyncio.sleep(self.identities.seconds_until_rotation())
            if self.identities.due():
                await self.push({"certificate-rotation"})

    def _mark_ready(self) -> None:
        self.ready.set()
        if self.settings.ready_file:
            tmp = self.settings.ready_file + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"xds_port": self.xds_port, "http_port": self.http_port, "pid": os.getpid()}, fh)
            os.replace(tmp, self.settings.ready_file)

    async def push(self, cause: Any) -> None:
        """Translate the waypoints the changed objects reach and push what changed.

        Translation is incremental (translate/incremental.py): the store's snapshot names the objects changed
        since the previous push (the debounced batch), and only the resources depending on them are rebuilt;
        unchanged resources keep their Message objects. A waypoint none of the changed objects reaches gets the
        very same result object back and is skipped entirely (no cache work, nothing sent), unless the push
        has another cause (start-up, certificate rotation, a NACK, a released pin). The rest is O(changed)
        too: the cache is told which names may differ (`_changes`), the RejectionTracker reads the cache's
        per-type change record, and the metrics / issue reporting touch only what differs."""
        started = time.perf_counter()
        seen_at, self._change_seen_at = self._change_seen_at, None
        self._repush = False
        translator = getattr(self, "_translator", None)
        if translator is None:
            translator = self._translator = IncrementalTranslator(self.options)
            self._pushed_results: dict[str, Any] = {}
        config_only = all(isinstance(c, ConfigKey) for c in cause) and _REJECTED not in cause \
            and self.corrupt is None
        released_groups = set()
        for pin in self.rejections.release(c for c in cause if isinstance(c, ConfigKey)):
            released_groups.add(pin.group)
            log.info("released %s %s of %s: an input object changed, trying the new content",
                     xds_types.SHORT_NAMES.get(pin.type_url, pin.type_url), pin.name, pin.group,
                     extra={"fields": {"event": "pin_released", **pin.describe()}})
        snapshot = self.store.snapshot()
        self._pushed_version = snapshot.version
        issues: list[Issue] = list(snapshot.issues)
        groups = set()
        live = set()
        for wp in snapshot.waypoints():
            name = group_name(wp.key)
            live.add(name)
            result = translator.translate(snapshot, wp.key)
            issues.extend(result.issues)
            previous = self._pushed_results.get(name)
            if config_only and name not in released_groups and previous is result:
                continue  # nothing this waypoint reads changed
            self._pushed_results[name] = result
            self.resources[name] = result.resources
            served = self.identities.add(wp, result.resources.resources)  # SDS Secrets when serving HBONE
            if self.corrupt is not None:
                served = self.corrupt.apply(served)
            served = self.rejections.apply(name, served)
            changes = self._changes(name, previous, result, served)
            if self.cache.set_resources(name, served, changes):
                groups.add(name)
            self.rejections.served(name, served, self.cache.get(name), result.resources.sources)
        self.identities.retain(snapshot.waypoints())
        translator.retain(wp.key for wp in snapshot.waypoints())
        for name in set(self._pushed_results) - live:
            self._pushed_results.pop(name, None)
        for name in set(self.cache.groups()) - live:
            self.cache.remove_group(name)
            self.resources.pop(name, None)
            self.rejections.forget_group(name)
            groups.add(name)
        issues.extend(self.rejections.issues())
        self.reporter.update(issues)
        if self.leader_duties is not None:
            self.leader_duties.submit(snapshot, issues)
        self.metrics.snapshot_seen(snapshot, issues)
        self.metrics.pins_changed(self.rejections.pinned())
        if groups:
            self.metrics.waypoints_changed(groups, _reason(cause), now=seen_at)
            await self.server.notify(groups)
        self.metrics.push_duration.observe(time.perf_counter() - started)
        self.pushes += 1
        elapsed = (time.perf_counter() - started) * 1000
        log.info("push %d: snapshot v%d, %d waypoint(s) changed %s in %.1f ms (cause: %s)", self.pushes,
                 snapshot.version, len(groups), sorted(groups), elapsed, _describe(cause),
                 extra={"fields": {"event": "push", "push": self.pushes, "snapshot_version": snapshot.version,
                                   "waypoints": sorted(groups), "reason": _reason(cause),
                                   "cause": sorted(str(c) for c in cause)[:50], "duration_ms": round(elapsed, 2)}})

    def _changes(self, name: str, previous: Any, result: Any, served: Any) -> dict[str, set[str]] | None:
        """The cache hint for this push of waypoint `name`: type URL -> names whose served message may differ
        from what the previous push handed the cache (None: check everything). Translation says what it
        changed relative to its previous result (`TranslateResult.changes`), which is `previous` (the app
        translates each waypoint once per push and hands every new result to the cache); the Secrets (a few,
        the same objects until rotation) are always listed, and so are the names pinned now or at the previous
        push (ops/nack.py)."""
        if previous is None or self.corrupt is not None:
            return None
        if result is previous:
            changes: dict[str, set[str]] = {}
        elif result.changes is None:
            return None
        else:
            changes = {t: set(names) for t, names in result.changes.items()}
        if xds_types.SECRET in served:
            changes.setdefault(xds_types.SECRET, set()).update(served[xds_types.SECRET])
        for type_url, pinned in self.rejections.touched(name):
            changes.setdefault(type_url, set()).add(pinned)
        return changes

    # ---- xDS callbacks (run on the event loop, from the ADS server) ---------------------------------
    def _on_xds_event(self, name: str, data: dict[str, Any]) -> None:
        self.metrics.on_event(name, data)
        if name == "ack":
            self.rejections.acked(data["group"], data["type_url"], data.get("upserts", {}), data.get("removed", ()))

    def _on_nack(self, nack: NackInfo) -> None:
        pins = self.rejections.rejected(nack)
        for pin in pins:
            log.error("Envoy %s rejected %s %s of waypoint %s (objects: %s); serving %s: %s", nack.node_id,
                      xds_types.SHORT_NAMES.get(pin.type_url, pin.type_url), pin.name, pin.group,
                      ", ".join(pin.sources) or "?", "its last good version" if pin.good is not None
                      else "nothing in its place (never accepted)", pin.error,
                      extra={"fields": {"event": "rejected_by_envoy", **pin.describe()}})
        if pins:
            self._repush = True
            self.debouncer.add({_REJECTED})

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
                    json_format.MessageToDict(xds_types.as_message(rs.resources[t][n]),
                                              preserving_proto_field_name=True)
                    for n in sorted(rs.resources[t])
                ]
                for t in xds_types.PUSH_ORDER if t in rs.resources
            }
        return Response.json(out[wanted] if wanted else out)

    def _syncz(self, query: dict[str, str]) -> Response:
        return Response.json(syncz(self.server.connections(), [p.describe() for p in self.rejections.pinned()]))

    def _inputs(self, query: dict[str, str]) -> Response:
        status, body = inputs_report(self.resources, query.get("waypoint"))
        return Response.json(body, status)


def _reason(cause: Any) -> str:
    kinds = sorted({c.kind for c in cause if isinstance(c, ConfigKey) and c.kind})
    if kinds:
        return ",".join(kinds)
    return "startup" if "startup" in cause else "rejected" if _REJECTED in cause else "other"


def _describe(cause: Any) -> str:
    items = sorted(str(c) for c in cause if c not in (_ISSUES_ONLY, _REJECTED))
    if _REJECTED in cause:
        items.append("Envoy rejected resources (serving last good versions)")
    if len(items) > 5:
        return ", ".join(items[:5]) + f" and {len(items) - 5} more"
    return ", ".join(items) or "config change"


def _kube_parts(settings: Settings) -> tuple[Any, Any]:
    """The Kubernetes source and the leader's duties (status, waypoint objects), sharing one API client."""
    import socket

    from istiod_lite.ops.leader import LeaderDuties, LeaderElector
    from istiod_lite.ops.waypoint_objects import WaypointOptions
    from istiod_lite.sources.kube import KubeSource, api_client_from
    from istiod_lite.sources.kube_kinds import WAYPOINT_DEPLOYMENTS

    api = api_client_from(settings.kubeconfig)
    xds_host, xds_port = split_address(settings.waypoint_xds_address, 15010)
    elector = LeaderElector(api, settings.pod_namespace, "istiod-lite-leader",
                            settings.pod_name or socket.gethostname())
    duties = LeaderDuties(elector, api, WaypointOptions(image=settings.waypoint_image, xds_host=xds_host,
                                                        xds_port=xds_port),
                          classes=settings.gateway_classes,
                          readiness_source=KubeSource(api, kinds=(WAYPOINT_DEPLOYMENTS,)))
    return KubeSource(api), duties


async def serve(settings: Settings) -> None:
    app = App(settings)
    await app.run()
