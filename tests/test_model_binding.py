"""Waypoint binding as Istio does it (pilot/pkg/serviceregistry/ambient/waypoints.go): the
`istio.io/use-waypoint` label on the service beats the namespace label, and `none` opts out."""

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import snapshot_from_text

BASE = """
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: default}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.0.0.10
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default, labels: {istio.io/use-waypoint: none}}
spec:
  clusterIP: 10.0.0.11
  ports: [{name: http, port: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-abc, namespace: default, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
  targetRef: {kind: Pod, name: reviews-v1-1}
- addresses: [10.1.0.2]
  conditions: {ready: false}
  targetRef: {kind: Pod, name: reviews-v2-1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1-1, namespace: default, labels: {app: reviews, version: v1}}
status: {podIP: 10.1.0.1}
"""
WP = ConfigKey("Gateway", "default", "waypoint")


def test_namespace_label_binds_and_none_opts_out():
    snap = snapshot_from_text(BASE)
    bound = {s.hostname for s in snap.services_for_waypoint(WP)}
    assert bound == {"reviews.default.svc.cluster.local"}


def test_endpoints_joined_with_pod_labels_and_ready_only():
    snap = snapshot_from_text(BASE)
    svc = snap.service("reviews.default.svc.cluster.local")
    assert [(e.address, e.port_for(9080), dict(e.labels)) for e in svc.endpoints] == [
        ("10.1.0.1", 8080, {"app": "reviews", "version": "v1"})
    ]
    assert svc.addresses == ("10.0.0.10",)
    assert svc.ports[0].protocol == "HTTP"  # from the port name prefix


def test_missing_waypoint_is_reported_on_the_service():
    text = BASE.replace("istio.io/use-waypoint: waypoint}", "istio.io/use-waypoint: nowhere}")
    snap = snapshot_from_text(text)
    reasons = {(str(i.key), i.reason) for i in snap.issues}
    assert ("Service/default/reviews", "WaypointNotFound") in reasons
    assert snap.services_for_waypoint(WP) == ()


def test_cross_namespace_binding_needs_allowed_routes_all():
    text = BASE + """
---
apiVersion: v1
kind: Service
metadata:
  name: other
  namespace: team
  labels: {istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: default}
spec:
  clusterIP: 10.0.0.12
  ports: [{name: http, port: 80}]
"""
    snap = snapshot_from_text(text)
    assert "other.team.svc.cluster.local" not in {s.hostname for s in snap.services_for_waypoint(WP)}
    assert any(i.reason == "AttachmentDenied" for i in snap.issues)
    allowed = text.replace("listeners: [{name: mesh, port: 15008, protocol: HBONE}]",
                           "listeners: [{name: mesh, port: 15008, protocol: HBONE, "
                           "allowedRoutes: {namespaces: {from: All}}}]")
    snap = snapshot_from_text(allowed)
    assert "other.team.svc.cluster.local" in {s.hostname for s in snap.services_for_waypoint(WP)}
