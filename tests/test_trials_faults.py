"""A tiny run of every fault kind of the trials (trials/run_trials.py): outages, attacks, worker kills, DB restarts
(under the CLI and under ``signoff serve``).

The campaign is ``make trials``; here one or two trials of each new kind on the session's model, so CI exercises
the harness, the fault hooks and the invariants (written once, never without approval, nothing lost, no PII).
The two runs go side by side (separate stacks, ports and data dirs) to keep the wall time down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMISES = ("every executed proposal written exactly once", "no write without an executed proposal",
            "no proposal lost", "audit chain intact", "no PII in model inputs")


def start(model_dir: Path, kinds: str, each: int, seed: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "HF_HUB_OFFLINE": "1"})
    return subprocess.Popen(
        [sys.executable, str(ROOT / "trials" / "run_trials.py"), "--each", str(each), "--seed", str(seed),
         "--minutes", "2", "--quiet", "--model-dir", str(model_dir), "--kinds", kinds],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finished(proc: subprocess.Popen[str], n: int) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"\n{n} trials" in out and "[FAIL]" not in out, out
    for promise in PROMISES:
        assert f"[ok] {promise}" in out, out
    return out


def test_every_fault_kind_keeps_the_promises(model_dir: Path) -> None:
    light = start(model_dir, "odoo_outage,llm_outage,attack", 2, 2)
    heavy = start(model_dir, "worker_kill,db_restart,serve_db_restart", 1, 1)
    out = finished(light, 6)
    assert "odoo_outage 2" in out and "llm_outage 2" in out and "attack 2" in out, out
    assert "llm_failed_closed_with_reason 2" in out, out  # the LLM failures went to a human with the reason
    assert "checked_sinks 2" in out, out  # both attacks' PII was looked for in every sink
    out = finished(heavy, 3)
    assert "worker_kill 1" in out and "db_restart 1" in out and "serve_db_restart 1" in out, out
    assert "faults:    db_restart_" in out and "worker_kill_" in out and "serve_db_restart_" in out, out
