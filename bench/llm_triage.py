"""LLM triage on Bitext test tickets: accuracy, latency per ticket, tokens; vs the embedded model.

By default it runs the offline SmolLM2-135M (``signoff.llm.local_server``, in-process, 127.0.0.1) on
``--n`` evenly spaced Bitext test tickets with the 27 Bitext intents as the label set, and the
embedded model (fitted on ``--train`` Bitext dev tickets) on the same tickets. With ``--dev N`` it
first classifies N dev tickets, fits a calibration map (Platt) on them and reports ECE on the test
tickets before/after — and ``--save-calibration DIR`` stores it where the LLM backend finds it
(``DIR/llm-calibration.json``, keyed by model + prompt + confidence method).

Point it at any OpenAI-compatible endpoint with ``--base-url/--model`` (key from ``SIGNOFF_LLM_API_KEY``).

    python bench/llm_triage.py --n 50 --dev 20 --json /tmp/llm.json

Runs one ticket at a time (2 cores); SmolLM2 takes about 0.5–1 s per ticket on an idle machine and
10+ s when the cores are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signoff.config import get_settings
from signoff.errors import ModelError
from signoff.evals.metrics import expected_calibration_error
from signoff.llm.openai_backend import LLMClassifier, fit_calibration, make_chat, save_calibration
from signoff.llm.training import load_labelled_jsonl


def spaced(texts: list[str], labels: list[str], n: int) -> tuple[list[str], list[str]]:
    step = max(1, len(texts) // n)
    return texts[::step][:n], labels[::step][:n]


def run_llm(clf: LLMClassifier, texts: list[str], labels: list[str], what: str) -> list[dict[str, Any]]:
    rows = []
    for i, (text, gold) in enumerate(zip(texts, labels, strict=True)):
        t0 = time.perf_counter()
        try:
            p = clf.classify(text)
            row = {"gold": gold, "label": p.label, "confidence": p.confidence,
                   "raw": (p.usage or {}).get("raw_confidence"), "usage": p.usage, "error": None}
        except ModelError as exc:
            row = {"gold": gold, "label": None, "confidence": 0.0, "raw": 0.0, "usage": None, "error": str(exc)}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  {what} {i + 1}/{len(texts)} {row['seconds']:.1f}s gold={gold} got={row['label']} "
              f"conf={row['confidence']:.3f}", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    secs = sorted(r["seconds"] for r in rows)
    usages = [r["usage"] for r in rows if r["usage"]]
    correct = [r["label"] == r["gold"] for r in rows]
    return {
        "n": len(rows),
        "accuracy": sum(correct) / len(rows),
        "failed_closed": sum(r["error"] is not None for r in rows),
        "ece": expected_calibration_error([r["confidence"] for r in rows], correct),
        "mean_confidence": statistics.fmean(r["confidence"] for r in rows),
        "latency_s": {"mean": statistics.fmean(secs), "p50": secs[len(secs) // 2],
                      "p95": secs[min(len(secs) - 1, int(0.95 * len(secs)))]},
        "tokens_per_ticket": {
            "input": statistics.fmean(u["input_tokens"] for u in usages) if usages else 0,
            "cached_input": statistics.fmean(u["cached_input_tokens"] for u in usages) if usages else 0,
            "output": statistics.fmean(u["output_tokens"] for u in usages) if usages else 0,
            "calls": statistics.fmean(u["calls"] for u in usages) if usages else 0,
        },
        "distinct_labels_predicted": len({r["label"] for r in rows if r["label"]}),
    }


def embedded_accuracy(train_n: int, texts: list[str], labels: list[str], data: Path) -> dict[str, Any]:
    from signoff.llm.classifier import TextClassifier

    tr_x, tr_y = spaced(*load_labelled_jsonl(data / "bitext_dev.jsonl"), train_n)
    t0 = time.perf_counter()
    clf = TextClassifier().fit(tr_x, tr_y)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = clf.predict(texts)
    per = (time.perf_counter() - t0) / len(texts)
    correct = [p.label == y for p, y in zip(preds, labels, strict=True)]
    return {"n_train": len(tr_x), "fit_s": fit_s, "accuracy": sum(correct) / len(correct),
            "ece": expected_calibration_error([p.confidence for p in preds], correct), "latency_s": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="test tickets")
    ap.add_argument("--dev", type=int, default=0, help="dev tickets to fit a calibration map on (0: none)")
    ap.add_argument("--train", type=int, default=1000, help="dev tickets the embedded model is fitted on")
    ap.add_argument("--no-embedded", action="store_true")
    ap.add_argument("--base-url", help="an OpenAI-compatible endpoint instead of the offline SmolLM2")
    ap.add_argument("--model", default=None)
    ap.add_argument("--confidence", default="auto", choices=["auto", "logprobs", "samples"])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--save-calibration", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    data = get_settings().public_data_dir / "tickets"
    all_x, all_y = load_labelled_jsonl(data / "bitext_test.jsonl")
    label_set = sorted(set(all_y))
    texts, labels = spaced(all_x, all_y, args.n)
    report: dict[str, Any] = {"labels": len(label_set)}

    server = None
    base_url, model = args.base_url, args.model
    if base_url is None:
        from signoff.llm.local_server import MODEL_NAME, LocalLLMServer

        t0 = time.perf_counter()
        server = LocalLLMServer().start()
        report["server_start_s"] = time.perf_counter() - t0
        base_url, model = server.base_url, MODEL_NAME
    try:
        chat = make_chat(base_url=base_url, api_key=os.environ.get("SIGNOFF_LLM_API_KEY"), model=model or "",
                         timeout=300.0, max_retries=1, max_tokens=args.max_tokens)
        clf = LLMClassifier(label_set, chat, model_name=model or "", confidence=args.confidence)
        report |= {"model": model, "prompt": clf.prompt.ref, "confidence": args.confidence}
        if args.dev:
            dev_x, dev_y = spaced(*load_labelled_jsonl(data / "bitext_dev.jsonl"), args.dev)
            dev_rows = run_llm(clf, dev_x, dev_y, "dev")
            cal = fit_calibration([r["raw"] or 0.0 for r in dev_rows], [r["label"] == r["gold"] for r in dev_rows],
                                  method="platt", key=clf.calibration_key)
            report["calibration"] = cal.to_json() | {"dev": summary(dev_rows)}
            if args.save_calibration:
                save_calibration(cal, args.save_calibration)
        rows = run_llm(clf, texts, labels, "test")
        report["llm"] = summary(rows)
        if args.dev:
            cal_conf = [cal.apply(r["raw"] or 0.0) for r in rows]
            report["llm"]["ece_calibrated"] = expected_calibration_error(
                cal_conf, [r["label"] == r["gold"] for r in rows])
    finally:
        if server is not None:
            server.stop()
    if not args.no_embedded:
        report["embedded"] = embedded_accuracy(args.train, texts, labels, data)
    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
