"""Fault trials: randomized approval races and crashes against the real components, then the invariants.

One command::

    .venv/bin/python trials/run_trials.py --trials 50 --seed 1 --minutes 5

Everything is real and local: the Odoo stand-in over HTTP (its call log counts every write that reached
"Odoo"), SQLite state and checkpoints in a temporary data dir, the Signoff server (uvicorn on a free
127.0.0.1 port) with the Slack stand-in delivering signed clicks, and the ``signoff`` CLI in separate
processes (approve / reject / triage / recover), some of them killed like ``kill -9``.

Each trial takes a fresh untriaged ticket, triages it through the Odoo webhook, maybe sends the webhook
again (or ``signoff triage --ticket`` from another process), decides all but one of its proposals on a
random channel (CLI process, REST, Slack click), then plays one scenario on the last one:

* ``approve``: one approval on a random channel;
* ``double``: two approvals one after the other on random channels (the second is told "already decided");
* ``concurrent``: a CLI process and a REST call or a Slack click approve at the same moment;
* ``slack_retry``: a double click from a stale client view plus Slack re-sending the same click;
* ``reject``: a reject with a reason (CLI or REST);
* ``expire``: every pending proposal's ``expires_at`` set in the past, then the sweep or ``recover``;
* ``kill``: the deciding CLI process dies (``SIGNOFF_FAULT_INJECTION=before_write|after_write``, or
  SIGKILL after a random delay; when that landed before the decision was recorded, the person approves
  again), then ``signoff approvals recover`` with ``SIGNOFF_EXECUTOR_STALE_SECONDS=0``;
* ``leave``: the last proposal is left pending on purpose (its approved siblings wait for it, unwritten).

Then the invariants are checked over all trials: every executed proposal written exactly once (writes per
(ticket, field) in the stand-in's call log), every rejected / expired / cancelled one never written, no
proposal lost (each one final, or pending by design), one triage per ticket despite duplicates, and the
audit chain intact. Exit status 1 when an invariant fails (2 when the run itself could not start).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

ODOO_DB = "signoff"
WEBHOOK_SECRET = "trials-hook-secret"
API_TOKEN = "trials-api-token"
#: The server under test's Odoo timeout (short, so the write-timeout outage trial stays quick).
ODOO_TIMEOUT = 4.0
LEAD_SLACK = "U024BE7LH"  # slack:U024BE7LH is in support-leads in the packaged policy
APPROVERS = ("cli:lead", "cli:alice")
FINAL = {"executed", "rejected", "expired", "cancelled", "failed"}
SCENARIOS = {"approve": 2, "double": 2, "concurrent": 3, "slack_retry": 2, "reject": 2, "expire": 1, "kill": 4,
             "leave": 1}
#: Fault kinds and their weights: ``race`` is one of the scenarios above; the others live in outages.py,
#: attacks.py, worker_kill.py and pg_restart.py (next to this file).
KINDS = {"race": 10, "odoo_outage": 2, "llm_outage": 2, "attack": 4, "worker_kill": 2, "db_restart": 1,
         "serve_db_restart": 1, "pg_worker_kill": 1}


# --- the stack --------------------------------------------------------------------------------------


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread (lifespan included)."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def write_policy(path: Path) -> Path:
    """The packaged policy: every ticket action approved on Slack, no confidence floor (so every ticket
    gets proposals), long expiry (expiry is forced by the trials, not by the clock)."""
    from signoff.guardrails.policy import DEFAULT_POLICY_PATH

    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    for name in ("ticket.set_category", "ticket.set_team"):
        policy["actions"][name]["min_confidence"] = 0.0
    for rule in policy["actions"].values():
        rule["channel"] = "slack"
    path.write_text(yaml.safe_dump(policy))
    return path


def train_model(public_data_dir: Path, out: Path) -> Path:
    from signoff.llm.training import load_labelled_jsonl, train

    source = public_data_dir / "tickets" / "bitext_dev.jsonl"
    sample = Path(__file__).resolve().parent.parent / "signoff" / "sandbox" / "sample_tickets.jsonl"
    texts, labels = load_labelled_jsonl(source if source.exists() else sample)
    step = max(1, len(texts) // 800)
    train(texts[::step], labels[::step], out)
    return out


@dataclass
class Stack:
    work: Path
    settings: Any
    standin: Any
    slack: Any
    server: LiveServer
    app: Any
    http: httpx.Client
    env: dict[str, str]
    logs: list[str] = field(default_factory=list)
    """Log records of this process (the server under test) and the output of every CLI process."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Started on first use: the fake LLM endpoint, the ``signoff serve`` worker, the private Postgres."""

    @property
    def rt(self) -> Any:
        return self.app.state.services.rt

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_TOKEN}", **kwargs.pop("headers", {})}
        return self.http.request(method, self.server.url + path, headers=headers, **kwargs)

    def webhook(self, ticket_id: int) -> httpx.Response:
        return self.http.post(self.server.url + "/webhooks/odoo", headers={"X-Signoff-Webhook-Secret": WEBHOOK_SECRET},
                              json={"_model": "helpdesk.ticket", "_id": ticket_id, "_action": "Notify(#1)"})

    def cli(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "signoff.cli", *args], env={**self.env, **extra},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def calls(self) -> list[dict[str, Any]]:
        """The Odoo stand-in's whole call log (read incrementally: it grows with every trial)."""
        from signoff.sandbox.orm import read_calls

        log = self.extras.setdefault("calls", [])
        log.extend(read_calls(self.standin.db_path, since=log[-1]["seq"] if log else 0))
        return log

    def cli_run(self, *args: str, **extra: str) -> tuple[int, str]:
        proc = self.cli(*args, **extra)
        out, err = proc.communicate(timeout=180)
        self.logs.append(out + err)
        return proc.returncode, out + err

    def stop(self) -> None:
        for name in ("worker", "pg_worker", "pg_worker2", "fake_llm"):
            if name in self.extras:
                self.extras.pop(name).stop()
        self.http.close()
        self.server.stop()
        self.slack.stop()
        self.standin.stop()
        if "pg" in self.extras:
            self.extras.pop("pg").cluster.stop()


class LogCapture(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not a trial failure
            pass


def start_stack(work: Path, n_new: int, model_dir: Path | None = None) -> Stack:
    from pydantic import SecretStr

    from signoff.config import Settings
    from signoff.sandbox.odoo import OdooStandIn
    from signoff.sandbox.seed import seed
    from signoff.sandbox.slack import SlackStandIn
    from signoff.server.app import create_app

    public = Settings(_env_file=None).public_data_dir  # type: ignore[call-arg]
    odoo_db = work / "odoo-sandbox.sqlite"
    seed(odoo_db, public, n_history=40, n_new=n_new, n_contracts=1)
    model_dir = model_dir or train_model(public, work / "models")
    standin = OdooStandIn(odoo_db, port=0, dbname=ODOO_DB)
    standin.start()
    slack = SlackStandIn().start()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=work / "state", odoo_url=standin.url, odoo_db=ODOO_DB, public_data_dir=public,
        odoo_timeout=ODOO_TIMEOUT, model_dir=model_dir, policy_path=write_policy(work / "policy.yaml"),
        executor_stale_seconds=0.0, webhook_secret=SecretStr(WEBHOOK_SECRET), api_token=SecretStr(API_TOKEN),
        slack_bot_token=SecretStr(slack.token), slack_signing_secret=SecretStr(slack.signing_secret),
        slack_api_base_url=slack.api_url, sweep_seconds=0.0,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    server = LiveServer(app).start()
    slack.app_url = server.url + "/slack/events"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({
        "SIGNOFF_DATA_DIR": str(settings.data_dir), "SIGNOFF_ODOO_URL": standin.url, "SIGNOFF_ODOO_DB": ODOO_DB,
        "SIGNOFF_MODEL_DIR": str(model_dir), "SIGNOFF_POLICY_PATH": str(settings.policy_path),
        "SIGNOFF_EXECUTOR_STALE_SECONDS": "0", "SIGNOFF_PUBLIC_DATA_DIR": str(public),
        "NO_PROXY": "127.0.0.1,localhost", "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
    })
    http = httpx.Client(timeout=60.0, trust_env=False)
    stack = Stack(work, settings, standin, slack, server, app, http, env)
    capture = LogCapture(stack.logs)
    logging.getLogger("signoff").addHandler(capture)  # everything Signoff logs, at every level
    logging.getLogger("signoff").setLevel(logging.DEBUG)
    capture_root = LogCapture(stack.logs)
    capture_root.setLevel(logging.WARNING)  # libraries: warnings and errors
    logging.getLogger().addHandler(capture_root)
    return stack


# --- one trial --------------------------------------------------------------------------------------


@dataclass
class Tally:
    trials: int = 0
    scenarios: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    pending_by_design: set[str] = field(default_factory=set)
    threads: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    no_proposals: int = 0
    duplicate_triage: int = 0
    slack_retries: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    attacks: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    db_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            if not value:
                raise TimeoutError(f"timed out waiting for {what}")
            return value
        time.sleep(0.05)


def message_for(stack: Stack, pid: str) -> str | None:
    """The ts of the Slack approval message whose buttons carry proposal ``pid``."""
    for m in stack.slack.messages_in("approvals"):
        for block in m.get("blocks", []):
            if block.get("type") == "actions" and any(e.get("value") == pid for e in block.get("elements", [])):
                return str(m["ts"])
    return None


class Trial:
    def __init__(self, stack: Stack, rng: random.Random, tally: Tally, scenarios: dict[str, int],
                 used: set[int] | None = None, cli_share: float = 1.0) -> None:
        self.stack, self.rng, self.tally, self.scenarios = stack, rng, tally, scenarios
        self.scenario = ""
        self.last_channels: list[str] = []
        self.used = used if used is not None else set()
        self.cli_share = cli_share

    # the other fault kinds' helpers ---------------------------------------------------------------

    def fake_llm(self) -> Any:
        from outages import FakeLLM

        if self.stack.extras.get("fake_llm") is None:
            self.stack.extras["fake_llm"] = FakeLLM()
        return self.stack.extras["fake_llm"]

    def worker(self) -> Any:
        from worker_kill import Worker

        if self.stack.extras.get("worker") is None:
            worker = Worker(self.stack, self.stack.work)
            worker.start()
            self.stack.extras["worker"] = worker
        return self.stack.extras["worker"]

    def pg_worker(self, *, second: bool = False) -> Any:
        """A ``signoff serve`` process on the private Postgres cluster (its own data dir); ``second``: another
        one on the same database."""
        from worker_kill import Worker

        name = "pg_worker2" if second else "pg_worker"
        if self.stack.extras.get(name) is None:
            worker = Worker(self.stack, self.stack.work, name=name.replace("_", "-"),
                            database_url=self.pg().cluster.url)
            worker.start()
            self.stack.extras[name] = worker
        return self.stack.extras[name]

    def pg(self) -> Any:
        from pg_restart import PgSide

        if self.stack.extras.get("pg") is None:
            self.stack.extras["pg"] = PgSide(self)
        return self.stack.extras["pg"]

    def captured_logs(self) -> str:
        return "\n".join(self.stack.logs)

    def ticket_writes(self, tid: int) -> int:
        return sum(1 for c in self.stack.calls() if c["method"] == "write" and c["ok"]
                   and c["model"] == "helpdesk.ticket" and tid in (c["args"][0] or []))

    def odoo_stop(self) -> None:
        """Odoo goes away: connections are refused until :meth:`odoo_start` (same port, same records)."""
        self.stack.extras["odoo_port"] = self.stack.standin.port
        self.stack.standin.stop()

    def odoo_start(self) -> None:
        from signoff.sandbox.odoo import OdooStandIn

        old = self.stack.standin
        self.stack.standin = OdooStandIn(old.db_path, port=self.stack.extras.pop("odoo_port"), dbname=ODOO_DB)
        self.stack.standin.start()

    def wait_paused(self, thread: str, timeout: float = 60) -> list[Any]:
        """Wait until the run sleeps at its gate (or ended), and its Slack messages are posted."""
        stack = self.stack
        wait_for(lambda: (b := stack.api("GET", f"/api/runs/{thread}").json())["status"]
                 in ("paused", "done") and b, timeout, f"run {thread}")
        proposals = stack.rt.store.find(thread_id=thread)
        pending = [p.id for p in proposals if p.state == "pending"]
        wait_for(lambda: all(message_for(stack, pid) for pid in pending), 30, f"approval messages of {thread}")
        return proposals

    def decide_all(self, thread: str) -> None:
        """Decide every pending proposal of the run (REST or a Slack click), then let it settle."""
        for p in self.stack.rt.store.find(thread_id=thread, states=("pending",)):
            verdict = "reject" if self.rng.random() < 0.2 else "approve"
            channel = "rest" if verdict == "reject" else self.rng.choice(["rest", "slack"])
            self.note(self.decide(p.id, verdict, channel), f"{thread} {self.scenario}")
        self.settle(thread)

    def states(self, thread: str) -> dict[str, str]:
        return {p.id: p.state for p in self.stack.rt.store.find(thread_id=thread)}

    # channels ---------------------------------------------------------------------------------------

    def decide(self, pid: str, verdict: str, channel: str, actor: str | None = None) -> str:
        """One decision on ``channel``; returns ``ok``, ``already`` (told it was decided) or another note."""
        self.tally.channels[channel] += 1
        self.last_channels.append(channel)
        if channel == "cli":
            actor = actor or self.rng.choice(APPROVERS)
            args = ["approvals", verdict, pid, "--as", actor]
            if verdict == "reject":
                args += ["--reason", "trial: wrong queue"]
            rc, out = self.stack.cli_run(*args)
            return {0: "ok", 3: "already"}.get(rc, f"cli rc={rc}: {out[-300:]}")
        if channel == "rest":
            body: dict[str, Any] = {"verdict": verdict, "actor": actor or self.rng.choice(APPROVERS)}
            if verdict == "reject":
                body["reason"] = "trial: wrong queue"
            r = self.stack.api("POST", f"/api/proposals/{pid}/decision", json=body)
            return {200: "ok", 409: "already"}.get(r.status_code, f"rest {r.status_code}: {r.text[:300]}")
        assert channel == "slack" and verdict == "approve"
        ts = message_for(self.stack, pid)
        if ts is None:
            return "already"  # the message has no buttons any more: a person cannot click it
        try:
            d = self.stack.slack.click("approvals", ts, "approve", LEAD_SLACK)
        except LookupError:
            return "already"
        return "ok" if d.status == 200 else f"slack {d.status}"

    def note(self, answer: str, context: str) -> None:
        if answer in ("ok", "already"):
            self.tally.answers[answer] += 1
        else:
            self.tally.answers["error"] += 1
            self.tally.problems.append(f"{context}: {answer}")

    # the trial --------------------------------------------------------------------------------------

    def run(self, tid: int) -> None:
        stack, rng = self.stack, self.rng
        accepted = stack.webhook(tid).json()
        thread = accepted["thread_id"]
        self.tally.threads.append(thread)
        if rng.random() < 0.3:  # a duplicate triage event while the first run may still be going
            self.tally.duplicate_triage += 1
            if rng.random() < 0.7:
                again = stack.webhook(tid).json()
                if again["status"] != "duplicate":
                    self.tally.problems.append(f"{thread}: second webhook answered {again}")
            else:
                stack.cli_run("triage", "--ticket", str(tid))
        wait_for(lambda: (b := stack.api("GET", f"/api/runs/{thread}").json())["status"]
                       in ("paused", "done") and b, 60, f"run {thread}")
        proposals = stack.rt.store.find(thread_id=thread)
        if not proposals:
            self.tally.no_proposals += 1
            return
        ids = [p.id for p in proposals]
        wait_for(lambda: all(message_for(stack, pid) for pid in ids), 30, f"approval messages of {thread}")
        scenario = rng.choices(list(self.scenarios), weights=list(self.scenarios.values()))[0]
        self.tally.scenarios[scenario] += 1
        self.scenario = scenario
        *first, last = ids
        for pid in first:  # the others: mostly approved, sometimes rejected, on a random channel
            verdict = "reject" if rng.random() < 0.2 else "approve"
            # the CLI costs a process start (~2-3 s); it is the deciding channel in the scenarios below
            channel = rng.choice(["cli", "rest", "rest"] + (["slack", "slack"] if verdict == "approve" else []))
            if channel == "cli" and rng.random() >= self.cli_share:
                channel = "rest"
            self.note(self.decide(pid, verdict, channel), f"{thread} {scenario} first")
        getattr(self, f"scenario_{scenario}")(thread, last)
        self.settle(thread)

    def channel(self) -> str:
        """A random deciding channel; ``--cli-share`` below 1 sends that share of CLI picks to REST."""
        ch = self.rng.choice(["cli", "rest", "slack"])
        return "rest" if ch == "cli" and self.rng.random() >= self.cli_share else ch

    def scenario_approve(self, thread: str, pid: str) -> None:
        self.note(self.decide(pid, "approve", self.channel()), f"{thread} approve")

    def scenario_double(self, thread: str, pid: str) -> None:
        self.last_channels = []
        a = self.decide(pid, "approve", self.channel())
        b = self.decide(pid, "approve", self.channel())
        self.note(a, f"{thread} double#1")
        self.note(b, f"{thread} double#2")
        # A Slack click is acknowledged before it is decided, so with a click in the pair either may be the
        # one told "already decided" (by an ephemeral); one decision per proposal is checked in the audit.
        if "slack" not in self.last_channels and b != "already":
            self.tally.problems.append(f"{thread}: the second of two approvals answered {b!r}, not already decided")

    def scenario_concurrent(self, thread: str, pid: str) -> None:
        other = self.rng.choice(["rest", "slack"])
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda ch: self.decide(pid, "approve", ch), ["cli", other]))
        for a in answers:
            self.note(a, f"{thread} concurrent cli+{other}")
        # A Slack click is acknowledged at once and decided behind the ack: it never answers "already".
        if other == "rest" and sorted(answers) != ["already", "ok"]:
            self.tally.problems.append(f"{thread}: concurrent cli+rest answered {answers}")

    def scenario_slack_retry(self, thread: str, pid: str) -> None:
        slack = self.stack.slack
        ts = message_for(self.stack, pid)
        if ts is None:
            return
        view = slack.snapshot("approvals", ts)
        with ThreadPoolExecutor(2) as pool:
            deliveries = list(pool.map(lambda _: slack.click("approvals", ts, "approve", LEAD_SLACK, message=view),
                                       range(2)))
        self.tally.channels["slack"] += 2
        for n in range(1, self.rng.randint(1, 3) + 1):
            deliveries.append(slack.replay(retry_num=n))
            self.tally.slack_retries += 1
        for d in deliveries:
            self.note("ok" if d.status == 200 else f"slack {d.status}", f"{thread} slack_retry")

    def scenario_reject(self, thread: str, pid: str) -> None:
        self.note(self.decide(pid, "reject", self.rng.choice(["cli", "rest"])), f"{thread} reject")

    def scenario_expire(self, thread: str, pid: str) -> None:
        from signoff.domain import utcnow

        store = self.stack.rt.store
        for p in store.find(thread_id=thread, states=("pending",)):
            store.transition(p.id, ("pending",), expires_at=utcnow() - timedelta(seconds=1))
        if self.rng.random() < 0.5:
            r = self.stack.api("POST", "/api/sweep")
            self.note("ok" if r.status_code == 200 else f"sweep {r.status_code}: {r.text[:200]}", f"{thread} sweep")
        else:
            rc, out = self.stack.cli_run("approvals", "recover")
            self.note("ok" if rc == 0 else f"recover rc={rc}: {out[-300:]}", f"{thread} expire recover")

    def scenario_kill(self, thread: str, pid: str) -> None:
        how = self.rng.choice(["before_write", "after_write", "sigkill"])
        self.tally.channels["cli"] += 1
        if how == "sigkill":
            proc = self.stack.cli("approvals", "approve", pid, "--as", self.rng.choice(APPROVERS))
            time.sleep(self.rng.uniform(0.3, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            self.tally.kills["sigkill" if proc.returncode == -signal.SIGKILL else "sigkill_too_late"] += 1
            if self.stack.rt.store.get(pid).state == "pending":
                # Killed before its decision was recorded: nothing happened; the person approves again.
                self.tally.kills["sigkill_before_decision"] += 1
                self.note(self.decide(pid, "approve", self.rng.choice(["cli", "rest", "slack"])),
                          f"{thread} approve again after a kill")
        else:
            rc, out = self.stack.cli_run("approvals", "approve", pid, "--as", self.rng.choice(APPROVERS),
                                         SIGNOFF_FAULT_INJECTION=how)
            # 137: died at the fault point; 0 / 3: no write was due in this process (all rejected, say)
            self.tally.kills[how if rc == 137 else f"{how}_not_reached"] += 1
            if rc not in (0, 3, 137):
                self.tally.problems.append(f"{thread}: fault {how} rc={rc}: {out[-300:]}")
        rc, out = self.stack.cli_run("approvals", "recover")
        self.note("ok" if rc == 0 else f"recover rc={rc}: {out[-300:]}", f"{thread} kill recover")

    def scenario_leave(self, thread: str, pid: str) -> None:
        self.tally.pending_by_design.add(pid)

    def settle(self, thread: str) -> None:
        """Wait until nothing of the thread is mid-flight (approved or executing); recover once if stuck."""
        def quiet() -> bool:
            states = self.states(thread)
            if any(pid in self.tally.pending_by_design for pid in states):
                return "executing" not in states.values()  # the approved ones wait for the one left pending
            return not any(s in ("approved", "executing") for s in states.values())

        try:
            wait_for(quiet, 30, f"{thread} to settle")
        except TimeoutError:
            self.tally.answers["recover_needed"] += 1
            self.tally.stuck.append(f"{thread} ({self.scenario}): {sorted(self.states(thread).values())}")
            self.stack.cli_run("approvals", "recover")


# --- invariants -------------------------------------------------------------------------------------


@dataclass
class Backend:
    """One place proposals and audit live: the server under test (SQLite), the ``signoff serve`` worker's
    data dir, or the private Postgres cluster."""

    name: str
    store: Any
    audit: Any
    threads: list[str]
    pending_by_design: set[str]
    close: Callable[[], None] = lambda: None


def backends(stack: Stack, tally: Tally) -> list[Backend]:
    out = [Backend("server", stack.rt.store, stack.rt.audit, tally.threads, tally.pending_by_design)]
    worker = stack.extras.get("worker")
    if worker is not None:
        from signoff.guardrails.audit import SqliteAuditLog
        from signoff.guardrails.store import SqliteApprovalStore

        path = worker.data_dir / "signoff.sqlite"
        out.append(Backend("worker", SqliteApprovalStore(path), SqliteAuditLog(path), worker.threads, set()))
    pg = stack.extras.get("pg")
    if pg is not None:
        state = pg.open_state()
        out.append(Backend("postgres", state.store, state.audit, pg.threads, pg.pending_by_design, state.close))
    return out


def check(stack: Stack, tally: Tally) -> tuple[dict[str, int], list[str]]:
    from signoff.guardrails.actions import get_action

    failures: list[str] = list(tally.problems)
    writes: Counter[tuple[int, str]] = Counter()
    writes_total = 0
    for c in stack.calls():
        if c["method"] == "write" and c["model"] == "helpdesk.ticket" and c["ok"]:
            writes_total += 1
            ids, values = c["args"][0], c["args"][1]
            for tid in ids:
                for name in values:
                    writes[(int(tid), name)] += 1
    expected: set[tuple[int, str]] = set()
    by_state: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    audit_events = 0
    reconciled = 0
    n_proposals = 0
    for be in backends(stack, tally):
        try:
            proposals = [p for t in be.threads for p in be.store.find(thread_id=t)]
            n_proposals += len(proposals)

            def waiting_by_design(thread: str, proposals: list[Any] = proposals, be: Backend = be) -> bool:
                return any(x.id in be.pending_by_design and x.state == "pending" for x in proposals
                           if x.thread_id == thread)

            for p in proposals:
                by_state[p.state] += 1
                key = (int(p.target_id), get_action(p.action).field)  # type: ignore[attr-defined]
                n = writes[key]
                where = f"[{be.name}] {p.id} ({p.action} on {p.target_id})"
                if p.state == "executed":
                    expected.add(key)
                    if n != 1:
                        failures.append(f"executed {where} written {n} times")
                    approvals = [e for e in be.audit.trail(p.id) if e.kind in ("proposal.approved", "proposal.edited")
                                 and not e.actor.startswith(("agent:", "system:"))]
                    if not approvals:
                        failures.append(f"writes without an approval: executed {where} has no human approval")
                elif p.state in ("rejected", "expired", "cancelled"):
                    if n:
                        failures.append(f"{p.state} {where} written {n} times")
                elif p.state == "pending":
                    if p.id not in be.pending_by_design:
                        failures.append(f"{where} still pending, not by design")
                    if n:
                        failures.append(f"pending {where} written {n} times")
                elif p.state == "failed":
                    if not p.error:
                        failures.append(f"failed {where} in the exception queue without a reason")
                elif p.state == "approved" and waiting_by_design(p.thread_id):
                    if n:
                        failures.append(f"approved {where} written {n} times before its run resumed")
                else:
                    failures.append(f"{where} lost in state {p.state!r}")
            decisions = Counter(e.subject for e in be.audit.trail()
                                if e.kind in ("proposal.approved", "proposal.rejected", "proposal.expired"))
            for subject, n in decisions.items():
                if n > 1:
                    failures.append(f"[{be.name}] {subject} decided {n} times")
            for p in proposals:
                if p.state not in FINAL and p.id not in be.pending_by_design and not waiting_by_design(p.thread_id):
                    trail = [f"{e.kind}({e.actor})" for e in be.audit.trail(p.id)]
                    failures.append(f"  trail of {p.id}: {' '.join(trail)}")
            per_thread_actions = Counter((p.thread_id, p.action) for p in proposals)
            if any(n > 1 for n in per_thread_actions.values()):
                failures.append(f"[{be.name}] a ticket got the same proposal twice (duplicate triage)")
            events = be.audit.trail()
            kinds.update(e.kind for e in events)
            for t in be.threads:
                thread_decided = sum(1 for e in be.audit.trail(t) if e.kind == "triage.decided")
                if thread_decided != 1:
                    failures.append(f"[{be.name}] {t} triaged {thread_decided} times")
            reconciled += sum(1 for e in events if e.kind == "execution.succeeded"
                              and (e.data.get("result") or {}).get("reconciled"))
            try:
                audit_events += be.audit.verify()
            except Exception as exc:  # AuditIntegrityError
                failures.append(f"audit chain [{be.name}]: {exc}")
                audit_events += len(events)
        finally:
            be.close()
    stray = {k: n for k, n in writes.items() if k not in expected}
    if stray:
        failures.append(f"writes without an executed proposal: {stray}")
    for leak in tally.leaks:
        failures.append(f"PII leak: {leak}")
    counts = {
        "trials": tally.trials, "proposals": n_proposals,
        **{f"proposals_{s}": n for s, n in sorted(by_state.items())},
        "decisions": kinds["proposal.approved"] + kinds["proposal.rejected"] + kinds["proposal.edited"],
        "expiries": kinds["proposal.expired"], "refused_already_decided": tally.answers["already"],
        "odoo_writes": writes_total, "audit_events": audit_events,
        "reconciled_after_crash": reconciled,
        "kills": sum(n for k, n in tally.kills.items() if k in ("before_write", "after_write", "sigkill")
                     or (k.startswith(("worker_", "pg_worker_"))
                         and not k.endswith(("not_reached", "before_decision")))),
        "db_restarts": tally.kills["db_restart"],
        "duplicate_triage_events": tally.duplicate_triage, "slack_retries": tally.slack_retries,
        "no_proposal_tickets": tally.no_proposals, "run_failed_events": kinds["run.failed"],
        "run_crashed_events": kinds["run.crashed"], "execution_retries": kinds["execution.retry"],
    }
    return counts, failures


# --- main -------------------------------------------------------------------------------------------


def run_one(kind: str, stack: Stack, rng: random.Random, tally: Tally, scenarios: dict[str, int], used: set[int],
            cli_share: float, tid: int) -> str:
    """One trial of ``kind`` on ticket ``tid`` (attacks make their own ticket); returns its scenario."""
    trial = Trial(stack, rng, tally, scenarios, used, cli_share)
    if kind == "race":
        trial.run(tid)
        return trial.scenario or "race_no_proposals"
    if kind == "odoo_outage":
        from outages import odoo_outage

        odoo_outage(trial, tid)
    elif kind == "llm_outage":
        from outages import llm_outage

        llm_outage(trial, tid)
    elif kind == "attack":
        used.discard(tid)  # not used: the attack creates its own ticket
        from attacks import attack_trial

        attack_trial(trial)
    elif kind == "worker_kill":
        from worker_kill import worker_kill

        worker_kill(trial, tid)
    elif kind == "db_restart":
        from pg_restart import db_restart

        db_restart(trial, tid)
    elif kind == "serve_db_restart":
        from pg_restart import serve_db_restart

        serve_db_restart(trial, tid)
    elif kind == "pg_worker_kill":
        from worker_kill import pg_worker_kill

        pg_worker_kill(trial, tid)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return trial.scenario


def finish_extras(stack: Stack, tally: Tally) -> None:
    """A last restart of every other backend: nothing should be left to do."""
    for name in ("worker", "pg_worker", "pg_worker2"):
        worker = stack.extras.get(name)
        if worker is None:
            continue
        from worker_kill import STALE

        time.sleep(STALE)
        r = worker.api("POST", "/api/sweep")
        if r.status_code != 200:
            tally.problems.append(f"final {name} sweep {r.status_code}: {r.text[:200]}")
    pg = stack.extras.get("pg")
    if pg is not None:
        rc, out = pg.cli_run("approvals", "recover")
        if rc != 0:
            tally.problems.append(f"final recover on Postgres rc={rc}: {out[-300:]}")


def run(trials: int, seed: int, minutes: float, *, work: Path | None = None, quiet: bool = False,
        model_dir: Path | None = None, scenarios: dict[str, int] | None = None,
        kinds: dict[str, int] | None = None, cli_share: float = 1.0, each: int = 0) -> int:
    started = time.monotonic()
    deadline = started + minutes * 60
    if each:
        trials = each * len(kinds or KINDS)
    say: Callable[..., None] = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    own = work is None
    tmp = tempfile.TemporaryDirectory(prefix="signoff-trials-") if own else None
    work = Path(tmp.name) if tmp else work
    assert work is not None
    try:
        stack = start_stack(work, n_new=trials + 10, model_dir=model_dir)
    except Exception as exc:
        print(f"could not start the stack: {exc!r}", file=sys.stderr)
        return 2
    say(f"stack up in {time.monotonic() - started:.1f}s (odoo {stack.standin.url}, server {stack.server.url})")
    rng = random.Random(seed)
    tally = Tally()
    from signoff.tools.tickets import untriaged_ticket_ids

    used: set[int] = set()
    kinds = kinds or KINDS
    # Every kind gets its first trial early (so a short run covers each), then they mix by weight;
    # with ``each``: exactly that many of every kind, shuffled.
    order = sorted(kinds, key=lambda k: rng.random())
    if each:
        order = [k for k in kinds for _ in range(each)]
        rng.shuffle(order)
    try:
        for n in range(trials):
            if time.monotonic() > deadline or STOP.is_set():
                say(f"{'stopped (SIGTERM)' if STOP.is_set() else f'time budget of {minutes:g} min reached'} "
                    f"after {n} trials")
                break
            fresh = [t for t in untriaged_ticket_ids(stack.rt.reader) if t not in used]
            if not fresh:
                say("no untriaged tickets left")
                break
            kind = order[n] if n < len(order) else rng.choices(list(kinds), weights=list(kinds.values()))[0]
            tid = rng.choice(fresh)
            used.add(tid)
            t0 = time.monotonic()
            scenario = kind
            try:
                scenario = run_one(kind, stack, rng, tally, scenarios or SCENARIOS, used, cli_share, tid)
            except Exception as exc:  # a trial that breaks is a finding, not a crash
                tally.problems.append(f"{kind} ticket {tid}: {type(exc).__name__}: {exc}")
            tally.trials += 1
            tally.kinds[kind] += 1
            tally.seconds[kind] = tally.seconds.get(kind, 0.0) + time.monotonic() - t0
            say(f"trial {n + 1}/{trials} {kind} ({scenario}) ticket {tid}: {time.monotonic() - t0:.1f}s")
        rc, out = stack.cli_run("approvals", "recover")  # a last restart: nothing should be left to do
        if rc != 0:
            tally.problems.append(f"final recover rc={rc}: {out[-300:]}")
        finish_extras(stack, tally)
        counts, failures = check(stack, tally)
    finally:
        stack.stop()
        if tmp:
            tmp.cleanup()
    elapsed = time.monotonic() - started
    print(f"\n{counts['trials']} trials, seed {seed}, {elapsed:.1f}s")
    print("kinds:     " + ", ".join(f"{k} {v} ({tally.seconds.get(k, 0.0) / max(1, v):.1f} s each)"
                                    for k, v in sorted(tally.kinds.items())))
    print("scenarios: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.scenarios.items())))
    print("faults:    " + (", ".join(f"{k} {v}" for k, v in sorted(tally.faults.items())) or "none"))
    print("outcomes:  " + (", ".join(f"{k} {v}" for k, v in sorted(tally.outcomes.items())) or "none"))
    print("attacks:   " + (", ".join(f"{k} {v}" for k, v in sorted(tally.attacks.items())) or "none"))
    for e in tally.db_errors[:10]:
        print(f"  a command that lost its database: {e}")
    print("channels:  " + ", ".join(f"{k} {v}" for k, v in sorted(tally.channels.items())))
    print("kills:     " + (", ".join(f"{k} {v}" for k, v in sorted(tally.kills.items())) or "none"))
    print("answers:   " + ", ".join(f"{k} {v}" for k, v in sorted(tally.answers.items())))
    print("counts:    " + json.dumps(counts))
    for s in tally.stuck:
        print(f"  still in flight 30 s after its trial, finished by recover: {s}")
    checks = [
        ("every executed proposal written exactly once", not any("executed" in f and "written" in f
                                                                for f in failures)),
        ("every rejected / expired / cancelled proposal never written",
         not any(f.startswith(("rejected", "expired", "cancelled")) for f in failures)),
        ("no write without an executed proposal", not any(f.startswith("writes without") for f in failures)),
        ("no proposal lost (final, or pending by design)",
         not any("lost" in f or "not by design" in f for f in failures)),
        ("one triage per ticket despite duplicate events", not any("triaged" in f or "duplicate triage" in f
                                                                   for f in failures)),
        ("one decision per proposal", not any(re.search(r" decided \d+ times", f) for f in failures)),
        ("audit chain intact", not any(f.startswith("audit chain") for f in failures)),
        ("no PII in model inputs, Slack, logs, checkpoints or state", not tally.leaks),
        ("no unexpected answers", not failures),
    ]
    for name, ok in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    for f in failures[:30]:
        print(f"    - {f}")
    return 0 if not failures else 1


#: Set by SIGTERM: no new trial starts; the invariants are checked and the counts printed as usual.
STOP = threading.Event()


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=5.0, help="stop starting new trials after this")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temp dir)")
    parser.add_argument("--model-dir", type=Path, help="a trained triage model to reuse (default: train one)")
    parser.add_argument("--scenarios", help=f"race scenarios, each optionally name=weight, of "
                                            f"{','.join(f'{k}={w}' for k, w in SCENARIOS.items())} (default: all)")
    parser.add_argument("--kinds", help=f"comma-separated fault kinds, each optionally name=weight, of "
                                        f"{','.join(f'{k}={w}' for k, w in KINDS.items())} (default: all)")
    parser.add_argument("--each", type=int, default=0,
                        help="exactly N trials of every kind (shuffled) instead of --trials mixed by weight")
    parser.add_argument("--cli-share", type=float, default=1.0,
                        help="share of the CLI decisions kept on the CLI (the rest go through REST; the kill "
                             "scenario always uses the CLI): below 1 makes trials cheaper")
    args = parser.parse_args(argv)
    kinds = None
    if args.kinds:
        kinds = {}
        for item in (i.strip() for i in args.kinds.split(",") if i.strip()):
            name, _, weight = item.partition("=")
            if name not in KINDS:
                parser.error(f"unknown kind {name!r} (one of {', '.join(KINDS)})")
            kinds[name] = int(weight) if weight else KINDS[name]
    scenarios = None
    if args.scenarios:
        items = [n.strip().partition("=") for n in args.scenarios.split(",") if n.strip()]
        unknown = {name for name, _, _ in items} - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        scenarios = {name: int(weight) if weight else SCENARIOS[name] for name, _, weight in items}
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    return run(args.trials, args.seed, args.minutes, quiet=args.quiet, model_dir=args.model_dir, work=args.keep,
               scenarios=scenarios, kinds=kinds, cli_share=args.cli_share, each=args.each)


if __name__ == "__main__":
    sys.exit(main())
