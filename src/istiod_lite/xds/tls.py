"""TLS for the xDS port: server credentials (TLS, or mTLS with a client CA) and the peer-identity check that
entitles a proxy to one group's config.

Identity rule (Istio's): with mTLS, a proxy asking for the group "NS/NAME" must present a client certificate
whose SPIFFE URI SAN is `spiffe://<trust domain>/ns/NS/sa/SA`, or whose DNS SAN is `SA.NS`, `SA.NS.svc` or
`SA.NS.svc.<suffix>`, where SA is the waypoint's ServiceAccount (by default the waypoint name, as Istio
names a waypoint's ServiceAccount after its Gateway). Generic machinery: groups are plain "ns/name" strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import grpc

# grpc core's auth-context property names for the peer certificate's SANs
_SAN_PROPERTIES = ("x509_subject_alternative_name", "peer_dns", "peer_uri")


@dataclass(frozen=True)
class TlsConfig:
    """Files of the xDS server's certificate; `client_ca` set means mTLS (client certificates required)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    trust_domain: str | None = None  # None: any trust domain is accepted in SPIFFE IDs

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


def server_credentials(config: TlsConfig) -> grpc.ServerCredentials:
    """grpc server credentials; raises ValueError naming the file when one cannot be read."""
    key = _read(config.key_file, "--xds-tls-key")
    cert = _read(config.cert_file, "--xds-tls-cert")
    ca = _read(config.client_ca_file, "--xds-client-ca") if config.client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from exc


def peer_identities(auth_context: Mapping[str, Sequence[bytes]]) -> list[str]:
    """The SANs (URIs and DNS names) of the peer certificate, from grpc's `context.auth_context()`."""
    out: list[str] = []
    for prop in _SAN_PROPERTIES:
        for value in auth_context.get(prop, ()):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if text not in out:
                out.append(text)
    return out


def expected_identities(group: str, trust_domain: str | None = None,
                        service_account: Callable[[str, str], str] | None = None) -> tuple[str, str]:
    """(SPIFFE pattern, DNS name) a proxy of `group` ("ns/name") must present, for error messages."""
    ns, _, name = group.partition("/")
    sa = service_account(ns, name) if service_account else name
    return f"spiffe://{trust_domain or '<trust-domain>'}/ns/{ns}/sa/{sa}", f"{sa}.{ns}[.svc[.<suffix>]]"


def identity_matches(identity: str, group: str, trust_domain: str | None = None,
                     service_account: Callable[[str, str], str] | None = None) -> bool:
    ns, sep, name = group.partition("/")
    if not sep:
        return False
    sa = service_account(ns, name) if service_account else name
    if identity.startswith("spiffe://"):
        td, _, path = identity[len("spiffe://"):].partition("/")
        if trust_domain is not None and td != trust_domain:
            return False
        return path == f"ns/{ns}/sa/{sa}"
    if "://" in identity or "@" in identity:
        return False
    labels = identity.lower().rstrip(".").split(".")
    if labels[:2] != [sa.lower(), ns.lower()]:
        return False
    return len(labels) == 2 or labels[2] == "svc"


class PeerAuthorizer:
    """`check(auth_context, group) -> None | error text`: the stream may receive `group`'s config iff the
    peer certificate carries a matching identity."""

    def __init__(self, trust_domain: str | None = None,
                 service_account: Callable[[str, str], str] | None = None) -> None:
        self.trust_domain = trust_domain
        self.service_account = service_account

    def check(self, auth_context: Mapping[str, Sequence[bytes]], group: str) -> str | None:
        identities = peer_identities(auth_context)
        if any(identity_matches(i, group, self.trust_domain, self.service_account) for i in identities):
            return None
        spiffe, dns = expected_identities(group, self.trust_domain, self.service_account)
        seen = ", ".join(identities) if identities else "no certificate identity (no URI or DNS SAN)"
        return (f"client certificate identity does not entitle this proxy to waypoint {group!r}: got {seen}; "
                f"expected a URI SAN {spiffe} or a DNS SAN {dns}")
