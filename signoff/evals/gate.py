"""Blessed baselines and the release gate.

``--bless`` stores ``<baseline dir>/<suite>.json``: the run's summary plus every case's id, gold label,
prediction, confidence and Brier term, so that a later run is compared *case by case* with it.

The gate, per metric the suite gives a tolerance for: the baseline and the new run are both scored on
the cases they share (by id); a metric **regresses** when it got worse by more than its tolerance *and*
a paired test says the worsening is significant at the suite's ``alpha`` (one-sided):

* ``accuracy``: exact McNemar test on the discordant pairs (right before / wrong now vs the reverse);
* every other metric: paired bootstrap (1,000 resamples of the shared cases, the same resample for both
  runs); the p-value is the share of resamples in which the new run is not worse.

A regression makes ``signoff eval`` exit 1 and name the metric. Contracts and renewal suites are gated
the same way, every metric by paired bootstrap over their cases (:mod:`signoff.evals.paired`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, ValidationError, model_validator

from signoff.errors import DataError
from signoff.evals import metrics as M
from signoff.evals.paired import PairedRun, compare_paired
from signoff.evals.runner import CaseArrays, SuiteRun, accepted, compute_metrics
from signoff.evals.suite import DIRECTION
from signoff.guardrails.policy import Policy

BASELINE_FORMAT = 1


def baseline_path(baseline_dir: Path, suite_name: str) -> Path:
    return baseline_dir / f"{suite_name}.json"


def bless(run: SuiteRun | PairedRun, baseline_dir: Path) -> Path:
    """Store ``run`` as the suite's baseline (atomically)."""
    baseline_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(run, PairedRun):
        path = baseline_path(baseline_dir, run.suite.name)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(run.baseline_doc(BASELINE_FORMAT), separators=(",", ":"), ensure_ascii=False)
                       + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path
    summary = run.to_json()
    doc = {
        "format": BASELINE_FORMAT,
        "suite": run.suite.name,
        "n": run.n,
        "metrics": summary["metrics"],
        "secondary": summary["secondary"],
        "threshold": run.threshold,
        "class_thresholds": run.class_thresholds,
        "oos_label": run.suite.oos_label,
        "model_version": summary["model_version"],
        "dataset_hash": summary["dataset_hash"],
        "suite_hash": summary["suite_hash"],
        "policy": summary["policy"],
        "cases": run.arrays.columns(),
    }
    path = baseline_path(baseline_dir, run.suite.name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


Score = StrictFloat
"""A number (an int is fine; a string or a bool is not)."""


class _Cases(BaseModel):
    """Per-case columns of a baseline: every column is a list, all of one length, ids unique. Columns a
    run does not have are kept (the gate names a column mismatch with the run)."""

    model_config = ConfigDict(extra="allow")

    id: list[str]

    @model_validator(mode="after")
    def _same_length(self) -> _Cases:
        lengths = {name: len(col) for name, col in self.__dict__.items()}
        for name, col in (self.__pydantic_extra__ or {}).items():
            if not isinstance(col, list):
                raise ValueError(f"column {name!r} is not a list")
            lengths[name] = len(col)
        if len(set(lengths.values())) > 1:
            raise ValueError("columns of different lengths: " + ", ".join(f"{k} {v}" for k, v in lengths.items()))
        if len(set(self.id)) != len(self.id):
            raise ValueError("case ids are not unique")
        return self


class TriageCases(_Cases):
    gold: list[str]
    pred: list[str]
    conf: list[Score]
    brier: list[Score]


class RenewalCases(_Cases):
    churned: list[Literal[0, 1]]
    p: list[Score]


class ContractsCases(_Cases):
    category: list[str]
    n_gold: list[StrictInt]
    shown: list[list[tuple[Score, StrictBool]]]
    ranked: list[list[tuple[Score, StrictBool]]]
    threshold: list[Score | None]


CASES: dict[str, type[_Cases]] = {"triage": TriageCases, "renewal": RenewalCases, "contracts": ContractsCases}


class Baseline(BaseModel):
    """What :func:`load_baseline` accepts: the shape :func:`bless` writes (format 1). The summary
    fields are optional (a mismatch is only a note); ``cases`` must fit the baseline's agent."""

    model_config = ConfigDict(extra="allow")

    format: Literal[1]
    agent: Literal["triage", "contracts", "renewal"] = "triage"
    suite: str | None = None
    cases: dict[str, Any]
    model_version: str | None = None
    dataset_hash: str | None = None
    suite_hash: str | None = None
    threshold: Score | None = None
    class_thresholds: dict[str, Score] | None = None

    @classmethod
    def check(cls, doc: Any) -> Baseline:
        """Validate ``doc`` and its ``cases`` against the columns of its agent (:data:`CASES`)."""
        base = cls.model_validate(doc)
        CASES[base.agent].model_validate(base.cases)
        return base


def _problem(exc: ValidationError) -> str:
    """The first few validation errors as ``where: what`` (a baseline has thousands of cases)."""
    errors = exc.errors()
    parts = []
    prefix: tuple[Any, ...] = () if exc.title == Baseline.__name__ else ("cases",)
    for e in errors[:3]:
        where = ".".join(str(x) for x in (*prefix, *e["loc"])) or "top level"
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def load_baseline(path: Path) -> dict[str, Any] | None:
    """The baseline at ``path`` (None when there is none), validated against :class:`Baseline`; anything
    unreadable or of the wrong shape is a :class:`DataError` naming the file and saying to re-bless."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"baseline {path} is unreadable: {exc}; re-bless it with --bless") from exc
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT or "cases" not in doc:
        raise DataError(f"baseline {path} has an unknown format; re-bless it with --bless")
    try:
        Baseline.check(doc)
    except ValidationError as exc:
        raise DataError(f"baseline {path} is malformed ({_problem(exc)}); re-bless it with --bless") from exc
    return dict(doc)


@dataclass
class MetricChange:
    metric: str
    base: float
    new: float
    delta: float
    """new − base (on the shared cases)."""
    worse_by: float
    """How much worse (positive) or better (negative), in the metric's own direction."""
    tolerance: float | None
    test: str
    p_worse: float | None
    regressed: bool

    def describe(self) -> str:
        arrow = "worse" if self.worse_by > 0 else "better" if self.worse_by < 0 else "unchanged"
        tol = "" if self.tolerance is None else f", tolerance {self.tolerance:g}"
        p = "" if self.p_worse is None else f", {self.test} p={self.p_worse:.3g}"
        return f"{self.metric} {self.base:.4f} -> {self.new:.4f} ({self.delta:+.4f}, {arrow}{tol}{p})"


@dataclass
class Comparison:
    suite: str
    n_shared: int
    n_new_only: int
    n_base_only: int
    changes: list[MetricChange]
    notes: list[str]
    mcnemar: dict[str, float]

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.regressed]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "n_shared": self.n_shared,
            "n_new_only": self.n_new_only,
            "n_base_only": self.n_base_only,
            "mcnemar": self.mcnemar,
            "notes": self.notes,
            "changes": [
                {"metric": c.metric, "base": M.finite(c.base), "new": M.finite(c.new), "delta": M.finite(c.delta),
                 "tolerance": c.tolerance, "test": c.test, "p_worse": c.p_worse, "regressed": c.regressed}
                for c in self.changes
            ],
            "regressions": [c.describe() for c in self.regressions],
        }


def _metric_fn(name: str, threshold: float | None, oos_label: str | None,
               policy: Policy, by_class: dict[str, float] | None = None) -> Any:
    def value(arr: CaseArrays) -> float:
        return compute_metrics(arr, threshold=threshold, oos_label=oos_label, policy=policy,
                               by_class=by_class).get(name, float("nan"))

    # fast paths for the bootstrap (compute_metrics does every figure at once)
    if name == "macro_f1":
        return lambda arr: M.macro_f1(arr.gold, arr.pred)
    if name == "ece":
        return lambda arr: M.expected_calibration_error(arr.conf, arr.correct)
    if name == "brier":
        return lambda arr: float(arr.brier.mean())
    if name == "coverage":
        return lambda arr: float(accepted(arr.conf, threshold, labels=arr.pred, by_class=by_class).mean())
    return value


def compare(run: SuiteRun | PairedRun, baseline: dict[str, Any], *, rounds: int = 1000) -> Comparison:
    """Compare ``run`` with a stored baseline on their shared cases; see the module docstring."""
    if isinstance(run, PairedRun):
        return compare_paired(run, baseline, rounds=rounds)
    if baseline.get("agent", "triage") != "triage":
        raise DataError(f"suite {run.suite.name}: the baseline is for agent {baseline.get('agent')}; re-bless it")
    base_all = CaseArrays.from_columns(baseline["cases"])
    new_pos = {cid: i for i, cid in enumerate(run.arrays.ids)}
    base_pos = {cid: i for i, cid in enumerate(base_all.ids)}
    shared = [cid for cid in run.arrays.ids if cid in base_pos]
    notes: list[str] = []
    if not shared:
        raise DataError(f"suite {run.suite.name}: the baseline shares no case id with this run; re-bless it")
    if baseline.get("dataset_hash") != run.dataset_sha256:
        notes.append(f"dataset changed since the baseline: compared on the {len(shared)} shared cases")
    if baseline.get("model_version") != run.model.classifier.version:
        notes.append(f"model {baseline.get('model_version')} -> {run.model.classifier.version}")
    if baseline.get("threshold") != run.threshold:
        notes.append(f"threshold {baseline.get('threshold')} -> {run.threshold} "
                     "(baseline cases are re-scored at the new threshold)")
    if baseline.get("suite_hash") != run.suite.sha256:
        notes.append("the suite file changed since the baseline")
    if (baseline.get("class_thresholds") or {}) != run.class_thresholds:
        notes.append("per-class thresholds changed since the baseline (baseline cases are re-scored with the "
                     "new ones)")
    new = run.arrays.take(np.array([new_pos[c] for c in shared]))
    base = base_all.take(np.array([base_pos[c] for c in shared]))
    threshold, oos, by_class = run.threshold, run.suite.oos_label, run.class_thresholds
    base_vals = compute_metrics(base, threshold=threshold, oos_label=oos, policy=run.policy, by_class=by_class)
    new_vals = compute_metrics(new, threshold=threshold, oos_label=oos, policy=run.policy, by_class=by_class)
    mc = M.mcnemar(base.correct, new.correct)
    names = [m for m in dict.fromkeys([*run.suite.metrics, *run.suite.tolerances]) if m in new_vals]
    changes: list[MetricChange] = []
    for name in names:
        b, v = base_vals[name], new_vals[name]
        if not (np.isfinite(b) and np.isfinite(v)):
            continue
        higher = DIRECTION[name]
        worse_by = (b - v) if higher else (v - b)
        tol = run.suite.tolerances.get(name)
        p_worse: float | None = None
        test = "mcnemar" if name == "accuracy" else "paired bootstrap"
        if tol is not None and worse_by > tol:
            if name == "accuracy":
                p_worse = mc["p_worse"]
            else:
                fn = _metric_fn(name, threshold, oos, run.policy, by_class)
                n = len(shared)

                def stat(idx: np.ndarray, fn: Any = fn) -> float:
                    return float(fn(new.take(idx, with_ids=False)) - fn(base.take(idx, with_ids=False)))

                p_worse = M.paired_bootstrap(stat, n, higher_is_better=higher, rounds=rounds)["p_worse"]
        regressed = tol is not None and worse_by > tol and p_worse is not None and p_worse < run.suite.alpha
        changes.append(MetricChange(name, b, v, v - b, worse_by, tol, test, p_worse, regressed))
    return Comparison(run.suite.name, len(shared), len(run.arrays.ids) - len(shared),
                      len(base_all.ids) - len(shared), changes, notes, mc)
