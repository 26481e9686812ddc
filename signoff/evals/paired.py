"""What the contracts and renewal suites share: per-case columns, metrics over any subset of cases, and
the paired-bootstrap gate against a blessed baseline.

A *case* is the unit the bootstrap resamples: an account (renewal), a contract/category pair
(contracts). A run keeps its cases as columns (``{"id": [...], ...}``, what a baseline stores) and
computes every metric from columns plus an optional index array (a bootstrap resample; repeated
indices count repeatedly). The gate (:func:`compare_paired`) scores baseline and new run on their
shared case ids with the *new* run's metric code, and for each metric whose tolerance is exceeded
asks a paired bootstrap (1,000 resamples of the shared cases, the same resample for both) whether
the worsening is significant at the suite's ``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from signoff.errors import DataError
from signoff.evals import metrics as M
from signoff.evals.suite import DIRECTION, METRICS, Suite

if TYPE_CHECKING:
    from signoff.evals.gate import Comparison

Columns = dict[str, list[Any]]


def take(cols: Columns, positions: list[int]) -> Columns:
    return {k: [v[i] for i in positions] for k, v in cols.items()}


@dataclass
class PairedRun:
    """A scored suite whose cases are gated with a paired bootstrap (see the module doc)."""

    suite: Suite
    cases: Columns
    model_version: str
    model_source: str
    dataset_sha256: str
    dataset: str
    runtime_seconds: float
    n_train: int | None = None
    train_seconds: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Agent-specific report sections (per category, reliability, ...)."""
    cost: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=lambda: {"file": None, "n_computed": 0, "n_resumed": 0})
    threshold: float | None = None
    threshold_source: str = "n/a"

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self.cases["id"]]

    @property
    def n(self) -> int:
        return len(self.cases["id"])

    @property
    def unit(self) -> str:
        return "case"

    def values_of(self, cols: Columns, idx: np.ndarray | None = None, *, only: str | None = None
                  ) -> dict[str, float]:  # pragma: no cover
        """Every metric on ``cols`` (resampled by ``idx``); ``only``: at least that one (a bootstrap)."""
        raise NotImplementedError

    def headline(self) -> dict[str, float | None]:
        return {name: M.finite(self.values[name]) for name in self.suite.metrics if name in self.values}

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite.name,
            "agent": self.suite.agent,
            "n": self.n,
            "unit": self.unit,
            "metrics": self.headline(),
            "secondary": {k: M.finite(v) for k, v in self.values.items() if k not in METRICS},
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "model_version": self.model_version,
            "model_source": self.model_source,
            "n_train": self.n_train,
            "train_seconds": self.train_seconds,
            "dataset": self.dataset,
            "dataset_hash": self.dataset_sha256,
            "suite_hash": self.suite.sha256,
            "suite_file": str(self.suite.path),
            "runtime_seconds": round(self.runtime_seconds, 2),
            "run": self.run_info,
            "cost": self.cost,
        } | self.extra

    def baseline_doc(self, fmt: int) -> dict[str, Any]:
        summary = self.to_json()
        return {"format": fmt, "suite": self.suite.name, "agent": self.suite.agent, "n": self.n,
                "metrics": summary["metrics"], "secondary": summary["secondary"], "threshold": self.threshold,
                "model_version": self.model_version, "dataset_hash": self.dataset_sha256,
                "suite_hash": self.suite.sha256, "cases": self.cases}


def compare_paired(run: PairedRun, baseline: dict[str, Any], *, rounds: int = 1000) -> Comparison:
    """The gate for a :class:`PairedRun` (returns a :class:`signoff.evals.gate.Comparison`)."""
    from signoff.evals.gate import Comparison, MetricChange

    if baseline.get("agent", run.suite.agent) != run.suite.agent:
        raise DataError(f"suite {run.suite.name}: the baseline is for agent {baseline.get('agent')}, "
                        f"not {run.suite.agent}; re-bless it")
    base_cols: Columns = baseline["cases"]
    if set(base_cols) != set(run.cases):
        raise DataError(f"suite {run.suite.name}: the baseline's case columns {sorted(base_cols)} differ from "
                        f"this run's {sorted(run.cases)}; re-bless it")
    base_pos = {str(cid): i for i, cid in enumerate(base_cols["id"])}
    new_ids = run.ids
    shared = [cid for cid in new_ids if cid in base_pos]
    if not shared:
        raise DataError(f"suite {run.suite.name}: the baseline shares no case id with this run; re-bless it")
    notes: list[str] = []
    if baseline.get("dataset_hash") != run.dataset_sha256:
        notes.append(f"dataset changed since the baseline: compared on the {len(shared)} shared {run.unit}s")
    if baseline.get("model_version") != run.model_version:
        notes.append(f"model {baseline.get('model_version')} -> {run.model_version}")
    if baseline.get("suite_hash") != run.suite.sha256:
        notes.append("the suite file changed since the baseline")
    new_index = {cid: i for i, cid in enumerate(new_ids)}
    new = take(run.cases, [new_index[c] for c in shared])
    base = take(base_cols, [base_pos[c] for c in shared])
    base_vals, new_vals = run.values_of(base), run.values_of(new)
    names = [m for m in dict.fromkeys([*run.suite.metrics, *run.suite.tolerances]) if m in new_vals]
    changes: list[MetricChange] = []
    n = len(shared)
    for name in names:
        b, v = base_vals[name], new_vals[name]
        if not (np.isfinite(b) and np.isfinite(v)):
            continue
        higher = DIRECTION[name]
        worse_by = (b - v) if higher else (v - b)
        tol = run.suite.tolerances.get(name)
        p_worse: float | None = None
        if tol is not None and worse_by > tol:

            def stat(idx: np.ndarray, name: str = name) -> float:
                return float(run.values_of(new, idx, only=name)[name] - run.values_of(base, idx, only=name)[name])

            p_worse = M.paired_bootstrap(stat, n, higher_is_better=higher, rounds=rounds)["p_worse"]
        regressed = tol is not None and worse_by > tol and p_worse is not None and p_worse < run.suite.alpha
        changes.append(MetricChange(name, b, v, v - b, worse_by, tol, "paired bootstrap", p_worse, regressed))
    return Comparison(run.suite.name, n, len(new_ids) - n, len(base_pos) - n, changes, notes, {})
