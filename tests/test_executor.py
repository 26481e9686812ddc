"""The executor's logic: claim, retry with backoff, exception queue, reconciliation, one writer.

Unit tests over the in-memory Odoo (same ORM as the stand-in, no socket); the real-socket twins of
these paths are in tests/test_triage.py (crash and recovery across processes, concurrent approvals).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from signoff.domain import Proposal, proposal_id
from signoff.errors import ExecutionError, OdooConnectionError
from signoff.guardrails.audit import InMemoryAuditLog
from signoff.guardrails.executor import Executor
from signoff.guardrails.store import InMemoryApprovalStore
from signoff.integrations.odoo import InMemoryOdoo, OdooWriter


class FlakyWriter:
    """Wraps a writer; its first ``failures`` writes raise the given error."""

    def __init__(self, inner: OdooWriter, failures: int, error: Exception | None = None) -> None:
        self.inner, self.failures = inner, failures
        self.error = error or OdooConnectionError("connection refused", name=None)
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, model: str, ids: Sequence[int], vals: Mapping[str, Any]) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        self.writes += 1
        return self.inner.write(model, ids, vals)


@pytest.fixture
def odoo() -> InMemoryOdoo:
    return InMemoryOdoo.seeded(n_history=10, n_new=2, n_contracts=0)


def a_ticket(odoo: InMemoryOdoo) -> int:
    return int(odoo.search_read("helpdesk.ticket", [], ["id"], limit=1)[0]["id"])


def approved(store: InMemoryApprovalStore, ticket: int, priority: str = "3") -> Proposal:
    args = {"priority": priority}
    p = Proposal(id=proposal_id("t", "ticket.set_priority", "helpdesk.ticket", ticket, args), thread_id="t",
                 action="ticket.set_priority", target_model="helpdesk.ticket", target_id=ticket, args=args,
                 approver_group="support-leads", state="approved")
    store.add(p)
    return p


def make(odoo: InMemoryOdoo, writer: Any, **kw: Any) -> tuple[Executor, InMemoryApprovalStore, InMemoryAuditLog]:
    store, audit = InMemoryApprovalStore(), InMemoryAuditLog()
    sleeps: list[float] = []
    return Executor(store, audit, lambda: writer, sleep=sleeps.append, **kw), store, audit


def test_pending_is_never_written(odoo: InMemoryOdoo) -> None:
    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, _ = make(odoo, writer)
    p = approved(store, a_ticket(odoo))
    store.transition(p.id, ("approved",), state="pending")
    with pytest.raises(ExecutionError, match="not approved"):
        executor.execute(p.id)
    assert writer.writes == 0


def test_connection_errors_retry_with_backoff_then_succeed(odoo: InMemoryOdoo) -> None:
    writer = FlakyWriter(odoo.writer(), 2)
    executor, store, audit = make(odoo, writer, max_attempts=3)
    p = approved(store, a_ticket(odoo))
    done = executor.execute(p.id)
    assert done.state == "executed" and done.attempts == 3 and writer.writes == 1
    assert [e.kind for e in audit.trail(p.id)].count("execution.retry") == 2
    assert odoo.read("helpdesk.ticket", [p.target_id], ["priority"])[0]["priority"] == "3"
    assert executor.execute(p.id).state == "executed" and writer.writes == 1, "executing again is a no-op"


def test_exhausted_retries_land_in_the_exception_queue(odoo: InMemoryOdoo) -> None:
    writer = FlakyWriter(odoo.writer(), 10)
    executor, store, audit = make(odoo, writer, max_attempts=2)
    p = approved(store, a_ticket(odoo))
    failed = executor.execute(p.id)
    assert failed.state == "failed" and "connection refused" in (failed.error or "")
    assert [x.id for x in store.find(states=("failed",))] == [p.id]
    assert audit.trail(p.id)[-1].kind == "execution.failed"
    writer.failures = 0
    assert executor.retry(p.id, "cli:lead").state == "executed"
    assert writer.writes == 1


def test_a_business_error_fails_at_once_and_can_be_cancelled(odoo: InMemoryOdoo) -> None:
    from signoff.errors import OdooValidationError

    writer = FlakyWriter(odoo.writer(), 1, OdooValidationError("priority is locked", name="ValidationError"))
    executor, store, audit = make(odoo, writer, max_attempts=5)
    p = approved(store, a_ticket(odoo))
    assert executor.execute(p.id).state == "failed"
    assert "execution.retry" not in [e.kind for e in audit.trail(p.id)]
    assert executor.cancel(p.id, "cli:lead", "not needed").state == "cancelled"
    with pytest.raises(ExecutionError, match="exception queue"):
        executor.retry(p.id, "cli:lead")


@pytest.mark.parametrize("already_written", [True, False])
def test_stale_execution_is_reconciled_by_reading_back(odoo: InMemoryOdoo, already_written: bool) -> None:
    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, audit = make(odoo, writer, stale_after=0)
    p = approved(store, a_ticket(odoo))
    store.transition(p.id, ("approved",), state="executing", attempts=1)  # a worker died here
    if already_written:
        odoo.writer().write("helpdesk.ticket", [p.target_id], {"priority": "3"})
    done = executor.execute(p.id)
    assert done.state == "executed"
    assert writer.writes == (0 if already_written else 1)
    assert bool((done.result or {}).get("reconciled")) is already_written


def test_a_fresh_execution_elsewhere_is_left_alone(odoo: InMemoryOdoo) -> None:
    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, _ = make(odoo, writer, stale_after=3600)
    p = approved(store, a_ticket(odoo))
    store.transition(p.id, ("approved",), state="executing", attempts=1)
    assert executor.execute(p.id).state == "executing" and writer.writes == 0


def test_a_stalled_worker_taken_over_by_a_recovery_does_not_write_again(odoo: InMemoryOdoo) -> None:
    """Worker A claims, then stalls (a database restart) past the stale bound just before its write; a recovery
    claims it, reads Odoo (not written), writes. When A wakes up it sees it was superseded: one write."""
    writer = FlakyWriter(odoo.writer(), 0)
    store = InMemoryApprovalStore()

    class StallingAudit(InMemoryAuditLog):
        stalled = False

        def append(self, kind: str, subject: str, actor: str, data: Any = None, **kw: Any) -> Any:
            event = super().append(kind, subject, actor, data, **kw)
            if kind == "execution.intent" and not self.stalled:
                self.stalled = True  # A's stall: meanwhile the recovery runs to the end
                recovery = Executor(store, self, lambda: writer, sleep=lambda _: None, stale_after=0)
                assert recovery.execute(subject).state == "executed"
            return event

    audit = StallingAudit()
    worker_a = Executor(store, audit, lambda: writer, sleep=lambda _: None, stale_after=0)
    p = approved(store, a_ticket(odoo))
    assert worker_a.execute(p.id).state == "executed"
    assert writer.writes == 1
    kinds = [e.kind for e in audit.trail(p.id)]
    assert kinds.count("execution.superseded") == 1 and kinds.count("execution.succeeded") == 1, kinds


def test_a_claim_renewed_before_the_write_does_not_look_stale_while_it_is_in_flight(odoo: InMemoryOdoo) -> None:
    """A stalls longer than the stale bound *before* its write (its claim is old), then writes slowly; a recovery
    arriving during that write must find the claim fresh (renewed right before the write) and leave it."""
    import time

    store, inner = InMemoryApprovalStore(), odoo.writer()

    class StallingAudit(InMemoryAuditLog):
        def append(self, kind: str, subject: str, actor: str, data: Any = None, **kw: Any) -> Any:
            if kind == "execution.intent":
                time.sleep(0.6)  # longer than the 0.5 s stale bound
            return super().append(kind, subject, actor, data, **kw)

    audit = StallingAudit()

    class InFlightWriter:
        writes, seen_by_recovery = 0, ""

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def write(self, model: str, ids: Sequence[int], vals: Mapping[str, Any]) -> bool:
            if not self.seen_by_recovery:  # a recovery runs while this write is in flight
                self.seen_by_recovery = "running"
                recovery = Executor(store, InMemoryAuditLog(), lambda: self, sleep=lambda _: None, stale_after=0.5)
                self.seen_by_recovery = recovery.execute(p.id).state
            self.writes += 1
            return inner.write(model, ids, vals)

    writer = InFlightWriter()
    p = approved(store, a_ticket(odoo))
    worker = Executor(store, audit, lambda: writer, sleep=lambda _: None, stale_after=0.5)
    assert worker.execute(p.id).state == "executed"
    assert writer.seen_by_recovery == "executing" and writer.writes == 1


def test_concurrent_executions_write_once(odoo: InMemoryOdoo) -> None:
    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, _ = make(odoo, writer)
    p = approved(store, a_ticket(odoo))
    barrier = threading.Barrier(6)

    def run() -> None:
        barrier.wait()
        executor.execute(p.id)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.writes == 1 and store.get(p.id).state == "executed"


def test_unknown_category_fails_without_writing(odoo: InMemoryOdoo) -> None:
    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, _ = make(odoo, writer)
    args = {"category": "no_such_category"}
    p = Proposal(id="p_x", thread_id="t", action="ticket.set_category", target_model="helpdesk.ticket",
                 target_id=a_ticket(odoo), args=args, approver_group="support-leads", state="approved")
    store.add(p)
    failed = executor.execute(p.id)
    assert failed.state == "failed" and "no helpdesk.ticket.category named" in (failed.error or "")
    assert writer.writes == 0


class LateWriter(FlakyWriter):
    """Its first ``failures`` writes reach Odoo, then time out on the way back (the answer is lost)."""

    def write(self, model: str, ids: Sequence[int], vals: Mapping[str, Any]) -> bool:
        self.writes += 1
        self.inner.write(model, ids, vals)
        if self.failures > 0:
            self.failures -= 1
            raise OdooConnectionError("Odoo did not answer within 4.0s", name=None)
        return True


def test_a_write_that_timed_out_after_landing_is_read_back_not_written_again(odoo: InMemoryOdoo) -> None:
    writer = LateWriter(odoo.writer(), 1)
    executor, store, audit = make(odoo, writer, max_attempts=3)
    p = approved(store, a_ticket(odoo))
    done = executor.execute(p.id)
    assert done.state == "executed" and done.result and done.result.get("reconciled")
    assert writer.writes == 1  # the retry read Odoo back and found the write there


def test_a_retry_from_the_exception_queue_reads_back_first(odoo: InMemoryOdoo) -> None:
    writer = LateWriter(odoo.writer(), 3)
    executor, store, audit = make(odoo, writer, max_attempts=1)
    p = approved(store, a_ticket(odoo))
    assert executor.execute(p.id).state == "failed"  # timed out (but the write landed)
    assert writer.writes == 1
    assert executor.retry(p.id, "cli:lead").state == "executed"
    assert writer.writes == 1


def proposed_over_current(odoo: InMemoryOdoo, store: InMemoryApprovalStore) -> tuple[Proposal, int, str]:
    """An approved priority change that recorded the ticket's priority when proposed: (proposal, ticket, that)."""
    tid = a_ticket(odoo)
    before = odoo.read("helpdesk.ticket", [tid], ["priority"])[0]["priority"]
    args = {"priority": "3" if before != "3" else "0"}
    p = Proposal(id=proposal_id("t", "ticket.set_priority", "helpdesk.ticket", tid, args), thread_id="t",
                 action="ticket.set_priority", target_model="helpdesk.ticket", target_id=tid, args=args,
                 current={"priority": before}, approver_group="support-leads", state="approved")
    store.add(p)
    return p, tid, before


def test_a_field_changed_since_the_proposal_is_not_written_until_a_human_retries(odoo: InMemoryOdoo) -> None:
    from signoff.errors import ChangedInOdoo

    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, audit = make(odoo, writer)
    p, tid, before = proposed_over_current(odoo, store)
    args = p.args
    changed = next(c for c in ("0", "1", "2", "3") if c not in (before, args["priority"]))
    odoo.writer().write("helpdesk.ticket", [tid], {"priority": changed})
    failed = executor.execute(p.id)
    assert failed.state == "failed" and failed.error and failed.error.startswith(ChangedInOdoo.__name__)
    assert f"it was {before!r}, it is now {changed!r}" in failed.error
    assert writer.writes == 0
    done = executor.retry(p.id, "cli:lead")
    assert done.state == "executed" and writer.writes == 1
    assert odoo.read("helpdesk.ticket", [tid], ["priority"])[0]["priority"] == args["priority"]
    # Unchanged since the proposal (the usual case): written at once.
    p2 = approved(store, tid, priority=args["priority"])
    assert executor.execute(p2.id).state in ("executed",)


def test_a_field_someone_already_set_to_the_proposed_value_is_done_without_a_write(odoo: InMemoryOdoo) -> None:
    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, _ = make(odoo, writer)
    p, tid, _before = proposed_over_current(odoo, store)
    odoo.writer().write("helpdesk.ticket", [tid], {"priority": p.args["priority"]})  # a person did it first
    done = executor.execute(p.id)
    assert done.state == "executed" and done.result and done.result.get("already") is True
    assert writer.writes == 0


@pytest.mark.parametrize("team_decided_after_the_edit", [True, False])
def test_a_team_is_written_beside_an_edited_category_only_if_approved_after_the_edit(
        odoo: InMemoryOdoo, team_decided_after_the_edit: bool) -> None:
    from datetime import timedelta

    from signoff.domain import utcnow

    writer = FlakyWriter(odoo.writer(), 0)
    executor, store, _ = make(odoo, writer)
    tid = a_ticket(odoo)
    row = odoo.read("helpdesk.ticket", [tid], ["category_id", "team_id"])[0]
    before_cat = row["category_id"][1] if row["category_id"] else None
    before_team = row["team_id"][1] if row["team_id"] else None
    cats = [r["name"] for r in odoo.search_read("helpdesk.ticket.category", [], ["name"])]
    teams = [r["name"] for r in odoo.search_read("helpdesk.ticket.team", [], ["name"])]
    agents, edited = [c for c in cats if c != before_cat][:2]
    team = next(t for t in teams if t != before_team)
    t0 = utcnow()
    cat_args, team_args = {"category": agents}, {"team": team}
    category = Proposal(id=proposal_id("t", "ticket.set_category", "helpdesk.ticket", tid, cat_args), thread_id="t",
                        action="ticket.set_category", target_model="helpdesk.ticket", target_id=tid, args=cat_args,
                        current={"category": before_cat}, edited_args={"category": edited}, decided_at=t0,
                        approver_group="support-leads", state="approved")
    team_p = Proposal(id=proposal_id("t", "ticket.set_team", "helpdesk.ticket", tid, team_args), thread_id="t",
                      action="ticket.set_team", target_model="helpdesk.ticket", target_id=tid, args=team_args,
                      current={"team": before_team}, requires={"category": [before_cat, agents]},
                      decided_at=t0 + timedelta(seconds=1 if team_decided_after_the_edit else -1),
                      approver_group="support-leads", state="approved")
    store.add(category)
    store.add(team_p)
    assert executor.execute(category.id).state == "executed"  # the edited category is written first
    done = executor.execute(team_p.id)
    if team_decided_after_the_edit:  # its approver saw the edit
        assert done.state == "executed", done.error
    else:
        assert done.state == "failed" and "chosen for category" in (done.error or "")
