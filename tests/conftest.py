"""Shared fixtures: `envoy_factory`, `istiod_factory`, `backend_factory` (every process they start is
stopped at teardown, also on failure), and `free_port`.

The helpers in tests/support are loaded as the package `testsupport` (see tests/support/__init__.py):
tests import them as `from testsupport.procs import wait_until`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_support() -> None:
    if "testsupport" in sys.modules:
        return
    folder = Path(__file__).resolve().parent / "support"
    spec = importlib.util.spec_from_file_location("testsupport", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["testsupport"] = module
    spec.loader.exec_module(module)


_load_support()

from testsupport.apps import BackendFactory, IstiodFactory  # noqa: E402
from testsupport.envoy import EnvoyFactory  # noqa: E402
from testsupport.procs import free_port as _free_port  # noqa: E402


@pytest.fixture
def envoy_factory(tmp_path: Path):
    """`envoy_factory(bootstrap_dict_or_path)` or `envoy_factory.for_waypoint("ns/name", xds_port, delta)`."""
    factory = EnvoyFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def istiod_factory(tmp_path: Path):
    """`istiod_factory(config_dir, extra_args=())` -> a ready `Istiod` (xds_port, http_port, get(), log_text())."""
    factory = IstiodFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def backend_factory(tmp_path: Path):
    """`backend_factory("reviews-v1")` -> a ready `Backend` (port, stats(), hits())."""
    factory = BackendFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def free_port():
    return _free_port


@pytest.fixture
def fake():
    """An in-process Kubernetes API server (tests/support/fake_apiserver.py), stopped at teardown."""
    from testsupport.fake_apiserver import FakeApiServer

    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(fake):
    """The real `kubernetes` ApiClient pointed at `fake`."""
    client = fake.api_client()
    try:
        yield client
    finally:
        client.close()
