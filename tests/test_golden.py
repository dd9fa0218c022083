"""Golden files: tests/golden/<case>/input.yaml -> expected/{listeners,routes,clusters,endpoints,issues}.yaml.

`UPDATE_GOLDEN=1` (`make golden`) rewrites expected/ and removes stale files. Every input must parse without
errors (manifests are valid Istio/Gateway API objects), and translation must be deterministic.
"""

from __future__ import annotations

import os

import pytest

from testsupport import golden

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("case", golden.cases())
def test_golden(case: str) -> None:
    snapshot, result = golden.translate_case(case)
    parse_errors = [str(i) for i in snapshot.issues if i.is_error]
    # cases named *invalid* are invalid on purpose (their errors are part of expected/issues.yaml)
    assert not parse_errors or "invalid" in case, f"input.yaml of {case} is not valid:\n" + "\n".join(parse_errors)
    files = golden.render(snapshot, result)
    if UPDATE:
        golden.write(case, files)
        return
    want = golden.expected(case)
    assert want, f"no expected files for {case}: run `make golden`"
    assert sorted(want) == sorted(files), f"{case}: expected files differ (run `make golden`)"
    for name, text in files.items():
        assert text == want[name], f"{case}/expected/{name} differs (run `make golden` and review the diff)"


@pytest.mark.parametrize("case", golden.cases()[:3])
def test_translation_is_deterministic(case: str) -> None:
    snapshot, first = golden.translate_case(case)
    _, second = golden.translate_case(case)
    assert golden.render(snapshot, first) == golden.render(snapshot, second)
    for type_url, resources in first.resources.resources.items():
        for name, msg in resources.items():
            other = second.resources.of_type(type_url)[name]
            assert msg.SerializeToString(deterministic=True) == other.SerializeToString(deterministic=True)
