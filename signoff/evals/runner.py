"""The eval runner: score a suite's cases with the real agent step, resumably, and compute its metrics.

For ``agent: triage`` a case goes through what the triage graph does between ``screen`` and ``decide``:
the ticket text is screened (:func:`~signoff.guardrails.screens.screen`, PII redacted, size bounded),
the real :class:`~signoff.llm.classifier.TextClassifier` predicts (batched ``predict``, the graph's
call), and :func:`~signoff.agents.triage.confident_enough` with the policy's threshold says whether the
agent would propose (counted in ``coverage``) or hand the ticket to a human.

Resumable: each scored batch is appended (and fsynced) to a run file under
``<data dir>/evals/runs/<suite>-<key>.jsonl``, keyed by suite name, model version, dataset hash, batch
size and screen size; a rerun reads the file and scores only the batches that are missing.

Caches under the data dir (``SIGNOFF_DATA_DIR``): sentence embeddings of every data file scored or
trained on (``evals/embeddings``, keyed by the texts and the embedding model version) and the models
fitted for suites (``evals/models/<version>``; the version carries the training data's hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signoff.config import Settings
from signoff.errors import DataError
from signoff.evals import metrics as M
from signoff.evals.decisions import DECISION_METRICS, decision_metrics, file_sha256, load_decisions
from signoff.evals.suite import METRICS, Cases, Suite, load_cases, resolve_path
from signoff.guardrails.policy import DEFAULT_POLICY_PATH, Policy, load_policy
from signoff.llm.classifier import FORMAT, TextClassifier, data_sha256
from signoff.llm.embeddings import Embedder

#: (done cases, total cases) after each batch
ProgressFn = Callable[[str, int, int], None]
#: called with the number of batches computed so far in this run, after each is saved (a test hook)
BatchHook = Callable[[int], None]

_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def eval_embedder() -> Embedder:
    """One embedder for eval runs, with an in-memory cache big enough for a whole data set."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = Embedder(cache_size=100_000)
        return _EMBEDDER


def _embedding_file(cache_dir: Path, texts: Sequence[str], version: str) -> Path:
    digest = hashlib.sha256(("\x1f".join(texts) + "\x1e" + version).encode("utf-8")).hexdigest()[:24]
    return cache_dir / f"{digest}.npy"


def warm_embeddings(embedder: Embedder, texts: Sequence[str], cache_dir: Path) -> bool:
    """Put the stored vectors of ``texts`` into the embedder's memory cache; False when none are stored."""
    f = _embedding_file(cache_dir, texts, embedder.version)
    if not f.is_file():
        return False
    try:
        vecs = np.load(f, allow_pickle=False)
    except (OSError, ValueError):
        return False
    if vecs.shape != (len(texts), embedder.dim):
        return False
    embedder.warm(list(texts), vecs)
    return True


def store_embeddings(embedder: Embedder, texts: Sequence[str], cache_dir: Path) -> None:
    """Save the vectors of ``texts`` (from the memory cache when already encoded) for later runs."""
    f = _embedding_file(cache_dir, texts, embedder.version)
    if f.is_file():
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    vecs = embedder.encode(list(texts))
    tmp = f.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vecs, allow_pickle=False)
    os.replace(tmp, f)


# --- models ----------------------------------------------------------------------------------------


@dataclass
class ModelInfo:
    classifier: TextClassifier
    source: str
    train_seconds: float | None = None
    """Seconds spent fitting in this run; None when a stored model was loaded."""
    n_train: int = 0


def fit_or_load(
    cases: Cases, settings: Settings, embedder: Embedder, *, progress: ProgressFn | None = None
) -> ModelInfo:
    """The model fitted on ``cases``: loaded from ``<data dir>/evals/models/<version>`` when a run fitted
    it before (same data, same embedder), else fitted and stored there."""
    root = settings.data_dir / "evals" / "models"
    version = f"tc{FORMAT}-{data_sha256(cases.texts, cases.labels)[:12]}-{embedder.version}"
    if (root / version / "manifest.json").is_file():
        return ModelInfo(TextClassifier.load(root / version, embedder=embedder), str(cases.source),
                         None, len(cases))
    emb_dir = settings.data_dir / "evals" / "embeddings"
    warmed = warm_embeddings(embedder, cases.texts, emb_dir)
    started = time.perf_counter()

    def report(stage: str, frac: float) -> None:
        if progress is not None:
            progress(f"training ({stage})", int(frac * 100), 100)

    clf = TextClassifier(embedder=embedder).fit(cases.texts, cases.labels, progress=report)
    seconds = time.perf_counter() - started
    clf.save(root)
    if not warmed:
        store_embeddings(embedder, cases.texts, emb_dir)
    return ModelInfo(clf, str(cases.source), round(seconds, 2), len(cases))


def model_for(suite: Suite, settings: Settings, embedder: Embedder, *,
              progress: ProgressFn | None = None) -> ModelInfo:
    if suite.train is not None:
        return fit_or_load(load_cases(suite.train, suite, settings.public_data_dir), settings, embedder,
                           progress=progress)
    assert suite.model is not None
    path = settings.models_path if suite.model == "default" else Path(suite.model)
    if not path.is_absolute() and suite.model != "default":
        path = suite.directory / path
    return ModelInfo(TextClassifier.load(path, embedder=embedder), str(path))


def policy_for(suite: Suite, settings: Settings) -> Policy:
    if suite.policy:
        p = Path(suite.policy)
        return load_policy(p if p.is_absolute() else suite.directory / p)
    return load_policy(settings.policy_path or DEFAULT_POLICY_PATH)


# --- scoring ---------------------------------------------------------------------------------------


def score_batch(clf: TextClassifier, texts: Sequence[str], gold: Sequence[str], *, max_chars: int
                ) -> tuple[list[dict[str, Any]], float]:
    """Screen and classify one batch the way the triage graph does; per-case records and the seconds
    the classifier took (the agent's latency; the extra ``predict_proba`` for Brier is not counted)."""
    from signoff.guardrails.screens import screen

    screened = [screen(t, max_chars=max_chars).text for t in texts]
    started = time.perf_counter()
    preds = clf.predict(screened)
    seconds = time.perf_counter() - started
    proba = clf.predict_proba(screened)  # embeddings are memory-cached by now: cheap
    index = {str(c): i for i, c in enumerate(clf.classes_)}
    gold_idx = np.array([index.get(g, -1) for g in gold])
    terms = M.brier_terms(proba, gold_idx)
    rows = []
    for pred, g, term in zip(preds, gold, terms, strict=True):
        rows.append({"pred": pred.label, "conf": round(pred.confidence, 6), "brier": round(float(term), 6),
                     "gold": g})
    return rows, seconds


@dataclass
class RunState:
    """Scored cases of one run (in dataset order) and what this invocation computed."""

    cases: list[dict[str, Any]]
    batch_seconds: list[tuple[int, float]]
    """(batch size, classifier seconds) per batch."""
    n_computed: int = 0
    n_resumed: int = 0
    run_file: Path = field(default_factory=lambda: Path("."))


def run_key(suite: Suite, model_version: str, dataset_sha: str, settings: Settings) -> str:
    raw = "\x1f".join([suite.name, model_version, dataset_sha, str(suite.batch_size), str(settings.max_ticket_chars)])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _read_run(path: Path) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a crash: that batch is redone
                continue
            if isinstance(rec, dict) and isinstance(rec.get("batch"), int):
                done[rec["batch"]] = rec
    return done


def score_cases(
    clf: TextClassifier,
    cases: Cases,
    run_file: Path,
    *,
    batch_size: int,
    max_chars: int,
    progress: ProgressFn | None = None,
    on_batch: BatchHook | None = None,
) -> RunState:
    """Score every case, in batches, appending each batch to ``run_file``; batches already there are
    reused (a rerun after an interruption computes only the rest)."""
    run_file.parent.mkdir(parents=True, exist_ok=True)
    done = _read_run(run_file)
    n = len(cases)
    starts = list(range(0, n, batch_size))
    state = RunState([], [], run_file=run_file)
    by_batch: dict[int, list[dict[str, Any]]] = {}
    finished = 0
    for b, start in enumerate(starts):
        ids = cases.ids[start : start + batch_size]
        rec = done.get(b)
        if rec is not None and [c["id"] for c in rec["cases"]] == ids:
            by_batch[b] = rec["cases"]
            state.batch_seconds.append((len(ids), float(rec["seconds"])))
            state.n_resumed += len(ids)
            finished += len(ids)
    if progress is not None:
        progress("scoring", finished, n)
    computed_batches = 0
    with run_file.open("a", encoding="utf-8") as out:
        for b, start in enumerate(starts):
            if b in by_batch:
                continue
            ids = cases.ids[start : start + batch_size]
            rows, seconds = score_batch(clf, cases.texts[start : start + batch_size],
                                        cases.labels[start : start + batch_size], max_chars=max_chars)
            for row, case_id in zip(rows, ids, strict=True):
                row["id"] = case_id
            out.write(json.dumps({"batch": b, "seconds": round(seconds, 6), "cases": rows}) + "\n")
            out.flush()
            os.fsync(out.fileno())
            by_batch[b] = rows
            state.batch_seconds.append((len(ids), seconds))
            state.n_computed += len(ids)
            finished += len(ids)
            computed_batches += 1
            if progress is not None:
                progress("scoring", finished, n)
            if on_batch is not None:
                on_batch(computed_batches)
    state.cases = [c for b in range(len(starts)) for c in by_batch[b]]
    return state


# --- metrics ---------------------------------------------------------------------------------------


@dataclass
class CaseArrays:
    """Per-case columns (what metrics, baselines and paired tests need)."""

    ids: list[str]
    gold: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    brier: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return np.asarray(self.gold == self.pred)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> CaseArrays:
        return cls(
            ids=[str(r["id"]) for r in records],
            gold=np.array([r["gold"] for r in records], dtype=object),
            pred=np.array([r["pred"] for r in records], dtype=object),
            conf=np.array([r["conf"] for r in records], dtype=np.float64),
            brier=np.array([r["brier"] for r in records], dtype=np.float64),
        )

    @classmethod
    def from_columns(cls, cols: dict[str, list[Any]]) -> CaseArrays:
        return cls.from_records([dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)])

    def columns(self) -> dict[str, list[Any]]:
        return {"id": list(self.ids), "gold": self.gold.tolist(), "pred": self.pred.tolist(),
                "conf": [round(float(c), 6) for c in self.conf], "brier": [round(float(b), 6) for b in self.brier]}

    def take(self, idx: np.ndarray, *, with_ids: bool = True) -> CaseArrays:
        ids = [self.ids[i] for i in idx] if with_ids else []
        return CaseArrays(ids, self.gold[idx], self.pred[idx], self.conf[idx], self.brier[idx])


def accepted(conf: np.ndarray, min_confidence: float | None, *, labels: Sequence[Any] | np.ndarray | None = None,
             by_class: Mapping[str, float] | None = None) -> np.ndarray:
    """Which cases the triage graph would propose for: its own gate, case by case (the action's
    :meth:`~signoff.guardrails.policy.ActionPolicy.min_confidence_for` the predicted label, then
    :func:`~signoff.agents.triage.confident_enough`)."""
    from signoff.agents.triage import confident_enough
    from signoff.guardrails.policy import ActionPolicy

    rule = ActionPolicy(min_confidence=min_confidence, min_confidence_by_class=dict(by_class or {}))
    names = [None] * len(conf) if labels is None else [str(x) for x in labels]
    return np.array([confident_enough(float(c), rule.min_confidence_for(label))
                     for c, label in zip(conf, names, strict=True)], dtype=bool)


def compute_metrics(
    arr: CaseArrays, *, threshold: float | None, oos_label: str | None, policy: Policy | None = None,
    by_class: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Every figure a triage suite can report, by name (NaN where undefined). ``by_class``: the policy's
    per-class thresholds (``min_confidence_by_class``), applied to each case's predicted label."""
    correct = arr.correct
    keep = accepted(arr.conf, threshold, labels=arr.pred, by_class=by_class)
    out: dict[str, float] = {
        "accuracy": M.accuracy(arr.gold, arr.pred),
        "macro_f1": M.macro_f1(arr.gold, arr.pred),
        "ece": M.expected_calibration_error(arr.conf, correct),
        "brier": float(arr.brier.mean()) if arr.brier.size else float("nan"),
        "coverage": float(keep.mean()) if keep.size else float("nan"),
        "selective_accuracy": float(correct[keep].mean()) if keep.any() else float("nan"),
        "aurc": M.risk_coverage(arr.conf, correct)["aurc"],
    }
    if oos_label is not None:
        oos = arr.gold == oos_label
        caught = (arr.pred == oos_label) | ~keep
        out["oos_recall"] = float(caught[oos].mean()) if oos.any() else float("nan")
        ins = ~oos
        out["in_scope_accuracy"] = float((correct & keep)[ins].mean()) if ins.any() else float("nan")
    if policy is not None and routes_labels(policy, arr.gold):
        team = _teams(policy)
        out["team_accuracy"] = float(np.mean([team(p) == team(g) for p, g in zip(arr.pred, arr.gold, strict=True)]))
    return out


def routes_labels(policy: Policy, gold: Sequence[Any] | np.ndarray) -> bool:
    """Whether the policy's routing table names any of these labels (else every label goes to the
    default team and team accuracy would be a meaningless 1.0)."""
    teams = policy.routing.teams
    return any(str(g) in teams for g in set(gold))


def _teams(policy: Policy) -> Callable[[str], str]:
    return lambda label: policy.routing.team_for(str(label))[0]


# --- one suite, end to end ---------------------------------------------------------------------------


@dataclass
class SuiteRun:
    suite: Suite
    arrays: CaseArrays
    values: dict[str, float]
    threshold: float | None
    threshold_source: str
    model: ModelInfo
    dataset_sha256: str
    state: RunState
    runtime_seconds: float
    policy: Policy
    extra: dict[str, Any] = field(default_factory=dict)
    class_thresholds: dict[str, float] = field(default_factory=dict)
    """The policy's ``min_confidence_by_class`` for ticket.set_category (empty when the suite sets ``threshold``)."""
    decision_values: dict[str, float] = field(default_factory=dict)
    """The recorded human decisions' figures (:mod:`signoff.evals.decisions`); empty without ``decisions``."""
    decision_detail: dict[str, Any] | None = None

    @property
    def n(self) -> int:
        return len(self.arrays.ids)

    def headline(self) -> dict[str, float | None]:
        """The suite's metrics (headline names only) that apply, NaN as None."""
        out: dict[str, float | None] = {}
        for name in self.suite.metrics:
            if name in self.values:
                out[name] = M.finite(self.values[name])
        if self.decision_values:
            listed = [m for m in self.suite.metrics if m in DECISION_METRICS] or list(DECISION_METRICS)
            for name in listed:
                out[name] = M.finite(self.decision_values[name])
        return out

    def to_json(self, *, top_classes: int = 20) -> dict[str, Any]:
        correct = self.arrays.correct
        curve = M.risk_coverage(self.arrays.conf, correct)
        support = M.per_class(self.arrays.gold, self.arrays.pred)
        top = sorted(support, key=lambda k: -support[k]["support"])[:top_classes]
        labels, matrix = M.confusion(self.arrays.gold, self.arrays.pred, sorted(top))
        n_calls = len(self.state.batch_seconds)
        total_seconds = sum(s for _, s in self.state.batch_seconds)
        per_case = [s / k * 1000 for k, s in self.state.batch_seconds if k]
        return {
            "suite": self.suite.name,
            "agent": self.suite.agent,
            "n": self.n,
            "metrics": self.headline(),
            "secondary": {k: M.finite(v) for k, v in self.values.items()
                          if k not in METRICS},
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "class_thresholds": self.class_thresholds,
            "oos_label": self.suite.oos_label,
            "model_version": self.model.classifier.version,
            "model_source": self.model.source,
            "n_train": self.model.n_train or self.model.classifier.n_train,
            "train_seconds": self.model.train_seconds,
            "dataset_hash": self.dataset_sha256,
            "suite_hash": self.suite.sha256,
            "suite_file": str(self.suite.path),
            "policy": self.policy.label,
            "runtime_seconds": round(self.runtime_seconds, 2),
            "run": {"file": str(self.state.run_file), "n_computed": self.state.n_computed,
                    "n_resumed": self.state.n_resumed},
            "cost": {
                "model_calls": n_calls,
                "cases_per_call": round(self.n / n_calls, 1) if n_calls else None,
                "latency_ms_per_case": round(total_seconds / self.n * 1000, 3) if self.n else None,
                "latency_ms_per_case_p95_batch": round(float(np.percentile(per_case, 95)), 3) if per_case else None,
                "tokens": 0,
                "backend": "embedded",
            },
            "per_class": support,
            "confusion": {"labels": labels, "matrix": matrix.tolist(), "top_n": top_classes},
            "reliability": [{k: M.finite(v) if isinstance(v, float) else v for k, v in row.items()}
                            for row in M.reliability_bins(self.arrays.conf, correct)],
            "risk_coverage": curve,
        } | ({"decisions": self.decision_detail} if self.decision_detail is not None else {}) | self.extra


def run_suite(
    suite: Suite,
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    on_batch: BatchHook | None = None,
    fresh: bool = False,
) -> SuiteRun:
    """Fit or load the model, score the suite's cases (resuming a previous partial run), compute metrics."""
    started = time.perf_counter()
    embedder = eval_embedder()
    policy = policy_for(suite, settings)
    cases = load_cases(suite.dataset, suite, settings.public_data_dir)
    decision_values, decision_detail = load_suite_decisions(suite, settings)
    model = model_for(suite, settings, embedder, progress=progress)
    if suite.oos_label is not None and suite.oos_label not in set(cases.labels):
        raise DataError(f"suite {suite.name}: oos_label {suite.oos_label!r} does not occur in {cases.source}")
    threshold, source, by_class = gate_for(suite, policy)
    dataset_sha = cases.sha256
    key = run_key(suite, model.classifier.version, dataset_sha, settings)
    run_file = settings.data_dir / "evals" / "runs" / f"{suite.name}-{key}.jsonl"
    if fresh and run_file.exists():
        run_file.unlink()
    emb_dir = settings.data_dir / "evals" / "embeddings"
    from signoff.guardrails.screens import screen

    screened = [screen(t, max_chars=settings.max_ticket_chars).text for t in cases.texts]
    warmed = warm_embeddings(embedder, screened, emb_dir)
    state = score_cases(model.classifier, cases, run_file, batch_size=suite.batch_size,
                        max_chars=settings.max_ticket_chars, progress=progress, on_batch=on_batch)
    if not warmed and state.n_resumed == 0:
        store_embeddings(embedder, screened, emb_dir)
    arrays = CaseArrays.from_records(state.cases)
    values = compute_metrics(arrays, threshold=threshold, oos_label=suite.oos_label, policy=policy, by_class=by_class)
    return SuiteRun(suite, arrays, values, threshold, source, model, dataset_sha, state,
                    time.perf_counter() - started, policy, extra={"dataset": str(cases.source)},
                    class_thresholds=by_class, decision_values=decision_values, decision_detail=decision_detail)


def gate_for(suite: Suite, policy: Policy) -> tuple[float | None, str, dict[str, float]]:
    """(threshold, where it came from, per-class thresholds) of the triage decide step for a suite."""
    if suite.threshold is not None:
        return suite.threshold, "suite", {}
    rule = policy.action("ticket.set_category")
    by_class = dict(rule.min_confidence_by_class)
    source = f"policy {policy.label} ticket.set_category.min_confidence"
    if by_class:
        source += f" (+ {len(by_class)} per-class thresholds)"
    return rule.min_confidence, source, by_class


def load_suite_decisions(suite: Suite, settings: Settings) -> tuple[dict[str, float], dict[str, Any] | None]:
    """The figures of the suite's recorded human decisions, and their counts (with the file and its hash)."""
    if suite.decisions is None:
        return {}, None
    path = resolve_path(suite.decisions, suite, settings.public_data_dir, what="decisions file")
    values, detail = decision_metrics(load_decisions(path))
    return values, {"file": str(path), "sha256": file_sha256(path), **detail}


def run_any(
    suite: Suite,
    settings: Settings,
    *,
    progress: ProgressFn | None = None,
    fresh: bool = False,
    record: bool = False,
) -> Any:
    """Run a suite of any agent: triage (embedded or ``backend: llm``), contracts or renewal."""
    if suite.agent == "renewal":
        from signoff.evals.renewal import run_renewal

        return run_renewal(suite, settings, progress=progress)
    if suite.agent == "contracts":
        from signoff.evals.contracts import run_contracts

        return run_contracts(suite, settings, progress=progress, fresh=fresh)
    if suite.backend == "llm":
        from signoff.evals.llm import run_llm_suite

        return run_llm_suite(suite, settings, progress=progress, fresh=fresh, record=record)
    if record:
        raise DataError(f"suite {suite.name}: --record is for backend: llm suites")
    return run_suite(suite, settings, progress=progress, fresh=fresh)
