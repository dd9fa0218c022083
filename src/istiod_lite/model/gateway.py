"""Gateway API Gateways (waypoints are those of class istio-waypoint) and their listeners."""

from __future__ import annotations

from dataclasses import dataclass

from istiod_lite.model.meta import ConfigKey, ObjectMeta

WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_CLASSES = frozenset({WAYPOINT_CLASS, "istiod-lite-waypoint"})
HBONE_PORT = 15008


@dataclass(frozen=True, order=True, slots=True)
class GatewayListener:
    name: str
    port: int
    protocol: str  # HTTP | TCP | HBONE | HTTPS | TLS ...
    hostname: str | None = None
    allowed_routes_from: str = "Same"  # Same | All | Selector


@dataclass(frozen=True, slots=True)
class Gateway:
    meta: ObjectMeta
    class_name: str
    listeners: tuple[GatewayListener, ...]
    addresses: tuple[str, ...] = ()  # spec.addresses of type IPAddress

    @property
    def key(self) -> ConfigKey:
        return self.meta.key

    @property
    def is_waypoint(self) -> bool:
        return self.class_name in WAYPOINT_CLASSES

    @property
    def waypoint_for(self) -> str:
        """`istio.io/waypoint-for` label: service (default), workload, all, none."""
        return self.meta.label("istio.io/waypoint-for") or "service"
