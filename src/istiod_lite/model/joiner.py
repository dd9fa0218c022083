"""ServiceJoiner: the service join of `join.py`, memoized per object across snapshots.

Parsed objects are cached by the store, so an object that did not change is the very same Python object in
the next build. The joiner keys its memo on those identities: an unchanged ServiceEntry, Kubernetes Service
(with the same EndpointSlices and Pods) or binding environment (Namespaces and Gateways) yields the very same
`Service` object as before. A change therefore costs O(changed) here, and the translator downstream can tell
unchanged services by identity.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from istiod_lite.model import join
from istiod_lite.model.gateway import Gateway
from istiod_lite.model.istio import IstioConfig
from istiod_lite.model.meta import ConfigKey, Issue, ObjectMeta
from istiod_lite.model.parse_core import KubeEndpointSlice, KubePod, KubeService
from istiod_lite.model.service import Service


class ServiceJoiner:
    def __init__(self, domain_suffix: str) -> None:
        self.domain_suffix = domain_suffix
        self._entries: dict[ConfigKey, tuple[IstioConfig, list[Service]]] = {}
        self._kube: dict[ConfigKey, tuple[tuple[object, ...], Service]] = {}
        self._bound: dict[int, tuple[Service, Service, list[Issue]]] = {}
        self._env: tuple | None = None
        self.rebuilt = 0  # services joined or bound anew in the last call (for tests)

    def services(self, kube_services: Iterable[KubeService], slices: Iterable[KubeEndpointSlice],
                 pods: Mapping[ConfigKey, KubePod], service_entries: Iterable[IstioConfig]) -> list[Service]:
        """Services before binding: Kubernetes Services with endpoints, one per ServiceEntry host."""
        self.rebuilt = 0
        out: list[Service] = []
        by_service = join.slices_by_service(slices)
        kube_memo: dict[ConfigKey, tuple[tuple[object, ...], Service]] = {}
        for svc in kube_services:
            key = svc.meta.key
            mine = by_service.get((key.namespace, key.name), [])
            inputs = (svc, *mine, *_pods_of(mine, key.namespace, pods))
            cached = self._kube.get(key)
            if cached is not None and _same(cached[0], inputs):
                service = cached[1]
            else:
                service = join.kubernetes_service(svc, mine, pods, self.domain_suffix)
                self.rebuilt += 1
            kube_memo[key] = (inputs, service)
            out.append(service)
        self._kube = kube_memo
        entry_memo: dict[ConfigKey, tuple[IstioConfig, list[Service]]] = {}
        for se in service_entries:
            cached_se = self._entries.get(se.key)
            if cached_se is not None and cached_se[0] is se:
                services = cached_se[1]
            else:
                services = join.service_entry_services(se)
                self.rebuilt += len(services)
            entry_memo[se.key] = (se, services)
            out.extend(services)
        self._entries = entry_memo
        return out

    def bind(self, services: list[Service], namespaces: Mapping[str, ObjectMeta],
             gateways: Mapping[ConfigKey, Gateway]) -> tuple[list[Service], list[Issue]]:
        """`join.bind_waypoint` for each service; reused while the service and every Namespace and Gateway
        are the same objects as in the previous call."""
        env = (tuple((n, id(m)) for n, m in sorted(namespaces.items())),
               tuple((k.namespace, k.name, id(g)) for k, g in gateways.items()))
        if env != self._env:
            self._bound = {}
            self._env = env
        memo: dict[int, tuple[Service, Service, list[Issue]]] = {}
        bound: list[Service] = []
        issues: list[Issue] = []
        for s in services:
            cached = self._bound.get(id(s))
            if cached is not None and cached[0] is s:
                result, problems = cached[1], cached[2]
            else:
                result, found = join.bind_waypoint(s, namespaces, gateways)
                problems = [p.with_file(s.meta.file) for p in found]
                self.rebuilt += 1
            memo[id(s)] = (s, result, problems)
            bound.append(result)
            issues.extend(problems)
        self._bound = memo
        return bound, issues


def _pods_of(slices: list[KubeEndpointSlice], namespace: str, pods: Mapping[ConfigKey, KubePod]) -> list[object]:
    out: list[object] = []
    for sl in slices:
        for ep in sl.endpoints:
            if ep.pod:
                out.append(pods.get(ConfigKey("Pod", namespace, ep.pod)))
    return out


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))
