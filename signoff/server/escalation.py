"""Escalation: a proposal still pending past its action's ``escalate_after`` (and, on Slack, after its
reminder) is re-routed to the policy's ``escalate_to`` group. Without ``escalate_after`` it escalates
one ``remind`` period after the reminder.

The re-route is a store transition of ``approver_group`` (compare-and-set on the state and the old
group, so two sweeps never escalate twice), audited as ``proposal.escalated``; from then on only the
new group may decide (every channel checks ``approver_group``). On Slack the approval message is
updated to name the new group and a thread reply mentions its Slack members.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from signoff.domain import Proposal
from signoff.errors import SignoffError
from signoff.guardrails.policy import parse_duration

if TYPE_CHECKING:
    from signoff.server.services import ServerServices

log = logging.getLogger(__name__)
ACTOR = "system:escalation"


def _due(svc: ServerServices, p: Proposal, now: datetime) -> str | None:
    """The group ``p`` escalates to now, or None (not due, nowhere to go, or already there)."""
    try:
        rule = svc.rt.policy.action(p.action)
        after = parse_duration(rule.escalate_after)
        remind = parse_duration(rule.remind)
    except SignoffError:
        return None
    target = rule.escalate_to
    if target is None or target == p.approver_group:
        return None
    if p.channel == "slack" and svc.slack is not None and remind is not None:
        posted = svc.slack.messages.get(p.id)
        if posted is None or posted.reminded_at is None:
            return None  # the current approvers get their reminder first
        if after is None:  # one more reminder period after the reminder
            return target if now - posted.reminded_at >= remind else None
    wait = after if after is not None else remind
    if wait is None or now - p.created_at < wait:
        return None
    return target


def escalate_due(svc: ServerServices, now: datetime) -> int:
    """Re-route every pending proposal whose escalation is due; returns how many were escalated."""
    count = 0
    for p in svc.rt.store.find(states=("pending",)):
        target = _due(svc, p, now)
        if target is None or svc.in_flight(p.thread_id):
            continue
        moved = svc.rt.store.transition(p.id, ("pending",), expect={"approver_group": p.approver_group},
                                        approver_group=target)
        if moved is None:
            continue  # decided or escalated by someone else meanwhile
        svc.rt.audit.append("proposal.escalated", p.id, ACTOR,
                            {"from": p.approver_group, "to": target, "channel": p.channel,
                             "pending_for_s": round((now - p.created_at).total_seconds())}, thread_id=p.thread_id)
        count += 1
        if svc.slack is not None and p.channel == "slack":
            svc.refresh(moved)
            try:
                svc.slack.escalated(moved, p.approver_group, svc.rt.policy.members(target))
            except SlackApiError as exc:
                log.warning("escalation notice for %s failed: %s", p.id, exc)
    return count
