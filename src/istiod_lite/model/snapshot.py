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
    def _issues_by_key(self) -> dict[ConfigKey | None, tuple[Issue, ...]]:
        out: dict[ConfigKey | None, list[Issue]] = {}
        for i in self.issues:
            out.setdefault(i.key, []).append(i)
        return {k: tuple(v) for k, v in out.items()}

    # Index keys of the multi-valued Istio-object indexes below (`_INDEXES`): name -> (kind, keys of one object).
    def _vs_keys(self, c: IstioConfig) -> list:
        return [resolve_short_name(str(h), c.namespace, self.domain_suffix).lower() for h in c.spec.get("hosts") or ()]

    def _dr_keys(self, c: IstioConfig) -> list:
        return [resolve_short_name(str(c.spec.get("host", "")), c.namespace, self.domain_suffix).lower()]

    @staticmethod
    def _ap_keys(p: IstioConfig) -> list:
        """(targetRef kind, policy namespace, targetRef name); refs naming another namespace never match."""
        spec = p.spec if isinstance(p.spec, dict) else {}
        refs = spec.get("targetRefs")
        refs = [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []
        if isinstance(spec.get("targetRef"), dict):
            refs.append(spec["targetRef"])
        return [(str(r.get("kind")), p.namespace, str(r.get("name"))) for r in refs
                if r.get("namespace") in (None, "", p.namespace)]

    _INDEXES = {
        "_vs_by_host": ("VirtualService", "_vs_keys"),
        "_dr_by_host": ("DestinationRule", "_dr_keys"),
        "_ap_by_target": ("AuthorizationPolicy", "_ap_keys"),
        "_ap_by_namespace": ("AuthorizationPolicy", None),
        "_dr_with_selector": ("DestinationRule", None),
    }

    def _items(self, kind: str) -> tuple[IstioConfig, ...]:
        return {"VirtualService": self.virtual_services, "DestinationRule": self.destination_rules,
                "AuthorizationPolicy": self.authorization_policies}[kind]

    def _index_keys(self, name: str, c: IstioConfig) -> list:
        if name == "_ap_by_namespace":
            return [c.namespace]
        if name == "_dr_with_selector":
            return ["*"] if c.spec.get("workloadSelector") else []
        return getattr(self, self._INDEXES[name][1])(c)

    def _build_index(self, name: str) -> dict:
        out: dict = {}
        for c in self._items(self._INDEXES[name][0]):
            for k in self._index_keys(name, c):
                bucket = out.setdefault(k, [])
                if not bucket or bucket[-1] is not c:
                    bucket.append(c)
        return out

    @cached_property
    def _vs_by_host(self) -> dict:
        return self._build_index("_vs_by_host")

    @cached_property
    def _dr_by_host(self) -> dict:
        return self._build_index("_dr_by_host")

    @cached_property
    def _ap_by_target(self) -> dict:
        return self._build_index("_ap_by_target")

    @cached_property
    def _ap_by_namespace(self) -> dict:
        return self._build_index("_ap_by_namespace")

    @cached_property
    def _dr_with_selector(self) -> dict:
        return self._build_index("_dr_with_selector")

    def seed_indexes(self, base: "ConfigSnapshot", lookup) -> None:
        """Derive this snapshot's Istio-object indexes from `base`'s (copy + patch the `changed` objects) instead
        of rebuilding them: O(changed). `lookup(key)` returns this snapshot's object for a key (or None).
        Only valid when `self.changed` is relative to `base` and covers every Istio object that differs."""
        if self.changed is None or self.base_version != base.version or self.domain_suffix != base.domain_suffix:
            return
        changed = [k for k in self.changed if k.kind in ("VirtualService", "DestinationRule", "AuthorizationPolicy")]
        if "_config_by_key" in base.__dict__:
            by_key = dict(base.__dict__["_config_by_key"])
            for k in changed:
                by_key.pop(k, None)
                new = lookup(k)
                if new is not None:
                    by_key[k] = new
            self.__dict__["_config_by_key"] = by_key
        for name, (kind, _) in self._INDEXES.items():
            if name not in base.__dict__:
                continue
            index = dict(base.__dict__[name])
            for k in changed:
                if k.kind != kind:
                    continue
                old, new = base.config(k), lookup(k)
                for c, add in ((old, False), (new, True)):
                    if c is None:
                        continue
                    for ik in dict.fromkeys(self._index_keys(name, c)):
                        bucket = [x for x in index.get(ik, ()) if x.key != k]
                        if add:
                            bucket.append(c)
                            bucket.sort(key=_snapshot_order)
                        if bucket:
                            index[ik] = bucket
                        else:
                            index.pop(ik, None)
            self.__dict__[name] = index
            wild = base.__dict__.get("_wild" + name)
            if wild is not None:  # the wildcard keys, patched likewise
                touched = {ik for k in changed if k.kind == kind
                           for c in (base.config(k), lookup(k)) if c is not None
                           for ik in self._index_keys(name, c) if isinstance(ik, str) and ik.startswith("*")}
                self.__dict__["_wild" + name] = [w for w in wild if w not in touched] + \
                    [w for w in sorted(touched) if w in index]

    def _by_host(self, name: str, hostname: str) -> list[IstioConfig]:
        """Objects indexed under `hostname` or under a wildcard (``*...``) that matches it, snapshot order."""
        index = getattr(self, name)
        found = list(index.get(hostname.lower(), ()))
        wild = self.__dict__.get("_wild" + name)
        if wild is None:  # once per snapshot
            wild = self.__dict__["_wild" + name] = [k for k in index if k.startswith("*")]
        if wild:
            seen = {id(c) for c in found}
            for pattern in wild:
                if host_matches(pattern, hostname):
                    for c in index.get(pattern, ()):
                        if id(c) not in seen:
                            seen.add(id(c))
                            found.append(c)
            found.sort(key=_snapshot_order)
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
        if len(candidates) < 2:  # (the usual: one service per hostname)
            return candidates[0] if candidates else None

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
        return self._by_host("_vs_by_host", hostname)

    def destination_rules_for_host(self, hostname: str) -> list[IstioConfig]:
        """DestinationRules whose host (resolved, wildcards) matches `hostname`, in snapshot order."""
        return self._by_host("_dr_by_host", hostname)

    def destination_rules_with_selector(self) -> tuple[IstioConfig, ...]:
        return tuple(self._dr_with_selector.get("*", ()))

    def policies_targeting(self, kind: str, namespace: str, name: str) -> list[IstioConfig]:
        """AuthorizationPolicies in `namespace` with a targetRef of `kind` named `name` (any group; the caller
        checks groups), snapshot order."""
        return self._ap_by_target.get((kind, namespace, name), [])

    def policies_in(self, namespace: str) -> tuple[IstioConfig, ...]:
        return tuple(self._ap_by_namespace.get(namespace, ()))

    @staticmethod
    def order_of(config: IstioConfig) -> tuple:
        """Sort key of the snapshot order of Istio objects (the store sorts by creation time, then key)."""
        return _snapshot_order(config)


def _snapshot_order(c: IstioConfig) -> tuple:
    return (c.meta.creation_timestamp, c.key)
