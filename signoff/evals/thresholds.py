"""Confidence thresholds from calibration data, and writing them into a policy file.

For each model-gated action the recommended ``min_confidence`` is the lowest threshold at which the
cases the agent would propose reach the target precision (most coverage at that precision):

* ``ticket.set_category``: a proposal is right when the predicted label is the gold label;
* ``ticket.set_team``: right when the policy's routing table sends the predicted label to the gold
  label's team (a wrong label in the right team still routes right).

Calibration data: by default a held-out fold of the suite's *training* data (every fifth case by a
hash of its text; a model is fitted on the other 80 %), so the test data stays untouched; the
recommended threshold is then checked on the suite's test cases and both figures are reported.
``--calibration suite`` uses the suite's own scored cases instead (optimistic: tuned on what it reports).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from signoff.config import Settings
from signoff.errors import PolicyError
from signoff.evals import metrics as M
from signoff.evals.runner import (
    CaseArrays,
    SuiteRun,
    accepted,
    eval_embedder,
    fit_or_load,
    routes_labels,
    score_batch,
)
from signoff.evals.suite import Cases, load_cases
from signoff.guardrails.policy import Policy, load_policy

ACTIONS = ("ticket.set_category", "ticket.set_team")
#: a class needs this many predictions in the calibration set for a threshold of its own
MIN_CLASS_SUPPORT = 20


def _correct_for(action: str, arr: CaseArrays, policy: Policy) -> np.ndarray:
    if action == "ticket.set_team":
        team = {label: policy.routing.team_for(str(label))[0] for label in set(arr.gold) | set(arr.pred)}
        return np.array([team[p] == team[g] for p, g in zip(arr.pred, arr.gold, strict=True)], dtype=bool)
    return arr.correct


def _at(arr: CaseArrays, correct: np.ndarray, threshold: float | None) -> dict[str, Any]:
    if threshold is None:
        return {"coverage": 0.0, "precision": None}
    keep = accepted(arr.conf, threshold)
    return {"coverage": float(keep.mean()), "precision": M.finite(float(correct[keep].mean())) if keep.any() else None}


def dev_fold(train: Cases, *, every: int = 5) -> tuple[Cases, Cases]:
    """Split training cases into (fit, calibration): a case goes to calibration when the sha256 of its
    text falls in one of ``every`` buckets, so the split is stable and duplicates stay together."""
    cal = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) % every == 0 for t in train.texts]

    def pick(flag: bool) -> Cases:
        idx = [i for i, c in enumerate(cal) if c == flag]
        return Cases([train.ids[i] for i in idx], [train.texts[i] for i in idx], [train.labels[i] for i in idx],
                     train.source)

    return pick(False), pick(True)


def calibration_cases(run: SuiteRun, settings: Settings, source: str) -> tuple[CaseArrays, str]:
    """The scored calibration set and a description of where it came from."""
    suite = run.suite
    if source == "suite" or suite.train is None:
        why = "" if source == "suite" else " (the suite names a trained model, no training data to hold out)"
        return run.arrays, f"the suite's own {run.n} cases{why}: optimistic"
    train = load_cases(suite.train, suite, settings.public_data_dir)
    fit, cal = dev_fold(train)
    model = fit_or_load(fit, settings, eval_embedder())
    rows: list[dict[str, Any]] = []
    for start in range(0, len(cal), 512):
        part, _ = score_batch(model.classifier, cal.texts[start : start + 512], cal.labels[start : start + 512],
                              max_chars=settings.max_ticket_chars)
        for row, cid in zip(part, cal.ids[start : start + 512], strict=True):
            row["id"] = cid
        rows.extend(part)
    desc = (f"held-out 20% of {suite.train.path} ({len(cal)} cases; model fitted on the other {len(fit)})")
    return CaseArrays.from_records(rows), desc


def recommend(
    run: SuiteRun, settings: Settings, *, target: float, per_class: bool = False, source: str = "dev",
    min_class_support: int = MIN_CLASS_SUPPORT,
) -> dict[str, Any]:
    """Recommended ``min_confidence`` per action at ``target`` precision, with the coverage it keeps on
    the calibration set and what it gives on the suite's cases.

    ``per_class``: also a threshold per predicted class (the lowest at which that class's predictions on
    the calibration set reach the target); classes predicted at least ``min_class_support`` times there
    go into ``class_thresholds`` (what ``--write-policy`` writes as ``min_confidence_by_class``), the
    rest keep the action's threshold."""
    cal, desc = calibration_cases(run, settings, source)
    out: dict[str, Any] = {"target_precision": target, "calibration": desc, "actions": {}}
    for action in ACTIONS:
        if action == "ticket.set_team" and not routes_labels(run.policy, run.arrays.gold):
            # the routing table names none of these labels (all go to the default team): a team
            # proposal is only as good as the category it follows, so it gets the category's threshold
            out["actions"][action] = dict(out["actions"]["ticket.set_category"]) | {
                "note": "routing table names none of these labels: same threshold as ticket.set_category"}
            continue
        rec = M.threshold_for_precision(cal.conf, _correct_for(action, cal, run.policy), target)
        current = run.policy.actions[action].min_confidence if action in run.policy.actions else None
        test_correct = _correct_for(action, run.arrays, run.policy)
        out["actions"][action] = rec | {
            "on_suite": _at(run.arrays, test_correct, rec["threshold"]),
            "current_threshold": current,
            "current_on_suite": _at(run.arrays, test_correct, current),
        }
    if per_class:
        classes: dict[str, Any] = {}
        for label in sorted(set(cal.pred)):
            mask = cal.pred == label
            r = M.threshold_for_precision(cal.conf[mask], cal.correct[mask], target)
            classes[str(label)] = {"threshold": r["threshold"], "n_predicted": int(mask.sum()),
                                   "coverage_of_predicted": r["coverage"], "precision": M.finite(r["precision"]),
                                   "written": int(mask.sum()) >= min_class_support}
        out["per_class"] = classes
        by_class = {label: round_up(c["threshold"]) for label, c in classes.items() if c["written"]}
        out["class_thresholds"] = by_class
        out["min_class_support"] = min_class_support
        # what the policy would do on the suite's cases, through the agent's own gate
        action_t = round_up(out["actions"]["ticket.set_category"]["threshold"])
        keep = accepted(run.arrays.conf, action_t, labels=run.arrays.pred, by_class=by_class)
        plain = accepted(run.arrays.conf, action_t)
        correct = run.arrays.correct
        out["per_class_on_suite"] = {
            "coverage": float(keep.mean()), "precision": M.finite(float(correct[keep].mean())) if keep.any() else None,
            "coverage_action_only": float(plain.mean()),
            "precision_action_only": M.finite(float(correct[plain].mean())) if plain.any() else None,
        }
    return out


def round_up(threshold: float | None) -> float:
    """A recommended threshold as written into a policy: rounded *up* to 3 decimals; ``None`` (the target
    is not reachable) becomes 1.0, practically always a human."""
    return 1.0 if threshold is None else min(1.0, math.ceil(threshold * 1000 - 1e-9) / 1000)


def write_policy(path: Path, recommendation: dict[str, Any], *, base: Path | None = None) -> dict[str, float]:
    """Set ``min_confidence`` of the recommended actions in the policy YAML at ``path`` (validated, then
    replaced atomically), and ``ticket.set_category.min_confidence_by_class`` when the recommendation has
    per-class thresholds (replacing the map that was there). Everything else is kept, but YAML comments
    are not (PyYAML drops them).

    A threshold is rounded *up* to 3 decimals (never below the recommendation); an action for which no
    threshold reaches the target gets 1.0 (practically: always a human). A file that does not exist yet
    starts as a copy of ``base`` (the policy in use). The team, which follows the category, never gets a
    lower threshold than the category."""
    source = path if path.exists() or base is None else base
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read policy {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("actions"), dict):
        raise PolicyError(f"policy {path} has no 'actions' mapping")
    written: dict[str, float] = {}
    for action, rec in recommendation["actions"].items():
        if action not in data["actions"]:
            raise PolicyError(f"policy {path} has no action {action!r}")
        value = round_up(rec["threshold"])
        data["actions"][action]["min_confidence"] = value
        written[action] = value
    if "class_thresholds" in recommendation and "ticket.set_category" in data["actions"]:
        data["actions"]["ticket.set_category"]["min_confidence_by_class"] = dict(recommendation["class_thresholds"])
    if "ticket.set_team" in written and "ticket.set_category" in written:
        floor = written["ticket.set_category"]
        written["ticket.set_team"] = data["actions"]["ticket.set_team"]["min_confidence"] = max(
            written["ticket.set_team"], floor)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PolicyError(f"cannot write policy {path} (in directory {path.parent}): "
                          f"{exc.strerror or exc}") from exc
    try:
        load_policy(tmp)
        os.replace(tmp, path)
    except PolicyError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PolicyError(f"cannot write policy {path}: {exc.strerror or exc}") from exc
    return written
