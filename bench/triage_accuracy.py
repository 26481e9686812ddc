"""Triage classifier accuracy on the public ticket data (fit on ``*_dev``, report on ``*_test``).

Prints accuracy, macro-F1 and expected calibration error (ECE, 15 bins) per data set, selective accuracy at a
few confidence thresholds (what a triage policy threshold would do), and for CLINC150 the in-scope accuracy /
out-of-scope recall when low-confidence queries are routed to a human. The CLINC threshold is chosen on dev
(k-fold out-of-fold predictions, criterion: maximise in-scope accuracy + oos recall), never on test.

    python bench/triage_accuracy.py                       # all three data sets (~10 min on 2 cores)
    python bench/triage_accuracy.py --datasets banking77 --official --json /tmp/acc.json

Embeddings are cached on disk (``--emb-cache``, default ``/tmp/signoff-bench-emb``) so re-runs skip encoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signoff.config import get_settings
from signoff.evals.metrics import (
    accuracy,
    expected_calibration_error,
    in_scope_accuracy,
    macro_f1,
    oos_recall,
    selective,
)
from signoff.llm.classifier import TextClassifier
from signoff.llm.embeddings import MODEL_VERSION, Embedder

PUBLISHED = {
    "bitext": "no published baseline; TF-IDF+LR on this split: acc 0.9947 / macro-F1 0.9949",
    "banking77": "BERT-large 93.66% (official test); TF-IDF+LR on this split: 0.9098 / 0.9117, "
    "official 0.9133",
    "clinc150": "BERT oos-threshold 96.2% in-scope / 52.3% oos recall (official test); "
    "TF-IDF+LR (oos as class) on this split: 0.9244 / 0.2764",
}
SELECTIVE_THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
CURVE_THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def warm_cache(embedder: Embedder, texts: list[str], cache_dir: Path, key: str) -> None:
    """Load (or compute and store) the embeddings of ``texts`` and put them in the embedder's cache."""
    digest = hashlib.sha256(("\x1f".join(texts) + MODEL_VERSION).encode()).hexdigest()[:16]
    f = cache_dir / f"{key}-{digest}.npy"
    if f.is_file():
        vecs = np.load(f)
    else:
        t0 = time.perf_counter()
        vecs = embedder.encode(texts)
        print(f"  encoded {len(texts)} texts of {key} in {time.perf_counter() - t0:.1f}s", flush=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(f, vecs)
    embedder.warm(texts, vecs)


def classification_report(clf: TextClassifier, texts: list[str], gold: np.ndarray) -> dict[str, Any]:
    proba = clf.predict_proba(texts)
    pred = clf.classes_[proba.argmax(1)]
    conf = proba.max(1)
    correct = pred == gold
    selective_at: dict[str, Any] = {}
    for t in SELECTIVE_THRESHOLDS:
        coverage, accepted_acc = selective(conf, correct, t)
        selective_at[str(t)] = {
            "coverage": round(coverage, 4),
            "accuracy_accepted": round(accepted_acc, 4) if coverage > 0 else None,
        }
    return {
        "n_test": len(texts),
        "accuracy": round(accuracy(gold, pred), 4),
        "macro_f1": round(macro_f1(gold, pred), 4),
        "ece": round(expected_calibration_error(conf, correct), 4),
        "selective": selective_at,
    }


def fit(texts: list[str], labels: list[str], embedder: Embedder) -> tuple[TextClassifier, float]:
    t0 = time.perf_counter()
    clf = TextClassifier(embedder=embedder).fit(texts, labels)
    return clf, time.perf_counter() - t0


def intent_dataset(name: str, data: Path, embedder: Embedder, cache: Path, official: bool) -> dict[str, Any]:
    dev, test = read_jsonl(data / f"{name}_dev.jsonl"), read_jsonl(data / f"{name}_test.jsonl")
    for part, rows in (("dev", dev), ("test", test)):
        warm_cache(embedder, [r["text"] for r in rows], cache, f"{name}_{part}")
    clf, secs = fit([r["text"] for r in dev], [r["intent"] for r in dev], embedder)
    out: dict[str, Any] = {
        "n_train": len(dev),
        "train_seconds": round(secs, 1),
        "calibration_fold": {k: round(v, 4) for k, v in clf.metrics.items() if isinstance(v, float)},
        "test": classification_report(clf, [r["text"] for r in test], np.array([r["intent"] for r in test])),
    }
    if official and all("orig_split" in r for r in dev + test):
        rows = dev + test
        tr = [r for r in rows if r["orig_split"] == "train"]
        te = [r for r in rows if r["orig_split"] == "test"]
        clf2, secs2 = fit([r["text"] for r in tr], [r["intent"] for r in tr], embedder)
        out["official"] = {"n_train": len(tr), "train_seconds": round(secs2, 1)} | classification_report(
            clf2, [r["text"] for r in te], np.array([r["intent"] for r in te])
        )
    return out


def oos_scores(pred: np.ndarray, conf: np.ndarray, gold: np.ndarray, t: float) -> tuple[float, float]:
    """(in-scope accuracy, oos recall) when queries below ``t`` are routed to "out of scope"."""
    return (in_scope_accuracy(gold, pred, conf, oos_label="oos", threshold=t),
            oos_recall(gold, pred, conf, oos_label="oos", threshold=t))


def choose_threshold(
    rows: list[dict[str, Any]], embedder: Embedder, *, in_scope_only: bool, folds: int
) -> tuple[float, dict[str, Any]]:
    """k-fold on dev: out-of-fold (label, confidence), then the threshold maximising
    in-scope accuracy + oos recall."""
    rng = np.random.default_rng(0)
    fold_of = np.empty(len(rows), dtype=np.int64)
    labels = np.array([r["intent"] for r in rows])
    for c in np.unique(labels):  # stratified assignment
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold_of[idx] = np.arange(len(idx)) % folds
    pred = np.empty(len(rows), dtype=object)
    conf = np.zeros(len(rows))
    for k in range(folds):
        tr = [
            r for r, f in zip(rows, fold_of, strict=True)
            if f != k and not (in_scope_only and r["intent"] == "oos")
        ]
        ho = np.flatnonzero(fold_of == k)
        clf, _ = fit([r["text"] for r in tr], [r["intent"] for r in tr], embedder)
        proba = clf.predict_proba([rows[i]["text"] for i in ho])
        pred[ho] = clf.classes_[proba.argmax(1)]
        conf[ho] = proba.max(1)
    grid = np.round(np.arange(0.0, 0.96, 0.01), 2)
    scores = [sum(oos_scores(pred, conf, labels, t)) for t in grid]
    best = float(grid[int(np.argmax(scores))])
    ins, rec = oos_scores(pred, conf, labels, best)
    sel = {"threshold": best, "dev_oof_in_scope_acc": round(ins, 4), "dev_oof_oos_recall": round(rec, 4)}
    return best, sel


def clinc(data: Path, embedder: Embedder, cache: Path, folds: int) -> dict[str, Any]:
    dev, test = read_jsonl(data / "clinc150_dev.jsonl"), read_jsonl(data / "clinc150_test.jsonl")
    for part, rows in (("dev", dev), ("test", test)):
        warm_cache(embedder, [r["text"] for r in rows], cache, f"clinc150_{part}")
    gold = np.array([r["intent"] for r in test])
    official = np.array([r["orig_split"] in ("test", "oos_test") for r in test])
    out: dict[str, Any] = {}
    for variant, in_scope_only in (("oos_as_class", False), ("in_scope_only", True)):
        print(f"  clinc150 {variant}: choosing the threshold on dev ({folds}-fold)", flush=True)
        t_best, sel = choose_threshold(dev, embedder, in_scope_only=in_scope_only, folds=folds)
        tr = [r for r in dev if not (in_scope_only and r["intent"] == "oos")]
        clf, secs = fit([r["text"] for r in tr], [r["intent"] for r in tr], embedder)
        proba = clf.predict_proba([r["text"] for r in test])
        pred, conf = clf.classes_[proba.argmax(1)], proba.max(1)
        res: dict[str, Any] = {"n_train": len(tr), "train_seconds": round(secs, 1), "selection": sel}
        for scope, mask in (("test", np.ones(len(test), bool)), ("official_test", official)):
            ins, rec = oos_scores(pred[mask], conf[mask], gold[mask], t_best)
            curve = {}
            for t in CURVE_THRESHOLDS:
                a, b = oos_scores(pred[mask], conf[mask], gold[mask], t)
                curve[str(t)] = {"in_scope_acc": round(a, 4), "oos_recall": round(b, 4)}
            res[scope] = {
                "n": int(mask.sum()),
                "at_threshold": {"in_scope_acc": round(ins, 4), "oos_recall": round(rec, 4)},
                "curve": curve,
            }
        ins_mask = gold != "oos"
        correct = (pred == gold)[ins_mask]
        res["in_scope_ece"] = round(expected_calibration_error(conf[ins_mask], correct), 4)
        out[variant] = res
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="bitext,banking77,clinc150", help="comma-separated subset")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: <public_data_dir>/tickets")
    ap.add_argument("--official", action="store_true", help="also BANKING77 on its official split")
    ap.add_argument("--folds", type=int, default=3, help="k for CLINC150 threshold selection on dev")
    ap.add_argument("--emb-cache", type=Path, default=Path("/tmp/signoff-bench-emb"))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    data = args.data_dir or get_settings().public_data_dir / "tickets"
    embedder = Embedder(cache_size=200_000)
    results: dict[str, Any] = {"embedder": MODEL_VERSION}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        print(f"== {name}", flush=True)
        if name == "clinc150":
            results[name] = clinc(data, embedder, args.emb_cache, args.folds)
        else:
            results[name] = intent_dataset(name, data, embedder, args.emb_cache, args.official)

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(json.dumps(results, indent=2))
    else:
        table = Table(title="Triage classifier (MiniLM int8 + TF-IDF, temperature-calibrated)")
        for col in ("data", "split", "accuracy", "macro-F1", "ECE", "train s", "published / baseline"):
            table.add_column(col)
        for name in ("bitext", "banking77"):
            if name in results:
                r = results[name]
                te = r["test"]
                table.add_row(name, "hash test", f"{te['accuracy']:.4f}", f"{te['macro_f1']:.4f}",
                              f"{te['ece']:.4f}", str(r["train_seconds"]), PUBLISHED[name])
                if "official" in r:
                    o = r["official"]
                    table.add_row(name, "official test", f"{o['accuracy']:.4f}", f"{o['macro_f1']:.4f}",
                                  f"{o['ece']:.4f}", str(o["train_seconds"]), "")
        if "clinc150" in results:
            for variant, r in results["clinc150"].items():
                for scope in ("test", "official_test"):
                    a = r[scope]["at_threshold"]
                    table.add_row(
                        f"clinc150 {variant}", f"{scope} t={r['selection']['threshold']:.2f}",
                        f"in {a['in_scope_acc']:.4f}", f"oos {a['oos_recall']:.4f}", "",
                        str(r["train_seconds"]), PUBLISHED["clinc150"] if scope == "test" else "",
                    )
        Console().print(table)
        for name in ("bitext", "banking77"):
            if name in results:
                sel = results[name]["test"]["selective"]
                print(f"{name} selective (threshold: coverage / accuracy of accepted): "
                      + ", ".join(f"{t}: {v['coverage']:.3f}/{v['accuracy_accepted']}"
                                  for t, v in sel.items()))
        if "clinc150" in results:
            for variant, r in results["clinc150"].items():
                print(f"clinc150 {variant} official-test curve (t: in-scope / oos recall): "
                      + ", ".join(f"{t}: {v['in_scope_acc']:.3f}/{v['oos_recall']:.3f}"
                                  for t, v in r["official_test"]["curve"].items()))
                print(f"  chosen on dev: {r['selection']}; in-scope ECE {r['in_scope_ece']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
