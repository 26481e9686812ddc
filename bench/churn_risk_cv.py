"""Model selection for the renewal-risk model, on the Telco **dev** split only (cross-validation; test is untouched).

    nice -n 10 .venv/bin/python bench/churn_risk_cv.py [--repeats 3] [--folds 5] [--json out.json]

Candidates, each scored out-of-fold on ``telco_churn_dev.csv`` with the same folds (repeated stratified
k-fold, seeds 0..repeats-1):

* ``plain_lr``: the reference, every raw Telco column one-hot / standardised (as in ``bench/churn_risk.py``);
* ``risk_lr``: Signoff's :class:`~signoff.agents.risk_model.RiskModel` (mapped features, Platt), as shipped;
* ``risk_lr_no_multi_seat``: the same without the ``multi_seat`` feature (the model before it was added);
* ``hgb``: sklearn ``HistGradientBoostingClassifier`` on the mapped features (native NaN for missing,
  categories native; ``learning_rate=0.03, max_iter=300, max_leaf_nodes=4, min_samples_leaf=50,
  l2_regularization=1``, the best of a small grid tried on dev), its log-loss probability as is;
* ``ensemble``: the mean of ``risk_lr`` and ``hgb`` probabilities.

Prints mean ROC-AUC / PR-AUC / Brier / ECE / top-decile lift over repeats and, per candidate, the
ROC-AUC difference to ``risk_lr`` in every repeat (the same folds, so paired). The shipped model is the
candidate that wins here; ``bench/churn_risk.py`` then reports it once on test.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from churn_risk import _RAW_CATEGORICAL, metrics  # bench/churn_risk.py (this script's folder is on sys.path)
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from signoff.agents.risk_model import RiskModel
from signoff.config import Settings
from signoff.tools.accounts import FEATURES, Features, read_telco, telco_paths

Fit = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(train indices, test indices) -> test probabilities."""


def gbm_matrix(rows: list[Features]) -> tuple[np.ndarray, list[bool]]:
    """Mapped features as a float matrix (NaN = missing; categories as codes); all-missing columns dropped."""
    cols = []
    for spec in FEATURES:
        if spec.kind == "cat":
            cols.append([float(spec.categories.index(str(r[spec.name]))) if r.get(spec.name) is not None else np.nan
                         for r in rows])
        else:
            cols.append([float(r[spec.name]) if r.get(spec.name) is not None else np.nan  # type: ignore[arg-type]
                         for r in rows])
    x = np.array(cols).T
    keep = ~np.all(np.isnan(x), axis=0)
    return x[:, keep], [spec.kind == "cat" for spec, k in zip(FEATURES, keep, strict=True) if k]


def candidates(feats: list[Features], raw: list[dict[str, str]], y: np.ndarray) -> dict[str, Fit]:
    x_gbm, cat = gbm_matrix(feats)
    no_ms = [{**f, "multi_seat": None} for f in feats]

    def risk(rows: list[Features]) -> Fit:
        def fit(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            model = RiskModel.fit([rows[i] for i in tr], y[tr].tolist())
            return model.predict_proba([rows[i] for i in te])
        return fit

    def hgb(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        g = HistGradientBoostingClassifier(learning_rate=0.03, max_iter=300, max_leaf_nodes=4, min_samples_leaf=50,
                                           l2_regularization=1.0, categorical_features=cat, random_state=0)
        return g.fit(x_gbm[tr], y[tr]).predict_proba(x_gbm[te])[:, 1]

    def plain(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        def num(rs: list[dict[str, str]]) -> np.ndarray:
            return np.array([[float(r["tenure"]), float(r["MonthlyCharges"]),
                              float(r["TotalCharges"]) if r["TotalCharges"].strip() else 0.0] for r in rs])
        a, b = [raw[i] for i in tr], [raw[i] for i in te]
        oh = OneHotEncoder(handle_unknown="ignore").fit([[r[c] for c in _RAW_CATEGORICAL] for r in a])
        sc = StandardScaler().fit(num(a))

        def x(rs: list[dict[str, str]]) -> np.ndarray:
            return np.c_[oh.transform([[r[c] for c in _RAW_CATEGORICAL] for r in rs]).toarray(), sc.transform(num(rs))]
        return LogisticRegression(max_iter=5000).fit(x(a), y[tr]).predict_proba(x(b))[:, 1]

    return {"plain_lr": plain, "risk_lr": risk(feats), "risk_lr_no_multi_seat": risk(no_ms), "hgb": hgb}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    dev, _test = telco_paths(Settings().public_data_dir)
    _, feats, labels = read_telco(dev)
    with dev.open(encoding="utf-8", newline="") as fh:
        raw = list(csv.DictReader(fh))
    y = np.asarray(labels)
    fits = candidates(feats, raw, y)
    per: dict[str, list[dict[str, float]]] = {k: [] for k in [*fits, "ensemble"]}
    for rep in range(args.repeats):
        oof = {k: np.zeros(len(y)) for k in fits}
        for tr, te in StratifiedKFold(args.folds, shuffle=True, random_state=rep).split(np.zeros(len(y)), y):
            for name, fit in fits.items():
                oof[name][te] = fit(tr, te)
        oof["ensemble"] = (oof["risk_lr"] + oof["hgb"]) / 2
        for name, p in oof.items():
            per[name].append(metrics(y, p))
    print(f"Telco dev only: {len(y)} rows, {args.repeats} x {args.folds}-fold out-of-fold scores")
    print(f"{'':24}{'ROC-AUC':>9}{'PR-AUC':>9}{'Brier':>9}{'ECE':>9}{'lift@10%':>10}"
          "   ROC-AUC minus risk_lr per repeat")
    out: dict[str, Any] = {}
    for name, runs in per.items():
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        diffs = [r["roc_auc"] - b["roc_auc"] for r, b in zip(runs, per["risk_lr"], strict=True)]
        out[name] = {"mean": mean, "auc_minus_risk_lr": diffs}
        print(f"{name:24}{mean['roc_auc']:9.4f}{mean['pr_auc']:9.4f}{mean['brier']:9.4f}{mean['ece']:9.4f}"
              f"{mean['lift_top_decile']:10.2f}   " + " ".join(f"{d:+.4f}" for d in diffs))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
