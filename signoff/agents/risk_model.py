"""The renewal-risk model: a calibrated, explainable churn probability over the shared account features.

Model
    A logistic regression over an explicit design matrix built from :data:`signoff.tools.accounts.FEATURES`,
    then a calibrator fitted on a held-out fold:

    * a numeric feature gives its standardised value, a standardised ``log1p`` of it (for non-negative
      features) and a *missing indicator*; values are clipped to the training range (0.5–99.5th
      percentile) and an account whose value was clipped is told so;
    * a boolean gives its value and a missing indicator; a category one column per level, plus a
      missing indicator;
    * two interactions that carry most of Telco's structure: month-to-month × log tenure, and
      fibre × monthly charges (each credited half to either feature in the explanation);
    * every column is centred on its training mean and a **missing value is set to that mean**, so
      a missing feature contributes exactly nothing through its value columns, and whatever its
      indicator learnt (zero when the training data never lacked it).

    Calibration: a stratified 25 % of the data is held out, the regression is fitted on the rest, Platt
    scaling (or isotonic, ``method="isotonic"``) is fitted on the held-out fold, and the regression is refitted
    on all the data keeping the calibrator. The held-out ROC-AUC, Brier and ECE (10 equal-width bins of
    the predicted probability, ``sum |mean p - churn rate| * share``) go into the manifest.

Explanations
    The regression is additive in log-odds: ``logit = b + sum_j w_j * (x_j - mean_j)``; grouping the
    columns by feature gives each feature's exact contribution in log-odds. ``delta`` is the calibrated
    probability minus the probability with that feature's contribution removed (set to the average
    account): "tenure of 2 months adds 14 points".

Confidence
    ``coverage * (1 - width)``: ``coverage`` is the share of the model's average absolute contribution
    (measured on the training data) carried by features this account actually has; ``width`` is the
    width of the 90 % interval of the calibrated probability from the coefficients' Laplace posterior
    (``cov = (X'WX + I/C)^-1``). A Telco row scores ~0.9; an Odoo account, which lacks most of the
    features a Telco-trained model uses, scores lower and the policy may send it to a human.

Artefact (``save(dir)``, no pickle: JSON only)::

    dir/LATEST                       the version last saved
    dir/<version>/manifest.json      version, created_at, n, churn rate, data_sha256, source, metrics
    dir/<version>/model.json         columns, means, scales, clip ranges, coefficients, covariance, calibrator

``<version>`` is ``rk1-<data sha256[:12]>``: the same data gives the same version (fitting is deterministic).

Public API (stable: the agent, ``signoff risk``, ``bench/`` and the ``agent: renewal`` eval suites call it)
    * ``RiskModel.fit(features, labels, *, c=0.1, method="sigmoid", holdout=0.25, seed=0, source="")``
      -> a fitted model (``features``: :data:`~signoff.tools.accounts.Features` dicts, ``labels``: 1 = churned);
    * ``model.predict_proba(rows)`` -> calibrated churn probabilities (numpy array);
    * ``model.score(rows)`` -> :class:`RiskResult` per row (probability, interval, confidence, drivers);
    * ``model.save(directory)`` / ``RiskModel.load(directory, version=None)``; ``model.version``, ``model.manifest``;
    * helpers ``binary_ece``, ``lift_at``, ``describe``, ``band_for``.

Model selection
    Chosen on the Telco dev split only (``bench/churn_risk_cv.py``, repeated 5-fold cross-validation):
    this regression beat a tuned ``HistGradientBoostingClassifier`` on the same features and the mean of
    the two, so the shipped model stays a single, exactly explainable regression.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from signoff.domain import canonical_json, utcnow
from signoff.errors import DataError, ModelError, ModelNotTrained
from signoff.tools.accounts import FEATURES, SPECS, Features

FORMAT = 1
_MODEL_FILE = "model.json"
_MANIFEST_FILE = "manifest.json"
_LATEST_FILE = "LATEST"
_LOG_FEATURES = frozenset({"tenure_months", "recurring_monthly", "seats", "overdue_amount", "tickets_90d"})
#: (name, feature a, feature b or category "a=level", ...): products of two centred columns.
_INTERACTIONS: tuple[tuple[str, tuple[str, str], tuple[str, str]], ...] = (
    ("monthly_x_log_tenure", ("commitment", "monthly"), ("tenure_months", "log")),
    ("fiber_x_charges", ("product_line", "fiber"), ("recurring_monthly", "value")),
    ("fiber_x_log_tenure", ("product_line", "fiber"), ("tenure_months", "log")),
    ("echeck_x_log_tenure", ("payment_method", "electronic"), ("tenure_months", "log")),
    ("annual_x_log_tenure", ("commitment", "annual"), ("tenure_months", "log")),
)
#: Numeric features that also get hinge columns ``max(0, x - knot)`` at training quantiles (a piecewise-linear fit).
_HINGE_FEATURES = frozenset({"tenure_months", "recurring_monthly"})
_HINGE_QUANTILES = (20.0, 40.0, 60.0, 80.0)
Z90 = 1.6448536269514722


def data_sha256(features: Sequence[Features], labels: Sequence[int]) -> str:
    """sha256 of the canonical, sorted list of ``[features, label]``: order-independent."""
    rows = sorted(canonical_json([f, int(y)]) for f, y in zip(features, labels, strict=True))
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


def version_sha(data_sha: str, options: dict[str, Any]) -> str:
    """The model version's hash: the training data and every training option (C, calibration, split)."""
    return hashlib.sha256(f"{data_sha}\n{canonical_json(options)}".encode()).hexdigest()


def binary_ece(proba: Any, labels: Any, *, n_bins: int = 10) -> float:
    """Expected calibration error of a churn probability: 10 equal-width bins, weighted by share."""
    p, y = np.asarray(proba, float), np.asarray(labels, float)
    if len(p) == 0:
        return 0.0
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            total += abs(p[mask].mean() - y[mask].mean()) * mask.mean()
    return float(total)


def lift_at(proba: Any, labels: Any, fraction: float = 0.1) -> float:
    """Churn rate among the top ``fraction`` by probability, over the overall churn rate."""
    p, y = np.asarray(proba, float), np.asarray(labels, float)
    k = max(1, int(round(len(p) * fraction)))
    top = np.argsort(-p, kind="stable")[:k]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else 0.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


@dataclass
class Column:
    feature: str
    kind: Literal["value", "log", "hinge", "level", "missing", "interaction"]
    level: str | None = None
    other: str | None = None
    """For an interaction: the second feature (credit is split half and half)."""

    @property
    def name(self) -> str:
        return f"{self.feature}:{self.kind}" + (f"={self.level}" if self.level else "")


@dataclass
class Driver:
    feature: str
    label: str
    value: Any
    contribution: float
    """Log-odds this feature adds to the account's churn logit (0 when missing and never learnt)."""
    delta: float
    """Calibrated probability minus the probability without this feature's contribution."""
    missing: bool = False
    clipped: bool = False


@dataclass
class RiskResult:
    probability: float
    interval: tuple[float, float]
    confidence: float
    coverage: float
    drivers: list[Driver]
    """All features, largest absolute contribution first."""
    missing: list[str]
    model_version: str

    def top(self, n: int = 3, *, direction: Literal["up", "any"] = "any") -> list[Driver]:
        pool = [d for d in self.drivers if not d.missing or d.contribution != 0.0]
        if direction == "up":
            pool = [d for d in pool if d.contribution > 0]
        return pool[:n]


@dataclass
class RiskModel:
    columns: list[Column] = field(default_factory=list)
    means: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scales: np.ndarray = field(default_factory=lambda: np.ones(0))
    clip: dict[str, tuple[float, float]] = field(default_factory=dict)
    fill: dict[str, float] = field(default_factory=dict)
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept: float = 0.0
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    calibrator: dict[str, Any] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)
    observed: frozenset[str] = frozenset()
    """Features the training data had at least once; the others are ignored at scoring (never learnt)."""
    version: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)

    # -- design matrix ----------------------------------------------------------------------------

    def _learnt(self, col: Column) -> bool:
        return not self.observed or (col.feature in self.observed and (col.other is None or col.other in self.observed))

    def _raw(self, rows: Sequence[Features]) -> tuple[np.ndarray, np.ndarray]:
        """(design matrix before centring, with NaN where missing; clipped flags per numeric feature)."""
        n = len(rows)
        x = np.full((n, len(self.columns)), np.nan)
        clipped = np.zeros((n, len(FEATURES)), bool)
        fidx = {f.name: i for i, f in enumerate(FEATURES)}
        base: dict[str, np.ndarray] = {}
        for j, col in enumerate(self.columns):
            spec = SPECS[col.feature]
            if not self._learnt(col):
                base[col.name] = x[:, j]  # never learnt: stays NaN, i.e. the training mean, i.e. no effect
                continue
            values = [r.get(col.feature) for r in rows]
            present = np.array([v is not None for v in values])
            if col.kind == "missing":
                x[:, j] = (~present).astype(float)
            elif col.kind == "level":
                x[:, j] = np.where(present, [1.0 if v == col.level else 0.0 for v in values], np.nan)
            elif col.kind in ("value", "log", "hinge"):
                num = np.array([float(v) if v is not None else np.nan for v in values])
                if spec.kind == "num" and col.feature in self.clip:
                    lo, hi = self.clip[col.feature]
                    clipped[:, fidx[col.feature]] |= (num < lo) | (num > hi)
                    num = np.clip(num, lo, hi)
                if col.kind == "log":
                    num = np.log1p(np.maximum(num, 0.0))
                elif col.kind == "hinge":
                    num = np.maximum(num - float(col.level or 0.0), 0.0)
                x[:, j] = num
            base[col.name] = x[:, j]
        for j, col in enumerate(self.columns):
            if col.kind == "interaction" and self._learnt(col):
                a, b = _interaction(col)
                x[:, j] = base[a] * base[b]
        return x, clipped

    def _design(self, rows: Sequence[Features]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raw, clipped = self._raw(rows)
        missing = np.isnan(raw)
        filled = np.where(missing, self.means, raw)
        x = (filled - self.means) / np.where(self.scales > 0, self.scales, 1.0)
        x[:, self.scales <= 0] = 0.0  # constant in training (e.g. a never-missing feature's indicator): no effect
        return x, missing, clipped

    # -- fitting ----------------------------------------------------------------------------------

    @classmethod
    def fit(cls, features: Sequence[Features], labels: Sequence[int], *, c: float = 0.1,
            method: Literal["sigmoid", "isotonic"] = "sigmoid", holdout: float = 0.25, seed: int = 0,
            source: str = "") -> RiskModel:
        y = np.asarray(labels, int)
        if len(features) != len(y):
            raise DataError("features and labels differ in length")
        if len(y) < 40 or y.sum() < 10 or (len(y) - y.sum()) < 10:
            raise DataError(f"need at least 40 labelled accounts with 10 churned and 10 not; got {len(y)} "
                            f"({int(y.sum())} churned)")
        rng = np.random.default_rng(seed)
        cal_idx: list[int] = []
        for cls_ in (0, 1):
            idx = np.flatnonzero(y == cls_)
            rng.shuffle(idx)
            cal_idx.extend(idx[: max(1, int(round(len(idx) * holdout)))].tolist())
        cal = np.zeros(len(y), bool)
        cal[cal_idx] = True
        fit_rows = [f for f, m in zip(features, cal, strict=True) if not m]
        cal_rows = [f for f, m in zip(features, cal, strict=True) if m]

        first = cls._fitted(fit_rows, y[~cal], c)
        z_cal = first._logit(cal_rows)
        calibrator = _fit_calibrator(z_cal, y[cal], method)
        # Reported on data the calibrator was not fitted on: the held-out part is split in two, and each
        # half is scored by a calibrator fitted on the other half (the shipped one uses all of it).
        y_cal = y[cal]
        half = np.zeros(len(y_cal), bool)
        for cls_ in (0, 1):
            idx = np.flatnonzero(y_cal == cls_)
            rng.shuffle(idx)
            half[idx[: len(idx) // 2]] = True
        p_raw, p_cal = _sigmoid(z_cal), np.zeros(len(y_cal))
        for part in (half, ~half):
            p_cal[part] = _apply_calibrator(_fit_calibrator(z_cal[~part], y_cal[~part], method), z_cal[part])

        model = cls._fitted(list(features), y, c)
        model.calibrator = calibrator
        options = {"c": c, "calibration": method, "holdout": holdout, "seed": seed}
        model.version = f"rk{FORMAT}-{version_sha(data_sha256(features, y.tolist()), options)[:12]}"
        from sklearn.metrics import brier_score_loss, roc_auc_score

        model.manifest = {
            "version": model.version, "format": FORMAT, "created_at": utcnow().isoformat(), "n": len(y),
            "churn_rate": round(float(y.mean()), 4), "data_sha256": data_sha256(features, y.tolist()),
            "source": source, "c": c, "calibration": method, "holdout": holdout, "seed": seed,
            "heldout": {
                "n": int(cal.sum()),
                "measured_on": "the held-out share, each half scored by a calibrator fitted on the other half",
                "roc_auc": round(float(roc_auc_score(y[cal], p_cal)), 4),
                "brier": round(float(brier_score_loss(y[cal], p_cal)), 4),
                "ece_before": round(binary_ece(p_raw, y[cal]), 4), "ece_after": round(binary_ece(p_cal, y[cal]), 4),
            },
        }
        return model

    @classmethod
    def _fitted(cls, rows: Sequence[Features], y: np.ndarray, c: float) -> RiskModel:
        from sklearn.linear_model import LogisticRegression

        model = cls()
        model.columns = _columns(rows)
        model.observed = frozenset(f.name for f in FEATURES if any(r.get(f.name) is not None for r in rows))
        for spec in FEATURES:
            if spec.kind == "num":
                vals = np.array([float(r[spec.name]) for r in rows if r.get(spec.name) is not None])  # type: ignore[arg-type]
                if len(vals):
                    model.clip[spec.name] = (float(np.percentile(vals, 0.5)), float(np.percentile(vals, 99.5)))
        raw, _ = model._raw(rows)
        seen = ~np.isnan(raw)
        means = np.where(seen.any(axis=0), np.nansum(raw, axis=0) / np.maximum(seen.sum(axis=0), 1), 0.0)
        model.means = means
        filled = np.where(np.isnan(raw), means, raw)
        scales = filled.std(axis=0)
        model.scales = np.where(scales > 1e-9, scales, 0.0)  # 0 marks a constant column (ignored at scoring)
        x = (filled - model.means) / np.where(model.scales > 0, model.scales, 1.0)
        x[:, model.scales <= 0] = 0.0
        lr = LogisticRegression(C=c, max_iter=5000, tol=1e-8)
        lr.fit(x, y)
        model.coef, model.intercept = lr.coef_[0].astype(float), float(lr.intercept_[0])
        # Laplace posterior of (intercept, coef): (X'WX + prior)^-1, the intercept unpenalised.
        p = _sigmoid(x @ model.coef + model.intercept)
        xa = np.c_[np.ones(len(x)), x]
        h = (xa * (p * (1 - p))[:, None]).T @ xa
        h[np.diag_indices_from(h)] += np.r_[1e-6, np.full(x.shape[1], 1.0 / c)]
        model.cov = np.linalg.inv(h)
        contrib = np.abs(x * model.coef)
        model.importance = {}
        for j, col in enumerate(model.columns):
            for feat, share in _credit(col):
                model.importance[feat] = model.importance.get(feat, 0.0) + share * float(contrib[:, j].mean())
        return model

    # -- scoring ----------------------------------------------------------------------------------

    def _logit(self, rows: Sequence[Features]) -> np.ndarray:
        x, _, _ = self._design(rows)
        return np.asarray(x @ self.coef + self.intercept)

    def predict_proba(self, rows: Sequence[Features]) -> np.ndarray:
        """Calibrated churn probabilities."""
        return _apply_calibrator(self.calibrator, self._logit(rows))

    def score(self, rows: Sequence[Features]) -> list[RiskResult]:
        if not self.columns:
            raise ModelNotTrained("the risk model is not trained: run `signoff train risk`")
        x, missing_cols, clipped = self._design(rows)
        z = x @ self.coef + self.intercept
        p = _apply_calibrator(self.calibrator, z)
        xa = np.c_[np.ones(len(x)), x]
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", xa, self.cov, xa), 0.0))
        lo = _apply_calibrator(self.calibrator, z - Z90 * se)
        hi = _apply_calibrator(self.calibrator, z + Z90 * se)
        total_importance = sum(self.importance.values()) or 1.0
        fidx = {f.name: i for i, f in enumerate(FEATURES)}
        out = []
        for i, row in enumerate(rows):
            contrib: dict[str, float] = {}
            for j, col in enumerate(self.columns):
                for feat, share in _credit(col):
                    contrib[feat] = contrib.get(feat, 0.0) + share * float(x[i, j] * self.coef[j])
            missing = [f.name for f in FEATURES if row.get(f.name) is None]
            drivers = []
            for spec in FEATURES:
                c_ = contrib.get(spec.name, 0.0)
                without = float(_apply_calibrator(self.calibrator, np.array([z[i] - c_]))[0])
                drivers.append(Driver(spec.name, spec.label, row.get(spec.name), round(c_, 4),
                                      round(float(p[i]) - without, 4), spec.name in missing,
                                      bool(clipped[i, fidx[spec.name]])))
            drivers.sort(key=lambda d: -abs(d.contribution))
            cover = sum(v for k, v in self.importance.items() if k not in missing) / total_importance
            width = float(hi[i] - lo[i])
            out.append(RiskResult(
                probability=round(float(p[i]), 4), interval=(round(float(lo[i]), 4), round(float(hi[i]), 4)),
                confidence=round(max(0.0, min(1.0, cover * (1.0 - width))), 4), coverage=round(cover, 4),
                drivers=drivers, missing=missing, model_version=self.version,
            ))
        _ = missing_cols
        return out

    # -- persistence ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": self.version,
            "columns": [[c.feature, c.kind, c.level, c.other] for c in self.columns],
            "means": self.means.tolist(), "scales": self.scales.tolist(),
            "clip": {k: list(v) for k, v in self.clip.items()}, "coef": self.coef.tolist(),
            "intercept": self.intercept, "cov": self.cov.tolist(), "calibrator": self.calibrator,
            "importance": self.importance, "observed": sorted(self.observed),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], manifest: dict[str, Any] | None = None) -> RiskModel:
        if data.get("format") != FORMAT:
            raise ModelError(f"risk model format {data.get('format')} is not {FORMAT}: retrain (signoff train risk)")
        return cls(
            columns=[Column(f, k, lv, o) for f, k, lv, o in data["columns"]],
            means=np.asarray(data["means"], float), scales=np.asarray(data["scales"], float),
            clip={k: (float(v[0]), float(v[1])) for k, v in data["clip"].items()},
            coef=np.asarray(data["coef"], float), intercept=float(data["intercept"]),
            cov=np.asarray(data["cov"], float), calibrator=data["calibrator"],
            importance={k: float(v) for k, v in data["importance"].items()}, observed=frozenset(data["observed"]),
            version=data["version"],
            manifest=manifest or {},
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/<version>/`` atomically and point ``directory/LATEST`` at it."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        final = root / self.version
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            body = json.dumps(self.to_json())
            (tmp / _MODEL_FILE).write_text(body)
            manifest = {**self.manifest, "files": {_MODEL_FILE: hashlib.sha256(body.encode()).hexdigest()}}
            (tmp / _MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        latest_tmp = root / f".{_LATEST_FILE}.tmp"
        latest_tmp.write_text(self.version + "\n")
        os.replace(latest_tmp, root / _LATEST_FILE)
        return final

    @classmethod
    def load(cls, directory: str | Path, version: str | None = None) -> RiskModel:
        root = Path(directory)
        latest = root / _LATEST_FILE
        if version is None:
            if not latest.exists():
                raise ModelNotTrained(f"no risk model in {root}: run `signoff train risk`")
            version = latest.read_text().strip()
        path = root / version
        try:
            manifest = json.loads((path / _MANIFEST_FILE).read_text())
            body = (path / _MODEL_FILE).read_text()
        except (OSError, ValueError) as exc:
            raise ModelError(f"risk model {path} is unreadable: {exc}; retrain (signoff train risk)") from exc
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or hashlib.sha256(body.encode()).hexdigest() != files.get(_MODEL_FILE):
            raise ModelError(f"risk model {path} does not match its manifest's sha256: retrain (signoff train risk)")
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise TypeError("model.json is not an object")
            return cls.from_json(data, manifest)
        except ModelError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ModelError(f"risk model {path} is malformed ({type(exc).__name__}: {exc}): retrain "
                             "(signoff train risk)") from exc


def _columns(rows: Sequence[Features]) -> list[Column]:
    cols: list[Column] = []
    for spec in FEATURES:
        if spec.kind == "num":
            cols.append(Column(spec.name, "value"))
            if spec.name in _LOG_FEATURES:
                cols.append(Column(spec.name, "log"))
            if spec.name in _HINGE_FEATURES:
                vals = [float(r[spec.name]) for r in rows if r.get(spec.name) is not None]  # type: ignore[arg-type]
                knots = sorted({round(float(np.percentile(vals, q)), 4) for q in _HINGE_QUANTILES}) if vals else []
                cols.extend(Column(spec.name, "hinge", str(k)) for k in knots)
        elif spec.kind == "bool":
            cols.append(Column(spec.name, "value"))
        else:
            cols.extend(Column(spec.name, "level", level) for level in spec.categories)
        cols.append(Column(spec.name, "missing"))
    for name, (fa, la), (fb, kb) in _INTERACTIONS:
        cols.append(Column(fa, "interaction", level=f"{name}|{la}|{kb}", other=fb))
    return cols


def _interaction(col: Column) -> tuple[str, str]:
    """Names of the two base columns an interaction multiplies."""
    assert col.level and col.other
    _name, level, kind = col.level.split("|")
    return f"{col.feature}:level={level}", f"{col.other}:{kind}"


def _credit(col: Column) -> list[tuple[str, float]]:
    if col.kind == "interaction" and col.other:
        return [(col.feature, 0.5), (col.other, 0.5)]
    return [(col.feature, 1.0)]


def _fit_calibrator(z: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any]:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(z, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    from sklearn.linear_model import LogisticRegression

    platt = LogisticRegression(C=1e6, max_iter=1000).fit(z.reshape(-1, 1), y)
    return {"method": "sigmoid", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}


def _apply_calibrator(cal: dict[str, Any], z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, float)
    if not cal:
        return _sigmoid(z)
    if cal["method"] == "isotonic":
        return np.interp(z, np.asarray(cal["x"]), np.asarray(cal["y"]))
    return _sigmoid(cal["a"] * z + cal["b"])


def describe(driver: Driver, currency: str = "") -> str:
    """A driver in words: "tenure (months) = 2 raises churn risk by 14 points"."""
    if driver.missing:
        if driver.contribution == 0.0:
            return f"{driver.label}: unknown (not in the data); no effect"
        verb = "raises" if driver.contribution > 0 else "lowers"
        return f"{driver.label}: unknown, which {verb} churn risk by {abs(driver.delta) * 100:.0f} points"
    value = driver.value
    if isinstance(value, float):
        shown = f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.1f}"
        if driver.feature in ("recurring_monthly", "overdue_amount") and currency:
            shown += f" {currency}"
    else:
        shown = str(value)
    if SPECS[driver.feature].kind == "bool":
        shown = "yes" if value else "no"
    verb = "raises" if driver.contribution > 0 else "lowers"
    note = " (outside the training range: treated as its edge)" if driver.clipped else ""
    return f"{driver.label} = {shown} {verb} churn risk by {abs(driver.delta) * 100:.0f} points{note}"


def band_for(probability: float, bands: dict[str, float]) -> str:
    """``low`` / ``medium`` / ``high`` by the policy's lower bounds (probability at or above -> band)."""
    best, floor = "low", -math.inf
    for name, bound in bands.items():
        if probability >= bound and bound > floor:
            best, floor = name, bound
    return best
