"""End to end with the real Envoy: sample backends, `istiod-lite serve` on a manifest directory, and Envoy
bootstrapped as the waypoint `default/waypoint`, over Delta and SotW ADS. Requests go through the waypoint's
HTTP listener (a free port written into the Gateway) with a Host header.

Read-only checks share one stack per ADS mode (module scope); tests that edit the directory get their own.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from testsupport import manifests
from testsupport.apps import Backend, BackendFactory, Istiod, IstiodFactory
from testsupport.envoy import Envoy, EnvoyFactory
from testsupport.http import KeepAliveClient, request
from testsupport.procs import free_port, wait_until

WAYPOINT = "default/waypoint"
RATINGS = manifests.RATINGS_HOST
MODES = ["delta", "sotw"]


@dataclass
class Stack:
    mode: str
    config_dir: Path
    listener_port: int
    backends: dict[str, Backend]
    istiod: Istiod
    envoy: Envoy

    def write(self, name: str, docs: list[dict]) -> None:
        manifests.write_docs(self.config_dir / name, docs)

    def diagnostics(self) -> str:
        return (f"--- istiod log ---\n{self.istiod.proc.log_tail(60)}\n"
                f"--- envoy log ---\n{self.envoy.proc.log_tail(30)}")


class Factories:
    def __init__(self, workdir: Path) -> None:
        self.backends = BackendFactory(workdir)
        self.istiod = IstiodFactory(workdir)
        self.envoy = EnvoyFactory(workdir)

    def stop_all(self) -> None:
        for factory in (self.envoy, self.istiod, self.backends):
            factory.stop_all()


def start_stack(f: Factories, workdir: Path, mode: str, reviews_weights: dict[str, int] | None = None) -> Stack:
    backends = f.backends.many("reviews-v1", "reviews-v2", "ratings")
    listener_port = free_port()
    config_dir = workdir / "config"
    manifests.write_files(config_dir, manifests.demo_files(
        listener_port, {name: b.port for name, b in backends.items()}, reviews_weights=reviews_weights))
    istiod = f.istiod(config_dir)
    envoy = f.envoy.for_waypoint(WAYPOINT, istiod.xds_port, delta=(mode == "delta"), name=f"envoy-{mode}")
    stack = Stack(mode, config_dir, listener_port, backends, istiod, envoy)
    try:
        envoy.wait_connected()
        envoy.wait_listener(listener_port, timeout=30)
        wait_until(lambda: request(listener_port, host="reviews").status == 200, 30,
                   message=lambda: f"a first routed request\n{stack.diagnostics()}")
    except Exception:
        print(stack.diagnostics())
        raise
    return stack


@pytest.fixture(scope="module", params=MODES)
def shared_stack(request, tmp_path_factory):
    """One stack per ADS mode for tests that only send requests."""
    workdir = tmp_path_factory.mktemp(f"stack-{request.param}")
    f = Factories(workdir)
    try:
        yield start_stack(f, workdir, request.param)
    finally:
        f.stop_all()


@pytest.fixture(params=MODES)
def own_stack_factory(request, tmp_path):
    """`own_stack_factory(weights)` -> a stack this test may modify."""
    f = Factories(tmp_path)
    try:
        yield lambda weights=None: start_stack(f, tmp_path, request.param, weights)
    finally:
        f.stop_all()


# 1 ------------------------------------------------------------------------------------------------------
def test_host_reviews_reaches_the_reviews_backend(shared_stack):
    port = shared_stack.listener_port
    resp = request(port, "/reviews/7?x=1", host="reviews")
    assert resp.status == 200, resp.text
    assert resp.served_by in {"reviews-v1", "reviews-v2"}
    body = resp.json()
    assert body["path"] == "/reviews/7" and body["query"] == {"x": "1"} and body["method"] == "GET"
    # the other names of a Kubernetes Service reach it too; a ServiceEntry answers to its host
    for host in ("reviews.default", "reviews.default.svc.cluster.local", "reviews:9080"):
        assert request(port, host=host).served_by in {"reviews-v1", "reviews-v2"}, host
    assert request(port, host=RATINGS).served_by == "ratings"
    # control: an unknown host is not routed to any backend
    unknown = request(port, "/nowhere", host="nobody.example.org")
    assert unknown.status == 404 and unknown.served_by is None
    assert all(b.hits("/nowhere") == 0 for b in shared_stack.backends.values())


# 2 ------------------------------------------------------------------------------------------------------
def test_weights_split_traffic_between_subsets(shared_stack):
    counts: dict[str, int] = {}
    with KeepAliveClient(shared_stack.listener_port, host="reviews") as client:
        for _ in range(200):
            resp = client.request("/split")
            key = resp.served_by if resp.status == 200 else str(resp.status)
            counts[key] = counts.get(key, 0) + 1
    assert set(counts) <= {"reviews-v1", "reviews-v2"}, counts
    # 80/20 over 200: mean 160, sigma 5.7; +-30 is more than 5 sigma
    assert 130 <= counts.get("reviews-v1", 0) <= 190, counts
    assert counts.get("reviews-v2", 0) >= 10, counts


# 3 ------------------------------------------------------------------------------------------------------
def test_editing_a_virtual_service_reroutes_an_open_connection_without_restart(own_stack_factory):
    stack = own_stack_factory({"v1": 100})
    envoy = stack.envoy
    pid, epoch, uptime = envoy.proc.pid, envoy.restart_epoch(), envoy.uptime_seconds()
    with KeepAliveClient(stack.listener_port, host="reviews") as client:
        assert {client.request("/before").served_by for _ in range(10)} == {"reviews-v1"}
        stack.write("reviews-virtualservice.yaml", [manifests.weighted_virtual_service("reviews", {"v2": 100})])
        edited = time.monotonic()
        wait_until(lambda: client.request("/during").served_by == "reviews-v2", timeout=2.0,
                   message=lambda: f"reviews-v2 on the same connection\n{stack.diagnostics()}")
        switched_after = time.monotonic() - edited
        assert {client.request("/after").served_by for _ in range(10)} == {"reviews-v2"}
        assert client.request("/after").sockname == client.sockname  # still the very same connection
    assert switched_after < 2.0
    assert envoy.proc.alive and envoy.proc.pid == pid
    assert envoy.restart_epoch() == epoch
    assert envoy.uptime_seconds() >= uptime  # a restart would reset it


# 4 ------------------------------------------------------------------------------------------------------
def test_retries_recover_from_two_failures(shared_stack):
    """ratings has `retries: {attempts: 3, retryOn: 5xx}`: 3 failures are absorbed (4 calls), 4 are not."""
    ratings = shared_stack.backends["ratings"]
    port = shared_stack.listener_port
    ok_path, bad_path = f"/retry-ok-{uuid.uuid4().hex}", f"/retry-bad-{uuid.uuid4().hex}"
    ok = request(port, ok_path, host=RATINGS, headers={"x-fail-first": "2", "x-fail-key": ok_path})
    assert ok.status == 200 and ok.served_by == "ratings", ok.text
    assert ratings.hits(ok_path) == 3  # first call + 2 retries
    three = request(port, ok_path + "x", host=RATINGS, headers={"x-fail-first": "3", "x-fail-key": ok_path + "x"})
    assert three.status == 200  # Istio's default policy (2 retries) would give 503 here
    assert ratings.hits(ok_path + "x") == 4
    bad = request(port, bad_path, host=RATINGS, headers={"x-fail-first": "4", "x-fail-key": bad_path})
    assert bad.status == 503
    assert ratings.hits(bad_path) == 4  # 1 + attempts


def test_timeout_returns_504_from_a_slow_backend(shared_stack):
    """ratings has `timeout: 1s`."""
    port = shared_stack.listener_port
    fast = request(port, "/fast", host=RATINGS, headers={"x-delay-ms": "100"})
    assert fast.status == 200
    started = time.monotonic()
    slow = request(port, "/slow", host=RATINGS, headers={"x-delay-ms": "2500"})
    elapsed = time.monotonic() - started
    assert slow.status == 504, slow.text
    assert 0.9 <= elapsed < 2.4, elapsed


# 5 ------------------------------------------------------------------------------------------------------
def test_an_invalid_virtual_service_keeps_the_previous_routing_and_is_reported(own_stack_factory):
    stack = own_stack_factory({"v1": 100})
    broken = manifests.weighted_virtual_service("reviews", {"v2": 100}, name="reviews-broken")
    broken["spec"]["http"][0]["route"][0]["destination"].pop("host")  # required by the schema
    stack.write("zz-added.yaml", [broken])
    key = "VirtualService/default/reviews-broken"

    def reported() -> bool:
        status, body = stack.istiod.get("/debug/issues")
        return key in stack.istiod.log_text() or (status == 200 and "reviews-broken" in body)

    wait_until(reported, timeout=10, message=lambda: f"the broken VirtualService reported\n{stack.diagnostics()}")
    # the push that followed (if any) has been applied by now; routing must be unchanged
    time_limit = time.monotonic() + 1.0
    with KeepAliveClient(stack.listener_port, host="reviews") as client:
        while time.monotonic() < time_limit:
            resp = client.request("/still-v1")
            assert resp.status == 200 and resp.served_by == "reviews-v1", (resp.status, resp.served_by)
    assert stack.backends["reviews-v2"].hits("/still-v1") == 0
    # and the store still reacts to valid edits afterwards
    stack.write("reviews-virtualservice.yaml", [manifests.weighted_virtual_service("reviews", {"v2": 100})])
    wait_until(lambda: request(stack.listener_port, host="reviews").served_by == "reviews-v2", timeout=5,
               message=lambda: f"a valid edit after the broken one\n{stack.diagnostics()}")
