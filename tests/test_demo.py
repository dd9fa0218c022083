"""`make demo DEMO_ONCE=1` in its test form: examples/demo.py --once --free-ports starts the backends,
istiod-lite and Envoy, sends the demo requests, checks every outcome and stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_once_runs_end_to_end():
    proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "demo.py"), "--once", "--free-ports"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the demo's own session: the demo and the processes it started
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        raise AssertionError(f"demo did not finish in time:\n{out}")
    assert proc.returncode == 0, out
    assert "demo: all outcomes as expected" in out, out
    assert "reviews split over 20 requests" in out, out
    assert "reviews-v1" in out and "ratings" in out
    assert "504" in out  # the timeout example
