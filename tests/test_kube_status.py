"""Status computed from a snapshot + issues, and written to the fake API server's status subresources."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from istiod_lite.model.meta import ConfigKey, error
from istiod_lite.model.store import snapshot_from_text
from istiod_lite.ops.status_writer import StatusWriter, compute_statuses
from testsupport.fake_apiserver import FakeApiServer

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
    assert out[ConfigKey("VirtualService", "default", "reviews")]["observedGeneration"] == 2
    plain = cond(out[ConfigKey("VirtualService", "other", "plain")])
    assert (plain["status"], plain["reason"]) == ("False", "NoWaypoint")
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


@pytest.fixture
def fake():
    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_writer_patches_status_subresource_only_on_change(fake):
    for doc in yaml.safe_load_all(BASE + WAYPOINT_SERVICE):
        fake.upsert(doc)
    snap = snapshot_from_text(BASE + WAYPOINT_SERVICE)
    clock = Clock()
    api = fake.api_client()
    try:
        writer = StatusWriter(api, clock=clock)
        written = writer.write(compute_statuses(snap, []))
        assert GW in written and len(written) == 6
        patches = fake.requests_to("PATCH", "/status")
        assert {r.content_type for r in patches} == {"application/merge-patch+json"}
        gw_patch = next(r for r in patches if r.path == "/apis/gateway.networking.k8s.io/v1/namespaces/default/"
                                                         "gateways/waypoint/status")
        assert cond(gw_patch.body["status"], "Programmed")["lastTransitionTime"] == "2025-01-01T00:00:00Z"
        stored = fake.get("Gateway", "default", "waypoint")
        assert stored["status"]["addresses"] == [{"type": "Hostname", "value": "waypoint.default.svc.cluster.local"}]
        assert stored["spec"]["gatewayClassName"] == "istio-waypoint"  # only status touched
        vs_path = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews/status"
        assert fake.requests_to("PATCH", vs_path)[0].body == {"status": {
            "conditions": [{"type": "WaypointAccepted", "status": "True", "reason": "Accepted",
                            "message": "bound to waypoint default/waypoint", "observedGeneration": 2,
                            "lastTransitionTime": "2025-01-01T00:00:00Z"}],
            "observedGeneration": 2}}
        # same statuses again: nothing written
        clock.now += timedelta(minutes=1)
        assert writer.write(compute_statuses(snap, [])) == []
        assert len(fake.requests_to("PATCH", "/status")) == 6
        # a change flips one condition: only that object is written, with a new transition time
        issue = error(ConfigKey("VirtualService", "default", "reviews"), "spec.http[0].timeout", "bad timeout")
        assert writer.write(compute_statuses(snap, [issue])) == [ConfigKey("VirtualService", "default", "reviews")]
        last = fake.requests_to("PATCH", vs_path)[-1].body["status"]["conditions"][0]
        assert (last["status"], last["lastTransitionTime"]) == ("False", "2025-01-01T00:01:00Z")
        # Gateway message changes but status stays True: the transition time is kept
        clock.now += timedelta(minutes=1)
        more = snapshot_from_text(BASE + WAYPOINT_SERVICE.replace("[{name: mesh, port: 15008}]",
                                                                  "[{name: mesh, port: 15008}, {name: s, port: 15021}]"))
        assert GW in writer.write(compute_statuses(more, [issue]))
        prog = cond(fake.requests_to("PATCH", "/gateways/waypoint/status")[-1].body["status"], "Programmed")
        assert prog["lastTransitionTime"] == "2025-01-01T00:00:00Z" and "15021" in prog["message"]
    finally:
        api.close()


def test_writer_survives_missing_objects_and_errors(fake):
    snap = snapshot_from_text(BASE)
    api = fake.api_client()
    try:
        writer = StatusWriter(api)
        fake.fail("PATCH", "/virtualservices/reviews/status", 500)
        written = writer.write(compute_statuses(snap, []))
        assert written == []  # nothing exists on the server (404s), one 500
        assert writer.failures == 1
        fake.upsert(next(d for d in yaml.safe_load_all(BASE)
                         if d["kind"] == "VirtualService" and d["metadata"]["name"] == "reviews"))
        assert writer.write(compute_statuses(snap, [])) == [ConfigKey("VirtualService", "default", "reviews")]
    finally:
        api.close()
