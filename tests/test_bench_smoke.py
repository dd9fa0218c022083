"""Every benchmark script runs end to end in its tiny `--smoke` mode (real istiod-lite, Envoy, load client) and
prints its table, so bench/ cannot rot. No timing assertions: benchmarks report, tests check they work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TITLES = {"translate": "### translate", "cold_start": "### cold_start", "one_change": "### one_change",
          "fanout": "### fanout", "memory": "### memory", "hbone": "### HBONE waypoint hop"}


@pytest.mark.parametrize("script", sorted(TITLES))
def test_benchmark_runs_in_smoke_mode(script: str) -> None:
    # The scripts stop every process they start (also on failure, on SIGTERM). The script runs in its own
    # session so that, if it hangs past the timeout, the whole group (istiod-lite, Envoy, backends, load
    # client) is stopped with it, never left behind.
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / f"{script}.py"), "--smoke"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        _stop_group(proc, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            _stop_group(proc, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        pytest.fail(f"{script} --smoke hung; stopped. stdout: {stdout[-2000:]} stderr: {stderr[-4000:]}")
    finally:
        _stop_group(proc, signal.SIGKILL)  # anything still alive in the group after the script ended
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert TITLES[script] in out.stdout
    table = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) >= 2, out.stdout  # header + at least one measured row


def _stop_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
