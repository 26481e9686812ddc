"""The contracts agent: load -> screen -> analyse -> decide -> gate -> execute -> finish (a LangGraph graph).

Input: a contract attached in Odoo (``ir.attachment``, text or PDF, read through the read-only view)
or a file. The embedded analyser (:func:`analyse`) chunks the text with exact offsets, scores every
chunk per CUAD category with the calibrated clause model (:mod:`signoff.llm.clauses`), reads dates,
durations and jurisdictions out of the chosen spans with patterns, computes the renewal decision
deadline (expiration minus notice period) and checks the clause policy. A term under its threshold is
``needs_review`` or ``not_found``: it is never shown as a value.

Proposals, through the same gate and executor as triage: ``contract.renewal_reminder`` (an activity
on the sale order, due before the notice deadline) and ``contract.legal_review`` (an activity for the
legal group when deviations are flagged). Thread id: ``contract:<db>:<attachment id>`` or
``contract:file:<sha256[:16]>``; a file is a report only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict

import yaml
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, ValidationError

from signoff.agents.approval_steps import UNFINISHED, approval_graph, await_decisions, execute_approved, finish_writes
from signoff.config import Settings
from signoff.domain import (
    ContractSummary,
    ContractTerm,
    Deviation,
    Proposal,
    SourceSpan,
    SummarySentence,
    proposal_id,
    utcnow,
)
from signoff.errors import PolicyError
from signoff.guardrails.audit import AuditLog
from signoff.guardrails.executor import Executor
from signoff.guardrails.policy import Policy, parse_duration
from signoff.guardrails.screens import find_injection
from signoff.guardrails.store import ApprovalStore
from signoff.integrations.odoo import OdooReader
from signoff.llm.clause_llm import LLMSpanPicker
from signoff.llm.clauses import CATEGORIES, Candidate, ClauseModel, candidates
from signoff.tools.contract_terms import ContractTermsStore
from signoff.tools.contracts import (
    ContractSource,
    Duration,
    find_dates,
    find_durations,
    find_governing_law,
    find_parties,
    load_attachment,
)

AGENT = "agent:contracts"
DEFAULT_CLAUSE_POLICY = Path(__file__).resolve().parent.parent / "guardrails" / "contract_policy.yaml"
TARGET_MODEL = "sale.order"
RENEWAL_ACTION = "contract.renewal_reminder"
LEGAL_ACTION = "contract.legal_review"

#: Our field name -> CUAD category, in display order.
TERMS: tuple[tuple[str, str], ...] = (
    ("parties", "Parties"),
    ("agreement_date", "Agreement Date"),
    ("effective_date", "Effective Date"),
    ("expiration_date", "Expiration Date"),
    ("renewal_term", "Renewal Term"),
    ("notice_period", "Notice Period To Terminate Renewal"),
    ("termination_for_convenience", "Termination For Convenience"),
    ("liability_cap", "Cap On Liability"),
    ("uncapped_liability", "Uncapped Liability"),
    ("governing_law", "Governing Law"),
    ("minimum_commitment", "Minimum Commitment"),
    ("price_restrictions", "Price Restrictions"),
    ("exclusivity", "Exclusivity"),
    ("change_of_control", "Change Of Control"),
    ("anti_assignment", "Anti-Assignment"),
)
assert {c for _k, c in TERMS} == set(CATEGORIES)
LABELS = {
    "parties": "Parties", "agreement_date": "Agreement date", "effective_date": "Effective date",
    "expiration_date": "Expiration", "renewal_term": "Renewal term", "notice_period": "Notice to stop renewal",
    "termination_for_convenience": "Termination for convenience", "liability_cap": "Liability cap",
    "uncapped_liability": "Uncapped liability", "governing_law": "Governing law",
    "minimum_commitment": "Minimum commitment", "price_restrictions": "Price restrictions",
    "exclusivity": "Exclusivity", "change_of_control": "Change of control", "anti_assignment": "Anti-assignment",
}
MAX_SPANS = {"parties": 6}


# --- the clause policy ---------------------------------------------------------------------------


class ClauseRules(BaseModel):
    auto_renewal_max_notice_days: int | None = 60
    flag_uncapped_liability: bool = True
    flag_missing_liability_cap: bool = False
    flag_customer_termination_for_convenience: bool = True
    customer_roles: list[str] = Field(default_factory=lambda: ["customer", "client", "licensee", "either party"])
    governing_law_allowed: list[str] | None = None
    flag_exclusivity: bool = False
    flag_change_of_control: bool = False


class ProposalRules(BaseModel):
    reminder_lead_days: int = 30
    legal_review_due_days: int = 5


class ClausePolicy(BaseModel):
    version: int | str = 1
    review_floor: float = Field(default=0.15, ge=0.0, le=1.0)
    min_confidence: dict[str, float] = Field(default_factory=dict)
    rules: ClauseRules = Field(default_factory=ClauseRules)
    proposals: ProposalRules = Field(default_factory=ProposalRules)

    def threshold(self, category: str, model_threshold: float | None) -> float:
        if category in self.min_confidence:
            return float(self.min_confidence[category])
        return 1.0 + 1e-9 if model_threshold is None else float(model_threshold)


def load_clause_policy(path: Path | None = None) -> ClausePolicy:
    path = path or DEFAULT_CLAUSE_POLICY
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise PolicyError(f"cannot read clause policy {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"clause policy {path} is not valid YAML: {exc}") from exc
    try:
        policy = ClausePolicy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"clause policy {path} is invalid:\n{exc}") from exc
    unknown = set(policy.min_confidence) - set(CATEGORIES)
    if unknown:
        raise PolicyError(f"clause policy {path}: unknown categories in min_confidence: {sorted(unknown)}")
    return policy


# --- analysis (model + patterns) -----------------------------------------------------------------


def _span(text: str, start: int, end: int) -> SourceSpan:
    return SourceSpan(start=start, end=end, text=text[start:end])


def _merge(text: str, cands: list[Candidate], limit: int) -> list[SourceSpan]:
    """Spans of the chosen candidates in text order; touching chunks (consecutive) are joined."""
    chosen = sorted(cands[:limit], key=lambda c: c.start)
    out: list[tuple[int, int, int]] = []  # start, end, last chunk index
    for c in chosen:
        if out and c.chunk == out[-1][2] + 1 and c.start - out[-1][1] <= 3:
            out[-1] = (out[-1][0], c.end, c.chunk)
        else:
            out.append((c.start, c.end, c.chunk))
    return [_span(text, s, e) for s, e, _ in out]


def _duration_near(text: str, spans: list[SourceSpan], cue: str, *, not_after: str | None = None) -> Duration | None:
    """The duration closest to a cue word (e.g. "notice") inside the spans; None if no duration.
    ``not_after``: skip durations within 60 characters after this pattern (a notice period is not a
    renewal term)."""
    best: tuple[int, Duration] | None = None
    for sp in spans:
        durations = [d for d in find_durations(sp.text, sp.start)
                     if not (not_after and re.search(not_after, text[max(0, d.start - 60) : d.start], re.I))]
        cues = [m.start() + sp.start for m in re.finditer(cue, sp.text, flags=re.I)]
        for d in durations:
            dist = min((abs(d.start - c) for c in cues), default=10_000)
            if best is None or dist < best[0]:
                best = (dist, d)
    return best[1] if best else None


def _duration_value(d: Duration) -> dict[str, Any]:
    return {"value": d.value, "unit": d.unit, "days": d.days, "label": d.label,
            "source": {"start": d.start, "end": d.end}}


_AUTO_RENEW = re.compile(r"automatic(?:ally)?\s+(?:be\s+)?(?:renew|extend)|renew(?:ed|s)?\s+automatically|"
                         r"successive|evergreen|shall\s+(?:be\s+)?(?:renew|extend)|unless\s+(?:either|one|a)\s+party"
                         r"[^.]{0,80}notice", re.I)
_PERPETUAL = re.compile(r"\b(?:perpetual|indefinite(?:ly)?|in perpetuity)\b", re.I)


def analyse(source: ContractSource, model: ClauseModel, policy: ClausePolicy, *, today: date | None = None,
            evidence: bool = True, llm: LLMSpanPicker | None = None) -> ContractSummary:
    """Key terms with spans and calibrated confidences, the notice deadline, deviations and a summary.

    With ``llm`` (the LLM path, :mod:`signoff.llm.clause_llm`), the categories it covers are decided by
    the LLM among the chunks holding the embedded model's best candidates, its quote verified."""
    text = source.text
    today = today or utcnow().date()
    chunks, proba, vecs = model.score(text)
    cands = candidates(text, chunks, proba, categories=model.categories, top=12,
                       ranker=getattr(model, "ranker", None))
    terms: dict[str, ContractTerm] = {}
    for key, cat in TERMS:
        found = cands.get(cat, [])
        thr = policy.threshold(cat, model.thresholds.get(cat))
        if llm is not None and cat in llm.categories:
            terms[key] = _llm_term(llm, key, cat, text, chunks, found, thr, policy.review_floor)
            continue
        best = found[0].score if found else 0.0
        if found and best >= thr:
            above = [c for c in found if c.score >= thr]
            spans = _merge(text, above, MAX_SPANS.get(key, 2))
            ev = model.evidence(vecs[found[0].chunk], cat) if evidence and len(vecs) else []
            terms[key] = ContractTerm(key=key, category=cat, status="found", confidence=round(best, 4),
                                      threshold=round(thr, 4), spans=spans, evidence=ev)
        else:
            status: Literal["needs_review", "not_found"] = (
                "needs_review" if best >= policy.review_floor else "not_found")
            terms[key] = ContractTerm(key=key, category=cat, status=status, confidence=round(best, 4),
                                      threshold=round(thr, 4))

    _read_values(text, terms)
    deadline, deadline_note = notice_deadline(terms, today)
    summary = ContractSummary(
        thread_id=source.thread_id, name=source.name, sha256=source.sha256, db=source.db,
        attachment_id=source.attachment_id, res_model=source.res_model, res_id=source.res_id,
        n_chars=len(text), terms=[terms[k] for k, _ in TERMS],
        model_version=model.version + (f"+{llm.version}" if llm is not None else ""),
        notice_deadline=deadline.isoformat() if deadline else None,
        injection=find_injection(text)[:5],
    )
    summary.deviations = deviations(terms, policy)
    summary.summary = summarise(terms, summary, deadline_note)
    return summary


def _llm_term(llm: LLMSpanPicker, key: str, cat: str, text: str, chunks: list[Any], found: list[Candidate],
              thr: float, floor: float) -> ContractTerm:
    """A term decided by the LLM among the chunks of the best candidates (verified quote, or review)."""
    passages: list[tuple[int, int]] = []
    for c in found:
        ch = chunks[c.chunk] if 0 <= c.chunk < len(chunks) else None
        span = (ch.start, ch.end) if ch is not None and ch.start <= c.start and c.end <= ch.end else (c.start, c.end)
        if span not in passages:
            passages.append(span)
        if len(passages) >= llm.k:
            break
    pick = llm.pick(cat, text, passages)
    ev = [pick.evidence()]
    if pick.status == "picked" and pick.start is not None and pick.end is not None and pick.confidence >= thr:
        return ContractTerm(key=key, category=cat, status="found", confidence=round(pick.confidence, 4),
                            threshold=round(thr, 4), spans=[_span(text, pick.start, pick.end)], evidence=ev)
    if pick.status == "rejected":  # fail closed: a person looks, nothing is guessed
        return ContractTerm(key=key, category=cat, status="needs_review", confidence=0.0, threshold=round(thr, 4),
                            evidence=ev)
    conf = pick.confidence if pick.status == "picked" else 1.0 - pick.confidence
    status: Literal["needs_review", "not_found"] = "needs_review" if conf >= floor else "not_found"
    return ContractTerm(key=key, category=cat, status=status, confidence=round(conf, 4), threshold=round(thr, 4),
                        evidence=ev)


def _read_values(text: str, terms: dict[str, ContractTerm]) -> None:
    """Normalised values out of the found spans (patterns; no model)."""

    def found(key: str) -> ContractTerm | None:
        t = terms.get(key)
        return t if t is not None and t.status == "found" else None

    if t := found("parties"):
        names = [n for sp in t.spans for n, _s, _e in find_parties(sp.text, sp.start)]
        t.value = names or [sp.text for sp in t.spans]
    for key in ("agreement_date", "effective_date"):
        if t := found(key):
            dates = [d for sp in t.spans for d in find_dates(sp.text, sp.start)]
            t.value = dates[0].value.isoformat() if dates else None
    if t := found("expiration_date"):
        dates = [d for sp in t.spans for d in find_dates(sp.text, sp.start)]
        if dates:
            t.value = {"date": max(dates, key=lambda d: d.value).value.isoformat(), "basis": "stated"}
        elif any(_PERPETUAL.search(sp.text) for sp in t.spans):
            t.value = {"date": None, "basis": "perpetual"}
        else:
            term = _duration_near(text, t.spans, r"term|period|years?|months?")
            start_term = found("effective_date") or found("agreement_date")
            if term is not None and start_term is not None and start_term.value:
                begin = date.fromisoformat(start_term.value)
                end = term.after(begin) - timedelta(days=1)
                t.value = {"date": end.isoformat(), "basis": f"{term.label} from {start_term.key.replace('_', ' ')} "
                           f"{begin.isoformat()}", "term": _duration_value(term)}
            elif term is not None:
                t.value = {"date": None, "basis": f"{term.label} initial term; start date not found",
                           "term": _duration_value(term)}
    if t := found("renewal_term"):
        d = _duration_near(text, t.spans, r"renew|successive|additional|extend", not_after=r"notice|prior to|before")
        auto = any(_AUTO_RENEW.search(sp.text) for sp in t.spans)
        t.value = {"auto_renewal": auto, "term": _duration_value(d) if d else None}
    if t := found("notice_period"):
        d = _duration_near(text, t.spans, r"notice|prior|before")
        t.value = _duration_value(d) if d else None
        term_days = _term_days(found)
        if d is not None and term_days and d.days >= term_days:
            # A notice period as long as the term it ends is a misread (often the term's own duration): a
            # person reads it; no deadline is computed from it.
            t.status, t.spans, t.value = "needs_review", [], None
            t.evidence = [{"note": f"read as {d.label} of notice, not shorter than the {term_days}-day term it "
                                   "ends: check the clause"}, *t.evidence]
    if t := found("governing_law"):
        for sp in t.spans:
            law = find_governing_law(sp.text, sp.start)
            if law:
                t.value = law[0]
                break
    if t := found("termination_for_convenience"):
        t.value = {"by": _terminating_parties(" ".join(sp.text for sp in t.spans))}
    for key in ("liability_cap", "uncapped_liability", "minimum_commitment", "price_restrictions",
                "exclusivity", "change_of_control", "anti_assignment"):
        if t := found(key):
            t.value = True


def _term_days(found: Any) -> int | None:
    """Days of the term a notice period ends, from a stated duration: the initial term ("two (2) years"),
    else the renewal term; None when neither states one. (Not from two dates: a misread date would make a
    sound notice period look wrong.)"""
    exp = found("expiration_date")
    if exp is not None and isinstance(exp.value, dict) and isinstance(exp.value.get("term"), dict):
        return int(exp.value["term"]["days"])
    renewal = found("renewal_term")
    if renewal is not None and isinstance(renewal.value, dict) and isinstance(renewal.value.get("term"), dict):
        return int(renewal.value["term"]["days"])
    return None


_WHO = re.compile(r"\b(either party|each party|any party|both parties|the parties|[A-Z][\w-]*(?: [A-Z][\w-]*){0,2})"
                  r"\s+(?:shall have the right to|may|can|is entitled to|has the right to)\s+(?:at any time\s+)?"
                  r"(?:terminate|cancel)", re.I)


def _terminating_parties(clause: str) -> list[str]:
    out: list[str] = []
    for m in _WHO.finditer(clause):
        who = m.group(1).strip()
        if who.lower() not in {x.lower() for x in out}:
            out.append(who)
    return out


def notice_deadline(terms: dict[str, ContractTerm], today: date) -> tuple[date | None, str]:
    """Last day to give notice so the contract does not renew: expiration minus the notice period.

    With auto-renewal and a known renewal term, a notice deadline that has passed rolls forward by
    renewal terms to the next one that has not (missing it means the contract renews), even while the
    current term has not ended yet. Returns (deadline or None, how it was computed)."""
    exp, notice, renewal = terms.get("expiration_date"), terms.get("notice_period"), terms.get("renewal_term")
    if not (exp and exp.status == "found" and isinstance(exp.value, dict) and exp.value.get("date")):
        return None, "no expiration date found"
    if not (notice and notice.status == "found" and isinstance(notice.value, dict)):
        return None, "no notice period found"
    end = date.fromisoformat(exp.value["date"])
    d = Duration(notice.value["value"], notice.value["unit"], 0, 0)
    rolled = 0
    rterm = renewal.value.get("term") if renewal and renewal.status == "found" and isinstance(renewal.value, dict) \
        else None
    auto = bool(renewal and isinstance(renewal.value, dict) and renewal.value.get("auto_renewal"))
    if auto and rterm:
        step = Duration(rterm["value"], rterm["unit"], 0, 0)
        while d.before(end) < today and rolled < 200:
            end = step.after(end)
            rolled += 1
    deadline = d.before(end)
    how = f"term end {end.isoformat()} minus {d.label} notice"
    if rolled:  # not "renewed": the term may not have ended yet, only its notice deadline has passed
        how += (f" (rolled forward {rolled} renewal term(s) from {exp.value['date']}: each earlier notice deadline "
                "has passed, so the contract renews automatically)")
    return deadline, how


def deviations(terms: dict[str, ContractTerm], policy: ClausePolicy) -> list[Deviation]:
    rules = policy.rules
    out: list[Deviation] = []

    def found(key: str) -> ContractTerm | None:
        t = terms.get(key)
        return t if t is not None and t.status == "found" else None

    renewal, notice = found("renewal_term"), found("notice_period")
    if (renewal and isinstance(renewal.value, dict) and renewal.value.get("auto_renewal") and notice
            and isinstance(notice.value, dict) and rules.auto_renewal_max_notice_days is not None
            and notice.value["days"] > rules.auto_renewal_max_notice_days):
        out.append(Deviation(
            rule="auto_renewal_notice",
            message=f"auto-renewal with {notice.value['label']} notice to stop it "
                    f"(policy: at most {rules.auto_renewal_max_notice_days} days)",
            severity="high", spans=renewal.spans + notice.spans))
    if rules.flag_uncapped_liability and (t := found("uncapped_liability")):
        out.append(Deviation(rule="uncapped_liability", message="liability is uncapped for some breaches",
                             severity="high", spans=t.spans))
    if rules.flag_missing_liability_cap and not found("liability_cap"):
        out.append(Deviation(rule="missing_liability_cap", message="no cap on liability found", spans=[]))
    if rules.flag_customer_termination_for_convenience and (t := found("termination_for_convenience")):
        who = t.value.get("by", []) if isinstance(t.value, dict) else []
        roles = [r.lower() for r in rules.customer_roles]
        hits = [w for w in who if any(r in w.lower() for r in roles)]
        if hits or not who:
            by = ", ".join(hits) if hits else "a party (could not tell which)"
            out.append(Deviation(rule="customer_termination_for_convenience",
                                 message=f"termination for convenience by {by}", spans=t.spans))
    if rules.governing_law_allowed is not None and (t := found("governing_law")):
        allowed = {x.lower() for x in rules.governing_law_allowed}
        if t.value is None:
            out.append(Deviation(rule="governing_law", message="governing law: jurisdiction not recognised",
                                 severity="info", spans=t.spans))
        elif str(t.value).lower() not in allowed:
            out.append(Deviation(rule="governing_law",
                                 message=f"governing law {t.value} is not in the allowed list "
                                         f"({', '.join(rules.governing_law_allowed)})", spans=t.spans))
    if rules.flag_exclusivity and (t := found("exclusivity")):
        out.append(Deviation(rule="exclusivity", message="exclusivity commitment", spans=t.spans))
    if rules.flag_change_of_control and (t := found("change_of_control")):
        out.append(Deviation(rule="change_of_control", message="change-of-control clause", spans=t.spans))
    return out


def _expiration_sentence(value: dict[str, Any]) -> str | None:
    """The summary's sentence on the end of the initial term, from an ``expiration_date`` value: a date
    (stated, or a term counted from a start date), no fixed end (perpetual), or a term whose start was not
    found."""
    when, basis, term = value.get("date"), value.get("basis"), value.get("term")
    if when:
        return f"The initial term ends {when}" + (f" ({basis})." if basis and basis != "stated" else ".")
    if basis == "perpetual":
        return "The agreement has no fixed end (perpetual)."
    if isinstance(term, dict) and term.get("label"):
        return f"The initial term is {term['label']}; its start date was not found, so its end is not known."
    return f"The agreement has no fixed end date ({basis})." if basis else None


def summarise(terms: dict[str, ContractTerm], summary: ContractSummary, deadline_note: str) -> list[SummarySentence]:
    """A few sentences, each citing the spans it was built from; nothing from a term not found."""

    def f(key: str) -> ContractTerm | None:
        t = terms.get(key)
        return t if t is not None and t.status == "found" else None

    out: list[SummarySentence] = []
    if (p := f("parties")) and p.value:
        out.append(SummarySentence(text=f"Between {', '.join(p.value[:4])}.", spans=p.spans))
    dates = []
    spans: list[SourceSpan] = []
    for key, word in (("agreement_date", "dated"), ("effective_date", "effective")):
        if (t := f(key)) and t.value:
            dates.append(f"{word} {t.value}")
            spans += t.spans
    if dates:
        out.append(SummarySentence(text=f"The agreement is {' and '.join(dates)}.", spans=spans))
    if (t := f("expiration_date")) and isinstance(t.value, dict) and (sentence := _expiration_sentence(t.value)):
        out.append(SummarySentence(text=sentence, spans=t.spans))
    if (r := f("renewal_term")) and isinstance(r.value, dict):
        term = r.value.get("term")
        kind = "renews automatically" if r.value.get("auto_renewal") else "may be renewed"
        out.append(SummarySentence(text=f"It {kind}" + (f" for {term['label']} terms" if term else "") + ".",
                                   spans=r.spans))
    if (n := f("notice_period")) and isinstance(n.value, dict):
        sent = f"Notice to stop the renewal: {n.value['label']}."
        if summary.notice_deadline:
            sent += f" Decision deadline {summary.notice_deadline} ({deadline_note})."
        out.append(SummarySentence(text=sent, spans=n.spans + (f("expiration_date").spans  # type: ignore[union-attr]
                                                               if summary.notice_deadline else [])))
    if (t := f("termination_for_convenience")) and isinstance(t.value, dict):
        who = ", ".join(t.value.get("by") or []) or "a party"
        out.append(SummarySentence(text=f"Termination for convenience: {who} may terminate without cause.",
                                   spans=t.spans))
    liab = []
    lspans: list[SourceSpan] = []
    if t := f("liability_cap"):
        liab.append("liability is capped")
        lspans += t.spans
    if t := f("uncapped_liability"):
        liab.append("some liability is uncapped")
        lspans += t.spans
    if liab:
        out.append(SummarySentence(text=f"Liability: {' and '.join(liab)}.", spans=lspans))
    if (t := f("governing_law")) and t.value:
        out.append(SummarySentence(text=f"Governed by the law of {t.value}.", spans=t.spans))
    other = [(LABELS[k].lower(), terms[k].spans) for k in
             ("minimum_commitment", "price_restrictions", "exclusivity", "change_of_control", "anti_assignment")
             if f(k)]
    if other:
        out.append(SummarySentence(text=f"Also present: {', '.join(name for name, _ in other)}.",
                                   spans=[s for _, sp in other for s in sp]))
    return out


# --- the graph -----------------------------------------------------------------------------------


@dataclass
class ContractServices:
    settings: Settings
    reader: OdooReader | None
    model: Any
    """A :class:`ClauseModel` (or anything with the same ``score``/``thresholds``/``version``)."""
    policy: Policy
    clause_policy: ClausePolicy
    store: ApprovalStore
    audit: AuditLog
    executor: Executor | None
    """None for a file (nothing is ever executed)."""
    db: str = "file"
    today: date | None = None
    llm: LLMSpanPicker | None = None
    """The LLM path (``SIGNOFF_LLM_BACKEND=openai``); None: the embedded model decides."""
    terms: ContractTermsStore | None = None
    """Where the renewal terms of an analysed Odoo contract are kept for the renewal-risk agent."""


class ContractState(TypedDict, total=False):
    attachment_id: int
    source: dict[str, Any]
    order: dict[str, Any]
    contract: dict[str, Any]
    proposal_ids: list[str]
    decisions: dict[str, str]
    executed: dict[str, str]


def _source(state: ContractState) -> ContractSource:
    return ContractSource(**state["source"])


def load(state: ContractState, runtime: Runtime[ContractServices]) -> ContractState:
    svc = runtime.context
    if "source" in state:
        source = _source(state)
    else:
        if svc.reader is None:
            raise ValueError("an attachment id needs an Odoo reader")
        source = load_attachment(svc.reader, state["attachment_id"], db=svc.db)
    order: dict[str, Any] = {}
    if svc.reader is not None and source.res_model == TARGET_MODEL and source.res_id:
        rows = svc.reader.read(TARGET_MODEL, [source.res_id], ["name", "partner_id", "user_id", "end_date"])
        if rows:
            order = {"id": source.res_id, "name": rows[0].get("name"),
                     "partner": (rows[0].get("partner_id") or [None, None])[1],
                     "user_id": (rows[0].get("user_id") or [None])[0]}
    svc.audit.append("contract.loaded", source.thread_id, AGENT,
                     {"name": source.name, "sha256": source.sha256, "chars": len(source.text),
                      "attachment": source.attachment_id, "record": f"{source.res_model},{source.res_id}"},
                     thread_id=source.thread_id)
    return {"source": source.__dict__, "order": order}


def screen_node(state: ContractState, runtime: Runtime[ContractServices]) -> ContractState:
    """Contracts are untrusted text: flag instructions to an AI (the spans must keep indexing the
    original, so nothing is redacted; the embedded model runs locally)."""
    svc = runtime.context
    source = _source(state)
    found = find_injection(source.text)
    svc.audit.append("contract.screened", source.thread_id, AGENT, {"injection": found[:5]},
                     thread_id=source.thread_id)
    return {}


def analyse_node(state: ContractState, runtime: Runtime[ContractServices]) -> ContractState:
    svc = runtime.context
    source = _source(state)
    if svc.llm is None and svc.settings.llm_backend != "embedded":
        from signoff.llm.clause_llm import picker_for

        svc.llm = picker_for(svc.settings)
    summary = analyse(source, svc.model, svc.clause_policy, today=svc.today, llm=svc.llm)
    llm_usage = [e["llm"] for t in summary.terms for e in t.evidence if "llm" in e]
    svc.audit.append("contract.analysed", source.thread_id, AGENT,
                     {"found": [t.key for t in summary.terms if t.status == "found"],
                      "needs_review": [t.key for t in summary.terms if t.status == "needs_review"],
                      "deviations": [d.rule for d in summary.deviations], "deadline": summary.notice_deadline,
                      "model": summary.model_version,
                      **({"llm": {"calls": sum(u["usage"].get("calls", 0) for u in llm_usage),
                                  "cost_usd": round(sum(u["usage"].get("cost_usd", 0.0) for u in llm_usage), 8),
                                  "rejected": [t.key for t in summary.terms for e in t.evidence
                                               if e.get("llm", {}).get("status") == "rejected"]}}
                         if llm_usage else {})}, thread_id=source.thread_id)
    if svc.terms is not None:
        svc.terms.record(summary)  # a file (no Odoo record) is not kept
    return {"contract": summary.model_dump(mode="json")}


def _legal_uid(policy: Policy, group: str) -> int | None:
    for member in policy.members(group):
        if member.startswith("odoo:") and member[5:].isdigit():
            return int(member[5:])
    return None


def _make(svc: ContractServices, c: ContractSummary, action: str, args: dict[str, Any], rationale: str,
          confidence: float | None, evidence: list[dict[str, Any]]) -> Proposal:
    rule = svc.policy.action(action)
    expires = parse_duration(rule.expires)
    assert c.res_id is not None
    return Proposal(
        id=proposal_id(c.thread_id, action, TARGET_MODEL, c.res_id, args), thread_id=c.thread_id, action=action,
        target_model=TARGET_MODEL, target_id=c.res_id, args=args, current={}, rationale=rationale,
        confidence=confidence, evidence=evidence, approver_group=rule.approver_group(), channel=rule.channel,
        requested_by=AGENT, expires_at=utcnow() + (expires or timedelta(days=7)),
        policy_version=svc.policy.label, model_version=c.model_version,
    )


def _args(reason: str, deadline: date, details: str, owner_uid: int | None) -> dict[str, Any]:
    """Arguments of the activity actions (:mod:`signoff.guardrails.activity_actions`)."""
    args: dict[str, Any] = {"reason": reason[:300], "deadline": deadline.isoformat(), "details": details[:1900]}
    if owner_uid:
        args["owner_uid"] = int(owner_uid)
    return args


def _quote(sp: SourceSpan, limit: int = 240) -> str:
    t = " ".join(sp.text.split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def decide(state: ContractState, runtime: Runtime[ContractServices]) -> ContractState:
    svc = runtime.context
    c = ContractSummary.model_validate(state["contract"])
    order = state.get("order") or {}
    today = svc.today or utcnow().date()
    reasons: list[str] = []
    wanted: list[Proposal] = []
    if c.db == "file":
        outcome: Literal["proposed", "needs_human", "report", "skipped"] = "report"
    elif c.res_model != TARGET_MODEL or not c.res_id:
        outcome = "needs_human"
        reasons.append(f"the contract is attached to {c.res_model or 'nothing'}, not a {TARGET_MODEL}: "
                       "nothing to put an activity on")
    else:
        notice, exp = c.term("notice_period"), c.term("expiration_date")
        if c.notice_deadline:
            deadline = date.fromisoformat(c.notice_deadline)
            due = max(today, deadline - timedelta(days=svc.clause_policy.proposals.reminder_lead_days))
            if deadline < today:
                reasons.append(f"the notice deadline {c.notice_deadline} has passed: no reminder")
            else:
                spans = (notice.spans if notice else []) + (exp.spans if exp else [])
                conf = min(t.confidence for t in (notice, exp) if t is not None)
                args = _args(f"give notice by {c.notice_deadline} to stop the renewal of {c.name}", due,
                             " ".join(s.text for s in c.summary), order.get("user_id"))
                wanted.append(_make(svc, c, RENEWAL_ACTION, args,
                                    f"notice deadline {c.notice_deadline}; reminder due {due.isoformat()}", conf,
                                    [{"span": [s.start, s.end], "quote": _quote(s)} for s in spans]))
        else:
            missing = [t.key for t in (exp, notice) if t is not None and t.status != "found"]
            reasons.append("no renewal deadline: " + (f"{', '.join(missing)} not found or below threshold"
                                                      if missing else "the dates could not be normalised"))
        if c.deviations:
            rule = svc.policy.action(LEGAL_ACTION)
            lines = [f"- {d.message}" + "".join(f' — "{_quote(s, 160)}" [{s.start}:{s.end}]' for s in d.spans[:2])
                     for d in c.deviations]
            args = _args(f"{len(c.deviations)} deviation(s) from the clause policy in {c.name}",
                         today + timedelta(days=svc.clause_policy.proposals.legal_review_due_days),
                         "\n".join(lines), _legal_uid(svc.policy, rule.approver_group()) or order.get("user_id"))
            wanted.append(_make(svc, c, LEGAL_ACTION, args, "; ".join(d.message for d in c.deviations), None,
                                [{"rule": d.rule, "spans": [[s.start, s.end] for s in d.spans]}
                                 for d in c.deviations]))
        review = [t.key for t in c.terms if t.status == "needs_review"]
        if review:
            reasons.append(f"needs review (below threshold): {', '.join(review)}")
        outcome = "proposed" if wanted else "needs_human" if reasons else "skipped"
    ids: list[str] = []
    for proposal in wanted:
        stored, new = svc.store.add(proposal)
        ids.append(stored.id)
        if new:
            svc.audit.append("proposal.created", stored.id, AGENT,
                             {"action": stored.action, "target": stored.target_id, "args": stored.args,
                              "confidence": stored.confidence, "approvers": stored.approver_group,
                              "policy": svc.policy.label, "model": stored.model_version}, thread_id=c.thread_id)
    c.outcome, c.reasons, c.proposal_ids = outcome, reasons, ids
    svc.audit.append("contract.decided", c.thread_id, AGENT,
                     {"outcome": outcome, "reasons": reasons, "proposals": ids}, thread_id=c.thread_id)
    return {"contract": c.model_dump(mode="json"), "proposal_ids": ids}


def gate(state: ContractState, runtime: Runtime[ContractServices]) -> ContractState:
    """Pause until every proposal of this run is decided (the run sleeps in the checkpointer)."""
    ids = state.get("proposal_ids", [])
    return {"decisions": await_decisions(runtime.context.store, ids, state["contract"]["thread_id"])}


def execute(state: ContractState, runtime: Runtime[ContractServices]) -> ContractState:
    svc = runtime.context
    return {"executed": execute_approved(svc.store, svc.executor, state.get("proposal_ids", []))}


def finish(state: ContractState, runtime: Runtime[ContractServices]) -> ContractState:
    svc = runtime.context
    thread = state["contract"]["thread_id"]
    svc.audit.append("contract.completed", thread, AGENT,
                     {"outcome": state["contract"]["outcome"], "results": state.get("executed", {})},
                     thread_id=thread)
    return {}


def build_graph() -> StateGraph[ContractState, ContractServices, ContractState, ContractState]:
    steps = [("load", load), ("screen", screen_node), ("analyse", analyse_node), ("decide", decide)]
    return approval_graph(ContractState, ContractServices, steps, gate=gate, execute=execute, finish=finish)


# --- runner --------------------------------------------------------------------------------------


class ContractRunner:
    """One durable thread per contract (``contract:<db>:<attachment id>``); files get a report only."""

    def __init__(self, services: ContractServices, checkpointer: Any | None) -> None:
        self.services = services
        self.graph = build_graph().compile(checkpointer=checkpointer)
        self._report_graph = build_graph().compile()

    @staticmethod
    def _config(thread_id: str) -> Any:
        return {"configurable": {"thread_id": thread_id}}

    def thread_for(self, attachment_id: int) -> str:
        return f"contract:{self.services.db}:{attachment_id}"

    def status(self, thread_id: str) -> tuple[dict[str, Any], bool, bool]:
        snapshot = self.graph.get_state(self._config(thread_id))
        paused = any(task.interrupts for task in snapshot.tasks)
        return dict(snapshot.values or {}), paused, bool(snapshot.next) and not paused

    @staticmethod
    def _summary(values: dict[str, Any]) -> ContractSummary | None:
        return ContractSummary.model_validate(values["contract"]) if values.get("contract") else None

    def run(self, attachment_id: int) -> tuple[str, ContractSummary | None]:
        """Analyse an attachment and store its proposals. Returns (status, summary): ``paused``
        (waiting for decisions), ``done``, or ``duplicate`` (the contract already has a run)."""
        thread_id = self.thread_for(attachment_id)
        config = self._config(thread_id)
        values, paused, stopped = self.status(thread_id)
        if values and not stopped:
            return "duplicate", self._summary(values)
        if stopped:
            out = self.graph.invoke(None, config, context=self.services)
        else:
            out = self.graph.invoke({"attachment_id": attachment_id}, config, context=self.services)
        return ("paused" if "__interrupt__" in out else "done"), self._summary(out)

    def report(self, source: ContractSource) -> ContractSummary:
        """Analyse a contract from a file: nothing proposed, nothing checkpointed."""
        out = self._report_graph.invoke({"source": source.__dict__}, context=self.services)
        summary = self._summary(out)
        assert summary is not None
        return summary

    def resume_if_ready(self, thread_id: str, *, actor: str = "system") -> Any:
        """Resume a paused run once none of its proposals is pending (see :class:`TriageRunner`)."""
        from signoff.agents.runner import RunResult

        if any(p.state == "pending" for p in self.services.store.find(thread_id=thread_id)):
            return None
        values, paused, stopped = self.status(thread_id)
        if not (paused or stopped):
            return None
        from langgraph.types import Command

        self.services.audit.append("run.resumed", thread_id, actor, {}, thread_id=thread_id)
        out = self.graph.invoke(Command(resume={"by": actor}) if paused else None, self._config(thread_id),
                                context=self.services)
        return RunResult(thread_id, "paused" if "__interrupt__" in out else "done")

    def recover(self) -> list[Any]:
        """Finish contract runs left behind: decided but never resumed, or killed between approval and write."""
        store = self.services.store
        mine = [p for p in store.find() if p.thread_id.startswith(THREAD_PREFIX)]
        threads = sorted({p.thread_id for p in mine if p.state != "pending"})
        results = [r for t in threads if (r := self.resume_if_ready(t, actor="system:recovery")) is not None]
        for thread_id in sorted({p.thread_id for p in mine if p.state in UNFINISHED}):
            self.finish_writes(thread_id)
        return results

    def finish_writes(self, thread_id: str) -> list[Any]:
        """The run's writes still owed once it has ended, to the executor (:func:`finish_writes`)."""
        return finish_writes(self.status, self.services.store, self.services.executor, thread_id)


THREAD_PREFIX = "contract:"


def checkpoint_path(settings: Settings) -> Path:
    """Contract runs have their own checkpoint file (triage's recovery never sees them)."""
    return settings.data_dir / "checkpoints-contracts.sqlite"


def model_dir(settings: Settings) -> Path:
    return settings.models_path / "contracts"


def embedding_cache_dir(settings: Settings) -> Path:
    return settings.data_dir / "cache" / "contract-embeddings"


class LazyClauseModel:
    """Loads the clause model on first use: resuming a run never needs it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model: ClauseModel | None = None

    @property
    def model(self) -> ClauseModel:
        if self._model is None:
            self._model = ClauseModel.load(model_dir(self._settings), cache_dir=embedding_cache_dir(self._settings),
                                           chroma_url=self._settings.chroma_url)
        return self._model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.model, name)


def clause_policy_for(settings: Settings) -> ClausePolicy:
    return load_clause_policy(settings.contract_policy_path)


def file_services(settings: Settings, *, model: Any = None) -> ContractServices:
    """Services for a contract from a file: no Odoo, nothing proposed; analysis still audited."""
    from signoff.guardrails.policy import load_policy
    from signoff.guardrails.state import open_state

    settings.ensure_dirs()
    state = open_state(settings)  # on Postgres, its pool lives as long as the command
    return ContractServices(
        settings=settings, reader=None, model=model or LazyClauseModel(settings),
        policy=load_policy(settings.policy_path), clause_policy=clause_policy_for(settings),
        store=state.store, audit=state.audit, executor=None, db="file",
    )


@contextmanager
def contract_runner(rt: Any, *, model: Any = None, today: date | None = None,
                    llm: LLMSpanPicker | None = None) -> Iterator[ContractRunner]:
    """A contracts runner over an open :class:`signoff.agents.services.Runtime` (same store, audit, executor)."""
    from signoff.agents.renewal import _checkpointer_for

    settings: Settings = rt.settings
    services = ContractServices(
        settings=settings, reader=rt.reader, model=model or LazyClauseModel(settings), policy=rt.policy,
        clause_policy=clause_policy_for(settings), store=rt.store, audit=rt.audit, executor=rt.executor,
        db=settings.odoo_db, today=today, llm=llm, terms=ContractTermsStore(rt.statedb),
    )
    with _checkpointer_for(rt, checkpoint_path(settings)) as checkpointer:
        yield ContractRunner(services, checkpointer)
