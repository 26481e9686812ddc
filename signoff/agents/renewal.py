"""The renewal-risk agent: load -> score -> decide -> gate -> execute -> finish (a LangGraph graph).

Same shape as triage (:mod:`signoff.agents.triage`): read tools only (:mod:`signoff.tools.accounts`),
proposals through the guardrails, ``interrupt()`` at the gate until a human decides, the executor as
the only writer. One durable run per account **per renewal cycle**: thread
``account:<db>:<partner id>:<cycle>``, where ``<cycle>`` is the month (``YYYY-MM``) the subscription's
current term ends (:attr:`signoff.tools.accounts.AccountSnapshot.term_end`: Odoo's ``next_invoice_date``
rolled forward by the plan's billing period, or an earlier fixed ``end_date``), or, when the term is
unknown, the scoring period: the calendar month. Before proposing, an action the account already has
pending (any cycle), or had rejected within ``risk.cooldown_days``, is skipped with the reason.
Running an account again in the same cycle is a
``duplicate`` (a fresh score, nothing proposed); once the term has rolled over, the next run is a new
run with its own proposals. :func:`cycle_for` and :func:`parse_thread` are the only places that know
this shape; every user routes on the ``account:`` prefix alone. (Runs started before cycles existed keep
their ``account:<db>:<partner id>`` threads, which resume and recover as before.)

* **score**: the calibrated churn probability, its 90 % interval, band (policy ``risk.bands``), top
  drivers with their contribution, and a confidence (:mod:`signoff.agents.risk_model`).
* **decide**: bands in ``risk.followup_bands`` get an ``account.csm_followup`` (an activity for the
  account owner on the customer); bands in ``risk.offer.bands`` with a running subscription get an
  ``account.retention_offer`` of ``months_of_mrr`` x MRR (rounded), whose amount picks the approver
  tier (``tiers`` in the action's policy). Below an action's ``min_confidence``: no proposal, a human
  looks at the account, with the reason. A churned subscription gets nothing.

Renewal runs have their own checkpoint file (``<data dir>/checkpoints-renewal.sqlite``) so that
triage's recovery never mistakes an account run for a ticket run; :func:`resume_thread` routes a
thread to the agent that owns it. On Postgres (``SIGNOFF_DATABASE_URL``) every agent's runs share LangGraph's
checkpoint tables: thread ids never collide (``account:`` vs ``ticket:``) and each agent recovers only its own.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime as GraphRuntime
from langgraph.types import Command

from signoff.agents.approval_steps import UNFINISHED, approval_graph, await_decisions, execute_approved, finish_writes
from signoff.agents.risk_model import RiskModel, RiskResult, band_for, describe
from signoff.config import Settings
from signoff.domain import Proposal, RiskDriver, RiskScore, proposal_id, utcnow
from signoff.errors import OdooMissingError, SignoffError
from signoff.guardrails.audit import AuditLog
from signoff.guardrails.executor import Executor
from signoff.guardrails.policy import Policy, parse_duration
from signoff.guardrails.store import ApprovalStore
from signoff.integrations.odoo import OdooReader
from signoff.tools.accounts import AccountSnapshot, load_account
from signoff.tools.contract_terms import ContractTermsStore

log = logging.getLogger(__name__)
AGENT = "agent:renewal"
THREAD_PREFIX = "account:"
RunStatus = Literal["paused", "done", "duplicate", "failed", "skipped"]
NO_SUBSCRIPTION = "no subscription: nothing to score"


def risk_model_dir(settings: Settings) -> Any:
    """Where ``signoff train risk`` saves the risk model (beside the triage model, in its own folder)."""
    return settings.models_path / "risk"


def checkpoint_path(settings: Settings) -> Any:
    return settings.data_dir / "checkpoints-renewal.sqlite"


class LazyRiskModel:
    """Loads the risk model on first use: resuming a run never needs it, scoring does."""

    def __init__(self, loader: Callable[[], RiskModel]) -> None:
        self._loader = loader
        self._model: RiskModel | None = None

    @property
    def model(self) -> RiskModel:
        if self._model is None:
            self._model = self._loader()
        return self._model


@dataclass
class RenewalServices:
    settings: Settings
    reader: OdooReader
    model: LazyRiskModel
    policy: Policy
    store: ApprovalStore
    audit: AuditLog
    executor: Executor
    db: str = "signoff"
    today: date | None = None
    """Fixed "today" for tests; None = the real date."""
    terms: ContractTermsStore | None = None
    """What the contracts agent read from the subscriptions' contracts (notice deadline, auto-renewal)."""

    def day(self) -> date:
        return self.today or date.today()

    def account(self, partner_id: int) -> AccountSnapshot:
        """The account's features from Odoo and from its analysed contract (:func:`load_account`)."""
        return load_account(self.reader, partner_id, today=self.day(), contract_terms=self.terms, db=self.db)

    def thread_for(self, partner_id: int, cycle: str | None = None) -> str:
        """The account's thread for ``cycle``; None = the current cycle (reads the account from Odoo)."""
        if cycle is None:
            cycle = self.current_cycle(partner_id)
        return f"{THREAD_PREFIX}{self.db}:{partner_id}:{cycle}"

    def current_cycle(self, partner_id: int) -> str:
        """The account's renewal cycle today; the scoring period if the account cannot be read."""
        try:
            return cycle_for(self.account(partner_id), self.day())
        except SignoffError:
            return scoring_period(self.day())


def scoring_period(day: date) -> str:
    """The fallback cycle: the calendar month (``YYYY-MM``)."""
    return f"{day.year:04d}-{day.month:02d}"


def cycle_for(snap: AccountSnapshot, today: date) -> str:
    """The renewal cycle an account is in: the month its current term ends (``YYYY-MM``, so moving the next
    invoice date by a few days inside the month keeps the cycle), else the scoring period (this month)."""
    return snap.term_end[:7] if snap.term_end else scoring_period(today)


def parse_thread(thread_id: str) -> tuple[str, int, str | None]:
    """``account:<db>:<partner>[:<cycle>]`` -> (db, partner id, cycle or None for a pre-cycle thread)."""
    if not thread_id.startswith(THREAD_PREFIX):
        raise ValueError(f"not an account thread: {thread_id!r}")
    parts = thread_id[len(THREAD_PREFIX):].split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ValueError(f"not an account thread: {thread_id!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else None


class RiskState(TypedDict, total=False):
    partner_id: int
    cycle: str
    thread_id: str
    account: dict[str, Any]
    score: dict[str, Any]
    proposal_ids: list[str]
    decisions: dict[str, str]
    executed: dict[str, str]


# --- scoring (shared by the graph and the read-only report) -----------------------------------------


def risk_score(svc: RenewalServices, snap: AccountSnapshot, result: RiskResult, *, top: int = 5,
               thread_id: str | None = None) -> RiskScore:
    drivers = [
        RiskDriver(feature=d.feature, label=d.label, value=d.value, contribution=d.contribution, delta=d.delta,
                   missing=d.missing, text=describe(d, snap.currency))
        for d in result.top(top) if d.contribution != 0.0  # a feature without effect is no driver
    ]
    return RiskScore(
        partner_id=snap.partner_id, name=snap.name,
        thread_id=thread_id or svc.thread_for(snap.partner_id, cycle_for(snap, svc.day())),
        probability=result.probability, interval=result.interval, band=band_for(result.probability,
                                                                                svc.policy.risk.bands),
        confidence=result.confidence, coverage=result.coverage, drivers=drivers, missing=result.missing,
        model_version=result.model_version, outcome="churned" if snap.churned else "skipped",
    )


def assess(svc: RenewalServices, partner_id: int) -> tuple[AccountSnapshot, RiskScore, RiskResult]:
    """Read and score one account, nothing else (``signoff risk explain``, duplicate runs)."""
    snap = svc.account(partner_id)
    result = svc.model.model.score([snap.features])[0]
    return snap, risk_score(svc, snap, result), result


# --- nodes ---------------------------------------------------------------------------------------


def _thread(state: RiskState, svc: RenewalServices, snap: AccountSnapshot) -> str:
    """The run's thread (given at the start; a pre-cycle run's state has none)."""
    return state.get("thread_id") or f"{THREAD_PREFIX}{svc.db}:{snap.partner_id}"


def load(state: RiskState, runtime: GraphRuntime[RenewalServices]) -> RiskState:
    svc = runtime.context
    given = state.get("account")  # the runner read it to find the cycle: not read twice
    snap = AccountSnapshot.from_json(given) if given else svc.account(state["partner_id"])
    thread = _thread(state, svc, snap)
    svc.audit.append("account.loaded", thread, AGENT,
                     {"partner": snap.partner_id, "subscription": snap.subscription_id,
                      "state": snap.subscription_state, "cycle": state.get("cycle"), "term_end": snap.term_end,
                      "missing": sorted(k for k, v in snap.features.items() if v is None)}, thread_id=thread)
    return {"account": snap.to_json()}


def score(state: RiskState, runtime: GraphRuntime[RenewalServices]) -> RiskState:
    svc = runtime.context
    snap = AccountSnapshot.from_json(state["account"])
    result = svc.model.model.score([snap.features])[0]
    scored = risk_score(svc, snap, result, thread_id=_thread(state, svc, snap))
    svc.audit.append("account.scored", scored.thread_id, AGENT,
                     {"probability": scored.probability, "interval": list(scored.interval), "band": scored.band,
                      "confidence": scored.confidence, "coverage": scored.coverage, "model": scored.model_version,
                      "drivers": [{"feature": d.feature, "contribution": d.contribution, "delta": d.delta}
                                  for d in scored.drivers]}, thread_id=scored.thread_id)
    return {"score": scored.model_dump(mode="json")}


def offer_amount(policy: Policy, recurring_monthly: float) -> float:
    rules = policy.risk.offer
    amount = round(recurring_monthly * rules.months_of_mrr / rules.round_to) * rules.round_to
    if rules.max_amount is not None:
        amount = min(amount, rules.max_amount)
    return float(amount)


def _proposal(svc: RenewalServices, thread: str, action: str, model: str, target: int, args: dict[str, Any],
              rationale: str, scored: RiskScore, amount: float | None = None) -> Proposal:
    rule = svc.policy.action(action)
    expires = parse_duration(rule.expires)
    return Proposal(
        id=proposal_id(thread, action, model, target, args), thread_id=thread, action=action, target_model=model,
        target_id=target, args=args, current={}, rationale=rationale, confidence=scored.confidence,
        evidence=[d.model_dump(mode="json") for d in scored.drivers], approver_group=rule.approver_group(amount),
        channel=rule.channel, requested_by=AGENT,
        expires_at=utcnow() + (expires or timedelta(days=7)), policy_version=svc.policy.label,
        model_version=scored.model_version,
    )


def _blocked_by(svc: RenewalServices, partner_id: int, thread: str, action: str) -> str | None:
    """Why ``action`` is not proposed again for the account: one of its proposals of that action (in any
    cycle's run but this one) is still pending, or was rejected less than ``risk.cooldown_days`` ago."""
    account = f"{THREAD_PREFIX}{svc.db}:{partner_id}"
    cooldown = timedelta(days=svc.policy.risk.cooldown_days)
    now = utcnow()
    if svc.today is not None:  # a fixed "today" (tests): the cooldown counts from it too
        now = datetime.combine(svc.today, now.timetz())
    for p in svc.store.find(states=("pending", "rejected")):
        if p.action != action or p.thread_id == thread or not (
                p.thread_id == account or p.thread_id.startswith(account + ":")):
            continue
        if p.state == "pending":
            return f"{action} not proposed again: {p.id[:12]} (thread {p.thread_id}) is still pending"
        if p.decided_at and now - p.decided_at < cooldown:
            until = (p.decided_at + cooldown).date().isoformat()
            return (f"{action} not proposed again: {p.id[:12]} was rejected by {p.decided_by} on "
                    f"{p.decided_at.date().isoformat()} ({p.decision_reason or 'no reason'}); cooldown until {until}")
    return None


def decide(state: RiskState, runtime: GraphRuntime[RenewalServices]) -> RiskState:
    svc = runtime.context
    policy, rules = svc.policy, svc.policy.risk
    snap = AccountSnapshot.from_json(state["account"])
    scored = RiskScore.model_validate(state["score"])
    thread = scored.thread_id
    reasons: list[str] = []
    wanted: list[Proposal] = []
    why = (f"churn probability {scored.probability:.2f} (90% {scored.interval[0]:.2f}-{scored.interval[1]:.2f}), "
           f"band {scored.band}, confidence {scored.confidence:.2f}")
    drivers = "; ".join(d.text for d in scored.drivers if d.contribution > 0)[:1000] or "no single driver"

    def confident(action: str) -> bool:
        threshold = policy.action(action).min_confidence
        if threshold is not None and scored.confidence < threshold:
            reasons.append(f"confidence {scored.confidence:.2f} is below {threshold:.2f} for {action} "
                           f"(the account lacks {len(scored.missing)} of the model's features): left to a human")
            return False
        return True

    def due(band: str) -> str:
        """The default due date, but never after the day before the term ends (unless that is past)."""
        day = svc.day() + timedelta(days=rules.followup_days.get(band, 7))
        if snap.term_end:
            last = date.fromisoformat(snap.term_end) - timedelta(days=1)
            if svc.day() <= last < day:
                day = last
        return day.isoformat()

    if snap.churned:
        reasons.append("the subscription has already churned: nothing to propose")
    else:
        if scored.band in rules.followup_bands and confident("account.csm_followup"):
            args: dict[str, Any] = {"reason": f"churn risk {scored.band} ({scored.probability:.0%})",
                    "deadline": due(scored.band), "drivers": drivers}
            if snap.owner_uid:
                args["owner_uid"] = snap.owner_uid
            wanted.append(_proposal(svc, thread, "account.csm_followup", "res.partner", snap.partner_id, args,
                                    f"{why}; drivers: {drivers}", scored))
        if scored.band in rules.offer.bands:
            mrr = snap.features.get("recurring_monthly")
            if snap.subscription_id is None or not isinstance(mrr, float) or mrr <= 0:
                reasons.append("no running subscription with a recurring revenue: no retention offer")
            elif confident("account.retention_offer"):
                amount = offer_amount(policy, mrr)
                offer: dict[str, Any] = {"amount": amount, "currency": snap.currency,
                        "deadline": due(scored.band),
                        "reason": f"churn risk {scored.band} ({scored.probability:.0%}); "
                                  f"{rules.offer.months_of_mrr:g} month(s) of {mrr:,.2f} MRR",
                        "drivers": drivers}
                if snap.owner_uid:
                    offer["owner_uid"] = snap.owner_uid
                wanted.append(_proposal(svc, thread, "account.retention_offer", "sale.order", snap.subscription_id,
                                        offer, f"{why}; offer {amount:,.2f} {snap.currency}; drivers: {drivers}",
                                        scored, amount))
    ids: list[str] = []
    for_human = bool(reasons)  # a low confidence: a human looks at the account; a skipped repeat is no such case
    for proposal in wanted:
        blocked = _blocked_by(svc, snap.partner_id, thread, proposal.action)
        if blocked:
            reasons.append(blocked)
            continue
        stored, new = svc.store.add(proposal)
        ids.append(stored.id)
        if new:
            svc.audit.append("proposal.created", stored.id, AGENT,
                             {"action": stored.action, "target": stored.target_id, "model": stored.target_model,
                              "args": stored.args, "confidence": stored.confidence,
                              "approvers": stored.approver_group, "policy": policy.label,
                              "risk_model": stored.model_version}, thread_id=thread)
    outcome: Literal["proposed", "needs_human", "skipped", "churned"] = (
        "churned" if snap.churned else "proposed" if ids else "needs_human" if for_human else "skipped"
    )
    scored = scored.model_copy(update={"outcome": outcome, "reasons": reasons, "proposal_ids": ids})
    svc.audit.append("risk.decided", thread, AGENT,
                     {"outcome": outcome, "reasons": reasons, "proposals": ids, "policy": policy.label},
                     thread_id=thread)
    if outcome == "needs_human":
        svc.audit.append("run.needs_human", thread, AGENT, {"reasons": reasons}, thread_id=thread)
    return {"score": scored.model_dump(mode="json"), "proposal_ids": ids}


def gate(state: RiskState, runtime: GraphRuntime[RenewalServices]) -> RiskState:
    """Pause until every proposal of this run is decided (the run sleeps in the checkpointer)."""
    ids = state.get("proposal_ids", [])
    return {"decisions": await_decisions(runtime.context.store, ids, state["score"]["thread_id"])}


def execute(state: RiskState, runtime: GraphRuntime[RenewalServices]) -> RiskState:
    svc = runtime.context
    return {"executed": execute_approved(svc.store, svc.executor, state.get("proposal_ids", []))}


def finish(state: RiskState, runtime: GraphRuntime[RenewalServices]) -> RiskState:
    svc = runtime.context
    thread = state["score"]["thread_id"]
    svc.audit.append("risk.completed", thread, AGENT,
                     {"outcome": state["score"]["outcome"], "results": state.get("executed", {})}, thread_id=thread)
    return {}


def build_graph() -> StateGraph[RiskState, RenewalServices, RiskState, RiskState]:
    steps = [("load", load), ("score", score), ("decide", decide)]
    return approval_graph(RiskState, RenewalServices, steps, gate=gate, execute=execute, finish=finish)


# --- runner ----------------------------------------------------------------------------------------


@dataclass
class RiskRun:
    thread_id: str
    status: RunStatus
    score: RiskScore | None = None
    error: str | None = None


class RenewalRunner:
    """One durable run per account and renewal cycle; resumes paused runs once their proposals are decided."""

    def __init__(self, services: RenewalServices, checkpointer: BaseCheckpointSaver[Any]) -> None:
        self.services = services
        self.graph = build_graph().compile(checkpointer=checkpointer)

    @staticmethod
    def _config(thread_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id}}

    def status(self, thread_id: str) -> tuple[dict[str, Any], bool, bool]:
        """(values, paused at the gate, stopped mid-way by an error or a crash)."""
        snapshot = self.graph.get_state(self._config(thread_id))
        paused = any(task.interrupts for task in snapshot.tasks)
        return dict(snapshot.values or {}), paused, bool(snapshot.next) and not paused

    def _result(self, thread_id: str, values: dict[str, Any], paused: bool) -> RiskRun:
        scored = RiskScore.model_validate(values["score"]) if values.get("score") else None
        return RiskRun(thread_id, "paused" if paused else "done", scored)

    def has_subscription(self, partner_id: int) -> bool:
        """Whether there is anything to score: False for a partner Odoo has without a subscription (the
        company itself, a bot, a contact), as :meth:`run` skips it; True when the account cannot be read
        for another reason (the run reads it again and records why it failed). Raises
        :class:`OdooMissingError` when Odoo has no such partner."""
        try:
            return self.services.account(partner_id).subscription_id is not None
        except OdooMissingError:
            raise
        except SignoffError:
            return True

    def current_thread(self, partner_id: int) -> str:
        """The thread of the account's run this cycle (whether or not it exists yet)."""
        return self.services.thread_for(partner_id)

    def run(self, partner_id: int, *, cycle: str | None = None) -> RiskRun:
        """Score one account and propose, unless it already has a run this cycle (``duplicate``: a fresh
        score, no proposal). ``cycle`` defaults to the account's current one (:func:`cycle_for`)."""
        svc = self.services
        snap: AccountSnapshot | None = None
        try:
            snap = svc.account(partner_id)
        except OdooMissingError:
            thread_id = svc.thread_for(partner_id, cycle or scoring_period(svc.day()))
            svc.audit.append("run.failed", thread_id, AGENT, {"error": f"no partner {partner_id}"}, thread_id=thread_id)
            return RiskRun(thread_id, "failed", error=f"no partner {partner_id}")
        except SignoffError:  # the graph's load step reads it again and records the failure
            snap = None
        if snap is not None and snap.subscription_id is None:  # the company itself, a bot, a contact
            return RiskRun(svc.thread_for(partner_id, cycle or cycle_for(snap, svc.day())), "skipped",
                           error=NO_SUBSCRIPTION)
        if cycle is None:
            cycle = cycle_for(snap, svc.day()) if snap is not None else scoring_period(svc.day())
        thread_id = svc.thread_for(partner_id, cycle)
        config = self._config(thread_id)
        try:
            values, paused, stopped = self.status(thread_id)
            if values and not stopped:
                if snap is None:
                    snap = svc.account(partner_id)
                fresh = risk_score(svc, snap, svc.model.model.score([snap.features])[0], thread_id=thread_id)
                before = RiskScore.model_validate(values["score"]) if values.get("score") else None
                fresh = fresh.model_copy(update={
                    "outcome": before.outcome if before else fresh.outcome,
                    "proposal_ids": before.proposal_ids if before else [],
                    "reasons": before.reasons if before else []})
                return RiskRun(thread_id, "duplicate", fresh)
            if stopped:
                out = self.graph.invoke(None, config, context=svc)
            else:
                start: RiskState = {"partner_id": partner_id, "cycle": cycle, "thread_id": thread_id}
                if snap is not None:
                    start["account"] = snap.to_json()
                out = self.graph.invoke(start, config, context=svc)
        except SignoffError as exc:
            svc.audit.append("run.failed", thread_id, AGENT, {"error": f"{type(exc).__name__}: {exc}"},
                             thread_id=thread_id)
            return RiskRun(thread_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return self._result(thread_id, out, "__interrupt__" in out)

    def resume_if_ready(self, thread_id: str, *, actor: str = "system") -> RiskRun | None:
        """Resume a paused run once none of its proposals is pending; None if not ready or not paused."""
        if any(p.state == "pending" for p in self.services.store.find(thread_id=thread_id)):
            return None
        values, paused, stopped = self.status(thread_id)
        if not (paused or stopped):
            return None
        self.services.audit.append("run.resumed", thread_id, actor, {}, thread_id=thread_id)
        command: Command[Any] | None = Command(resume={"by": actor}) if paused else None
        out = self.graph.invoke(command, self._config(thread_id), context=self.services)
        return self._result(thread_id, out, "__interrupt__" in out)

    def recover(self) -> list[RiskRun]:
        """Finish account runs left behind: decided but never resumed, or killed between approval and write."""
        store = self.services.store
        threads = sorted({p.thread_id for p in store.find() if p.state != "pending"
                          and p.thread_id.startswith(THREAD_PREFIX)})
        results = [r for t in threads if (r := self.resume_if_ready(t, actor="system:recovery")) is not None]
        for thread_id in sorted({p.thread_id for p in store.find(states=UNFINISHED)
                                 if p.thread_id.startswith(THREAD_PREFIX)}):
            self.finish_writes(thread_id)
        return results

    def finish_writes(self, thread_id: str) -> list[Proposal]:
        """The run's writes still owed once it has ended, to the executor (:func:`finish_writes`)."""
        return finish_writes(self.status, self.services.store, self.services.executor, thread_id)


@contextmanager
def renewal_runner(rt: Any, *, today: date | None = None) -> Iterator[RenewalRunner]:
    """A renewal runner over an open :class:`signoff.agents.services.Runtime` (same store, audit, executor)."""
    settings: Settings = rt.settings
    services = RenewalServices(
        settings=settings, reader=rt.reader, model=LazyRiskModel(lambda: RiskModel.load(risk_model_dir(settings))),
        policy=rt.policy, store=rt.store, audit=rt.audit, executor=rt.executor, db=settings.odoo_db, today=today,
        terms=ContractTermsStore(rt.statedb),
    )
    with _checkpointer_for(rt, checkpoint_path(settings)) as checkpointer:
        yield RenewalRunner(services, checkpointer)


@contextmanager
def _checkpointer_for(rt: Any, sqlite_path: Path) -> Iterator[Any]:
    """The runtime's checkpointer for this agent (Postgres: shared tables; SQLite: its own file)."""
    if hasattr(rt, "checkpointer_for"):
        with rt.checkpointer_for(sqlite_path) as checkpointer:
            yield checkpointer
        return
    conn = sqlite3.connect(sqlite_path, check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


def resume_thread(rt: Any, thread_id: str, actor: str) -> Any:
    """Resume whichever agent owns ``thread_id`` (ticket runs: triage; account runs: renewal)."""
    return recover_thread(rt, thread_id, actor, writes=False)[0]


def recover_thread(rt: Any, thread_id: str, actor: str, *, writes: bool = True) -> tuple[Any, list[Proposal]]:
    """What ``signoff approvals recover`` does, for one run of whichever agent owns ``thread_id``: resume
    it if it is ready, then (``writes``) hand its writes still owed after it ended to the executor.
    Returns (the resumed run's result or None, the proposals handed to the executor)."""
    runner: Any
    if thread_id.startswith(THREAD_PREFIX):
        with renewal_runner(rt) as runner:
            return _recover(runner, thread_id, actor, writes)
    if thread_id.startswith("contract:"):
        from signoff.agents.contracts import contract_runner

        with contract_runner(rt) as runner:
            return _recover(runner, thread_id, actor, writes)
    return _recover(rt.runner, thread_id, actor, writes)


def _recover(runner: Any, thread_id: str, actor: str, writes: bool) -> tuple[Any, list[Proposal]]:
    result = runner.resume_if_ready(thread_id, actor=actor)
    return result, (runner.finish_writes(thread_id) if writes else [])
