"""The ambient data path with real Envoys on loopback: source "ztunnel" Envoy (plain HTTP in, HBONE out with a
SPIFFE certificate from istiod-lite's CA) -> waypoint Envoy configured by istiod-lite (HBONE listener) ->
destination "ztunnel" Envoy (HBONE in, plain HTTP to the backends). 127.0.0.3 is the waypoint's pod IP,
127.0.0.4 the backends' pod IP (destination Envoy), 10.96.0.x are service VIPs (only ever CONNECT targets).

One stack for the module; the waypoint certificate lives 6 s, so it rotates every ~3 s during every test.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from istiod_lite.identity import CertificateAuthority
from testsupport import hbone, manifests
from testsupport.apps import Backend, BackendFactory, Istiod, IstiodFactory
from testsupport.envoy import Envoy, EnvoyFactory
from testsupport.http import request
from testsupport.procs import free_port, wait_until

WAYPOINT_IP, POD_IP = "127.0.0.3", "127.0.0.4"
REVIEWS_VIP, RATINGS_VIP, DETAILS_VIP, UNKNOWN_VIP = "10.96.0.10", "10.96.0.11", "10.96.0.12", "10.96.9.9"
PORT = manifests.SERVICE_PORT
WAYPOINT_ID = "spiffe://cluster.local/ns/default/sa/waypoint"


def _pod_ip(docs: list[dict]) -> list[dict]:
    def fix(x):
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fix(v) for v in x]
        return POD_IP if x == "127.0.0.1" else x
    return [fix(d) for d in docs]


def _details(ports: dict[str, int]) -> list[dict]:
    """A service with one endpoint in the mesh (reviews-v1's backend behind the destination ztunnel) and one
    opted out (`istio.io/dataplane-mode: none`, ratings' backend reached directly): a mixed cluster."""
    docs = manifests.kube_service("details", {"a": ports["reviews-v1"], "b": ports["ratings"]}, cluster_ip=DETAILS_VIP)
    out = []
    for d in docs:
        if d["metadata"]["name"] == "details-a":
            d = _pod_ip([d])[0]
        elif d["kind"] == "Pod" and d["metadata"]["name"] == "details-b":
            d["metadata"]["labels"]["istio.io/dataplane-mode"] = "none"
        out.append(d)
    return out


def config_files(hbone_port: int, ports: dict[str, int]) -> dict[str, list[dict]]:
    ns = manifests.namespace()
    ns["metadata"]["labels"]["istio.io/dataplane-mode"] = "ambient"
    gw = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
          "metadata": {"name": "waypoint", "namespace": "default", "labels": {"istio.io/waypoint-for": "service"}},
          "spec": {"gatewayClassName": "istio-waypoint", "addresses": [{"type": "IPAddress", "value": WAYPOINT_IP}],
                   "listeners": [{"name": "mesh", "port": hbone_port, "protocol": "HBONE"}]}}
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "secret-for-client", "namespace": "default"},
              "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}], "action": "ALLOW",
                       "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}],
                                  "to": [{"operation": {"paths": ["/secret*"]}}]},
                                 {"to": [{"operation": {"notPaths": ["/secret*"]}}]}]}}
    return {
        "waypoint.yaml": [ns, gw],
        "reviews.yaml": _pod_ip(manifests.kube_service("reviews", {"v1": ports["reviews-v1"],
                                                                   "v2": ports["reviews-v2"]}, cluster_ip=REVIEWS_VIP)),
        "ratings.yaml": _pod_ip(manifests.kube_service("ratings", {"v1": ports["ratings"]}, cluster_ip=RATINGS_VIP)),
        "reviews-dr.yaml": [manifests.destination_rule_subsets("reviews", ["v1", "v2"])],
        "reviews-vs.yaml": [manifests.weighted_virtual_service("reviews", {"v1": 50, "v2": 50})],
        "ratings-vs.yaml": [manifests.resilient_virtual_service("ratings", timeout="1s", attempts=3)],
        "details.yaml": _details(ports),
        "policy.yaml": [policy],
    }


@dataclass
class Stack:
    ca: CertificateAuthority
    certs: dict[str, hbone.CertFiles]
    hbone_port: int
    backends: dict[str, Backend]
    istiod: Istiod
    waypoint: Envoy
    client_ports: dict[str, int]  # reviews / ratings / unknown through source sa/client
    other_port: int  # reviews through source sa/other

    def diagnostics(self) -> str:
        return (f"--- istiod ---\n{self.istiod.proc.log_tail(40)}\n"
                f"--- waypoint ---\n{self.waypoint.proc.log_tail(40)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("hbone")
    backends_f, istiod_f, envoy_f = BackendFactory(work), IstiodFactory(work), EnvoyFactory(work)
    try:
        ca_dir = work / "ca"
        ca = CertificateAuthority.load_or_create("cluster.local", ca_dir)  # istiod-lite loads these files
        certs = {sa: hbone.write_cert(ca, work / "certs", "default", sa) for sa in ("client", "other", "dest")}
        backends = backends_f.many("reviews-v1", "reviews-v2", "ratings")
        hbone_port, dest_port = free_port(WAYPOINT_IP), free_port(POD_IP)
        config = work / "config"
        manifests.write_files(config, config_files(hbone_port, {n: b.port for n, b in backends.items()}))
        istiod = istiod_f(config, ("--ca-dir", str(ca_dir), "--cert-lifetime", "6s",
                                   "--hbone-upstream-port", str(dest_port)))
        envoy_f(hbone.destination_bootstrap(certs["dest"], (POD_IP, dest_port),
                                            {f"{POD_IP}:{b.port}": b.port for b in backends.values()}), name="dest")
        vips = {"reviews": REVIEWS_VIP, "ratings": RATINGS_VIP, "details": DETAILS_VIP, "unknown": UNKNOWN_VIP}
        client_ports = {name: free_port() for name in vips}
        targets = {client_ports[name]: f"{vip}:{PORT}" for name, vip in vips.items()}
        envoy_f(hbone.source_bootstrap(certs["client"], (WAYPOINT_IP, hbone_port), targets), name="src-client")
        other_port = free_port()
        envoy_f(hbone.source_bootstrap(certs["other"], (WAYPOINT_IP, hbone_port),
                                       {other_port: f"{REVIEWS_VIP}:{PORT}"}), name="src-other")
        waypoint = envoy_f.for_waypoint("default/waypoint", istiod.xds_port, name="waypoint")
        st = Stack(ca, certs, hbone_port, backends, istiod, waypoint, client_ports, other_port)
        waypoint.wait_connected()
        wait_until(lambda: request(client_ports["reviews"], host="reviews").status == 200, 30,
                   message=lambda: f"a first request through HBONE\n{st.diagnostics()}")
        yield st
    finally:
        envoy_f.stop_all()
        istiod_f.stop_all()
        backends_f.stop_all()


def test_routing_by_vip_and_weighted_split(stack: Stack) -> None:
    served = set()
    for _ in range(40):
        resp = request(stack.client_ports["reviews"], host="reviews")
        assert resp.status == 200, resp.text
        served.add(resp.served_by)
    assert served == {"reviews-v1", "reviews-v2"}
    resp = request(stack.client_ports["ratings"], host="ratings")
    assert resp.status == 200 and resp.served_by == "ratings"


def test_endpoints_in_and_out_of_the_mesh_in_one_cluster(stack: Stack) -> None:
    """details: one endpoint through connect_originate (HBONE), one plain (opted out of the mesh)."""
    served = {request(stack.client_ports["details"], host="details").served_by for _ in range(30)}
    assert served == {"reviews-v1", "ratings"}


def test_retries_and_timeout(stack: Stack) -> None:
    resp = request(stack.client_ports["ratings"], host="ratings",
                   headers={"x-fail-first": "2", "x-fail-key": f"k{time.monotonic_ns()}"})
    assert resp.status == 200, "two 503s are retried (attempts: 3, retryOn: 5xx)"
    started = time.monotonic()
    resp = request(stack.client_ports["ratings"], host="ratings", headers={"x-delay-ms": "4000"})
    assert resp.status == 504 and time.monotonic() - started < 3.5, "the 1s route timeout applies"


def test_authorization_by_peer_identity(stack: Stack) -> None:
    backend = lambda: sum(b.hits("/secret") for n, b in stack.backends.items() if n.startswith("reviews"))  # noqa: E731
    before = backend()
    assert request(stack.client_ports["reviews"], "/secret", host="reviews").status == 200
    assert backend() == before + 1
    denied = request(stack.other_port, "/secret", host="reviews")
    assert denied.status == 403 and "RBAC" in denied.text
    assert backend() == before + 1, "a denied request never reaches the backend"
    assert request(stack.other_port, "/public", host="reviews").status == 200


def _ctx(stack: Stack, sa: str | None) -> ssl.SSLContext:
    return hbone.client_ssl_context(stack.certs[sa] if sa else None, stack.certs["client"].root)


def test_bare_h2_connect_gets_through(stack: Stack) -> None:
    status, body = hbone.h2_connect((WAYPOINT_IP, stack.hbone_port), _ctx(stack, "client"), f"{REVIEWS_VIP}:{PORT}",
                                    b"GET /h2 HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert status == 200
    assert body.startswith(b"HTTP/1.1 200") and b"x-served-by: reviews-v" in body.lower()


def test_unknown_vip_gets_no_route(stack: Stack) -> None:
    status, body = hbone.h2_connect((WAYPOINT_IP, stack.hbone_port), _ctx(stack, "client"), f"{UNKNOWN_VIP}:{PORT}",
                                    b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert b"HTTP/1.1 200" not in body
    try:  # through the source ztunnel: the tunnel is refused, so the client connection is closed
        status = request(stack.client_ports["unknown"], host="reviews", timeout=5).status
    except (ConnectionError, OSError):
        status = None
    assert status != 200
    assert request(stack.client_ports["reviews"], host="reviews").status == 200  # same source, known VIP


def test_plaintext_is_refused(stack: Stack) -> None:
    with socket.create_connection((WAYPOINT_IP, stack.hbone_port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
    assert not data or data[0] == 0x15, f"no HTTP/2 from a TLS-only listener, got {data[:20]!r}"


def test_foreign_ca_client_certificate_is_refused(stack: Stack, tmp_path: Path) -> None:
    foreign = CertificateAuthority.self_signed("cluster.local")
    cert = hbone.write_cert(foreign, tmp_path, "default", "client")
    ctx = hbone.client_ssl_context(cert, stack.certs["client"].root)
    try:
        status, _ = hbone.h2_connect((WAYPOINT_IP, stack.hbone_port), ctx, f"{REVIEWS_VIP}:{PORT}",
                                     b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n", timeout=5)
    except (ssl.SSLError, OSError):
        status = None
    assert status is None
    stack.waypoint.wait_stats(lambda s: sum(v for k, v in s.items() if k.endswith("ssl.fail_verify_error")) > 0,
                              filter_regex="ssl.fail_verify_error", what="a verification failure")


def _peer_serial(stack: Stack) -> int:
    raw = socket.create_connection((WAYPOINT_IP, stack.hbone_port), timeout=5)
    with _ctx(stack, "client").wrap_socket(raw) as s:
        cert = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WAYPOINT_ID]
    return cert.serial_number


def test_certificate_rotation_without_failures(stack: Stack) -> None:
    """Lifetime 6 s: a new certificate every ~3 s; a steady request stream (new and kept-alive tunnels)
    sees no failure while the waypoint presents at least three different certificates."""
    failures: list[str] = []
    count = 0
    stop = threading.Event()

    def stream() -> None:
        nonlocal count
        while not stop.is_set():
            try:
                resp = request(stack.client_ports["reviews"], "/stream", host="reviews")
                if resp.status != 200:
                    failures.append(f"status {resp.status}")
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))
            count += 1

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    serials = [_peer_serial(stack)]
    deadline = time.monotonic() + 20
    try:
        while len(set(serials)) < 3 and time.monotonic() < deadline:
            status, body = hbone.h2_connect((WAYPOINT_IP, stack.hbone_port), _ctx(stack, "client"),
                                            f"{REVIEWS_VIP}:{PORT}", b"GET /h2 HTTP/1.1\r\nHost: reviews\r\n\r\n")
            if status != 200 or not body.startswith(b"HTTP/1.1 200"):
                failures.append(f"h2 CONNECT {status} {body[:40]!r}")
            serials.append(_peer_serial(stack))
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(10)
    assert len(set(serials)) >= 3, f"no rotation seen: {serials}\n{stack.diagnostics()}"
    assert count > 20 and not failures, f"{len(failures)} failures of {count}: {failures[:5]}"


def test_private_keys_stay_out_of_debug_output_and_logs(stack: Stack) -> None:
    dump = stack.waypoint.config_dump("dynamic_active_secrets")
    names = {s.get("name") for s in dump.get("configs", [])}
    assert names == {"default", "ROOTCA"}, "the waypoint got its certificate and the root over SDS"
    for path in ("/debug/config_dump", "/debug/syncz", "/debug/issues"):
        status, body = stack.istiod.get(path)
        assert status == 200 and "PRIVATE KEY" not in body, path
    assert "PRIVATE KEY" not in stack.istiod.log_text()
