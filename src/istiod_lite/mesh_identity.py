"""Composition-root glue between the identity room (the CA) and the xDS resources of a waypoint: each
waypoint served with an HBONE listener gets its certificate and the mesh root as SDS Secrets on its own
ADS stream (translate never sees the CA; the app adds these after translation).

Identity of a waypoint: ``spiffe://<trust domain>/ns/<gateway namespace>/sa/<service account>``, the service
account being the Gateway's name (what istiod deploys for a waypoint), or its annotation
``istiod-lite.io/service-account``.

Who receives which certificate: resources are grouped per waypoint and a proxy receives only the group its
node names (node metadata WAYPOINT or node id ``ns/name~...``, app.waypoint_of_node). That entitlement is
only as strong as the proof of who the proxy is: serve xDS with mTLS and a client CA (``--xds-client-ca``),
so the client certificate's SAN must match the waypoint requested (xds/tls.py PeerAuthorizer) before any
Secret is sent. Without xDS mTLS any local client could ask for any waypoint's key: use it only on loopback.
Private keys appear only inside the Secret resources sent on that stream, never in logs or /debug output.

The CA (and the `cryptography` import, ~10 MB together) is created on first use, i.e. when a waypoint first
serves HBONE; a configured ``--ca-dir`` is still loaded at start-up, so unusable CA files fail early.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable, Mapping

from google.protobuf.message import Message

from istiod_lite.model.gateway import Gateway
from istiod_lite.settings import Settings
from istiod_lite.translate.hbone_listeners import CONNECT_TERMINATE
from istiod_lite.translate.hbone_tls import secrets
from istiod_lite.xds import types

SERVICE_ACCOUNT_ANNOTATION = "istiod-lite.io/service-account"
MAX_SLEEP = 60.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class WaypointSecrets:
    def __init__(self, settings: Settings, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.trust_domain = settings.trust_domain
        self._settings = settings
        self._clock = clock
        self._ca: Any = None
        self._certs: Any = None  # WorkloadCertificates, created with the CA
        self._secrets: dict[str, tuple[object, Mapping[str, Message]]] = {}  # SPIFFE ID -> (cert, its Secrets)
        if settings.ca_dir:
            self._load()

    def _load(self) -> None:
        from istiod_lite.identity import CertificateAuthority, WorkloadCertificates  # imports cryptography

        self._ca = CertificateAuthority.load_or_create(self.trust_domain, self._settings.ca_dir)
        self._certs = WorkloadCertificates(self._ca, dt.timedelta(seconds=self._settings.cert_lifetime),
                                           self._clock)

    @property
    def ca(self) -> Any:
        if self._ca is None:
            self._load()
        return self._ca

    @property
    def certs(self) -> Any:
        if self._certs is None:
            self._load()
        return self._certs

    def identity(self, gateway: Gateway) -> str:
        sa = gateway.meta.annotation(SERVICE_ACCOUNT_ANNOTATION) or gateway.key.name
        return f"spiffe://{self.trust_domain}/ns/{gateway.key.namespace}/sa/{sa}"  # identity.ca.spiffe_id

    def add(self, gateway: Gateway, resources: Mapping[str, Mapping[str, Message]]) -> Mapping[str, Mapping[str, Message]]:
        """`resources` plus the waypoint's Secrets when it serves HBONE (else the very same mapping). O(types):
        the Secret messages are built once per certificate."""
        if CONNECT_TERMINATE not in resources.get(types.LISTENER, {}):
            return resources
        spiffe = self.identity(gateway)
        cert = self.certs.current(spiffe)
        built = self._secrets.get(spiffe)
        if built is None or built[0] is not cert:  # the same Secret objects until rotation: the cache skips them
            built = self._secrets[spiffe] = (cert, secrets(cert.chain_pem, cert.key_pem, self.ca.root_pem))
        return {**resources, types.SECRET: built[1]}

    def retain(self, gateways: Iterable[Gateway]) -> None:
        keep = {self.identity(g) for g in gateways}
        if self._certs is not None:
            self._certs.retain(keep)
        for spiffe in [s for s in self._secrets if s not in keep]:
            del self._secrets[spiffe]

    def due(self) -> bool:
        return self._certs is not None and self._certs.due()

    def seconds_until_rotation(self) -> float:
        nxt = self._certs.next_rotation() if self._certs is not None else None
        if nxt is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.05, (nxt - self._clock()).total_seconds()))
