"""The O(changed) push path: `TranslateResult.changes` (translate/incremental.py) and the hint App.push builds
from it (plus Secrets and NACK pins) must be complete, i.e. applying the hint gives the same xds cache content as
checking every resource.

Randomized change sequences (edits of a random spec leaf, deletes, re-adds; through the real ConfigStore) over
the golden inputs (with and without their HBONE listeners), a synthetic mesh with cross-service routes and a
synthetic ambient mesh (HBONE, HTTP and TCP listeners, or HBONE alone). Interleaved: certificate rotations (new Secret objects) and NACKs that pin a resource
to its last good version or leave it out, released when a blamed object changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import random
import zlib
from pathlib import Path

import pytest

from istiod_lite.app import _REJECTED, App
from istiod_lite.mesh_identity import WaypointSecrets
from istiod_lite.model.parse import object_key
from istiod_lite.settings import Settings
from istiod_lite.translate import translate
from istiod_lite.translate.incremental import IncrementalTranslator
from istiod_lite.xds import types
from istiod_lite.xds.cache import SnapshotCache
from istiod_lite.xds.server import NackInfo

_spec = importlib.util.spec_from_file_location("incremental_equivalence_helpers",
                                               Path(__file__).parent / "test_incremental_equivalence.py")
eq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eq)  # type: ignore[union-attr]  # its mesh generators: _golden_docs, _synthetic, _mutate

TYPES = (types.LISTENER, types.SCOPED_ROUTE, types.ROUTE, types.CLUSTER, types.ENDPOINT)


def _content(cache: SnapshotCache, group: str) -> dict:
    return {t: ({n: e.version for n, e in typed.items()}, typed.version) for t, typed in cache.get(group).items()
            if len(typed)}


def _steps(docs: list[dict], rng: random.Random, steps: int, keep: frozenset[str] = frozenset()):
    """Yield (action, key, doc or None) of a random sequence; the caller applies it to a store. Objects of the
    kinds in `keep` are left alone (a Gateway or Namespace change means a full translation, no hint)."""
    live = {k: d for d in docs if (k := object_key(d)) is not None and k.kind not in keep}
    removed: dict = {}
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.6 and live:
            key = rng.choice(sorted(live))
            doc = eq._mutate(live[key], rng)
            if object_key(doc) != key:
                continue
            live[key] = doc
            yield "edit", key, doc
        elif roll < 0.8 and live:
            key = rng.choice(sorted(live))
            removed[key] = live.pop(key)
            yield "delete", key, None
        elif removed:
            key = rng.choice(sorted(removed))
            live[key] = removed.pop(key)
            yield "re-add", key, live[key]


# ---- translation level: TranslateResult.changes ------------------------------------------------------------
MESHES = {"http": lambda: eq._synthetic(), "ambient": lambda: eq._synthetic_ambient(),
          "hbone-only": lambda: eq._synthetic_ambient(http=False, tcp=False)}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_translation_changes_applied_to_the_cache_equal_a_full_check(mesh: str, seed: int) -> None:
    from istiod_lite.model.store import ConfigStore

    rng = random.Random(seed)
    docs = MESHES[mesh]()
    store = ConfigStore()
    for d in docs:
        store.upsert("test", d)
    inc = IncrementalTranslator()
    hinted, full = SnapshotCache(), SnapshotCache()
    previous: dict = {}
    used = 0
    for step, (action, key, doc) in enumerate([("start", None, None)] + list(_steps(docs, rng, 60, frozenset({"Gateway", "Namespace"})))):
        if action == "delete":
            store.delete("test", key)
        elif doc is not None:
            store.upsert("test", doc)
        snap = store.snapshot()
        for gw in snap.waypoints():
            group = str(gw.key)
            result = inc.translate(snap, gw.key)
            res = result.resources.resources
            prev = previous.get(group)
            changes = None if prev is None else {} if result is prev else result.changes
            if changes is not None:
                used += 1
                before = {t: dict(prev.resources.resources.get(t, {})) for t in TYPES}
                for t in TYPES:  # complete: every name whose message object differs is listed
                    differ = {n for n in before[t].keys() | res.get(t, {}).keys()
                              if before[t].get(n) is not res.get(t, {}).get(n)}
                    assert differ <= set(changes.get(t, ())), f"step {step} {action} {key}: {t} {differ}"
            previous[group] = result
            assert hinted.set_resources(group, res, changes) == full.set_resources(group, res), step
            assert _content(hinted, group) == _content(full, group), f"step {step}: {action} {key}"
            fresh = SnapshotCache()
            fresh.set_resources(group, translate(snap, gw.key, inc.options).resources.resources)
            assert _content(hinted, group) == _content(fresh, group), f"step {step}: {action} {key}"
    assert used > 20 and inc.stats["incremental"] > 3  # the hint path is what was checked


# ---- app level: the hint App.push builds (translation + Secrets + pins) ----------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


def _expected(app: App, group: str, gw) -> dict:
    """The group's cache content built from scratch: a full translation, the Secrets, the pins applied."""
    snap = app.store.snapshot()
    served = {t: dict(m) for t, m in app.identities.add(gw, translate(snap, gw.key, app.options)
                                                         .resources.resources).items()}
    for pin in app.rejections.pinned(group):
        by_name = served.setdefault(pin.type_url, {})
        if pin.good is None:
            by_name.pop(pin.name, None)
        else:
            by_name[pin.name] = pin.good
    fresh = SnapshotCache()
    fresh.set_resources(group, served)
    return _content(fresh, group)


def _nack_something(app: App, rng: random.Random) -> bool:
    """Envoy rejects one random resource of a random waypoint (sometimes after ACKing everything)."""
    groups = app.cache.groups()
    if not groups:
        return False
    group = rng.choice(groups)
    typed_by_url = {t: typed for t, typed in app.cache.get(group).items() if len(typed) and t != types.SECRET}
    if not typed_by_url:
        return False
    if rng.random() < 0.5:
        for t, typed in typed_by_url.items():
            app._on_xds_event("ack", {"group": group, "type_url": t, "upserts": {n: e.version for n, e in typed.items()}})
    type_url = rng.choice(sorted(typed_by_url))
    name = rng.choice(sorted(typed_by_url[type_url]))
    app._on_nack(NackInfo(f"{group}~test", group, "delta", type_url, "n-1", "boom", (name,),
                          {name: typed_by_url[type_url][name].version}))
    return True


async def _drive(docs: list[dict], seed: int, steps: int, keep: frozenset[str] = frozenset()) -> tuple[App, int]:
    rng = random.Random(seed)
    clock = _Clock()
    app = App(Settings(cert_lifetime=3600.0))
    app.identities = WaypointSecrets(app.settings, clock=clock)
    for d in docs:
        if object_key(d) is not None:
            app.store.upsert("test", d)
    hinted = 0
    real_set = app.cache.set_resources

    def counting_set(group, resources, changes=None):
        nonlocal hinted
        hinted += changes is not None
        return real_set(group, resources, changes)

    app.cache.set_resources = counting_set  # type: ignore[method-assign]
    await app.push({"startup"})
    for step, (action, key, doc) in enumerate(_steps(docs, rng, steps, keep)):
        if action == "delete":
            app.store.delete("test", key)
        else:
            app.store.upsert("test", doc)
        await app.push({key})
        roll = rng.random()
        if roll < 0.15:
            clock.now += dt.timedelta(hours=1)  # past half-life: new certificates, new Secret objects
            await app.push({"certificate-rotation"})
        elif roll < 0.35 and _nack_something(app, rng):
            await app.push({_REJECTED})
        snap = app.store.snapshot()
        for gw in snap.waypoints():
            group = f"{gw.key.namespace}/{gw.key.name}"
            assert _content(app.cache, group) == _expected(app, group, gw), f"seed {seed} step {step}: {action} {key}"
    assert set(app.cache.groups()) == {f"{g.key.namespace}/{g.key.name}" for g in app.store.snapshot().waypoints()}
    return app, hinted


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mesh", ["http", "ambient"])
def test_app_push_hint_gives_the_same_cache_as_a_full_check_synthetic(mesh: str, seed: int) -> None:
    app, hinted = asyncio.run(_drive(MESHES[mesh](), seed, 40, frozenset({"Gateway", "Namespace"})))
    assert hinted > 10  # pushes with a hint were checked, not only full translations


@pytest.mark.parametrize("case", ["hbone-mesh", "vs-weights-subsets", "several-waypoints", "route-scopes"])
@pytest.mark.parametrize("hbone", [True, False])
def test_app_push_hint_gives_the_same_cache_as_a_full_check_golden(case: str, hbone: bool) -> None:
    docs = eq._golden_docs(case)
    if not hbone:
        docs = [eq._strip_hbone(d) for d in docs]
    asyncio.run(_drive(docs, zlib.crc32(case.encode()), 25))


def test_no_pins_means_the_same_mapping_and_nothing_touched() -> None:
    from istiod_lite.ops.nack import RejectionTracker

    t = RejectionTracker()
    resources = {types.CLUSTER: {"a": object()}}
    assert t.apply("g", resources) is resources and t.touched("g") == frozenset()
