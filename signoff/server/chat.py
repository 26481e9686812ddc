"""Chat intents for the renewal-risk and contracts agents (the Slack bridge routes messages here).

Read paths only answer: "which accounts are at risk (this month)?" scores every subscription
account with the renewal agent's read path (:func:`signoff.agents.renewal.assess`, no run, no
proposal); "summarise Acme's contract" / "summarise contract 12" analyses the contract attached in
Odoo with the contracts agent's analyser (:func:`signoff.agents.contracts.analyse`, nothing stored).
Customer names are matched against ``res.partner`` through the read-only reader.

Writes they suggest start the agent's own run, whose proposals go through the gate and are posted
as approval messages like triage's: ``risk 7`` (renewal agent on partner 7), ``review contract 12``
(contracts agent on attachment 12).
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any

from signoff.domain import check_odoo_id
from signoff.errors import ModelNotTrained

if TYPE_CHECKING:
    from signoff.server.services import ServerServices

RISK_UNTRAINED = ("No renewal-risk model is trained yet, so I can't score accounts. Train it with "
                  "`signoff train risk` (the public Telco data; `--source odoo` fits on your own churned "
                  "subscriptions), then ask again.")
CONTRACTS_UNTRAINED = ("No contracts model is trained yet, so I can't read contracts. Train it with "
                       "`signoff contracts train` (a few minutes on 2 cores; `--limit 10` for a quick try), "
                       "then ask again.")

def record_id(text: str, what: str) -> int:
    """An id typed in chat, checked as every other way in checks it (ValueError names the rule)."""
    return check_odoo_id(int(text), what)


# -- intent patterns (applied to the message with the bot mention removed) ---------------------------

RISK_RUN = re.compile(r"^\s*(?:risk|renewal)\s+(?:run\s+)?(?:on\s+|for\s+)?(?:account|partner|customer)?\s*#?(-?\d+)"
                      r"\s*[.!]*\s*$", re.I)
AT_RISK = re.compile(r"\bat[- ]risk\b|\bchurn|\brenewal[- ]risk\b|\brisky\b", re.I)
REVIEW_CONTRACT = re.compile(r"^\s*review\s+contract\s*#?(-?\d+)\s*[.!]*\s*$", re.I)
CONTRACT_ID = re.compile(r"\b(?:summar(?:is|iz)e|summary|terms|read)\b.*?\bcontract\s*#?(-?\d+)\b", re.I | re.S)
CONTRACT_OF = re.compile(r"\b(?:summar(?:is|iz)e|summary\s+of|terms\s+of|read)\s+(?:the\s+)?(.+?)(?:'s|’s|s')?"
                         r"\s+contracts?\b", re.I | re.S)
CONTRACT_FOR = re.compile(r"\b(?:summar(?:is|iz)e|summary|terms)\b.*?\bcontracts?\s+(?:of|for|with)\s+(.+?)\s*[?.!]*$",
                          re.I | re.S)
THIS_MONTH = re.compile(r"\bthis month\b", re.I)
TOP_N = re.compile(r"\btop\s+(\d{1,2})\b", re.I)


def contract_customer(text: str) -> str | None:
    """The customer name in "summarise Acme's contract" / "summarise the contract for Acme Corp"."""
    for pattern in (CONTRACT_FOR, CONTRACT_OF):
        if match := pattern.search(text):
            name = match.group(1).strip(" \t\"'`*")
            if name and name.lower() not in ("the", "a", "this", "that", "my", "our"):
                return name
    return None


# -- renewal risk ------------------------------------------------------------------------------------


def _days_left_in_month(today: date) -> int:
    nxt = date(today.year + (today.month == 12), today.month % 12 + 1, 1)
    return (nxt - today).days


def at_risk(svc: ServerServices, text: str = "", *, top: int = 5) -> str:
    """The accounts most likely to churn, with band and top driver (read-only: nothing is proposed)."""
    from signoff.agents.renewal import assess, renewal_runner
    from signoff.tools.accounts import account_partner_ids

    if match := TOP_N.search(text):
        top = max(1, min(20, int(match.group(1))))
    this_month = bool(THIS_MONTH.search(text))
    with renewal_runner(svc.rt) as runner:
        services = runner.services
        try:
            services.model.model  # noqa: B018 - load the model (or say how to train it) before reading accounts
        except ModelNotTrained:
            return RISK_UNTRAINED
        rows = []
        for pid in account_partner_ids(svc.rt.reader):
            snap, score, _ = assess(services, pid)
            if not snap.churned:
                rows.append((snap, score))
        today = services.day()
    if not rows:
        return "No live subscription accounts to score."
    rows.sort(key=lambda r: -r[1].probability)
    month_left = _days_left_in_month(today)
    # The current term's end, as `signoff risk explain` and the renewal cycle read it (next invoice date rolled
    # forward, or an earlier fixed end date), not the subscription's end date alone.
    days_left = {s.partner_id: (date.fromisoformat(snap.term_end) - today).days for snap, s in rows if snap.term_end}
    ending = {pid for pid, days in days_left.items() if 0 <= days < month_left}
    model = rows[0][1].model_version
    head = f"*Accounts most at risk* (of {len(rows)} live accounts, churn probability from model `{model}`)"
    if this_month:
        head += (f"; {len(ending)} of them reach the end of their term this month" if ending
                 else "; none of them reaches the end of its term this month")
    lines = [head + ":"]
    for i, (snap, s) in enumerate(rows[:top], 1):
        driver = next((d.text for d in s.drivers if d.contribution > 0), None) or \
            (s.drivers[0].text if s.drivers else "no single driver")
        end = (f" · :alarm_clock: current term ends {snap.term_end} (in {days_left[s.partner_id]} days)"
               if s.partner_id in ending else "")
        lines.append(f"{i}. *{s.name}* (partner {s.partner_id}): {s.probability:.0%} "
                     f"({s.interval[0]:.0%}–{s.interval[1]:.0%}), band *{s.band}*, confidence {s.confidence:.2f}"
                     f" · top driver: {driver}{end}")
    first = rows[0][1].partner_id
    lines.append(f"Say `risk {first}` to run the renewal agent on an account: its CSM follow-up and retention "
                 "offer are posted here for approval; nothing is written before someone approves.")
    return "\n".join(lines)


def run_risk(svc: ServerServices, partner_id: int, actor: str) -> str:
    """Start (or show) the renewal agent's run on one account; its proposals are posted for approval."""
    from signoff.agents.renewal import parse_thread, renewal_runner

    with renewal_runner(svc.rt) as runner:
        try:
            runner.services.model.model  # noqa: B018
        except ModelNotTrained:
            return RISK_UNTRAINED
        thread = runner.current_thread(partner_id)  # one run per account and renewal cycle
        svc.rt.audit.append("chat.risk_requested", thread, actor, {"partner": partner_id}, thread_id=thread)
        with svc.lock(thread):
            run = runner.run(partner_id, cycle=parse_thread(thread)[2])
    if run.status == "failed" or run.score is None:
        return f"The renewal agent could not score partner {partner_id}: {run.error}"
    posted = svc.publish(thread)
    s = run.score
    lines = [f"*{s.name}* (partner {s.partner_id}): churn probability {s.probability:.0%} "
             f"({s.interval[0]:.0%}–{s.interval[1]:.0%}), band *{s.band}*, confidence {s.confidence:.2f}."]
    lines += [f"• {d.text}" for d in s.drivers[:3]]
    if run.status == "duplicate":
        lines.append("This account already has a run this renewal cycle: the score above is fresh, and no new "
                     "proposal was made.")
    pending = [p for p in svc.rt.store.find(thread_id=thread) if p.state == "pending"]
    if pending:
        where = f" in #{svc.slack.channel.lstrip('#')}" if svc.slack and posted else ""
        lines.append(f"{len(pending)} proposal(s) wait for approval{where}: "
                     + ", ".join(f"{p.action} ({p.approver_group})" for p in pending) + ".")
    lines += [f"• needs a human: {r}" for r in s.reasons]
    return "\n".join(lines)


# -- contracts ---------------------------------------------------------------------------------------


def _value(v: Any) -> str:
    from signoff.agents.contracts_cli import _value as show

    return show(v)


def find_contracts(svc: ServerServices, customer: str) -> tuple[str, list[dict[str, Any]]] | str:
    """(customer name, contract attachments on its sale orders), or a message saying what is wrong."""
    from signoff.tools.contracts import ATTACHMENT_META

    reader = svc.rt.reader
    rows = reader.search_read("res.partner", [["name", "ilike", customer]], ["id", "name", "parent_id"], limit=20)
    companies = [r for r in rows if not r.get("parent_id")] or rows
    exact = [r for r in companies if str(r["name"]).lower() == customer.lower()]
    matches = exact or companies
    if not matches:
        return f"I can't find a customer called {customer!r} in Odoo."
    if len(matches) > 1:
        names = ", ".join(f"{r['name']} ({r['id']})" for r in matches[:6])
        return f"{customer!r} matches several customers: {names}. Which one? (or say `summarise contract <id>`)"
    partner = matches[0]
    children = reader.search_read("res.partner", [["parent_id", "=", partner["id"]]], ["id"])
    ids = [int(partner["id"]), *[int(c["id"]) for c in children]]
    orders = reader.search_read("sale.order", [["partner_id", "in", ids]], ["id"])
    if not orders:
        return f"{partner['name']} has no sale order in Odoo, so no contract attached to one."
    attachments = reader.search_read(
        "ir.attachment", [["res_model", "=", "sale.order"], ["res_id", "in", [int(o["id"]) for o in orders]]],
        ATTACHMENT_META)
    contracts = [a for a in attachments if str(a.get("mimetype") or "").startswith("text/")
                 or str(a.get("mimetype") or "").endswith("/pdf")]
    if not contracts:
        return f"{partner['name']} has no contract (text or PDF) attached to its sale orders."
    return str(partner["name"]), contracts


def summarise_contract(svc: ServerServices, text: str, *, model: Any = None) -> str:
    """Key terms of a contract in Odoo (by attachment id or customer name), from the contracts analyser."""
    from signoff.agents.contracts import LazyClauseModel, analyse, clause_policy_for
    from signoff.tools.contracts import load_attachment

    extra = ""
    if match := CONTRACT_ID.search(text):
        attachment_id = record_id(match.group(1), "attachment")
    else:
        customer = contract_customer(text)
        if customer is None:
            return "Whose contract? Say `summarise Acme's contract` or `summarise contract <attachment id>`."
        found = find_contracts(svc, customer)
        if isinstance(found, str):
            return found
        name, contracts = found
        attachment_id = int(contracts[0]["id"])
        if len(contracts) > 1:
            others = ", ".join(f"{c['name']} ({c['id']})" for c in contracts[1:5])
            extra = f"\n{name} has {len(contracts)} contracts; the others: {others} (`summarise contract <id>`)."
    settings = svc.rt.settings
    clause_model: Any = model or LazyClauseModel(settings)
    try:
        clause_model.version  # noqa: B018 - loads the model (or says how to train it) before reading Odoo
    except ModelNotTrained:
        return CONTRACTS_UNTRAINED
    source = load_attachment(svc.rt.reader, attachment_id, db=settings.odoo_db)
    c = analyse(source, clause_model, clause_policy_for(settings))
    where = f", on {c.res_model}({c.res_id})" if c.res_model else ""
    lines = [f"*{c.name}* (attachment {attachment_id}{where}; {c.n_chars:,} characters, model `{c.model_version}`)"]
    from signoff.agents.contracts import LABELS

    for t in c.terms:
        label = LABELS.get(t.key, t.key)
        if t.status == "found":
            value = _value(t.value) if t.value not in (None, "", [], {}) else "present"
            lines.append(f"• {label}: {value} ({t.confidence:.2f})")
        elif t.status == "needs_review":
            lines.append(f"• {label}: _needs review_ (confidence {t.confidence:.2f} is below {t.threshold:.2f}; "
                         "not shown as a value)")
    missing = [LABELS.get(t.key, t.key).lower() for t in c.terms if t.status == "not_found"]
    if missing:
        lines.append("Not found: " + ", ".join(missing) + ".")
    if c.summary:
        lines.append("*Summary*: " + " ".join(s.text for s in c.summary))
    if c.notice_deadline:
        lines.append(f"*Renewal decision deadline*: {c.notice_deadline}")
    for d in c.deviations[:5]:
        lines.append(f":warning: {d.severity}: {d.message}")
    if c.injection:
        lines.append(":rotating_light: The contract contains text addressed to an AI; it was ignored.")
    lines.append(f"Say `review contract {attachment_id}` to run the contracts agent: a renewal reminder before "
                 "the notice deadline and a legal review of deviations are posted here for approval.")
    return "\n".join(lines) + extra


def review_contract(svc: ServerServices, attachment_id: int, actor: str, *, model: Any = None) -> str:
    """Run the contracts agent on an attachment; its proposals are posted for approval."""
    from signoff.agents.contracts import contract_runner

    with contract_runner(svc.rt, model=model) as runner:
        thread = runner.thread_for(attachment_id)
        try:
            runner.services.model.version  # noqa: B018
        except ModelNotTrained:
            return CONTRACTS_UNTRAINED
        svc.rt.audit.append("chat.contract_review_requested", thread, actor, {"attachment": attachment_id},
                            thread_id=thread)
        with svc.lock(thread):
            status, summary = runner.run(attachment_id)
    if summary is None:
        return f"The contracts agent found nothing to read in attachment {attachment_id}."
    svc.publish(thread)
    lines = [f"*{summary.name}*: " + ("already reviewed; " if status == "duplicate" else "")
             + (f"renewal decision deadline {summary.notice_deadline}" if summary.notice_deadline
                else "no renewal decision deadline found")
             + f", {len(summary.deviations)} deviation(s) from the clause policy."]
    pending = [p for p in svc.rt.store.find(thread_id=thread) if p.state == "pending"]
    if pending:
        lines.append(f"{len(pending)} proposal(s) wait for approval: "
                     + ", ".join(f"{p.action} ({p.approver_group})" for p in pending) + ".")
    lines += [f"• note: {r}" for r in summary.reasons]
    return "\n".join(lines)
