"""A tiny run of the fault trials (trials/run_trials.py), so CI exercises the harness and its invariants.

The full run is ``make trials``. Here: three trials of the crash and race scenarios on the session's model
(seed 1: a kill after the write, reconciled by ``recover``, and two Slack double clicks with retries).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fault_trials_keep_their_promises(model_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "HF_HUB_OFFLINE": "1"})
    done = subprocess.run(
        [sys.executable, str(ROOT / "trials" / "run_trials.py"), "--trials", "3", "--seed", "1", "--minutes", "1",
         "--quiet", "--model-dir", str(model_dir), "--scenarios", "kill,concurrent,slack_retry,reject",
         "--kinds", "race"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "3 trials" in out and "[FAIL]" not in out, out
    for promise in ("every executed proposal written exactly once", "no proposal lost", "audit chain intact"):
        assert f"[ok] {promise}" in out, out
