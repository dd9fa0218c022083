"""VirtualService behaviour through the real Envoy waypoint: one istiod-lite + Envoy (Delta ADS) + sample
backends per module; each test rewrites the VirtualService file and waits until a version-sentinel route
answers, so the config under test is applied before any request counts (no restarts between tests).

Covers: header/query/method matching and first-match order, weighted split with weights not summing to 100,
redirect and direct response, rewrite, request/response header edits, retries (retryOn 5xx / status codes,
perTryTimeout), timeout -> 504, fault delay/abort at 100% and partial percentages, mirroring, CORS preflight,
TCP routing through a Gateway TCP listener.
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testsupport import manifests
from testsupport.apps import Backend, BackendFactory, Istiod, IstiodFactory
from testsupport.envoy import Envoy, EnvoyFactory
from testsupport.http import KeepAliveClient, request
from testsupport.procs import free_port, wait_until

NS = "default"
HOST = "reviews"
_versions = itertools.count(1)


@dataclass
class Stack:
    config_dir: Path
    http_port: int
    tcp_port: int
    backends: dict[str, Backend]
    istiod: Istiod
    envoy: Envoy

    def diagnostics(self) -> str:
        return (f"--- istiod log ---\n{self.istiod.proc.log_tail(40)}\n"
                f"--- envoy log ---\n{self.envoy.proc.log_tail(20)}")

    def apply_http(self, rules: list[dict[str, Any]], host: str = HOST) -> None:
        """Replace the VirtualService of `host` by `rules` (after a version sentinel) and wait until applied."""
        version = str(next(_versions))
        sentinel = {"name": "sentinel", "match": [{"headers": {"x-vs-version": {"exact": version}}}],
                    "directResponse": {"status": 200, "body": {"string": f"v{version}"}}}
        vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
              "metadata": {"name": host, "namespace": NS},
              "spec": {"hosts": [host], "http": [sentinel, *rules]}}
        manifests.write_docs(self.config_dir / f"vs-{host}.yaml", [vs])

        def applied() -> bool:
            resp = request(self.http_port, "/", host=host, headers={"x-vs-version": version})
            return resp.status == 200 and resp.text == f"v{version}"

        wait_until(applied, 15, message=lambda: f"VirtualService version {version}\n{self.diagnostics()}")

    def get(self, path: str = "/", headers: dict[str, str] | None = None, method: str = "GET", host: str = HOST):
        return request(self.http_port, path, host=host, headers=headers, method=method)


def _tcp_service(name: str, port: int, versions: dict[str, int]) -> list[dict[str, Any]]:
    docs = manifests.kube_service(name, versions, port=port, cluster_ip="10.96.0.20")
    for d in docs:
        for p in (d.get("spec") or {}).get("ports") or d.get("ports") or []:
            if isinstance(p, dict) and "name" in p:
                p["name"] = "tcp"
    return docs


def _tcp_vs(weights: dict[str, int], port: int) -> dict[str, Any]:
    route = [{"destination": {"host": "echo-tcp", "subset": s}, "weight": w} for s, w in weights.items()]
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "echo-tcp", "namespace": NS},
            "spec": {"hosts": ["echo-tcp"], "tcp": [{"match": [{"port": port}], "route": route}]}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vs-behaviour")
    backends_f, istiod_f, envoy_f = BackendFactory(workdir), IstiodFactory(workdir), EnvoyFactory(workdir)
    try:
        backends = backends_f.many("reviews-v1", "reviews-v2", "mirror", "tcp-a", "tcp-b")
        http_port, tcp_port = free_port(), free_port()
        gateway = manifests.waypoint_gateway(http_port)
        gateway["spec"]["listeners"] = [{"name": "http", "port": http_port, "protocol": "HTTP"},
                                        {"name": "tcp", "port": tcp_port, "protocol": "TCP"}]
        gateway["spec"]["addresses"] = [{"type": "IPAddress", "value": "127.0.0.1"}]
        config_dir = workdir / "config"
        manifests.write_files(config_dir, {
            "waypoint.yaml": [manifests.namespace(), gateway],
            "reviews.yaml": manifests.kube_service(HOST, {"v1": backends["reviews-v1"].port,
                                                          "v2": backends["reviews-v2"].port}),
            "reviews-dr.yaml": [manifests.destination_rule_subsets(HOST, ["v1", "v2"])],
            "mirror.yaml": manifests.kube_service("mirror", {"v1": backends["mirror"].port}, cluster_ip="10.96.0.11"),
            "echo-tcp.yaml": _tcp_service("echo-tcp", tcp_port, {"a": backends["tcp-a"].port,
                                                                 "b": backends["tcp-b"].port}),
            "echo-tcp-dr.yaml": [manifests.destination_rule_subsets("echo-tcp", ["a", "b"])],
            "echo-tcp-vs.yaml": [_tcp_vs({"a": 100}, tcp_port)],
        })
        istiod = istiod_f(config_dir)
        envoy = envoy_f.for_waypoint(f"{NS}/waypoint", istiod.xds_port, delta=True, name="envoy-vs")
        st = Stack(config_dir, http_port, tcp_port, backends, istiod, envoy)
        try:
            envoy.wait_listener(http_port, timeout=30)
            wait_until(lambda: request(http_port, host=HOST).status == 200, 30,
                       message=lambda: f"a first routed request\n{st.diagnostics()}")
        except Exception:
            print(st.diagnostics())
            raise
        yield st
    finally:
        envoy_f.stop_all()
        istiod_f.stop_all()
        backends_f.stop_all()


def _v(subset: str, **extra: Any) -> dict[str, Any]:
    return {"destination": {"host": HOST, "subset": subset}, **extra}


# ---- matching -----------------------------------------------------------------------------------------
def test_matches_and_first_match_order(stack: Stack) -> None:
    tag = lambda name: {"response": {"set": {"x-rule": name}}}  # noqa: E731
    stack.apply_http([
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "headers": tag("jason"),
         "route": [_v("v2")]},
        {"name": "post-flag", "match": [{"queryParams": {"flag": {}}, "method": {"exact": "POST"}}],
         "headers": tag("post-flag"), "route": [_v("v2")]},
        {"name": "either", "match": [{"uri": {"prefix": "/a"}}, {"uri": {"regex": "/b/[0-9]+"}}],
         "headers": tag("either"), "route": [_v("v1")]},
        {"name": "external", "match": [{"withoutHeaders": {"x-internal": {"exact": "true"}},
                                        "uri": {"prefix": "/ext"}}], "headers": tag("external"), "route": [_v("v2")]},
        {"name": "rest", "headers": tag("rest"), "route": [_v("v1")]},
    ])
    r = stack.get("/a", headers={"end-user": "jason"})  # matches jason and either: the first rule wins
    assert (r.headers.get("x-rule"), r.served_by) == ("jason", "reviews-v2")
    assert stack.get("/x", headers={"end-user": "jasonx"}).headers.get("x-rule") == "rest"  # exact, not prefix
    assert stack.get("/q?flag=1", method="POST").headers.get("x-rule") == "post-flag"
    assert stack.get("/q?flag", method="POST").headers.get("x-rule") == "post-flag"  # present, empty value
    assert stack.get("/q?flag=1").headers.get("x-rule") == "rest"  # AND within a block: method must match too
    assert stack.get("/q?other=1", method="POST").headers.get("x-rule") == "rest"
    assert stack.get("/b/42").headers.get("x-rule") == "either"  # OR of blocks
    assert stack.get("/b/x").headers.get("x-rule") == "rest"  # RE2 full match
    assert stack.get("/ext").headers.get("x-rule") == "external"  # header absent counts as "without"
    assert stack.get("/ext", headers={"x-internal": "false"}).headers.get("x-rule") == "external"
    assert stack.get("/ext", headers={"x-internal": "true"}).headers.get("x-rule") == "rest"


def test_weights_not_summing_to_100_split_proportionally(stack: Stack) -> None:
    stack.apply_http([{"route": [_v("v1", weight=1), _v("v2", weight=3)]}])  # Istio passes 1/3 through: 25/75
    counts: dict[str, int] = {}
    with KeepAliveClient(stack.http_port, host=HOST) as client:
        for _ in range(200):
            resp = client.request("/split")
            counts[resp.served_by or str(resp.status)] = counts.get(resp.served_by or str(resp.status), 0) + 1
    assert set(counts) == {"reviews-v1", "reviews-v2"}, counts
    # 25% of 200 = 50, sigma 6.1: +-25 is 4 sigma
    assert 25 <= counts["reviews-v1"] <= 75, counts


# ---- redirect, direct response, rewrite, headers -------------------------------------------------------
def test_redirect_and_direct_response(stack: Stack) -> None:
    stack.apply_http([
        {"match": [{"uri": {"exact": "/old"}}], "redirect": {"uri": "/new", "authority": "new.example.com"}},
        {"match": [{"uri": {"prefix": "/tls"}}], "redirect": {"scheme": "https", "port": 8443, "redirectCode": 308}},
        {"match": [{"uri": {"prefix": "/same"}}],
         "redirect": {"authority": "other.example.com", "derivePort": "FROM_REQUEST_PORT", "redirectCode": 302}},
        {"match": [{"uri": {"prefix": "/teapot"}}], "directResponse": {"status": 418, "body": {"string": "short"}},
         "headers": {"response": {"set": {"x-direct": "yes"}}}},
        {"match": [{"uri": {"prefix": "/bytes"}}], "directResponse": {"status": 200, "body": {"bytes": "aGVsbG8="}}},
        {"route": [_v("v1")]},
    ])
    before = stack.backends["reviews-v1"].hits()
    r = stack.get("/old")
    assert r.status == 301 and r.headers["location"] == "http://new.example.com/new"
    r = stack.get("/tls/x")
    assert r.status == 308 and r.headers["location"] == f"https://{HOST}:8443/tls/x"
    r = stack.get("/same/y")
    assert r.status == 302 and r.headers["location"] == f"http://other.example.com:{stack.http_port}/same/y"
    r = stack.get("/teapot")
    assert (r.status, r.text, r.headers.get("x-direct")) == (418, "short", "yes")
    r = stack.get("/bytes")
    assert (r.status, r.body) == (200, b"hello")
    assert stack.backends["reviews-v1"].hits() == before  # none of these reached a backend
    assert stack.get("/other").served_by == "reviews-v1"


def test_rewrite_uri_regex_and_authority(stack: Stack) -> None:
    stack.apply_http([
        {"match": [{"uri": {"prefix": "/v1/api"}}], "rewrite": {"uri": "/api", "authority": "internal.reviews"},
         "route": [_v("v1")]},
        {"match": [{"uri": {"regex": "^/svc/([^/]+)/(.*)$"}}],
         "rewrite": {"uriRegexRewrite": {"match": "^/svc/([^/]+)/(.*)$", "rewrite": "/\\2/of/\\1"}},
         "route": [_v("v1")]},
    ])
    body = stack.get("/v1/api/items?x=1").json()
    assert body["path"] == "/api/items" and body["query"] == {"x": "1"}
    assert body["headers"]["host"] == "internal.reviews"
    assert stack.get("/svc/alpha/beta").json()["path"] == "/beta/of/alpha"


def test_request_and_response_header_edits(stack: Stack) -> None:
    stack.apply_http([{
        "headers": {"request": {"set": {"x-set": "overwritten"}, "add": {"x-add": "added"}, "remove": ["x-drop"]},
                    "response": {"set": {"x-resp": "set"}, "remove": ["x-served-by"]}},
        "route": [_v("v1", headers={"request": {"set": {"x-dest": "v1"}},
                                    "response": {"add": {"x-dest-resp": "v1"}}})]}])
    r = stack.get("/h", headers={"x-set": "original", "x-add": "mine", "x-drop": "secret", "x-keep": "kept"})
    seen = r.json()["headers"]
    assert seen["x-set"] == "overwritten"
    assert seen["x-add"] == "mine, added"  # add appends to the client's value
    assert "x-drop" not in seen and seen["x-keep"] == "kept" and seen["x-dest"] == "v1"
    assert r.headers.get("x-resp") == "set" and r.headers.get("x-dest-resp") == "v1"
    assert "x-served-by" not in r.headers  # removed from the response
    assert r.json()["service"] == "reviews-v1"


# ---- resilience ----------------------------------------------------------------------------------------
def test_retries_retry_on_and_per_try_timeout(stack: Stack) -> None:
    stack.apply_http([
        {"match": [{"uri": {"prefix": "/codes"}}], "retries": {"attempts": 2, "retryOn": "503"}, "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/other-code"}}], "retries": {"attempts": 2, "retryOn": "502"},
         "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/slow"}}], "retries": {"attempts": 2, "perTryTimeout": "200ms",
                                                              "retryOn": "5xx"}, "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/none"}}], "retries": {"attempts": 0}, "route": [_v("v1")]},
    ])
    v1 = stack.backends["reviews-v1"]
    key = uuid.uuid4().hex
    ok = stack.get(f"/codes/{key}", headers={"x-fail-first": "2", "x-fail-key": key})
    assert ok.status == 200 and v1.hits(f"/codes/{key}") == 3  # 503 is a retriable status code here
    key = uuid.uuid4().hex
    bad = stack.get(f"/other-code/{key}", headers={"x-fail-first": "1", "x-fail-key": key})
    assert bad.status == 503 and v1.hits(f"/other-code/{key}") == 1  # only 502 is retried
    key = uuid.uuid4().hex
    none = stack.get(f"/none/{key}", headers={"x-fail-first": "1", "x-fail-key": key})
    assert none.status == 503 and v1.hits(f"/none/{key}") == 1  # attempts 0 disables Istio's default retries
    key = uuid.uuid4().hex
    started = time.monotonic()
    slow = stack.get(f"/slow/{key}", headers={"x-delay-ms": "1500"})
    elapsed = time.monotonic() - started
    assert slow.status == 504, slow.text
    assert elapsed < 1.4, elapsed  # 3 tries of 200ms, not one 1.5s wait
    wait_until(lambda: v1.hits(f"/slow/{key}") == 3, 5, message="3 attempts at the backend")


def test_timeout_returns_504(stack: Stack) -> None:
    stack.apply_http([{"timeout": "300ms", "retries": {"attempts": 0}, "route": [_v("v1")]}])
    assert stack.get("/fast", headers={"x-delay-ms": "50"}).status == 200
    started = time.monotonic()
    r = stack.get("/slow", headers={"x-delay-ms": "1500"})
    assert r.status == 504 and 0.25 <= time.monotonic() - started < 1.2


def test_fault_abort_and_delay_full_and_partial(stack: Stack) -> None:
    stack.apply_http([
        {"match": [{"uri": {"prefix": "/abort-all"}}],
         "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}, "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/abort-half"}}],
         "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 50}}}, "retries": {"attempts": 0},
         "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/delay-all"}}],
         "fault": {"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}}, "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/delay-half"}}],
         "fault": {"delay": {"fixedDelay": "150ms", "percentage": {"value": 50}}}, "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/no-percentage"}}],
         "fault": {"abort": {"httpStatus": 500}}, "route": [_v("v1")]},
    ])
    v1 = stack.backends["reviews-v1"]
    assert {stack.get("/abort-all").status for _ in range(10)} == {418}
    assert v1.hits("/abort-all") == 0
    assert stack.get("/no-percentage").status == 200  # Istio: no percentage -> nothing is aborted
    with KeepAliveClient(stack.http_port, host=HOST) as client:
        aborted = sum(client.request("/abort-half").status == 503 for _ in range(200))
    assert 60 <= aborted <= 140, aborted  # mean 100, sigma 7.1
    started = time.monotonic()
    assert stack.get("/delay-all").status == 200
    assert time.monotonic() - started >= 0.29
    slow = 0
    with KeepAliveClient(stack.http_port, host=HOST) as client:
        for _ in range(40):
            t0 = time.monotonic()
            assert client.request("/delay-half").status == 200
            slow += time.monotonic() - t0 >= 0.14
    assert 6 <= slow <= 34, slow  # mean 20, sigma 3.2


def test_mirror_sends_a_copy_and_the_client_sees_the_primary(stack: Stack) -> None:
    stack.apply_http([
        {"match": [{"uri": {"prefix": "/mirrored"}}], "mirror": {"host": "mirror"}, "route": [_v("v1")]},
        {"match": [{"uri": {"prefix": "/not-mirrored"}}], "mirror": {"host": "mirror"},
         "mirrorPercentage": {"value": 0}, "route": [_v("v1")]},
    ])
    mirror = stack.backends["mirror"]
    path = f"/mirrored/{uuid.uuid4().hex}"
    r = stack.get(path, headers={"x-status": "202"})
    assert r.status == 202 and r.served_by == "reviews-v1"  # the primary's answer only
    wait_until(lambda: mirror.hits(path) == 1, 5, message="the mirror backend received the copy")
    quiet = f"/not-mirrored/{uuid.uuid4().hex}"
    assert stack.get(quiet).served_by == "reviews-v1"
    marker = f"/mirrored/{uuid.uuid4().hex}"  # a later mirrored request: once its copy arrived, so would have
    assert stack.get(marker).served_by == "reviews-v1"  # a (wrong) copy of the quiet one
    wait_until(lambda: mirror.hits(marker) == 1, 5, message="the marker copy")
    assert mirror.hits(quiet) == 0


def test_cors_preflight(stack: Stack) -> None:
    stack.apply_http([{
        "corsPolicy": {"allowOrigins": [{"exact": "https://app.example.com"}, {"regex": "https://.*\\.test"}],
                       "allowMethods": ["GET", "POST"], "allowHeaders": ["x-custom"], "exposeHeaders": ["x-served-by"],
                       "maxAge": "60s", "allowCredentials": True},
        "route": [_v("v1")]}])
    pre = stack.get("/c", method="OPTIONS", headers={"origin": "https://app.example.com",
                                                     "access-control-request-method": "POST"})
    assert pre.status == 200 and pre.served_by is None  # answered by Envoy's CORS filter
    assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
    assert pre.headers["access-control-allow-methods"] == "GET,POST"
    assert pre.headers["access-control-allow-headers"] == "x-custom"
    assert pre.headers["access-control-max-age"] == "60"
    assert pre.headers["access-control-allow-credentials"] == "true"
    regex = stack.get("/c", method="OPTIONS", headers={"origin": "https://a.test",
                                                       "access-control-request-method": "GET"})
    assert regex.headers.get("access-control-allow-origin") == "https://a.test"
    denied = stack.get("/c", method="OPTIONS", headers={"origin": "https://evil.example",
                                                        "access-control-request-method": "GET"})
    assert "access-control-allow-origin" not in denied.headers
    simple = stack.get("/c", headers={"origin": "https://app.example.com"})
    assert simple.served_by == "reviews-v1"
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
    assert simple.headers["access-control-expose-headers"] == "x-served-by"


# ---- TCP -----------------------------------------------------------------------------------------------
def _tcp_served_by(port: int) -> str | None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /tcp HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"x-served-by:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def test_tcp_routes_by_weight(stack: Stack) -> None:
    stack.envoy.wait_listener(stack.tcp_port, timeout=15)
    assert {_tcp_served_by(stack.tcp_port) for _ in range(5)} == {"tcp-a"}
    manifests.write_docs(stack.config_dir / "echo-tcp-vs.yaml", [_tcp_vs({"a": 1, "b": 1}, stack.tcp_port)])
    seen: set[str | None] = set()

    def both() -> bool:
        seen.add(_tcp_served_by(stack.tcp_port))
        return {"tcp-a", "tcp-b"} <= seen

    wait_until(both, 15, message=lambda: f"both TCP subsets reached, seen {seen}\n{stack.diagnostics()}")
    assert seen <= {"tcp-a", "tcp-b"}
