"""KubeSource: feeds the store from a Kubernetes API server, as robustly as a Kubernetes controller.

One informer per kind (sources.kube_kinds.KINDS). Each one lists (paged), hands the full list to the store
with `replace_origin("kube:<Kind>", ...)` (so a re-list neither loses nor duplicates a change: the store
diffs), then watches from the list's resourceVersion with bookmarks, applying each event with `upsert` /
`delete`. A `410 Gone` (HTTP status or an ERROR event in the stream) means the resourceVersion expired:
re-list. A dropped connection, a server error or a clean end of the watch restarts the watch from the
last resourceVersion, after an exponential backoff with jitter when no progress was made. A CRD that is
not installed (404 on list) is reported once (log + Issue) and looked for again every `crd_retry` seconds.

Blocking client calls run on the source's own thread pool (one list and one watch thread per kind at
most, so ten long watches never starve asyncio's default executor); the store is only touched from the
event loop. Sleeps and randomness are injectable for tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from istiod_lite.model.meta import ConfigKey, Issue, error
from istiod_lite.model.parse import object_key
from istiod_lite.sources.base import ConfigSink
from istiod_lite.sources.kube_kinds import KINDS, KindSpec, normalize, resource_version

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
POOL_SIZE = 2 * (len(KINDS) + 1) + 8  # +1: the waypoint Deployment informer


class Gone(Exception):
    """The resourceVersion we asked for is too old (410): re-list."""


class Missing(Exception):
    """The resource is not served (404): a CRD that is not installed."""


class Backoff:
    """Exponential backoff with full jitter: delay in [base*(1-jitter), base], base doubling to `maximum`."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0, jitter: float = 0.5,
                 rand: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self.factor, self.jitter, self.rand = initial, maximum, factor, jitter, rand
        self._base = initial

    def next(self) -> float:
        delay = self._base * (1 - self.jitter * self.rand())
        self._base = min(self.maximum, self._base * self.factor)
        return delay

    def reset(self) -> None:
        self._base = self.initial


def api_client_from(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from a kubeconfig file, else the in-cluster service account."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = POOL_SIZE  # one long watch per kind, plus lists, status, leases, applies
    return client.ApiClient(cfg)


@dataclass
class InformerStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    errors: int = 0
    gone: int = 0


class _Stream:
    """Holds the open watch response so another thread can abort it."""

    def __init__(self) -> None:
        self.resp: Any = None
        self.closed = False

    def abort(self) -> None:
        self.closed = True
        resp = self.resp
        if resp is None:
            return
        try:
            sock = getattr(getattr(resp, "connection", None), "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            resp.close()
        except Exception:  # noqa: BLE001 - best effort while aborting
            pass


class Informer:
    """List + watch of one kind, with a local cache (raw objects by key) mirrored into the sink."""

    def __init__(self, spec: KindSpec, api_client: Any, executor: ThreadPoolExecutor, *, sleep: Sleep,
                 rand: Callable[[], float], watch_timeout: float, crd_retry: float, page_size: int,
                 backoff_initial: float, backoff_max: float, connect_timeout: float) -> None:
        self.spec = spec
        self._list_fn = spec.list_function(api_client)
        self._executor = executor
        self._sleep = sleep
        self._rand = rand
        self.watch_timeout = watch_timeout
        self.crd_retry = crd_retry
        self.page_size = page_size
        self.connect_timeout = connect_timeout
        self.backoff = Backoff(backoff_initial, backoff_max, rand=rand)
        self.cache: dict[ConfigKey, dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.synced = False
        self.missing = False
        self.stats = InformerStats()

    # ---- the loop -----------------------------------------------------------------------------------
    async def run(self, sink: ConfigSink) -> None:
        loop = asyncio.get_running_loop()
        need_list = True
        while True:
            if need_list:
                try:
                    raw_items, rv = await loop.run_in_executor(self._executor, self._list_blocking)
                except Missing:
                    self._report_missing(sink)
                    await self._sleep(self.crd_retry)
                    continue
                except Exception as exc:  # noqa: BLE001 - any client/transport failure: back off and retry
                    self.stats.errors += 1
                    delay = self.backoff.next()
                    log.warning("%s: list failed (%s); retrying in %.1fs", self.spec.kind, _describe(exc), delay)
                    await self._sleep(delay)
                    continue
                self._apply_list(sink, raw_items, rv)
                need_list = False
            try:
                progressed = await self._watch_once(sink)
            except Gone:
                self.stats.gone += 1
                log.info("%s: resourceVersion %s expired; re-listing", self.spec.kind, self.resource_version)
                need_list = True
                continue
            except Missing:
                need_list = True
                continue
            except Exception as exc:  # noqa: BLE001
                self.stats.errors += 1
                delay = self.backoff.next()
                log.warning("%s: watch failed (%s); re-watching in %.1fs", self.spec.kind, _describe(exc), delay)
                await self._sleep(delay)
                continue
            if progressed:
                self.backoff.reset()
            else:
                await self._sleep(self.backoff.next())

    # ---- list ---------------------------------------------------------------------------------------
    def _list_blocking(self) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size, "_preload_content": False,
                                      "_request_timeout": (self.connect_timeout, 60)}
            if token:
                kwargs["_continue"] = token
            try:
                resp = self._list_fn(**kwargs)
                body = json.loads(resp.data)
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 404:
                    raise Missing() from exc
                if status == 410 and token:  # the continue token expired: start the list again
                    items, token = [], None
                    continue
                raise
            items.extend(body.get("items") or [])
            md = body.get("metadata") or {}
            token = md.get("continue")
            if not token:
                self.stats.lists += 1
                return items, str(md.get("resourceVersion") or "")

    def _apply_list(self, sink: ConfigSink, raw_items: list[dict[str, Any]], rv: str) -> None:
        cache: dict[ConfigKey, dict[str, Any]] = {}
        for raw in raw_items:
            obj = normalize(self.spec, raw)
            key = object_key(obj)
            if key is not None:
                cache[key] = obj
        if self.missing:
            log.info("%s: now served by the API server", self.spec.kind)
        self.missing = False
        self.cache = cache
        self.resource_version = rv
        sink.replace_origin(self.spec.origin, [(o, None) for _, o in sorted(cache.items())], [])
        if not self.synced:
            log.info("%s: synced (%d objects, resourceVersion %s)", self.spec.kind, len(cache), rv)
        self.synced = True

    def _report_missing(self, sink: ConfigSink) -> None:
        if not self.missing:
            log.warning("%s (%s) is not served by the API server (CRD not installed?); looking again every %gs",
                        self.spec.kind, self.spec.api_version, self.crd_retry)
            key = ConfigKey("CustomResourceDefinition", "", f"{self.spec.plural}.{self.spec.group}")
            issue: Issue = error(key, "", f"{self.spec.kind} ({self.spec.api_version}) is not installed in the "
                                          f"cluster; its objects are ignored until it is", "CrdMissing")
            self.cache = {}
            sink.replace_origin(self.spec.origin, [], [issue])
        self.missing = True
        self.synced = True  # an empty kind is a synced kind

    # ---- watch --------------------------------------------------------------------------------------
    async def _watch_once(self, sink: ConfigSink) -> bool:
        """One watch request. Returns whether it made progress (any event); raises Gone/Missing/errors."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stream = _Stream()

        def post(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed while the thread was finishing
                pass

        timeout = int(self.watch_timeout * (1 + self._rand()))
        fut = loop.run_in_executor(self._executor, self._watch_blocking, self.resource_version, timeout, post, stream)
        progressed = False
        try:
            while True:
                what, value = await queue.get()
                if what == "event":
                    progressed = True
                    self._apply_event(sink, value)
                elif what == "end":
                    if value is not None:
                        raise value
                    return progressed
        finally:
            stream.abort()
            if not fut.done():
                fut.cancel()

    def _watch_blocking(self, rv: str | None, timeout: int, post: Callable[[tuple[str, Any]], None],
                        stream: _Stream) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        failure: BaseException | None = None
        try:
            self.stats.watches += 1
            try:
                resp = self._list_fn(watch=True, resource_version=rv or None, allow_watch_bookmarks=True,
                                     timeout_seconds=timeout, _preload_content=False,
                                     _request_timeout=(self.connect_timeout, timeout + 30))
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 410:
                    raise Gone() from exc
                if status == 404:
                    raise Missing() from exc
                raise
            stream.resp = resp
            if stream.closed:
                stream.abort()
                return
            for line in iter_resp_lines(resp):
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    obj = event.get("object") or {}
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error event: {obj.get('code')} {obj.get('message')}")
                post(("event", event))
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            failure = exc if not stream.closed else None
        finally:
            post(("end", failure))

    def _apply_event(self, sink: ConfigSink, event: dict[str, Any]) -> None:
        type_ = event.get("type")
        raw = event.get("object")
        rv = resource_version(raw)
        if type_ == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        if not isinstance(raw, dict):
            return
        obj = normalize(self.spec, raw)
        key = object_key(obj)
        if rv:
            self.resource_version = rv
        if key is None:
            return
        self.stats.events += 1
        if type_ in ("ADDED", "MODIFIED"):
            if self.cache.get(key) != obj:
                self.cache[key] = obj
                sink.upsert(self.spec.origin, obj)
        elif type_ == "DELETED":
            if self.cache.pop(key, None) is not None:
                sink.delete(self.spec.origin, key)


class KubeSource:
    """The Kubernetes source (sources.base.Source): one Informer per kind, all feeding one sink."""

    def __init__(self, api_client: Any, kinds: tuple[KindSpec, ...] = KINDS, *, sleep: Sleep = asyncio.sleep,
                 rand: Callable[[], float] = random.random, watch_timeout: float = 300.0, crd_retry: float = 30.0,
                 page_size: int = 500, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 connect_timeout: float = 10.0) -> None:
        self.api_client = api_client
        self._executor = ThreadPoolExecutor(max_workers=2 * len(kinds) + 1, thread_name_prefix="kube-informer")
        self.informers = {
            k.kind: Informer(k, api_client, self._executor, sleep=sleep, rand=rand, watch_timeout=watch_timeout,
                             crd_retry=crd_retry, page_size=page_size, backoff_initial=backoff_initial,
                             backoff_max=backoff_max, connect_timeout=connect_timeout)
            for k in kinds
        }

    @property
    def synced(self) -> bool:
        return all(i.synced for i in self.informers.values())

    async def run(self, sink: ConfigSink) -> None:
        tasks = [asyncio.create_task(i.run(sink), name=f"informer-{kind}") for kind, i in self.informers.items()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {exc}"[:300]
