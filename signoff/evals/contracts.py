"""``agent: contracts`` suites: the contracts agent's key-term extraction on CUAD, scored as CUAD scores it.

Per contract, the agent's own steps: the clause model (:class:`~signoff.llm.clauses.ClauseModel`, fitted
with its public ``fit`` on the suite's ``train`` contracts, or ``model: default``, what ``signoff
contracts train`` saved) scores the chunks once, and

* **shown** spans are what :func:`signoff.agents.contracts.analyse` reports as ``found`` for a term (its
  spans, at the term's confidence; the clause policy's thresholds apply): ``span_precision``,
  ``span_recall``, ``span_f1``;
* **ranked** spans are the top-20 candidates per category (:func:`signoff.llm.clauses.candidates`,
  thresholds ignored): ``precision_at_80_recall`` and ``aupr`` (11-point interpolated), as
  ``bench/contracts_cuad.py`` reports them.

A prediction matches an expert span of the same contract and category when their word-level Jaccard
is >= 0.5 (:func:`signoff.evals.metrics.span_hits`); all figures are pooled over contracts and
categories (and per category in ``per_category``). A *case* of the gate is one contract/category pair
(``<contract id>/<category>``): its matched predictions are stored in the baseline, so the paired
bootstrap resamples those pairs.

Resumable: each scored contract is appended to ``<data dir>/evals/runs/<suite>-<key>.jsonl``. Fitted
models are cached under ``<data dir>/evals/models/contracts-<key>`` (the key covers the training
contracts, the embedder and the source of the clause model and chunker, so a changed model is refitted);
chunk embeddings under the agent's own cache (``<data dir>/cache/contract-embeddings``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import date
from pathlib import Path
from typing import Any, cast

import numpy as np

from signoff.config import Settings
from signoff.errors import DataError
from signoff.evals import metrics as M
from signoff.evals.paired import Columns, PairedRun
from signoff.evals.suite import DataRef, Suite, resolve_data, resolve_path, select

LEVELS = tuple(round(0.1 * i, 1) for i in range(11))
#: the date analyse() computes deadlines against: fixed, so a run does not depend on the day
TODAY = date(2025, 1, 1)


def load_contracts(ref: DataRef, suite: Suite, public_data_dir: Path) -> tuple[list[Any], Path]:
    from signoff.llm.clauses import load_cuad

    path = resolve_data(ref, suite, public_data_dir)
    contracts = load_cuad(path)
    if not contracts:
        raise DataError(f"{path}: no contracts")
    keep = select([c.id for c in contracts], ref, path)
    return [contracts[i] for i in keep], path


def _code_sha() -> str:
    """sha256 of the clause model's and the chunker's source: a changed model means a new cache key."""
    import signoff.llm.clauses as clauses_mod
    import signoff.tools.contracts as chunker_mod

    h = hashlib.sha256()
    for mod in (clauses_mod, chunker_mod):
        h.update(Path(str(mod.__file__)).read_bytes())
    return h.hexdigest()


class _Scored:
    """The clause model with its last ``score`` remembered: analyse() and the candidates share one pass."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._last: tuple[str, Any] | None = None

    def score(self, text: str, chunks: Any = None) -> Any:
        if chunks is None and self._last is not None and self._last[0] == text:
            return self._last[1]
        out = self._model.score(text, chunks)
        if chunks is None:
            self._last = (text, out)
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model, name)


def model_for(suite: Suite, settings: Settings, progress: Any = None, *, code_sha: str = ""
              ) -> tuple[Any, str, float | None, int | None]:
    """(clause model, source, seconds fitting in this run, training contracts)."""
    from signoff.agents.contracts import embedding_cache_dir
    from signoff.agents.contracts import model_dir as agent_model_dir
    from signoff.llm.clauses import ClauseModel
    from signoff.llm.embeddings import get_embedder

    cache = embedding_cache_dir(settings)
    if suite.train is None:
        mdir = agent_model_dir(settings) if suite.model == "default" else Path(str(suite.model))
        if not mdir.is_absolute() and suite.model != "default":
            mdir = suite.directory / mdir
        return ClauseModel.load(mdir, cache_dir=cache), str(mdir), None, None
    train, tpath = load_contracts(suite.train, suite, settings.public_data_dir)
    embedder = get_embedder()
    key = hashlib.sha256("\x1f".join([*sorted(c.id for c in train), embedder.version, code_sha or _code_sha(),
                                      hashlib.sha256("".join(c.text for c in train).encode()).hexdigest()
                                      ]).encode()).hexdigest()[:16]
    mdir = settings.data_dir / "evals" / "models" / f"contracts-{key}"
    if (mdir / "LATEST").is_file():
        return ClauseModel.load(mdir, embedder=embedder, cache_dir=cache), str(tpath), None, len(train)

    def report(stage: str, frac: float) -> None:
        if progress is not None:
            progress(f"training ({stage})", int(frac * 100), 100)

    t0 = time.perf_counter()
    model = ClauseModel(embedder=embedder, cache_dir=cache).fit(train, progress=report)
    seconds = round(time.perf_counter() - t0, 2)
    model.save(mdir)
    return model, str(tpath), seconds, len(train)


def _policy(suite: Suite, settings: Settings) -> Any:
    from signoff.agents.contracts import clause_policy_for, load_clause_policy

    if suite.policy:
        return load_clause_policy(resolve_path(suite.policy, suite, settings.public_data_dir, what="clause policy"))
    return clause_policy_for(settings)


def score_contract(contract: Any, model: Any, policy: Any, categories: list[str]) -> list[dict[str, Any]]:
    """One contract through the agent's analysis: a record per category (see the module doc)."""
    from signoff.agents.contracts import analyse
    from signoff.llm.clauses import candidates
    from signoff.tools.contracts import ContractSource

    scored = _Scored(model)
    text = contract.text
    source = ContractSource(text=text, name=contract.id, sha256=hashlib.sha256(text.encode()).hexdigest())
    summary = analyse(source, cast(Any, scored), policy, today=TODAY, evidence=False)
    chunks, proba, _vecs = scored.score(text)
    cands = candidates(text, chunks, proba, categories=model.categories)
    terms = {t.category: t for t in summary.terms}
    out = []
    for cat in categories:
        gold = [c.replace("<omitted>", " ") for c in contract.clauses.get(cat, [])]
        term = terms.get(cat)
        shown = [(sp.text, float(term.confidence)) for sp in term.spans] if term and term.status == "found" else []
        ranked = [(text[c.start:c.end], float(c.score)) for c in cands.get(cat, [])]
        out.append({
            "id": f"{contract.id}/{cat}", "category": cat, "n_gold": len(gold),
            "shown": [[round(s, 6), h] for (_t, s), h in zip(shown, M.span_hits(shown, gold), strict=True)],
            "ranked": [[round(s, 6), h] for (_t, s), h in zip(ranked, M.span_hits(ranked, gold), strict=True)],
            "threshold": float(term.threshold) if term else None,
        })
    return out


class _Flat:
    """A run's cases as flat arrays (predictions with the index of their case) for fast resampling."""

    def __init__(self, cols: Columns) -> None:
        self.n_gold = np.asarray(cols["n_gold"], dtype=np.float64)
        self.category = np.asarray(cols["category"], dtype=object)
        for kind in ("shown", "ranked"):
            unit = [i for i, preds in enumerate(cols[kind]) for _ in preds]
            score = [p[0] for preds in cols[kind] for p in preds]
            hit = [bool(p[1]) for preds in cols[kind] for p in preds]
            setattr(self, kind, (np.asarray(unit, dtype=np.int64), np.asarray(score, dtype=np.float64),
                                 np.asarray(hit, dtype=bool)))

    def scores(self, counts: np.ndarray | None, mask: np.ndarray | None = None) -> dict[str, float]:
        c = np.ones(self.n_gold.size) if counts is None else counts.astype(np.float64)
        if mask is not None:
            c = c * mask
        n_gold = float((c * self.n_gold).sum())
        su, ss, sh = self.shown  # type: ignore[attr-defined]
        ru, rs, rh = self.ranked  # type: ignore[attr-defined]
        at = M.span_scores_from_hits(ss, sh, n_gold, weights=c[su])
        rk = M.span_scores_from_hits(rs, rh, n_gold, weights=c[ru], recall_levels=LEVELS)
        return {
            "span_precision": at["span_precision"], "span_recall": at["span_recall"], "span_f1": at["span_f1"],
            "precision_at_80_recall": rk["precision_at_80_recall"],
            "aupr": sum(rk[f"precision_at_{round(lv * 100)}_recall"] for lv in LEVELS) / len(LEVELS),
            "n_gold": n_gold, "n_shown": at["n_pred"],
        }


class ContractsRun(PairedRun):
    _flat_cache: dict[int, tuple[Columns, _Flat]]

    @property
    def unit(self) -> str:
        return "contract/category pair"

    def _flat(self, cols: Columns) -> _Flat:
        cache = self.__dict__.setdefault("_flat_cache", {})
        hit = cache.get(id(cols))
        if hit is None or hit[0] is not cols:
            hit = (cols, _Flat(cols))
            cache[id(cols)] = hit
        return hit[1]

    def values_of(self, cols: Columns, idx: np.ndarray | None = None, *, only: str | None = None
                  ) -> dict[str, float]:
        flat = self._flat(cols)
        counts = None if idx is None else np.bincount(idx, minlength=flat.n_gold.size)
        out = flat.scores(counts)
        out.pop("n_shown")
        out.pop("n_gold")
        return out

    def per_category(self) -> dict[str, dict[str, Any]]:
        flat = self._flat(self.cases)
        thresholds: dict[str, Any] = {}
        for cat, thr in zip(self.cases["category"], self.cases["threshold"], strict=True):
            thresholds.setdefault(cat, thr)
        rows: dict[str, dict[str, Any]] = {}
        for cat in dict.fromkeys(self.cases["category"]):
            s = flat.scores(None, mask=(flat.category == cat).astype(np.float64))
            rows[cat] = {"n_gold": int(s["n_gold"]), "n_shown": s["n_shown"], "threshold": thresholds[cat],
                         "precision": round(s["span_precision"], 4), "recall": round(s["span_recall"], 4),
                         "f1": round(s["span_f1"], 4), "p_at_80r": round(s["precision_at_80_recall"], 4),
                         "aupr": round(s["aupr"], 4)}
        return rows


def _read_run(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a crash: that contract is redone
                continue
            if isinstance(rec, dict) and isinstance(rec.get("contract"), str):
                done[rec["contract"]] = rec
    return done


def run_contracts(suite: Suite, settings: Settings, *, progress: Any = None, fresh: bool = False,
                  on_contract: Any = None) -> ContractsRun:
    """Fit or load the clause model, score the suite's contracts (resuming a partial run), compute metrics."""
    from signoff.llm.clauses import CATEGORIES

    started = time.perf_counter()
    categories = list(suite.categories or CATEGORIES)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise DataError(f"suite {suite.name}: unknown CUAD categories {unknown}; the agent extracts {list(CATEGORIES)}")
    contracts, path = load_contracts(suite.dataset, suite, settings.public_data_dir)
    policy = _policy(suite, settings)
    code_sha = _code_sha()  # once: the source may change while a model is fitted
    model, source, train_seconds, n_train = model_for(suite, settings, progress, code_sha=code_sha)
    dataset_sha = hashlib.sha256("\x1f".join(f"{c.id}\x1e{hashlib.sha256(c.text.encode()).hexdigest()}"
                                             for c in contracts).encode()).hexdigest()
    policy_sha = hashlib.sha256(policy.model_dump_json().encode()).hexdigest()
    key = hashlib.sha256("\x1f".join([suite.name, model.version, code_sha, dataset_sha, policy_sha,
                                      *categories]).encode()).hexdigest()[:16]
    run_file = settings.data_dir / "evals" / "runs" / f"{suite.name}-{key}.jsonl"
    if fresh and run_file.exists():
        run_file.unlink()
    run_file.parent.mkdir(parents=True, exist_ok=True)
    done = _read_run(run_file)
    records: dict[str, list[dict[str, Any]]] = {}
    seconds: list[float] = []
    n_resumed = n_computed = 0
    for c in contracts:
        rec = done.get(c.id)
        if rec is not None:
            records[c.id] = rec["cases"]
            seconds.append(float(rec["seconds"]))
            n_resumed += 1
    if progress is not None:
        progress("scoring contracts", n_resumed, len(contracts))
    with run_file.open("a", encoding="utf-8") as out:
        for c in contracts:
            if c.id in records:
                continue
            t0 = time.perf_counter()
            rows = score_contract(c, model, policy, categories)
            s = time.perf_counter() - t0
            out.write(json.dumps({"contract": c.id, "seconds": round(s, 4), "cases": rows}) + "\n")
            out.flush()
            os.fsync(out.fileno())
            records[c.id] = rows
            seconds.append(s)
            n_computed += 1
            if progress is not None:
                progress("scoring contracts", n_resumed + n_computed, len(contracts))
            if on_contract is not None:
                on_contract(n_computed)
    rows_all = [r for c in contracts for r in records[c.id]]
    cols: Columns = {k: [r[k] for r in rows_all] for k in ("id", "category", "n_gold", "shown", "ranked", "threshold")}
    run = ContractsRun(suite=suite, cases=cols, model_version=model.version, model_source=source,
                       dataset_sha256=dataset_sha, dataset=str(path), runtime_seconds=0.0, n_train=n_train,
                       train_seconds=train_seconds, threshold_source="clause policy / model, per category")
    run.values = run.values_of(cols)
    run.extra = {"contracts": len(contracts), "categories": categories, "per_category": run.per_category()}
    run.run_info = {"file": str(run_file), "n_computed": n_computed, "n_resumed": n_resumed}
    total = sum(seconds)
    run.cost = {"model_calls": len(contracts), "cases_per_call": len(categories),
                "latency_ms_per_case": round(total / max(1, len(contracts)) * 1000, 1),
                "latency_unit": "ms per contract", "tokens": 0, "backend": "embedded"}
    run.runtime_seconds = time.perf_counter() - started
    return run
