"""Human decisions on proposals: authorised, compare-and-set, audited.

A decision is one conditional transition out of ``pending``. Exactly one of two concurrent clicks
wins; the other is told who decided and when. An approver outside the group the policy names, or
the person who raised the proposal (separation of duties), is refused, and the refusal is audited.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from signoff.domain import Decision, Proposal, utcnow
from signoff.errors import AlreadyDecided, InvalidDecision, NotAuthorised, ProposalNotFound
from signoff.guardrails.actions import get_action
from signoff.guardrails.audit import AuditLog
from signoff.guardrails.policy import ActionPolicy, Policy
from signoff.guardrails.store import ApprovalStore
from signoff.integrations.odoo import OdooReader

PENDING = ("pending",)
MAX_DEADLINE = timedelta(days=366)
"""How far ahead an edited deadline may be."""


def _rank(rule: ActionPolicy, group: str) -> int:
    """A group's place in the action's tiers (0 = the lowest amounts); a group not in the tiers (one the
    proposal was escalated to) ranks above every tier."""
    for i, tier in enumerate(rule.tiers):
        if tier.approvers == group:
            return i
    return len(rule.tiers)


#: Identities a channel vouches for itself: a ``slack:`` user is who Slack signed, an ``odoo:`` user who
#: completed the activity in Odoo. The channels where the decider names themself (the CLI's ``--as``, the
#: REST API's ``actor``) may not decide in their name. (The inbox maps its signed-in users to identities
#: an operator chose: not refused.)
CHANNEL_IDENTITIES = ("slack", "odoo")
SELF_DECLARED_CHANNELS = ("cli", "api")


class Approvals:
    def __init__(self, store: ApprovalStore, audit: AuditLog, policy: Policy) -> None:
        self.store, self.audit, self.policy = store, audit, policy

    def authorise(self, proposal: Proposal, actor: str, *, verb: str, channel: str = "cli") -> None:
        """Raise NotAuthorised (audited) unless ``actor`` may act on ``proposal``: a member of the group
        the policy names, and not the one who raised it (separation of duties)."""
        group = proposal.approver_group
        if not actor.strip():
            reason = "no approver identity given (e.g. --as cli:lead)"
        elif not self.policy.may_decide(actor, group):
            reason = f"{actor} is not in approver group {group!r}"
        elif self.policy.separation_of_duties and actor == proposal.requested_by:
            reason = f"{actor} raised this proposal and may not decide it"
        else:
            return
        self.audit.append("decision.refused", proposal.id, actor or "(none)",
                          {"verdict": verb, "reason": reason, "channel": channel}, thread_id=proposal.thread_id)
        raise NotAuthorised(reason)

    def check_edit(self, proposal: Proposal, args: dict[str, Any], *, reader: OdooReader | None = None,
                   today: date | None = None) -> dict[str, Any]:
        """The guardrails an edit passes on every channel (CLI, REST, inbox, Slack): the changed keys are
        merged over the proposal's stored args (a key not given keeps its proposed value), the merged args
        are re-validated, only the action's editable fields may change, a changed deadline must be a date
        from today to a year ahead, and the amount may not need a higher approver tier than the proposal's
        (a lower one is fine: a higher authority may approve a smaller amount). The normalised merged args,
        or InvalidDecision. Deciding nothing, so a channel can preview an edit."""
        rule = self.policy.action(proposal.action)
        if not rule.edits:
            raise InvalidDecision(f"the policy does not allow edits of {proposal.action}")
        action = get_action(proposal.action)
        merged = {**proposal.args, **args}
        checked = action.validate(merged, reader)
        try:
            original = action.validate(dict(proposal.args), None)
        except InvalidDecision:
            original = dict(proposal.args)
        changed = [k for k in checked if checked[k] != original.get(k)]
        editable: tuple[str, ...] | None = getattr(action, "editable", None)
        if editable is not None:
            locked = [k for k in changed if k not in editable]
            if locked:
                raise InvalidDecision(
                    f"{', '.join(locked)} cannot be edited on {proposal.action} (editable: {', '.join(editable)})"
                    + (f"; the offer stays in {original.get('currency')}: reject it to change the currency"
                       if "currency" in locked else ""))
        if "deadline" in changed:
            day = today or date.today()
            deadline = date.fromisoformat(str(checked["deadline"]))
            if deadline < day:
                raise InvalidDecision(f"deadline {deadline} is in the past (today is {day})")
            if deadline > day + MAX_DEADLINE:
                raise InvalidDecision(f"deadline {deadline} is more than {MAX_DEADLINE.days} days ahead")
        if rule.tiers and "amount" in checked:
            needed = rule.approver_group(float(checked["amount"]))
            if needed != proposal.approver_group and _rank(rule, needed) > _rank(rule, proposal.approver_group):
                raise InvalidDecision(f"an amount of {checked['amount']} needs approver group {needed!r}, not "
                                      f"{proposal.approver_group!r}: reject and let the agent propose again")
        return checked

    def _already(self, proposal_id: str) -> AlreadyDecided:
        now = self.store.get(proposal_id)
        at = now.decided_at.isoformat(timespec="seconds") if now.decided_at else None
        return AlreadyDecided(proposal_id, now.state, now.decided_by, at)

    def decide(self, decision: Decision, *, reader: OdooReader | None = None) -> Proposal:
        """Record a decision. Raises AlreadyDecided, NotAuthorised, InvalidDecision or ProposalNotFound."""
        try:
            proposal = self.store.get(decision.proposal_id)
        except ProposalNotFound:
            self.audit.append("decision.refused", decision.proposal_id, decision.actor,
                              {"verdict": decision.verdict, "reason": "unknown proposal"})
            raise
        if proposal.state != "pending":
            raise self._already(proposal.id)
        if proposal.expires_at and utcnow() >= proposal.expires_at:
            self.expire(proposal.id)
            raise self._already(proposal.id)

        if decision.verdict != "edit" and decision.args:
            raise InvalidDecision(f"new values are for an edit, not {decision.verdict}: send verdict 'edit' with "
                                  "args, or leave args out")
        kind = decision.actor.split(":", 1)[0]
        if kind in CHANNEL_IDENTITIES and decision.channel in SELF_DECLARED_CHANNELS:
            self.audit.append("decision.refused", proposal.id, decision.actor,
                              {"verdict": decision.verdict, "channel": decision.channel,
                               "reason": f"a {kind}: identity decides in {kind} only"}, thread_id=proposal.thread_id)
            raise InvalidDecision(f"{decision.actor} is a {kind.title()} identity: it decides in {kind.title()}, not "
                                  f"through {decision.channel} (name your own identity, e.g. cli:<name>)")
        self.authorise(proposal, decision.actor, verb=decision.verdict, channel=decision.channel)

        meta: dict[str, Any] = {
            "decided_by": decision.actor, "decided_at": utcnow(), "decision_reason": decision.reason,
        }
        audit_data: dict[str, object] = {"channel": decision.channel, "reason": decision.reason,
                                         "policy": self.policy.label}
        if decision.verdict == "reject":
            if not (decision.reason and decision.reason.strip()):
                raise InvalidDecision("a reason is required to reject")
            done = self.store.transition(proposal.id, PENDING, state="rejected", **meta)
        elif decision.verdict == "edit":
            if decision.args is None:
                raise InvalidDecision("an edit needs the new values")
            args = self.check_edit(proposal, decision.args, reader=reader)
            edited = self.store.transition(proposal.id, PENDING, state="edited", edited_args=args, **meta)
            if edited is None:
                raise self._already(proposal.id)
            self.audit.append("proposal.edited", proposal.id, decision.actor,
                              {**audit_data, "from": proposal.args, "to": args}, thread_id=proposal.thread_id)
            done = self.store.transition(proposal.id, ("edited",), state="approved")
        else:
            done = self.store.transition(proposal.id, PENDING, state="approved", **meta)
        if done is None:
            raise self._already(proposal.id)
        self.audit.append(f"proposal.{done.state}", proposal.id, decision.actor,
                          {**audit_data, "args": done.effective_args}, thread_id=proposal.thread_id)
        return done

    def expire(self, proposal_id: str) -> Proposal | None:
        """Move a pending proposal past its deadline to ``expired`` (never ``rejected``)."""
        done = self.store.transition(proposal_id, PENDING, state="expired", decided_by="system:expiry",
                                     decided_at=utcnow(), decision_reason="expired without a decision")
        if done:
            self.audit.append("proposal.expired", proposal_id, "system:expiry", {}, thread_id=done.thread_id)
        return done

    def expire_due(self, now: datetime | None = None) -> list[Proposal]:
        now = now or utcnow()
        due = [p for p in self.store.find(states=PENDING) if p.expires_at and p.expires_at <= now]
        return [e for p in due if (e := self.expire(p.id))]
