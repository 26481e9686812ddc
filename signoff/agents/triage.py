"""The triage agent: load -> screen -> classify -> decide -> gate -> execute -> audit (a LangGraph graph).

The agent reads through the read-only Odoo view and proposes; the gate node pauses the run with
``interrupt()`` until every proposal is decided (the run sleeps in the checkpointer meanwhile); the
execute node hands approved proposals to the executor, the only writer. Services reach nodes through
one typed context object (:class:`TriageServices`), never globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol, TypedDict

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime

from signoff.agents.approval_steps import approval_graph, await_decisions, execute_approved
from signoff.config import Settings
from signoff.domain import (
    PRIORITY_NAMES,
    Customer,
    Prediction,
    PriorityCode,
    Proposal,
    ScreenResult,
    Ticket,
    Triage,
    proposal_id,
    utcnow,
)
from signoff.guardrails.audit import AuditLog
from signoff.guardrails.executor import Executor
from signoff.guardrails.policy import Policy, PriorityRules, parse_duration
from signoff.guardrails.screens import redact, screen
from signoff.guardrails.store import ApprovalStore
from signoff.integrations.odoo import OdooReader
from signoff.tools.tickets import load_ticket

AGENT = "agent:triage"
DECIDED = ("approved", "executing", "executed", "rejected", "expired", "cancelled", "failed")


class Classifier(Protocol):
    """What the triage agent needs of a model (the embedded one or an LLM backend)."""

    @property
    def version(self) -> str: ...

    def predict(self, texts: list[str]) -> list[Prediction]: ...


@dataclass
class TriageServices:
    settings: Settings
    reader: OdooReader | None
    """None when tickets come from a file: nothing can be proposed for them."""
    classifier: Classifier
    policy: Policy
    store: ApprovalStore
    audit: AuditLog
    executor: Executor
    db: str = "file"


class TriageState(TypedDict, total=False):
    ticket_id: int
    ticket: dict[str, Any]
    screen: dict[str, Any]
    prediction: dict[str, Any]
    triage: dict[str, Any]
    proposal_ids: list[str]
    decisions: dict[str, str]
    executed: dict[str, str]


def decide_priority(
    text: str, category: str | None, customer: Customer | None, rules: PriorityRules
) -> tuple[PriorityCode, str]:
    """The highest priority any explicit rule gives, and the rule that fired."""
    best: PriorityCode = rules.default
    reason = f"default priority {PRIORITY_NAMES[rules.default]}"
    candidates: list[tuple[PriorityCode, str]] = []
    if customer and customer.tier and customer.tier in rules.tiers:
        candidates.append((rules.tiers[customer.tier], f"customer tier {customer.tier}"))
    if category and category in rules.categories:
        candidates.append((rules.categories[category], f"category severity: {category}"))
    lowered = text.lower()
    for cue, level in rules.urgency_cues.items():
        if cue.lower() in lowered:
            candidates.append((level, f"urgency cue {cue!r} in the ticket"))
    if customer and customer.overdue_invoices and rules.overdue_invoices:
        candidates.append((rules.overdue_invoices, f"{customer.overdue_invoices} overdue invoice(s)"))
    lowering = [c for c in candidates if c[0] < rules.default]
    raising = [c for c in candidates if c[0] > rules.default]
    if raising:
        best, reason = max(raising, key=lambda c: c[0])
    elif lowering:
        best, reason = min(lowering, key=lambda c: c[0])
    return best, reason


# --- nodes ---------------------------------------------------------------------------------------


def load(state: TriageState, runtime: Runtime[TriageServices]) -> TriageState:
    svc = runtime.context
    if "ticket" in state:
        ticket = Ticket.model_validate(state["ticket"])
    else:
        if svc.reader is None:
            raise ValueError("a ticket id needs an Odoo reader")
        ticket = load_ticket(svc.reader, state["ticket_id"], db=svc.db)
    svc.audit.append("ticket.loaded", ticket.thread_id, AGENT,
                     {"ticket": ticket.id, "customer": ticket.customer.id if ticket.customer else None,
                      "tier": ticket.customer.tier if ticket.customer else None},
                     thread_id=ticket.thread_id)
    # Screen before the state is written: the checkpointer persists every state, and the raw text
    # (cards, emails, phones...) must never land there, nor reach a model.
    result = screen(ticket.text, max_chars=svc.settings.max_ticket_chars)
    ticket = ticket.model_copy(update={"subject": redact(ticket.subject)[0], "description": result.text})
    return {"ticket": ticket.model_dump(mode="json"), "screen": result.model_dump()}


def screen_node(state: TriageState, runtime: Runtime[TriageServices]) -> TriageState:
    """Record what the screen found (it ran in ``load``, before anything was persisted)."""
    svc = runtime.context
    ticket = Ticket.model_validate(state["ticket"])
    result = ScreenResult.model_validate(state["screen"])
    svc.audit.append("ticket.screened", ticket.thread_id, AGENT,
                     {"redactions": result.redactions, "injection": result.injection,
                      "truncated": result.truncated}, thread_id=ticket.thread_id)
    return {}


def classify(state: TriageState, runtime: Runtime[TriageServices]) -> TriageState:
    svc = runtime.context
    ticket = Ticket.model_validate(state["ticket"])
    screened = ScreenResult.model_validate(state["screen"])
    prediction = svc.classifier.predict([screened.text])[0]
    event: dict[str, Any] = {"category": prediction.label, "confidence": round(prediction.confidence, 4),
                             "alternatives": prediction.alternatives, "model": prediction.model_version}
    if prediction.usage is not None:  # LLM backend: tokens, cost, prompt hash, and its rationale
        event |= {"usage": prediction.usage, "rationale": prediction.rationale}
    svc.audit.append("ticket.classified", ticket.thread_id, AGENT, event, thread_id=ticket.thread_id)
    return {"prediction": prediction.model_dump()}


def _proposal(svc: TriageServices, ticket: Ticket, action: str, args: dict[str, Any], current: Any,
              confidence: float | None, rationale: str, evidence: list[dict[str, Any]],
              model_version: str, requires: dict[str, list[Any]] | None = None) -> Proposal:
    rule = svc.policy.action(action)
    expires = parse_duration(rule.expires)
    return Proposal(
        id=proposal_id(ticket.thread_id, action, "helpdesk.ticket", ticket.id, args),
        thread_id=ticket.thread_id, action=action, target_model="helpdesk.ticket", target_id=ticket.id,
        args=args, current={next(iter(args)): current}, requires=requires or {}, rationale=rationale,
        confidence=confidence,
        evidence=evidence, approver_group=rule.approver_group(), channel=rule.channel,
        requested_by=AGENT, expires_at=utcnow() + expires if expires else utcnow() + timedelta(days=7),
        policy_version=svc.policy.label, model_version=model_version,
    )


def _threshold(min_confidence: float | None) -> float:
    """A model-gated action with no threshold in the policy never passes (fail closed)."""
    return 1.0 + 1e-9 if min_confidence is None else min_confidence


def confident_enough(confidence: float, min_confidence: float | None) -> bool:
    """The decide step's gate: propose at or above the action's threshold, else a human triages.
    The eval runner (``signoff eval``) calls this very function, so its coverage is the graph's."""
    return confidence >= _threshold(min_confidence)


def decide(state: TriageState, runtime: Runtime[TriageServices]) -> TriageState:
    """Policy thresholds per field and action: above, a proposal; below, a human with the reason."""
    svc = runtime.context
    policy = svc.policy
    ticket = Ticket.model_validate(state["ticket"])
    screened = ScreenResult.model_validate(state["screen"])
    prediction = Prediction.model_validate(state["prediction"])
    reasons: list[str] = []
    if screened.injection:
        reasons.append("possible prompt injection in the ticket (nothing proposed, a human triages it): "
                       + "; ".join(screened.injection[:3]))

    category_rule = policy.action("ticket.set_category")
    category_threshold = category_rule.min_confidence_for(prediction.label)  # per class, else the action's
    confident = confident_enough(prediction.confidence, category_threshold)
    team, team_reason = policy.routing.team_for(prediction.label)
    # Text that addresses the AI is untrusted: its urgency words must not raise the priority.
    priority, priority_reason = decide_priority(
        "" if screened.injection else screened.text, prediction.label if confident else None,
        ticket.customer, policy.priority,
    )
    if screened.injection:
        priority_reason += " (urgency cues ignored: the ticket contains instructions to the AI)"
    evidence = [n.model_dump() for n in prediction.neighbours]
    alternatives = ", ".join(f"{label} {p:.2f}" for label, p in prediction.alternatives[:3])
    best = f"{prediction.label} {prediction.confidence:.2f}"
    why = f"classified {prediction.label!r} at {prediction.confidence:.2f} (runners-up: {alternatives or 'none'})"
    if screened.injection:
        why += "; WARNING: the ticket contains text addressed to the AI, it was ignored"

    wanted: list[Proposal] = []
    unknown = confident and ticket.db != "file" and svc.reader is not None and not svc.reader.search_count(
        "helpdesk.ticket.category", [["name", "=", prediction.label]])
    if unknown:  # a label Odoo has no category for: nothing to write, and no team to route from it
        confident = False
        reasons.append(f"the model's category {prediction.label!r} is not a helpdesk.ticket.category in Odoo: "
                       "nothing proposed (retrain on Odoo's categories: signoff train); left to human triage")
    elif not confident:
        reasons.append(f"category confidence {prediction.confidence:.2f} is below "
                       f"{_threshold(category_threshold):.2f} for ticket.set_category: left to human triage "
                       f"(best guesses: {best}, {alternatives or 'none'}; "
                       f"suggested priority {PRIORITY_NAMES[priority]}: {priority_reason})")
    else:
        if prediction.label != ticket.category:
            wanted.append(_proposal(svc, ticket, "ticket.set_category", {"category": prediction.label},
                                    ticket.category, prediction.confidence, why, evidence,
                                    prediction.model_version))
        team_rule = policy.action("ticket.set_team")
        if team != ticket.team and confident_enough(prediction.confidence,
                                                    team_rule.min_confidence_for(prediction.label)):
            # The team follows from the category: it is written only while the ticket has that category (or
            # still the one it had), never beside a category a person set otherwise in Odoo or in an edit.
            basis = list(dict.fromkeys([ticket.category, prediction.label]))
            wanted.append(_proposal(svc, ticket, "ticket.set_team", {"team": team}, ticket.team,
                                    prediction.confidence, f"{team_reason}; {why}", evidence,
                                    prediction.model_version, requires={"category": basis}))
    if priority != ticket.priority and confident:
        wanted.append(_proposal(svc, ticket, "ticket.set_priority", {"priority": priority}, ticket.priority,
                                None, f"priority {PRIORITY_NAMES[priority]}: {priority_reason}", [],
                                prediction.model_version))
    if screened.injection:
        wanted = []  # the text tries to steer the agent: a human triages it, nothing is proposed
    if ticket.db == "file":
        wanted = []  # no Odoo record to write to: a report only

    ids: list[str] = []
    for proposal in wanted:
        stored, new = svc.store.add(proposal)
        ids.append(stored.id)
        if new:
            svc.audit.append("proposal.created", stored.id, AGENT,
                             {"action": stored.action, "target": stored.target_id, "args": stored.args,
                              "current": stored.current, "confidence": stored.confidence,
                              "approvers": stored.approver_group, "policy": policy.label,
                              "model": stored.model_version}, thread_id=ticket.thread_id)
    if not wanted and not reasons and ticket.db != "file":
        reasons.append(f"nothing to change: the ticket already has category {ticket.category}, "
                       f"team {ticket.team}, priority {PRIORITY_NAMES.get(ticket.priority, ticket.priority)}")
    outcome: Literal["proposed", "needs_human", "skipped", "report"] = (
        "report" if ticket.db == "file" else "proposed" if ids
        else "skipped" if reasons and reasons[0].startswith("nothing to change") else "needs_human"
    )
    triage = Triage(
        ticket_id=ticket.id, thread_id=ticket.thread_id, category=prediction, team=team, team_reason=team_reason,
        priority=priority, priority_reason=priority_reason, screen=screened, outcome=outcome, reasons=reasons,
        proposal_ids=ids,
    )
    svc.audit.append("triage.decided", ticket.thread_id, AGENT,
                     {"outcome": outcome, "reasons": reasons, "proposals": ids, "policy": policy.label,
                      "model": prediction.model_version}, thread_id=ticket.thread_id)
    if outcome == "needs_human":
        svc.audit.append("run.needs_human", ticket.thread_id, AGENT, {"reasons": reasons},
                         thread_id=ticket.thread_id)
    return {"triage": triage.model_dump(mode="json"), "proposal_ids": ids}


def gate(state: TriageState, runtime: Runtime[TriageServices]) -> TriageState:
    """Pause until every proposal of this run is decided (the run sleeps in the checkpointer)."""
    ids = state.get("proposal_ids", [])
    return {"decisions": await_decisions(runtime.context.store, ids, state["triage"]["thread_id"])}


def execute(state: TriageState, runtime: Runtime[TriageServices]) -> TriageState:
    svc = runtime.context
    return {"executed": execute_approved(svc.store, svc.executor, state.get("proposal_ids", []))}


def finish(state: TriageState, runtime: Runtime[TriageServices]) -> TriageState:
    svc = runtime.context
    thread = state["triage"]["thread_id"]
    svc.audit.append("triage.completed", thread, AGENT,
                     {"outcome": state["triage"]["outcome"], "results": state.get("executed", {})},
                     thread_id=thread)
    return {}


def build_graph() -> StateGraph[TriageState, TriageServices, TriageState, TriageState]:
    steps = [("load", load), ("screen", screen_node), ("classify", classify), ("decide", decide)]
    return approval_graph(TriageState, TriageServices, steps, gate=gate, execute=execute, finish=finish)
