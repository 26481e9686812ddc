"""The guardrail policy: per-action thresholds, approvers, channels and timeouts, loaded from YAML.

The policy fails closed: an action it does not name is refused (``unknown_action: reject``), a
missing threshold means "always a human", and a malformed file is a :class:`PolicyError`.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from signoff.errors import PolicyError

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str | None) -> timedelta | None:
    """``"24h"`` -> 24 hours; ``None`` stays ``None``."""
    if text is None:
        return None
    match = _DURATION.match(str(text))
    if not match:
        raise PolicyError(f"bad duration {text!r}: use a number and one of s, m, h, d (e.g. 24h)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class Tier(BaseModel):
    max_amount: float | None = None
    approvers: str


class ActionPolicy(BaseModel):
    """What the policy says about one action."""

    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Below this the agent does not propose; the ticket goes to a human. ``None``: no model gate."""
    min_confidence_by_class: dict[str, float] = Field(default_factory=dict)
    """Per predicted class (e.g. ``get_refund: 0.6``): that class's minimum confidence instead of
    ``min_confidence``. A class not listed uses ``min_confidence`` (fail closed)."""
    approvers: str | None = None
    tiers: list[Tier] = Field(default_factory=list)
    channel: Literal["inbox", "slack", "odoo"] = "inbox"
    expires: str | None = None
    remind: str | None = None
    edits: bool = True
    escalate_to: str | None = None
    """A group to re-route a still-pending proposal to (the next approver tier); checked against ``groups``."""
    escalate_after: str | None = None
    """How long after the proposal was raised it escalates (after its reminder, when ``remind`` is set).
    Unset: one ``remind`` period after the reminder."""

    @field_validator("min_confidence_by_class")
    @classmethod
    def _check_class_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"min_confidence_by_class values must be between 0 and 1: {bad}")
        return value

    def min_confidence_for(self, label: str | None) -> float | None:
        """The threshold a prediction of ``label`` must reach: its class's, else the action's."""
        if label is not None and label in self.min_confidence_by_class:
            return self.min_confidence_by_class[label]
        return self.min_confidence

    @field_validator("expires", "remind", "escalate_after")
    @classmethod
    def _check_duration(cls, value: str | None) -> str | None:
        parse_duration(value)
        return value

    def approver_group(self, amount: float | None = None) -> str:
        if self.approvers:
            return self.approvers
        for tier in self.tiers:
            if tier.max_amount is None or (amount is not None and amount <= tier.max_amount):
                return tier.approvers
        raise PolicyError("action has neither approvers nor a matching tier")


class PriorityRules(BaseModel):
    """Explicit priority rules; the highest priority any rule gives wins, and its name is the reason."""

    default: Literal["0", "1", "2", "3"] = "1"
    tiers: dict[str, Literal["0", "1", "2", "3"]] = Field(default_factory=dict)
    """Subscription plan name -> minimum priority."""
    categories: dict[str, Literal["0", "1", "2", "3"]] = Field(default_factory=dict)
    """Category (intent) -> minimum priority (its severity)."""
    urgency_cues: dict[str, Literal["0", "1", "2", "3"]] = Field(default_factory=dict)
    """Phrase (case-insensitive, in the redacted text) -> minimum priority."""
    overdue_invoices: Literal["0", "1", "2", "3"] | None = None
    """Minimum priority when the customer has overdue invoices."""


class Routing(BaseModel):
    """Routing table: category (intent) -> team."""

    teams: dict[str, str] = Field(default_factory=dict)
    default_team: str = "Customer Care"

    def team_for(self, category: str) -> tuple[str, str]:
        if category in self.teams:
            return self.teams[category], f"routing table: {category} -> {self.teams[category]}"
        return self.default_team, f"no route for {category}: default team {self.default_team}"


class OfferRules(BaseModel):
    """How big a retention offer the renewal agent proposes (the approver tier follows from the amount)."""

    bands: list[str] = Field(default_factory=lambda: ["high"])
    months_of_mrr: float = Field(default=1.0, ge=0.0)
    """Offer = this many months of the subscription's monthly recurring revenue, rounded to ``round_to``."""
    round_to: float = Field(default=10.0, gt=0.0)
    max_amount: float | None = None


class RiskRules(BaseModel):
    """The renewal agent's policy: bands by churn probability and which proposals each band gets."""

    bands: dict[str, float] = Field(default_factory=lambda: {"low": 0.0, "medium": 0.30, "high": 0.50})
    """Band -> lowest probability in it."""
    followup_bands: list[str] = Field(default_factory=lambda: ["medium", "high"])
    followup_days: dict[str, int] = Field(default_factory=lambda: {"high": 2, "medium": 7})
    """Band -> days until the CSM follow-up is due (never later than the day before the term ends)."""
    offer: OfferRules = Field(default_factory=OfferRules)
    cooldown_days: int = Field(default=30, ge=0)
    """After an account's proposal of an action is rejected, no new proposal of that action for this many
    days (a new renewal cycle included); a pending one blocks a second one always."""


class Policy(BaseModel):
    version: int | str
    actions: dict[str, ActionPolicy]
    groups: dict[str, list[str]] = Field(default_factory=dict)
    separation_of_duties: bool = True
    unknown_action: Literal["reject"] = "reject"
    routing: Routing = Field(default_factory=Routing)
    priority: PriorityRules = Field(default_factory=PriorityRules)
    risk: RiskRules = Field(default_factory=RiskRules)
    sha256: str = ""
    """Hash of the policy file's bytes; travels in every audit event with ``version``."""

    @property
    def label(self) -> str:
        return f"v{self.version}@{self.sha256[:12]}"

    def action(self, name: str) -> ActionPolicy:
        try:
            return self.actions[name]
        except KeyError:
            raise PolicyError(f"action {name!r} is not in the policy; unknown actions are rejected") from None

    def members(self, group: str) -> list[str]:
        return self.groups.get(group, [])

    def may_decide(self, actor: str, group: str) -> bool:
        return actor in self.groups.get(group, [])


def load_policy(path: Path | None = None) -> Policy:
    """Load and validate a policy file (the packaged default when ``path`` is ``None``)."""
    path = path or DEFAULT_POLICY_PATH
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from exc
    try:
        data: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"policy {path} must be a mapping with 'version' and 'actions'")
    try:
        policy = Policy.model_validate({**data, "sha256": hashlib.sha256(raw).hexdigest()})
    except ValidationError as exc:
        raise PolicyError(f"policy {path} is invalid:\n{exc}") from exc
    for name, action in policy.actions.items():
        groups = [action.approvers] if action.approvers else [t.approvers for t in action.tiers]
        if not groups:
            raise PolicyError(f"policy {path}: action {name!r} names no approver group")
        for group in groups:
            if group not in policy.groups:
                raise PolicyError(f"policy {path}: action {name!r} names unknown group {group!r}")
        if action.escalate_to is not None and action.escalate_to not in policy.groups:
            raise PolicyError(f"policy {path}: action {name!r} escalates to unknown group {action.escalate_to!r}")
        if action.escalate_after is not None and action.escalate_to is None:
            raise PolicyError(f"policy {path}: action {name!r} has escalate_after but no escalate_to")
        if action.escalate_to is not None and action.escalate_after is None and action.remind is None:
            raise PolicyError(f"policy {path}: action {name!r} escalates but says neither escalate_after nor "
                              "remind (escalation follows the reminder)")
    return policy
