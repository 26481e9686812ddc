"""``signoff eval``: run prompt-regression suites, report, bless baselines, gate a release."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from signoff.config import Settings, get_settings
from signoff.errors import DataError, SignoffError

console = Console()
err = Console(stderr=True)

#: exit code of a gate failure (a significant regression beyond tolerance)
EXIT_REGRESSION = 1
#: exit code of a suite, data, model or policy error
EXIT_ERROR = 2


def _is_dir(target: Path) -> bool:
    """An existing directory, or a path without a file suffix (``evals/reports``)."""
    return target.is_dir() or not target.suffix


def _out_path(target: Path | None, suite: str, suffix: str, many: bool) -> Path | None:
    """A directory (see :func:`_is_dir`) gets ``<suite><suffix>``; with several suites a file name gets
    ``-<suite>`` before its suffix; otherwise the path as given."""
    if target is None:
        return None
    if _is_dir(target):
        return target / f"{suite}{suffix}"
    return target.with_name(f"{target.stem}-{suite}{target.suffix}") if many else target


def _check_writable(target: Path) -> None:
    """``--write-policy`` must name a file in an existing directory (checked before any suite runs)."""
    if target.is_dir():
        raise typer.BadParameter(f"--write-policy {target} is a directory; name a policy file (e.g. {target}/"
                                 "policy.yaml)")
    parent = target.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"--write-policy {target}: directory {parent} does not exist")


def _check_output(option: str, target: Path) -> None:
    """``--json`` / ``--html`` must be writable, checked before any suite runs (exit 2, not the regression exit
    1 at the end): its directory is made if missing, and a scratch file written there and removed."""
    import tempfile

    directory = target if _is_dir(target) else target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".signoff-eval-", delete=True):
            pass
    except OSError as exc:
        raise typer.BadParameter(f"{option} {target}: cannot write in {directory} ({exc.strerror or exc})") from exc


def _export(settings: Settings, out: Path) -> None:
    from signoff.evals.decisions import export_decisions
    from signoff.guardrails.state import state

    if not settings.database_url and not settings.state_db_path.is_file():
        raise DataError(f"no approvals store at {settings.state_db_path} (SIGNOFF_DATA_DIR): nothing to export")
    with state(settings) as st:
        counts = export_decisions(st.store.find(), out)
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "none"
    console.print(f"wrote {out}: {sum(counts.values())} decided proposals ({summary}). Tickets the gate sent "
                  "to a human are not in the store: add them by hand as verdict 'human_triaged' records.")


def eval_command(
    suites: Annotated[list[str] | None, typer.Argument(
        help="Suite files, or names of suites in ./evals (e.g. smoke, triage-banking77).")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the results as JSON (a directory, i.e. no .json suffix: <suite>.json each).")] = None,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Write one self-contained HTML report (a directory: <suite>.html each).")] = None,
    bless: Annotated[bool, typer.Option(
        "--bless", help="Store this run as the suite's baseline (<baseline dir>/<suite>.json); no gate.")] = False,
    baseline_dir: Annotated[Path | None, typer.Option(
        "--baseline-dir", help="Where baselines live; default: baselines/ next to each suite file.")] = None,
    recommend_thresholds: Annotated[bool, typer.Option(
        "--recommend-thresholds", help="Recommend min_confidence per action for --target-precision (triage "
        "suites only; other suites get a note).")] = False,
    target_precision: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Precision the recommended thresholds must reach.")] = 0.95,
    calibration: Annotated[str, typer.Option(
        help="Calibration set for thresholds: 'dev' (held-out 20% of the training data) or 'suite'.")] = "dev",
    per_class: Annotated[bool, typer.Option(
        "--per-class", help="Also recommend a threshold per predicted class; with --write-policy they are "
        "written as ticket.set_category.min_confidence_by_class (classes with too few calibration "
        "predictions keep the action's threshold).")] = False,
    min_class_support: Annotated[int, typer.Option(
        min=1, help="--per-class: calibration predictions a class needs for a threshold of its own.")] = 20,
    write_policy: Annotated[Path | None, typer.Option(
        "--write-policy", help="Write the recommended thresholds into this policy YAML "
        "(ticket.set_category / ticket.set_team min_confidence, and per class with --per-class; the rest "
        "kept, comments lost). One triage suite; the file's directory must exist.")] = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Ignore a previous partial run of the same suite/model/data and score from scratch.")
    ] = False,
    record: Annotated[bool, typer.Option(
        "--record", help="backend: llm suites: call the configured endpoint (SIGNOFF_LLM_BASE_URL, "
        "SIGNOFF_LLM_API_KEY) and re-record the suite's cassette instead of replaying it.")] = False,
    export_decisions: Annotated[Path | None, typer.Option(
        "--export-decisions", help="Write the decided proposals of the approvals store as a JSONL of recorded "
        "human decisions (a suite's 'decisions:' file); suites are optional with it.")] = None,
) -> None:
    """Run eval suites: score every case with the real agent step, report metrics, gate on baselines.

    Agents: triage (accuracy, macro-F1, calibration, coverage at the policy threshold; embedded model,
    or ``backend: llm`` replayed from a vcrpy cassette, ``--record`` to re-record against
    SIGNOFF_LLM_BASE_URL), contracts (CUAD: span F1/precision/recall of the terms the agent shows,
    precision at 80 % recall and AUPR of its ranked candidates) and renewal (Telco: ROC-AUC, PR-AUC,
    Brier, ECE, lift in the top decile).

    Each suite is compared case by case with its blessed baseline (McNemar for accuracy, paired
    bootstrap otherwise; contracts resample contract/category pairs, renewal accounts). Exit code 1 when
    a metric got significantly worse by more than the suite's tolerance (the message names it), 2 on a
    suite/data/model error (also: a replayed request missing from its cassette; a baseline that is not
    the shape ``--bless`` writes, checked before any suite runs), 0 otherwise. An
    interrupted triage or contracts run resumes where it stopped when run again.

    ``--recommend-thresholds`` (triage suites only): min_confidence per action at ``--target-precision``;
    ``--per-class`` adds one per predicted class, and ``--write-policy FILE`` writes them
    (``min_confidence_by_class``; a class not listed keeps the action's threshold) for one triage suite.

    A suite with ``decisions: file.jsonl`` also reports the recorded human decisions: approval, edit and
    reject rates, the edit distance of human edits, and how often the gate held back what the human then
    chose unchanged. ``--export-decisions FILE`` writes that file from the approvals store.
    """
    from signoff.evals.gate import baseline_path, compare, load_baseline
    from signoff.evals.gate import bless as store_baseline
    from signoff.evals.report import print_summary, render_html
    from signoff.evals.runner import SuiteRun, run_any
    from signoff.evals.suite import find_suite, load_suite
    from signoff.evals.thresholds import recommend
    from signoff.evals.thresholds import write_policy as write_policy_file

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if calibration not in ("dev", "suite"):
        raise typer.BadParameter("--calibration must be 'dev' or 'suite'")
    if write_policy is not None and not recommend_thresholds:
        raise typer.BadParameter("--write-policy needs --recommend-thresholds")
    if write_policy is not None:
        _check_writable(write_policy)
    for option, target in (("--json", json_out), ("--html", html_out)):
        if target is not None:
            _check_output(option, target)
    suites = suites or []
    if not suites and export_decisions is None:
        raise typer.BadParameter("name at least one suite (or give --export-decisions FILE)")
    docs: list[dict[str, Any]] = []
    regressions: list[str] = []
    many = len(suites) > 1
    try:
        if export_decisions is not None:
            _export(settings, export_decisions)
        loaded = [load_suite(find_suite(s)) for s in suites]
        if write_policy is not None:
            if len(loaded) != 1:
                raise typer.BadParameter(f"--write-policy takes exactly one suite, got {len(loaded)}")
            if loaded[0].agent != "triage":
                raise typer.BadParameter(f"--recommend-thresholds and --write-policy apply to triage suites only; "
                                         f"{loaded[0].name} is a {loaded[0].agent} suite")
        bpaths = [baseline_path(baseline_dir or suite.directory / "baselines", suite.name) for suite in loaded]
        bases = [None if bless else load_baseline(p) for p in bpaths]  # a broken baseline stops before any run
        for suite, bpath, base in zip(loaded, bpaths, bases, strict=True):
            bdir = bpath.parent
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                task = bar.add_task(suite.name, total=None)

                def progress(stage: str, done: int, total: int, task: Any = task, name: str = suite.name) -> None:
                    bar.update(task, description=f"{name}: {stage}", completed=done, total=total)

                run = run_any(suite, settings, progress=progress, fresh=fresh, record=record)
            doc = run.to_json()
            if recommend_thresholds and not isinstance(run, SuiteRun):
                doc["recommendation_note"] = (f"--recommend-thresholds applies to triage suites only: nothing "
                                              f"recommended for {suite.name} ({suite.agent})")
            elif recommend_thresholds:
                with console.status(f"{suite.name}: recommending thresholds"):
                    doc["recommendation"] = recommend(run, settings, target=target_precision,
                                                      per_class=per_class, source=calibration,
                                                      min_class_support=min_class_support)
            if bless:
                path = store_baseline(run, bdir)
                doc["baseline_note"] = f"blessed as the baseline: {path}"
            else:
                if base is None:
                    doc["baseline_note"] = f"no baseline at {bpath}: not gated (bless one with --bless)"
                else:
                    with console.status(f"{suite.name}: comparing with the baseline"):
                        cmp_ = compare(run, base)
                    doc["comparison"] = cmp_.to_json()
                    regressions += [f"{suite.name}: {c.describe()}" for c in cmp_.regressions]
            print_summary(console, doc)
            if "recommendation_note" in doc:
                console.print(f"note: {doc['recommendation_note']}")
            docs.append(doc)
            out = _out_path(json_out, suite.name, ".json", many)
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
                console.print(f"wrote {out}")
            if html_out is not None and _is_dir(html_out):
                hp = _out_path(html_out, suite.name, ".html", many)
                assert hp is not None
                hp.parent.mkdir(parents=True, exist_ok=True)
                hp.write_text(render_html([doc]), encoding="utf-8")
                console.print(f"wrote {hp}")
        if html_out is not None and not _is_dir(html_out):
            html_out.parent.mkdir(parents=True, exist_ok=True)
            html_out.write_text(render_html(docs), encoding="utf-8")
            console.print(f"wrote {html_out}")
        if write_policy is not None:
            recs = [d["recommendation"] for d in docs if "recommendation" in d]
            if len(recs) != 1:  # checked before the run: one triage suite
                raise DataError("--write-policy: the suite made no threshold recommendation")
            from signoff.guardrails.policy import DEFAULT_POLICY_PATH

            for action, rec in recs[0]["actions"].items():
                precision = (rec.get("on_suite") or {}).get("precision")
                if isinstance(precision, float) and precision < target_precision:
                    err.print(f"[yellow]warning:[/] {action} at {rec['threshold']} reaches only {precision:.3f} "
                              f"precision on the suite's cases (target {target_precision}); the calibration set "
                              "may be too small or unlike them: check before you deploy this policy")
            written = write_policy_file(write_policy, recs[0], base=settings.policy_path or DEFAULT_POLICY_PATH)
            by_class = recs[0].get("class_thresholds")
            extra = f", {len(by_class)} per-class thresholds for ticket.set_category" if by_class is not None else ""
            console.print(f"wrote {write_policy}: " + ", ".join(f"{a} min_confidence {v}" for a, v in written.items())
                          + extra + " (YAML comments in that file are not preserved)")
            if by_class is None:
                from signoff.guardrails.policy import load_policy

                kept = load_policy(write_policy).action("ticket.set_category").min_confidence_by_class
                if kept:
                    err.print(f"[yellow]warning:[/] {write_policy} keeps {len(kept)} per-class thresholds "
                              "(min_confidence_by_class) from before; rerun with --per-class to recompute them")
    except SignoffError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    if regressions:
        for line in regressions:
            err.print(f"[bold red]regression:[/] {line}")
        err.print(f"[bold red]gate failed:[/] {len(regressions)} metric(s) regressed beyond tolerance")
        raise typer.Exit(EXIT_REGRESSION)
