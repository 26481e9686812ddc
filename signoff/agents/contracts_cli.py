"""``signoff contracts``: train the clause model, summarise a contract (file or Odoo attachment), list them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from signoff.config import Settings, get_settings
from signoff.domain import ContractSummary, SourceSpan
from signoff.errors import SignoffError

app = typer.Typer(
    name="contracts",
    help="Contracts: key terms with their exact source, a summary, deviations from the clause policy, "
         "and renewal-reminder / legal-review proposals.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

STATUS_STYLE = {"found": "green", "needs_review": "yellow", "not_found": "dim"}


def _settings() -> Settings:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return settings


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code)


@app.command("train")
def train(
    limit: Annotated[int | None, typer.Option(
        help="Use only the first N dev contracts (quick try; at least 3, one per calibration fold).")] = None,
) -> None:
    """Fit the clause model on CUAD dev (read in place from SIGNOFF_PUBLIC_DATA_DIR) and save it.

    Chunk embeddings are cached under the data dir, so a second fit is fast. Takes a few minutes on
    2 cores for all 90 dev contracts."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from signoff.agents.contracts import embedding_cache_dir, model_dir
    from signoff.llm.clauses import ClauseModel, load_cuad, min_training_contracts

    if limit is not None and limit < min_training_contracts():
        raise _fail(ValueError(f"--limit {limit}: the clause model needs at least {min_training_contracts()} "
                               "labelled contracts (one per calibration fold); leave --limit out to use every "
                               "dev contract"), 2)
    settings = _settings()
    settings.ensure_dirs()
    path = settings.public_data_dir / "contracts" / "cuad_dev.jsonl"
    try:
        contracts = load_cuad(path, limit=limit)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("training", total=100)
            model = ClauseModel(cache_dir=embedding_cache_dir(settings), chroma_url=settings.chroma_url).fit(
                contracts, progress=lambda s, f: progress.update(task, description=s, completed=int(f * 100)))
        saved = model.save(model_dir(settings))
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"[green]trained[/] {model.version} on {len(contracts)} contracts; saved to {saved}")


def _context(text: str, span: SourceSpan, width: int = 60, limit: int = 320) -> Text:
    """A few words around the span, the span highlighted (long spans cut in the middle)."""
    before = " ".join(text[max(0, span.start - width) : span.start].split()[-8:])
    after = " ".join(text[span.end : span.end + width].split()[:8])
    body = " ".join(span.text.split())
    if len(body) > limit:
        body = body[: limit // 2] + " … " + body[-limit // 2 :]
    out = Text("… " + before + " ", style="dim")
    out.append(body, style="bold yellow")
    out.append(" " + after + " …", style="dim")
    return out


def _value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    if isinstance(v, dict):
        if "label" in v:
            return str(v["label"])
        if "auto_renewal" in v:
            term = v.get("term")
            return ("auto-renews" if v["auto_renewal"] else "renewable") + (f", {term['label']}" if term else "")
        if "date" in v:
            return str(v["date"] or v.get("basis"))
        if "by" in v:
            return "by " + (", ".join(v["by"]) or "?")
    if v is True:
        return "yes"
    return str(v)


def print_summary(c: ContractSummary, text: str, proposals: list[Any] | None = None) -> None:
    table = Table(title=f"{c.name}  ({c.n_chars:,} chars, model {c.model_version[:24]})", show_lines=False)
    table.add_column("term")
    table.add_column("CUAD category", style="dim")
    table.add_column("status")
    table.add_column("conf / thr", justify="right")
    table.add_column("value")
    table.add_column("span", style="dim")
    for t in c.terms:
        status = Text(t.status.replace("_", " "), style=STATUS_STYLE[t.status])
        spans = ", ".join(f"{s.start}–{s.end}" for s in t.spans)
        note = next((str(e["note"]) for e in t.evidence if isinstance(e, dict) and e.get("note")), "")
        table.add_row(t.key, t.category, status, f"{t.confidence:.2f} / {t.threshold:.2f}",
                      _value(t.value) if t.status == "found" else note, spans)
    console.print(table)
    for t in c.terms:
        if t.status != "found":
            continue
        console.print(Text(f"{t.key}:", style="bold"))
        for s in t.spans[:3]:
            line = Text(f"  [{s.start}:{s.end}] ")
            line.append_text(_context(text, s))
            console.print(line)
    if c.summary:
        lines = [f"{s.text} " + " ".join(f"[{sp.start}:{sp.end}]" for sp in s.spans[:3]) for s in c.summary]
        console.print(Panel("\n".join(lines), title="Summary (every sentence cites its spans)"))
    if c.notice_deadline:
        console.print(f"[bold]Renewal decision deadline:[/] {c.notice_deadline}")
    if c.deviations:
        dev = Table(title="Deviations from the clause policy")
        dev.add_column("rule")
        dev.add_column("severity")
        dev.add_column("what")
        dev.add_column("spans", style="dim")
        for d in c.deviations:
            dev.add_row(d.rule, d.severity, d.message, ", ".join(f"{s.start}–{s.end}" for s in d.spans))
        console.print(dev)
    else:
        console.print("[green]No deviations from the clause policy.[/]")
    review = [t.key for t in c.terms if t.status == "needs_review"]
    if review:
        console.print(f"[yellow]Needs review (below threshold, or a reading that does not add up; not shown as "
                      f"values):[/] {', '.join(review)}")
    if c.injection:
        console.print(f"[red]Text addressed to an AI found in the contract:[/] {'; '.join(c.injection)}")
    for r in c.reasons:
        console.print(f"[yellow]note:[/] {r}")
    if proposals:
        pt = Table(title="Proposals (waiting for approval)")
        pt.add_column("id")
        pt.add_column("action")
        pt.add_column("state")
        pt.add_column("approvers")
        pt.add_column("what")
        for p in proposals:
            pt.add_row(p.id[:12], p.action, p.state, p.approver_group,
                       f"{p.args.get('reason', '')} (due {p.args.get('deadline', '')})")
        console.print(pt)
        console.print(f"Decide: signoff approvals approve {proposals[0].id[:12]} --as <approver>")
    elif c.outcome == "report":
        console.print("[dim]Report only: a file has no Odoo record, nothing is proposed.[/]")


@app.command("summarise")
def summarise(
    file: Annotated[Path | None, typer.Argument(help="A contract file (.txt or .pdf): report only.")] = None,
    odoo_id: Annotated[int | None, typer.Option("--odoo-id", help="ir.attachment id in Odoo (positive; see "
                                                                  "`signoff contracts list`): proposals stored.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Key terms with their source spans, a cited summary, deviations and proposals.

    FILE: analyse a text or PDF file (nothing is proposed). --odoo-id N: read ir.attachment N through
    the read-only view and store proposals (renewal reminder at the notice deadline, legal review of
    deviations) for approval (`signoff approvals list`)."""
    from signoff.agents.contracts import ContractRunner, contract_runner, file_services

    if (file is None) == (odoo_id is None):
        raise _fail(ValueError("give a FILE or --odoo-id N (one of them)"), 2)
    if odoo_id is not None and not 0 < odoo_id < 2**31:
        raise _fail(ValueError(f"no attachment {odoo_id}: an attachment id is a positive integer below 2**31 "
                               "(`signoff contracts list` shows them)"), 2)
    settings = _settings()
    try:
        if file is not None:
            from signoff.tools.contracts import load_file

            source = load_file(file)
            summary = ContractRunner(file_services(settings), None).report(source)
            text, proposals = source.text, []
        else:
            from signoff.agents.services import open_runtime
            from signoff.tools.contracts import load_attachment

            with open_runtime(settings) as rt, contract_runner(rt) as runner:
                status, got = runner.run(odoo_id)  # type: ignore[arg-type]
                if got is None:
                    raise _fail(ValueError(f"no result for attachment {odoo_id}"))
                summary = got
                text = load_attachment(rt.reader, odoo_id, db=settings.odoo_db).text  # type: ignore[arg-type]
                proposals = [rt.store.get(pid) for pid in summary.proposal_ids]
                if status == "duplicate":
                    err.print(f"[dim]{summary.thread_id} already has a run: showing its stored result[/]")
    except SignoffError as exc:
        raise _fail(exc) from exc
    if as_json:
        console.print_json(json.dumps(summary.model_dump(mode="json")))
        return
    print_summary(summary, text, proposals)


@app.command("list")
def list_attachments() -> None:
    """Contract attachments on sale orders in Odoo (ids for --odoo-id)."""
    from signoff.agents.services import open_runtime
    from signoff.tools.contracts import list_contract_attachments

    try:
        with open_runtime(_settings()) as rt:
            rows = list_contract_attachments(rt.reader)
    except SignoffError as exc:
        raise _fail(exc) from exc
    table = Table(title="Contract attachments")
    for col in ("id", "name", "type", "size", "record"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), str(r["name"]), str(r.get("mimetype")), f"{r.get('file_size') or 0:,}",
                      f"{r.get('res_model')},{r.get('res_id')}")
    console.print(table)
