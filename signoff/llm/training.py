"""Train the triage classifier from labelled history and save a versioned artefact."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel

from signoff.errors import DataError

ProgressFn = Callable[[str, float], None]


class TrainReport(BaseModel):
    """What :func:`train` produced, with the calibration-fold figures."""

    version: str
    path: Path
    n: int
    classes: list[str]
    seconds: float
    data_sha256: str
    accuracy: float
    """Accuracy on the held-out calibration fold (model fitted on the rest)."""
    ece: float
    """Expected calibration error on the calibration fold, after temperature scaling."""
    ece_uncalibrated: float
    temperature: float


def load_labelled_jsonl(
    path: str | Path, *, text_field: str = "text", label_field: str = "intent"
) -> tuple[list[str], list[str]]:
    """Read ``(texts, labels)`` from a JSON Lines file; blank lines are skipped.

    Raises :class:`DataError` naming the file and line on malformed JSON, a non-object line, or a
    missing / non-string / empty field.
    """
    p = Path(path)
    try:
        fh = p.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror or exc}") from exc
    texts: list[str] = []
    labels: list[str] = []
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for field in (text_field, label_field):
                if field not in row:
                    raise DataError(f"{p}:{lineno}: missing field {field!r}")
                value = row[field]
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{p}:{lineno}: field {field!r} must be a non-empty string")
            texts.append(row[text_field])
            labels.append(row[label_field])
    if not texts:
        raise DataError(f"{p}: no labelled records")
    return texts, labels


def train(
    texts: Sequence[str],
    labels: Sequence[str],
    out_dir: str | Path,
    *,
    progress: ProgressFn | None = None,
    require_calibrated: bool = False,
) -> TrainReport:
    """Fit a calibrated :class:`~signoff.llm.classifier.TextClassifier` and save it under ``out_dir``.
    ``require_calibrated``: too little data for a held-out calibration fold is a DataError and nothing is
    saved (its confidences would mean nothing to the policy's thresholds)."""
    from signoff.llm.classifier import TextClassifier

    started = time.perf_counter()
    clf = TextClassifier().fit(texts, labels, progress=progress)
    if require_calibrated and math.isnan(float(clf.metrics.get("accuracy", float("nan")))):
        raise DataError(f"{len(texts)} labelled examples over {len(set(labels))} labels are too few to hold out a "
                        "calibration fold (20+ held out, every label in the rest): its confidences would be "
                        "uncalibrated, so it was not saved and the current model is kept. Give more examples "
                        "per label")
    path = clf.save(out_dir)
    metrics = clf.metrics
    return TrainReport(
        version=clf.version,
        path=path,
        n=clf.n_train,
        classes=list(clf.classes_),
        seconds=round(time.perf_counter() - started, 2),
        data_sha256=clf.data_sha256,
        accuracy=float(metrics.get("accuracy", float("nan"))),
        ece=float(metrics.get("ece", float("nan"))),
        ece_uncalibrated=float(metrics.get("ece_uncalibrated", float("nan"))),
        temperature=float(metrics.get("temperature", 1.0)),
    )
