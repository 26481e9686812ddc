"""Reports: a rich terminal summary and one self-contained HTML file (inline SVG, no JS, no CDN).

The HTML holds, per suite: the metrics table, the recorded human decisions (``id="decisions-<suite>"``,
when the suite has them), the gate's comparison with the baseline, recommended thresholds, and three
plots drawn here as SVG: a reliability diagram (``id="reliability-<suite>"``), a confusion-matrix heat
map of the top-N classes by support (``id="confusion-<suite>"``) and the risk-coverage curve with the
policy threshold marked (``id="risk-coverage-<suite>"``).
"""

from __future__ import annotations

import html
import math
from typing import Any

from rich.console import Console
from rich.table import Table

_W, _H, _PAD = 360, 300, 44


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _axes(title: str, xlabel: str, ylabel: str) -> list[str]:
    x0, y0, x1, y1 = _PAD, _H - _PAD, _W - 12, 24
    out = [
        f'<text x="{_W / 2}" y="15" text-anchor="middle" class="t">{html.escape(title)}</text>',
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" class="ax"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" class="ax"/>',
        f'<text x="{(x0 + x1) / 2}" y="{_H - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text x="12" y="{(y0 + y1) / 2}" text-anchor="middle" transform="rotate(-90 12 {(y0 + y1) / 2})">'
        f"{html.escape(ylabel)}</text>",
    ]
    for i in range(0, 6):
        f = i / 5
        x = x0 + f * (x1 - x0)
        y = y0 - f * (y0 - y1)
        out.append(f'<text x="{x:.1f}" y="{y0 + 14}" text-anchor="middle" class="s">{f:.1f}</text>')
        out.append(f'<text x="{x0 - 4}" y="{y + 3:.1f}" text-anchor="end" class="s">{f:.1f}</text>')
    return out


def _xy(fx: float, fy: float) -> tuple[float, float]:
    x0, y0, x1, y1 = _PAD, _H - _PAD, _W - 12, 24
    return x0 + fx * (x1 - x0), y0 - fy * (y0 - y1)


def reliability_svg(bins: list[dict[str, Any]], suite: str, *, ylabel: str = "accuracy") -> str:
    parts = _axes("Reliability diagram", "confidence", ylabel)
    a, b = _xy(0, 0), _xy(1, 1)
    parts.append(f'<line x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" class="diag"/>')
    total = sum(r["count"] for r in bins) or 1
    for r in bins:
        if not r["count"] or r["accuracy"] is None:
            continue
        xl, yt = _xy(r["lo"], r["accuracy"])
        xr, yb = _xy(r["hi"], 0)
        parts.append(f'<rect x="{xl + 1:.1f}" y="{yt:.1f}" width="{xr - xl - 2:.1f}" height="{yb - yt:.1f}" '
                     f'class="bar"><title>{r["lo"]:.1f}-{r["hi"]:.1f}: n={r["count"]}, '
                     f'accuracy {r["accuracy"]:.3f}, confidence {r["confidence"]:.3f}</title></rect>')
        cx, cy = _xy((r["lo"] + r["hi"]) / 2, r["confidence"])
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" class="pt"/>')
        hx, hy = _xy(r["lo"], 0)
        share = r["count"] / total
        parts.append(f'<rect x="{hx + 1:.1f}" y="{hy - 18 * share:.1f}" width="{xr - xl - 2:.1f}" '
                     f'height="{18 * share:.1f}" class="hist"/>')
    return _svg(f"reliability-{suite}", parts)


def risk_coverage_svg(curve: dict[str, Any], coverage_at_threshold: float | None, suite: str) -> str:
    parts = _axes("Risk-coverage", "coverage", "risk (error rate of kept cases)")
    risks = curve.get("risk") or []
    top = max([0.05, *risks]) if risks else 1.0
    scale = min(1.0, math.ceil(top * 10) / 10)
    pts = " ".join(f"{_xy(c, r / scale)[0]:.1f},{_xy(c, r / scale)[1]:.1f}"
                   for c, r in zip(curve.get("coverage", []), risks, strict=True))
    parts.append(f'<polyline points="{pts}" class="line"/>')
    parts.append(f'<text x="{_W - 14}" y="34" text-anchor="end" class="s">y axis: 0-{scale:.1f}</text>')
    if coverage_at_threshold is not None:
        x, _ = _xy(coverage_at_threshold, 0)
        parts.append(f'<line x1="{x:.1f}" y1="{_H - _PAD}" x2="{x:.1f}" y2="24" class="thr"/>')
        parts.append(f'<text x="{x - 3:.1f}" y="44" text-anchor="end" class="s">policy threshold</text>')
    return _svg(f"risk-coverage-{suite}", parts)


def confusion_svg(labels: list[str], matrix: list[list[int]], suite: str) -> str:
    n = len(labels)
    cell = max(8, min(22, 440 // max(n, 1)))
    left, topm = 170, 150
    w, h = left + cell * n + 10, topm + cell * n + 10
    parts = [f'<text x="{w / 2}" y="14" text-anchor="middle" class="t">Confusion matrix '
             f"(top {n} classes by support; rows gold, columns predicted)</text>"]
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, v in enumerate(row):
            frac = v / total
            if i == j:
                color = f"rgba(31,119,180,{0.1 + 0.9 * frac:.3f})"
            else:
                color = f"rgba(214,39,40,{min(1.0, 0.15 + 2 * frac) if v else 0:.3f})"
            parts.append(f'<rect x="{left + j * cell}" y="{topm + i * cell}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="{color}" class="cell"><title>gold {html.escape(labels[i])}, predicted '
                         f"{html.escape(labels[j])}: {v}</title></rect>")
    fs = max(7, min(11, cell - 2))
    for i, label in enumerate(labels):
        short = html.escape(label[:26])
        parts.append(f'<text x="{left - 4}" y="{topm + i * cell + cell * 0.7:.1f}" text-anchor="end" '
                     f'style="font-size:{fs}px">{short}</text>')
        x = left + i * cell + cell * 0.7
        parts.append(f'<text x="{x:.1f}" y="{topm - 4}" transform="rotate(-60 {x:.1f} {topm - 4})" '
                     f'style="font-size:{fs}px">{short}</text>')
    return _svg(f"confusion-{suite}", parts, width=w, height=h)


def _svg(ident: str, parts: list[str], *, width: int = _W, height: int = _H) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" id="{html.escape(ident)}" class="plot" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img">' + "".join(parts) + "</svg>")


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.fail{color:#b00;font-weight:bold}.pass{color:#070;font-weight:bold}.plots{display:flex;flex-wrap:wrap;gap:16px}
svg text{font-size:10px;fill:#333}svg .t{font-size:12px;font-weight:bold}svg .s{font-size:9px}
svg .ax{stroke:#333}svg .diag{stroke:#999;stroke-dasharray:4 3}svg .bar{fill:#1f77b4;opacity:.75}
svg .hist{fill:#999;opacity:.5}svg .pt{fill:#d62728}svg .line{fill:none;stroke:#1f77b4;stroke-width:2}
svg .thr{stroke:#d62728;stroke-dasharray:3 3}code{background:#f4f4f4;padding:0 3px}
"""


def _table(rows: list[list[Any]], head: list[str]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
    return "".join(out) + "</table>"


_DECISION_LABELS = {
    "approval_rate": "approved unchanged / decided",
    "edit_rate": "edited / decided",
    "reject_rate": "rejected / decided",
    "mean_edit_distance": "normalised Levenshtein, proposed vs final, mean over edits",
    "gate_overcaution": "held back by the gate, human chose the model's label",
}


def _decision_rows(doc: dict[str, Any]) -> list[list[Any]]:
    d = doc["decisions"]
    c = d["counts"]
    counts = {
        "approval_rate": f"{c['approve']} / {d['n_decided']}",
        "edit_rate": f"{c['edit']} / {d['n_decided']}",
        "reject_rate": f"{c['reject']} / {d['n_decided']}",
        "mean_edit_distance": f"{c['edit']} edits",
        "gate_overcaution": f"{d['n_triaged_agreed']} / {d['n_triaged']}",
    }
    return [[name, doc["metrics"].get(name), counts[name], label] for name, label in _DECISION_LABELS.items()
            if name in doc["metrics"]]


def _decision_note(d: dict[str, Any]) -> str:
    return (f"{d['n']} recorded decisions from {d['file']} ({d['counts']['expired']} expired, not counted as "
            f"decided; {d['n_triaged']} tickets the gate sent to a human)")


def suite_html(doc: dict[str, Any]) -> str:
    name = doc["suite"]
    parts = [f"<h2>{html.escape(name)}</h2>",
             f"<p>{doc['n']} cases from <code>{html.escape(str(doc.get('dataset', '')))}</code>; model "
             f"<code>{html.escape(doc['model_version'])}</code> ({doc.get('n_train')} training examples); "
             f"threshold {_fmt(doc['threshold'], 3)} ({html.escape(doc['threshold_source'])}); "
             f"runtime {doc['runtime_seconds']} s; dataset {doc['dataset_hash'][:12]}, suite "
             f"{doc['suite_hash'][:12]}.</p>"]
    decision_names = set(_DECISION_LABELS) if doc.get("decisions") else set()
    rows = [[k, v] for k, v in doc["metrics"].items() if k not in decision_names] + [
        [k, v] for k, v in doc["secondary"].items()]
    parts.append(_table(rows, ["metric", "value"]))
    if doc.get("decisions"):
        parts.append(f'<h3 id="decisions-{html.escape(name)}">Recorded human decisions</h3>'
                     f"<p>{html.escape(_decision_note(doc['decisions']))}.</p>")
        parts.append(_table(_decision_rows(doc), ["figure", "value", "of", "meaning"]))
    cost = doc["cost"]
    parts.append(_table([[k, v] for k, v in cost.items()], ["cost", "value"]))
    cmp_ = doc.get("comparison")
    if cmp_:
        verdict = '<span class="pass">PASS</span>' if cmp_["passed"] else '<span class="fail">FAIL</span>'
        parts.append(f"<h3>Against the blessed baseline: {verdict}</h3>")
        parts.append("<p>" + "; ".join(html.escape(n) for n in cmp_["notes"]) + "</p>" if cmp_["notes"] else "")
        parts.append(_table([[c["metric"], c["base"], c["new"], c["delta"], c["tolerance"], c["p_worse"],
                              "REGRESSED" if c["regressed"] else ""] for c in cmp_["changes"]],
                            ["metric", "baseline", "now", "delta", "tolerance", "p (worse)", ""]))
        mc = cmp_["mcnemar"]
        if mc:
            parts.append(f"<p>Paired cases: {cmp_['n_shared']}; right before and wrong now: {mc['b']}, "
                         f"wrong before and right now: {mc['c']} (McNemar p={_fmt(mc['p_value'], 3)}).</p>")
        else:
            parts.append(f"<p>Paired {html.escape(doc.get('unit', 'case'))}s: {cmp_['n_shared']} "
                         "(paired bootstrap, 1,000 resamples).</p>")
    elif doc.get("baseline_note"):
        parts.append(f"<p>{html.escape(doc['baseline_note'])}</p>")
    rec = doc.get("recommendation")
    if rec:
        parts.append(f"<h3>Thresholds for {rec['target_precision']:.0%} precision</h3>"
                     f"<p>Calibration set: {html.escape(rec['calibration'])}.</p>")
        parts.append(_table([[a, r["threshold"], r["coverage"], r["precision"], r["on_suite"]["coverage"],
                              r["on_suite"]["precision"], r["current_threshold"]]
                             for a, r in rec["actions"].items()],
                            ["action", "threshold", "coverage (cal.)", "precision (cal.)", "coverage (suite)",
                             "precision (suite)", "current"]))
        if rec.get("class_thresholds") is not None:
            on = rec["per_class_on_suite"]
            parts.append(f"<p>Per class (min_confidence_by_class, classes with at least {rec['min_class_support']} "
                         f"calibration predictions): coverage on the suite {_fmt(on['coverage'], 3)} at precision "
                         f"{_fmt(on['precision'], 3)}; with the action threshold only "
                         f"{_fmt(on['coverage_action_only'], 3)} at {_fmt(on['precision_action_only'], 3)}.</p>")
            parts.append(_table([[k, v["threshold"], v["n_predicted"], v["precision"], "yes" if v["written"] else ""]
                                 for k, v in rec["per_class"].items()],
                                ["class", "threshold", "predicted (cal.)", "precision (cal.)", "written"]))
    coverage = doc["metrics"].get("coverage")
    plots = []
    if doc.get("reliability"):
        plots.append(reliability_svg(doc["reliability"], name, ylabel=doc.get("reliability_axis", "accuracy")))
    if doc.get("risk_coverage"):
        plots.append(risk_coverage_svg(doc["risk_coverage"], coverage, name))
    if doc.get("confusion"):
        plots.append(confusion_svg(doc["confusion"]["labels"], doc["confusion"]["matrix"], name))
    if plots:
        parts.append('<div class="plots">' + "".join(plots) + "</div>")
    if doc.get("per_class"):
        worst = sorted(doc["per_class"].items(), key=lambda kv: kv[1]["f1"])[:15]
        parts.append("<h3>Weakest classes (F1)</h3>")
        parts.append(_table([[k, v["precision"], v["recall"], v["f1"], v["support"]] for k, v in worst],
                            ["class", "precision", "recall", "F1", "support"]))
    if doc.get("per_category"):
        rows = list(doc["per_category"].items())
        head = list(rows[0][1])
        parts.append(f'<h3 id="categories-{html.escape(name)}">Per category</h3>')
        parts.append(_table([[k, *[v.get(h) for h in head]] for k, v in rows], ["category", *head]))
    return "".join(parts)


def render_html(docs: list[dict[str, Any]]) -> str:
    title = "Signoff evals: " + ", ".join(d["suite"] for d in docs)
    body = "".join(suite_html(d) for d in docs)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def _train_note(doc: dict[str, Any]) -> str:
    if doc["cost"].get("backend") == "llm":
        return "n/a (LLM)"
    return "cached" if doc["train_seconds"] is None else f"{doc['train_seconds']} s"


def print_summary(console: Console, doc: dict[str, Any]) -> None:
    table = Table(title=f"{doc['suite']}: {doc['n']} cases, model {doc['model_version']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    cmp_ = doc.get("comparison")
    changes = {c["metric"]: c for c in cmp_["changes"]} if cmp_ else {}
    if cmp_:
        table.add_column("baseline", justify="right")
        table.add_column("delta", justify="right")
        table.add_column("gate")
    decision_names = set(_DECISION_LABELS) if doc.get("decisions") else set()
    for name, value in [*doc["metrics"].items(), *doc["secondary"].items()]:
        if name in decision_names:
            continue
        row = [name, _fmt(value)]
        if cmp_:
            c = changes.get(name)
            if c is None:
                row += ["", "", ""]
            else:
                verdict = "[red]REGRESSED[/]" if c["regressed"] else (
                    "" if c["tolerance"] is None else f"ok (tol {c['tolerance']:g})")
                row += [_fmt(c["base"]), f"{c['delta']:+.4f}" if c["delta"] is not None else "n/a", verdict]
        table.add_row(*row)
    console.print(table)
    if doc.get("decisions"):
        dt = Table(title=f"recorded human decisions: {_decision_note(doc['decisions'])}", title_justify="left")
        dt.add_column("figure")
        dt.add_column("value", justify="right")
        dt.add_column("of", justify="right")
        dt.add_column("meaning")
        for row in _decision_rows(doc):
            dt.add_row(row[0], _fmt(row[1]), row[2], row[3])
        console.print(dt)
    if doc.get("per_category"):
        ct = Table(title=f"per category ({doc.get('contracts')} contracts)", title_justify="left")
        for col in ("category", "gold", "shown", "threshold", "P", "R", "F1", "P@80R", "AUPR"):
            ct.add_column(col, justify="left" if col == "category" else "right")
        for cat, r in doc["per_category"].items():
            ct.add_row(cat, str(r["n_gold"]), str(r["n_shown"]), _fmt(r["threshold"], 2), _fmt(r["precision"], 3),
                       _fmt(r["recall"], 3), _fmt(r["f1"], 3), _fmt(r["p_at_80r"], 3), _fmt(r["aupr"], 3))
        console.print(ct)
    cost = doc["cost"]
    console.print(f"threshold {_fmt(doc['threshold'], 3)} ({doc['threshold_source']}); "
                  f"{cost['model_calls']} model calls, {_fmt(cost['latency_ms_per_case'], 2)} ms/case, "
                  f"tokens {cost.get('tokens', 0)}; "
                  f"train {_train_note(doc)}; "
                  f"run {doc['runtime_seconds']} s ({doc['run']['n_resumed']} cases resumed)")
    if cmp_:
        for note in cmp_["notes"]:
            console.print(f"[dim]note: {note}[/]")
        mc = cmp_["mcnemar"]
        if mc:
            console.print(f"paired cases {cmp_['n_shared']}: {mc['c']} fixed, {mc['b']} broken "
                          f"(McNemar p={_fmt(mc['p_value'], 3)})")
        else:
            console.print(f"paired {doc.get('unit', 'case')}s {cmp_['n_shared']} (paired bootstrap)")
    elif doc.get("baseline_note"):
        console.print(f"[dim]{doc['baseline_note']}[/]")
    rec = doc.get("recommendation")
    if rec:
        console.print(f"thresholds for {rec['target_precision']:.0%} precision (calibration: {rec['calibration']}):")
        for action, r in rec["actions"].items():
            on = r["on_suite"]
            console.print(f"  {action}: min_confidence {_fmt(r['threshold'], 3)} keeps {_fmt(r['coverage'], 3)} "
                          f"of the calibration set at precision {_fmt(r['precision'], 3)}; on the suite: coverage "
                          f"{_fmt(on['coverage'], 3)}, precision {_fmt(on['precision'], 3)} "
                          f"(current {_fmt(r['current_threshold'], 3)})")
        if rec.get("class_thresholds") is not None:
            on = rec["per_class_on_suite"]
            console.print(f"  per class: {len(rec['class_thresholds'])} of {len(rec['per_class'])} predicted classes "
                          f"get a threshold of their own (>= {rec['min_class_support']} calibration predictions); "
                          f"on the suite: coverage {_fmt(on['coverage'], 3)} at precision {_fmt(on['precision'], 3)} "
                          f"(action threshold only: {_fmt(on['coverage_action_only'], 3)} at "
                          f"{_fmt(on['precision_action_only'], 3)})")
