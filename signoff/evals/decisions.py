"""Recorded human decisions: what approvers did with the agents' proposals, and what humans chose for the
tickets the confidence gate held back.

A decisions file is JSONL, one record a line. Two kinds:

* a decided proposal, as ``signoff eval --export-decisions FILE`` writes them from the approvals store::

    {"proposal_id": "p_...", "thread_id": "ticket:odoo:42", "action": "ticket.set_category",
     "proposed": {"category": "cancel_order"}, "final": {"category": "change_order"},
     "verdict": "edit", "confidence": 0.91, "reason": "customer wants to change, not cancel"}

  ``verdict`` is ``approve`` (``final`` equal to ``proposed``), ``edit``, ``reject`` or ``expired``
  (nobody decided in time: not counted as a decision);
* a ticket the gate sent to a human (not in the store yet, so written by hand)::

    {"verdict": "human_triaged", "thread_id": "ticket:odoo:7", "model_label": "refund",
     "model_confidence": 0.62, "human_label": "refund"}

  (``text`` instead of ``thread_id`` is fine).

Figures (:func:`decision_metrics`): ``approval_rate`` = approved unchanged / decided (approve + edit +
reject), ``edit_rate``, ``reject_rate``; ``mean_edit_distance`` = the mean, over edits, of the normalised
Levenshtein distance between proposed and final values (over the fields the human changed: the summed
character edits divided by the summed longer lengths, so 0 is untouched and 1 is rewritten); and
``gate_overcaution`` = among ``human_triaged`` records, the share where the human chose exactly the
model's label, i.e. the gate could have proposed it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from signoff.domain import Proposal, canonical_json
from signoff.errors import DataError

DecisionVerdict = Literal["approve", "edit", "reject", "expired", "human_triaged"]

#: The figures a suite with ``decisions`` reports, and whether higher is better.
DECISION_METRICS: dict[str, bool] = {
    "approval_rate": True,
    "edit_rate": False,
    "reject_rate": False,
    "mean_edit_distance": False,
    "gate_overcaution": False,
}


class DecisionRecord(BaseModel):
    """One recorded human decision (see the module docstring for the two kinds)."""

    model_config = ConfigDict(extra="allow")

    verdict: DecisionVerdict
    proposal_id: str | None = None
    thread_id: str | None = None
    action: str | None = None
    proposed: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    confidence: float | None = None
    reason: str | None = None
    # human_triaged
    text: str | None = None
    model_label: str | None = None
    model_confidence: float | None = None
    human_label: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DecisionRecord:
        if self.verdict == "human_triaged":
            if not (self.model_label and self.human_label):
                raise ValueError("a human_triaged record needs model_label and human_label")
            if not (self.text or self.thread_id):
                raise ValueError("a human_triaged record needs text or thread_id")
            return self
        if self.proposed is None:
            raise ValueError(f"a {self.verdict} record needs 'proposed' (the agent's values)")
        if self.verdict == "edit" and self.final is None:
            raise ValueError("an edit record needs 'final' (the values the human approved)")
        if self.final is None:
            self.final = dict(self.proposed)
        if self.verdict == "approve" and canonical_json(self.final) != canonical_json(self.proposed):
            raise ValueError("an approve record has 'final' different from 'proposed': that is an edit")
        return self


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insertions, deletions, substitutions), two-row dynamic programming."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else canonical_json(value)


def edit_distance(proposed: dict[str, Any], final: dict[str, Any]) -> float:
    """Normalised Levenshtein distance between two sets of values, over the fields that differ
    (a field absent on one side counts as empty): sum of distances / sum of the longer lengths."""
    dist = longest = 0
    for key in sorted(set(proposed) | set(final)):
        a, b = _as_text(proposed.get(key)), _as_text(final.get(key))
        if a == b:
            continue
        dist += levenshtein(a, b)
        longest += max(len(a), len(b))
    return dist / longest if longest else 0.0


def _rate(k: int, n: int) -> float:
    return k / n if n else float("nan")


def decision_metrics(records: Sequence[DecisionRecord]) -> tuple[dict[str, float], dict[str, Any]]:
    """The headline figures (NaN where undefined) and the counts behind them."""
    counts = Counter(r.verdict for r in records)
    decided = counts["approve"] + counts["edit"] + counts["reject"]
    edits = [edit_distance(r.proposed or {}, r.final or {}) for r in records if r.verdict == "edit"]
    triaged = [r for r in records if r.verdict == "human_triaged"]
    agreed = sum(r.human_label == r.model_label for r in triaged)
    values = {
        "approval_rate": _rate(counts["approve"], decided),
        "edit_rate": _rate(counts["edit"], decided),
        "reject_rate": _rate(counts["reject"], decided),
        "mean_edit_distance": math.fsum(edits) / len(edits) if edits else float("nan"),
        "gate_overcaution": _rate(agreed, len(triaged)),
    }
    by_action: dict[str, dict[str, int]] = {}
    for r in records:
        if r.verdict != "human_triaged":
            row = by_action.setdefault(r.action or "?", {"approve": 0, "edit": 0, "reject": 0, "expired": 0})
            row[r.verdict] += 1
    conf = [r.model_confidence for r in triaged if r.model_confidence is not None and r.human_label == r.model_label]
    detail = {
        "n": len(records),
        "counts": {v: counts[v] for v in ("approve", "edit", "reject", "expired", "human_triaged")},
        "n_decided": decided,
        "n_triaged": len(triaged),
        "n_triaged_agreed": agreed,
        "triaged_agreed_mean_confidence": round(math.fsum(conf) / len(conf), 4) if conf else None,
        "by_action": by_action,
    }
    return values, detail


def load_decisions(path: Path) -> list[DecisionRecord]:
    """Read and validate a decisions JSONL file; errors name the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    out: list[DecisionRecord] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(DecisionRecord.model_validate_json(line))
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
            raise DataError(f"{path}:{lineno}: invalid decision record ({msgs})") from exc
    if not out:
        raise DataError(f"{path}: no decision records")
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- export from the approvals store ----------------------------------------------------------------

_APPROVED = frozenset({"approved", "executing", "executed", "failed"})


def record_of(p: Proposal) -> dict[str, Any] | None:
    """The decision record of a proposal a human (or the expiry) decided; None when undecided or
    cancelled by the system."""
    if p.state == "rejected":
        verdict = "reject"
    elif p.state == "expired":
        verdict = "expired"
    elif p.state in _APPROVED or p.state == "edited":
        if p.decided_by is None:
            return None
        changed = p.edited_args is not None and canonical_json(p.edited_args) != canonical_json(p.args)
        verdict = "edit" if changed else "approve"
    else:  # proposed, pending, cancelled
        return None
    return {
        "proposal_id": p.id, "thread_id": p.thread_id, "action": p.action, "proposed": p.args,
        "final": p.effective_args, "verdict": verdict, "confidence": p.confidence, "reason": p.decision_reason,
    }


def export_decisions(proposals: Iterable[Proposal], out: Path) -> Counter[str]:
    """Write the decided proposals as JSONL (oldest first, as given); the count per verdict."""
    counts: Counter[str] = Counter()
    rows = []
    for p in proposals:
        rec = record_of(p)
        if rec is not None:
            counts[rec["verdict"]] += 1
            rows.append(json.dumps(rec, ensure_ascii=False, default=str))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return counts
