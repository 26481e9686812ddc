"""Database restart trials: a private PostgreSQL cluster, restarted (``pg_ctl restart -m fast``) mid-run.

The machine's shared PostgreSQL is never touched: the trial initdb's its own cluster in a temporary
directory (as the ``postgres`` user when run as root), on a free 127.0.0.1 port, and points the CLI at it
with ``SIGNOFF_DATABASE_URL`` (proposals, audit and LangGraph checkpoints in Postgres). The restart lands
while ``signoff triage`` runs, while ``signoff approvals approve`` resumes and writes, or between two
commands. Whatever a command died of, a person (or ``signoff approvals recover``) carries on afterwards:
decided proposals are written exactly once, pending ones stay pending, failed ones are in the exception
queue with the reason (and retried).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run_trials import Trial

POINTS = ("triage", "decide", "between")


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no {name} under /usr/lib/postgresql/*/bin (install postgresql)")
    return found[-1]


class PrivateCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="signoff-trials-pg-"))
        self.data = self.dir / "data"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/signoff"
        self.restarts = 0
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c synchronous_commit=off -c max_connections=100", "start")
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE signoff")

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stdout[-500:]} {done.stderr[-500:]}")

    def restart(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-m", "fast", "-w", "restart")
        self.restarts += 1

    def stop(self) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PgSide:
    """The trials' Postgres side: the cluster, the CLI environment on it, and the threads it ran."""

    def __init__(self, trial: Trial) -> None:
        self.cluster = PrivateCluster()
        self.data_dir = trial.stack.work / "pg-state"
        self.env = {**trial.stack.env, "SIGNOFF_DATABASE_URL": self.cluster.url,
                    "SIGNOFF_DATA_DIR": str(self.data_dir)}
        self.threads: list[str] = []
        self.pending_by_design: set[str] = set()

    def cli(self, *args: str) -> subprocess.Popen[str]:
        import sys

        return subprocess.Popen([sys.executable, "-m", "signoff.cli", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def cli_run(self, *args: str) -> tuple[int, str]:
        proc = self.cli(*args)
        out, err = proc.communicate(timeout=180)
        return proc.returncode, out + err

    def open_state(self) -> Any:
        from signoff.config import Settings
        from signoff.guardrails.state import open_state

        return open_state(Settings(_env_file=None, database_url=self.cluster.url,  # type: ignore[call-arg]
                                   data_dir=self.data_dir))

    def decide(self, trial: Trial, pid: str, verdict: str) -> None:
        """A decision recorded straight in Postgres (what the CLI does before it resumes the run; the run
        resumes with the thread's last decision, which goes through the CLI). Cheaper than a process."""
        from signoff.domain import Decision
        from signoff.errors import AlreadyDecided
        from signoff.guardrails.approvals import Approvals

        state = self.open_state()
        try:
            Approvals(state.store, state.audit, trial.stack.rt.policy).decide(
                Decision(proposal_id=pid, verdict=verdict, actor="cli:lead",  # type: ignore[arg-type]
                         reason="trial" if verdict == "reject" else None))
        except AlreadyDecided:
            pass
        finally:
            state.close()

    def proposals(self, thread: str) -> dict[str, str]:
        state = self.open_state()
        try:
            return {p.id: p.state for p in state.store.find(thread_id=thread)}
        finally:
            state.close()


def restart_during(trial: Trial, side: PgSide, *args: str) -> tuple[int, str]:
    """Run a CLI command and restart the cluster at a random moment while it runs."""
    proc = side.cli(*args)
    time.sleep(trial.rng.uniform(1.0, 6.0))  # the CLI takes 2-4 s to import before it touches the database
    running = proc.poll() is None
    side.cluster.restart()
    trial.tally.kills["db_restart"] += 1
    trial.tally.outcomes["db_restart_while_command_ran" if running else "db_restart_after_command_ended"] += 1
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out + err


def db_restart(trial: Trial, tid: int) -> None:
    rng, tally = trial.rng, trial.tally
    side = trial.pg()
    point = rng.choice(POINTS)
    trial.scenario = f"db_restart_{point}"
    tally.faults[trial.scenario] += 1
    thread = f"ticket:{trial.stack.settings.odoo_db}:{tid}"
    side.threads.append(thread)

    def check_rc(rc: int, out: str, what: str) -> None:
        if rc != 0:
            tally.outcomes[f"db_restart_{what}_command_failed"] += 1
            if "Traceback" in out:
                tally.outcomes[f"db_restart_{what}_traceback"] += 1
            tally.db_errors.append(f"{what} rc={rc}: {out.strip().splitlines()[-1][:200] if out.strip() else ''}")

    if point == "triage":
        rc, out = restart_during(trial, side, "triage", "--ticket", str(tid))
        check_rc(rc, out, "triage")
        if not side.proposals(thread) or rc != 0:  # the run died with its connection: the next try finishes it
            rc, out = side.cli_run("triage", "--ticket", str(tid))
            if rc != 0:
                tally.problems.append(f"{thread}: triage after the DB restart rc={rc}: {out[-300:]}")
    else:
        rc, out = side.cli_run("triage", "--ticket", str(tid))
        if rc != 0:
            tally.problems.append(f"{thread}: triage on Postgres rc={rc}: {out[-300:]}")
    ids = list(side.proposals(thread))
    if not ids:
        tally.no_proposals += 1
        return
    *first, last = ids
    leave = rng.random() < 0.2 and len(ids) > 1
    for pid in first:
        if point == "between" and rng.random() < 0.5:
            side.cluster.restart()
            tally.kills["db_restart"] += 1
        verdict = "reject" if rng.random() < 0.2 else "approve"
        side.decide(trial, pid, verdict)
    if leave:  # left pending across a restart on purpose: it must still be pending afterwards
        side.pending_by_design.add(last)
        side.cluster.restart()
        tally.kills["db_restart"] += 1
        if side.proposals(thread).get(last) != "pending":
            tally.problems.append(f"{thread}: a pending proposal changed state over a DB restart")
        return
    if point == "decide":
        rc, out = restart_during(trial, side, "approvals", "approve", last, "--as", "cli:alice")
        check_rc(rc, out, "decide")
    else:
        rc, out = side.cli_run("approvals", "approve", last, "--as", "cli:alice")
        if rc not in (0, 3):
            tally.problems.append(f"{thread}: approve on Postgres rc={rc}: {out[-300:]}")
    states = side.proposals(thread)
    if states.get(last) == "pending":  # the restart lost the click before it was recorded: click again
        tally.outcomes["db_restart_decision_not_recorded"] += 1
        side.cli_run("approvals", "approve", last, "--as", "cli:alice")
    if any(s in ("approved", "executing") for s in side.proposals(thread).values()):
        tally.outcomes["db_restart_recover_needed"] += 1
        rc, out = side.cli_run("approvals", "recover")  # what an operator (or the next worker start) runs
        if rc != 0:
            tally.problems.append(f"{thread}: recover on Postgres rc={rc}: {out[-300:]}")
    for pid, state in side.proposals(thread).items():
        if state == "failed":
            tally.outcomes["db_restart_exception_queue"] += 1
            rc, out = side.cli_run("approvals", "retry", pid, "--as", "cli:lead")
            if rc != 0:
                tally.problems.append(f"{thread}: retry of {pid} after a DB restart rc={rc}: {out[-300:]}")
    tally.outcomes["db_restart_trials_finished"] += 1


SERVE_POINTS = ("pending", "decide", "idle")


def serve_db_restart(trial: Trial, tid: int) -> None:
    """``signoff serve`` on the private Postgres; the cluster restarts under it (its pool must reconnect)."""
    import threading

    import httpx
    from run_trials import APPROVERS, wait_for
    from worker_kill import STALE, wait_run

    rng, tally = trial.rng, trial.tally
    side = trial.pg()
    worker = trial.pg_worker()
    point = rng.choice(SERVE_POINTS)
    trial.scenario = f"serve_db_restart_{point}"
    tally.faults[trial.scenario] += 1
    thread = f"ticket:{trial.stack.settings.odoo_db}:{tid}"
    side.threads.append(thread)

    def api_ok(what: str) -> None:
        """After a restart the server answers again (it may take its pool a moment)."""
        def ok() -> bool:
            try:
                return worker.api("GET", "/api/proposals", params={"thread": thread}).status_code == 200
            except httpx.HTTPError:
                return False
        try:
            wait_for(ok, 30, f"the server on Postgres to answer after a restart ({what})")
        except TimeoutError:
            tally.problems.append(f"{thread}: signoff serve on Postgres did not answer 30 s after a DB restart")

    if point == "idle":  # restarted while nothing happens: the next event must work
        side.cluster.restart()
        tally.kills["db_restart"] += 1
        api_ok("idle")
    worker.webhook(tid)
    wait_run(worker, thread, timeout=90)
    ids = list(worker.states(thread))
    if not ids:
        tally.no_proposals += 1
        return
    if point == "pending":
        side.cluster.restart()
        tally.kills["db_restart"] += 1
        api_ok("pending")
        if any(s != "pending" for s in worker.states(thread).values()):
            tally.problems.append(f"{thread}: a DB restart changed pending proposals on the server")
    *first, last = ids
    for pid in first:
        worker.api("POST", f"/api/proposals/{pid}/decision", json={
            "verdict": "reject" if rng.random() < 0.2 else "approve", "actor": rng.choice(APPROVERS),
            "reason": "trial"})
    answers: list[int] = []

    def send() -> None:
        try:
            answers.append(worker.api("POST", f"/api/proposals/{last}/decision", json={
                "verdict": "approve", "actor": rng.choice(APPROVERS)}, timeout=60).status_code)
        except httpx.HTTPError:
            answers.append(0)

    sender = threading.Thread(target=send)
    sender.start()
    if point == "decide":
        time.sleep(rng.uniform(0.0, 0.5))
        side.cluster.restart()
        tally.kills["db_restart"] += 1
    sender.join(90)
    tally.outcomes[f"serve_db_restart_decision_http_{answers[0] if answers else 'none'}"] += 1
    api_ok("decide")
    if worker.states(thread).get(last) == "pending":  # the restart lost the click before it was recorded
        tally.outcomes["serve_db_restart_decision_not_recorded"] += 1
        worker.api("POST", f"/api/proposals/{last}/decision", json={"verdict": "approve", "actor": "cli:lead"})

    def settled() -> bool:
        try:
            return not any(s in ("approved", "executing") for s in worker.states(thread).values())
        except (httpx.HTTPError, KeyError, ValueError):
            return False

    try:
        try:
            wait_for(settled, STALE + 8, f"{thread} to settle on the server on Postgres")
        except TimeoutError:
            if not worker.age_claim(thread):
                raise
            tally.outcomes["serve_db_restart_waited_for_stale_claim"] += 1
            wait_for(settled, STALE + 20, f"{thread} to settle on the server on Postgres")
    except TimeoutError:
        tally.problems.append(f"{thread}: decided proposals not finished on the server after a DB restart: "
                              f"{worker.states(thread)}")
    tally.outcomes["serve_db_restart_trials_finished"] += 1
