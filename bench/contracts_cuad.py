"""Contracts agent on CUAD: train the clause model on cuad_dev, report key-term extraction on cuad_test.

Scoring is CUAD's: a predicted span matches an expert span of the same contract and category when their
word-level Jaccard is >= 0.5 (:func:`signoff.evals.metrics.span_scores`). Reported per category and
overall (pooled over the categories and contracts):

* precision / recall / F1 of what the agent *shows* (spans at or above the category's threshold);
* precision at 80 % recall and an 11-point interpolated AUPR over the ranked candidates (top 20 per
  contract and category), comparable in kind with the paper's Table 2 (different split and subset);
* seconds per contract (chunk + embed + score + candidates, embedding cache off) and peak RSS.

Usage::

    .venv/bin/python bench/contracts_cuad.py                 # train on dev (cached), report on test
    .venv/bin/python bench/contracts_cuad.py --split dev     # report on dev (in-sample: tuning only)
    .venv/bin/python bench/contracts_cuad.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from signoff.config import Settings
from signoff.evals.metrics import span_scores
from signoff.llm.clauses import CATEGORIES, ClauseModel, candidates, load_cuad

LEVELS = tuple(round(0.1 * i, 1) for i in range(11))
PAPER = {"DeBERTa-xlarge": {"aupr": 47.8, "p_at_80r": 44.0}, "RoBERTa-large": {"aupr": 48.2, "p_at_80r": 38.1},
         "RoBERTa-base": {"aupr": 42.6, "p_at_80r": 31.1}, "BERT-base": {"aupr": 32.4, "p_at_80r": 8.2}}


def _scores(preds: list[tuple[str, str, float]], gold: dict[str, list[str]]) -> dict[str, Any]:
    s = span_scores(preds, gold, recall_levels=LEVELS)
    s["aupr_11pt"] = sum(s[f"precision_at_{round(level * 100)}_recall"] for level in LEVELS) / len(LEVELS)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="test", choices=["test", "dev"])
    ap.add_argument("--limit", type=int, default=None, help="score only the first N contracts")
    ap.add_argument("--retrain", action="store_true", help="fit even if a model is saved")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    settings = Settings()
    data = settings.public_data_dir / "contracts"
    model_dir = settings.models_path / "contracts"
    cache = settings.data_dir / "cache" / "contract-embeddings"
    t0 = time.perf_counter()
    try:
        if args.retrain:
            raise FileNotFoundError
        model = ClauseModel.load(model_dir, cache_dir=cache, chroma_url=settings.chroma_url)
        fit_s = 0.0
    except Exception:
        dev = load_cuad(data / "cuad_dev.jsonl")
        model = ClauseModel(cache_dir=cache, chroma_url=settings.chroma_url).fit(
            dev, progress=lambda s, f: print(f"\r{s} {f:.0%}  ", end="", file=sys.stderr))
        model.save(model_dir)
        fit_s = time.perf_counter() - t0
        print(file=sys.stderr)
    print(f"model {model.version} (fit {fit_s:.0f}s)", file=sys.stderr)

    test = load_cuad(data / f"cuad_{args.split}.jsonl", limit=args.limit)
    model.cache_dir = None  # time the real work: chunk + embed + score
    shown: dict[str, list[tuple[str, str, float]]] = {c: [] for c in CATEGORIES}
    ranked: dict[str, list[tuple[str, str, float]]] = {c: [] for c in CATEGORIES}
    gold: dict[str, dict[str, list[str]]] = {c: {} for c in CATEGORIES}
    t1 = time.perf_counter()
    for contract in test:
        chunks, proba, _vecs = model.score(contract.text)
        cands = candidates(contract.text, chunks, proba, categories=model.categories, ranker=model.ranker)
        for cat in CATEGORIES:
            key = f"{contract.id}/{cat}"
            gold[cat][key] = [c.replace("<omitted>", " ") for c in contract.clauses[cat]]
            for cand in cands[cat]:
                item = (key, contract.text[cand.start:cand.end], cand.score)
                ranked[cat].append(item)
                if cand.score >= model.thresholds.get(cat, 1.0):
                    shown[cat].append(item)
    per_contract = (time.perf_counter() - t1) / max(1, len(test))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows: dict[str, Any] = {}
    for cat in CATEGORIES:
        at = _scores(shown[cat], gold[cat])
        rk = _scores(ranked[cat], gold[cat])
        rows[cat] = {"threshold": model.thresholds.get(cat), "n_gold": at["n_gold"], "n_shown": at["n_pred"],
                     "precision": at["span_precision"], "recall": at["span_recall"], "f1": at["span_f1"],
                     "p_at_80r": rk["precision_at_80_recall"], "aupr_11pt": rk["aupr_11pt"]}
    all_shown = [p for c in CATEGORIES for p in shown[c]]
    all_ranked = [p for c in CATEGORIES for p in ranked[c]]
    all_gold = {k: v for c in CATEGORIES for k, v in gold[c].items()}
    at, rk = _scores(all_shown, all_gold), _scores(all_ranked, all_gold)
    with_gold = [c for c in CATEGORIES if rows[c]["n_gold"]]
    overall = {"precision": at["span_precision"], "recall": at["span_recall"], "f1": at["span_f1"],
               "p_at_80r_pooled": rk["precision_at_80_recall"], "aupr_11pt_pooled": rk["aupr_11pt"],
               "p_at_80r_macro": sum(rows[c]["p_at_80r"] for c in with_gold) / len(with_gold),
               "aupr_11pt_macro": sum(rows[c]["aupr_11pt"] for c in with_gold) / len(with_gold),
               "n_gold": at["n_gold"], "n_shown": at["n_pred"]}
    result = {"split": args.split, "contracts": len(test), "model": model.version, "fit_seconds": round(fit_s, 1),
              "seconds_per_contract": round(per_contract, 3), "peak_rss_mb": round(peak_mb, 1),
              "per_category": rows, "overall": overall, "paper_table2": PAPER}

    print(f"\nCUAD {args.split}: {len(test)} contracts, {per_contract:.2f} s/contract, peak RSS {peak_mb:.0f} MB")
    print(f"{'category':38s} {'gold':>4s} {'shown':>5s} {'thr':>5s} {'P':>5s} {'R':>5s} {'F1':>5s} "
          f"{'P@80R':>6s} {'AUPR11':>6s}")
    for cat, r in rows.items():
        print(f"{cat:38s} {r['n_gold']:4d} {r['n_shown']:5d} {r['threshold'] or 0:5.2f} {r['precision']:5.2f} "
              f"{r['recall']:5.2f} {r['f1']:5.2f} {r['p_at_80r']:6.2f} {r['aupr_11pt']:6.2f}")
    o = overall
    print(f"{'overall (pooled)':38s} {o['n_gold']:4d} {o['n_shown']:5d} {'':5s} {o['precision']:5.2f} "
          f"{o['recall']:5.2f} {o['f1']:5.2f} {o['p_at_80r_pooled']:6.2f} {o['aupr_11pt_pooled']:6.2f}")
    print(f"{'overall (macro over categories)':38s} {'':4s} {'':5s} {'':5s} {'':5s} {'':5s} {'':5s} "
          f"{o['p_at_80r_macro']:6.2f} {o['aupr_11pt_macro']:6.2f}")
    print("paper (DeBERTa-xlarge, all 41 categories, 80/20 split of 510): AUPR 47.8, P@80R 44.0")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
