"""Eval suites: YAML files (in ``/evals`` at the repository root) naming an agent, data, metrics, tolerances.

A suite, for shape::

    name: triage-banking77              # baselines are stored as baselines/<name>.json
    agent: triage                       # triage | contracts (CUAD spans) | renewal (Telco churn)
    backend: embedded                   # triage only: embedded (default) | llm (replayed cassette)
    dataset:                            # the cases to score
      path: tickets/banking77_test.jsonl   # relative to the suite file, else to SIGNOFF_PUBLIC_DATA_DIR
      text_field: text
      label_field: intent
      id_field: id                      # pairs cases with the baseline; row number when absent
      limit: 150                        # optional, with sample: spread (default) | first | random
    train:                              # the history the embedded model is fitted on (same keys) ...
      path: tickets/banking77_dev.jsonl
    # model: default                    # ... or a trained model: "default" (the models dir) or a path
    threshold: null                     # default: the policy's ticket.set_category min_confidence
    policy: null                        # default: SIGNOFF_POLICY_PATH, else the packaged policy
    oos_label: null                     # e.g. oos (CLINC150): adds oos_recall
    metrics: [accuracy, macro_f1, ece, brier, coverage, selective_accuracy]
    tolerances: {accuracy: 0.01, ece: 0.02}   # gate: worse by more than this AND significant -> fail
    alpha: 0.05                         # significance level of the paired tests
    batch_size: 256
    decisions: null                     # recorded human decisions (JSONL, see signoff/evals/decisions.py):
                                        # adds approval_rate, edit_rate, reject_rate, mean_edit_distance,
                                        # gate_overcaution (reported, not gated: they do not depend on the model)

``agent: contracts`` (:mod:`signoff.evals.contracts`): ``dataset``/``train`` are CUAD JSONL files (one
contract a line; ``limit``/``sample``/``ids`` pick contracts), ``categories`` restricts the scored key
terms; metrics span_f1, span_precision, span_recall (what the agent shows), precision_at_80_recall and
aupr (ranked candidates). ``agent: renewal`` (:mod:`signoff.evals.renewal`): Telco CSVs (``label_field:
Churn``, ``id_field: customerID``); metrics roc_auc, pr_auc, brier, ece, lift_top_decile. Both are gated
with a paired bootstrap over their cases (a contract/category pair; an account). ``backend: llm``
(:mod:`signoff.evals.llm`) needs an ``llm:`` block naming the model, labels and the cassette.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from signoff.domain import canonical_json
from signoff.errors import DataError
from signoff.evals.decisions import DECISION_METRICS

#: Headline metrics (the names ``--json`` uses) and whether higher is better.
METRICS: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "ece": False,
    "brier": False,
    "coverage": True,
    "selective_accuracy": True,
    "oos_recall": True,
    "span_f1": True,
    "precision_at_80_recall": True,
    "roc_auc": True,
    "pr_auc": True,
    "span_precision": True,
    "span_recall": True,
    "aupr": True,
    "lift_top_decile": True,
}
#: Secondary figures a tolerance may also name.
SECONDARY: dict[str, bool] = {
    "in_scope_accuracy": True,
    "team_accuracy": True,
    "aurc": False,
}
DIRECTION: dict[str, bool] = METRICS | SECONDARY
TRIAGE_METRICS = ["accuracy", "macro_f1", "ece", "brier", "coverage", "selective_accuracy", "oos_recall"]
CONTRACT_METRICS = ["span_f1", "span_precision", "span_recall", "precision_at_80_recall", "aupr"]
RENEWAL_METRICS = ["roc_auc", "pr_auc", "brier", "ece", "lift_top_decile"]
#: The metrics (and tolerances) each agent's suites may name.
AGENT_METRICS: dict[str, set[str]] = {
    "triage": set(TRIAGE_METRICS) | {"in_scope_accuracy", "team_accuracy", "aurc"} | set(DECISION_METRICS),
    "contracts": set(CONTRACT_METRICS),
    "renewal": set(RENEWAL_METRICS),
}
DEFAULT_METRICS: dict[str, list[str]] = {"triage": TRIAGE_METRICS, "contracts": CONTRACT_METRICS,
                                         "renewal": RENEWAL_METRICS}


class DataRef(BaseModel):
    """A labelled JSONL or CSV file and the fields to read from it."""

    model_config = ConfigDict(extra="forbid")

    path: str
    text_field: str = "text"
    label_field: str = "intent"
    id_field: str | None = "id"
    limit: int | None = Field(default=None, gt=0)
    ids: list[str] | None = None
    """Only these ids (in file order), before ``limit``; a missing id is an error."""
    sample: Literal["spread", "first", "random"] = "spread"
    """``spread``: evenly spaced rows (the files are sorted by label); ``random``: seeded."""
    seed: int = 0


class LLMSpec(BaseModel):
    """How a ``backend: llm`` suite reaches its model: replayed from ``cassette`` unless ``--record``."""

    model_config = ConfigDict(extra="forbid")

    model: str
    """The model name sent to the endpoint (part of every recorded request)."""
    labels: list[str] = Field(min_length=2)
    """The label set the model chooses from (the prompt lists it)."""
    cassette: str
    """vcrpy cassette, relative to the suite file (e.g. ``cassettes/llm-smoke.yaml``)."""
    prompt: str | None = None
    """A prompt file (``<id>.v<N>.md``, relative to the suite) instead of the packaged ``triage_classify``."""
    confidence: Literal["auto", "logprobs", "samples"] = "auto"
    samples: int = Field(default=5, ge=2)
    max_tokens: int = Field(default=64, gt=0)
    timeout: float = Field(default=120.0, gt=0)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    agent: Literal["triage", "contracts", "renewal"]
    backend: Literal["embedded", "llm"] = "embedded"
    """triage only: ``llm`` scores with :class:`~signoff.llm.openai_backend.LLMClassifier`, replayed
    from the suite's cassette (``llm:``)."""
    llm: LLMSpec | None = None
    categories: list[str] | None = None
    """contracts only: score these CUAD categories (default: every category the agent extracts)."""
    drop_features: list[str] | None = None
    """renewal only: blank these account features in training and scoring (an ablation)."""
    description: str = ""
    dataset: DataRef
    train: DataRef | None = None
    model: str | None = None
    """``default`` (the models dir, i.e. what ``signoff train`` produced) or a model directory."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    policy: str | None = None
    oos_label: str | None = None
    metrics: list[str] = Field(default_factory=list)
    """Default: the agent's usual metrics (:data:`DEFAULT_METRICS`)."""
    tolerances: dict[str, float] = Field(default_factory=dict)
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    batch_size: int = Field(default=256, gt=0)
    decisions: str | None = None
    """Recorded human decisions (JSONL), relative to the suite file or the public data dir."""

    # filled by load_suite
    path: Path = Path(".")
    sha256: str = ""
    """sha256 of the file's bytes with CRLF line endings read as LF: its content only (not its path, nor
    a checkout's line-ending conversion), so a baseline blessed on one machine matches on another."""

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METRICS and m not in DECISION_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS | DECISION_METRICS)}")
        return value

    @field_validator("tolerances")
    @classmethod
    def _known_tolerances(cls, value: dict[str, float]) -> dict[str, float]:
        fixed = [m for m in value if m in DECISION_METRICS]
        if fixed:
            raise ValueError(f"no tolerance for {fixed}: recorded decisions do not depend on the model, "
                             "so there is nothing to gate")
        unknown = [m for m in value if m not in DIRECTION]
        if unknown:
            raise ValueError(f"tolerances for unknown metrics {unknown}; known: {sorted(DIRECTION)}")
        if any(t < 0 for t in value.values()):
            raise ValueError("tolerances must be >= 0")
        return value

    @model_validator(mode="after")
    def _one_model_source(self) -> Suite:
        if not self.metrics:
            self.metrics = list(DEFAULT_METRICS[self.agent])
        allowed = AGENT_METRICS[self.agent]
        wrong = [m for m in [*self.metrics, *self.tolerances] if m not in allowed]
        if wrong:
            raise ValueError(f"agent {self.agent} has no metric {sorted(set(wrong))}; its metrics: {sorted(allowed)}")
        if self.backend == "llm":
            if self.agent != "triage":
                raise ValueError("backend: llm is for agent: triage")
            if self.llm is None:
                raise ValueError("backend: llm needs an 'llm:' block (model, labels, cassette)")
            if self.train is not None or self.model is not None:
                raise ValueError("backend: llm takes no 'train' or 'model' (the LLM is the model)")
        elif self.llm is not None:
            raise ValueError("an 'llm:' block needs backend: llm")
        elif (self.train is None) == (self.model is None):
            raise ValueError("give exactly one of 'train' (data to fit the model on) or 'model' (a trained one)")
        if self.categories is not None and self.agent != "contracts":
            raise ValueError("'categories' is for agent: contracts")
        if self.drop_features is not None and self.agent != "renewal":
            raise ValueError("'drop_features' is for agent: renewal")
        if self.decisions is None and any(m in DECISION_METRICS for m in self.metrics):
            raise ValueError("decision metrics need 'decisions' (a JSONL of recorded human decisions)")
        return self

    @property
    def directory(self) -> Path:
        return self.path.parent


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file; errors name the file. Datasets are resolved later."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read suite {p}: {exc.strerror or exc}") from exc
    try:
        data: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise DataError(f"suite {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"suite {p} must be a mapping (name, agent, dataset, ...)")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"suite {p} is invalid:\n{exc}") from exc
    digest = hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()
    return suite.model_copy(update={"path": p.resolve(), "sha256": digest})


def find_suite(name_or_path: str, search: Path | None = None) -> Path:
    """A suite file path as given, or ``<search>/<name>.yaml`` (``search`` defaults to ``./evals``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    base = search or Path.cwd() / "evals"
    for candidate in (base / name_or_path, base / f"{name_or_path}.yaml", base / f"{name_or_path}.yml"):
        if candidate.is_file():
            return candidate
    known = sorted(f.stem for f in base.glob("*.yaml")) if base.is_dir() else []
    raise DataError(f"suite {name_or_path!r} not found (tried {p} and {base}/{name_or_path}.yaml)"
                    + (f"; suites in {base}: {', '.join(known)}" if known else ""))


def resolve_path(path: str, suite: Suite, public_data_dir: Path, *, what: str = "data file") -> Path:
    """A file a suite names: absolute as given, else relative to the suite file, else to the public data dir."""
    p = Path(path)
    tried = [p] if p.is_absolute() else [suite.directory / p, public_data_dir / p]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise DataError(
        f"suite {suite.name}: {what} {path!r} not found (looked for "
        + " and ".join(str(t) for t in tried) + ")"
    )


def resolve_data(ref: DataRef, suite: Suite, public_data_dir: Path) -> Path:
    """The data file: absolute as given, else relative to the suite file, else to the public data dir."""
    return resolve_path(ref.path, suite, public_data_dir)


@dataclass(frozen=True)
class Cases:
    """Labelled cases read from a data file, after sampling."""

    ids: list[str]
    texts: list[str]
    labels: list[str]
    source: Path

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sha256(self) -> str:
        rows = [[i, t, y] for i, t, y in zip(self.ids, self.texts, self.labels, strict=True)]
        return hashlib.sha256(canonical_json(rows).encode("utf-8")).hexdigest()


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    out: list[tuple[int, dict[str, Any]]] = []
    with fh:
        if path.suffix.lower() == ".csv":
            for lineno, row in enumerate(csv.DictReader(fh), start=2):
                out.append((lineno, dict(row)))
            return out
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            out.append((lineno, row))
    return out


def _sample(n: int, ref: DataRef) -> list[int]:
    if ref.limit is None or ref.limit >= n:
        return list(range(n))
    if ref.sample == "first":
        return list(range(ref.limit))
    if ref.sample == "random":
        return sorted(np.random.default_rng(ref.seed).permutation(n)[: ref.limit].tolist())
    return sorted(set(np.linspace(0, n - 1, ref.limit).round().astype(np.int64).tolist()))


def select(ids: Sequence[str], ref: DataRef, path: Path) -> list[int]:
    """Row positions ``ref`` keeps: its ``ids`` (in file order; a missing one is an error), then ``limit``."""
    if ref.ids is not None:
        wanted = set(ref.ids)
        missing = sorted(wanted - set(ids))
        if missing:
            raise DataError(f"{path}: no record with id {missing[:5]}")
        pos = [i for i, cid in enumerate(ids) if cid in wanted]
    else:
        pos = list(range(len(ids)))
    return [pos[i] for i in _sample(len(pos), ref)]


def load_cases(ref: DataRef, suite: Suite, public_data_dir: Path) -> Cases:
    """Read, validate (errors name file and line) and sample the labelled cases ``ref`` points at."""
    path = resolve_data(ref, suite, public_data_dir)
    rows = _rows(path)
    ids: list[str] = []
    texts: list[str] = []
    labels: list[str] = []
    for lineno, row in rows:
        for field in (ref.text_field, ref.label_field):
            value = row.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}:{lineno}: field {field!r} is missing or not a non-empty string")
        ids.append(str(row.get(ref.id_field, f"row-{lineno}")) if ref.id_field else f"row-{lineno}")
        texts.append(row[ref.text_field])
        labels.append(row[ref.label_field])
    if not ids:
        raise DataError(f"{path}: no labelled records")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: ids in {ref.id_field!r} are not unique; set id_field: null to use row numbers")
    keep = select(ids, ref, path)
    return Cases([ids[i] for i in keep], [texts[i] for i in keep], [labels[i] for i in keep], path)
