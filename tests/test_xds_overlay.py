"""The per-stream "shared TypeResources + overlay" state (xds/subscription.py) and the O(changed) diff paths of
xds/delta.py and xds/sotw.py against the full diff, in process.

Randomized sequences of cache changes, subscribes/unsubscribes, wildcard switches, ACKs, NACKs, ACK timeouts
(and late ACKs), held-back removals, resent endpoints and reconnects with initial_resource_versions drive two
servers in lockstep: one with the shortcuts (`FAST = True`), one forced onto the full diff. Every response must be
byte-identical, and a simulated client applying the responses must end with exactly the cache's content.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from testsupport.xds_harness import GROUP, cla, cluster

from istiod_lite.xds import delta, sotw
from istiod_lite.xds.cache import SnapshotCache, TypeResources, aggregate_version
from istiod_lite.xds.shared import Shared
from istiod_lite.xds.subscription import TypeState
from istiod_lite.xds.types import CLUSTER, ENDPOINT

POOL = [f"r{i:02d}" for i in range(24)]
SEEDS = int(os.environ.get("OVERLAY_SEEDS", "30"))  # random sequences per test (400 passed once, ~2 min)


class Cache:
    """A SnapshotCache holding random clusters and endpoints under the same names, changed a few at a time."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cache = SnapshotCache()
        self.content = {CLUSTER: {n: 1 for n in rng.sample(POOL, 12)}, ENDPOINT: {n: 1 for n in rng.sample(POOL, 12)}}
        self.messages: dict[str, dict] = {CLUSTER: {}, ENDPOINT: {}}
        self._set()

    def _set(self) -> None:
        for type_url, build in ((CLUSTER, cluster), (ENDPOINT, cla)):
            old = self.messages[type_url]
            self.messages[type_url] = {
                n: old[n] if n in old and old[n][0] == v else (v, build(n, v)) for n, v in self.content[type_url].items()
            }
        self.cache.set_resources(GROUP, {t: {n: m for n, (_, m) in by.items()} for t, by in self.messages.items()})

    def change(self) -> None:
        for _ in range(self.rng.randint(1, 3)):
            by = self.content[self.rng.choice([CLUSTER, ENDPOINT])]
            name = self.rng.choice(POOL)
            roll = self.rng.random()
            if name in by and roll < 0.3:
                del by[name]
            else:
                by[name] = self.rng.randint(1, 4) if name in by else 1
        self._set()

    def of(self, type_url: str) -> TypeResources:
        return self.cache.of_type(GROUP, type_url)


@dataclass
class Client:
    """What a Delta proxy holds for one type: name -> version, and what it subscribed."""

    wildcard: bool
    names: set[str] = field(default_factory=set)
    has: dict[str, str] = field(default_factory=dict)
    inflight: discovery_pb2.DeltaDiscoveryResponse | None = None

    def receive(self, body: bytes) -> discovery_pb2.DeltaDiscoveryResponse:
        resp = discovery_pb2.DeltaDiscoveryResponse.FromString(body)
        self.inflight = resp
        return resp

    def apply(self) -> None:
        assert self.inflight is not None
        for r in self.inflight.resources:
            if self.wildcard or r.name in self.names:  # a proxy ignores what it no longer watches
                self.has[r.name] = r.version
        for name in self.inflight.removed_resources:
            self.has.pop(name, None)


def request(type_url: str, nonce: str = "", error: str = "", subscribe=(), unsubscribe=(), initial=None):
    req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce,
                                              resource_names_subscribe=list(subscribe),
                                              resource_names_unsubscribe=list(unsubscribe),
                                              initial_resource_versions=initial or {})
    if error:
        req.error_detail.message = error
    return req


class Pair:
    """The same protocol state twice: `fast` with the shortcuts, `full` forced onto the full diff."""

    def __init__(self, type_url: str, shared: Shared | None = None):
        self.type_url = type_url
        self.fast = TypeState(type_url)
        self.full = TypeState(type_url)
        self.shared = shared  # the fast side's work shared with other replicas (xds/shared.py)
        self.fast_paths = 0

    def call(self, fn, *args):
        out = []
        for ts, flag in ((self.fast, True), (self.full, False)):
            delta.FAST = flag
            try:
                out.append(fn(ts, *args))
            finally:
                delta.FAST = True
        return out

    def build(self, entries, allow_removals: bool, nonce: str):
        delta.FAST = False
        try:
            full = delta.build(self.full, entries, allow_removals, nonce, 0.0)
        finally:
            delta.FAST = True
        return delta.build(self.fast, entries, allow_removals, nonce, 0.0, self.shared), full


def _delta_step(rng, cache: Cache, pair: Pair, client: Client, step: int) -> None:
    t = pair.type_url
    entries = cache.of(t)
    roll = rng.random()
    ts = pair.fast
    if roll < 0.25:
        cache.change()
    elif roll < 0.55 and ts.pending is None:
        allow = rng.random() < 0.8
        if pair.call(lambda s, e: delta.candidates(s, e)[1], entries)[0] is False:
            pair.fast_paths += 1
        built = pair.build(entries, allow, f"n{step}")
        assert built[0] == built[1], "the O(changed) path answered differently from the full diff"
        if built[0] is not None:
            client.receive(built[0][0])
            if t == CLUSTER and ts.pending.replaced and rng.random() < 0.5:
                pair.call(lambda s, r: delta.resend_endpoints(s, entries, r), ts.pending.replaced)
    elif roll < 0.75 and ts.pending is not None:
        nonce = ts.pending.nonce
        kind = rng.choice(["ack", "ack", "ack", "nack", "timeout"])
        if kind == "timeout":
            pair.call(lambda s: s.abandon())
            if rng.random() < 0.5:  # the ACK arrives late
                client.apply()
                kinds = pair.call(delta.on_request, request(t, nonce))
                assert kinds[0] == kinds[1] and kinds[0].kind == "late_ack"
                pair.call(lambda s: s.late_ack())
            return
        kinds = pair.call(delta.on_request, request(t, nonce, "bad" if kind == "nack" else ""))
        assert kinds[0] == kinds[1] and kinds[0].kind == kind
        if kind == "ack":
            client.apply()
            pair.call(lambda s: s.ack())
        else:
            pair.call(lambda s: s.nack("bad"))
    elif roll < 0.9 and t == ENDPOINT:
        name = rng.choice(POOL + ["*"])
        if name == "*":
            if client.wildcard:
                client.wildcard = False
                client.has = {n: v for n, v in client.has.items() if n in client.names}
                pair.call(delta.on_request, request(t, unsubscribe=["*"]))
            else:
                client.wildcard = True
                pair.call(delta.on_request, request(t, subscribe=["*"]))
        elif name in client.names:
            client.names.discard(name)
            if not client.wildcard:
                client.has.pop(name, None)
            pair.call(delta.on_request, request(t, unsubscribe=[name]))
        else:
            client.names.add(name)
            pair.call(delta.on_request, request(t, subscribe=[name]))
    elif roll < 0.95:  # reconnect: a new stream seeded with what the client has
        client.inflight = None
        pair.fast, pair.full = TypeState(t), TypeState(t)
        subscribe = sorted(client.names) + (["*"] if client.wildcard and t == ENDPOINT else [])
        pair.call(delta.on_request, request(t, subscribe=subscribe, initial=dict(client.has)))


def _settle_delta(cache: Cache, pair: Pair, client: Client) -> None:
    """Release every hold (one more change), then answer and ACK until nothing is left to send."""
    t = pair.type_url
    ts = pair.fast
    if ts.pending is not None:
        pair.call(delta.on_request, request(t, ts.pending.nonce))
        client.apply()
        pair.call(lambda s: s.ack())
    cache.content[CLUSTER]["fresh"] = cache.content[ENDPOINT]["fresh"] = 9
    cache._set()
    entries = cache.of(t)
    for i in range(5):
        built = pair.build(entries, True, f"end{i}")
        assert built[0] == built[1]
        if built[0] is None:
            break
        client.receive(built[0][0])
        client.apply()
        pair.call(lambda s: s.ack())
    assert built[0] is None
    want = {n: e.version for n, e in entries.items() if client.wildcard or n in client.names}
    assert client.has == want
    for state in (pair.fast, pair.full):
        assert {n: v for n, v in state.known_dict().items() if state.in_scope(n)} == want
        assert delta.in_sync(state, entries)


@pytest.mark.parametrize("seed", range(SEEDS))
@pytest.mark.parametrize("type_url", [CLUSTER, ENDPOINT])
def test_delta_fast_path_matches_full_diff_and_client_converges(seed, type_url):
    """Three replicas of one waypoint (same first subscription, so they share work through one `Shared`),
    each driven by its own random sequence, each compared with its own full-diff twin."""
    rng = random.Random(seed)
    cache = Cache(rng)
    shared = Shared()
    names = set(rng.sample(POOL, 8)) if type_url == ENDPOINT else set()
    replicas = []
    for _ in range(3):
        pair = Pair(type_url, shared)
        client = Client(wildcard=type_url == CLUSTER, names=set(names))
        pair.call(delta.on_request, request(type_url, subscribe=sorted(client.names)))
        replicas.append((pair, client))
    for step in range(300):
        pair, client = rng.choice(replicas)
        _delta_step(rng, cache, pair, client, step)
    for pair, client in replicas:
        _settle_delta(cache, pair, client)
    assert sum(pair.fast_paths for pair, _ in replicas) > 0  # else this compares the full diff with itself
    # all in step now: one change reaches every replica, built once and reused
    common = set.intersection(*(c.names for _, c in replicas)) if type_url == ENDPOINT else set(POOL)
    name = sorted(common)[0] if common else "not-subscribed-by-anyone"
    cache.content[type_url][name] = 7
    cache._set()
    hits, keys, expected = shared.hits, set(), 0
    for i, (pair, client) in enumerate(replicas):
        ts = pair.fast
        if not ts.overlay and not ts.rejected and not ts.must_respond and ts.base is cache.of(type_url).base:
            key = (client.wildcard, client.wildcard or name in client.names)  # the key of the shared result
            expected += key in keys
            keys.add(key)
        built = pair.build(cache.of(type_url), True, f"last{i}")
        assert built[0] == built[1]
        if built[0] is not None:
            client.receive(built[0][0])
            client.apply()
            pair.call(lambda s: s.ack())
        assert client.has == {n: e.version for n, e in cache.of(type_url).items()
                              if client.wildcard or n in client.names}
    assert shared.hits == hits + expected  # replicas in step reused one another's responses
    assert expected == 2 or type_url == ENDPOINT  # (named: a replica may hold an unsubscribed name's version)


def test_in_step_stream_is_a_shared_reference_and_an_empty_overlay():
    """The memory claim: a stream in sync holds the cache's TypeResources itself, with nothing per name."""
    rng = random.Random(7)
    cache = Cache(rng)
    states = [TypeState(CLUSTER) for _ in range(3)]
    for i, ts in enumerate(states):
        delta.on_request(ts, request(CLUSTER))
        delta.build(ts, cache.of(CLUSTER), True, f"a{i}", 0.0)
        delta.on_request(ts, request(CLUSTER, f"a{i}"))
        ts.ack()
    for _ in range(3):
        cache.change()
        entries = cache.of(CLUSTER)
        for i, ts in enumerate(states):
            if delta.build(ts, entries, True, f"b{i}", 0.0) is not None:
                ts.ack()
            assert ts.base is entries and ts.overlay == {}
            assert ts.known_dict() == {n: e.version for n, e in entries.items()}
            assert not delta.has_work(ts, entries)


def test_held_back_removal_stays_in_the_overlay_until_allowed():
    rng = random.Random(3)
    cache = Cache(rng)
    ts = TypeState(CLUSTER)
    delta.on_request(ts, request(CLUSTER))
    delta.build(ts, cache.of(CLUSTER), True, "1", 0.0)
    ts.ack()
    gone = sorted(cache.content[CLUSTER])[0]
    del cache.content[CLUSTER][gone]
    cache._set()
    entries = cache.of(CLUSTER)
    assert delta.build(ts, entries, False, "2", 0.0) is None  # removals must wait (make before break)
    assert ts.base is entries and ts.overlay == {gone: ts.known(gone)} and ts.known(gone) is not None
    body, _ = delta.build(ts, entries, True, "3", 0.0)
    assert list(discovery_pb2.DeltaDiscoveryResponse.FromString(body).removed_resources) == [gone]
    ts.ack()
    assert ts.overlay == {} and ts.known(gone) is None


# ---- SotW ----------------------------------------------------------------------------------------------


@dataclass
class SotwClient:
    names: set[str]
    wildcard: bool
    has: dict[str, str] = field(default_factory=dict)
    inflight: discovery_pb2.DiscoveryResponse | None = None

    def apply(self) -> None:
        """Wildcard: the response is the whole set. Named: it updates the resources it names (SotW has no
        removal of a named resource; a proxy keeps what it had, and ignores names it does not watch)."""
        assert self.inflight is not None
        got = {}
        for a in self.inflight.resources:
            message = (cluster_msg if self.inflight.type_url == CLUSTER else cla_msg)()
            message.ParseFromString(a.value)
            got[message.name if self.inflight.type_url == CLUSTER else message.cluster_name] = a.SerializeToString()
        if self.wildcard:
            self.has = got
        else:
            self.has.update((n, v) for n, v in got.items() if n in self.names)


def cluster_msg():
    return cluster("x").__class__()


def cla_msg():
    return cla("x").__class__()


def _sotw_req(t, client: SotwClient, nonce="", version=""):
    names = sorted(client.names) + (["*"] if client.wildcard and t == ENDPOINT else [])
    return discovery_pb2.DiscoveryRequest(type_url=t, resource_names=names, response_nonce=nonce,
                                          version_info=version)


def _sotw_call(pair: Pair, fn, *args):
    out = []
    for ts, flag in ((pair.fast, True), (pair.full, False)):
        sotw.FAST = flag
        try:
            out.append(fn(ts, *args))
        finally:
            sotw.FAST = True
    return out


@pytest.mark.parametrize("seed", range(SEEDS))
@pytest.mark.parametrize("type_url", [CLUSTER, ENDPOINT])
def test_sotw_shortcuts_match_the_general_path_and_client_converges(seed, type_url):
    rng = random.Random(1000 + seed)
    cache = Cache(rng)
    pair = Pair(type_url)
    client = SotwClient(set(rng.sample(POOL, 8)) if type_url == ENDPOINT else set(), type_url == CLUSTER)
    _sotw_call(pair, sotw.on_request, _sotw_req(type_url, client))
    for step in range(120):
        roll = rng.random()
        ts = pair.fast
        entries = cache.of(type_url)
        if roll < 0.3:
            cache.change()
        elif roll < 0.6 and ts.pending is None:
            built = _sotw_call(pair, sotw.build, entries, rng.random() < 0.8, f"n{step}", 0.0)
            assert built[0] == built[1]
            assert pair.fast.pending == pair.full.pending
            if built[0] is not None:
                client.inflight = discovery_pb2.DiscoveryResponse.FromString(built[0][0])
        elif roll < 0.85 and ts.pending is not None:
            if rng.random() < 0.8:
                client.apply()
                req = _sotw_req(type_url, client, ts.pending.nonce, ts.pending.version)
                kinds = _sotw_call(pair, sotw.on_request, req)
                assert kinds[0].kind == kinds[1].kind == "ack"
                _sotw_call(pair, lambda s: s.ack())
            else:
                req = _sotw_req(type_url, client, ts.pending.nonce, "old")
                kinds = _sotw_call(pair, sotw.on_request, req)
                assert kinds[0].kind == kinds[1].kind == "nack"
                _sotw_call(pair, lambda s: s.nack("bad"))
        elif type_url == ENDPOINT and ts.pending is None:
            name = rng.choice(POOL)
            client.names ^= {name}
            _sotw_call(pair, sotw.on_request, _sotw_req(type_url, client))
    if pair.fast.pending is not None:
        client.apply()
        _sotw_call(pair, lambda s: s.ack())
    # a change of the subscribed content releases NACK holds (SotW compares the whole requested content)
    cache.content[CLUSTER]["fresh"] = 9
    for name in client.names:
        cache.content[ENDPOINT][name] = 9
    cache._set()
    entries = cache.of(type_url)
    for i in range(4):
        built = _sotw_call(pair, sotw.build, entries, True, f"end{i}", 0.0)
        assert built[0] == built[1]
        if built[0] is None:
            break
        client.inflight = discovery_pb2.DiscoveryResponse.FromString(built[0][0])
        client.apply()
        _sotw_call(pair, lambda s: s.ack())
    assert built[0] is None
    want = {n: e.any_bytes for n, e in entries.items() if client.wildcard or n in client.names}
    if client.wildcard:
        assert client.has == want
    else:
        assert {n: v for n, v in client.has.items() if n in want} == want
    for state in (pair.fast, pair.full):
        assert sotw.in_sync(state, entries)


def test_sotw_wildcard_content_is_the_shared_typeresources_and_its_version():
    rng = random.Random(5)
    cache = Cache(rng)
    entries = cache.of(CLUSTER)
    ts = TypeState(CLUSTER)
    sotw.on_request(ts, discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
    bodies = [sotw.build(TypeState(CLUSTER, requested=True, wildcard=True, must_respond=True), entries, True,
                         "n", 0.0)[0] for _ in range(2)]
    body, _ = sotw.build(ts, entries, True, "n", 0.0)
    assert bodies[0] == bodies[1] == body
    assert ts.sotw_sent is entries and ts.base is entries
    assert ts.sotw_version == entries.version == aggregate_version(entries.values())
    resp = discovery_pb2.DiscoveryResponse.FromString(body)
    assert resp.version_info == entries.version and len(resp.resources) == len(entries)


# ---- through the real server --------------------------------------------------------------------------


async def test_replicas_share_their_subscribed_names_and_a_change_reaches_each_once():
    """Replicas subscribing the same EDS names hold one set (memory per connection), a stream that changes its
    subscription gets its own, and a one-resource change reaches every replica as exactly that resource."""
    from testsupport.ads_client import AdsClient
    from testsupport.xds_harness import ads_server, resources

    cache = SnapshotCache()
    cache.set_resources(GROUP, resources(clusters=["c1", "c2", "c3"], endpoints=["c1", "c2", "c3"]))
    async with ads_server(cache) as server:
        clients = [AdsClient(server.test_port, "delta", node_id=f"default/waypoint~{i}") for i in range(3)]
        for c in clients:
            await c.__aenter__()
        try:
            for c in clients:
                await c.delta(ENDPOINT, subscribe=["c1", "c2"])
                await c.ack(await c.recv_type(ENDPOINT))
            states = [s.types[ENDPOINT] for s in server._streams.values()]
            assert len(states) == 3 and all(ts.names is states[0].names for ts in states)
            assert states[0].names == {"c1", "c2"}
            await clients[2].delta(ENDPOINT, subscribe=["c3"])
            await clients[2].ack(await clients[2].recv_type(ENDPOINT))
            states = [s.types[ENDPOINT] for s in server._streams.values()]
            assert states[0].names is states[1].names and states[2].names == {"c1", "c2", "c3"}
            assert states[0].names == {"c1", "c2"}  # not changed by the third stream's subscribe

            cache.set_resources(GROUP, resources(clusters=["c1", "c2", "c3"], endpoints=["c1", "c2", "c3"],
                                                 c2=9090))
            await server.notify({GROUP})
            for c in clients:
                resp = await c.recv_type(ENDPOINT)
                assert [r.name for r in resp.resources] == ["c2"] and not resp.removed_resources
                await c.ack(resp)
                assert await c.barrier() == []
            assert all(info.types[ENDPOINT].in_sync for info in server.connections())
        finally:
            for c in clients:
                await c.close()
