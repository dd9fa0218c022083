"""The mesh CA (istiod_lite.identity): Istio's plug-in CA layout, the generated self-signed root, SPIFFE leaf
certificates that verify against the root, and half-life rotation with an injected clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from istiod_lite.identity import CertificateAuthority, WorkloadCertificates, spiffe_id
from istiod_lite.identity.ca import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
ID = "spiffe://cluster.local/ns/default/sa/waypoint"


def _chain(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _verify(leaf: x509.Certificate, issuer: x509.Certificate) -> None:
    issuer.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
    assert leaf.issuer == issuer.subject


def test_issued_certificate_is_a_spiffe_leaf_of_the_root() -> None:
    ca = CertificateAuthority.self_signed("cluster.local", NOW)
    cert = ca.issue(ID, dt.timedelta(hours=24), NOW)
    leaf, *rest = _chain(cert.chain_pem)
    root = x509.load_pem_x509_certificate(ca.root_pem)
    _verify(leaf, root)
    assert rest == [root]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [ID]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(hours=24)
    assert cert.rotate_at() == NOW + dt.timedelta(hours=12)
    key = serialization.load_pem_private_key(cert.key_pem, None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert "PRIVATE" not in repr(cert) and "key_pem" not in repr(cert)


def test_refuses_identities_of_another_trust_domain() -> None:
    ca = CertificateAuthority.self_signed("cluster.local")
    with pytest.raises(ValueError):
        ca.issue("spiffe://other.domain/ns/default/sa/x", dt.timedelta(hours=1))


def test_generated_root_is_kept_in_ca_dir_and_reused(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create("cluster.local", tmp_path / "ca")
    files = sorted(p.name for p in (tmp_path / "ca").iterdir())
    assert files == sorted([CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN])
    assert (tmp_path / "ca" / CA_KEY).stat().st_mode & 0o077 == 0
    second = CertificateAuthority.load_or_create("cluster.local", tmp_path / "ca")
    assert second.root_pem == first.root_pem and second.source.startswith("plugin:")
    leaf = _chain(second.issue(ID, dt.timedelta(hours=1)).chain_pem)[0]
    _verify(leaf, x509.load_pem_x509_certificate(first.root_pem))


def _write_plugin_ca(folder: Path) -> x509.Certificate:
    """Istio's plug-in layout with an intermediate: root -> ca-cert (signing), cert-chain = ca-cert + root."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    inter = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mesh ca")]))
             .issuer_name(root_name).public_key(key.public_key()).serial_number(2).not_valid_before(start)
             .not_valid_after(start + dt.timedelta(days=10))
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .sign(root_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    folder.mkdir()
    (folder / CA_CERT).write_bytes(pem(inter))
    (folder / CA_KEY).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    (folder / ROOT_CERT).write_bytes(pem(root))
    (folder / CERT_CHAIN).write_bytes(pem(inter) + pem(root))
    return root


def test_plugin_ca_with_intermediate_chains_to_the_existing_root(tmp_path: Path) -> None:
    root = _write_plugin_ca(tmp_path / "cacerts")
    ca = CertificateAuthority.load_or_create("cluster.local", tmp_path / "cacerts")
    assert x509.load_pem_x509_certificate(ca.root_pem) == root
    leaf, inter, last = _chain(ca.issue(ID, dt.timedelta(hours=1)).chain_pem)
    _verify(leaf, inter)
    _verify(inter, root)
    assert last == root


def test_mismatched_key_is_refused(tmp_path: Path) -> None:
    _write_plugin_ca(tmp_path / "cacerts")
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cacerts" / CA_KEY).write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ValueError, match="not the key"):
        CertificateAuthority.load_or_create("cluster.local", tmp_path / "cacerts")


def test_rotation_at_half_life() -> None:
    now = [NOW]
    certs = WorkloadCertificates(CertificateAuthority.self_signed("cluster.local", NOW), dt.timedelta(seconds=30),
                                 clock=lambda: now[0])
    first = certs.current(ID)
    now[0] = NOW + dt.timedelta(seconds=14)
    assert certs.current(ID) is first and not certs.due()
    assert certs.next_rotation() == NOW + dt.timedelta(seconds=15)
    now[0] = NOW + dt.timedelta(seconds=15)
    assert certs.due()
    second = certs.current(ID)
    assert second.serial != first.serial and second.not_after == now[0] + dt.timedelta(seconds=30)
    assert first.not_after > now[0], "the previous certificate is still valid: connections made with it survive"
    other = spiffe_id("cluster.local", "default", "other")
    certs.current(other)
    certs.retain({other})
    assert certs.issued == 3 and certs.next_rotation() == now[0] + dt.timedelta(seconds=15)


def test_lifetime_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        WorkloadCertificates(CertificateAuthority.self_signed("cluster.local"), dt.timedelta(seconds=1))
