"""Speed of the embedded triage model: embedder texts/s, classifier predict texts/s, training time, peak RSS.

    python bench/classifier_speed.py                 # BANKING77 dev (9,081 texts) to train, test to predict
    python bench/classifier_speed.py --n-train 3000 --json /tmp/speed.json

Figures:
  * embedder: encode() of the test texts, cold cache, batch 64 (plus single-text latency);
  * classifier head: predict_proba() with the embeddings already cached (TF-IDF + two LR heads only);
  * predict end-to-end: predict() with neighbours, embeddings not cached;
  * training: TextClassifier.fit() including embedding, calibration fit and final fit;
  * peak RSS of this process (resource.getrusage, ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signoff.config import get_settings
from signoff.llm.classifier import TextClassifier
from signoff.llm.embeddings import MODEL_VERSION, Embedder


def rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if platform.system() != "Darwin" else peak / (1024 * 1024)


def read(path: Path, n: int | None) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rows = rows[:n] if n else rows
    return [r["text"] for r in rows], [r["intent"] for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="banking77", help="tickets data set (bitext, banking77, clinc150)")
    ap.add_argument("--n-train", type=int, default=None, help="use only the first N dev rows")
    ap.add_argument("--n-predict", type=int, default=None, help="use only the first N test rows")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    data = get_settings().public_data_dir / "tickets"
    x_train, y_train = read(data / f"{args.dataset}_dev.jsonl", args.n_train)
    x_test, _ = read(data / f"{args.dataset}_test.jsonl", args.n_predict)
    out: dict[str, Any] = {"embedder": MODEL_VERSION, "cpus": os.cpu_count(), "dataset": args.dataset}

    t0 = time.perf_counter()
    emb = Embedder(cache_size=0)
    emb.encode(["warm up"])
    out["embedder_load_seconds"] = round(time.perf_counter() - t0, 2)
    out["rss_after_load_mb"] = round(rss_mb(), 1)

    t0 = time.perf_counter()
    emb.encode(x_test)
    dt = time.perf_counter() - t0
    out["embed_texts_per_s"] = round(len(x_test) / dt, 1)
    t0 = time.perf_counter()
    for text in x_test[:200]:
        emb.encode([text])
    out["embed_single_ms"] = round(1000 * (time.perf_counter() - t0) / min(200, len(x_test)), 2)

    # training (embeddings computed inside fit, not cached)
    train_emb = Embedder(cache_size=0)
    t0 = time.perf_counter()
    clf = TextClassifier(embedder=train_emb).fit(x_train, y_train)
    out["train_seconds"] = round(time.perf_counter() - t0, 1)
    out["n_train"] = len(x_train)
    out["n_classes"] = len(clf.classes_)

    # predict end to end (embedding + heads + neighbours)
    t0 = time.perf_counter()
    clf.predict(x_test)
    out["predict_end_to_end_texts_per_s"] = round(len(x_test) / (time.perf_counter() - t0), 1)

    # classifier heads alone: embeddings served from cache
    cached = Embedder(cache_size=len(x_test) + 10)
    cached.warm(x_test, emb.encode(x_test))
    clf._embedder = cached
    t0 = time.perf_counter()
    clf.predict_proba(x_test)
    out["predict_head_only_texts_per_s"] = round(len(x_test) / (time.perf_counter() - t0), 1)
    out["n_predict"] = len(x_test)
    out["peak_rss_mb"] = round(rss_mb(), 1)

    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
