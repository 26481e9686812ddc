"""What the server does, independent of HTTP: accept tickets, run and resume triage off the event
loop, decide, keep Slack messages in step, and sweep (expire, remind, recover).

Concurrency: runs and resumes go to a bounded thread pool; every graph step of one run (first run,
resume after a click, resume after expiry) holds that run's lock, so two of them never overlap on a
thread. Across processes (several workers on one Postgres) a resume also holds the run's claim in the
store (the one a first run holds), the store's compare-and-set and the executor's claim keep writes
single, and the sweep runs on one worker at a time (``pg_try_advisory_lock``; a worker whose sweep finds
another one running answers ``skipped: 1``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from slack_sdk.errors import SlackApiError

from signoff.agents.runner import RunResult
from signoff.agents.services import Runtime
from signoff.domain import Decision, Proposal, utcnow
from signoff.errors import AlreadyDecided, NotAuthorised, OdooMissingError, ProposalNotFound, SignoffError
from signoff.guardrails.policy import parse_duration
from signoff.integrations.slack import SlackApprovalChannel
from signoff.server.metrics import Metrics

log = logging.getLogger(__name__)
TICKET = "helpdesk.ticket"


#: Audit kinds that mean a run failed (GET /api/runs and /runs report them).
RUN_FAILED_KINDS = ("run.failed", "run.crashed", "webhook.record_missing")

#: Rounds of the executor's attempts a write that failed on an unreachable Odoo gets from the sweep.
OUTAGE_ROUNDS = 3


class ServerServices:
    def __init__(self, rt: Runtime, *, slack: SlackApprovalChannel | None = None, workers: int = 4,
                 metrics: Metrics | None = None, record_retry: tuple[int, float] = (5, 0.1)) -> None:
        self.rt, self.slack = rt, slack
        self.metrics = metrics or Metrics()
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="signoff-work")
        self.record_retry = record_retry
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._inflight: set[str] = set()
        self._failed_seen: set[str] = set()
        self._state_db = rt.statedb
        self.claim_wait = 10.0
        """Seconds a resume waits for another process's hold on the run before leaving it to the sweep."""

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)

    def lock(self, thread_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(thread_id, threading.Lock())

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self.pool.submit(fn, *args)

    # -- tickets in ---------------------------------------------------------------------------------

    def ticket_exists(self, ticket_id: int) -> bool:
        """Re-read the ticket, retrying with backoff: Odoo 17 posts its webhook before the commit."""
        attempts, delay = self.record_retry
        for attempt in range(attempts):
            try:
                if self.rt.reader.read(TICKET, [ticket_id], ["id"]):
                    return True
            except OdooMissingError:
                pass
            if attempt < attempts - 1:
                time.sleep(delay * 2 ** attempt)
        return False

    def in_flight(self, thread_id: str) -> bool:
        with self._guard:
            return thread_id in self._inflight

    def accept_ticket(self, ticket_id: int, *, source: str) -> tuple[str, str]:
        """Start a background run for a ticket unless it has one. Returns (``accepted``|``duplicate``, thread)."""
        thread = self.rt.runner.thread_for(ticket_id)
        with self._guard:
            if thread in self._inflight:
                return "duplicate", thread
            self._inflight.add(thread)
        try:
            values, _paused, stopped = self.rt.runner.status(thread)
        except Exception:
            with self._guard:
                self._inflight.discard(thread)
            raise
        if values and not stopped:
            with self._guard:
                self._inflight.discard(thread)
            return "duplicate", thread
        self.submit(self._triage_job, ticket_id, thread, source)
        return "accepted", thread

    def _triage_job(self, ticket_id: int, thread: str, source: str) -> RunResult | None:
        try:
            return self.triage_now(ticket_id, source=source)
        except Exception as exc:  # the pool would swallow it: audit and log instead
            log.exception("triage of %s failed", thread)
            self.rt.audit.append("run.crashed", thread, "system:server", {"error": f"{type(exc).__name__}: {exc}"},
                                 thread_id=thread)
            self.metrics.runs.inc("crashed")
            return None
        finally:
            with self._guard:
                self._inflight.discard(thread)

    def triage_now(self, ticket_id: int, *, source: str) -> RunResult | None:
        """Run triage for one ticket in this thread (None: the ticket never became readable)."""
        thread = self.rt.runner.thread_for(ticket_id)
        if not self.ticket_exists(ticket_id):
            self.rt.audit.append("webhook.record_missing", thread, f"system:{source}",
                                 {"ticket": ticket_id, "attempts": self.record_retry[0]}, thread_id=thread)
            self.metrics.runs.inc("record_missing")
            return None
        with self.lock(thread):
            result = self.rt.runner.run(ticket_id)
        self.metrics.runs.inc(result.status)
        self.publish(thread)
        return result

    # -- Slack --------------------------------------------------------------------------------------

    def publish(self, thread_id: str) -> list[Proposal]:
        """Post this run's pending ``slack``-channel proposals that are not posted yet."""
        if self.slack is None:
            return []
        posted = []
        for p in self.rt.store.find(thread_id=thread_id, states=("pending",)):
            if p.channel != "slack":
                continue
            try:
                message = self.slack.post(p)
            except SlackApiError as exc:
                log.warning("posting %s to Slack failed: %s", p.id, exc)
                self.rt.audit.append("slack.post_failed", p.id, "system:slack", {"error": str(exc)},
                                     thread_id=p.thread_id)
                continue
            if message is not None:
                self.rt.audit.append("proposal.posted", p.id, "system:slack",
                                     {"channel": message.channel, "ts": message.ts}, thread_id=p.thread_id)
                posted.append(p)
        return posted

    def refresh(self, p: Proposal) -> None:
        if self.slack is None or p.channel != "slack":
            return
        try:
            # Serialised per proposal and re-read inside the lock: a late "approved" update can never
            # overwrite the "executed" one that another thread posted after it.
            with self.lock("slack-message:" + p.id):
                self.slack.refresh(self.rt.store.get(p.id))
        except SlackApiError as exc:
            log.warning("updating the Slack message of %s failed: %s", p.id, exc)

    # -- decisions ----------------------------------------------------------------------------------

    def check_may_decide(self, proposal_id: str, actor: str, *, channel: str) -> Proposal:
        """Before opening a modal: the proposal is pending and ``actor`` may decide it (refusals audited)."""
        p = self.rt.store.get(proposal_id)
        if p.state != "pending":
            at = p.decided_at.isoformat(timespec="seconds") if p.decided_at else None
            raise AlreadyDecided(p.id, p.state, p.decided_by, at)
        policy = self.rt.policy
        reason = None
        if not policy.may_decide(actor, p.approver_group):
            reason = f"{actor} is not in approver group {p.approver_group!r}"
        elif policy.separation_of_duties and actor == p.requested_by:
            reason = f"{actor} raised this proposal and may not decide it"
        if reason:
            self.rt.audit.append("decision.refused", p.id, actor, {"reason": reason, "channel": channel},
                                 thread_id=p.thread_id)
            self.metrics.refusals.inc("not_authorised")
            raise NotAuthorised(reason)
        return p

    def decide(self, decision: Decision) -> tuple[Proposal, RunResult | None]:
        """Record a decision, show it on Slack, and resume the run once all its proposals are decided."""
        try:
            p = self.rt.approvals.decide(decision, reader=self.rt.reader)
        except NotAuthorised:
            self.metrics.refusals.inc("not_authorised")
            raise
        except AlreadyDecided:
            self.metrics.refusals.inc("already_decided")
            raise
        self.metrics.decisions.inc(p.state, decision.channel)
        if p.decided_at:
            self.metrics.decision_latency.observe((p.decided_at - p.created_at).total_seconds())
        self.refresh(p)
        result = self.resume(p.thread_id, actor=decision.actor)
        return self.rt.store.get(p.id), result

    def resume(self, thread_id: str, *, actor: str, wait: float | None = None) -> RunResult | None:
        """Resume the run if it is ready (None if not, or if another process holds it after ``wait`` s;
        default ``claim_wait``). A killed process's hold goes stale after ``runner.CLAIM_SECONDS``."""
        return self._resume(thread_id, actor=actor, wait=self.claim_wait if wait is None else wait, writes=False)[0]

    def recover(self, thread_id: str, *, actor: str = "system:recovery") -> tuple[RunResult | None, list[Proposal]]:
        """What ``signoff approvals recover`` does, for one run: resume it if ready, then hand its writes still
        owed after it ended (killed mid-write, or left ``executing`` under a claim that was live when its execute
        step ran) to the executor, which takes an interrupted one only once it is older than the stale bound
        and reads Odoo back first. Nothing if another process holds the run. (result, proposals handed over)."""
        return self._resume(thread_id, actor=actor, wait=0, writes=True)

    def _resume(self, thread_id: str, *, actor: str, wait: float,
                writes: bool) -> tuple[RunResult | None, list[Proposal]]:
        from signoff.agents.renewal import recover_thread
        from signoff.agents.runner import held_run

        with self.lock(thread_id), held_run(self.rt.store, thread_id, wait=wait) as mine:
            if not mine:  # another process (a worker, a CLI decision) is on it; the sweep finishes it later
                return None, []
            result, handed = recover_thread(self.rt, thread_id, actor, writes=writes)
        if result is not None:
            self.metrics.runs.inc("resumed_" + result.status)
        if result is not None or handed:
            for p in self.rt.store.find(thread_id=thread_id):
                if p.state == "failed" and p.id not in self._failed_seen:
                    self._failed_seen.add(p.id)
                    self.metrics.executor_failures.inc()
                if p.state in ("executed", "failed"):
                    self.refresh(p)
        return result, handed

    # -- the sweep ----------------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """Expire overdue proposals (and resume their runs), remind approvers, post what was never posted,
        finish decided runs that were never resumed, finish interrupted writes once they are stale
        (``recovered``; ``waiting``: interrupted writes not stale yet), and requeue writes that failed only
        because Odoo was unreachable, once it answers (``requeued``). On one worker at a time: while another worker's
        sweep runs, this one does nothing and answers ``skipped: 1``."""
        with self._state_db.try_lock("sweep") as mine:
            if not mine:
                return {"expired": 0, "reminded": 0, "posted": 0, "resumed": 0, "odoo_decided": 0,
                        "escalated": 0, "recovered": 0, "waiting": 0, "requeued": 0, "skipped": 1}
            return {**self._sweep(), "skipped": 0}

    def _sweep(self) -> dict[str, int]:
        counts = {"expired": 0, "reminded": 0, "posted": 0, "resumed": 0, "odoo_decided": 0, "recovered": 0,
                  "waiting": 0}
        try:
            polled = self.rt.odoo_channel.poll()
            counts["posted"] += polled.posted
            counts["odoo_decided"] = polled.decided
        except SignoffError as exc:
            log.warning("Odoo approval channel: %s", exc)
        for p in self.rt.approvals.expire_due():
            counts["expired"] += 1
            self.metrics.expired.inc()
            self.refresh(p)
            if self.resume(p.thread_id, actor="system:expiry") is not None:
                counts["resumed"] += 1
        now = utcnow()
        for p in self.rt.store.find(states=("pending",)):
            if self.slack is None or p.channel != "slack" or self.in_flight(p.thread_id):
                continue
            posted = self.slack.messages.get(p.id)
            if posted is None:
                counts["posted"] += len(self.publish(p.thread_id))
                continue
            try:
                remind = parse_duration(self.rt.policy.action(p.action).remind)
            except SignoffError:
                continue
            if remind is None or posted.ts is None or now - (posted.reminded_at or posted.posted_at) < remind:
                continue
            try:
                self.slack.remind(p)
            except SlackApiError as exc:
                log.warning("reminder for %s failed: %s", p.id, exc)
                continue
            self.rt.audit.append("proposal.reminded", p.id, "system:reminder",
                                 {"channel": "slack", "approvers": p.approver_group}, thread_id=p.thread_id)
            self.metrics.reminders.inc()
            counts["reminded"] += 1
        from signoff.server.escalation import escalate_due

        counts["escalated"] = escalate_due(self, utcnow())
        # Decided but never resumed (a crash between decision and resume), or killed mid-write: resume the
        # run, then the writes still owed by a run that has ended go to the executor (`approvals recover`).
        stuck = {p.thread_id for p in self.rt.store.find(states=("approved", "executing"))}
        if counts["odoo_decided"]:
            stuck |= {p.thread_id for p in self.rt.store.find(states=("rejected",))}
        for thread in sorted(stuck):
            if self.in_flight(thread):
                continue
            result, handed = self.recover(thread)
            counts["resumed"] += result is not None
            counts["recovered"] += sum(p.state in ("executed", "failed") for p in handed)
        # Interrupted writes younger than the stale bound: a later sweep finishes them.
        counts["waiting"] = len(self.rt.runner.waiting_on_stale())
        counts["requeued"] = self._requeue_after_outage()
        return counts

    def _requeue_after_outage(self) -> int:
        """Writes that failed only because Odoo was unreachable go back to the executor once Odoo answers
        again (at most :data:`OUTAGE_ROUNDS` rounds of attempts; a change made in Odoo meanwhile is still
        refused). What is left stays in the exception queue for a person."""
        failed = self.rt.executor.outage_failures(rounds=OUTAGE_ROUNDS)
        if not failed:
            return 0
        if self._odoo_problem() is not None:
            return 0  # still down: the next sweep tries again
        done = 0
        for p in failed:
            if self.in_flight(p.thread_id):
                continue
            try:
                with self.lock(p.thread_id):
                    after = self.rt.executor.retry(p.id, "system:sweep", over_changes=False,
                                                   reason="Odoo answers again after an outage")
            except SignoffError as exc:
                log.warning("requeue of %s after the outage failed: %s", p.id, exc)
                continue
            done += 1
            self.refresh(after)
        return done

    # -- health -------------------------------------------------------------------------------------

    def proposals_by_state(self) -> dict[str, int]:
        with self._state_db.connect() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM proposals GROUP BY state").fetchall()
        return {str(s): int(n) for s, n in rows}

    def _odoo_problem(self) -> SignoffError | None:
        """None when Odoo answers a read, else why not."""
        try:
            self.rt.reader.search_count("res.users", [])
        except SignoffError as exc:
            return exc
        return None

    def readiness(self) -> dict[str, str]:
        problem = self._odoo_problem()
        checks: dict[str, str] = {"odoo": "ok" if problem is None else f"unreachable: {problem}"}
        try:
            with self._state_db.connect(write=True) as conn:
                conn.execute("SELECT 1")
            checks["state_db"] = "ok"
        except Exception as exc:  # any database/OS error means not writable
            checks["state_db"] = f"not writable: {exc}"
        return checks

    def run_status(self, thread_id: str) -> dict[str, Any]:
        values, paused, stopped = self.rt.runner.status(thread_id)
        if self.in_flight(thread_id):
            status = "running"
        elif not values:  # never ran, or failed before its first checkpoint (as GET /runs/{thread} says)
            failed = any(e.kind in RUN_FAILED_KINDS for e in self.rt.audit.trail(thread_id))
            status = "failed" if failed else "none"
        else:
            status = "paused" if paused else "stopped" if stopped else "done"
        proposals = self.rt.store.find(thread_id=thread_id)
        return {"thread_id": thread_id, "status": status, "triage": values.get("triage"),
                "proposals": [{"id": p.id, "action": p.action, "state": p.state} for p in proposals]}

    def get(self, proposal_id: str) -> Proposal:
        try:
            return self.rt.store.get(proposal_id)
        except ProposalNotFound:
            from signoff.guardrails.store import resolve_id

            return self.rt.store.get(resolve_id(self.rt.store, proposal_id))
