"""Runs the triage graph over tickets, one durable thread per ticket, and resumes paused runs.

A run's thread id comes from the ticket (``ticket:<db>:<id>``), so a second event for a ticket that
already has a run starts nothing. A decision made in another process, hours later, resumes the
paused run from the checkpointer (:meth:`TriageRunner.resume_if_ready`); :meth:`TriageRunner.recover`
finishes runs a crash left behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from signoff.agents.approval_steps import UNFINISHED, finish_writes
from signoff.agents.triage import TriageServices, TriageState, build_graph
from signoff.domain import Proposal, Ticket, Triage
from signoff.errors import SignoffError
from signoff.guardrails.store import ApprovalStore

log = logging.getLogger(__name__)
RunStatus = Literal["paused", "done", "duplicate", "failed"]
#: A run that started but wrote no checkpoint for this long is presumed dead and may be started again.
CLAIM_SECONDS = 300.0
#: Checkpoints are written before the next step starts, so a kill -9 never loses a finished step.
DURABILITY: Literal["sync"] = "sync"


@contextmanager
def held_run(store: ApprovalStore, thread_id: str, *, wait: float = 10.0) -> Iterator[bool]:
    """Hold the run's claim across processes for the block (the one a first run holds), waiting up to ``wait``
    s while another process holds it; yields False, holding nothing, if it is still held then. A killed
    holder's claim goes stale after :data:`CLAIM_SECONDS`. Resumes hold it, so a run is never resumed by two
    processes (a CLI decision and a server sweep) at once."""
    deadline = time.monotonic() + wait
    while not store.claim(thread_id, stale_after=CLAIM_SECONDS):
        if time.monotonic() > deadline:
            log.info("run %s is held by another process", thread_id)
            yield False
            return
        time.sleep(0.05)
    try:
        yield True
    finally:
        store.release(thread_id)


@dataclass
class RunResult:
    thread_id: str
    status: RunStatus
    triage: Triage | None = None
    error: str | None = None


class TriageRunner:
    def __init__(self, services: TriageServices, checkpointer: BaseCheckpointSaver[Any]) -> None:
        self.services = services
        self.graph = build_graph().compile(checkpointer=checkpointer)
        self._report_graph = build_graph().compile()

    @staticmethod
    def _config(thread_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id}}

    def thread_for(self, ticket: int | Ticket) -> str:
        if isinstance(ticket, Ticket):
            return ticket.thread_id
        return f"ticket:{self.services.db}:{ticket}"

    def _result(self, thread_id: str, values: dict[str, Any], paused: bool) -> RunResult:
        triage = Triage.model_validate(values["triage"]) if values.get("triage") else None
        return RunResult(thread_id, "paused" if paused else "done", triage)

    def status(self, thread_id: str) -> tuple[dict[str, Any], bool, bool]:
        """(values, paused at the gate, stopped mid-way by an error or a crash)."""
        snapshot = self.graph.get_state(self._config(thread_id))
        paused = any(task.interrupts for task in snapshot.tasks)
        return dict(snapshot.values or {}), paused, bool(snapshot.next) and not paused

    def run(self, ticket: int | Ticket) -> RunResult:
        """Triage one ticket, unless it already has a run (then: ``duplicate``, nothing done)."""
        thread_id = self.thread_for(ticket)
        config = self._config(thread_id)
        store = self.services.store
        values, paused, stopped = self.status(thread_id)
        if values and not stopped:
            result = self._result(thread_id, values, paused)
            result.status = "duplicate"
            return result
        # A run in progress elsewhere looks "stopped" between its checkpoints: the claim tells them apart.
        # It is held while the run works and given back after; a killed run's claim goes stale.
        if not store.claim(thread_id, stale_after=CLAIM_SECONDS):
            return RunResult(thread_id, "duplicate", error="a run of this ticket is in progress elsewhere")
        try:
            values, paused, stopped = self.status(thread_id)
            if values and not stopped:
                result = self._result(thread_id, values, paused)
                result.status = "duplicate"
                return result
            if stopped:
                log.info("finishing interrupted run %s", thread_id)
                out = self.graph.invoke(None, config, context=self.services, durability=DURABILITY)
            else:
                state: TriageState = (
                    {"ticket": ticket.model_dump(mode="json")} if isinstance(ticket, Ticket)
                    else {"ticket_id": ticket}
                )
                out = self.graph.invoke(state, config, context=self.services, durability=DURABILITY)
        except SignoffError as exc:
            self.services.audit.append("run.failed", thread_id, "agent:triage",
                                       {"error": f"{type(exc).__name__}: {exc}"}, thread_id=thread_id)
            return RunResult(thread_id, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            store.release(thread_id)
        return self._result(thread_id, out, "__interrupt__" in out)

    def report(self, ticket: Ticket) -> RunResult:
        """Classify a ticket that has no Odoo record (from a file): nothing proposed, nothing checkpointed."""
        try:
            out = self._report_graph.invoke({"ticket": ticket.model_dump(mode="json")}, context=self.services)
        except SignoffError as exc:
            return RunResult(ticket.thread_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return self._result(ticket.thread_id, out, False)

    def resume_if_ready(self, thread_id: str, *, actor: str = "system") -> RunResult | None:
        """Resume a paused run once none of its proposals is pending; None if not ready or not paused."""
        if any(p.state == "pending" for p in self.services.store.find(thread_id=thread_id)):
            return None
        values, paused, stopped = self.status(thread_id)
        if not (paused or stopped):
            return None
        self.services.audit.append("run.resumed", thread_id, actor, {}, thread_id=thread_id)
        config = self._config(thread_id)
        command: Command[Any] | None = Command(resume={"by": actor}) if paused else None
        out = self.graph.invoke(command, config, context=self.services, durability=DURABILITY)
        return self._result(thread_id, out, "__interrupt__" in out)

    def recover(self) -> list[RunResult]:
        """Finish runs left behind: decided but never resumed, or killed between approval and write.

        Paused or stopped runs are resumed. Then any proposal still ``approved`` or ``executing`` whose
        run has ended (a kill -9 can end a run's bookkeeping before its write) goes to the executor,
        which reconciles an interrupted write by reading Odoo back once it is older than the stale bound.
        """
        store = self.services.store
        mine = [p for p in store.find() if p.thread_id.startswith("ticket:")]  # other agents recover their own
        threads = sorted({p.thread_id for p in mine if p.state != "pending"})
        results = []
        for thread_id in threads:
            result = self.resume_if_ready(thread_id, actor="system:recovery")
            if result is not None:
                results.append(result)
        for thread_id in sorted({p.thread_id for p in mine if p.state in UNFINISHED}):
            self.finish_writes(thread_id)
        return results

    def finish_writes(self, thread_id: str) -> list[Proposal]:
        """The run's writes still owed once it has ended, to the executor (:func:`finish_writes`)."""
        return finish_writes(self.status, self.services.store, self.services.executor, thread_id)

    def waiting_on_stale(self) -> list[str]:
        """Executions interrupted less than the stale bound ago: recover again after it."""
        stale = {p.id for p in self.services.executor.stale()}
        return [p.id for p in self.services.store.find(states=("executing",)) if p.id not in stale]
