"""Status computed from a snapshot + issues, and written to the fake API server's status subresources."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import yaml

from istiod_lite.model.meta import ConfigKey, error
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.ops.status_writer import StatusWriter, compute_statuses

BASE = """
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: default, generation: 3}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 10.0.0.10, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: other}
spec: {clusterIP: 10.0.0.11, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default, generation: 2}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: plain, namespace: other, generation: 1}
spec:
  hosts: [plain]
  http: [{route: [{destination: {host: plain}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: nowhere, namespace: default, generation: 1}
spec: {host: nosuch.example.com}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-gateway, namespace: default, generation: 1}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-selector, namespace: default, generation: 1}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
"""

WAYPOINT_SERVICE = """
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: default}
spec: {clusterIP: 10.0.0.2, ports: [{name: mesh, port: 15008}]}
"""

GW = ConfigKey("Gateway", "default", "waypoint")


def cond(body, type_="WaypointAccepted"):
    return next(c for c in body["conditions"] if c["type"] == type_)


def test_gateway_waits_for_its_service_then_is_programmed_with_an_address():
    before = compute_statuses(snapshot_from_text(BASE), [])
    assert cond(before[GW], "Accepted") == {"type": "Accepted", "status": "True", "reason": "Accepted",
                                            "message": "Resource accepted", "observedGeneration": 3}
    assert cond(before[GW], "Programmed")["status"] == "False"
    assert cond(before[GW], "Programmed")["reason"] == "AddressNotAssigned"
    assert before[GW]["addresses"] == []
    after = compute_statuses(snapshot_from_text(BASE + WAYPOINT_SERVICE), [])
    assert cond(after[GW], "Programmed") == {
        "type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": 3,
        "message": "Resource programmed, assigned to service(s) waypoint.default.svc.cluster.local:15008"}
    assert after[GW]["addresses"] == [{"type": "Hostname", "value": "waypoint.default.svc.cluster.local"}]
    [listener] = after[GW]["listeners"]
    assert listener["name"] == "mesh" and cond(listener, "Accepted")["status"] == "True"


def test_gateway_with_errors_is_not_accepted():
    snap = snapshot_from_text(BASE + WAYPOINT_SERVICE)
    issue = error(GW, "spec.listeners[0].protocol", 'Expected a single listener on port 15008 with protocol "HBONE"',
                  "UnsupportedProtocol")
    body = compute_statuses(snap, [issue])[GW]
    assert cond(body, "Accepted")["status"] == "True"  # listener-level problem: the Gateway stays accepted
    assert cond(body["listeners"][0], "Accepted") == {
        "type": "Accepted", "status": "False", "reason": "UnsupportedProtocol", "observedGeneration": 3,
        "message": 'spec.listeners[0].protocol: Expected a single listener on port 15008 with protocol "HBONE"'}
    gw_issue = error(GW, "spec.addresses[0]", "unsupported address")
    body = compute_statuses(snap, [gw_issue])[GW]
    assert cond(body, "Accepted")["status"] == "False" and cond(body, "Programmed")["status"] == "False"
    assert body["addresses"] == []


def test_istio_objects_say_whether_they_reach_a_waypoint_and_why_not():
    snap = snapshot_from_text(BASE)
    out = compute_statuses(snap, [])
    vs = cond(out[ConfigKey("VirtualService", "default", "reviews")])
    assert vs == {"type": "WaypointAccepted", "status": "True", "reason": "Accepted",
                  "message": "bound to waypoint default/waypoint", "observedGeneration": 2}
    # a VirtualService in a namespace with nothing of ours is none of our business
    assert ConfigKey("VirtualService", "other", "plain") not in out
    dr = cond(out[ConfigKey("DestinationRule", "default", "nowhere")])
    assert (dr["status"], dr["reason"]) == ("False", "HostNotFound")
    ap = cond(out[ConfigKey("AuthorizationPolicy", "default", "by-gateway")])
    assert (ap["status"], ap["reason"]) == ("True", "Accepted")
    sel = cond(out[ConfigKey("AuthorizationPolicy", "default", "by-selector")])
    assert (sel["status"], sel["reason"]) == ("False", "NotWaypointTargeted")


def test_validation_errors_are_reported_with_field_paths():
    bad = BASE + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}, weight: -5}]}]
"""
    snap = snapshot_from_text(bad)
    key = ConfigKey("VirtualService", "default", "broken")
    assert snap.issues_for(key), "the model reports the bad weight"
    body = compute_statuses(snap, snap.issues)[key]
    c = cond(body)
    assert c["status"] == "False" and c["reason"] == "Invalid"
    assert "spec.http[0].route[0].weight" in c["message"]
    translate_issue = error(ConfigKey("VirtualService", "default", "reviews"), "spec.http[0].retries.retryOn",
                            "unknown retry condition 'sometimes'")
    c2 = cond(compute_statuses(snap, [translate_issue])[ConfigKey("VirtualService", "default", "reviews")])
    assert c2["status"] == "False" and c2["message"] == "spec.http[0].retries.retryOn: unknown retry condition " \
                                                       "'sometimes'"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


VS_PATH = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews/status"
VS = ConfigKey("VirtualService", "default", "reviews")
ISTIO_CONDITION = {"type": "Reconciled", "status": "True", "lastTransitionTime": "2024-12-01T00:00:00Z",
                   "reason": "Reconciled", "message": "istiod"}


def load(fake, text):
    for doc in yaml.safe_load_all(text):
        fake.upsert(doc)


def test_writer_patches_status_subresource_only_on_change(fake, api):
    load(fake, BASE + WAYPOINT_SERVICE)
    snap = snapshot_from_text(BASE + WAYPOINT_SERVICE)
    clock = Clock()
    writer = StatusWriter(api, clock=clock)
    written = writer.write(compute_statuses(snap, []))
    # Gateway, VS reviews, DR nowhere, two policies; the GatewayClasses do not exist on this server (404)
    assert GW in written and len(written) == 5
    patches = fake.requests_to("PATCH", "/status")
    assert {r.content_type for r in patches} == {"application/merge-patch+json"}
    gw_patch = next(r for r in patches if r.path == "/apis/gateway.networking.k8s.io/v1/namespaces/default/"
                                                     "gateways/waypoint/status")
    assert cond(gw_patch.body["status"], "Programmed")["lastTransitionTime"] == "2025-01-01T00:00:00Z"
    stored = fake.get("Gateway", "default", "waypoint")
    assert stored["status"]["addresses"] == [{"type": "Hostname", "value": "waypoint.default.svc.cluster.local"}]
    assert stored["spec"]["gatewayClassName"] == "istio-waypoint"  # only status touched
    [vs_patch] = fake.requests_to("PATCH", VS_PATH)
    [vs_get] = fake.requests_to("GET", VS_PATH)
    assert vs_patch.body == {
        "metadata": {"resourceVersion": vs_patch.body["metadata"]["resourceVersion"]},
        "status": {"conditions": [{"type": "WaypointAccepted", "status": "True", "reason": "Accepted",
                                   "message": "bound to waypoint default/waypoint", "observedGeneration": 2,
                                   "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}
    assert vs_patch.body["metadata"]["resourceVersion"]  # the precondition: the version it read
    # same statuses again: nothing read, nothing written
    clock.now += timedelta(minutes=1)
    requests = [r for r in fake.requests if "gatewayclasses" not in r.path]
    assert writer.write(compute_statuses(snap, [])) == []
    assert [r for r in fake.requests if "gatewayclasses" not in r.path] == requests
    # a change flips one condition: only that object is written, with a new transition time
    issue = error(VS, "spec.http[0].timeout", "bad timeout")
    assert writer.write(compute_statuses(snap, [issue])) == [VS]
    last = fake.requests_to("PATCH", VS_PATH)[-1].body["status"]["conditions"][0]
    assert (last["status"], last["lastTransitionTime"]) == ("False", "2025-01-01T00:01:00Z")
    # Gateway message changes but status stays True: the transition time (read from the server) is kept
    clock.now += timedelta(minutes=1)
    more = snapshot_from_text(BASE + WAYPOINT_SERVICE.replace("[{name: mesh, port: 15008}]",
                                                              "[{name: mesh, port: 15008}, {name: s, port: 15021}]"))
    writer.reset()  # a new leader term: nothing remembered, the server is the memory
    assert GW in writer.write(compute_statuses(more, [issue]))
    prog = cond(fake.requests_to("PATCH", "/gateways/waypoint/status")[-1].body["status"], "Programmed")
    assert prog["lastTransitionTime"] == "2025-01-01T00:00:00Z" and "15021" in prog["message"]
    assert VS not in writer.write(compute_statuses(more, [issue])), "already right on the server: no patch"


def test_other_controllers_conditions_and_fields_are_kept(fake, api):
    """Istio writes conditions (and validationMessages) on the same objects: a merge patch of a whole
    conditions list would drop them. Only our condition types are replaced, in place."""
    load(fake, BASE + WAYPOINT_SERVICE)
    vs = fake.get("VirtualService", "default", "reviews")
    stale_ours = {"type": "WaypointAccepted", "status": "False", "reason": "Invalid", "message": "old",
                  "lastTransitionTime": "2024-01-01T00:00:00Z"}
    vs["status"] = {"conditions": [ISTIO_CONDITION, stale_ours], "validationMessages": [{"type": {"code": "IST0101"}}],
                    "observedGeneration": "2"}
    fake.upsert(vs)
    gw = fake.get("Gateway", "default", "waypoint")
    policy = {"type": "example.com/PolicyAttached", "status": "True", "reason": "Attached", "message": "x",
              "lastTransitionTime": "2024-12-01T00:00:00Z"}
    gw["status"] = {"conditions": [policy]}
    fake.upsert(gw)
    writer = StatusWriter(api, clock=Clock())
    writer.write(compute_statuses(snapshot_from_text(BASE + WAYPOINT_SERVICE), []))
    status = fake.get("VirtualService", "default", "reviews")["status"]
    assert status["conditions"][0] == ISTIO_CONDITION
    assert status["conditions"][1]["type"] == "WaypointAccepted" and status["conditions"][1]["status"] == "True"
    assert len(status["conditions"]) == 2
    assert status["validationMessages"] == [{"type": {"code": "IST0101"}}] and status["observedGeneration"] == "2"
    gw_status = fake.get("Gateway", "default", "waypoint")["status"]
    assert [c["type"] for c in gw_status["conditions"]] == ["example.com/PolicyAttached", "Accepted", "Programmed"]


def test_concurrent_writer_conflict_is_retried_without_losing_its_write(fake, api):
    """Istio writes between our read and our patch: the resourceVersion precondition makes our patch 409;
    we read again and keep Istio's fresh condition."""
    load(fake, BASE + WAYPOINT_SERVICE)
    writer = StatusWriter(api, clock=Clock())
    real_get = writer._get
    raced = []

    def racing_get(key):
        current = real_get(key)
        if key == VS and not raced:
            raced.append(True)
            obj = fake.get("VirtualService", "default", "reviews")
            obj["status"] = {"conditions": [ISTIO_CONDITION]}
            fake.upsert(obj)  # the other controller's write bumps resourceVersion
        return current

    writer._get = racing_get
    assert VS in writer.write(compute_statuses(snapshot_from_text(BASE + WAYPOINT_SERVICE), []))
    assert writer.conflicts == 1 and writer.failures == 0
    assert [c["type"] for c in fake.get("VirtualService", "default", "reviews")["status"]["conditions"]] == \
        ["Reconciled", "WaypointAccepted"]
    assert len(fake.requests_to("PATCH", VS_PATH)) == 2


def test_persistent_conflicts_give_up_and_retry_on_the_next_push(fake, api):
    load(fake, BASE + WAYPOINT_SERVICE)
    writer = StatusWriter(api, clock=Clock())
    fake.fail("PATCH", VS_PATH, 409, times=3)
    statuses = compute_statuses(snapshot_from_text(BASE + WAYPOINT_SERVICE), [])
    assert VS not in writer.write(statuses)
    assert writer.conflicts == 3 and writer.failures == 1
    assert writer.write(statuses) == [VS]


THIRD_PARTY = """
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/use-waypoint: lite}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: lite, namespace: shop, generation: 1}
spec:
  gatewayClassName: istiod-lite-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: lite, namespace: shop}
spec: {clusterIP: 10.0.0.3, ports: [{name: mesh, port: 15008}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.0.0.20, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop, generation: 1}
spec:
  hosts: [cart]
  http: [{route: [{destination: {host: cart}}]}]
"""
LITE = ConfigKey("Gateway", "shop", "lite")
CART_VS = ConfigKey("VirtualService", "shop", "cart")


def test_beside_istio_only_our_class_and_what_concerns_it_gets_status():
    snap = snapshot_from_text(BASE + WAYPOINT_SERVICE + THIRD_PARTY)
    out = compute_statuses(snap, [], classes=("istiod-lite-waypoint",))
    assert set(out) == {ConfigKey("GatewayClass", "", "istiod-lite-waypoint"), LITE, CART_VS}
    assert cond(out[CART_VS], "istiod-lite.io/WaypointAccepted")["message"] == "bound to waypoint shop/lite"
    # standalone: Istio's class is ours too
    out = compute_statuses(snap, [])
    assert {GW, LITE, CART_VS, ConfigKey("VirtualService", "default", "reviews")} <= set(out)


def test_object_that_stops_concerning_us_loses_only_our_condition(fake, api):
    load(fake, BASE + WAYPOINT_SERVICE + THIRD_PARTY)
    writer = StatusWriter(api, clock=Clock(), classes=("istiod-lite-waypoint",))
    snap = snapshot_from_text(BASE + WAYPOINT_SERVICE + THIRD_PARTY)
    assert CART_VS in writer.write(compute_statuses(snap, [], classes=("istiod-lite-waypoint",)))
    obj = fake.get("VirtualService", "shop", "cart")
    obj["status"]["conditions"].insert(0, ISTIO_CONDITION)
    fake.upsert(obj)
    # the user hands the waypoint over to istiod (Istio's class): the VirtualService now concerns Istio's waypoint
    unbound = snapshot_from_text(BASE + WAYPOINT_SERVICE + THIRD_PARTY.replace(
        "gatewayClassName: istiod-lite-waypoint", "gatewayClassName: istio-waypoint"))
    assert CART_VS not in compute_statuses(unbound, [], classes=("istiod-lite-waypoint",))
    writer.write(compute_statuses(unbound, [], classes=("istiod-lite-waypoint",)))
    assert fake.get("VirtualService", "shop", "cart")["status"]["conditions"] == [ISTIO_CONDITION]


class Ready:
    def __init__(self, ready=0, ever=False):
        self.ready, self.ever = ready, ever

    def ready_replicas(self, gateway):
        return self.ready

    def ever_ready(self, gateway):
        return self.ever or self.ready > 0


def test_gateway_is_programmed_with_an_address_only_once_a_waypoint_pod_is_ready():
    snap = snapshot_from_text(BASE + WAYPOINT_SERVICE)
    waiting = compute_statuses(snap, [], readiness=Ready(0))[GW]
    assert cond(waiting, "Programmed") == {
        "type": "Programmed", "status": "False", "reason": "NoResources", "observedGeneration": 3,
        "message": "waiting for a ready replica of the waypoint Deployment default/waypoint (0 ready)"}
    assert "addresses" not in waiting  # not published (istiod would send bound traffic to a waypoint with no pod)
    assert cond(waiting["listeners"][0], "Programmed")["status"] == "False"
    ready = compute_statuses(snap, [], readiness=Ready(1))[GW]
    assert cond(ready, "Programmed")["status"] == "True"
    assert ready["addresses"] == [{"type": "Hostname", "value": "waypoint.default.svc.cluster.local"}]
    # pods gone later: not Programmed, but the address stays (withdrawing it lets traffic bypass the policies)
    lost = compute_statuses(snap, [], readiness=Ready(0, ever=True))[GW]
    assert cond(lost, "Programmed")["reason"] == "NoResources" and lost["addresses"] == ready["addresses"]


def test_writer_survives_missing_objects_and_errors(fake, api):
    snap = snapshot_from_text(BASE)
    writer = StatusWriter(api)
    fake.upsert(next(d for d in yaml.safe_load_all(BASE)
                     if d["kind"] == "VirtualService" and d["metadata"]["name"] == "reviews"))
    fake.fail("PATCH", "/virtualservices/reviews/status", 500)
    written = writer.write(compute_statuses(snap, []))
    assert written == []  # nothing else exists on the server (404s), one 500
    assert writer.failures == 1
    assert writer.write(compute_statuses(snap, [])) == [VS]


def test_an_address_published_before_a_restart_is_kept_while_pods_are_not_ready(fake, api):
    """A new leader (or a restarted istiod-lite) that sees no ready waypoint pod does not withdraw the address
    an earlier term published: withdrawing it would make ztunnel bypass the waypoint and its policies."""
    load(fake, BASE + WAYPOINT_SERVICE)
    gw = fake.get("Gateway", "default", "waypoint")
    published = [{"type": "Hostname", "value": "waypoint.default.svc.cluster.local"}]
    gw["status"] = {"addresses": published}
    fake.upsert(gw)
    snap = snapshot_from_text(BASE + WAYPOINT_SERVICE)
    StatusWriter(api, clock=Clock()).write(compute_statuses(snap, [], readiness=Ready(0)))
    status = fake.get("Gateway", "default", "waypoint")["status"]
    assert status["addresses"] == published and cond(status, "Programmed")["reason"] == "NoResources"
    # the Gateway loses its Service: the address goes
    StatusWriter(api, clock=Clock()).write(compute_statuses(snapshot_from_text(BASE), [], readiness=Ready(0)))
    assert fake.get("Gateway", "default", "waypoint")["status"]["addresses"] == []


def test_beside_istiod_our_condition_type_is_prefixed_and_istiods_is_kept(fake, api):
    """Beside istiod (only our class `istiod-lite-waypoint` managed), istiod writes Istio's `WaypointAccepted`
    on AuthorizationPolicies (ISTIO-REFERENCE 1.5, pilot/pkg/model/service.go): ours is
    `istiod-lite.io/WaypointAccepted`, and Istio's condition is never replaced or removed by us."""
    text = (BASE + WAYPOINT_SERVICE).replace("gatewayClassName: istio-waypoint", "gatewayClassName: istiod-lite-waypoint")
    load(fake, text)
    vs = fake.get("VirtualService", "default", "reviews")
    istiods = {"type": "WaypointAccepted", "status": "False", "reason": "AncestorNotBound", "message": "istiod's",
               "lastTransitionTime": "2024-01-01T00:00:00Z"}
    vs["status"] = {"conditions": [istiods]}
    fake.upsert(vs)
    classes = ("istiod-lite-waypoint",)
    writer = StatusWriter(api, clock=Clock(), classes=classes)
    assert VS in writer.write(compute_statuses(snapshot_from_text(text), [], classes=classes))
    conditions = fake.get("VirtualService", "default", "reviews")["status"]["conditions"]
    assert conditions[0] == istiods
    assert [(c["type"], c["status"]) for c in conditions[1:]] == [("istiod-lite.io/WaypointAccepted", "True")]
    # the object stops concerning our waypoint: our condition goes, istiod's stays
    writer.write({})
    assert fake.get("VirtualService", "default", "reviews")["status"]["conditions"] == [istiods]
