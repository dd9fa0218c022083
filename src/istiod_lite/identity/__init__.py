"""The identity room: istiod-lite's mesh CA and the waypoint certificates it issues.

- ca.py        `CertificateAuthority`: Istio's plug-in CA layout in a directory (``ca-cert.pem``, ``ca-key.pem``,
               ``root-cert.pem``, ``cert-chain.pem``), loaded when present, else a self-signed root generated
               (and written there when a directory is given); issues SPIFFE X.509 certificates
               ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``.
- rotation.py  `WorkloadCertificates`: one current certificate per SPIFFE identity, re-issued at half-life
               (clock injected), so the app can serve them over SDS.

Imports the standard library and `cryptography` only (import-linter contract). Private keys never leave
this room except as the PEM handed to the SDS Secret of the entitled waypoint; `repr()` of issued
certificates never shows a key.
"""

from istiod_lite.identity.ca import CertificateAuthority, IssuedCertificate, spiffe_id
from istiod_lite.identity.rotation import WorkloadCertificates

__all__ = ["CertificateAuthority", "IssuedCertificate", "WorkloadCertificates", "spiffe_id"]
