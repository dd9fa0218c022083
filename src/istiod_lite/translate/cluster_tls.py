"""DestinationRule ``tls`` -> the cluster's upstream transport socket (Istio ``cluster_tls.go``
``buildUpstreamTLSSettings`` / ``applyUpstreamTLSSettings``, as applied at a waypoint).

- ``DISABLE``: plain text (nothing to do);
- ``ISTIO_MUTUAL``: ignored at a waypoint, as Istio does (the HBONE hop is already mutual TLS); reported, since
  istiod-lite has no mesh identity yet, so the upstream hop stays plain text;
- ``SIMPLE``: ``UpstreamTlsContext`` with ``sni``; ``caCertificates`` -> ``trusted_ca`` file (absent -> the
  system roots, Istio's ``"system"``), ``caCrl`` -> ``crl`` file, ``subjectAltNames`` ->
  ``match_typed_subject_alt_names`` (URI for ``spiffe://`` names, else DNS); ``insecureSkipVerify`` -> no
  validation context at all;
- ``MUTUAL``: SIMPLE plus ``clientCertificate`` / ``privateKey`` files as the client certificate;
- ``credentialName``: needs a secret source (SDS) istiod-lite does not have: reported, the TLS context is
  built from the other fields;
- no ``sni``: the request's host is used (``auto_sni``) and, unless SANs are given or verification is skipped,
  the certificate is checked against it (``auto_san_validation``): cluster_policy.UpstreamTls;
- ``trafficPolicy.proxyProtocol`` -> the upstream PROXY protocol socket around the TLS / raw socket.
"""

from __future__ import annotations

from typing import Any, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2 as core_base
from envoy.config.core.v3 import proxy_protocol_pb2 as proxy_config_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2 as proxy_protocol_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import any_pb2

from istiod_lite.translate.cluster_policy import UpstreamTls

TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
PROXY_PROTOCOL_SOCKET = "envoy.transport_sockets.upstream_proxy_protocol"
ORIGINATING_MODES = frozenset({"SIMPLE", "MUTUAL"})


def _san_matcher(name: str) -> common_pb2.SubjectAltNameMatcher:
    san_type = common_pb2.SubjectAltNameMatcher.URI if name.startswith("spiffe://") \
        else common_pb2.SubjectAltNameMatcher.DNS
    m = common_pb2.SubjectAltNameMatcher(san_type=san_type)
    m.matcher.exact = name
    return m


def upstream_tls_context(tls: Mapping[str, Any]) -> tls_pb2.UpstreamTlsContext:
    ctx = tls_pb2.UpstreamTlsContext()
    if tls.get("sni"):
        ctx.sni = str(tls["sni"])
    common = ctx.common_tls_context
    if tls.get("mode") == "MUTUAL" and tls.get("clientCertificate") and tls.get("privateKey"):
        cert = common.tls_certificates.add()
        cert.certificate_chain.filename = str(tls["clientCertificate"])
        cert.private_key.filename = str(tls["privateKey"])
    if not tls.get("insecureSkipVerify"):
        vc = common.validation_context
        if tls.get("caCertificates"):
            vc.trusted_ca.filename = str(tls["caCertificates"])
        else:
            vc.system_root_certs.SetInParent()
        if tls.get("caCrl"):
            vc.crl.filename = str(tls["caCrl"])
        for name in tls.get("subjectAltNames") or ():
            vc.match_typed_subject_alt_names.append(_san_matcher(str(name)))
    return ctx


def apply_upstream_tls(c: cluster_pb2.Cluster, tls: Mapping[str, Any] | None) -> UpstreamTls:
    """Sets the TLS transport socket for SIMPLE/MUTUAL; returns what the HTTP protocol options need."""
    if not tls or tls.get("mode") not in ORIGINATING_MODES:
        return UpstreamTls()
    ctx = upstream_tls_context(tls)
    packed = any_pb2.Any()
    packed.Pack(ctx)
    c.transport_socket.name = TLS_SOCKET
    c.transport_socket.typed_config.CopyFrom(packed)
    if tls.get("sni"):
        return UpstreamTls()
    verify = not tls.get("insecureSkipVerify") and not tls.get("subjectAltNames")
    return UpstreamTls(auto_sni=True, auto_san_validation=verify)


def apply_proxy_protocol(c: cluster_pb2.Cluster, proxy_protocol: Mapping[str, Any] | None) -> None:
    """``trafficPolicy.proxyProtocol{version}`` -> the upstream PROXY-protocol transport socket wrapping the
    current one (TLS or raw buffer), as Istio ``applyUpstreamProxyProtocol``."""
    if proxy_protocol is None:
        return
    inner = core_base.TransportSocket()
    if c.HasField("transport_socket"):
        inner.CopyFrom(c.transport_socket)
    else:
        inner.name = RAW_BUFFER_SOCKET
        inner.typed_config.Pack(raw_buffer_pb2.RawBuffer())
    wrapper = proxy_protocol_pb2.ProxyProtocolUpstreamTransport(transport_socket=inner)
    wrapper.config.version = (proxy_config_pb2.ProxyProtocolConfig.V2 if proxy_protocol.get("version") == "V2"
                              else proxy_config_pb2.ProxyProtocolConfig.V1)
    c.transport_socket.Clear()
    c.transport_socket.name = PROXY_PROTOCOL_SOCKET
    c.transport_socket.typed_config.Pack(wrapper)
