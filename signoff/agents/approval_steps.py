"""The two steps every agent graph shares after it has proposed: wait for the humans, then execute.

``await_decisions`` is the gate: it pauses the run with ``interrupt()`` while any of its proposals is
pending. LangGraph re-runs a node from its start on resume, so it has no side effect before the
interrupt. ``execute_approved`` hands approved proposals to the executor, the only writer, which
makes a second call (a re-run, a recovery) a no-op for what is already executed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from signoff.domain import Proposal
from signoff.guardrails.executor import Executor
from signoff.guardrails.store import ApprovalStore

TO_EXECUTE = ("approved", "executing", "executed")
#: States of a proposal whose write may still be owed: decided, not yet written (or interrupted mid-write).
UNFINISHED = ("approved", "executing")


def await_decisions(store: ApprovalStore, proposal_ids: list[str], thread_id: str) -> dict[str, str]:
    """Pause until none of the run's proposals is pending; their states afterwards."""
    proposals = [store.get(pid) for pid in proposal_ids]
    if any(p.state == "pending" for p in proposals):
        interrupt({"thread_id": thread_id, "proposals": proposal_ids})
        proposals = [store.get(pid) for pid in proposal_ids]
    return {p.id: p.state for p in proposals}


def execute_approved(store: ApprovalStore, executor: Executor | None, proposal_ids: list[str]) -> dict[str, str]:
    """Execute the approved proposals (exactly once, by the executor); every proposal's resulting state."""
    states: dict[str, str] = {}
    for pid in proposal_ids:
        proposal = store.get(pid)
        if proposal.state in TO_EXECUTE:
            if executor is None:
                raise ValueError("no executor: a report-only run cannot execute proposals")
            proposal = executor.execute(pid)
        states[pid] = proposal.state
    return states


def finish_writes(status: Callable[[str], tuple[dict[str, Any], bool, bool]], store: ApprovalStore,
                  executor: Executor | None, thread_id: str) -> list[Proposal]:
    """Hand a run's proposals still ``approved`` or ``executing`` to the executor once the run has ended.

    A kill -9 can end a run's bookkeeping before its write, and a run whose execute step met another
    process's live claim ends with that proposal still ``executing``. Only the executor writes: it takes an
    ``executing`` proposal only once its claim is older than the stale bound, and reads Odoo back before
    writing again. A paused or stopped run is left to its resume (its execute step does this). Returns the
    proposals handed over, in their resulting states (still ``executing`` while the claim is live).
    """
    left = store.find(thread_id=thread_id, states=UNFINISHED)
    if not left or executor is None:
        return []
    _values, paused, stopped = status(thread_id)
    if paused or stopped:
        return []
    return [executor.execute(p.id) for p in left]


def _after_decide(state: dict[str, Any]) -> str:
    return "gate" if state.get("proposal_ids") else "finish"


def approval_graph(state: type[Any], context: type[Any], steps: Sequence[tuple[str, Callable[..., Any]]], *,
                   gate: Callable[..., Any], execute: Callable[..., Any], finish: Callable[..., Any]
                   ) -> StateGraph[Any, Any, Any, Any]:
    """An agent's graph: its own ``steps`` in a line (the last one decides and proposes), then, when it
    proposed anything, gate -> execute; always finish."""
    graph: StateGraph[Any, Any, Any, Any] = StateGraph(state, context_schema=context)
    previous = START
    for name, fn in steps:
        graph.add_node(name, fn)
        graph.add_edge(previous, name)
        previous = name
    graph.add_node("gate", gate)
    graph.add_node("execute", execute)
    graph.add_node("finish", finish)
    graph.add_conditional_edges(previous, _after_decide, ["gate", "finish"])
    graph.add_edge("gate", "execute")
    graph.add_edge("execute", "finish")
    graph.add_edge("finish", END)
    return graph
