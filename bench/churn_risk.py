"""Renewal-risk model on IBM Telco churn: train on dev, report on test (read in place from ../shared/data).

    .venv/bin/python bench/churn_risk.py [--calibration sigmoid|isotonic] [--c 0.1] [--json out.json]

Reports ROC-AUC, PR-AUC, Brier, ECE (10 equal-width bins), lift in the top decile, for Signoff's
risk model (the shared account features, :mod:`signoff.tools.accounts`) and for the reference plain
logistic regression (every raw Telco column one-hot / standardised, no calibration step), with a paired
bootstrap 95 % interval of the ROC-AUC difference, and the reliability table of the risk model.
The model was chosen on dev alone (``bench/churn_risk_cv.py``, cross-validation); this script is the one
report on test.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from signoff.agents.risk_model import RiskModel, binary_ece, lift_at
from signoff.config import Settings
from signoff.tools.accounts import read_telco, telco_paths

_RAW_CATEGORICAL = ["gender", "SeniorCitizen", "Partner", "Dependents", "PhoneService", "MultipleLines",
                    "InternetService", "OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport",
                    "StreamingTV", "StreamingMovies", "Contract", "PaperlessBilling", "PaymentMethod"]


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
            "brier": float(brier_score_loss(y, p)), "ece": binary_ece(p, y), "lift_top_decile": lift_at(p, y, 0.1)}


def plain_lr(dev: Path, test: Path) -> np.ndarray:
    def rows(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def numeric(rs: list[dict[str, str]]) -> np.ndarray:
        return np.array([[float(r["tenure"]), float(r["MonthlyCharges"]),
                          float(r["TotalCharges"]) if r["TotalCharges"].strip() else 0.0] for r in rs])

    d, t = rows(dev), rows(test)
    y = np.array([r["Churn"] == "Yes" for r in d], int)
    oh = OneHotEncoder(handle_unknown="ignore").fit([[r[c] for c in _RAW_CATEGORICAL] for r in d])
    sc = StandardScaler().fit(numeric(d))

    def x(rs: list[dict[str, str]]) -> np.ndarray:
        return np.c_[oh.transform([[r[c] for c in _RAW_CATEGORICAL] for r in rs]).toarray(), sc.transform(numeric(rs))]

    return LogisticRegression(max_iter=5000).fit(x(d), y).predict_proba(x(t))[:, 1]


def bootstrap_auc_diff(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        diffs.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return [{"bin": f"{b / n_bins:.1f}-{(b + 1) / n_bins:.1f}", "n": int((idx == b).sum()),
             "mean_p": round(float(p[idx == b].mean()), 3), "churn_rate": round(float(y[idx == b].mean()), 3)}
            for b in range(n_bins) if (idx == b).any()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", default="sigmoid", choices=["sigmoid", "isotonic"])
    ap.add_argument("--c", type=float, default=0.1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    dev, test = telco_paths(Settings().public_data_dir)
    _, fd, yd = read_telco(dev)
    _, ft, yt_list = read_telco(test)
    yt = np.asarray(yt_list)
    t0 = time.perf_counter()
    model = RiskModel.fit(fd, yd, c=args.c, method=args.calibration, source=f"telco:{dev.name}")
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = model.predict_proba(ft)
    score_ms = (time.perf_counter() - t0) * 1000
    base = plain_lr(dev, test)
    ours, ref = metrics(yt, p), metrics(yt, base)
    lo, hi = bootstrap_auc_diff(yt, p, base)
    conf = np.array([r.confidence for r in model.score(ft[:500])])

    print(f"IBM Telco churn: train {len(yd)} (dev), test {len(yt)}; model {model.version}, "
          f"{args.calibration} calibration, C={args.c}; fit {fit_s:.2f}s, scoring {len(yt)} rows {score_ms:.0f} ms")
    print(f"{'':28}{'ROC-AUC':>9}{'PR-AUC':>9}{'Brier':>9}{'ECE':>9}{'lift@10%':>10}")
    for name, m in (("signoff risk model", ours), ("plain logistic regression", ref)):
        print(f"{name:28}{m['roc_auc']:9.4f}{m['pr_auc']:9.4f}{m['brier']:9.4f}{m['ece']:9.4f}"
              f"{m['lift_top_decile']:10.2f}")
    verdict = "significant" if lo > 0 or hi < 0 else "not significant: the interval contains 0"
    print(f"ROC-AUC difference {ours['roc_auc'] - ref['roc_auc']:+.4f} (paired bootstrap 95% {lo:+.4f} .. {hi:+.4f}; "
          f"{verdict})")
    print(f"held-out fold (calibration): {model.manifest['heldout']}")
    print(f"confidence on Telco rows: median {np.median(conf):.2f} (min {conf.min():.2f})")
    print("reliability (test):")
    for row in reliability(yt, p):
        print(f"  {row['bin']}: n={row['n']:4d}  mean p {row['mean_p']:.3f}  churn rate {row['churn_rate']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"model": model.version, "ours": ours, "plain_lr": ref,
                                         "auc_diff_ci95": [lo, hi], "heldout": model.manifest["heldout"],
                                         "reliability": reliability(yt, p)}, indent=2))


if __name__ == "__main__":
    main()
