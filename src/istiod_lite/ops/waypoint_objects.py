"""The Kubernetes objects behind a waypoint Gateway, and their applier.

`waypoint_objects(gateway, options)` is pure: ServiceAccount, ConfigMap (the Envoy bootstrap rendered by
`istiod_lite.bootstrap.render_bootstrap`, Delta ADS to istiod-lite), Deployment (container `istio-proxy`
running the upstream Envoy image; `--service-node ns/name~$(POD_NAME)` gives every replica its own node id),
and Service (one port per listener), all labelled like Istio's (ISTIO-REFERENCE §1.1) and owned by the Gateway
(ownerReferences: the garbage collector removes them with it). Routing changes never touch these objects:
everything else reaches Envoy over xDS. Every object carries `app.kubernetes.io/managed-by: istiod-lite` (the
Deployment informer of ops.waypoint_readiness selects on it); Istio's `gateway.istio.io/managed` label only on
waypoints of Istio's own class `istio-waypoint`. The waypoint's SPIFFE certificate arrives over SDS from
istiod-lite (mesh_identity), so nothing is mounted but the bootstrap.

`gateway_class(name)` is a GatewayClass istiod-lite creates or adopts at start-up: `istio-waypoint` (Istio's
class and controller name, for a cluster where istiod-lite is the only mesh control plane) and
`istiod-lite-waypoint` (controller `istiod-lite.io/waypoint-controller`: a third-party waypoint class istiod never
provisions, for running beside Istio's ambient mesh). `serve --gateway-classes` picks which ones are managed.

`WaypointApplier.apply(objects)` server-side-applies (field manager `istiod-lite`, force) each object whose
desired state changed since it last applied it. Only the leader calls it. Blocking: call it in a thread.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable

from istiod_lite.bootstrap import render_bootstrap
from istiod_lite.model.gateway import WAYPOINT_CLASS, Gateway

OWN_CLASS = "istiod-lite-waypoint"
# GatewayClass -> controllerName istiod-lite uses for it
CLASS_CONTROLLERS: dict[str, str] = {
    WAYPOINT_CLASS: "istio.io/mesh-controller",
    OWN_CLASS: "istiod-lite.io/waypoint-controller",
}
DEFAULT_CLASSES: tuple[str, ...] = (WAYPOINT_CLASS, OWN_CLASS)
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "istiod-lite"

log = logging.getLogger(__name__)

CONTROLLER_NAME = CLASS_CONTROLLERS[WAYPOINT_CLASS]
FIELD_MANAGER = "istiod-lite"
GATEWAY_GROUP = "gateway.networking.k8s.io"
BOOTSTRAP_DIR = "/etc/istiod-lite"
BOOTSTRAP_FILE = "bootstrap.json"  # JSON: no YAML aliases, Envoy picks the parser by extension
# (apiGroup, resource, verbs) used by WaypointApplier: server-side apply is a PATCH, and the API server also
# checks `create` when the applied object does not exist yet.
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "serviceaccounts", ("create", "patch")),
    ("", "configmaps", ("create", "patch")),
    ("", "services", ("create", "patch")),
    ("apps", "deployments", ("create", "patch")),
    (GATEWAY_GROUP, "gatewayclasses", ("create", "patch")),
)


@dataclass(frozen=True)
class WaypointOptions:
    image: str = "envoyproxy/envoy:v1.40.0"
    xds_host: str = "istiod-lite.istio-system.svc"
    xds_port: int = 15010
    replicas: int = 1
    image_pull_policy: str = "IfNotPresent"
    log_level: str = "info"


def _labels(gw: Gateway) -> dict[str, str]:
    out = {MANAGED_BY_LABEL: MANAGED_BY}
    if gw.class_name == WAYPOINT_CLASS:  # Istio's own label, only on Istio's own class
        out["gateway.istio.io/managed"] = "istio.io-mesh-controller"
    out["gateway.networking.k8s.io/gateway-name"] = gw.key.name
    out["gateway.networking.k8s.io/gateway-class-name"] = gw.class_name
    return out


def _meta(gw: Gateway, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": gw.key.namespace,
        "labels": _labels(gw),
        "ownerReferences": [{"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "Gateway", "name": gw.key.name,
                             "uid": gw.meta.uid}],
    }


def bootstrap_name(gw: Gateway) -> str:
    return f"{gw.key.name}-envoy-bootstrap"


def waypoint_objects(gw: Gateway, options: WaypointOptions = WaypointOptions()) -> list[dict[str, Any]]:
    """ServiceAccount, ConfigMap, Deployment, Service for one waypoint Gateway (in that order)."""
    ns, name = gw.key.namespace, gw.key.name
    bootstrap = render_bootstrap(f"{ns}/{name}", options.xds_host, options.xds_port,
                                 admin_address="127.0.0.1:15000", delta=True, node_id="bootstrap")
    bootstrap_text = json.dumps(bootstrap, indent=2, sort_keys=True) + "\n"
    digest = hashlib.sha256(bootstrap_text.encode()).hexdigest()[:16]
    ports = sorted({(ln.port, ln.name, ln.protocol) for ln in gw.listeners})
    probe_port = 15008 if any(p == 15008 for p, _, _ in ports) else (ports[0][0] if ports else 15008)
    pod_labels = {
        **_labels(gw),
        "istio.io/dataplane-mode": "none",
        "sidecar.istio.io/inject": "false",
    }
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if any(p < 1024 for p, _, _ in ports):
        capabilities["add"] = ["NET_BIND_SERVICE"]
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(gw, name)}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(gw, bootstrap_name(gw)),
                  "data": {BOOTSTRAP_FILE: bootstrap_text}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(gw, name),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": name}},
            "template": {
                "metadata": {"labels": pod_labels,
                             "annotations": {"istiod-lite.io/bootstrap-hash": digest}},
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "istio-proxy",
                        "image": options.image,
                        "imagePullPolicy": options.image_pull_policy,
                        "command": ["envoy"],
                        "args": ["-c", f"{BOOTSTRAP_DIR}/{BOOTSTRAP_FILE}",
                                 "--service-node", f"{ns}/{name}~$(POD_NAME)",
                                 "--service-cluster", f"{name}.{ns}",
                                 "--log-level", options.log_level,
                                 "--drain-time-s", "45"],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": (ln_name if len(ln_name) <= 15 else f"p{port}")[:15],
                                   "containerPort": port, "protocol": "TCP"} for port, ln_name, _ in ports],
                        # Envoy opens the listener only once istiod-lite has pushed it over xDS.
                        "readinessProbe": {"tcpSocket": {"port": probe_port}, "periodSeconds": 2,
                                           "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"memory": "1Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "runAsUser": 101, "runAsGroup": 101,
                                            "capabilities": capabilities},
                        "volumeMounts": [{"name": "bootstrap", "mountPath": BOOTSTRAP_DIR, "readOnly": True}],
                    }],
                    "volumes": [{"name": "bootstrap", "configMap": {"name": bootstrap_name(gw)}}],
                },
            },
        },
    }
    service_meta = _meta(gw, name)
    service_meta["annotations"] = {"networking.istio.io/traffic-distribution": "PreferClose"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_meta,
        "spec": {
            "type": "ClusterIP",
            "selector": {"gateway.networking.k8s.io/gateway-name": name},
            "ports": [_service_port(port, ln_name, protocol) for port, ln_name, protocol in ports],
        },
    }
    return [service_account, config_map, deployment, service]


def _service_port(port: int, name: str, protocol: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}
    app = {"HBONE": "all", "HTTP": "http", "HTTPS": "https", "TLS": "tls", "TCP": "tcp"}.get(protocol.upper())
    if app:
        out["appProtocol"] = app
    return out


def gateway_class(name: str = WAYPOINT_CLASS) -> dict[str, Any]:
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "GatewayClass",
            "metadata": {"name": name, "labels": {"istio.io/waypoint-for": "service", MANAGED_BY_LABEL: MANAGED_BY}},
            "spec": {"controllerName": CLASS_CONTROLLERS[name],
                     "description": "Ambient waypoints programmed by istiod-lite"}}


def parse_classes(text: str) -> tuple[tuple[str, ...], str | None]:
    """`--gateway-classes` ("a,b") -> (classes, error message or None)."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CLASS_CONTROLLERS]
    if not names:
        return (), "give at least one GatewayClass"
    if unknown:
        return (), f"unknown GatewayClass {', '.join(unknown)} (known: {', '.join(sorted(CLASS_CONTROLLERS))})"
    return names, None


def desired_objects(waypoints: Iterable[Gateway], options: WaypointOptions = WaypointOptions(),
                    classes: Iterable[str] = DEFAULT_CLASSES) -> list[dict]:
    """The GatewayClasses of `classes`, then the objects of every waypoint Gateway of those classes."""
    managed = tuple(classes)
    out: list[dict[str, Any]] = [gateway_class(c) for c in managed]
    for gw in sorted(waypoints, key=lambda g: g.key):
        if gw.meta.uid and gw.class_name in managed:  # objects from files have no uid and are never deployed
            out.extend(waypoint_objects(gw, options))
    return out


def _ident(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


class WaypointApplier:
    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._applied: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.failures = 0

    def reset(self) -> None:
        self._applied.clear()

    def apply(self, objects: Iterable[dict[str, Any]]) -> list[tuple[str, str, str]]:
        done = []
        for obj in objects:
            ident = _ident(obj)
            if self._applied.get(ident) == obj:
                continue
            if self._apply_one(obj):
                self._applied[ident] = copy.deepcopy(obj)
                done.append(ident)
        return done

    def _apply_one(self, obj: dict[str, Any]) -> bool:
        kind, ns, name = _ident(obj)
        kw: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": True,
                              "_content_type": "application/apply-patch+yaml"}
        try:
            if kind == "ServiceAccount":
                self._core.patch_namespaced_service_account(name, ns, obj, **kw)
            elif kind == "ConfigMap":
                self._core.patch_namespaced_config_map(name, ns, obj, **kw)
            elif kind == "Service":
                self._core.patch_namespaced_service(name, ns, obj, **kw)
            elif kind == "Deployment":
                self._apps.patch_namespaced_deployment(name, ns, obj, **kw)
            elif kind == "GatewayClass":
                self._custom.patch_cluster_custom_object(GATEWAY_GROUP, "v1", "gatewayclasses", name, obj, **kw)
            else:
                raise ValueError(f"WaypointApplier cannot apply {kind}")
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - the API server's answer; retried on the next push
            self.failures += 1
            log.warning("applying %s %s/%s failed: %s", kind, ns, name, getattr(exc, "reason", None) or exc)
            return False
        log.info("applied %s %s/%s", kind, ns, name)
        return True
