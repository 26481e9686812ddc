"""``agent: renewal`` suites: the renewal agent's churn model on labelled accounts (IBM Telco).

The model is the agent's own :class:`~signoff.agents.risk_model.RiskModel`, fitted with its public
``fit`` on the suite's ``train`` CSV (or ``model: default``, the model ``signoff train risk`` saved),
and each case is scored with ``predict_proba``, the calibrated probability the agent bands and
proposes on. Rows are read with :func:`signoff.tools.accounts.read_telco` (``Churn`` is the label,
``customerID`` the case id), the same mapping onto the shared account features the agent uses.

Metrics: ``roc_auc``, ``pr_auc`` (average precision), ``brier``, ``ece`` (10 equal-width bins,
:func:`~signoff.agents.risk_model.binary_ece`) and ``lift_top_decile``
(:func:`~signoff.agents.risk_model.lift_at`), as ``bench/churn_risk.py`` reports them. The gate
resamples accounts (paired bootstrap, :mod:`signoff.evals.paired`).

``drop_features`` (a list of feature names) blanks those features in training and scoring rows
(an ablation, or a deliberately worse model for a gate test).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from signoff.config import Settings
from signoff.errors import DataError
from signoff.evals import metrics as M
from signoff.evals.paired import Columns, PairedRun
from signoff.evals.suite import DataRef, Suite, resolve_data, select


def load_accounts(ref: DataRef, suite: Suite, public_data_dir: Path
                  ) -> tuple[list[str], list[Any], list[int], Path, str]:
    """(ids, features, labels, file, sha256 of the picked rows before ``drop_features``) from a Telco CSV."""
    import hashlib

    from signoff.domain import canonical_json
    from signoff.tools.accounts import FEATURES, read_telco

    path = resolve_data(ref, suite, public_data_dir)
    ids, feats, labels = read_telco(path)
    if not ids:
        raise DataError(f"{path}: no labelled accounts")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: customer ids are not unique")
    keep = select(ids, ref, path)
    drop = set(suite.drop_features or [])
    unknown = drop - {f.name for f in FEATURES}
    if unknown:
        raise DataError(f"suite {suite.name}: drop_features names unknown features {sorted(unknown)}")
    picked = [ids[i] for i in keep], [feats[i] for i in keep], [labels[i] for i in keep]
    digest = hashlib.sha256(canonical_json(list(picked)).encode()).hexdigest()
    rows = [{k: (None if k in drop else v) for k, v in f.items()} for f in picked[1]]
    return picked[0], rows, picked[2], path, digest


def _values(y: np.ndarray, p: np.ndarray, only: str | None = None) -> dict[str, float]:
    from signoff.agents.risk_model import binary_ece, lift_at

    names = ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile", "churn_rate")
    if not y.size:
        return dict.fromkeys(names, float("nan"))
    fns = {
        "roc_auc": lambda: M.roc_auc_fast(y, p),  # == sklearn's (tests), without its checks: bootstrap speed
        "pr_auc": lambda: M.pr_auc_fast(y, p),
        "brier": lambda: float(np.mean((p - y) ** 2)),
        "ece": lambda: binary_ece(p, y),
        "lift_top_decile": lambda: lift_at(p, y, 0.1),
        "churn_rate": lambda: float(y.mean()),
    }
    return {name: fns[name]() for name in names if only is None or name == only}


class RenewalRun(PairedRun):
    @property
    def unit(self) -> str:
        return "account"

    def values_of(self, cols: Columns, idx: np.ndarray | None = None, *, only: str | None = None
                  ) -> dict[str, float]:
        y = np.asarray(cols["churned"], dtype=np.float64)
        p = np.asarray(cols["p"], dtype=np.float64)
        if idx is not None:
            y, p = y[idx], p[idx]
        return _values(y, p, only)


def run_renewal(suite: Suite, settings: Settings, *, progress: Any = None) -> RenewalRun:
    from signoff.agents.risk_model import RiskModel

    started = time.perf_counter()
    ids, rows, labels, path, dataset_sha = load_accounts(suite.dataset, suite, settings.public_data_dir)
    train_seconds: float | None = None
    n_train: int | None = None
    if suite.train is not None:
        _tids, trows, tlabels, tpath, _ = load_accounts(suite.train, suite, settings.public_data_dir)
        if progress is not None:
            progress("training", 0, 1)
        t0 = time.perf_counter()
        model = RiskModel.fit(trows, tlabels, source=f"eval:{suite.name}:{tpath.name}")
        train_seconds, n_train, source = round(time.perf_counter() - t0, 3), len(tlabels), str(tpath)
    else:
        from signoff.agents.renewal import risk_model_dir

        mdir = risk_model_dir(settings) if suite.model == "default" else Path(str(suite.model))
        if not mdir.is_absolute() and suite.model != "default":
            mdir = suite.directory / mdir
        model = RiskModel.load(mdir)
        source = str(mdir)
    if progress is not None:
        progress("scoring", 0, len(ids))
    t0 = time.perf_counter()
    p = np.asarray(model.predict_proba(rows), dtype=np.float64)
    seconds = time.perf_counter() - t0
    if progress is not None:
        progress("scoring", len(ids), len(ids))
    cols: Columns = {"id": ids, "churned": [int(v) for v in labels], "p": [round(float(v), 6) for v in p]}
    run = RenewalRun(suite=suite, cases=cols, model_version=model.version, model_source=source,
                     dataset_sha256=dataset_sha, dataset=str(path), runtime_seconds=0.0, n_train=n_train,
                     train_seconds=train_seconds)
    run.values = run.values_of(cols)
    y = np.asarray(cols["churned"], dtype=np.float64)
    run.extra = {
        "reliability": [{k: M.finite(v) if isinstance(v, float) else v for k, v in b.items()}
                        for b in M.reliability_bins(np.asarray(cols["p"]), y)],
        "reliability_axis": "churn rate",
        "dropped_features": sorted(suite.drop_features or []),
    }
    run.cost = {"model_calls": 1, "cases_per_call": len(ids),
                "latency_ms_per_case": round(seconds / max(1, len(ids)) * 1000, 4), "tokens": 0,
                "backend": "embedded"}
    run.runtime_seconds = time.perf_counter() - started
    return run
