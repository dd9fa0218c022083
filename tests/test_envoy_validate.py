"""Every golden case's translated resources, loaded as a static bootstrap, pass the real
`envoy --mode validate` (one Envoy run per case)."""

from __future__ import annotations

import pytest

from testsupport import golden
from testsupport.envoy import validate_bootstrap
from testsupport.envoy_validate import bootstrap_json


@pytest.mark.parametrize("case", golden.cases())
def test_envoy_accepts_translated_config(case: str, tmp_path) -> None:
    _, result = golden.translate_case(case)
    path = tmp_path / "bootstrap.json"
    path.write_text(bootstrap_json(result.resources), encoding="utf-8")
    code, output = validate_bootstrap(path)
    assert code == 0, f"Envoy rejected the config of golden case {case}:\n{output[-4000:]}"
