"""SnapshotCache O(changed) bookkeeping: TypeResources.evolve (base/changed/removed, one step deep, aggregate
version equal to a from-scratch build) and the `changes` hint of set_resources, checked against a full check on
a randomized change sequence."""

from __future__ import annotations

import random

from testsupport.xds_harness import cla, cluster

from istiod_lite.xds.cache import SnapshotCache, TypeResources, aggregate_version, make_entry
from istiod_lite.xds.types import CLUSTER, ENDPOINT


def entries(**timeouts: int) -> dict:
    return {n: make_entry(CLUSTER, n, cluster(n, t)) for n, t in timeouts.items()}


def test_evolve_records_one_step_of_change():
    base = TypeResources(entries(a=1, b=1, c=1))
    new = entries(b=2, d=1)
    v2 = base.evolve({"a": base["a"], **new}, removed=["c", "zz"])
    assert v2.base is base and v2.changed == {"b", "d"} and v2.removed == {"c"}
    assert dict(v2) == {"a": base["a"], "b": new["b"], "d": new["d"]}
    assert v2.version == TypeResources(dict(v2)).version == aggregate_version(v2.values())
    assert v2.version != base.version
    assert base.evolve({"a": base["a"]}, removed=["nope"]) is base  # nothing differs: the same object
    v3 = v2.evolve(entries(a=5))
    assert v3.base is v2 and v2.base is None  # the chain is one step deep: old versions are not kept alive
    # back to the original content: the same aggregate version as the original
    back = v3.evolve({"a": base["a"], "b": base["b"], "c": base["c"]}, removed=["d"])
    assert back.version == base.version and dict(back) == dict(base)


def test_first_content_is_built_from_scratch():
    cache = SnapshotCache()
    cache.set_resources("g", {CLUSTER: {"b": cluster("b"), "a": cluster("a")}})
    typed = cache.get("g")[CLUSTER]
    assert list(typed) == ["a", "b"] and typed.base is None and typed.changed == {"a", "b"}


def test_changes_hint_equals_a_full_check_on_random_sequences():
    rng = random.Random(6)
    names = [f"c{i}" for i in range(30)]
    hinted, full = SnapshotCache(), SnapshotCache()
    state = {CLUSTER: {n: cluster(n) for n in names[:20]}, ENDPOINT: {n: cla(n) for n in names[:20]}}
    assert hinted.set_resources("g", state) == full.set_resources("g", state)
    for step in range(200):
        changes: dict[str, set[str]] = {}
        new_state = {t: dict(by_name) for t, by_name in state.items()}
        for _ in range(rng.randint(0, 4)):
            type_url = rng.choice([CLUSTER, ENDPOINT])
            name = rng.choice(names)
            roll = rng.random()
            if roll < 0.3:
                new_state[type_url].pop(name, None)
            elif roll < 0.6:  # an equal but new object: serialized, same version, not a change
                new_state[type_url][name] = cluster(name) if type_url == CLUSTER else cla(name)
            else:
                new_state[type_url][name] = cluster(name, rng.randint(1, 3)) if type_url == CLUSTER \
                    else cla(name, rng.randint(8080, 8082))
            changes.setdefault(type_url, set()).add(name)
        before = {t: hinted.of_type("g", t) for t in state}
        got = hinted.set_resources("g", new_state, changes)
        want = full.set_resources("g", new_state)
        assert got == want, step
        for type_url in state:
            h, f = hinted.of_type("g", type_url), full.of_type("g", type_url)
            assert {n: e.version for n, e in h.items()} == {n: e.version for n, e in f.items()}, step
            assert h.version == f.version
            if type_url in got:
                assert h.base is before[type_url]
                assert h.changed | h.removed <= changes[type_url]
                assert all(before[type_url].get(n) is not h.get(n) for n in h.changed)
            else:
                assert h is before[type_url]
        state = new_state


def test_unchanged_objects_are_never_serialized_with_the_hint():
    cache = SnapshotCache()
    state = {CLUSTER: {f"c{i}": cluster(f"c{i}") for i in range(100)}}
    cache.set_resources("g", state)
    before = cache.serializations
    state[CLUSTER]["c7"] = cluster("c7", 9)
    assert cache.set_resources("g", state, {CLUSTER: {"c7"}}) == {CLUSTER}
    assert cache.serializations == before + 1
    assert cache.set_resources("g", state, {}) == set() and cache.serializations == before + 1
