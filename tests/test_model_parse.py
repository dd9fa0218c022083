"""Parsing and validation of manifests: every problem is an Issue naming file, object and field path."""

from istiod_lite.model.meta import ConfigKey, Severity
from istiod_lite.model.store import snapshot_from_text

WAYPOINT = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: default}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
  - {name: http, port: 18080, protocol: HTTP}
"""
SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default, labels: {istio.io/use-waypoint: waypoint}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9101}, labels: {version: v1}}
"""


def _errors(snapshot):
    return [i for i in snapshot.issues if i.severity is Severity.ERROR]


def test_valid_objects_parse_without_issues():
    snap = snapshot_from_text(WAYPOINT + "---" + SERVICE_ENTRY)
    assert snap.issues == ()
    (svc,) = snap.services
    assert svc.hostname == "reviews.default.svc.cluster.local"
    assert svc.waypoint == ConfigKey("Gateway", "default", "waypoint")
    assert svc.endpoints[0].port_for(9080) == 9101


def test_bad_yaml_names_file_and_line():
    snap = snapshot_from_text("kind: [unclosed\n", file="broken.yaml")
    (issue,) = snap.issues
    assert issue.file == "broken.yaml"
    assert "invalid YAML at line" in issue.message


def test_wrong_type_reported_with_field_path_and_object_dropped():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: "eighty"
"""
    snap = snapshot_from_text(vs, file="vs.yaml")
    (issue,) = _errors(snap)
    assert issue.key == ConfigKey("VirtualService", "default", "bad")
    assert issue.path == "spec.http[0].route[0].weight"
    assert issue.file == "vs.yaml"
    assert snap.virtual_services == ()
    assert "vs.yaml: VirtualService/default/bad: spec.http[0].route[0].weight" in str(issue)


def test_invalid_re2_regex_is_an_error_before_translation():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: re, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-user: {regex: "(unclosed"}}}]
    route: [{destination: {host: reviews}}]
"""
    (issue,) = _errors(snapshot_from_text(vs))
    assert issue.path == "spec.http[0].match[0].headers[x-user].regex"
    assert "RE2" in issue.message


def test_bad_duration_reported():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: t, namespace: default}
spec:
  hosts: [reviews]
  http:
  - timeout: 10 seconds
    route: [{destination: {host: reviews}}]
"""
    (issue,) = _errors(snapshot_from_text(vs))
    assert issue.path == "spec.http[0].timeout"


def test_unknown_field_is_a_warning_and_object_kept():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: u, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retrys: {attempts: 3}
"""
    snap = snapshot_from_text(vs)
    (issue,) = snap.issues
    assert issue.severity is Severity.WARNING
    assert issue.path == "spec.http[0].retrys"
    assert len(snap.virtual_services) == 1


def test_oneof_violation_reported():
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: o, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {exact: /a, prefix: /b}}]
    route: [{destination: {host: reviews}}]
"""
    (issue,) = _errors(snapshot_from_text(vs))
    assert issue.path == "spec.http[0].match[0].uri"
    assert "only one of" in issue.message


def test_unsupported_api_version_and_unknown_kind():
    text = """
apiVersion: networking.istio.io/v9
kind: VirtualService
metadata: {name: v, namespace: default}
spec: {hosts: [a]}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
"""
    snap = snapshot_from_text(text)
    kinds = {(i.key.kind, i.severity) for i in snap.issues}
    assert ("VirtualService", Severity.ERROR) in kinds
    assert ("Widget", Severity.WARNING) in kinds


def test_non_mapping_documents_and_missing_name():
    snap = snapshot_from_text("- a\n- b\n---\nkind: Service\nmetadata: {}\n", file="x.yaml")
    paths = sorted(i.path for i in snap.issues)
    assert paths == ["document[0]", "metadata.name"]


def test_duplicate_object_first_wins():
    snap = snapshot_from_text(WAYPOINT + "---" + SERVICE_ENTRY + "---" + SERVICE_ENTRY.replace("9101", "9999"))
    assert [i.reason for i in snap.issues] == ["Duplicate"]
    assert snap.services[0].endpoints[0].port_for(9080) == 9101
