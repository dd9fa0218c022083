"""AuthorizationPolicy enforced by the real Envoy at the waypoint: sample backends, `istiod-lite serve` on a
manifest directory, Envoy bootstrapped as `default/waypoint` (Delta ADS). Policies are written into the watched
directory; every test removes its policies afterwards and waits until both services answer 200 again.

Services: `reviews` (Kubernetes Service, Host `reviews`) and `ratings.example.com` (ServiceEntry), both bound to
the waypoint. Denied requests get 403 `RBAC: access denied` and never reach a backend.
"""

from __future__ import annotations

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

WAYPOINT = "default/waypoint"
RATINGS = manifests.RATINGS_HOST
DENIED_BODY = "RBAC: access denied"
GATEWAY = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}
REVIEWS = {"kind": "Service", "group": "", "name": "reviews"}


@dataclass
class Stack:
    config_dir: Path
    port: int
    backends: dict[str, Backend]
    istiod: Istiod
    envoy: Envoy

    def diagnostics(self) -> str:
        return (f"--- istiod log ---\n{self.istiod.proc.log_tail(40)}\n"
                f"--- envoy log ---\n{self.envoy.proc.log_tail(20)}")

    def apply(self, name: str, *policies: dict[str, Any]) -> None:
        manifests.write_docs(self.config_dir / f"authz-{name}.yaml", list(policies))

    def remove(self, name: str) -> None:
        (self.config_dir / f"authz-{name}.yaml").unlink(missing_ok=True)

    def status(self, path: str = "/", host: str = "reviews", **kw: Any) -> int:
        return request(self.port, path, host=host, **kw).status

    def wait_status(self, want: int, path: str = "/", host: str = "reviews", timeout: float = 10.0,
                    **kw: Any) -> None:
        wait_until(lambda: self.status(path, host, **kw) == want, timeout,
                   message=lambda: f"{kw.get('method', 'GET')} {host}{path} -> {want}\n{self.diagnostics()}")


def policy(name: str, rules: list[dict] | None = None, action: str = "ALLOW",
           target: dict[str, str] = GATEWAY) -> dict[str, Any]:
    spec: dict[str, Any] = {"targetRefs": [target], "action": action}
    if rules is not None:
        spec["rules"] = rules
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authz")
    backends_f, istiod_f, envoy_f = BackendFactory(workdir), IstiodFactory(workdir), EnvoyFactory(workdir)
    try:
        backends = backends_f.many("reviews-v1", "reviews-v2", "ratings")
        port = free_port()
        config_dir = workdir / "config"
        manifests.write_files(config_dir, manifests.demo_files(port, {n: b.port for n, b in backends.items()}))
        istiod = istiod_f(config_dir)
        envoy = envoy_f.for_waypoint(WAYPOINT, istiod.xds_port, delta=True, name="envoy-authz")
        s = Stack(config_dir, port, backends, istiod, envoy)
        envoy.wait_listener(port, timeout=30)
        s.wait_status(200, timeout=30)
        yield s
    finally:
        for f in (envoy_f, istiod_f, backends_f):
            f.stop_all()


@pytest.fixture(autouse=True)
def clean(stack):
    yield
    for p in stack.config_dir.glob("authz-*.yaml"):
        p.unlink()
    stack.wait_status(200, host="reviews")
    stack.wait_status(200, host=RATINGS)


def assert_denied(stack: Stack, path: str = "/", host: str = "reviews", **kw: Any) -> None:
    before = sum(b.hits(path) for b in stack.backends.values())
    resp = request(stack.port, path, host=host, **kw)
    assert resp.status == 403, (resp.status, resp.text)
    assert resp.text == DENIED_BODY
    assert sum(b.hits(path) for b in stack.backends.values()) == before  # never reached a backend


def test_allow_by_method_and_path_denies_everything_else(stack):
    stack.apply("allow-get-api", policy("allow-get-api", [{"to": [{"operation": {
        "methods": ["GET"], "paths": ["/api/*", "/health"]}}]}]))
    stack.wait_status(403, "/other")
    assert stack.status("/api/v1/things") == 200
    assert stack.status("/health") == 200
    assert stack.status("/api/x?q=1") == 200  # the query string is not part of the path
    assert_denied(stack, "/api/v1/things", method="POST")
    assert_denied(stack, "/healthz")
    assert_denied(stack, "/other", host=RATINGS)  # a Gateway-targeted policy covers every service
    assert stack.status("/api/r", host=RATINGS) == 200


def test_deny_by_header(stack):
    stack.apply("deny-header", policy("deny-header", [{"when": [
        {"key": "request.headers[x-user]", "values": ["mallory", "evil-*"]}]}], action="DENY"))
    stack.wait_status(403, headers={"x-user": "mallory"})
    assert_denied(stack, "/h", headers={"x-user": "evil-bob"})
    assert stack.status(headers={"x-user": "alice"}) == 200
    assert stack.status() == 200  # header absent


def test_deny_all_then_allow_a_prefix_path(stack):
    stack.apply("allow-nothing", policy("allow-nothing", target=REVIEWS))  # ALLOW without rules = deny all
    stack.wait_status(403, "/public/a")
    assert_denied(stack, "/")
    stack.apply("allow-public", policy("allow-public", [{"to": [{"operation": {"paths": ["/public/*"]}}]}],
                                       target=REVIEWS))
    stack.wait_status(200, "/public/a")
    assert_denied(stack, "/private")
    assert stack.status("/private", host=RATINGS) == 200  # Service-targeted: ratings untouched


def test_service_targeted_policy_leaves_other_service_untouched(stack):
    stack.apply("deny-all-reviews", policy("deny-all-reviews", [{}], action="DENY", target=REVIEWS))
    stack.wait_status(403)
    assert_denied(stack, "/anything")
    for _ in range(5):
        resp = request(stack.port, "/anything", host=RATINGS)
        assert resp.status == 200 and resp.served_by == "ratings"


def test_not_paths_and_not_methods(stack):
    stack.apply("deny-not-open", policy("deny-not-open", [{"to": [{"operation": {"notPaths": ["/open*"]}}]}],
                                        action="DENY"))
    stack.wait_status(403, "/closed")
    assert stack.status("/open/door") == 200
    stack.remove("deny-not-open")
    stack.wait_status(200, "/closed", method="DELETE")
    stack.apply("allow-not-delete", policy("allow-not-delete", [{"to": [{"operation": {
        "notMethods": ["DELETE"]}}]}]))
    stack.wait_status(403, "/closed", method="DELETE")
    assert stack.status("/closed") == 200
    assert stack.status("/closed", method="POST", body=b"x") == 200


def test_ip_blocks_on_loopback(stack):
    stack.apply("ip", policy("ip", [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]))
    stack.wait_status(403)  # we come from 127.0.0.1
    stack.apply("ip", policy("ip", [{"from": [{"source": {"ipBlocks": ["127.0.0.1"]}}]}]))
    stack.wait_status(200)
    stack.apply("ip", policy("ip", [{"from": [{"source": {"notIpBlocks": ["127.0.0.0/8"]}}]}]))
    stack.wait_status(403)


def test_identity_rules_never_match_plaintext_peers(stack):
    """As in Istio: principals / namespaces need a peer identity; plaintext peers have none."""
    stack.apply("ids", policy("ids", [{"from": [{"source": {"principals": ["*"]}}]},
                                      {"from": [{"source": {"namespaces": ["default"]}}]}]))
    stack.wait_status(403)
    stack.apply("ids", policy("ids", [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/x/sa/y"]}}]}]))
    stack.wait_status(200)  # not(an identity) holds for a peer without one


def test_policy_add_edit_remove_applies_on_a_kept_alive_connection(stack):
    envoy = stack.envoy
    pid, epoch, uptime = envoy.proc.pid, envoy.restart_epoch(), envoy.uptime_seconds()
    path = f"/keepalive-{uuid.uuid4().hex}"
    with KeepAliveClient(stack.port, host="reviews") as client:
        assert client.request(path).status == 200
        steps = [
            ("add", lambda: stack.apply("ka", policy("ka", [{"to": [{"operation": {"paths": [path]}}]}],
                                                     action="DENY")), 403),
            ("edit", lambda: stack.apply("ka", policy("ka", [{"to": [{"operation": {"paths": ["/elsewhere"]}}]}],
                                                      action="DENY")), 200),
            ("re-add", lambda: stack.apply("ka", policy("ka", [{"to": [{"operation": {"paths": [path]}}]}],
                                                        action="DENY")), 403),
            ("remove", lambda: stack.remove("ka"), 200),
        ]
        for step, change, want in steps:
            change()
            started = time.monotonic()
            wait_until(lambda: client.request(path).status == want, timeout=2.0,
                       message=lambda: f"{step}: {want} on the same connection\n{stack.diagnostics()}")
            assert time.monotonic() - started < 2.0
        assert client.request(path).sockname == client.sockname  # still the very same connection
    assert envoy.proc.alive and envoy.proc.pid == pid
    assert envoy.restart_epoch() == epoch
    assert envoy.uptime_seconds() >= uptime  # a restart would reset it


def test_invalid_policy_fails_closed_and_other_services_are_untouched(stack):
    bad = policy("bad-path", [{"to": [{"operation": {"paths": ["/a*b"]}}]}], action="DENY", target=REVIEWS)
    stack.apply("bad", bad)
    stack.wait_status(403, "/not-mentioned")  # a broken DENY never turns into "allow everything"
    assert_denied(stack, "/")
    assert stack.status(host=RATINGS) == 200

    def reported() -> bool:
        status, body = stack.istiod.get("/debug/issues")
        text = body + stack.istiod.log_text()
        return "bad-path" in text and "paths[0]" in text

    wait_until(reported, timeout=10, message=lambda: f"the invalid policy reported\n{stack.diagnostics()}")
    unknown_action = policy("bad-action", [{}], action="PERMIT", target=REVIEWS)  # e.g. meant DENY
    unknown_key = policy("bad-key", [{"when": [{"key": "request.colour", "values": ["blue"]}]}], target=REVIEWS)
    for variant in (unknown_action, unknown_key):
        stack.remove("bad")
        stack.wait_status(200)
        stack.apply("bad", variant)
        stack.wait_status(403, "/x")
        assert_denied(stack, "/")
        assert stack.status(host=RATINGS) == 200
