"""An in-process fake Kubernetes API server speaking the real wire protocol, for tests of the kube source,
status writer, leader election and waypoint applier with the real `kubernetes` client.

It serves (HTTP/1.1 on 127.0.0.1:0): list with `resourceVersion` (and `limit`/`continue` paging); watch as
chunked JSON lines (ADDED / MODIFIED / DELETED / BOOKMARK, and `ERROR` with a 410 Status once events are
compacted away); GET/POST/PUT/DELETE on objects (409 on conflicts); PATCH (merge patch, with a
`metadata.resourceVersion` precondition answering 409 when stale; server-side apply) on objects and `/status`;
`labelSelector` (equality, existence, `!key`, `!=`) on list and watch. Faults: `fail(...)` (any status, e.g. 500 or 410, for N matching requests),
`drop_watches()` (abort open watch connections mid-stream), `uninstall(kind)` (404 like a missing CRD),
`compact()` (older resourceVersions answer 410). Every request is recorded in `requests`.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str  # "" for core
    version: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES = (
    Resource("Namespace", "", "v1", "namespaces", False),
    Resource("Service", "", "v1", "services", True),
    Resource("Pod", "", "v1", "pods", True),
    Resource("ServiceAccount", "", "v1", "serviceaccounts", True),
    Resource("ConfigMap", "", "v1", "configmaps", True),
    Resource("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
    Resource("Deployment", "apps", "v1", "deployments", True),
    Resource("Lease", "coordination.k8s.io", "v1", "leases", True),
    Resource("Gateway", "gateway.networking.k8s.io", "v1", "gateways", True),
    Resource("GatewayClass", "gateway.networking.k8s.io", "v1", "gatewayclasses", False),
    Resource("VirtualService", "networking.istio.io", "v1", "virtualservices", True),
    Resource("DestinationRule", "networking.istio.io", "v1", "destinationrules", True),
    Resource("ServiceEntry", "networking.istio.io", "v1", "serviceentries", True),
    Resource("AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies", True),
)
BY_KIND = {r.kind: r for r in RESOURCES}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class _Fault:
    method: str
    path_contains: str
    status: int
    times: int
    watch: bool | None  # None: both; True: only watch requests; False: only non-watch


@dataclass
class _State:
    rv: int = 100
    min_rv: int = 0  # events with rv <= min_rv are compacted away
    objects: dict[str, dict[tuple[str, str], dict]] = field(default_factory=dict)
    events: dict[str, list[tuple[int, str, dict]]] = field(default_factory=dict)
    installed: set[str] = field(default_factory=lambda: {r.kind for r in RESOURCES})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def selector_matches(obj: dict, selector: str | None) -> bool:
    """Kubernetes equality-based label selector: `a=b,c!=d,e,!f`."""
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeApiServer:
    def __init__(self) -> None:
        self._state = _State()
        self._cond = threading.Condition()
        self._faults: list[_Fault] = []
        self._drop_generation = 0
        self._bookmark_generation = 0
        self._stopping = False
        self._watch_sockets: set[socket.socket] = set()
        self.requests: list[Recorded] = []
        self.watch_count: dict[str, int] = {}
        self.list_count: dict[str, int] = {}
        outer = self

        class Handler(_Handler):
            server_ref = outer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-apiserver", daemon=True)

    # ---- lifecycle --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeApiServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._abort_watch_sockets()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def api_client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.host
        cfg.connection_pool_maxsize = 32
        return client.ApiClient(cfg)

    def write_kubeconfig(self, path) -> str:
        text = (
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters: [{{name: fake, cluster: {{server: '{self.host}'}}}}]\n"
            "users: [{name: fake, user: {token: fake-token}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: fake}}]\n"
        )
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return str(path)

    # ---- state manipulation (tests) ---------------------------------------------------------------
    def upsert(self, obj: dict) -> dict:
        """Create or update an object (kind/apiVersion/metadata required). Returns the stored copy."""
        res = BY_KIND[obj["kind"]]
        with self._cond:
            stored = self._store(res, copy.deepcopy(obj))
        return stored

    def delete(self, kind: str, namespace: str, name: str) -> None:
        res = BY_KIND[kind]
        with self._cond:
            self._remove(res, namespace if res.namespaced else "", name)

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        res = BY_KIND[kind]
        with self._cond:
            obj = self._state.objects.get(kind, {}).get((namespace if res.namespaced else "", name))
            return copy.deepcopy(obj) if obj else None

    def objects(self, kind: str) -> list[dict]:
        with self._cond:
            return [copy.deepcopy(o) for _, o in sorted(self._state.objects.get(kind, {}).items())]

    def compact(self) -> None:
        """Forget every event so far: watches from an older resourceVersion get 410 Gone."""
        with self._cond:
            self._state.min_rv = self._state.rv
            for evs in self._state.events.values():
                evs.clear()

    def fail(self, method: str, path_contains: str, status: int, times: int = 1, watch: bool | None = None) -> None:
        with self._cond:
            self._faults.append(_Fault(method, path_contains, status, times, watch))

    def drop_watches(self) -> None:
        """Abort every open watch connection mid-stream (no final chunk), like a dying API server."""
        with self._cond:
            self._drop_generation += 1
            self._cond.notify_all()
        self._abort_watch_sockets()

    def send_bookmarks(self) -> None:
        with self._cond:
            self._bookmark_generation += 1
            self._cond.notify_all()

    def uninstall(self, kind: str) -> None:
        with self._cond:
            self._state.installed.discard(kind)
            self._drop_generation += 1
            self._cond.notify_all()
        self._abort_watch_sockets()

    def install(self, kind: str) -> None:
        with self._cond:
            self._state.installed.add(kind)

    def open_watches(self) -> int:
        with self._cond:
            return len(self._watch_sockets)

    def requests_to(self, method: str, path_contains: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.method == method and path_contains in r.path]

    # ---- internals (call with self._cond held) ----------------------------------------------------
    def _abort_watch_sockets(self) -> None:
        with self._cond:
            socks = list(self._watch_sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _next_rv(self) -> str:
        self._state.rv += 1
        return str(self._state.rv)

    def _emit(self, res: Resource, type_: str, obj: dict) -> None:
        self._state.events.setdefault(res.kind, []).append((self._state.rv, type_, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _store(self, res: Resource, obj: dict) -> dict:
        md = obj.setdefault("metadata", {})
        ns = md.get("namespace", "default") if res.namespaced else ""
        if res.namespaced:
            md["namespace"] = ns
        bucket = self._state.objects.setdefault(res.kind, {})
        old = bucket.get((ns, md["name"]))
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        if res.kind == "Service" and isinstance(obj.get("spec"), dict) and not obj["spec"].get("clusterIP"):
            prev = (old or {}).get("spec", {}).get("clusterIP")
            ip = prev or f"10.96.{(self._state.rv // 250) % 250}.{self._state.rv % 250 + 1}"  # like the allocator
            obj["spec"]["clusterIP"], obj["spec"]["clusterIPs"] = ip, [ip]
        if old is None:
            md.setdefault("uid", str(uuid.uuid4()))
            md.setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
            md["generation"] = 1
        else:
            md["uid"] = old["metadata"]["uid"]
            md["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            spec_changed = {k: v for k, v in old.items() if k not in ("metadata", "status")} != \
                           {k: v for k, v in obj.items() if k not in ("metadata", "status")}
            md["generation"] = old["metadata"].get("generation", 1) + (1 if spec_changed else 0)
        md["resourceVersion"] = self._next_rv()
        md["managedFields"] = [{"manager": "kubectl", "operation": "Apply"}]
        bucket[(ns, md["name"])] = obj
        self._emit(res, "ADDED" if old is None else "MODIFIED", obj)
        return copy.deepcopy(obj)

    def _remove(self, res: Resource, ns: str, name: str) -> dict | None:
        obj = self._state.objects.get(res.kind, {}).pop((ns, name), None)
        if obj is not None:
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._emit(res, "DELETED", obj)
        return obj

    def _take_fault(self, method: str, path: str, is_watch: bool) -> int | None:
        with self._cond:
            for f in self._faults:
                if f.method == method and f.path_contains in path and f.times > 0 and \
                        (f.watch is None or f.watch == is_watch):
                    f.times -= 1
                    if f.times == 0:
                        self._faults.remove(f)
                    return f.status
        return None


def _parse_path(path: str) -> tuple[Resource | None, str, str | None, str | None]:
    """-> (resource, namespace, name, subresource)."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None, "", None, None
    ns = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest:
        return None, "", None, None
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    for r in RESOURCES:
        if r.group == group and r.version == version and r.plural == plural:
            return r, ns, name, sub
    return None, ns, name, sub


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


REASONS = {404: "NotFound", 409: "Conflict", 410: "Expired", 500: "InternalError", 403: "Forbidden",
           422: "Invalid", 415: "UnsupportedMediaType"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_ref: FakeApiServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---- plumbing --------------------------------------------------------------------------------
    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str = "") -> None:
        self._send_json(code, _status(code, REASONS.get(code, "Error"), message or REASONS.get(code, "error")))

    def _body(self) -> tuple[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if not raw:
            return ctype, None
        try:
            return ctype, json.loads(raw)
        except ValueError:
            import yaml

            return ctype, yaml.safe_load(raw)

    def _dispatch(self, method: str) -> None:
        srv = self.server_ref
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        ctype, body = self._body() if method in ("POST", "PUT", "PATCH") else ("", None)
        srv.requests.append(Recorded(method, url.path, query, ctype, copy.deepcopy(body)))
        is_watch = query.get("watch") in ("true", "1", "True")
        fault = srv._take_fault(method, url.path, is_watch)
        if fault is not None:
            self._error(fault, "injected fault")
            return
        res, ns, name, sub = _parse_path(url.path)
        if res is None:
            self._error(404, f"no route for {url.path}")
            return
        with srv._cond:
            installed = res.kind in srv._state.installed
        if not installed:
            self._error(404, "the server could not find the requested resource")
            return
        if method == "GET" and name is None:
            if is_watch:
                self._watch(res, ns, query)
            else:
                self._list(res, ns, query)
            return
        getattr(self, f"_{method.lower()}")(res, ns, name, sub, ctype, body, query)

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731
    do_PATCH = lambda self: self._dispatch("PATCH")  # noqa: E731
    do_DELETE = lambda self: self._dispatch("DELETE")  # noqa: E731

    # ---- list / watch ----------------------------------------------------------------------------
    def _list(self, res: Resource, ns: str, query: dict[str, str]) -> None:
        srv = self.server_ref
        with srv._cond:
            srv.list_count[res.kind] = srv.list_count.get(res.kind, 0) + 1
            items = [copy.deepcopy(o) for (ons, _), o in sorted(srv._state.objects.get(res.kind, {}).items())
                     if (not ns or ons == ns) and selector_matches(o, query.get("labelSelector"))]
            rv = str(srv._state.rv)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        items = items[start:start + limit] if limit else items[start:]
        for it in items:  # like the real server for built-in kinds: items carry no kind/apiVersion
            it.pop("kind", None)
            it.pop("apiVersion", None)
        self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta,
                              "items": items})

    def _watch(self, res: Resource, ns: str, query: dict[str, str]) -> None:
        srv = self.server_ref
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1", "True")
        timeout = float(query.get("timeoutSeconds") or 3600)
        with srv._cond:
            srv.watch_count[res.kind] = srv.watch_count.get(res.kind, 0) + 1
            gone = since and since < srv._state.min_rv
            drop_gen = srv._drop_generation
            book_gen = srv._bookmark_generation
            srv._watch_sockets.add(self.connection)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if gone:
                self._chunk({"type": "ERROR", "object": _status(410, "Expired", "too old resource version")})
                self._end_chunks()
                return
            import time

            deadline = time.monotonic() + timeout
            sent = since
            while True:
                with srv._cond:
                    while True:
                        pending = [e for e in srv._state.events.get(res.kind, []) if e[0] > sent and
                                   (not ns or e[2]["metadata"].get("namespace") == ns) and
                                   selector_matches(e[2], query.get("labelSelector"))]
                        if pending or srv._stopping or srv._drop_generation != drop_gen or \
                                srv._bookmark_generation != book_gen or time.monotonic() >= deadline:
                            break
                        srv._cond.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                    if srv._stopping or srv._drop_generation != drop_gen:
                        self.close_connection = True
                        return  # abort: no terminating chunk
                    bookmark = bookmarks and srv._bookmark_generation != book_gen
                    book_gen = srv._bookmark_generation
                    current = str(srv._state.rv)
                for rv, type_, obj in pending:
                    self._chunk({"type": type_, "object": obj})
                    sent = rv
                if bookmark:
                    self._chunk({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version,
                                                                "metadata": {"resourceVersion": current}}})
                    sent = max(sent, int(current))
                if time.monotonic() >= deadline:
                    self._end_chunks()
                    return
        except OSError:
            self.close_connection = True
        finally:
            with srv._cond:
                srv._watch_sockets.discard(self.connection)

    def _chunk(self, event: dict) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # ---- object verbs ----------------------------------------------------------------------------
    def _get(self, res, ns, name, sub, ctype, body, query) -> None:
        obj = self.server_ref.get(res.kind, ns, name)
        if obj is None:
            self._error(404, f"{res.plural} {name!r} not found")
        else:
            self._send_json(200, obj)

    def _post(self, res, ns, name, sub, ctype, body, query) -> None:
        srv = self.server_ref
        body = dict(body or {})
        body.setdefault("metadata", {})
        if res.namespaced:
            body["metadata"]["namespace"] = ns
        with srv._cond:
            if (ns, body["metadata"].get("name")) in srv._state.objects.get(res.kind, {}):
                self._error(409, f"{res.plural} {body['metadata'].get('name')!r} already exists")
                return
            stored = srv._store(res, body)
        self._send_json(201, stored)

    def _put(self, res, ns, name, sub, ctype, body, query) -> None:
        srv = self.server_ref
        with srv._cond:
            old = srv._state.objects.get(res.kind, {}).get((ns, name))
            if old is None:
                self._error(404, f"{res.plural} {name!r} not found")
                return
            want = (body.get("metadata") or {}).get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                self._error(409, "the object has been modified; please apply your changes to the latest version")
                return
            new = copy.deepcopy(body)
            new.setdefault("metadata", {})["name"] = name
            if res.namespaced:
                new["metadata"]["namespace"] = ns
            if sub == "status":
                new = dict(old, status=new.get("status"))
            elif "status" in old:
                new["status"] = old["status"]
            stored = srv._store(res, new)
        self._send_json(200, stored)

    def _patch(self, res, ns, name, sub, ctype, body, query) -> None:
        srv = self.server_ref
        with srv._cond:
            old = srv._state.objects.get(res.kind, {}).get((ns, name))
            if ctype == "application/apply-patch+yaml":
                if not query.get("fieldManager"):
                    self._error(422, "fieldManager is required for apply patch")
                    return
                base = copy.deepcopy(old) if old else {}
                new = merge_patch(base, body)
            elif ctype == "application/merge-patch+json":
                if old is None:
                    self._error(404, f"{res.plural} {name!r} not found")
                    return
                want = ((body or {}).get("metadata") or {}).get("resourceVersion")
                if want and want != old["metadata"]["resourceVersion"]:
                    self._error(409, "Operation cannot be fulfilled: the object has been modified; please apply "
                                     "your changes to the latest version and try again")
                    return
                new = merge_patch(copy.deepcopy(old), body)
            else:
                self._error(415, f"content type {ctype!r} not supported by this fake")
                return
            if sub == "status" and old is not None:
                new = dict(old, status=new.get("status"))
            new.setdefault("metadata", {})["name"] = name
            if res.namespaced:
                new["metadata"]["namespace"] = ns
            new["metadata"].pop("resourceVersion", None)
            stored = srv._store(res, new)
        self._send_json(200, stored)

    def _delete(self, res, ns, name, sub, ctype, body, query) -> None:
        srv = self.server_ref
        with srv._cond:
            obj = srv._remove(res, ns, name)
        if obj is None:
            self._error(404, f"{res.plural} {name!r} not found")
        else:
            self._send_json(200, _status(200, "", "deleted") | {"status": "Success"})
