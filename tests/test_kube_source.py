"""KubeSource with the real `kubernetes` client against the in-process fake API server: initial sync,
add/update/delete, dropped watches, 410 Gone (event and HTTP), server errors with backoff, a missing CRD."""

from __future__ import annotations

import asyncio
import contextlib
import copy


from istiod_lite.model.meta import ConfigKey
from istiod_lite.model.store import ConfigStore
from istiod_lite.sources.kube import Backoff, KubeSource
from istiod_lite.sources.kube_kinds import KINDS, normalize
from testsupport.fake_apiserver import FakeApiServer


def ns(name="default", **labels):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def gateway(name="waypoint", namespace="default"):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}


def service(name="reviews", namespace="default", ip="10.0.0.10", port=9080):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": name},
                     "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": port}]}}


def endpoint_slice(svc="reviews", namespace="default", ips=("10.1.0.1",), port=9080):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc}-abc", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": f"{svc}-{i}", "namespace": namespace}}
                          for i, ip in enumerate(ips)]}


def pod(name, ip, namespace="default", **labels):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "x"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def virtual_service(name="reviews", namespace="default", subset="v1"):
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews",
                                                                                "subset": subset}}]}]}}


def destination_rule(name="reviews", namespace="default"):
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                    {"name": "v2", "labels": {"version": "v2"}}]}}


def seed(fake: FakeApiServer) -> None:
    for obj in (ns("default", **{"istio.io/use-waypoint": "waypoint"}), gateway(), service(),
                endpoint_slice(ips=("10.1.0.1", "10.1.0.2")), pod("reviews-0", "10.1.0.1", app="reviews", version="v1"),
                pod("reviews-1", "10.1.0.2", app="reviews", version="v2"), virtual_service(), destination_rule()):
        fake.upsert(obj)


class RecordingSink:
    """Wraps the real store and records every call (to check that nothing is applied twice)."""

    def __init__(self, store: ConfigStore) -> None:
        self.store = store
        self.calls: list[tuple] = []

    def replace_origin(self, origin, objects, issues=()):
        self.calls.append(("replace", origin, len(objects)))
        self.store.replace_origin(origin, objects, issues)

    def upsert(self, origin, obj, file=None):
        self.calls.append(("upsert", origin, obj["metadata"]["name"]))
        self.store.upsert(origin, obj, file)

    def delete(self, origin, key):
        self.calls.append(("delete", origin, key.name))
        self.store.delete(origin, key)


class Sleeps:
    """Injectable sleep: records the requested delays, sleeps only briefly."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(fake: FakeApiServer, **kwargs):
    store = ConfigStore()
    sink = RecordingSink(store)
    sleeps = Sleeps()
    api = fake.api_client()
    source = KubeSource(api, sleep=sleeps, rand=lambda: 0.5, watch_timeout=30, **kwargs)
    task = asyncio.create_task(source.run(sink))
    try:
        yield source, store, sink, sleeps
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        api.close()


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def server_state(fake: FakeApiServer) -> dict[ConfigKey, dict]:
    """The server's objects as the store should hold them."""
    out = {}
    for spec in KINDS:
        for obj in fake.objects(spec.kind):
            o = normalize(spec, obj)
            md = o["metadata"]
            out[ConfigKey(spec.kind, md.get("namespace", "") if spec.namespaced else "", md["name"])] = o
    return out


def store_state(source: KubeSource) -> dict[ConfigKey, dict]:
    out = {}
    for inf in source.informers.values():
        out.update(inf.cache)
    return out


async def watching(fake: FakeApiServer, kinds=("VirtualService",)):
    await until(lambda: all(fake.watch_count.get(k) for k in kinds) and fake.open_watches() >= len(kinds),
                what="watches open")


async def test_initial_sync_builds_snapshot(fake):
    seed(fake)
    async with running(fake) as (source, store, sink, _):
        await until(lambda: source.synced, what="synced")
        snap = store.snapshot()
        assert [g.key for g in snap.waypoints()] == [ConfigKey("Gateway", "default", "waypoint")]
        reviews = snap.service("reviews.default.svc.cluster.local")
        assert reviews is not None and reviews.waypoint == ConfigKey("Gateway", "default", "waypoint")
        assert sorted(e.address for e in reviews.endpoints) == ["10.1.0.1", "10.1.0.2"]
        assert [vs.key.name for vs in snap.virtual_services] == ["reviews"]
        assert not [i for i in snap.issues if i.is_error], snap.issues
        # kind/apiVersion set on list items, managedFields gone, Pods trimmed to labels and IPs
        cached_pod = source.informers["Pod"].cache[ConfigKey("Pod", "default", "reviews-0")]
        assert cached_pod["kind"] == "Pod" and "spec" not in cached_pod
        assert cached_pod["status"] == {"podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}]}
        assert all("managedFields" not in o["metadata"] for o in store_state(source).values())
        assert store_state(source) == server_state(fake)
        # one list per kind and every list went to the store exactly once
        assert sorted(c[1] for c in sink.calls if c[0] == "replace") == sorted(k.origin for k in KINDS)


async def test_add_update_delete_reach_the_store(fake):
    seed(fake)
    async with running(fake) as (source, store, sink, _):
        await until(lambda: source.synced)
        await watching(fake, ("VirtualService", "DestinationRule", "Pod"))
        fake.upsert(virtual_service("ratings", subset="v2"))
        await until(lambda: len(store.snapshot().virtual_services) == 2, what="VS added")
        fake.upsert(virtual_service("reviews", subset="v2"))
        await until(lambda: store.snapshot().virtual_services[0].spec["http"][0]["route"][0]["destination"]
                    ["subset"] == "v2", what="VS updated")
        fake.delete("DestinationRule", "default", "reviews")
        await until(lambda: not store.snapshot().destination_rules, what="DR deleted")
        fake.upsert(pod("reviews-0", "10.1.0.9", app="reviews", version="v1"))
        await until(lambda: "10.1.0.9" in str(store_state(source)), what="pod IP updated")
        assert store_state(source) == server_state(fake)


async def test_status_only_and_pod_status_changes_do_not_touch_the_store(fake):
    seed(fake)
    async with running(fake) as (source, store, sink, _):
        await until(lambda: source.synced)
        await watching(fake, ("VirtualService", "Pod"))
        version = store.version
        vs = fake.get("VirtualService", "default", "reviews")
        vs["status"] = {"conditions": [{"type": "Reconciled", "status": "True"}]}
        fake.upsert(vs)
        p = fake.get("Pod", "default", "reviews-0")
        p["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        fake.upsert(p)
        fake.upsert(virtual_service("marker"))
        await until(lambda: len(store.snapshot().virtual_services) == 2, what="marker")
        assert store.version == version + 1  # only the marker changed the store


async def test_dropped_watch_resumes_without_loss_or_duplicates(fake):
    seed(fake)
    async with running(fake) as (source, store, sink, sleeps):
        await until(lambda: source.synced)
        await watching(fake, ("VirtualService",))
        lists_before = fake.list_count["VirtualService"]
        watches_before = fake.watch_count["VirtualService"]
        fake.drop_watches()
        # changes made while no watch is open must arrive once the watch resumes from its resourceVersion
        fake.upsert(virtual_service("during-drop"))
        fake.delete("VirtualService", "default", "reviews")
        await until(lambda: [v.key.name for v in store.snapshot().virtual_services] == ["during-drop"],
                    what="changes after drop")
        assert fake.watch_count["VirtualService"] > watches_before
        assert fake.list_count["VirtualService"] == lists_before  # resumed, not re-listed
        assert sleeps.delays, "a dropped watch is retried after a backoff"
        vs_calls = [c for c in sink.calls if c[1] == "kube:VirtualService"]
        assert vs_calls == [("replace", "kube:VirtualService", 1), ("upsert", "kube:VirtualService", "during-drop"),
                            ("delete", "kube:VirtualService", "reviews")]
        assert store_state(source) == server_state(fake)


async def test_gone_in_watch_stream_relists_without_loss(fake):
    seed(fake)
    async with running(fake) as (source, store, sink, _):
        await until(lambda: source.synced)
        await watching(fake, ("VirtualService", "DestinationRule"))
        lists_before = dict(fake.list_count)
        # The watch is cut, changes happen, and the history is compacted: resuming gets ERROR 410.
        fake.drop_watches()
        fake.upsert(virtual_service("added-while-gone"))
        fake.upsert(virtual_service("reviews", subset="v2"))
        fake.delete("DestinationRule", "default", "reviews")
        fake.compact()
        await until(lambda: store_state(source) == server_state(fake), what="re-list converged")
        assert fake.list_count["VirtualService"] == lists_before["VirtualService"] + 1
        assert source.informers["VirtualService"].stats.gone >= 1
        snap = store.snapshot()
        assert sorted(v.key.name for v in snap.virtual_services) == ["added-while-gone", "reviews"]
        assert not snap.destination_rules
        # after the re-list the watch continues: a later change still arrives
        fake.upsert(virtual_service("after"))
        await until(lambda: len(store.snapshot().virtual_services) == 3, what="change after relist")
        assert store_state(source) == server_state(fake)


async def test_http_410_on_watch_relists(fake):
    seed(fake)
    async with running(fake) as (source, store, sink, _):
        await until(lambda: source.synced)
        await watching(fake, ("VirtualService",))
        lists_before = fake.list_count["VirtualService"]
        fake.fail("GET", "/virtualservices", 410, times=1, watch=True)
        fake.drop_watches()
        fake.upsert(virtual_service("x"))
        await until(lambda: fake.list_count["VirtualService"] == lists_before + 1, what="relist")
        await until(lambda: store_state(source) == server_state(fake), what="converged")


async def test_server_errors_back_off_with_growing_jittered_delays(fake):
    seed(fake)
    fake.fail("GET", "/virtualservices", 500, times=3, watch=False)
    async with running(fake) as (source, store, sink, sleeps):
        await until(lambda: source.synced, what="synced despite 500s")
        assert source.informers["VirtualService"].stats.errors == 3
        # rand() = 0.5 and jitter 0.5: 0.5*0.75, 1.0*0.75, 2.0*0.75
        assert sleeps.delays[:3] == [0.375, 0.75, 1.5]
        assert store_state(source) == server_state(fake)
        # a 500 on the watch is retried too, the watch resumes
        fake.fail("GET", "/virtualservices", 500, times=2, watch=True)
        fake.drop_watches()
        fake.upsert(virtual_service("after-500"))
        await until(lambda: len(store.snapshot().virtual_services) == 2, what="after watch 500s")


def test_backoff_caps_and_resets():
    b = Backoff(initial=1, maximum=8, jitter=0.0)
    assert [b.next() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.next() == 1
    jittered = Backoff(initial=1, maximum=8, jitter=0.5, rand=lambda: 1.0)
    assert jittered.next() == 0.5


async def test_missing_crd_is_reported_once_and_picked_up_later(fake):
    seed(fake)
    fake.uninstall("AuthorizationPolicy")
    async with running(fake, crd_retry=0.05) as (source, store, sink, sleeps):
        await until(lambda: source.synced, what="synced with a CRD missing")
        issues = [i for i in store.snapshot().issues if i.reason == "CrdMissing"]
        assert len(issues) == 1 and "AuthorizationPolicy" in issues[0].message
        await until(lambda: len(fake.requests_to("GET", "/authorizationpolicies")) >= 3, what="retries")
        assert [c for c in sink.calls if c[1] == "kube:AuthorizationPolicy"] == \
            [("replace", "kube:AuthorizationPolicy", 0)]  # reported once, not on every retry
        fake.install("AuthorizationPolicy")
        fake.upsert({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                     "metadata": {"name": "deny", "namespace": "default"},
                     "spec": {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                              "name": "waypoint"}], "action": "DENY",
                              "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}})
        await until(lambda: len(store.snapshot().authorization_policies) == 1, what="AP picked up")
        assert not [i for i in store.snapshot().issues if i.reason == "CrdMissing"]
        assert sleeps.delays.count(0.05) >= 2


async def test_paged_list_collects_every_page(fake):
    seed(fake)
    for i in range(7):
        fake.upsert(virtual_service(f"vs-{i}"))
    async with running(fake, page_size=3) as (source, store, sink, _):
        await until(lambda: source.synced)
        assert len(store.snapshot().virtual_services) == 8
        pages = [r for r in fake.requests_to("GET", "/virtualservices") if r.query.get("watch") != "true"]
        assert [r.query.get("continue") for r in pages] == [None, "3", "6"]


async def test_bookmarks_advance_the_resource_version(fake):
    seed(fake)
    async with running(fake) as (source, store, sink, _):
        await until(lambda: source.synced)
        await watching(fake, ("Namespace",))
        fake.upsert(virtual_service("bump"))  # advances the global resourceVersion, not the Namespace one
        before = source.informers["Namespace"].resource_version
        fake.send_bookmarks()
        await until(lambda: source.informers["Namespace"].resource_version != before, what="bookmark")
        watch = fake.requests_to("GET", "/api/v1/namespaces")[-1]
        assert watch.query.get("allowWatchBookmarks") == "true"
        snapshot_before = copy.deepcopy(store_state(source))
        assert store_state(source) == snapshot_before
