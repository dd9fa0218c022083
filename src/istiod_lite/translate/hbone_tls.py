"""TLS of the HBONE data path: the waypoint's mTLS contexts and the SDS Secrets that feed them.

Both contexts take their certificate (Secret ``default``, Istio's name for the workload certificate) and the
mesh root (Secret ``ROOTCA``) by SDS over the ADS stream, so a rotation changes two Secrets and never a
listener or cluster. TLS 1.3 only (min and max: an upstream context with min alone keeps the default max 1.2
and fails), ALPN h2. Peers are verified against the mesh root and a URI SAN prefix:

- downstream (``connect_terminate``): any identity of the trust domain, ``spiffe://<td>/``, client cert required;
- upstream (``connect_originate``): a workload identity of the trust domain, ``spiffe://<td>/ns/``.

`secrets()` builds the two Secret resources from PEM bytes: translate never sees the CA (identity room); the
app asks the CA for the waypoint's certificate and adds these to the waypoint's resources.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
TLS_SOCKET = "envoy.transport_sockets.tls"
ALPN = ("h2",)


def _ads() -> config_source_pb2.ConfigSource:
    src = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    src.ads.SetInParent()
    return src


def _common(san_prefix: str) -> tls_pb2.CommonTlsContext:
    ctx = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
                                            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3),
        alpn_protocols=list(ALPN))
    ctx.tls_certificate_sds_secret_configs.add(name=WORKLOAD_SECRET, sds_config=_ads())
    combined = ctx.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.add(
        san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=string_pb2.StringMatcher(prefix=san_prefix))
    combined.validation_context_sds_secret_config.name = ROOT_SECRET
    combined.validation_context_sds_secret_config.sds_config.CopyFrom(_ads())
    return ctx


def downstream_socket(trust_domain: str) -> base_pb2.TransportSocket:
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=_common(f"spiffe://{trust_domain}/"))
    ctx.require_client_certificate.value = True
    sock = base_pb2.TransportSocket(name=TLS_SOCKET)
    sock.typed_config.Pack(ctx)
    return sock


def upstream_socket(trust_domain: str) -> base_pb2.TransportSocket:
    ctx = tls_pb2.UpstreamTlsContext(common_tls_context=_common(f"spiffe://{trust_domain}/ns/"))
    sock = base_pb2.TransportSocket(name=TLS_SOCKET)
    sock.typed_config.Pack(ctx)
    return sock


def secrets(chain_pem: bytes, key_pem: bytes, root_pem: bytes) -> dict[str, secret_pb2.Secret]:
    """The waypoint's SDS Secrets by name: its certificate chain + key, and the mesh root."""
    cert = secret_pb2.Secret(name=WORKLOAD_SECRET)
    cert.tls_certificate.certificate_chain.inline_bytes = chain_pem
    cert.tls_certificate.private_key.inline_bytes = key_pem
    root = secret_pb2.Secret(name=ROOT_SECRET)
    root.validation_context.trusted_ca.inline_bytes = root_pem
    return {ROOT_SECRET: root, WORKLOAD_SECRET: cert}
