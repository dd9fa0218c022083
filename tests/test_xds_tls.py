"""A secured xDS port: `serve --xds-tls-cert/--xds-tls-key --xds-client-ca` (mTLS) and the per-waypoint
identity check, with a throwaway CA made by `cryptography`, against a plain gRPC client and the real Envoy
(bootstrap from `render_bootstrap(..., xds_ca=, client_cert=, client_key=)`)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from istiod_lite.bootstrap import render_bootstrap
from istiod_lite.xds.tls import PeerAuthorizer, identity_matches
from istiod_lite.xds.types import CLUSTER
from testsupport.ads_client import make_node
from testsupport.http import request
from testsupport.pki import Pki
from testsupport.procs import wait_until
from testsupport.stack import WAYPOINT, Factories, metric, start_stack

TD = "cluster.local"
RIGHT_SPIFFE = f"spiffe://{TD}/ns/default/sa/waypoint"


# ---- the identity rule -----------------------------------------------------------------------------
@pytest.mark.parametrize("identity, ok", [
    (RIGHT_SPIFFE, True),
    ("spiffe://other.domain/ns/default/sa/waypoint", True),  # any trust domain unless one is configured
    ("spiffe://cluster.local/ns/default/sa/reviews", False),
    ("spiffe://cluster.local/ns/other/sa/waypoint", False),
    ("spiffe://cluster.local/ns/default/sa/waypoint/extra", False),
    ("waypoint.default", True),
    ("waypoint.default.svc", True),
    ("waypoint.default.svc.cluster.local", True),
    ("waypoint.default.example.com", False),
    ("waypoint.other.svc", False),
    ("waypoint", False),
    ("https://waypoint.default.svc", False),
])
def test_identity_rule(identity, ok):
    assert identity_matches(identity, "default/waypoint") is ok


def test_trust_domain_is_enforced_when_configured():
    assert identity_matches(RIGHT_SPIFFE, "default/waypoint", trust_domain=TD)
    assert not identity_matches("spiffe://evil/ns/default/sa/waypoint", "default/waypoint", trust_domain=TD)


def test_refusal_names_what_was_presented_and_what_was_expected():
    msg = PeerAuthorizer(TD).check({"peer_uri": [b"spiffe://cluster.local/ns/default/sa/reviews"]}, "default/waypoint")
    assert msg is not None and "spiffe://cluster.local/ns/default/sa/reviews" in msg and RIGHT_SPIFFE in msg
    assert PeerAuthorizer(TD).check({"x509_subject_alternative_name": [RIGHT_SPIFFE.encode()]},
                                    "default/waypoint") is None
    assert "no certificate identity" in PeerAuthorizer().check({}, "default/waypoint")


# ---- a real server ----------------------------------------------------------------------------------
@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def mtls_stack(tmp_path, pki):
    server = pki.server()
    f = Factories(tmp_path)
    try:
        yield start_stack(f, tmp_path, envoy=False, istiod_args=(
            "--xds-tls-cert", str(server.cert), "--xds-tls-key", str(server.key), "--xds-client-ca", str(pki.ca_file),
            "--xds-trust-domain", TD)), f
    finally:
        f.stop_all()


async def first_cds(port: int, credentials: grpc.ChannelCredentials | None, waypoint: str = WAYPOINT):
    """Open a Delta ADS stream, ask for clusters; return the first response (or raise grpc.aio.AioRpcError)."""
    target = f"127.0.0.1:{port}"
    channel = (grpc.aio.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
               if credentials is not None else grpc.aio.insecure_channel(target))
    async with channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
        req.node.CopyFrom(make_node(f"{waypoint}~test", waypoint))
        await call.write(req)
        try:
            return await asyncio.wait_for(call.read(), 10)
        finally:
            call.cancel()


def client_credentials(pki: Pki, certs=None) -> grpc.ChannelCredentials:
    if certs is None:
        return grpc.ssl_channel_credentials(pki.ca_file.read_bytes())
    return grpc.ssl_channel_credentials(pki.ca_file.read_bytes(), certs.key.read_bytes(), certs.cert.read_bytes())


async def test_grpc_client_needs_a_valid_certificate_with_the_waypoint_identity(mtls_stack, pki, tmp_path):
    stack, _ = mtls_stack
    port = stack.istiod.xds_port
    # plaintext, TLS without a client certificate, and a certificate from another CA: no stream at all
    for creds in (None, client_credentials(pki), client_credentials(pki, Pki(tmp_path / "rogue").issue(
            "rogue", uris=(RIGHT_SPIFFE,)))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await first_cds(port, creds)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # a valid certificate of another workload: refused with a clear status
    other = pki.issue("reviews", uris=(f"spiffe://{TD}/ns/default/sa/reviews",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first_cds(port, client_credentials(pki, other))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "default/waypoint" in err.value.details() and "sa/reviews" in err.value.details()
    # a valid certificate of the waypoint asking for another waypoint's config: refused too
    right = pki.issue("waypoint", uris=(RIGHT_SPIFFE,))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first_cds(port, client_credentials(pki, right), waypoint="other/waypoint")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert metric(stack.istiod, "istiod_lite_xds_refused_streams_total") == 2
    # the right identity (SPIFFE URI or DNS SAN) gets config
    for certs in (right, pki.issue("waypoint-dns", dns=("waypoint.default.svc",))):
        resp = await first_cds(port, client_credentials(pki, certs))
        assert resp.type_url == CLUSTER
        assert "inbound-vip|9080|http|ratings.example.com" in {r.name for r in resp.resources}


def envoy_boot(xds_port: int, pki: Pki, certs=None) -> dict:
    return render_bootstrap(WAYPOINT, "127.0.0.1", xds_port, admin_address="127.0.0.1:0", xds_ca=str(pki.ca_file),
                            client_cert=str(certs.cert) if certs else None,
                            client_key=str(certs.key) if certs else None, sni="localhost")


def test_real_envoy_over_mtls(mtls_stack, pki):
    stack, f = mtls_stack
    port = stack.istiod.xds_port
    # no client certificate: the TLS handshake fails, Envoy never gets a stream
    anonymous = f.envoy(envoy_boot(port, pki), name="envoy-anonymous")
    anonymous.wait_stats(lambda s: s.get("cluster.xds-grpc.upstream_cx_connect_fail", 0)
                         + s.get("cluster.xds-grpc.ssl.connection_error", 0) >= 2,
                         filter_regex="xds-grpc", what="failed TLS connections to the xDS server")
    # a certificate for another workload: the stream is refused (PERMISSION_DENIED)
    intruder = f.envoy(envoy_boot(port, pki, pki.issue("ratings", uris=(f"spiffe://{TD}/ns/default/sa/ratings",))),
                       name="envoy-intruder")
    wait_until(lambda: metric(stack.istiod, "istiod_lite_xds_refused_streams_total") >= 1, 20,
               message=stack.diagnostics)
    # the waypoint's own certificate: config arrives and traffic is routed
    good = f.envoy(envoy_boot(port, pki, pki.issue("waypoint", uris=(RIGHT_SPIFFE,))), name="envoy-waypoint")
    good.wait_listener(stack.listener_port)
    wait_until(lambda: request(stack.listener_port, host="reviews", timeout=2).status == 200, 20)
    for envoy in (anonymous, intruder):
        assert envoy.stat("control_plane.connected_state") == 0
        assert envoy.active_listener_ports() == set()
    assert "PERMISSION_DENIED" not in good.proc.log_text()


async def test_rotated_server_certificate_is_served_without_a_restart(mtls_stack, pki, tmp_path):
    """The xDS certificate files are re-read at new handshakes (xds/tls.py ReloadingFiles): after a rotation to a
    certificate from another CA, new clients that trust only the new CA connect; a half-done rotation (a new key
    whose certificate is not written yet) keeps serving the previous pair."""
    import os

    stack, _ = mtls_stack
    port = stack.istiod.xds_port
    waypoint = pki.issue("waypoint", uris=(RIGHT_SPIFFE,))
    new_ca = Pki(tmp_path / "rotated", name="rotated-ca")
    rotated = new_ca.server()
    trusting_new = grpc.ssl_channel_credentials(new_ca.ca_file.read_bytes(), waypoint.key.read_bytes(),
                                                waypoint.cert.read_bytes())
    with pytest.raises(grpc.aio.AioRpcError):  # the server still presents the old CA's certificate
        await first_cds(port, trusting_new)
    served_cert, served_key = pki.dir / "istiod.crt", pki.dir / "istiod.key"
    os.replace(rotated.key, served_key)  # half-done: the key changed, the certificate not yet
    resp = await first_cds(port, client_credentials(pki, waypoint))  # previous pair still served
    assert resp.type_url == CLUSTER
    os.replace(rotated.cert, served_cert)
    resp = await first_cds(port, trusting_new)
    assert resp.type_url == CLUSTER
    with pytest.raises(grpc.aio.AioRpcError):  # and the old CA's certificate is gone
        await first_cds(port, client_credentials(pki, waypoint))
