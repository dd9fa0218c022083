"""The mesh CA: load Istio's plug-in CA files or create a self-signed root, and sign SPIFFE leaf certificates.

Plug-in CA layout (Istio ``cacerts`` secret, https://istio.io/latest/docs/tasks/security/cert-management/plugin-ca-cert/):
``ca-cert.pem`` (the signing certificate, often an intermediate), ``ca-key.pem`` (its key), ``root-cert.pem``
(the mesh trust anchor) and ``cert-chain.pem`` (ca-cert up to the root). Leaf chains are ``leaf + cert-chain``,
so certificates issued here verify against the same root as an existing Istio mesh using those files.

Without files a self-signed root (ECDSA P-256, 10 years) is generated; with a directory it is written there
(key file mode 0600) and reused on the next start. Leaf certificates: ECDSA P-256, URI SAN = the SPIFFE id,
digitalSignature + keyEncipherment, serverAuth + clientAuth, not_before backdated 60 s for clock skew.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
ROOT_LIFETIME = dt.timedelta(days=3650)
CLOCK_SKEW = dt.timedelta(seconds=60)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate: `chain_pem` is leaf + CA chain, `key_pem` its private key (kept out of repr)."""

    spiffe_id: str
    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before

    def rotate_at(self) -> dt.datetime:
        """Half-life of the validity actually granted (from issue time, not the backdated not_before)."""
        issued = self.not_before + CLOCK_SKEW
        return issued + (self.not_after - issued) / 2


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CertificateAuthority:
    """Signs SPIFFE certificates for one trust domain. Build with `load_or_create` (or `self_signed`)."""

    def __init__(self, trust_domain: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                 root_pem: bytes, chain_pem: bytes, source: str) -> None:
        self.trust_domain = trust_domain
        self._cert = ca_cert
        self._key = ca_key
        self.root_pem = root_pem
        self.chain_pem = chain_pem  # ca-cert .. root, appended to every leaf
        self.source = source  # "plugin:<dir>", "generated:<dir>" or "generated (in memory)"

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.trust_domain!r}, {self.source})"

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def self_signed(cls, trust_domain: str, now: dt.datetime | None = None) -> "CertificateAuthority":
        cert, key = _new_root(trust_domain, now or _utcnow())
        pem = _pem(cert)
        return cls(trust_domain, cert, key, pem, pem, "generated (in memory)")

    @classmethod
    def load_or_create(cls, trust_domain: str, ca_dir: str | Path | None) -> "CertificateAuthority":
        """Plug-in CA files from `ca_dir` when ``ca-cert.pem`` and ``ca-key.pem`` exist; else a new self-signed
        root, written to `ca_dir` when given. Raises ValueError when the files are unusable."""
        if ca_dir is None:
            return cls.self_signed(trust_domain)
        folder = Path(ca_dir)
        if (folder / CA_CERT).exists() and (folder / CA_KEY).exists():
            return cls._load(trust_domain, folder)
        ca = cls.self_signed(trust_domain)
        folder.mkdir(parents=True, exist_ok=True)
        key_path = folder / CA_KEY
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_key_pem(ca._key))
        for name, data in ((CA_CERT, _pem(ca._cert)), (ROOT_CERT, ca.root_pem), (CERT_CHAIN, ca.chain_pem)):
            (folder / name).write_bytes(data)
        ca.source = f"generated:{folder}"
        return ca

    @classmethod
    def _load(cls, trust_domain: str, folder: Path) -> "CertificateAuthority":
        try:
            cert_pem = (folder / CA_CERT).read_bytes()
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load the CA from {folder}: {exc}") from exc
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise ValueError(f"{folder / CA_KEY} is not the key of {folder / CA_CERT}")
        root_path, chain_path = folder / ROOT_CERT, folder / CERT_CHAIN
        root_pem = root_path.read_bytes() if root_path.exists() else cert_pem
        chain_pem = chain_path.read_bytes() if chain_path.exists() and chain_path.read_bytes().strip() else cert_pem
        if not chain_pem.endswith(b"\n"):
            chain_pem += b"\n"
        return cls(trust_domain, cert, key, root_pem, chain_pem, f"plugin:{folder}")

    # ---- issuing --------------------------------------------------------------------------------
    def issue(self, spiffe: str, lifetime: dt.timedelta, now: dt.datetime | None = None) -> IssuedCertificate:
        """A new key pair and leaf certificate for `spiffe` valid for `lifetime` from `now`."""
        if not spiffe.startswith(f"spiffe://{self.trust_domain}/"):
            raise ValueError(f"{spiffe!r} is not in trust domain {self.trust_domain!r}")
        now = now or _utcnow()
        key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = now - CLOCK_SKEW, now + lifetime
        not_after = min(not_after, self._cert.not_valid_after_utc)
        serial = x509.random_serial_number()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([]))
                   .issuer_name(self._cert.subject)
                   .public_key(key.public_key())
                   .serial_number(serial)
                   .not_valid_before(not_before)
                   .not_valid_after(not_after)
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]),
                                  critical=True)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                                content_commitment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                                  critical=False))
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(spiffe, _pem(cert) + self.chain_pem, _key_pem(key), not_before, not_after, serial)


def _new_root(trust_domain: str, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, "istiod-lite mesh root")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key
