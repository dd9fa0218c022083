"""Current certificates per SPIFFE identity, rotated at half-life.

`WorkloadCertificates.current(spiffe)` returns the certificate to serve now, issuing a new one when there is
none or when the current one has passed half its lifetime (Istio's default rotation point). Overlap is what
makes rotation free of connection drops: the old certificate is still valid for the second half of its life,
so Envoy's connections established with it keep working while new handshakes use the new one (Envoy swaps
SDS secrets without closing connections). `next_rotation()` tells the app when to wake up. The clock is
injected (tests pass a fake one).
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Callable

from istiod_lite.identity.ca import CertificateAuthority, IssuedCertificate

Clock = Callable[[], dt.datetime]
MIN_LIFETIME = dt.timedelta(seconds=2)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class WorkloadCertificates:
    def __init__(self, ca: CertificateAuthority, lifetime: dt.timedelta = dt.timedelta(hours=24),
                 clock: Clock = utc_now) -> None:
        if lifetime < MIN_LIFETIME:
            raise ValueError(f"certificate lifetime must be at least {MIN_LIFETIME.total_seconds():g}s")
        self.ca = ca
        self.lifetime = lifetime
        self._clock = clock
        self._certs: dict[str, IssuedCertificate] = {}
        self._lock = threading.Lock()
        self.issued = 0  # certificates issued so far (metrics, tests)

    def current(self, spiffe: str) -> IssuedCertificate:
        now = self._clock()
        with self._lock:
            cert = self._certs.get(spiffe)
            if cert is None or now >= cert.rotate_at():
                cert = self.ca.issue(spiffe, self.lifetime, now)
                self._certs[spiffe] = cert
                self.issued += 1
            return cert

    def retain(self, spiffe_ids: set[str]) -> None:
        """Forget certificates of identities no longer served."""
        with self._lock:
            for key in set(self._certs) - spiffe_ids:
                del self._certs[key]

    def next_rotation(self) -> dt.datetime | None:
        with self._lock:
            return min((c.rotate_at() for c in self._certs.values()), default=None)

    def due(self) -> bool:
        nxt = self.next_rotation()
        return nxt is not None and self._clock() >= nxt
