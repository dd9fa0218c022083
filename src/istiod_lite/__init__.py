"""istiod-lite: a small control plane that drives real Envoy proxies as ambient-mesh L7 waypoints."""

__version__ = "0.1.0"
