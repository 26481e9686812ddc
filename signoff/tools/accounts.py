"""Read tools for accounts: the renewal-risk features of one customer, from Odoo or from a Telco row.

One feature vector, two sources, one model code path. Every feature is ``float | str | None``;
``None`` means **missing** (the source does not have it, or the record does not say) and is never
turned into zero here: the model sees a missing-indicator column for it (see
:mod:`signoff.agents.risk_model`), and ``signoff risk explain`` says "unknown".

=========================  ======  ===============================================  =============================
feature                    kind    Odoo (read-only view)                            IBM Telco column
=========================  ======  ===============================================  =============================
tenure_months              num     today (or ``end_date`` if churned) minus          ``tenure``
                                   ``first_contract_date`` / ``start_date``
                                   of the subscription (``sale.order``), months
recurring_monthly          num     ``sale.order.recurring_monthly`` (MRR)            ``MonthlyCharges``
commitment                 cat     plan period: ``sale.subscription.plan``           ``Contract``: Month-to-month
                                   ``billing_period_value/unit``: 1 month ->         -> monthly, One year ->
                                   monthly, 12 months -> annual, 24 -> biennial      annual, Two year -> biennial
auto_pay                   bool    ``sale.order.payment_token_id`` set (missing      ``PaymentMethod`` ends with
                                   when the field does not exist)                   "(automatic)"
payment_method             cat     ``automatic`` when a payment token is set, else   automatic / electronic
                                   missing                                          (Electronic check) / paper
                                                                                    (Mailed check)
paperless_billing          bool    missing (no Odoo equivalent)                     ``PaperlessBilling``
addons_count               num     missing (optional product lines not modelled)    Yes-count of OnlineSecurity,
                                                                                    OnlineBackup, DeviceProtection,
                                                                                    TechSupport, StreamingTV,
                                                                                    StreamingMovies
support_plan               bool    missing                                          ``TechSupport`` = Yes
product_line               cat     missing                                          ``InternetService``: dsl /
                                                                                    fiber / none
plan                       cat     ``plan_id`` name (Starter, Business, ...)        missing
seats                      num     ``sale.order.seats`` (missing if no such field)  missing
multi_seat                 bool    ``seats`` > 1 (missing if no seats field)        ``MultipleLines`` = Yes (No
                                                                                    phone service -> 0)
paused                     bool    ``subscription_state`` = ``4_paused``            missing
days_to_end                num     ``end_date`` minus today (missing: evergreen)    missing
overdue_invoices           num     posted ``out_invoice`` with ``payment_state``     missing
                                   not_paid/partial and ``invoice_date_due`` < today
overdue_amount             num     sum of their ``amount_residual``                 missing
unpaid_invoices            num     posted ``out_invoice`` not paid (due or not)      missing
failed_payments            num     ``payment.transaction`` in state ``error`` of    missing
                                   the company or its contacts, last 90 days
                                   (missing when the payment module is absent)
tickets_90d                num     ``helpdesk.ticket`` of the company or its         missing
                                   contacts created in the last 90 days
high_priority_tickets_90d  num     of those, ``priority`` 2 (high) or 3 (urgent)    missing
unresolved_tickets         num     open tickets (stage not closed), any age          missing
complaints_90d             num     of the 90-day tickets, category ``complaint``    missing
notice_days_left           num     the notice deadline the contracts agent read      missing
                                   from the subscription's contract (expiration
                                   minus notice period) minus today, days
                                   (negative: passed); missing until a contract
                                   attached to the ``sale.order`` is analysed
auto_renew                 bool    the contract's renewal clause: auto-renews (1)   missing
                                   or not (0); missing when the agent did not
                                   find the clause (never guessed)
=========================  ======  ===============================================  =============================

Telco's demographics (gender, SeniorCitizen, Partner, Dependents), ``PhoneService`` and ``TotalCharges``
(≈ tenure × MonthlyCharges) are deliberately not mapped: they have no SaaS counterpart. ``MultipleLines``
(more than one line on the account) maps onto ``multi_seat``, as Odoo's ``seats`` > 1 does. A model
trained on Telco gives no weight to the Odoo-only features (they are always missing there), and for
an Odoo account the Telco-only features are missing: their contribution is exactly zero and the
explanation says so. ``signoff train risk --source odoo`` fits on Odoo's own churned/active
subscriptions, where the Odoo-only features do carry weight.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from signoff.errors import DataError, OdooError, OdooMissingError
from signoff.integrations.odoo import OdooReader
from signoff.tools.contract_terms import ContractTermsStore

FeatureValue = float | str | None
Features = dict[str, FeatureValue]
Kind = Literal["num", "bool", "cat"]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: Kind
    label: str
    """How ``signoff risk explain`` names it."""
    categories: tuple[str, ...] = ()


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("tenure_months", "num", "tenure (months)"),
    FeatureSpec("recurring_monthly", "num", "monthly recurring revenue"),
    FeatureSpec("commitment", "cat", "contract commitment", ("monthly", "annual", "biennial")),
    FeatureSpec("auto_pay", "bool", "automatic payment"),
    FeatureSpec("payment_method", "cat", "payment method", ("automatic", "electronic", "paper")),
    FeatureSpec("paperless_billing", "bool", "paperless billing"),
    FeatureSpec("addons_count", "num", "add-ons in use"),
    FeatureSpec("support_plan", "bool", "support plan"),
    FeatureSpec("security_addon", "bool", "security add-on"),
    FeatureSpec("streaming_addons", "num", "usage add-ons in use"),
    FeatureSpec("product_line", "cat", "product line", ("dsl", "fiber", "none")),
    FeatureSpec("plan", "cat", "subscription plan", ("starter", "business", "enterprise")),
    FeatureSpec("seats", "num", "seats"),
    FeatureSpec("multi_seat", "bool", "more than one seat (line)"),
    FeatureSpec("paused", "bool", "subscription paused"),
    FeatureSpec("days_to_end", "num", "days to the subscription's end date"),
    FeatureSpec("overdue_invoices", "num", "overdue invoices"),
    FeatureSpec("overdue_amount", "num", "overdue amount"),
    FeatureSpec("unpaid_invoices", "num", "unpaid invoices"),
    FeatureSpec("failed_payments", "num", "failed payments"),
    FeatureSpec("tickets_90d", "num", "tickets in the last 90 days"),
    FeatureSpec("high_priority_tickets_90d", "num", "high-priority tickets (90 days)"),
    FeatureSpec("unresolved_tickets", "num", "unresolved tickets"),
    FeatureSpec("complaints_90d", "num", "complaints (90 days)"),
    FeatureSpec("notice_days_left", "num", "days left before the notice deadline"),
    FeatureSpec("auto_renew", "bool", "auto-renewal"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
SPECS: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}

#: Odoo ``subscription_state`` values of a subscription that is still running (or about to renew).
LIVE_STATES = ("3_progress", "4_paused", "2_renewal", "5_renewed", "7_upsell")
CHURNED_STATE = "6_churn"
TICKET_WINDOW_DAYS = 90
#: failed card charges count over this many days
PAYMENT_WINDOW_DAYS = 90


def empty_features() -> Features:
    return dict.fromkeys(FEATURE_NAMES)


@dataclass
class AccountSnapshot:
    """What the renewal agent knows of one account: identity, the subscription it would act on, features."""

    partner_id: int
    name: str
    features: Features
    subscription_id: int | None = None
    subscription_name: str | None = None
    subscription_state: str | None = None
    owner_uid: int | None = None
    """The account owner: the subscription's salesperson (``user_id``), else the partner's."""
    owner_name: str | None = None
    currency: str = "USD"
    sources: dict[str, str] = field(default_factory=dict)
    """Feature -> where it came from, or why it is missing."""
    term_end: str | None = None
    """ISO date the subscription's current term (renewal cycle) ends, or None when unknown (see
    :func:`current_term_end`); the renewal agent runs once per term."""

    @property
    def churned(self) -> bool:
        return self.subscription_state == CHURNED_STATE

    def to_json(self) -> dict[str, Any]:
        return {
            "partner_id": self.partner_id, "name": self.name, "features": self.features,
            "subscription_id": self.subscription_id, "subscription_name": self.subscription_name,
            "subscription_state": self.subscription_state, "owner_uid": self.owner_uid,
            "owner_name": self.owner_name, "currency": self.currency, "sources": self.sources,
            "term_end": self.term_end,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountSnapshot:
        return cls(**data)


# --- Odoo ----------------------------------------------------------------------------------------


def _m2o(value: Any) -> tuple[int | None, str | None]:
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), str(value[1])
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    return None, None


def _date(value: Any) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _months(start: date, end: date) -> float:
    return round(max(0.0, (end - start).days / 30.4375), 2)


def _fields(reader: OdooReader, model: str) -> set[str] | None:
    """Field names of ``model``, or None when the model is not installed."""
    try:
        return set(reader.fields_get(model, ["type"]))
    except (OdooMissingError, OdooError) as exc:
        if "doesn't exist" in str(exc) or isinstance(exc, OdooMissingError):
            return None
        raise


def _period_months(value: Any, unit: Any) -> float | None:
    try:
        months = int(value or 0) * {"week": 0.25, "month": 1, "year": 12}[str(unit)]
    except (KeyError, ValueError, TypeError):
        return None
    return float(months) if months > 0 else None


def _commitment(value: Any, unit: Any) -> str | None:
    months = _period_months(value, unit)
    if months is None:
        return None
    return "monthly" if months < 12 else "annual" if months < 24 else "biennial"


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months, clamped to the month's last day (Jan 31 + 1 -> Feb 28/29)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    first_next = date(year + (month == 11), (month + 1) % 12 + 1, 1)
    return date(year, month + 1, min(day.day, (first_next - timedelta(days=1)).day))


def current_term_end(today: date, *, anchor: date | None, period_months: float | None,
                     end: date | None = None) -> date | None:
    """The end of the subscription term that contains ``today`` (exclusive: the day the next term starts).

    ``anchor`` is a term boundary (Odoo's ``next_invoice_date``, else the start date) and ``period_months``
    the plan's billing period: the anchor is rolled forward by whole periods until it is after today.
    A fixed ``end`` date before that boundary ends the term there. None when neither is known (or a
    weekly plan, whose terms are shorter than a scoring period).
    """
    boundary: date | None = None
    if anchor is not None and period_months is not None and period_months >= 1:
        step, k = int(period_months), 0
        boundary = anchor
        if boundary <= today:
            k = ((today.year - anchor.year) * 12 + today.month - anchor.month) // step
            boundary = add_months(anchor, k * step)
            while boundary <= today:
                k += 1
                boundary = add_months(anchor, k * step)
    if end is not None and (boundary is None or end < boundary):
        return end
    return boundary


def account_partner_ids(reader: OdooReader) -> list[int]:
    """Companies (commercial partners) that have a subscription, by id."""
    rows = reader.search_read("sale.order", [["is_subscription", "=", True]], ["partner_id"], order="id asc")
    seen: dict[int, None] = {}
    for row in rows:
        pid, _ = _m2o(row["partner_id"])
        if pid is not None:
            seen.setdefault(pid, None)
    return list(seen)


def load_account(reader: OdooReader, partner_id: int, *, today: date | None = None,
                 contract_terms: ContractTermsStore | None = None, db: str = "signoff") -> AccountSnapshot:
    """The account's features from Odoo (see the module docstring for the mapping); the contract features
    from ``contract_terms`` (what the contracts agent read for Odoo database ``db``) when given."""
    today = today or date.today()
    rows = reader.read("res.partner", [partner_id], ["id", "name", "user_id", "child_ids"])
    if not rows:
        raise OdooMissingError(f"res.partner {partner_id} does not exist", name="MissingError")
    partner = rows[0]
    partner_ids = [partner_id, *[int(c) for c in partner.get("child_ids") or []]]
    feats = empty_features()
    sources: dict[str, str] = {}
    snap = AccountSnapshot(partner_id=partner_id, name=str(partner["name"]), features=feats, sources=sources)
    snap.owner_uid, snap.owner_name = _m2o(partner.get("user_id"))

    # -- subscription (sale.order, Enterprise sale_subscription fields) --------------------------
    so_fields = _fields(reader, "sale.order") or set()
    wanted = [f for f in ("name", "plan_id", "subscription_state", "start_date", "first_contract_date", "end_date",
                          "next_invoice_date", "recurring_monthly", "seats", "user_id", "payment_token_id",
                          "currency_code")
              if f in so_fields]
    subs: list[dict[str, Any]] = []
    if "is_subscription" in so_fields:
        subs = reader.search_read("sale.order", [["partner_id", "in", partner_ids], ["is_subscription", "=", True]],
                                  wanted, order="id desc")
    live = [s for s in subs if s.get("subscription_state") in LIVE_STATES]
    sub = max(live, key=lambda s: float(s.get("recurring_monthly") or 0.0)) if live else (subs[0] if subs else None)
    if sub is None:
        for name in ("tenure_months", "recurring_monthly", "commitment", "plan", "seats", "multi_seat", "paused",
                     "days_to_end", "auto_pay", "payment_method"):
            sources[name] = "missing: no subscription on sale.order"
    else:
        snap.subscription_id, snap.subscription_name = int(sub["id"]), str(sub.get("name") or sub["id"])
        snap.subscription_state = sub.get("subscription_state") or None
        owner = _m2o(sub.get("user_id"))
        if owner[0] is not None:
            snap.owner_uid, snap.owner_name = owner
        if sub.get("currency_code"):
            snap.currency = str(sub["currency_code"])
        start = _date(sub.get("first_contract_date")) or _date(sub.get("start_date"))
        end = _date(sub.get("end_date"))
        until = min(end, today) if end and snap.churned else today
        if start:
            feats["tenure_months"] = _months(start, until)
            sources["tenure_months"] = "sale.order.first_contract_date/start_date"
        else:
            sources["tenure_months"] = "missing: subscription has no start date"
        if sub.get("recurring_monthly") is not False and sub.get("recurring_monthly") is not None:
            feats["recurring_monthly"] = float(sub["recurring_monthly"])
            sources["recurring_monthly"] = "sale.order.recurring_monthly"
        if "seats" in sub and sub["seats"] not in (False, None):
            feats["seats"] = float(sub["seats"])
            feats["multi_seat"] = 1.0 if float(sub["seats"]) > 1 else 0.0
            sources["seats"] = "sale.order.seats"
            sources["multi_seat"] = "sale.order.seats > 1"
        else:
            sources["seats"] = sources["multi_seat"] = "missing: no seats field on sale.order"
        feats["paused"] = 1.0 if snap.subscription_state == "4_paused" else 0.0
        sources["paused"] = "sale.order.subscription_state"
        if end and not snap.churned:
            feats["days_to_end"] = float((end - today).days)
            sources["days_to_end"] = "sale.order.end_date"
        else:
            sources["days_to_end"] = "missing: no end date (evergreen)" if not end else "missing: churned"
        if "payment_token_id" in sub:
            has_token = bool(sub["payment_token_id"])
            feats["auto_pay"] = 1.0 if has_token else 0.0
            feats["payment_method"] = "automatic" if has_token else None
            sources["auto_pay"] = "sale.order.payment_token_id"
        else:
            sources["auto_pay"] = sources["payment_method"] = "missing: no payment_token_id on sale.order"
        plan_id, plan_name = _m2o(sub.get("plan_id"))
        period: float | None = None
        if plan_id is not None:
            feats["plan"] = (plan_name or "").strip().lower() or None
            sources["plan"] = "sale.order.plan_id"
            plan_fields = _fields(reader, "sale.subscription.plan") or set()
            if {"billing_period_value", "billing_period_unit"} <= plan_fields:
                plan = reader.read("sale.subscription.plan", [plan_id],
                                   ["billing_period_value", "billing_period_unit"])
                if plan:
                    feats["commitment"] = _commitment(plan[0]["billing_period_value"], plan[0]["billing_period_unit"])
                    period = _period_months(plan[0]["billing_period_value"], plan[0]["billing_period_unit"])
                    sources["commitment"] = "sale.subscription.plan.billing_period_*"
        sources.setdefault("commitment", "missing: plan period unknown")
        next_invoice = _date(sub.get("next_invoice_date"))
        if snap.churned:
            term = end
        elif snap.subscription_state == "4_paused" and next_invoice is None:
            term = end if end and end >= today else None  # paused, nothing invoiced next: the term is unknown
        else:
            term = current_term_end(today, anchor=next_invoice or start,
                                    period_months=period, end=end if end and end >= today else None)
        snap.term_end = term.isoformat() if term else None

    # -- invoices (account.move) ----------------------------------------------------------------
    if _fields(reader, "account.move") is None:
        for name in ("overdue_invoices", "overdue_amount", "unpaid_invoices"):
            sources[name] = "missing: account.move not installed"
    else:
        invoices = reader.search_read(
            "account.move",
            [["partner_id", "in", partner_ids], ["move_type", "=", "out_invoice"], ["state", "=", "posted"]],
            ["invoice_date_due", "payment_state", "amount_residual"],
        )
        unpaid = [i for i in invoices if i.get("payment_state") in ("not_paid", "partial")]
        overdue = [i for i in unpaid if (_date(i.get("invoice_date_due")) or today) < today]
        feats["overdue_invoices"] = float(len(overdue))
        feats["overdue_amount"] = round(sum(float(i.get("amount_residual") or 0.0) for i in overdue), 2)
        feats["unpaid_invoices"] = float(len(unpaid))
        for name in ("overdue_invoices", "overdue_amount", "unpaid_invoices"):
            sources[name] = f"account.move ({len(invoices)} posted invoices)"

    # -- card charges (payment.transaction, the payment module) ----------------------------------
    if _fields(reader, "payment.transaction") is None:
        sources["failed_payments"] = "missing: payment.transaction not installed (no payment module)"
    else:
        since_dt = datetime.combine(today, datetime.min.time()) - timedelta(days=PAYMENT_WINDOW_DAYS)
        failed = reader.search_count(
            "payment.transaction",
            [["partner_id", "in", partner_ids], ["state", "=", "error"],
             ["last_state_change", ">=", since_dt.strftime("%Y-%m-%d %H:%M:%S")]],
        )
        feats["failed_payments"] = float(failed)
        sources["failed_payments"] = f"payment.transaction in state error, last {PAYMENT_WINDOW_DAYS} days"

    # -- tickets (helpdesk.ticket, OCA helpdesk_mgmt) -------------------------------------------
    if _fields(reader, "helpdesk.ticket") is None:
        for name in ("tickets_90d", "high_priority_tickets_90d", "unresolved_tickets", "complaints_90d"):
            sources[name] = "missing: helpdesk not installed"
    else:
        since = (datetime.combine(today, datetime.min.time()) - timedelta(days=TICKET_WINDOW_DAYS))
        tickets = reader.search_read("helpdesk.ticket", [["partner_id", "in", partner_ids]],
                                     ["create_date", "priority", "category_id", "closed"])
        recent = [t for t in tickets if str(t.get("create_date") or "") >= since.strftime("%Y-%m-%d %H:%M:%S")]
        feats["tickets_90d"] = float(len(recent))
        feats["high_priority_tickets_90d"] = float(sum(1 for t in recent if str(t.get("priority")) in ("2", "3")))
        feats["unresolved_tickets"] = float(sum(1 for t in tickets if not t.get("closed")))
        feats["complaints_90d"] = float(sum(1 for t in recent if (_m2o(t.get("category_id"))[1] or "") == "complaint"))
        for name in ("tickets_90d", "high_priority_tickets_90d", "unresolved_tickets", "complaints_90d"):
            sources[name] = f"helpdesk.ticket ({len(tickets)} tickets of the company and its contacts)"

    # -- not available from Odoo -----------------------------------------------------------------
    for name in ("paperless_billing", "addons_count", "support_plan", "security_addon", "streaming_addons",
                 "product_line"):
        sources[name] = "missing: no Odoo counterpart (a Telco-only feature)"
    _contract_features(snap, contract_terms, db, today)
    return snap


def _contract_features(snap: AccountSnapshot, terms: ContractTermsStore | None, db: str, today: date) -> None:
    """``notice_days_left`` and ``auto_renew`` from the contract the contracts agent analysed for the
    subscription (:mod:`signoff.tools.contract_terms`); missing, with the reason, when there is none."""
    feats, sources = snap.features, snap.sources
    if terms is None:
        reason = "missing: not read (no store of the contracts agent's terms given)"
    elif snap.subscription_id is None:
        reason = "missing: no subscription to attach a contract to"
    else:
        found = terms.latest(db, "sale.order", snap.subscription_id)
        if found is None:
            reason = (f"missing: no contract of sale.order {snap.subscription_id} analysed yet "
                      "(signoff contracts summarise --odoo-id N)")
        else:
            where = (f"contracts agent: {found.name} (attachment {found.attachment_id}, "
                     f"analysed {found.analysed_at[:10]})")
            if found.notice_deadline is not None:
                feats["notice_days_left"] = float((found.notice_deadline - today).days)
                sources["notice_days_left"] = f"{where}, notice deadline {found.notice_deadline.isoformat()}"
            else:
                sources["notice_days_left"] = f"missing: {where} found no notice deadline"
            if found.auto_renewal is not None:
                feats["auto_renew"] = 1.0 if found.auto_renewal else 0.0
                sources["auto_renew"] = where
            else:
                sources["auto_renew"] = f"missing: {where} found no renewal clause"
            return
    for name in ("notice_days_left", "auto_renew"):
        sources[name] = reason


def odoo_labelled_history(reader: OdooReader, *, today: date | None = None,
                          contract_terms: ContractTermsStore | None = None,
                          db: str = "signoff") -> tuple[list[Features], list[int]]:
    """Accounts with a subscription, labelled churned (``6_churn``) or not: history for ``--source odoo``.

    ``auto_renew`` comes from analysed contracts (a lasting property of the contract); ``notice_days_left``
    is left missing in history, because days left *today* says nothing about a subscription that churned
    months ago (it would teach the model a leak)."""
    feats, labels = [], []
    for pid in account_partner_ids(reader):
        snap = load_account(reader, pid, today=today, contract_terms=contract_terms, db=db)
        if snap.subscription_state is None:
            continue
        snap.features["notice_days_left"] = None
        feats.append(snap.features)
        labels.append(1 if snap.churned else 0)
    return feats, labels


# --- IBM Telco ------------------------------------------------------------------------------------

_ADDONS = ("OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV", "StreamingMovies")
_COMMITMENT = {"Month-to-month": "monthly", "One year": "annual", "Two year": "biennial"}
_PRODUCT = {"DSL": "dsl", "Fiber optic": "fiber", "No": "none"}


def _yes(value: str) -> float | None:
    return {"Yes": 1.0, "No": 0.0}.get(value.strip())


def _cell(row: dict[str, str], column: str) -> str:
    """A cell, stripped; "" when the column or the cell is missing (a short row reads as None)."""
    return (row.get(column) or "").strip()


def _number(row: dict[str, str], column: str) -> float | None:
    """A numeric cell: None when empty; anything else that is not a finite number is a :class:`DataError`
    naming the column (:func:`read_telco` adds the file and line)."""
    raw = _cell(row, column)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise DataError(f"{column} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{column} must be a finite number, got {raw!r}")
    return value


def telco_features(row: dict[str, str]) -> Features:
    """One Telco row mapped onto the shared features (see the module docstring). A non-numeric
    ``tenure`` or ``MonthlyCharges`` is a :class:`DataError` naming the column."""
    feats = empty_features()
    feats["tenure_months"] = _number(row, "tenure")
    feats["recurring_monthly"] = _number(row, "MonthlyCharges")
    feats["commitment"] = _COMMITMENT.get(_cell(row, "Contract"))
    method = _cell(row, "PaymentMethod")
    if method:
        automatic = method.endswith("(automatic)")
        feats["auto_pay"] = 1.0 if automatic else 0.0
        feats["payment_method"] = ("automatic" if automatic else "electronic" if method == "Electronic check"
                                   else "paper" if method == "Mailed check" else None)
    feats["paperless_billing"] = _yes(_cell(row, "PaperlessBilling"))
    addons = [_cell(row, c) for c in _ADDONS]
    feats["addons_count"] = float(sum(v == "Yes" for v in addons)) if all(addons) else None
    support = _cell(row, "TechSupport")
    feats["support_plan"] = 1.0 if support == "Yes" else 0.0 if support else None
    security = _cell(row, "OnlineSecurity")
    feats["security_addon"] = 1.0 if security == "Yes" else 0.0 if security else None
    streaming = [_cell(row, c) for c in ("StreamingTV", "StreamingMovies")]
    feats["streaming_addons"] = float(sum(v == "Yes" for v in streaming)) if all(streaming) else None
    feats["product_line"] = _PRODUCT.get(_cell(row, "InternetService"))
    lines = _cell(row, "MultipleLines")
    feats["multi_seat"] = 1.0 if lines == "Yes" else 0.0 if lines in ("No", "No phone service") else None
    return feats


def read_telco(path: Path) -> tuple[list[str], list[Features], list[int]]:
    """(customer ids, features, labels 1 = churned) of a Telco CSV, read in place. A malformed row is a
    :class:`DataError` naming ``file:line`` and the column."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from exc
    ids, feats, labels = [], [], []
    for n, row in enumerate(rows, 2):
        churn = _cell(row, "Churn")
        if churn not in ("Yes", "No"):
            raise DataError(f"{path}:{n}: Churn must be Yes or No, got {churn!r}")
        ids.append(row.get("customerID") or str(n))
        try:
            feats.append(telco_features(row))
        except DataError as exc:
            raise DataError(f"{path}:{n}: {exc}") from exc
        labels.append(1 if churn == "Yes" else 0)
    return ids, feats, labels


def telco_paths(public_data_dir: Path) -> tuple[Path, Path]:
    churn = Path(public_data_dir) / "churn"
    return churn / "telco_churn_dev.csv", churn / "telco_churn_test.csv"


def coverage(features: Sequence[Features]) -> dict[str, float]:
    """Share of rows where each feature is present (documentation and tests)."""
    n = max(1, len(features))
    return {name: sum(f.get(name) is not None for f in features) / n for name in FEATURE_NAMES}
