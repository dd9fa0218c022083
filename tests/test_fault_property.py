"""Property-based (hypothesis): random VirtualService, DestinationRule and AuthorizationPolicy shapes next to
the demo topology. Parsing and translation never raise, and whatever our validation decides (objects with
errors are dropped, or enforced fail-closed for authz), the config served is config the real Envoy accepts:
"never push what Envoy rejects". All examples are checked by ONE batched `envoy --mode validate` run
(tests/support/batch_validate.py); examples whose three objects were all accepted are counted, so the
strategies cannot drift into generating only rejected input."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import ConfigStore
from istiod_lite.translate import translate
from testsupport import manifests
from testsupport.batch_validate import dump_docs, validate_many

WAYPOINT = ConfigKey("Gateway", "default", "waypoint")
BASE = manifests.demo_files(18080, {"reviews-v1": 20001, "reviews-v2": 20002, "ratings": 20003})
HOSTS = ["reviews", "reviews.default.svc.cluster.local", manifests.RATINGS_HOST]

words = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=8)
paths = st.builds(lambda parts: "/" + "/".join(parts), st.lists(words, max_size=3))
# regexes: mostly valid RE2, some invalid (validation must reject them, never Envoy)
regexes = st.one_of(st.sampled_from(["/api/.*", "^/v[0-9]+/", "(a|b)+", "[", "(?P<x>a)", "a{2,3}", "(?=x)",
                                     "\\d+", ".*", "x**", "[a-z]{1,1000}", "\\pL+"]),
                    st.text("ab.*+?()[]|^$\\{}0-9", min_size=1, max_size=8).filter(lambda t: t.count("(") < 2))
durations = st.one_of(st.sampled_from(["1s", "0.5s", "250ms", "0s", "1h", "10m", "1.5s"]),
                      st.builds(lambda n, u: f"{n}{u}", st.integers(0, 5000), st.sampled_from(["ms", "s"])))


def string_match():
    return st.one_of(st.fixed_dictionaries({"exact": words}), st.fixed_dictionaries({"prefix": paths}),
                     st.fixed_dictionaries({"regex": regexes}))


def destination():
    return st.fixed_dictionaries({"host": st.sampled_from(HOSTS)},
                                 optional={"subset": st.sampled_from(["v1", "v2", "v3"]),
                                           "port": st.fixed_dictionaries({"number": st.sampled_from([9080, 9080, 9080, 80])})})


def http_route():
    return st.fixed_dictionaries(
        {"route": st.lists(st.fixed_dictionaries({"destination": destination()},
                                                 optional={"weight": st.integers(-1, 100)}), min_size=1, max_size=2)},
        optional={
            "match": st.lists(st.fixed_dictionaries({}, optional={
                "uri": string_match(), "method": string_match(),
                "headers": st.dictionaries(st.sampled_from(["x-user", "x-version", "cookie"]), string_match(),
                                           max_size=2),
                "queryParams": st.dictionaries(words, string_match(), max_size=1),
                "ignoreUriCase": st.booleans()}), max_size=3),
            "timeout": durations,
            "retries": st.fixed_dictionaries({"attempts": st.integers(-1, 6)}, optional={
                "perTryTimeout": durations, "retryOn": st.sampled_from(["5xx", "gateway-error,connect-failure",
                                                                        "retriable-4xx", "bogus"])}),
            "rewrite": st.fixed_dictionaries({}, optional={"uri": paths, "authority": words}).filter(bool),
            "headers": st.fixed_dictionaries({}, optional={
                "request": st.fixed_dictionaries({}, optional={"set": st.dictionaries(words, words, max_size=2),
                                                               "remove": st.lists(words, max_size=2)})}),
        })


def virtual_service():
    return st.builds(lambda hosts, http: {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "prop-vs", "namespace": "default"}, "spec": {"hosts": hosts, "http": http}},
        st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2, unique=True),
        st.lists(http_route(), min_size=1, max_size=2))


def traffic_policy():
    return st.fixed_dictionaries({}, optional={
        "loadBalancer": st.one_of(
            st.fixed_dictionaries({"simple": st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM",
                                                              "PASSTHROUGH", "UNSPECIFIED"])}),
            st.fixed_dictionaries({"consistentHash": st.one_of(
                st.fixed_dictionaries({"httpHeaderName": words}), st.fixed_dictionaries({"useSourceIp": st.booleans()}),
                st.fixed_dictionaries({"httpCookie": st.fixed_dictionaries({"name": words, "ttl": durations})}),
                st.fixed_dictionaries({"httpHeaderName": words, "minimumRingSize": st.integers(0, 5000)}))})),
        "connectionPool": st.fixed_dictionaries({}, optional={
            "tcp": st.fixed_dictionaries({}, optional={"maxConnections": st.integers(-1, 100000),
                                                       "connectTimeout": durations}).filter(bool),
            "http": st.fixed_dictionaries({}, optional={"http1MaxPendingRequests": st.integers(-1, 1000),
                                                        "http2MaxRequests": st.integers(0, 1000),
                                                        "maxRequestsPerConnection": st.integers(0, 100),
                                                        "maxRetries": st.integers(0, 10),
                                                        "idleTimeout": durations}).filter(bool)}).filter(bool),
        "outlierDetection": st.fixed_dictionaries({}, optional={
            "consecutive5xxErrors": st.integers(0, 100), "interval": durations, "baseEjectionTime": durations,
            "maxEjectionPercent": st.integers(0, 120)}).filter(bool),
    }).filter(bool)


def destination_rule():
    return st.builds(lambda host, policy, subsets: {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "prop-dr", "namespace": "default"},
        "spec": {"host": host, "trafficPolicy": policy, "subsets": subsets}},
        st.sampled_from(HOSTS), traffic_policy(),
        st.lists(st.fixed_dictionaries({"name": st.sampled_from(["v1", "v2", "v3"]),
                                        "labels": st.dictionaries(st.just("version"), st.sampled_from(["v1", "v2"]),
                                                                  min_size=1)},
                                       optional={"trafficPolicy": traffic_policy()}), max_size=3,
                 unique_by=lambda s: s["name"]))


def authorization_policy():
    source = st.fixed_dictionaries({}, optional={
        "principals": st.lists(st.sampled_from(["cluster.local/ns/default/sa/a", "*", "*/sa/b"]), min_size=1,
                               max_size=2),
        "namespaces": st.lists(st.sampled_from(["default", "prod*", "*"]), min_size=1, max_size=2),
        "ipBlocks": st.lists(st.sampled_from(["10.0.0.0/8", "127.0.0.1", "::1/128", "10.1.0.0/16", "10.2.0.0/16", "1.2.3.4/40"]),
                             min_size=1, max_size=2)}).filter(bool)
    operation = st.fixed_dictionaries({}, optional={
        "methods": st.lists(st.sampled_from(["GET", "POST", "get", "*"]), min_size=1, max_size=2),
        "paths": st.lists(st.one_of(paths, st.sampled_from(["/api/*", "*/x", "/a/{*}/b", "/{**}"])), min_size=1,
                          max_size=2),
        "ports": st.lists(st.sampled_from(["9080", "80", "8080", "443", "15008", "abc"]), min_size=1, max_size=2),
        "hosts": st.lists(st.sampled_from(HOSTS + ["*.example.com"]), min_size=1, max_size=2)}).filter(bool)
    condition = st.fixed_dictionaries({"key": st.sampled_from(["request.headers[x-user]", "source.ip",
                                                               "source.namespace", "request.auth.claims[iss]",
                                                               "destination.port", "request.headers[x-b]",
                                                               "bogus.key"]),
                                       "values": st.lists(words, min_size=1, max_size=2)})
    rule = st.fixed_dictionaries({}, optional={
        "from": st.lists(st.fixed_dictionaries({"source": source}), min_size=1, max_size=2),
        "to": st.lists(st.fixed_dictionaries({"operation": operation}), min_size=1, max_size=2),
        "when": st.lists(condition, min_size=1, max_size=2)})
    return st.builds(lambda action, rules: {
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "prop-ap", "namespace": "default"},
        "spec": {"action": action, "rules": rules,
                 "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]}},
        st.sampled_from(["ALLOW", "DENY", "AUDIT"]), st.lists(rule, max_size=3))


EXAMPLES: list = []  # (ResourceSet, docs, all three accepted?) of every example


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
          derandomize=True)  # the same examples on every run: `make test` stays reproducible
@given(vs=virtual_service(), dr=destination_rule(), ap=authorization_policy())
def test_shapes_never_raise_and_accepted_ones_translate(vs, dr, ap):
    store = ConfigStore()
    for name, docs in BASE.items():
        store.replace_origin(name, [(d, name) for d in docs], [])
    store.replace_origin("generated.yaml", [(vs, "generated.yaml"), (dr, "generated.yaml"), (ap, "generated.yaml")])
    snapshot = store.snapshot()
    result = translate(snapshot, WAYPOINT)
    generated = {"prop-vs", "prop-dr", "prop-ap"}
    issues = [i for i in (*snapshot.issues, *result.issues) if i.is_error and i.key and i.key.name in generated]
    for issue in issues:
        assert issue.message and str(issue)
    EXAMPLES.append((result.resources, [vs, dr, ap], not issues))


def test_envoy_accepts_the_config_of_every_shape(tmp_path):
    if not EXAMPLES:
        test_shapes_never_raise_and_accepted_ones_translate()  # run alone: generate the examples first
    accepted = sum(1 for *_, ok in EXAMPLES if ok)
    print(f"{accepted} of {len(EXAMPLES)} examples fully accepted")
    assert accepted >= 6, f"only {accepted} of {len(EXAMPLES)} examples fully accepted: strategies too hostile"
    ok, report = validate_many([rs for rs, *_ in EXAMPLES], tmp_path, [dump_docs(docs) for _, docs, _ in EXAMPLES])
    assert ok, report
