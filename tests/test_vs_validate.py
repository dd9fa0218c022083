"""VirtualService validation (model/validate_vs.py + validate.py): Istio's webhook rules as Issues with field
paths; an invalid VirtualService is not admitted, a valid one passes without errors."""

from __future__ import annotations

from typing import Any

import pytest

from istiod_lite.model.parse import parse_object


def _vs(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "ns"}, "spec": spec}


def _http(rule: dict[str, Any], **spec: Any) -> dict[str, Any]:
    base = {"route": [{"destination": {"host": "reviews"}}]}
    return _vs({"hosts": ["reviews"], "http": [{**base, **rule}], **spec})


def _errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    parsed, issues = parse_object(obj)
    errors = [(i.path, i.message) for i in issues if i.is_error]
    assert (parsed is None) == bool(errors)  # an error keeps the object out of the snapshot
    return errors


def test_a_complete_valid_virtual_service_has_no_errors() -> None:
    rule = {
        "name": "all", "match": [{"name": "m", "uri": {"prefix": "/a"}, "headers": {"x": {"regex": "*"}},
                                  "withoutHeaders": {"y": {}}, "queryParams": {"q": {"exact": "1"}},
                                  "method": {"exact": "GET"}, "port": 80, "ignoreUriCase": True}],
        "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 30,
                   "headers": {"request": {"set": {":authority": "a"}}}},
                  {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 80}}, "weight": 30}],
        "rewrite": {"uriRegexRewrite": {"match": "^/a(.*)", "rewrite": "/b\\1"}},
        "headers": {"request": {"add": {"x-a": "1"}, "remove": ["x-b"]}, "response": {"set": {"x-c": "2"}}},
        "timeout": "2s", "retries": {"attempts": 3, "perTryTimeout": "1s",
                                     "retryOn": "5xx,cancelled,deadline-exceeded,internal,resource-exhausted,"
                                                "unavailable,503", "retryRemoteLocalities": True, "backoff": "25ms"},
        "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 0.5}},
                  "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
        "mirrors": [{"destination": {"host": "mirror"}, "percentage": {"value": 10}}],
        "corsPolicy": {"allowOrigins": [{"exact": "https://a"}, {"regex": "https://.*"}], "allowMethods": ["GET"],
                       "allowHeaders": ["x-h"], "exposeHeaders": ["x-e"], "maxAge": "24h", "allowCredentials": True,
                       "unmatchedPreflights": "IGNORE"},
    }
    assert _errors(_vs({"hosts": ["reviews", "*.example.com"], "gateways": ["mesh", "ns/waypoint"],
                        "exportTo": ["."], "http": [rule],
                        "tcp": [{"match": [{"port": 5432}], "route": [{"destination": {"host": "db"}}]}]})) == []


@pytest.mark.parametrize("obj, path, fragment", [
    (_vs({"hosts": ["*"], "http": [{"route": [{"destination": {"host": "a"}}]}]}), "spec.hosts[0]", "wildcard host"),
    (_vs({"hosts": ["a.example.com", "*.example.com"], "http": [{"route": [{"destination": {"host": "a"}}]}]}),
     "spec.hosts[1]", "duplicate hosts"),
    (_vs({"hosts": ["a"]}), "spec", "http, tcp or tls must be provided"),
    (_vs({"hosts": ["a"], "exportTo": ["~", "ns"], "http": [{"route": [{"destination": {"host": "a"}}]}]}),
     "spec.exportTo", "must be the only entry"),
    (_vs({"hosts": ["a"], "gateways": ["ns/Bad_Name"], "http": [{"route": [{"destination": {"host": "a"}}]}]}),
     "spec.gateways[0]", "invalid value for gateway name"),
    (_http({"redirect": {"uri": "/x"}}), "spec.http[0]", "both route and redirect"),
    (_vs({"hosts": ["a"], "http": [{"directResponse": {"status": 200}, "fault": {"abort": {"httpStatus": 500}}}]}),
     "spec.http[0]", "both fault and directResponse"),
    (_vs({"hosts": ["a"], "http": [{"match": [{"uri": {"prefix": "/"}}]}]}), "spec.http[0]", "is required"),
    (_http({"mirror": {"host": "m"}, "mirrors": [{"destination": {"host": "n"}}]}), "spec.http[0]",
     "both mirror and mirrors"),
    (_http({"match": [{"headers": {"x": {"prefix": ""}}}]}), "", ""),  # empty prefix in headers: allowed
    (_http({"match": [{"method": {"prefix": ""}}]}), "spec.http[0].match[0].method.prefix", "should not be empty"),
    (_http({"match": [{"uri": {"regex": "a("}}]}), "spec.http[0].match[0].uri.regex", "invalid RE2"),
    (_http({"match": [{"uri": {"regex": ""}}]}), "spec.http[0].match[0].uri.regex", "should not be empty"),
    (_http({"match": [{"headers": {"@request.auth.claims.group": {"exact": "a"}}}]}),
     "spec.http[0].match[0].headers[@request.auth.claims.group]", "only supported for gateways"),
    (_http({"match": [{"port": 70000}]}), "spec.http[0].match[0].port", "1 and 65535"),
    (_http({"headers": {"request": {"set": {":path": "/x"}}}}), "spec.http[0].headers.request.set[:path]",
     "cannot be modified"),
    (_http({"headers": {"response": {"set": {"host": "x"}}}}), "spec.http[0].headers.response.set[host]",
     "cannot be modified"),
    (_http({"rewrite": {"authority": "a"}, "headers": {"request": {"set": {"host": "b"}}}}), "spec.http[0].rewrite",
     "authority cannot be set multiple times"),
    (_http({"rewrite": {"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}}), "spec.http[0].rewrite",
     "one of uri or uriRegexRewrite"),
    (_http({"rewrite": {}}), "spec.http[0].rewrite", "at least one of"),
    (_vs({"hosts": ["a"], "http": [{"redirect": {"redirectCode": 301}}]}), "spec.http[0].redirect",
     "must specify uri"),
    (_vs({"hosts": ["a"], "http": [{"redirect": {"uri": "/", "redirectCode": 200}}]}),
     "spec.http[0].redirect.redirectCode", "must be 3xx"),
    (_vs({"hosts": ["a"], "http": [{"redirect": {"uri": "/", "scheme": "ftp"}}]}),
     "spec.http[0].redirect.scheme", "http"),
    (_vs({"hosts": ["a"], "http": [{"directResponse": {"status": 99}}]}), "spec.http[0].directResponse.status",
     "200-599"),
    (_vs({"hosts": ["a"], "http": [{"directResponse": {"status": 200, "body": {"bytes": "not base64!"}}}]}),
     "spec.http[0].directResponse.body.bytes", "base64"),
    (_vs({"hosts": ["a"], "http": [{"directResponse": {"status": 200, "body": {"string": "x" * (1024 * 1024 + 1)}}}]}),
     "spec.http[0].directResponse.body", "1MB"),
    (_http({"retries": {"attempts": 3, "retryOn": "5xx,bogus"}}), "spec.http[0].retries.retryOn", "'bogus'"),
    (_http({"retries": {"attempts": 0, "retryOn": "5xx"}}), "spec.http[0].retries", "attempts are set to 0"),
    (_http({"retries": {"attempts": 1, "perTryTimeout": "1x"}}), "spec.http[0].retries.perTryTimeout", "duration"),
    (_http({"timeout": "-1s"}), "spec.http[0].timeout", "duration"),
    (_http({"fault": {}}), "spec.http[0].fault", "abort and/or a delay"),
    (_http({"fault": {"abort": {"httpStatus": 700}}}), "spec.http[0].fault.abort.httpStatus", "200-599"),
    (_http({"fault": {"abort": {"grpcStatus": "NOPE"}}}), "spec.http[0].fault.abort.grpcStatus", "not supported"),
    (_http({"fault": {"abort": {"http2Error": "REFUSED_STREAM"}}}), "spec.http[0].fault.abort.http2Error",
     "not supported"),
    (_http({"fault": {"abort": {"httpStatus": 500, "percentage": {"value": 101}}}}),
     "spec.http[0].fault.abort.percentage", "between 0 and 100"),
    (_http({"fault": {"delay": {"exponentialDelay": "1s"}}}), "spec.http[0].fault.delay.exponentialDelay",
     "not supported"),
    (_http({"mirror": {"host": "m"}, "mirrorPercentage": {"value": -1}}), "spec.http[0].mirrorPercentage",
     "between 0 and 100"),
    (_http({"mirrors": [{"destination": {"host": "m"}, "percentage": {"value": 200}}]}),
     "spec.http[0].mirrors[0].percentage", "between 0 and 100"),
    (_http({"corsPolicy": {"allowOrigins": [{"exact": ""}]}}), "spec.http[0].corsPolicy.allowOrigins[0]",
     "not a valid match"),
    (_http({"corsPolicy": {"allowMethods": ["FETCH"]}}), "spec.http[0].corsPolicy.allowMethods[0]",
     "not a supported HTTP method"),
    (_http({"corsPolicy": {"maxAge": "1.5s"}}), "spec.http[0].corsPolicy.maxAge", "seconds precision"),
    (_http({"corsPolicy": {"allowOrigins": [{"regex": "(("}]}}), "spec.http[0].corsPolicy.allowOrigins[0].regex",
     "invalid RE2"),
    (_vs({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": 0},
                                              {"destination": {"host": "b"}, "weight": 0}]}]}),
     "spec.http[0].route", "total destination weight = 0"),
    (_vs({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "*"}}]}]}),
     "spec.http[0].route[0].destination.host", "invalid destination host"),
    (_vs({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a", "subset": "V_1"}}]}]}),
     "spec.http[0].route[0].destination.subset", "subset name is invalid"),
    (_vs({"hosts": ["a"], "tcp": [{"match": [{"port": 5432}]}]}), "spec.tcp[0].route", "TCP route is required"),
])
def test_invalid_virtual_services_are_reported_at_their_field(obj: dict, path: str, fragment: str) -> None:
    errors = _errors(obj)
    if not path:
        assert errors == []
        return
    assert any(p == path and fragment in m for p, m in errors), errors


def test_deprecated_fields_are_warnings_not_errors() -> None:
    parsed, issues = parse_object(_http({"fault": {"delay": {"fixedDelay": "1s", "percent": 10}},
                                         "corsPolicy": {"allowOrigin": ["https://a"]}}))
    assert parsed is not None
    assert {i.path for i in issues if not i.is_error} == {"spec.http[0].fault.delay.percent",
                                                           "spec.http[0].corsPolicy.allowOrigin"}
