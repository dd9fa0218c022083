"""ConfigSnapshot: one immutable, indexed view of all valid configuration, handed to the translator."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

from istiod_lite.model.gateway import Gateway
from istiod_lite.model.hosts import host_matches
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, ObjectMeta
from istiod_lite.model.service import Service


@dataclass(frozen=True)
class ConfigSnapshot:
    """All valid objects at one point in time. Built by the ConfigStore; never mutated.

    Lists are sorted (by key, then hostname) so everything derived from a snapshot is deterministic.
    Objects that failed validation are absent; their problems are in `issues`.
    """

    version: int = 0
    namespaces: Mapping[str, ObjectMeta] = field(default_factory=dict)
    gateways: tuple[Gateway, ...] = ()
    services: tuple[Service, ...] = ()
    virtual_services: tuple[IstioConfig, ...] = ()
    destination_rules: tuple[IstioConfig, ...] = ()
    authorization_policies: tuple[IstioConfig, ...] = ()
    issues: tuple[Issue, ...] = ()
    root_namespace: str = "istio-system"
    domain_suffix: str = "cluster.local"

    # ---- indexes -------------------------------------------------------------------------------
    @cached_property
    def _gateways_by_key(self) -> dict[ConfigKey, Gateway]:
        return {g.key: g for g in self.gateways}

    @cached_property
    def _services_by_host(self) -> dict[str, list[Service]]:
        out: dict[str, list[Service]] = {}
        for s in self.services:
            out.setdefault(s.hostname.lower(), []).append(s)
        return out

    @cached_property
    def _services_by_waypoint(self) -> dict[ConfigKey, tuple[Service, ...]]:
        out: dict[ConfigKey, list[Service]] = {}
        for s in self.services:
            if s.waypoint is not None:
                out.setdefault(s.waypoint, []).append(s)
        return {k: tuple(v) for k, v in out.items()}

    # ---- queries -------------------------------------------------------------------------------
    def waypoints(self) -> tuple[Gateway, ...]:
        return tuple(g for g in self.gateways if g.is_waypoint)

    def gateway(self, key: ConfigKey) -> Gateway | None:
        return self._gateways_by_key.get(key)

    def services_for_waypoint(self, waypoint: ConfigKey) -> tuple[Service, ...]:
        """Services bound to the waypoint (label istio.io/use-waypoint on the service or its namespace)."""
        return self._services_by_waypoint.get(waypoint, ())

    def service(self, hostname: str, namespace: str | None = None) -> Service | None:
        """The service with this exact hostname; Kubernetes Services win over ServiceEntries, then the
        one in `namespace`, then the oldest key."""
        candidates = self._services_by_host.get(hostname.lower(), [])
        if not candidates:
            return None

        def rank(s: Service) -> tuple:
            return (0 if s.is_kubernetes else 1, 0 if s.namespace == namespace else 1, s.key)

        return min(candidates, key=rank)

    def services_matching(self, pattern: str) -> tuple[Service, ...]:
        """Services whose hostname matches a host pattern (exact or wildcard)."""
        if "*" not in pattern:
            return tuple(self._services_by_host.get(pattern.lower(), ()))
        return tuple(s for s in self.services if host_matches(pattern, s.hostname))

    def issues_for(self, key: ConfigKey) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.key == key)
