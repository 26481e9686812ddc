"""Metric functions for the eval runner and the benches: plain numpy (sklearn only for ROC/PR AUC).

Classification: :func:`accuracy`, :func:`macro_f1`, :func:`per_class`, :func:`confusion`.
Calibration: :func:`expected_calibration_error`, :func:`brier`, :func:`reliability_bins`.
Selective prediction (a policy threshold sends low-confidence cases to a human): :func:`selective`,
:func:`risk_coverage`, :func:`oos_recall`, :func:`threshold_for_precision`.
Spans (contracts, CUAD-style): :func:`word_jaccard`, :func:`span_scores`.
Ranking (churn): :func:`roc_auc`, :func:`pr_auc`.
Paired tests for release gating: :func:`mcnemar`, :func:`paired_bootstrap`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# --- classification --------------------------------------------------------------------------------


def accuracy(gold: Sequence[Any] | np.ndarray, pred: Sequence[Any] | np.ndarray) -> float:
    g, p = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    return float((g == p).mean()) if g.size else float("nan")


def _encode(gold: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.unique(np.concatenate([gold, pred]).astype(str))
    return labels, np.searchsorted(labels, gold.astype(str)), np.searchsorted(labels, pred.astype(str))


def _f1_from_codes(g: np.ndarray, p: np.ndarray, k: int, weights: np.ndarray | None = None) -> float:
    """Macro-F1 over the labels that occur in gold or pred (sklearn's ``average="macro"``)."""
    w = np.ones(len(g)) if weights is None else weights
    tp = np.bincount(g[g == p], weights=w[g == p], minlength=k)
    n_gold = np.bincount(g, weights=w, minlength=k)
    n_pred = np.bincount(p, weights=w, minlength=k)
    present = (n_gold + n_pred) > 0
    denom = n_gold + n_pred
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1[present].mean()) if present.any() else float("nan")


def macro_f1(gold: Sequence[Any] | np.ndarray, pred: Sequence[Any] | np.ndarray) -> float:
    """Unweighted mean of per-label F1 over every label seen in gold or predictions."""
    g, p = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    if not g.size:
        return float("nan")
    labels, gi, pi = _encode(g, p)
    return _f1_from_codes(gi, pi, len(labels))


def per_class(gold: Sequence[Any] | np.ndarray, pred: Sequence[Any] | np.ndarray) -> dict[str, dict[str, float]]:
    """``{label: {precision, recall, f1, support}}``; precision of a never-predicted label is 0."""
    g, p = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    labels, gi, pi = _encode(g, p)
    k = len(labels)
    tp = np.bincount(gi[gi == pi], minlength=k)
    n_gold, n_pred = np.bincount(gi, minlength=k), np.bincount(pi, minlength=k)
    out: dict[str, dict[str, float]] = {}
    for i, label in enumerate(labels):
        prec = tp[i] / n_pred[i] if n_pred[i] else 0.0
        rec = tp[i] / n_gold[i] if n_gold[i] else 0.0
        out[str(label)] = {
            "precision": float(prec),
            "recall": float(rec),
            "f1": float(2 * prec * rec / (prec + rec)) if prec + rec else 0.0,
            "support": int(n_gold[i]),
        }
    return out


def confusion(
    gold: Sequence[Any] | np.ndarray, pred: Sequence[Any] | np.ndarray, labels: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """``(labels, matrix)`` with ``matrix[i, j]`` = cases of gold ``labels[i]`` predicted ``labels[j]``.

    With ``labels`` given, only those rows/columns are kept (e.g. the top-N classes of a large set)."""
    g, p = np.asarray(gold, dtype=object).astype(str), np.asarray(pred, dtype=object).astype(str)
    names = list(labels) if labels is not None else sorted(set(g) | set(p))
    index = {name: i for i, name in enumerate(names)}
    m = np.zeros((len(names), len(names)), dtype=np.int64)
    for a, b in zip(g, p, strict=True):
        if a in index and b in index:
            m[index[a], index[b]] += 1
    return names, m


# --- calibration -----------------------------------------------------------------------------------


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1], right-closed: (lo, hi]; 0 falls into the first bin."""
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def expected_calibration_error(confidence: Any, correct: Any, *, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: Σ_b |B|/n · |accuracy(B) − mean confidence(B)|."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    b = _bin_index(conf, n_bins)
    acc = np.bincount(b, weights=corr, minlength=n_bins)
    cf = np.bincount(b, weights=conf, minlength=n_bins)
    return float(np.abs(acc - cf).sum() / conf.size)


def reliability_bins(confidence: Any, correct: Any, *, n_bins: int = 10) -> list[dict[str, float]]:
    """One row per bin: ``lo``, ``hi``, ``count``, ``accuracy`` and mean ``confidence`` (NaN when empty)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    b = _bin_index(conf, n_bins) if conf.size else np.zeros(0, dtype=np.int64)
    rows = []
    for i in range(n_bins):
        mask = b == i
        n = int(mask.sum())
        rows.append({
            "lo": i / n_bins,
            "hi": (i + 1) / n_bins,
            "count": n,
            "accuracy": float(corr[mask].mean()) if n else float("nan"),
            "confidence": float(conf[mask].mean()) if n else float("nan"),
        })
    return rows


def brier_terms(proba: np.ndarray, gold_index: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-case multi-class Brier term Σ_k (p_k − 1[k = gold])²; ``gold_index`` −1 means a label the
    model does not know (every p_k counts as a miss)."""
    p = np.asarray(proba, dtype=np.float64)
    gi = np.asarray(gold_index, dtype=np.int64)
    onehot = np.zeros_like(p)
    known = gi >= 0
    onehot[np.flatnonzero(known), gi[known]] = 1.0
    return np.asarray(((p - onehot) ** 2).sum(axis=1))


def brier(proba: np.ndarray, gold_index: Sequence[int] | np.ndarray) -> float:
    """Mean multi-class Brier score (0 best, 2 worst)."""
    terms = brier_terms(proba, gold_index)
    return float(terms.mean()) if terms.size else float("nan")


# --- selective prediction --------------------------------------------------------------------------


def selective(confidence: Any, correct: Any, threshold: float) -> tuple[float, float]:
    """``(coverage, selective_accuracy)``: the share of cases at or above ``threshold`` (what the agent
    proposes) and the accuracy among them (NaN when none is kept)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=bool)
    if not conf.size:
        return float("nan"), float("nan")
    keep = conf >= threshold
    return float(keep.mean()), float(corr[keep].mean()) if keep.any() else float("nan")


def risk_coverage(confidence: Any, correct: Any, *, points: int = 50) -> dict[str, Any]:
    """Risk (error rate of the kept cases) against coverage when keeping the most confident first.

    Returns ``coverage``/``risk``/``threshold`` lists (at most ``points`` evenly spaced, plus the end)
    and ``aurc``, the area under the full curve (lower is better)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=bool)
    n = conf.size
    if not n:
        return {"coverage": [], "risk": [], "threshold": [], "aurc": float("nan")}
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(~corr[order])
    kept = np.arange(1, n + 1)
    risk = errors / kept
    idx = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(np.int64))
    return {
        "coverage": [float(kept[i] / n) for i in idx],
        "risk": [float(risk[i]) for i in idx],
        "threshold": [float(conf[order][i]) for i in idx],
        "aurc": float(risk.mean()),
    }


def oos_recall(
    gold: Any, pred: Any, confidence: Any, *, oos_label: str, threshold: float
) -> float:
    """Share of out-of-scope cases that are not acted on: predicted ``oos_label`` or below the
    threshold (sent to a human). NaN when there is no out-of-scope case."""
    g, p = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    conf = np.asarray(confidence, dtype=np.float64)
    oos = g == oos_label
    if not oos.any():
        return float("nan")
    caught = (p == oos_label) | (conf < threshold)
    return float(caught[oos].mean())


def in_scope_accuracy(gold: Any, pred: Any, confidence: Any, *, oos_label: str, threshold: float) -> float:
    """Share of in-scope cases classified right *and* acted on (CLINC150's in-scope accuracy with
    below-threshold cases counted as "out-of-scope")."""
    g, p = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    conf = np.asarray(confidence, dtype=np.float64)
    ins = g != oos_label
    if not ins.any():
        return float("nan")
    return float(((p == g) & (conf >= threshold))[ins].mean())


def threshold_for_precision(confidence: Any, correct: Any, target: float) -> dict[str, Any]:
    """The lowest confidence threshold whose accepted cases reach ``target`` precision (accuracy among
    accepted), i.e. the most coverage at that precision. Ties in confidence are kept together.

    Returns ``{"threshold", "coverage", "precision", "n_accepted"}``; ``threshold`` is ``None`` when no
    threshold reaches the target (then nothing should be automated)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=bool)
    none = {"threshold": None, "coverage": 0.0, "precision": float("nan"), "n_accepted": 0}
    if not conf.size:
        return none
    order = np.argsort(-conf, kind="stable")
    c_sorted = conf[order]
    prec = np.cumsum(corr[order]) / np.arange(1, conf.size + 1)
    # a prefix may only end where the next case has a lower confidence (ties go together)
    boundary = np.append(c_sorted[1:] < c_sorted[:-1], True)
    ok = np.flatnonzero(boundary & (prec >= target))
    if not ok.size:
        return none
    k = int(ok.max())
    return {
        "threshold": float(c_sorted[k]),
        "coverage": float((k + 1) / conf.size),
        "precision": float(prec[k]),
        "n_accepted": k + 1,
    }


# --- spans (CUAD-style) ----------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def word_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the lower-cased word sets of two spans (CUAD's match criterion)."""
    wa, wb = _words(a), _words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def _interpolated(precision: np.ndarray) -> np.ndarray:
    """Precision made non-increasing from the right (max precision at any higher recall)."""
    return np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision


def span_hits(predictions: Sequence[tuple[str, float]], gold: Sequence[str], *, jaccard: float = 0.5) -> list[bool]:
    """Which of one key's predicted ``(text, score)`` spans match a gold span, in the given order:
    walking from the highest score down (ties: in the given order), a prediction is a hit when its
    word-level Jaccard with a not yet matched gold span is >= ``jaccard`` (greedy, best overlap first)."""
    pool = list(gold)
    hits = [False] * len(predictions)
    for i in sorted(range(len(predictions)), key=lambda k: -predictions[k][1]):
        if not pool:
            break
        sims = [word_jaccard(predictions[i][0], g) for g in pool]
        best = int(np.argmax(sims))
        if sims[best] >= jaccard:
            hits[i] = True
            pool.pop(best)
    return hits


def span_scores_from_hits(
    scores: Any,
    hits: Any,
    n_gold: float,
    *,
    weights: Any = None,
    recall_levels: Sequence[float] = (0.8,),
) -> dict[str, Any]:
    """:func:`span_scores` from already matched predictions (``scores``, ``hits``) and the number of gold
    spans; ``weights`` (e.g. bootstrap counts of each prediction's case) count predictions repeatedly."""
    sc = np.asarray(scores, dtype=np.float64)
    h = np.asarray(hits, dtype=np.float64)
    w = np.ones(sc.size) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(-sc, kind="stable")
    hw, ww = (h * w)[order], w[order]
    tp, n_pred = float(hw.sum()), float(ww.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    out: dict[str, Any] = {
        "span_precision": precision,
        "span_recall": recall,
        "span_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "n_pred": int(round(n_pred)),
        "n_gold": int(round(n_gold)),
    }
    cum_tp, cum_n = np.cumsum(hw), np.cumsum(ww)
    raw = np.divide(cum_tp, cum_n, out=np.zeros(sc.size), where=cum_n > 0)
    prec_curve = _interpolated(raw)
    rec_curve = cum_tp / n_gold if n_gold else np.zeros(sc.size)
    for level in recall_levels:
        reached = np.flatnonzero((rec_curve >= level - 1e-12) & (ww > 0))
        out[f"precision_at_{round(level * 100)}_recall"] = float(prec_curve[reached[0]]) if reached.size else 0.0
    return out


def span_scores(
    predictions: Sequence[tuple[str, str, float]],
    gold: Mapping[str, Sequence[str]],
    *,
    jaccard: float = 0.5,
    recall_levels: Sequence[float] = (0.8,),
) -> dict[str, Any]:
    """Precision, recall and F1 of predicted spans, plus precision at fixed recall levels (CUAD).

    ``predictions`` are ``(key, text, score)``, where the key groups spans that may match each other
    (e.g. ``"contract-7/Governing Law"``); ``gold`` maps each key to its expert spans. Walking the
    predictions from the highest score down, one is a true positive when its word-level Jaccard with a
    not yet matched gold span of the same key is ≥ ``jaccard`` (greedy, best overlap first,
    :func:`span_hits`). ``precision_at_80_recall`` is the interpolated precision at the first point
    reaching 80 % recall (0 if it is never reached), as in CUAD's evaluation script.
    """
    n_gold = sum(len(v) for v in gold.values())
    by_key: dict[str, list[int]] = {}
    for i, (key, _text, _score) in enumerate(predictions):
        by_key.setdefault(key, []).append(i)
    hits = [False] * len(predictions)
    for key, idx in by_key.items():
        for i, hit in zip(idx, span_hits([(predictions[i][1], predictions[i][2]) for i in idx], gold.get(key) or [],
                                         jaccard=jaccard), strict=True):
            hits[i] = hit
    return span_scores_from_hits([p[2] for p in predictions], hits, n_gold, recall_levels=recall_levels)


# --- ranking ---------------------------------------------------------------------------------------


def roc_auc(y_true: Any, score: Any) -> float:
    """Area under the ROC curve (sklearn); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64)))


def pr_auc(y_true: Any, score: Any) -> float:
    """Area under the precision-recall curve as average precision (sklearn); NaN without positives."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true)
    if not (y == 1).any():
        return float("nan")
    return float(average_precision_score(y, np.asarray(score, dtype=np.float64)))


def roc_auc_fast(y_true: Any, score: Any) -> float:
    """:func:`roc_auc` without sklearn's checks (for bootstrap loops): the Mann-Whitney U with average
    ranks for ties, which equals the trapezoidal ROC area."""
    from scipy.stats import rankdata

    y = np.asarray(y_true, dtype=bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def pr_auc_fast(y_true: Any, score: Any) -> float:
    """:func:`pr_auc` (average precision: sum over score thresholds of recall gained x precision there,
    tied scores taken together) without sklearn's checks."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(score, dtype=np.float64)
    if not (y == 1).any():
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[ps[1:] != ps[:-1], True]  # the last case of each group of tied scores
    tps = np.cumsum(ys)[last]
    n = np.arange(1, ps.size + 1)[last]
    precision = tps / n
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --- paired tests ----------------------------------------------------------------------------------


def mcnemar(base_correct: Any, new_correct: Any) -> dict[str, float]:
    """Exact McNemar test on paired per-case correctness.

    ``b`` = right before and wrong now, ``c`` = wrong before and right now; under "no change" the
    ``b + c`` discordant pairs split 50/50. ``p_worse`` is the one-sided binomial p-value of seeing at
    least ``b`` losses, ``p_value`` the two-sided one."""
    from scipy.stats import binomtest

    base = np.asarray(base_correct, dtype=bool)
    new = np.asarray(new_correct, dtype=bool)
    b = int((base & ~new).sum())
    c = int((~base & new).sum())
    if b + c == 0:
        return {"b": b, "c": c, "p_value": 1.0, "p_worse": 1.0}
    return {
        "b": b,
        "c": c,
        "p_value": float(binomtest(b, b + c, 0.5).pvalue),
        "p_worse": float(binomtest(b, b + c, 0.5, alternative="greater").pvalue),
    }


def paired_bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    higher_is_better: bool,
    rounds: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of a metric difference. ``statistic(idx)`` returns ``new − base`` computed on the
    cases ``idx`` (the same resample for both runs). ``p_worse`` is the share of resamples in which the
    new run is *not* worse, i.e. a one-sided p-value for "the new run is worse"."""
    rng = np.random.default_rng(seed)
    deltas = np.empty(rounds)
    for r in range(rounds):
        deltas[r] = statistic(rng.integers(0, n, n))
    deltas = deltas[~np.isnan(deltas)]
    if not deltas.size:
        return {"p_worse": 1.0, "ci_low": float("nan"), "ci_high": float("nan")}
    not_worse = (deltas >= 0) if higher_is_better else (deltas <= 0)
    return {
        "p_worse": float((not_worse.sum() + 1) / (deltas.size + 1)),
        "ci_low": float(np.quantile(deltas, 0.025)),
        "ci_high": float(np.quantile(deltas, 0.975)),
    }


def finite(value: float | None) -> float | None:
    """``None`` for NaN/inf (JSON has no NaN), the float otherwise."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
