"""Every benchmark script runs end to end in its tiny `--smoke` mode (real istiod-lite, Envoy, load client) and
prints its table, so bench/ cannot rot. No timing assertions: benchmarks report, tests check they work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TITLES = {"translate": "### translate", "cold_start": "### cold_start", "one_change": "### one_change",
          "fanout": "### fanout", "memory": "### memory"}


@pytest.mark.parametrize("script", sorted(TITLES))
def test_benchmark_runs_in_smoke_mode(script: str) -> None:
    # the scripts stop every process they start (also on failure); the timeout only guards the test itself
    out = subprocess.run([sys.executable, str(REPO / "bench" / f"{script}.py"), "--smoke"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert TITLES[script] in out.stdout
    table = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) >= 2, out.stdout  # header + at least one measured row
