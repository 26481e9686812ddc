"""Pydantic models every layer shares."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Odoo's record ids are PostgreSQL ``integer`` columns (and XML-RPC ints are 32-bit): an id is below this.
ODOO_ID_LIMIT = 2**31


def check_odoo_id(value: int, what: str = "record") -> int:
    """``value`` as an Odoo record id: a positive integer below 2**31, else ValueError naming ``what``.

    The one check every way in shares (the CLI, ``POST /runs``, inbound webhooks)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < ODOO_ID_LIMIT:
        raise ValueError(f"no {what} {value}: a {what} id is a positive integer below 2**31")
    return value


def canonical_json(value: Any) -> str:
    """Stable JSON: sorted keys, no spaces, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# --- tickets -------------------------------------------------------------------------------------

PriorityCode = Literal["0", "1", "2", "3"]
PRIORITY_NAMES: dict[str, str] = {"0": "low", "1": "medium", "2": "high", "3": "urgent"}


class Customer(BaseModel):
    """The ticket's customer as the read tools see it (from res.partner and their subscription)."""

    id: int
    name: str
    tier: str | None = None
    """Subscription plan tier (e.g. ``enterprise``), ``None`` when no running subscription."""
    recurring_monthly: float | None = None
    overdue_invoices: int = 0


class Ticket(BaseModel):
    """A support ticket, as read from Odoo or a JSONL file."""

    id: int
    db: str = "file"
    subject: str
    description: str = ""
    partner_id: int | None = None
    category: str | None = None
    team: str | None = None
    priority: PriorityCode = "1"
    customer: Customer | None = None

    @property
    def thread_id(self) -> str:
        """One run per ticket: a second event for the same ticket maps to the same thread."""
        return f"ticket:{self.db}:{self.id}"

    @property
    def text(self) -> str:
        """Subject and body, without repeating a subject that is the body's first words."""
        if self.description.startswith(self.subject.rstrip(".… ")):
            return self.description.strip()
        return f"{self.subject}\n{self.description}".strip()


class Neighbour(BaseModel):
    """A labelled example near the input: evidence for a prediction."""

    text: str
    label: str
    similarity: float


class Prediction(BaseModel):
    """A classifier's answer: label, calibrated confidence, runners-up and evidence."""

    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    alternatives: list[tuple[str, float]] = Field(default_factory=list)
    neighbours: list[Neighbour] = Field(default_factory=list)
    model_version: str
    rationale: str | None = None
    """The model's own reason (LLM backend); None for the embedded model, whose evidence is ``neighbours``."""
    usage: dict[str, Any] | None = None
    """LLM backend: calls, tokens (cached input apart), cost, latency, prompt ref and sha256; None if embedded."""


class ScreenResult(BaseModel):
    """What the screen did to untrusted text before any model saw it."""

    text: str
    """Redacted, size-bounded text: the only text a model may see."""
    redactions: dict[str, int] = Field(default_factory=dict)
    """Kind of PII -> how many were redacted."""
    injection: list[str] = Field(default_factory=list)
    """Phrases that look like instructions to the AI."""
    truncated: bool = False


class Triage(BaseModel):
    """The triage agent's conclusion about one ticket."""

    ticket_id: int
    thread_id: str
    category: Prediction
    team: str
    team_reason: str
    priority: PriorityCode
    priority_reason: str
    screen: ScreenResult
    outcome: Literal["proposed", "needs_human", "skipped", "report"] = "proposed"
    """``report``: a ticket from a file, classified only (it has no Odoo record to write to)."""
    reasons: list[str] = Field(default_factory=list)
    """Why fields went to a human instead of a proposal."""
    proposal_ids: list[str] = Field(default_factory=list)


# --- accounts (renewal risk) ---------------------------------------------------------------------


class RiskDriver(BaseModel):
    """One feature's part in an account's churn probability."""

    feature: str
    label: str
    value: float | str | None
    contribution: float
    """Log-odds the feature adds to the churn logit (exactly 0 for a missing feature the model never learnt)."""
    delta: float
    """Calibrated probability minus the probability without this feature's contribution."""
    missing: bool = False
    text: str = ""
    """The driver in words."""


class RiskScore(BaseModel):
    """The renewal agent's conclusion about one account."""

    partner_id: int
    thread_id: str
    name: str
    probability: float = Field(ge=0.0, le=1.0)
    """Calibrated probability of churn."""
    interval: tuple[float, float]
    """90 % interval of the probability (coefficient uncertainty)."""
    band: str
    """``low`` / ``medium`` / ``high`` by the policy's ``risk.bands``."""
    confidence: float = Field(ge=0.0, le=1.0)
    coverage: float
    """Share of the model's signal this account's data carries (missing features carry none)."""
    drivers: list[RiskDriver] = Field(default_factory=list)
    """Top drivers, largest absolute contribution first."""
    missing: list[str] = Field(default_factory=list)
    model_version: str
    outcome: Literal["proposed", "needs_human", "skipped", "churned"] = "skipped"
    reasons: list[str] = Field(default_factory=list)
    proposal_ids: list[str] = Field(default_factory=list)


# --- contracts -----------------------------------------------------------------------------------


class SourceSpan(BaseModel):
    """Where a term was read: ``contract_text[start:end] == text``."""

    start: int
    end: int
    text: str


class ContractTerm(BaseModel):
    """One key term of a contract (a CUAD category), with its source and a calibrated confidence."""

    key: str
    """Our field name, e.g. ``notice_period``."""
    category: str
    """The CUAD category it maps to, e.g. ``Notice Period To Terminate Renewal``."""
    status: Literal["found", "needs_review", "not_found"]
    """``needs_review``: a candidate exists but below the threshold: shown as such, never as a value."""
    confidence: float = Field(ge=0.0, le=1.0)
    threshold: float
    spans: list[SourceSpan] = Field(default_factory=list)
    """Empty unless ``found``."""
    value: Any = None
    """Normalised value when one can be read: ISO date, ``{"value": 90, "unit": "day", "days": 90}``,
    a jurisdiction, party names, ``True`` for yes/no clauses."""
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    """Nearest labelled clauses (CUAD) that support the classification."""


class Deviation(BaseModel):
    """A term that departs from the clause policy, with the spans that show it."""

    rule: str
    message: str
    severity: Literal["info", "warning", "high"] = "warning"
    spans: list[SourceSpan] = Field(default_factory=list)


class SummarySentence(BaseModel):
    text: str
    spans: list[SourceSpan] = Field(default_factory=list)


class ContractSummary(BaseModel):
    """The contracts agent's conclusion about one contract."""

    thread_id: str
    name: str
    sha256: str
    db: str = "file"
    attachment_id: int | None = None
    res_model: str | None = None
    res_id: int | None = None
    n_chars: int
    terms: list[ContractTerm]
    summary: list[SummarySentence] = Field(default_factory=list)
    deviations: list[Deviation] = Field(default_factory=list)
    notice_deadline: str | None = None
    """ISO date: expiration minus the notice period (the last day to decide on renewal)."""
    outcome: Literal["proposed", "needs_human", "report", "skipped"] = "report"
    reasons: list[str] = Field(default_factory=list)
    proposal_ids: list[str] = Field(default_factory=list)
    model_version: str = ""
    injection: list[str] = Field(default_factory=list)
    """Phrases addressed to an AI found in the contract (untrusted text)."""

    def term(self, key: str) -> ContractTerm | None:
        return next((t for t in self.terms if t.key == key), None)


# --- proposals and approvals ---------------------------------------------------------------------

ProposalState = Literal[
    "proposed", "pending", "approved", "edited", "rejected", "expired", "cancelled",
    "executing", "executed", "failed",
]
PROPOSAL_STATES: tuple[str, ...] = get_args(ProposalState)
DECIDED_STATES: frozenset[str] = frozenset({"approved", "rejected", "expired", "cancelled"})
TERMINAL_STATES: frozenset[str] = frozenset({"rejected", "expired", "cancelled", "executed", "failed"})
Verdict = Literal["approve", "edit", "reject"]


def proposal_id(thread_id: str, action: str, target_model: str, target_id: int, args: dict[str, Any]) -> str:
    """Deterministic id: the same proposal, proposed again on resume, gets the same id."""
    raw = "\x1f".join([thread_id, action, target_model, str(target_id), canonical_json(args)])
    return "p_" + hashlib.sha256(raw.encode()).hexdigest()[:20]


class Proposal(BaseModel):
    """A write an agent wants; nothing happens until a human approves it."""

    model_config = ConfigDict(validate_assignment=True)

    id: str
    thread_id: str
    action: str
    """Policy action name, e.g. ``ticket.set_category``."""
    target_model: str
    target_id: int
    args: dict[str, Any]
    """The values to write (by name, e.g. ``{"category": "cancel_order"}``)."""
    current: dict[str, Any] = Field(default_factory=dict)
    """The values in Odoo when proposed, for the diff (the executor checks them again before writing)."""
    requires: dict[str, list[Any]] = Field(default_factory=dict)
    """Other fields of the target the write depends on, and the values they may hold when it runs: a team
    chosen for a category needs the ticket to have that category (or still the one it had)."""
    rationale: str = ""
    confidence: float | None = None
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    approver_group: str
    channel: str = "inbox"
    requested_by: str = "agent:triage"
    state: ProposalState = "pending"
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    edited_args: dict[str, Any] | None = None
    attempts: int = 0
    executing_since: datetime | None = None
    executing_owner: str | None = None
    """The process executing it (:func:`signoff.guardrails.owner.process_owner`): a dead one on this host
    frees the write for recovery at once, without waiting for the stale bound."""
    result: dict[str, Any] | None = None
    error: str | None = None
    policy_version: str | None = None
    model_version: str | None = None

    @property
    def effective_args(self) -> dict[str, Any]:
        """What the executor writes: the approver's edit when there was one."""
        return self.edited_args if self.edited_args is not None else self.args


class Decision(BaseModel):
    """A human's decision on a proposal."""

    proposal_id: str
    verdict: Verdict
    actor: str
    """Approver identity, e.g. ``slack:U024BE7LH``, ``odoo:7`` or ``cli:alice``."""
    reason: str | None = Field(default=None, max_length=2000)
    args: dict[str, Any] | None = None
    """New args, for ``edit``."""
    channel: str = "cli"


class AuditEvent(BaseModel):
    """One append-only, hash-chained entry of the audit trail."""

    seq: int
    at: datetime
    kind: str
    """e.g. ``ticket.screened``, ``proposal.created``, ``proposal.approved``, ``execution.succeeded``."""
    subject: str
    """What it is about: a thread id (``ticket:db:42``) or a proposal id."""
    actor: str
    data: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str
