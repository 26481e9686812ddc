"""The executor: the only code that writes to Odoo, and only for an ``approved`` proposal.

Exactly once, step by step: claim (``approved -> executing`` compare-and-set, attempt counted, intent
audited), write, read back, mark ``executed``. A proposal found ``executing`` and older than a bound
was interrupted by a crash: it is reconciled by reading Odoo (already written: ``executed``; not:
write again). Retryable failures back off and retry; after the last attempt, or at once for an
error that retrying cannot fix, the proposal is ``failed``: the exception queue a human works.

A field write checks first that the field still holds the value the proposal showed the approver as
current (``proposal.current``): if someone changed it in Odoo since, nothing is written and the proposal
goes to the exception queue (:class:`ChangedInOdoo`, both values in the error). A human who retries it
from there (``signoff approvals retry``, the inbox) has seen that and writes over the change.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta

from signoff.domain import Proposal, utcnow
from signoff.errors import ChangedInOdoo, ExecutionError, OdooConnectionError, OdooError, OdooInternalError
from signoff.guardrails.actions import field_reader, get_action
from signoff.guardrails.audit import AuditLog
from signoff.guardrails.owner import owner_gone, process_owner
from signoff.guardrails.store import ApprovalStore
from signoff.integrations.odoo import OdooWriterPort

log = logging.getLogger(__name__)
ACTOR = "system:executor"
RETRYABLE = (OdooConnectionError, OdooInternalError)


def _shown(value: object) -> str:
    return "(empty)" if value is None else repr(value)


class Executor:
    def __init__(
        self,
        store: ApprovalStore,
        audit: AuditLog,
        writer_factory: Callable[[], OdooWriterPort],
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.5,
        stale_after: float = 60.0,
        fault: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store, self.audit = store, audit
        self._writer_factory = writer_factory
        self._writer: OdooWriterPort | None = None
        self.max_attempts, self.backoff, self.stale_after = max_attempts, backoff_seconds, stale_after
        self.fault, self.sleep = fault, sleep

    @property
    def writer(self) -> OdooWriterPort:
        if self._writer is None:
            self._writer = self._writer_factory()
        return self._writer

    def _crash(self, point: str) -> None:
        """Test hook (``SIGNOFF_FAULT_INJECTION``): die like ``kill -9`` at a named point."""
        if self.fault == point:
            os._exit(137)

    def _claim(self, proposal: Proposal) -> tuple[Proposal | None, bool]:
        """Take the proposal for execution. Returns (claimed proposal or None, whether it is a recovery)."""
        if proposal.state == "approved":
            claimed = self.store.transition(proposal.id, ("approved",), state="executing",
                                            attempts=proposal.attempts + 1, executing_since=utcnow(),
                                            executing_owner=process_owner())
            return claimed, False
        if proposal.state == "executing":
            if not self._interrupted(proposal):
                return None, False  # another worker is on it right now
            claimed = self.store.transition(proposal.id, ("executing",), expect={"attempts": proposal.attempts},
                                            executing_since=utcnow(), attempts=proposal.attempts + 1,
                                            executing_owner=process_owner())
            return claimed, True
        return None, False

    def execute(self, proposal_id: str, *, over_changes: bool = False) -> Proposal:
        """Apply an approved proposal once; return it in its resulting state. ``over_changes``: write even if
        the field changed in Odoo since the proposal (a human's retry from the exception queue)."""
        proposal = self.store.get(proposal_id)
        if proposal.state == "executed":
            return proposal
        if proposal.state in ("pending", "proposed", "edited"):
            raise ExecutionError(f"proposal {proposal_id} is {proposal.state}, not approved: nothing written")
        claimed, recovering = self._claim(proposal)
        if claimed is None:
            return self.store.get(proposal_id)
        action = get_action(claimed.action)
        args = claimed.effective_args
        thread = claimed.thread_id

        if recovering or claimed.attempts > 1:  # a crash, or a retry from the exception queue: read Odoo first
            if self._landed(claimed):
                return self._done(claimed, {"reconciled": True, "model": claimed.target_model,
                                            "id": claimed.target_id, "args": args})
            self.audit.append("execution.reconciling", proposal_id, ACTOR,
                              {"attempt": claimed.attempts, "found": "not written"}, thread_id=thread)

        attempt = claimed.attempts
        check_unchanged = not over_changes
        while True:
            self.audit.append("execution.intent", proposal_id, ACTOR,
                              {"attempt": attempt, "action": claimed.action, "target": claimed.target_id,
                               "args": args}, thread_id=thread)
            # Still ours? Renew the claim (compare-and-set on the attempt) right before the write: a worker
            # that stalled (a database restart, a paused VM) past the stale bound and was taken over by a
            # recovery must not write too; and a renewed claim cannot look stale while this write is in flight
            # (it lasts at most the Odoo timeout, which the stale bound must exceed).
            renewed = self.store.transition(proposal_id, ("executing",), expect={"attempts": attempt},
                                            executing_since=utcnow())
            if renewed is None:
                now = self.store.get(proposal_id)
                self.audit.append("execution.superseded", proposal_id, ACTOR,
                                  {"attempt": attempt, "now": {"state": now.state, "attempt": now.attempts}},
                                  thread_id=thread)
                log.warning("execution of %s (attempt %d) was taken over (%s, attempt %d): not writing",
                            proposal_id, attempt, now.state, now.attempts)
                return now
            try:
                if check_unchanged:
                    check_unchanged = False
                    if self._check_unchanged(claimed):  # someone set it to the proposed value already
                        return self._done(claimed, {"already": True, "model": claimed.target_model,
                                                    "id": claimed.target_id, "args": args})
                self._crash("before_write")
                result = action.apply(self.writer, claimed.target_id, args, marker_id=claimed.id)
                self._crash("after_write")
                if not action.is_applied(self.writer, claimed.target_id, args, marker_id=claimed.id):
                    raise ExecutionError("read-back after the write does not show the new value")
                return self._done(claimed, result)
            except RETRYABLE as exc:
                if attempt >= self.max_attempts:
                    return self._fail(claimed, exc, attempt)
                self.audit.append("execution.retry", proposal_id, ACTOR,
                                  {"attempt": attempt, "error": str(exc)}, thread_id=thread)
                self.sleep(self.backoff * 2 ** (attempt - 1))
                attempt += 1
                bumped = self.store.transition(proposal_id, ("executing",), expect={"attempts": attempt - 1},
                                               attempts=attempt, executing_since=utcnow(), error=str(exc))
                if bumped is None:
                    return self.store.get(proposal_id)
                # A timeout can come after Odoo applied the write: read back before writing again.
                if self._landed(claimed):
                    return self._done(claimed, {"reconciled": True, "model": claimed.target_model,
                                                "id": claimed.target_id, "args": args})
            except (OdooError, ExecutionError) as exc:
                return self._fail(claimed, exc, attempt)

    def _check_unchanged(self, proposal: Proposal) -> bool:
        """ChangedInOdoo when the field no longer holds the value the approver saw as current; True when it
        already holds the proposed one (nothing to write)."""
        for field, allowed in proposal.requires.items():  # what the write was chosen for still holds?
            reader_of = field_reader(proposal.target_model, field)
            held = reader_of(self.writer, proposal.target_id) if reader_of else None
            if reader_of is not None and held not in allowed and not self._edited_before(proposal, field, held):
                raise ChangedInOdoo(
                    f"{proposal.target_model} {proposal.target_id}: this write was chosen for {field} "
                    f"{' or '.join(_shown(a) for a in allowed)}, and the {field} is "
                    f"now {_shown(held)} (changed in Odoo or by an edit); not written. Retry it to write it anyway "
                    f"(signoff approvals retry), or cancel it")
        read_now = getattr(get_action(proposal.action), "current", None)
        if read_now is None or not proposal.current:
            return False  # a create (an activity): nothing was shown as current
        arg, then = next(iter(proposal.current.items()))
        now = read_now(self.writer, proposal.target_id)
        if now == proposal.effective_args.get(arg):
            return True
        if now != then:
            raise ChangedInOdoo(
                f"{proposal.target_model} {proposal.target_id}: {arg} changed in Odoo since the proposal "
                f"(it was {_shown(then)}, it is now {_shown(now)}); not written. "
                f"Retry it to write over the change (signoff approvals retry), or cancel it")
        return False

    def _edited_before(self, proposal: Proposal, field: str, value: object) -> bool:
        """Whether ``field`` holds ``value`` because an approver edited a sibling proposal of this run to it
        before this one was decided: whoever approved this one saw that edit."""
        for sibling in self.store.find(thread_id=proposal.thread_id):
            if (sibling.id != proposal.id and sibling.edited_args is not None
                    and sibling.target_id == proposal.target_id and sibling.edited_args.get(field) == value
                    and sibling.decided_at is not None and proposal.decided_at is not None
                    and sibling.decided_at <= proposal.decided_at):
                return True
        return False

    def _landed(self, proposal: Proposal) -> bool:
        """Whether Odoo already shows the proposal applied (False when Odoo cannot be read)."""
        try:
            return get_action(proposal.action).is_applied(self.writer, proposal.target_id, proposal.effective_args,
                                                          marker_id=proposal.id)
        except OdooError as exc:
            log.warning("reconcile read of %s failed: %s", proposal.id, exc)
            return False

    def _done(self, proposal: Proposal, result: dict[str, object]) -> Proposal:
        done = self.store.transition(proposal.id, ("executing",), state="executed", result=result, error=None)
        if done is None:
            return self.store.get(proposal.id)
        self.audit.append("execution.succeeded", proposal.id, ACTOR, {"result": result},
                          thread_id=proposal.thread_id)
        return done

    def _fail(self, proposal: Proposal, exc: Exception, attempt: int) -> Proposal:
        error = f"{type(exc).__name__}: {exc}"
        failed = self.store.transition(proposal.id, ("executing",), state="failed", error=error)
        self.audit.append("execution.failed", proposal.id, ACTOR, {"attempt": attempt, "error": error},
                          thread_id=proposal.thread_id)
        log.error("execution of %s failed after %d attempt(s): %s", proposal.id, attempt, error)
        return failed or self.store.get(proposal.id)

    def _interrupted(self, proposal: Proposal) -> bool:
        """An ``executing`` proposal nobody is working on: older than the bound, or its process is gone (on
        this host: :func:`owner_gone`)."""
        since = proposal.executing_since or proposal.created_at
        return utcnow() - since >= timedelta(seconds=self.stale_after) or owner_gone(proposal.executing_owner)

    def stale(self) -> list[Proposal]:
        """Executions interrupted by a crash (``executing`` for longer than the bound, or by a dead process)."""
        return [p for p in self.store.find(states=("executing",)) if self._interrupted(p)]

    def retry(self, proposal_id: str, actor: str, *, over_changes: bool = True, reason: str | None = None) -> Proposal:
        """Put a failed proposal back for another execution (from the exception queue). A person's retry
        writes over a change made in Odoo since the proposal; the sweep's (``over_changes=False``) does not."""
        back = self.store.transition(proposal_id, ("failed",), state="approved", error=None)
        if back is None:
            raise ExecutionError(f"proposal {proposal_id} is not in the exception queue")
        self.audit.append("execution.requeued", proposal_id, actor, {"reason": reason} if reason else {},
                          thread_id=back.thread_id)
        return self.execute(proposal_id, over_changes=over_changes)

    def outage_failures(self, *, rounds: int) -> list[Proposal]:
        """Failed proposals whose last error was Odoo being unreachable, with fewer than ``rounds`` rounds of
        ``max_attempts`` behind them: the sweep requeues them once Odoo answers again."""
        return [p for p in self.store.find(states=("failed",))
                if (p.error or "").startswith("OdooConnectionError") and p.attempts < rounds * self.max_attempts]

    def cancel(self, proposal_id: str, actor: str, reason: str) -> Proposal:
        """Give up on a failed proposal: it will never be written."""
        done = self.store.transition(proposal_id, ("failed",), state="cancelled", decision_reason=reason)
        if done is None:
            raise ExecutionError(f"proposal {proposal_id} is not in the exception queue")
        self.audit.append("proposal.cancelled", proposal_id, actor, {"reason": reason}, thread_id=done.thread_id)
        return done
