"""HBONE test helpers: certificates from istiod-lite's CA written as files, and static Envoy configs for the
two Envoys that stand in for ztunnels around a waypoint.

- `source_bootstrap`: the source ztunnel. One plain TCP listener per target ``VIP:port`` (clients speak HTTP
  to it); tcp_proxy tunnels each connection as an HTTP/2 CONNECT ``VIP:port`` over mTLS (TLS 1.3, ALPN h2,
  the given SPIFFE certificate) to the waypoint's HBONE address: exactly what ztunnel sends to a waypoint.
- `destination_bootstrap`: the destination ztunnel. HBONE in (mTLS, CONNECT terminated) on ``ip:port``; the
  CONNECT authority ``podIP:port`` selects a plain upstream (the backend on 127.0.0.1).
- `h2_connect`: a bare HTTP/2 CONNECT with the `h2` package over TLS, carrying one HTTP/1.1 request.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events

from istiod_lite.identity import CertificateAuthority, spiffe_id

TRUST_DOMAIN = "cluster.local"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HPO = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"}


@dataclass(frozen=True)
class CertFiles:
    spiffe: str
    chain: Path
    key: Path
    root: Path


def write_cert(ca: CertificateAuthority, folder: Path, namespace: str, sa: str,
               lifetime: dt.timedelta = dt.timedelta(hours=1)) -> CertFiles:
    ident = spiffe_id(ca.trust_domain, namespace, sa)
    cert = ca.issue(ident, lifetime)
    folder.mkdir(parents=True, exist_ok=True)
    paths = CertFiles(ident, folder / f"{sa}.chain.pem", folder / f"{sa}.key.pem", folder / f"{sa}.root.pem")
    paths.chain.write_bytes(cert.chain_pem)
    paths.key.write_bytes(cert.key_pem)
    paths.root.write_bytes(ca.root_pem)
    return paths


def _common_tls(cert: CertFiles, san_prefix: str) -> dict[str, Any]:
    return {
        "tls_params": TLS_PARAMS,
        "alpn_protocols": ["h2"],
        "tls_certificates": [{"certificate_chain": {"filename": str(cert.chain)},
                              "private_key": {"filename": str(cert.key)}}],
        "validation_context": {"trusted_ca": {"filename": str(cert.root)},
                               "match_typed_subject_alt_names": [{"san_type": "URI",
                                                                  "matcher": {"prefix": san_prefix}}]},
    }


def _addr(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def _static_cluster(name: str, ip: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _addr(ip, port)}}]}]}, **extra}


def _base(listeners: list, clusters: list, node: str) -> dict[str, Any]:
    return {"node": {"id": node, "cluster": node}, "admin": {"address": _addr("127.0.0.1", 0)},
            "static_resources": {"listeners": listeners, "clusters": clusters}}


def source_bootstrap(cert: CertFiles, waypoint: tuple[str, int], targets: dict[int, str]) -> dict[str, Any]:
    """`targets`: local listen port (127.0.0.1) -> ``VIP:port`` tunnelled to the waypoint."""
    listeners = []
    for port, authority in sorted(targets.items()):
        listeners.append({
            "name": f"to-{authority}", "address": _addr("127.0.0.1", port),
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": f"to-{authority}", "cluster": "waypoint",
                "tunneling_config": {"hostname": authority}}}]}],
        })
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": _common_tls(cert, f"spiffe://{TRUST_DOMAIN}/")}}
    cluster = _static_cluster("waypoint", *waypoint, transport_socket=tls, typed_extension_protocol_options={
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HPO, "explicit_http_config": {"http2_protocol_options": {"allow_connect": True}}}})
    return _base(listeners, [cluster], f"source-{cert.spiffe.rsplit('/', 1)[-1]}")


def destination_bootstrap(cert: CertFiles, listen: tuple[str, int], upstreams: dict[str, int]) -> dict[str, Any]:
    """`upstreams`: CONNECT authority ``podIP:port`` -> backend port on 127.0.0.1."""
    vhosts, clusters = [], []
    for authority, port in sorted(upstreams.items()):
        vhosts.append({"name": authority, "domains": [authority], "routes": [{
            "match": {"connect_matcher": {}},
            "route": {"cluster": f"pod-{port}", "timeout": "0s",
                      "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]})
        clusters.append(_static_cluster(f"pod-{port}", "127.0.0.1", port))
    hcm = {"@type": HCM, "stat_prefix": "hbone_in", "codec_type": "HTTP2",
           "http2_protocol_options": {"allow_connect": True}, "upgrade_configs": [{"upgrade_type": "CONNECT"}],
           "route_config": {"name": "hbone_in", "virtual_hosts": vhosts},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": _common_tls(cert, f"spiffe://{TRUST_DOMAIN}/")}}
    listener = {"name": "hbone_in", "address": _addr(*listen), "filter_chains": [{
        "transport_socket": tls,
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}
    return _base([listener], clusters, "destination")


def client_ssl_context(cert: CertFiles | None, root: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE identities have no DNS names; the chain is still verified
    ctx.load_verify_locations(str(root))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    if cert is not None:
        ctx.load_cert_chain(str(cert.chain), str(cert.key))
    return ctx


def h2_connect(address: tuple[str, int], ctx: ssl.SSLContext, authority: str, request: bytes,
               timeout: float = 10.0) -> tuple[int | None, bytes]:
    """A bare CONNECT `authority` over TLS + HTTP/2 (as ztunnel sends), then `request` as tunnel bytes.
    Returns (CONNECT response status or None when the stream was reset, bytes received in the tunnel)."""
    raw = socket.create_connection(address, timeout=timeout)
    with ctx.wrap_socket(raw) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":authority", authority)])
        sock.sendall(conn.data_to_send())
        status: int | None = None
        body = b""
        sent = False
        while True:
            data = sock.recv(65536)
            if not data:
                return status, body
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                    if status == 200 and not sent:
                        conn.send_data(sid, request)
                        sent = True
                    elif status != 200:
                        return status, body
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    if b"\r\n\r\n" in body and _complete(body):
                        return status, body
                elif isinstance(ev, (h2.events.StreamReset, h2.events.StreamEnded, h2.events.ConnectionTerminated)):
                    return status, body
            out = conn.data_to_send()
            if out:
                sock.sendall(out)


def _complete(response: bytes) -> bool:
    head, _, rest = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":", 1)[1])
    return False
