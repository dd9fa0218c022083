"""ConfigSnapshot: one immutable, indexed view of all valid configuration, handed to the translator.

Indexes (built lazily, once per snapshot, O(objects)) keep translation O(services): VirtualServices and
DestinationRules by resolved host (exact hosts in a dict, wildcard hosts in a short list), AuthorizationPolicies
by targetRef, Istio objects and issues by key. `changed` (set by the ConfigStore) names the model-level objects
that differ from the snapshot with version `base_version`; the incremental translator uses it to recompute only
what those objects affect (None: unknown, recompute everything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

from istiod_lite.model.gateway import Gateway
from istiod_lite.model.hosts import host_matches, resolve_short_name
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
    base_version: int | None = None  # the snapshot `changed` is relative to
    changed: frozenset[ConfigKey] | None = None  # model-level keys changed since base_version (None = unknown)

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

    @cached_property
    def _services_by_key(self) -> dict[ConfigKey, tuple[Service, ...]]:
        out: dict[ConfigKey, list[Service]] = {}
        for s in self.services:
            out.setdefault(s.key, []).append(s)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _config_by_key(self) -> dict[ConfigKey, IstioConfig]:
        return {c.key: c for c in (*self.virtual_services, *self.destination_rules, *self.authorization_policies)}

    @cached_property
    def _order(self) -> dict[ConfigKey, int]:
        """Position of each Istio object in its kind's snapshot order (creation time, key)."""
        out: dict[ConfigKey, int] = {}
        for items in (self.virtual_services, self.destination_rules, self.authorization_policies):
            out.update((c.key, i) for i, c in enumerate(items))
        return out

    @cached_property
    def _issues_by_key(self) -> dict[ConfigKey | None, tuple[Issue, ...]]:
        out: dict[ConfigKey | None, list[Issue]] = {}
        for i in self.issues:
            out.setdefault(i.key, []).append(i)
        return {k: tuple(v) for k, v in out.items()}

    def _host_index(self, items: tuple[IstioConfig, ...], hosts_of) -> tuple[dict[str, list[IstioConfig]],
                                                                             list[tuple[str, IstioConfig]]]:
        exact: dict[str, list[IstioConfig]] = {}
        wild: list[tuple[str, IstioConfig]] = []
        for c in items:
            for h in hosts_of(c):
                h = resolve_short_name(h, c.namespace, self.domain_suffix).lower()
                if h.startswith("*"):
                    wild.append((h, c))
                else:
                    bucket = exact.setdefault(h, [])
                    if not bucket or bucket[-1] is not c:
                        bucket.append(c)
        return exact, wild

    @cached_property
    def _vs_by_host(self):
        return self._host_index(self.virtual_services, lambda c: [str(h) for h in c.spec.get("hosts") or ()])

    @cached_property
    def _dr_by_host(self):
        return self._host_index(self.destination_rules, lambda c: [str(c.spec.get("host", ""))])

    @cached_property
    def _ap_by_target(self) -> dict[tuple[str, str, str], list[IstioConfig]]:
        """(targetRef kind, policy namespace, targetRef name) -> policies (snapshot order). Only refs whose
        namespace is unset or the policy's own are indexed (others never match)."""
        out: dict[tuple[str, str, str], list[IstioConfig]] = {}
        for p in self.authorization_policies:
            spec = p.spec if isinstance(p.spec, dict) else {}
            refs = spec.get("targetRefs")
            refs = [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []
            if isinstance(spec.get("targetRef"), dict):
                refs.append(spec["targetRef"])
            for r in refs:
                if r.get("namespace") not in (None, "", p.namespace):
                    continue
                bucket = out.setdefault((str(r.get("kind")), p.namespace, str(r.get("name"))), [])
                if not bucket or bucket[-1] is not p:
                    bucket.append(p)
        return out

    @cached_property
    def _ap_by_namespace(self) -> dict[str, tuple[IstioConfig, ...]]:
        out: dict[str, list[IstioConfig]] = {}
        for p in self.authorization_policies:
            out.setdefault(p.namespace, []).append(p)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _dr_with_selector(self) -> tuple[IstioConfig, ...]:
        return tuple(d for d in self.destination_rules if d.spec.get("workloadSelector"))

    def _by_host(self, index, hostname: str) -> list[IstioConfig]:
        exact, wild = index
        found = list(exact.get(hostname.lower(), ()))
        if wild:
            seen = {id(c) for c in found}
            for pattern, c in wild:
                if id(c) not in seen and host_matches(pattern, hostname):
                    seen.add(id(c))
                    found.append(c)
            order = self._order
            found.sort(key=lambda c: order[c.key])
        return found

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
        return self._issues_by_key.get(key, ())

    def services_with_key(self, key: ConfigKey) -> tuple[Service, ...]:
        """The services a Service / ServiceEntry object defines (a ServiceEntry gives one per host)."""
        return self._services_by_key.get(key, ())

    def config(self, key: ConfigKey) -> IstioConfig | None:
        """The VirtualService / DestinationRule / AuthorizationPolicy with this key."""
        return self._config_by_key.get(key)

    def virtual_services_for_host(self, hostname: str) -> list[IstioConfig]:
        """VirtualServices one of whose hosts (short names resolved in the VS's namespace, wildcards) matches
        `hostname`, in snapshot order."""
        return self._by_host(self._vs_by_host, hostname)

    def destination_rules_for_host(self, hostname: str) -> list[IstioConfig]:
        """DestinationRules whose host (resolved, wildcards) matches `hostname`, in snapshot order."""
        return self._by_host(self._dr_by_host, hostname)

    def destination_rules_with_selector(self) -> tuple[IstioConfig, ...]:
        return self._dr_with_selector

    def policies_targeting(self, kind: str, namespace: str, name: str) -> list[IstioConfig]:
        """AuthorizationPolicies in `namespace` with a targetRef of `kind` named `name` (any group; the caller
        checks groups), snapshot order."""
        return self._ap_by_target.get((kind, namespace, name), [])

    def policies_in(self, namespace: str) -> tuple[IstioConfig, ...]:
        return self._ap_by_namespace.get(namespace, ())

    def order_of(self, config: IstioConfig) -> int:
        return self._order[config.key]
