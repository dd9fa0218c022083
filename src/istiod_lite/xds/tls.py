"""TLS for the xDS port: server credentials (TLS, or mTLS with a client CA) and the peer-identity check that
entitles a proxy to one group's config.

Identity rule (Istio's): with mTLS, a proxy asking for the group "NS/NAME" must present a client certificate
whose SPIFFE URI SAN is `spiffe://<trust domain>/ns/NS/sa/SA`, or whose DNS SAN is `SA.NS`, `SA.NS.svc` or
`SA.NS.svc.<suffix>`, where SA is the waypoint's ServiceAccount (by default the waypoint name, as Istio
names a waypoint's ServiceAccount after its Gateway). Generic machinery: groups are plain "ns/name" strings.

Rotation: the credentials re-read the three files when they change (checked at each new TLS handshake, as grpc's
dynamic credentials ask), so a certificate rotated on disk (cert-manager, a mounted Secret) is served to new
connections without a restart; open streams keep their session. A half-written rotation (the key not matching the
certificate yet, an unreadable file) keeps the previous files' configuration and is logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

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
    """grpc server credentials that follow the files; raises ValueError naming the file when one cannot be
    read or the key does not belong to the certificate."""
    files = ReloadingFiles(config)
    return grpc.dynamic_ssl_server_credentials(files.initial(), files.fetch,
                                               require_client_authentication=config.mutual)


class ReloadingFiles:
    """The xDS server's key, certificate and client CA, re-read when their (mtime, size, inode) change."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self._stamp: tuple = ()
        self.reloads = 0  # configurations loaded after the first (tests read it)

    def _paths(self) -> list[tuple[str, str]]:
        out = [(self.config.key_file, "--xds-tls-key"), (self.config.cert_file, "--xds-tls-cert")]
        if self.config.client_ca_file:
            out.append((self.config.client_ca_file, "--xds-client-ca"))
        return out

    def _current_stamp(self) -> tuple:
        stamp = []
        for path, _ in self._paths():
            try:
                st = os.stat(path)
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def _load(self):
        key, cert, *ca = (_read(path, flag) for path, flag in self._paths())
        _check_pair(key, cert)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca[0] if ca else None)

    def initial(self):
        self._stamp = self._current_stamp()
        return self._load()

    def fetch(self):
        """grpc's fetcher: a new configuration when the files changed and load cleanly, else None (keep)."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return None
        try:
            loaded = self._load()
        except ValueError as exc:
            log.warning("xDS TLS files changed but cannot be used yet (keeping the previous ones): %s", exc)
            return None
        self._stamp = stamp
        self.reloads += 1
        log.info("xDS TLS certificate reloaded from %s", self.config.cert_file)
        return loaded


def _check_pair(key_pem: bytes, cert_pem: bytes) -> None:
    """ValueError unless the private key belongs to the (first) certificate."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--xds-tls-key/--xds-tls-cert: cannot parse: {exc}") from exc
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
        raise ValueError("--xds-tls-key does not belong to --xds-tls-cert (public keys differ)")


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
