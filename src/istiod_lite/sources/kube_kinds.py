"""The kinds the Kubernetes source watches: API group/version/plural, how to list/watch them with the
official client, how their objects are trimmed before they reach the store, and the RBAC they need.

`WAYPOINT_DEPLOYMENTS` is not a config kind: the waypoint Deployments istiod-lite owns (label selector
`app.kubernetes.io/managed-by=istiod-lite`), trimmed to metadata and replica counts, watched with the same
informer machinery but fed to ops.waypoint_readiness (their ready replicas gate a waypoint's Programmed status
and `status.addresses`), never to the config store.

`RBAC_RULES` is the one table of API permissions this source uses; tests compare it (together with the
tables of ops.status_writer, ops.leader and ops.waypoint_objects) with deploy/base's ClusterRole.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class KindSpec:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    crd: bool  # may be missing from a cluster (404 on list): reported, then retried
    label_selector: str | None = None  # watch only the objects with these labels

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def origin(self) -> str:
        return f"kube:{self.kind}"

    def list_function(self, api_client: Any) -> Callable[..., Any]:
        """The client function that lists (and, with watch=True, watches) this kind in all namespaces."""
        fn = self._unfiltered_list_function(api_client)
        selector = self.label_selector
        if not selector:
            return fn

        def list_selected(**kwargs: Any) -> Any:
            return fn(label_selector=selector, **kwargs)

        return list_selected

    def _unfiltered_list_function(self, api_client: Any) -> Callable[..., Any]:
        from kubernetes import client

        if self.kind == "Deployment":
            return client.AppsV1Api(api_client).list_deployment_for_all_namespaces
        if self.kind == "Namespace":
            return client.CoreV1Api(api_client).list_namespace
        if self.kind == "Service":
            return client.CoreV1Api(api_client).list_service_for_all_namespaces
        if self.kind == "Pod":
            return client.CoreV1Api(api_client).list_pod_for_all_namespaces
        if self.kind == "EndpointSlice":
            return client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces
        api = client.CustomObjectsApi(api_client)

        def list_custom(**kwargs: Any) -> Any:
            return api.list_cluster_custom_object(self.group, self.version, self.plural, **kwargs)

        return list_custom


KINDS: tuple[KindSpec, ...] = (
    KindSpec("Namespace", "", "v1", "namespaces", False, False),
    KindSpec("Service", "", "v1", "services", True, False),
    KindSpec("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True, False),
    KindSpec("Pod", "", "v1", "pods", True, False),
    KindSpec("GatewayClass", "gateway.networking.k8s.io", "v1", "gatewayclasses", False, True),
    KindSpec("Gateway", "gateway.networking.k8s.io", "v1", "gateways", True, True),
    KindSpec("VirtualService", "networking.istio.io", "v1", "virtualservices", True, True),
    KindSpec("DestinationRule", "networking.istio.io", "v1", "destinationrules", True, True),
    KindSpec("ServiceEntry", "networking.istio.io", "v1", "serviceentries", True, True),
    KindSpec("AuthorizationPolicy", "security.istio.io", "v1", "authorizationpolicies", True, True),
)

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "istiod-lite"
WAYPOINT_DEPLOYMENTS = KindSpec("Deployment", "apps", "v1", "deployments", True, False,
                                label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}")

# (apiGroup, resource, verbs): what the informers call.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (k.group, k.plural, ("list", "watch")) for k in (*KINDS, WAYPOINT_DEPLOYMENTS)
)

_POD_METADATA = ("name", "namespace", "uid", "labels", "creationTimestamp", "generation")


def normalize(spec: KindSpec, raw: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes-shaped dict for the store: apiVersion/kind set (list items lack them), managedFields
    and the last-applied annotation dropped, and volatile fields dropped so that changes the model never
    reads (resourceVersion, status of config kinds, most of a Pod) do not cause pushes."""
    obj = copy.deepcopy(raw)
    obj["apiVersion"] = spec.api_version
    obj["kind"] = spec.kind
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return obj
    md.pop("managedFields", None)
    md.pop("resourceVersion", None)
    annotations = md.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        annotations = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        if annotations:
            md["annotations"] = annotations
        else:
            md.pop("annotations")
    if spec.crd:
        obj.pop("status", None)  # written by us (ops.status_writer); never an input
    if spec.kind == "Deployment":  # which waypoint, and how many replicas are ready
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {k: md[k] for k in ("name", "namespace", "uid", "labels", "generation") if k in md},
            "status": {k: status[k] for k in ("readyReplicas", "availableReplicas", "replicas",
                                              "observedGeneration") if k in status},
        }
    if spec.kind == "Pod":  # labels and IPs only
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {k: md[k] for k in _POD_METADATA if k in md},
            "status": {k: status[k] for k in ("podIP", "podIPs") if k in status},
        }
    return obj


def resource_version(raw: Any) -> str | None:
    if isinstance(raw, dict) and isinstance(raw.get("metadata"), dict):
        rv = raw["metadata"].get("resourceVersion")
        return str(rv) if rv else None
    return None
