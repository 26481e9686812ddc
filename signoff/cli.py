"""The ``signoff`` command line: demo, train, triage, approvals, audit, sandbox."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from signoff.config import Settings, get_settings
from signoff.domain import PRIORITY_NAMES, Decision, Proposal, utcnow
from signoff.errors import AlreadyDecided, ConfigError, DataError, SignoffError

app = typer.Typer(
    name="signoff",
    help="AI agents for SaaS operations that never write anything without a human's sign-off.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
approvals_app = typer.Typer(
    name="approvals",
    help="See and decide proposals: list, show, approve, edit, reject; work the exception queue.",
    no_args_is_help=True,
)
app.add_typer(approvals_app)

console = Console()
err = Console(stderr=True)

def _cli_identity(value: str) -> str:
    """The CLI decides as ``cli:<name>`` only: a Slack, Odoo or inbox identity decides in its own channel, so
    the audit never shows a Slack user deciding from a terminal."""
    if not value.startswith("cli:") or len(value) <= 4 or any(c.isspace() for c in value):
        raise typer.BadParameter(f"{value!r}: the CLI decides as cli:<name> (e.g. cli:lead), as the policy's groups "
                                 "name it; slack: and odoo: identities decide in their own channel")
    return value


ApproverOpt = Annotated[
    str,
    typer.Option("--as", envvar="SIGNOFF_APPROVER", callback=_cli_identity,
                 help="Your approver identity as the policy's groups name it: cli:<name>, e.g. cli:lead. "
                      "Self-declared: whoever can run the CLI on this data directory can name any cli: identity."),
]


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise _fail(ValueError(_bad_settings(exc)), 2) from exc
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return settings


def _bad_settings(exc: Any) -> str:
    """A Settings ValidationError as one line naming each SIGNOFF_* variable."""
    return "bad setting: " + "; ".join(f"SIGNOFF_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                                       for e in exc.errors())


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


# --- train ---------------------------------------------------------------------------------------


@app.command()
def train(
    what: Annotated[str, typer.Argument(help="triage (default) or risk (the renewal-risk model; see "
                                             "`signoff risk train --help` for its options).")] = "triage",
    source: Annotated[str, typer.Option(help="With `risk`: telco (public dev split) or odoo.")] = "telco",
    file: Annotated[Path | None, typer.Option(help="Labelled JSONL instead of Odoo's resolved tickets.")] = None,
    text_field: Annotated[str, typer.Option(help="Field holding the text (with --file).")] = "text",
    label_field: Annotated[str, typer.Option(help="Field holding the label (with --file).")] = "intent",
    limit: Annotated[int | None, typer.Option(help="Use at most this many examples.")] = None,
    calibration: Annotated[str, typer.Option(help="With `risk`: sigmoid (Platt) or isotonic.")] = "sigmoid",
    c: Annotated[float, typer.Option("--c", help="With `risk`: inverse L2 strength of the regression.")] = 0.1,
) -> None:
    """Fit the triage model on labelled history and save a versioned artefact.

    By default the history is Odoo's resolved tickets that have a category (the built-in stand-in
    when SIGNOFF_ODOO_URL is unset); --file reads a JSONL file instead. `signoff train risk` fits the
    renewal-risk model instead, taking the same --source, --calibration and --c as `signoff risk train`
    (the triage options --file, --text-field, --label-field and --limit are refused with it).
    Too few examples to hold out a calibration fold (its confidences would mean nothing to the policy's
    thresholds) is refused and the current model is kept.
    """
    from signoff.llm.training import load_labelled_jsonl

    settings = _settings()
    if what == "risk":
        from signoff.agents.risk_cli import print_trained, train_risk

        triage_only = [name for name, given in (("--file", file is not None), ("--limit", limit is not None),
                                                ("--text-field", text_field != "text"),
                                                ("--label-field", label_field != "intent")) if given]
        if triage_only:
            raise _fail(ValueError(f"{', '.join(triage_only)} only apply to `signoff train triage`; "
                                   "`signoff train risk` takes --source, --calibration and --c"), 2)
        try:
            print_trained(train_risk(settings, source, calibration, c), settings)
        except SignoffError as exc:
            raise _fail(exc, 2 if isinstance(exc, DataError) else 1) from exc
        return
    if what != "triage":
        raise _fail(ValueError(f"train what? triage or risk, not {what!r}"), 2)
    if calibration != "sigmoid" or c != 0.1:
        raise _fail(ValueError("--calibration and --c only apply to `signoff train risk`"), 2)
    try:
        if file is not None:
            texts, labels = load_labelled_jsonl(file, text_field=text_field, label_field=label_field)
        else:
            texts, labels = _history_from_odoo(settings, limit)
        if limit:
            texts, labels = texts[:limit], labels[:limit]
        report = _train(settings, texts, labels)
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"[green]trained[/] {report.version}: {report.n} examples, {len(report.classes)} classes, "
                  f"{report.seconds:.1f}s, held-out accuracy {report.accuracy:.3f}, ECE {report.ece:.3f}")
    console.print(f"saved to {report.path}")


def _history_from_odoo(settings: Settings, limit: int | None) -> tuple[list[str], list[str]]:
    from signoff.integrations.odoo import connect_reader
    from signoff.sandbox.embedded import odoo_for
    from signoff.tools.tickets import labelled_history

    with odoo_for(settings) as live:
        return labelled_history(connect_reader(live), limit=limit)


#: Below this a model is not worth replacing the current one with; its confidences mean nothing.
MIN_TRAINING_EXAMPLES = 20


def _train(settings: Settings, texts: list[str], labels: list[str], *, require_calibrated: bool = True) -> Any:
    from signoff.guardrails.screens import redact
    from signoff.llm.training import train as fit

    if len(texts) < MIN_TRAINING_EXAMPLES or len(set(labels)) < 2:
        raise DataError(f"need at least {MIN_TRAINING_EXAMPLES} labelled examples over 2+ classes, "
                        f"got {len(texts)} over {len(set(labels))}: the current model is kept")
    # Fit on text as the model will see it at run time: redacted by the same screen.
    texts = [redact(t)[0] for t in texts]
    settings.ensure_dirs()
    with _progress() as progress:
        task = progress.add_task("training", total=100)

        def report(stage: str, fraction: float) -> None:
            progress.update(task, description=stage, completed=int(fraction * 100))

        report_ = fit(texts, labels, settings.models_path, progress=report, require_calibrated=require_calibrated)
    from signoff.guardrails.state import state

    with state(settings) as st:
        st.audit.append(
            "model.trained", report_.version, "cli", {"n": report_.n, "classes": len(report_.classes),
                                                      "accuracy": report_.accuracy, "ece": report_.ece})
    return report_


# --- triage --------------------------------------------------------------------------------------


@app.command()
def triage(
    ticket: Annotated[list[int] | None, typer.Option("--ticket", "-t", help="Ticket id (repeatable).")] = None,
    file: Annotated[Path | None, typer.Option(help="JSONL tickets ({id, text} per line): report only.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many tickets: the oldest open tickets "
                                                          "without a category and without a run yet.")] = None,
) -> None:
    """Triage tickets: classify, route, prioritise, and propose the writes for approval.

    With no option, every open ticket in Odoo without a category is triaged. Each ticket runs once:
    a ticket that already has a run is reported as a duplicate and nothing new happens (--limit skips
    those and takes the next ones that have none). Proposals wait
    for a human in `signoff approvals`; low-confidence tickets go to human triage with the reason.
    """
    from signoff.agents.services import open_runtime
    from signoff.domain import check_odoo_id
    from signoff.tools.tickets import read_ticket_file, untriaged_ticket_ids

    if file is not None and (ticket or limit):
        raise _fail(ValueError("--file reports on the tickets in the file: give it alone, without --ticket or "
                               "--limit"), 2)
    for tid in ticket or []:
        try:
            check_odoo_id(tid, "ticket")
        except ValueError as exc:
            raise _fail(exc, 2) from exc
    settings = _settings()
    try:
        with open_runtime(settings) as rt:
            if file is not None:
                items: list[Any] = read_ticket_file(file)
            elif ticket:
                items = list(dict.fromkeys(ticket))  # a ticket named twice runs once
            else:
                items = untriaged_ticket_ids(rt.reader)
                if limit:  # the next ones to do, not the first ones again (a run's ticket is a duplicate)
                    items = [t for t in items if not rt.runner.status(rt.runner.thread_for(t))[0]]
            if limit:
                items = items[:limit]
            rt.runner.services.classifier.version  # noqa: B018 - load the model (or fail) before the loop
            results = []
            with _progress() as progress:
                task = progress.add_task("triage", total=len(items))
                for item in items:
                    results.append(rt.runner.report(item) if file is not None else rt.runner.run(item))
                    progress.advance(task)
            _print_triage(results)
            posted = rt.odoo_channel.post_pending()
            pending = rt.store.find(states=("pending",))
    except SignoffError as exc:
        raise _fail(exc) from exc
    if posted:
        console.print(f"{posted} approval activit(y/ies) created in Odoo for actions whose channel is odoo")
    if not items:
        console.print("no tickets to triage" + (" in the file" if file is not None else
                                                 " (no open ticket without a category)"))
    if pending:
        console.print(f"\n{len(pending)} proposal(s) wait for a decision: [bold]signoff approvals list[/]")
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def _print_triage(results: list[Any]) -> None:
    table = Table(title="Triage")
    for col in ("ticket", "outcome", "category (conf.)", "team", "priority", "proposals / why a human"):
        table.add_column(col, overflow="fold")
    counts: dict[str, int] = {}
    for r in results:
        t = r.triage
        status = r.status if (t is None or r.status == "duplicate") else t.outcome
        counts[status] = counts.get(status, 0) + 1
        ticket = r.thread_id.rsplit(":", 1)[-1]
        if t is None:
            table.add_row(ticket, f"[red]{status}[/]", "", "", "", r.error or "")
            continue
        note = "; ".join(filter(None, [f"{len(t.proposal_ids)} proposal(s)" if t.proposal_ids else "",
                                       *t.reasons]))
        style = {"proposed": "green", "needs_human": "yellow", "skipped": "dim", "duplicate": "dim",
                 "report": "cyan"}[status]
        table.add_row(ticket, f"[{style}]{status}[/]", f"{t.category.label} ({t.category.confidence:.2f})",
                      t.team, PRIORITY_NAMES[t.priority], note)
    console.print(table)
    console.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                  + ("   (duplicate = this ticket already has a run; nothing new was done)"
                     if "duplicate" in counts else ""))


# --- approvals -----------------------------------------------------------------------------------


def _short(p: Proposal) -> str:
    return p.id[:12]


def _describe(p: Proposal) -> str:
    if p.action.startswith("account."):  # a create: there is no "before"
        a = p.effective_args
        what = f"{a['amount']:,.2f} {a.get('currency', '')}" if "amount" in a else str(a.get("reason", ""))
        return f"create {p.action.split('.', 1)[1]}: {what}, due {a.get('deadline', '?')}"
    key = next(iter(p.effective_args))
    before = p.current.get(key)
    return f"{key}: {'(empty)' if before in (None, False, '') else before} -> {p.effective_args[key]}"


@approvals_app.command("list")
def approvals_list(
    state: Annotated[str, typer.Option(help="pending, approved, executed, rejected, expired, failed, "
                                             "cancelled (any proposal state) or all.")]
    = "pending",
) -> None:
    """List proposals (pending by default; --state failed is the exception queue)."""
    from typing import get_args

    from signoff.domain import ProposalState
    from signoff.guardrails.state import state as open_state

    valid = (*get_args(ProposalState), "all")
    if state not in valid:
        raise _fail(ValueError(f"unknown state {state!r}: use one of {', '.join(valid)}"), 2)
    settings = _settings()
    with open_state(settings) as st:
        rows = st.store.find(states=None if state == "all" else (state,))
    table = Table(title=f"Proposals ({state}): {len(rows)}")
    for col in ("id", "target", "write", "conf.", "state", "approvers"):
        table.add_column(col, overflow="fold")
    now = utcnow()
    overdue = 0
    for p in rows:
        target = str(p.target_id) if p.target_model == "helpdesk.ticket" else f"{p.target_model}({p.target_id})"
        shown: str = p.state
        if p.state == "pending" and p.expires_at is not None and p.expires_at <= now:
            shown, overdue = "pending, [yellow]past its expiry[/]", overdue + 1
        table.add_row(_short(p), target, _describe(p),
                      f"{p.confidence:.2f}" if p.confidence is not None else "rule", shown, p.approver_group)
    console.print(table)
    if overdue:
        console.print(f"{overdue} pending proposal(s) are past their expiry: no decision is accepted any more; "
                      "the server's sweep (or `signoff approvals recover`) marks them expired and ends their runs")
    if state == "pending" and rows:
        console.print(f"decide with: signoff approvals approve ID --as {_approver_hint(settings, rows)}   "
                      "(or: edit ID --as WHO --set key=value, reject ID --as WHO --reason ...)")


def _approver_hint(settings: Settings, rows: list[Proposal]) -> str:
    """``--as`` for the listed proposals: a member of their approver group (or each group by name)."""
    groups = list(dict.fromkeys(p.approver_group for p in rows))
    try:
        from signoff.guardrails.policy import load_policy

        members = load_policy(settings.policy_path).groups
    except (SignoffError, OSError):
        members = {}
    named = [next((m for m in members.get(g, []) if m.startswith("cli:")), f"<a member of {g}>") for g in groups]
    if len(groups) == 1:
        return named[0]
    return "<a member of the proposal's approvers group: " + ", ".join(
        f"{g} -> {n}" for g, n in zip(groups, named, strict=True)) + ">"


@approvals_app.command("show")
def approvals_show(proposal: Annotated[str, typer.Argument(help="Proposal id or a unique prefix.")]) -> None:
    """Show one proposal: the write, why, the evidence, and who decided."""
    from signoff.guardrails.state import state
    from signoff.guardrails.store import resolve_id

    settings = _settings()
    try:
        with state(settings) as st:
            p = st.store.get(resolve_id(st.store, proposal))
    except SignoffError as exc:
        raise _fail(exc) from exc
    e = escape  # stored text (reasons, args, results, Odoo markers like [signoff:p_...]) is shown literally
    lines = [
        f"[bold]{e(p.action)}[/] on {e(p.target_model)}({p.target_id})   state: [bold]{p.state}[/]",
        f"write: {e(p.target_model)}({p.target_id}) {e(_describe(p))}",
        f"why: {e(p.rationale)}",
        f"confidence: {p.confidence:.3f}" if p.confidence is not None else "confidence: explicit rule",
        f"approvers: {e(p.approver_group)}   channel: {e(str(p.channel))}   policy: {e(str(p.policy_version))}   "
        f"model: {e(str(p.model_version))}",
        f"expires: {p.expires_at}",
    ]
    from signoff.guardrails.actions import ACTIONS

    action = ACTIONS.get(p.action)
    editable = getattr(action, "editable", None)
    if p.state == "pending" and action is not None:
        fields = editable if editable is not None else tuple(p.args)
        lines.append("editable: " + e(", ".join(fields)) + "   (signoff approvals edit ID --as WHO --set key=value)")
    for n in p.evidence[:5]:
        if "contribution" in n:  # a renewal proposal: the risk model's drivers
            delta = float(n.get("delta") or 0.0) * 100
            lines.append(f"  driver {float(n['contribution']):+.2f} log-odds ({delta:+.1f} pts): "
                         + e(textwrap.shorten(str(n.get('text') or n.get('label', '')), 160, placeholder=' …')))
        elif "rule" in n:  # a legal review: the clause-policy rule and where the contract says it
            where = ", ".join(f"[{a}:{b}]" for a, b in n.get("spans") or [])
            lines.append(f"  deviation {e(str(n['rule']))}" + (f" at {where}" if where else ""))
        elif "quote" in n:  # a renewal reminder: the contract text it rests on
            a, b = (n.get("span") or [0, 0])[:2]
            lines.append(f"  source [{a}:{b}]: " + e(textwrap.shorten(str(n["quote"]), 140, placeholder=" …")))
        else:
            lines.append(f"  similar ({n.get('similarity', 0):.2f}, {e(str(n.get('label')))}): "
                         + e(textwrap.shorten(str(n.get('text', '')), 100, placeholder=' …')))
    if p.decided_by:
        lines.append(f"decided by {e(p.decided_by)} at {p.decided_at}"
                     + (f": {e(p.decision_reason)}" if p.decision_reason else ""))
    if p.edited_args is not None:
        lines.append(f"edited: {e(str(p.args))} -> {e(str(p.edited_args))} (the rationale above is the agent's, "
                     f"for {e(str(p.args))})")
    if p.result:
        lines.append(f"result: {e(json.dumps(p.result))}")
    if p.error:
        lines.append(f"[red]error: {e(p.error)}[/]")
    console.print(Panel("\n".join(lines), title=p.id))


def _decide(decision: Decision) -> None:
    from signoff.agents.services import open_runtime
    from signoff.guardrails.store import resolve_id

    settings = _settings()
    try:
        with open_runtime(settings) as rt:
            decision.proposal_id = resolve_id(rt.store, decision.proposal_id)
            try:
                p = rt.approvals.decide(decision, reader=rt.reader)
            except AlreadyDecided as exc:
                console.print(f"[yellow]already decided:[/] {escape(str(exc))}; nothing changed", emoji=False)
                raise typer.Exit(3) from exc
            console.print(f"{_short(p)} [bold]{p.state}[/] by {p.decided_by}" + (
                escape(f" with edits: {p.edited_args}") if p.edited_args is not None else ""))
            _note_siblings(rt, p)
            from signoff.agents.renewal import resume_thread
            from signoff.agents.runner import held_run

            with held_run(rt.store, p.thread_id) as mine:  # never resumed by two processes at once
                if not mine:
                    console.print(f"another process (a server worker or a CLI) is resuming {p.thread_id}; "
                                  "it finishes the run (see `signoff audit`)")
                    return
                result = resume_thread(rt, p.thread_id, decision.actor)
            siblings = rt.store.find(thread_id=p.thread_id)
            if result is None:
                left = [x for x in siblings if x.state == "pending"]
                if left:
                    console.print(f"{len(left)} other proposal(s) of {p.thread_id} still pending; "
                                  "the run resumes when all are decided")
                return
            for x in siblings:
                colour = {"executed": "green", "failed": "red"}.get(x.state, "dim")
                console.print(f"  {_short(x)} {x.action}: [{colour}]{x.state}[/]"
                              + (f" ({x.error})" if x.error else ""))
            if any(x.state == "failed" for x in siblings):
                console.print("[red]a write failed[/]: it is in the exception queue "
                              "(signoff approvals list --state failed; retry or cancel)")
                raise typer.Exit(1)
    except SignoffError as exc:
        raise _fail(exc) from exc


def _note_siblings(rt: Any, p: Proposal) -> None:
    """After a category edit, say so when the run's team proposal no longer follows the routing table."""
    if p.action != "ticket.set_category" or p.edited_args is None:
        return
    team, _ = rt.policy.routing.team_for(p.edited_args["category"])
    for x in rt.store.find(thread_id=p.thread_id, states=("pending",)):
        if x.action == "ticket.set_team" and x.args.get("team") != team:
            console.print(f"[yellow]note:[/] {_short(x)} still proposes team {x.args['team']!r}; the routing "
                          f"table says {team!r} for {p.edited_args['category']}: edit or reject it")


@approvals_app.command("approve")
def approvals_approve(proposal: Annotated[str, typer.Argument(help="Proposal id or prefix.")],
                      actor: ApproverOpt) -> None:
    """Approve a proposal. When the run's last proposal is decided, the run resumes and writes once."""
    _decide(Decision(proposal_id=proposal, verdict="approve", actor=actor))


@approvals_app.command("reject")
def approvals_reject(
    proposal: Annotated[str, typer.Argument(help="Proposal id or prefix.")],
    actor: ApproverOpt,
    reason: Annotated[str, typer.Option(help="Why (required).")],
) -> None:
    """Reject a proposal with a reason; nothing is written."""
    _decide(Decision(proposal_id=proposal, verdict="reject", actor=actor, reason=reason))


@approvals_app.command("edit")
def approvals_edit(
    proposal: Annotated[str, typer.Argument(help="Proposal id or prefix.")],
    actor: ApproverOpt,
    set_: Annotated[list[str], typer.Option("--set", help="key=value; repeatable. E.g. category=get_refund on a "
                                            "ticket, amount=300 or deadline=2026-12-20 on a retention offer.")],
    reason: Annotated[str | None, typer.Option(help="Why the change.")] = None,
) -> None:
    """Approve with changed values: only the keys given change, the rest keep their proposed values (see
    `signoff approvals show ID` for the editable fields), and the result is re-validated by the same guardrails.

    Example: signoff approvals edit p_3f2a --as cli:finance --set amount=300 --reason "smaller offer"
    """
    args: dict[str, Any] = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise _fail(ValueError(f"--set needs key=value, got {item!r}"), 2)
        args[key.strip()] = value.strip()
    _decide(Decision(proposal_id=proposal, verdict="edit", actor=actor, args=args, reason=reason))


@approvals_app.command("recover")
def approvals_recover() -> None:
    """Finish what a crash left: resume decided runs, reconcile interrupted writes, expire overdue ones."""
    from signoff.agents.services import open_runtime

    settings = _settings()
    try:
        with open_runtime(settings) as rt:
            from signoff.agents.renewal import renewal_runner, resume_thread

            expired = rt.approvals.expire_due()
            for p in expired:
                resume_thread(rt, p.thread_id, "system:expiry")
            results: list[Any] = rt.runner.recover()
            with renewal_runner(rt) as renewal:
                results += renewal.recover()
            from signoff.agents.contracts import contract_runner

            with contract_runner(rt) as contracts:
                results += contracts.recover()
            failed = rt.store.find(states=("failed",))
            waiting = rt.runner.waiting_on_stale()
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"expired {len(expired)}, resumed {len(results)} run(s); "
                  f"{len(failed)} in the exception queue (signoff approvals list --state failed)")
    if waiting:
        console.print(f"[yellow]{len(waiting)} interrupted write(s) are younger than "
                      f"SIGNOFF_EXECUTOR_STALE_SECONDS={settings.executor_stale_seconds:g}[/]: another process "
                      "may still be writing them; run recover again after that")


@approvals_app.command("sync")
def approvals_sync() -> None:
    """Odoo approvals: post activities for new proposals, pick up the ones marked done or cancelled.

    An action whose policy channel is `odoo` is approved in Odoo: an activity on the ticket, assigned
    to the approver. Mark it Done to approve; Done with feedback "reject: <reason>", or Cancel, to
    reject. The server does this on every sweep; this command does it once, then resumes ready runs.
    """
    from signoff.agents.services import open_runtime

    try:
        with open_runtime(_settings()) as rt:
            polled = rt.odoo_channel.poll()
            resumed = rt.runner.recover()
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"Odoo: posted {polled.posted}, decided {polled.decided}, closed {polled.closed}, "
                  f"refused {polled.refused}; resumed {len(resumed)} run(s)")


@approvals_app.command("retry")
def approvals_retry(proposal: Annotated[str, typer.Argument(help="A failed proposal's id or prefix.")],
                    actor: ApproverOpt) -> None:
    """Execute a failed proposal again (from the exception queue). One that failed because its field changed
    in Odoo since the proposal is written over that change: retry only when that is what you want."""
    from signoff.agents.services import open_runtime
    from signoff.guardrails.store import resolve_id

    try:
        with open_runtime(_settings()) as rt:
            pid = resolve_id(rt.store, proposal)
            rt.approvals.authorise(rt.store.get(pid), actor, verb="retry")
            p = rt.executor.retry(pid, actor)
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"{_short(p)} {p.state}" + (f": {p.error}" if p.error else ""))
    if p.state == "failed":
        raise typer.Exit(1)


@approvals_app.command("cancel")
def approvals_cancel(
    proposal: Annotated[str, typer.Argument(help="A failed proposal's id or prefix.")],
    actor: ApproverOpt,
    reason: Annotated[str, typer.Option(help="Why it will never be written.")],
) -> None:
    """Give up on a failed proposal (it leaves the exception queue, never written)."""
    from signoff.guardrails.approvals import Approvals
    from signoff.guardrails.executor import Executor
    from signoff.guardrails.policy import load_policy
    from signoff.guardrails.state import state
    from signoff.guardrails.store import resolve_id

    settings = _settings()

    def no_writer() -> Any:
        raise AssertionError("cancel never writes")

    try:
        with state(settings) as st:
            store, audit = st.store, st.audit
            pid = resolve_id(store, proposal)
            Approvals(store, audit, load_policy(settings.policy_path)).authorise(store.get(pid), actor,
                                                                                 verb="cancel")
            p = Executor(store, audit, no_writer).cancel(pid, actor, reason)
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"{_short(p)} {p.state}")


# --- audit ---------------------------------------------------------------------------------------


@app.command()
def audit(
    subject: Annotated[str | None, typer.Argument(
        help="A thread (ticket:signoff:42), ticket id or proposal id; an account without its cycle "
             "(account:signoff:12) shows every cycle's run of that account.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print events as JSON lines.")] = False,
) -> None:
    """Show the audit trail of a ticket or proposal (all events without one) and verify the hash chain."""
    from signoff.guardrails.state import state

    settings = _settings()
    broken: SignoffError | None = None
    with state(settings) as st:
        log = st.audit
        if subject and subject.isdigit():
            subject = f"ticket:{settings.odoo_db}:{subject}"
        elif subject and subject.startswith("p_"):
            matches = [p.id for p in st.store.find() if p.id.startswith(subject)]
            subject = matches[0] if len(matches) == 1 else subject
        try:
            n = log.verify()
        except SignoffError as exc:
            broken, n = exc, 0
        events = log.trail(subject)
        if subject and subject.startswith("account:") and subject.count(":") == 2:  # every cycle of the account
            threads = {subject} | {p.thread_id for p in st.store.find() if p.thread_id.startswith(subject + ":")}
            threads |= {e.subject for e in log.trail() if e.subject.startswith(subject + ":")}
            seen = {e.seq: e for t in sorted(threads) for e in log.trail(t)}
            events = [seen[k] for k in sorted(seen)]
        newest = log.trail()[-1].hash[:16] if n else ""
    if subject and not events:
        raise _fail(ValueError(f"no audit events for {subject!r} (a thread like ticket:{settings.odoo_db}:42, a "
                               "ticket id, or a proposal id; `signoff audit` alone shows every event)"), 1)
    if as_json:
        for e in events:
            print(e.model_dump_json())
        if broken:
            raise _fail(broken)
        return
    table = Table(title=f"Audit: {subject or 'all'}")
    cols = ("#", "at", "kind", "actor", "data") if subject else ("#", "at", "kind", "subject", "actor", "data")
    for col in cols:
        table.add_column(col, overflow="fold", ratio=4 if col == "data" else None)
    for e in events:  # Text cells: stored data is shown literally, never read as rich markup
        data = json.dumps(e.data)
        row = [Text(str(e.seq)), Text(e.at.strftime("%m-%d %H:%M:%S")), Text(e.kind), Text(e.actor),
               Text(data if len(data) <= 240 else data[:239] + "…")]
        if not subject:
            row.insert(3, Text(e.subject[:26]))
        table.add_row(*row)
    console.print(table)
    if broken:
        raise _fail(ValueError(f"{broken}: the events above cannot be trusted"))
    console.print(f"[green]hash chain verified[/] ({n} events; the newest is {newest} - "
                  "keep it elsewhere to detect a deleted tail)" if n else "[green]hash chain verified[/] (empty)")


# --- demo ----------------------------------------------------------------------------------------


@app.command()
def demo(
    limit: Annotated[int, typer.Option(help="Triage at most this many new tickets.")] = 30,
) -> None:
    """The whole loop, offline: seed the Odoo stand-in, train, triage, and show what waits for approval.

    Seeds the built-in Odoo stand-in with a SaaS company (tickets from ../shared/data when present),
    fits the triage model on its resolved tickets, triages the new ones, and lists the proposals with
    the commands to approve them. Run it again: nothing is triaged twice.
    """
    from signoff.agents.services import open_runtime
    from signoff.errors import ModelNotTrained
    from signoff.llm.classifier import TextClassifier
    from signoff.tools.tickets import labelled_history, untriaged_ticket_ids

    settings = _settings()
    try:
        with open_runtime(settings) as rt:
            console.rule("1. Odoo")
            console.print(f"Odoo at {rt.settings.odoo_url} (db {rt.settings.odoo_db}), "
                          f"agent login {rt.settings.odoo_login!r} (read-only)")
            texts, labels = labelled_history(rt.reader)
            console.print(f"{len(texts)} resolved tickets with a category = labelled history")
            console.rule("2. Model")
            try:
                model = TextClassifier.load(settings.models_path)
                console.print(f"using trained model {model.version}")
            except ModelNotTrained:
                report = _train(settings, texts, labels, require_calibrated=False)  # the small offline sample too
                console.print(f"trained {report.version} in {report.seconds:.1f}s "
                              f"(held-out accuracy {report.accuracy:.3f}, ECE {report.ece:.3f})")
            console.rule("3. Triage")
            ids = untriaged_ticket_ids(rt.reader, limit=limit)
            results = []
            with _progress() as progress:
                task = progress.add_task("triage", total=len(ids))
                for tid in ids:
                    results.append(rt.runner.run(tid))
                    progress.advance(task)
            _print_triage(results)
            rt.odoo_channel.post_pending()
            pending = rt.store.find(states=("pending",))
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.rule("4. Waiting for a human")
    approvals_list("pending")
    if pending:
        first = pending[0]
        console.print(Panel(
            f"signoff approvals show {_short(first)}\n"
            f"signoff approvals approve {_short(first)} --as cli:lead\n"
            f"signoff approvals reject {_short(first)} --as cli:lead --reason 'wrong category'\n"
            f"signoff audit {first.target_id}",
            title="Next: decide (the paused run resumes and writes to Odoo exactly once)"))


def _mount_risk() -> None:
    from signoff.agents.risk_cli import app as risk_app

    app.add_typer(risk_app, name="risk")


_mount_risk()


def _mount_contracts() -> None:
    from signoff.agents.contracts_cli import app as contracts_app

    app.add_typer(contracts_app, name="contracts")


_mount_contracts()


def _mount_sandbox() -> None:
    from signoff.sandbox.cli import app as sandbox_app

    app.add_typer(sandbox_app, name="sandbox")


_mount_sandbox()


def _mount_llm() -> None:
    from signoff.llm.cli import app as llm_app

    app.add_typer(llm_app, name="llm")


_mount_llm()


def _mount_server() -> None:
    from signoff.server.cli import serve

    app.command("serve")(serve)


_mount_server()


def _mount_evals() -> None:
    from signoff.evals.cli import eval_command

    app.command("eval")(eval_command)


_mount_evals()


def _mount_orchestration() -> None:
    from signoff.server.orchestration_cli import apikeys_app, subscriptions_app

    app.add_typer(apikeys_app, name="apikeys")
    app.add_typer(subscriptions_app, name="subscriptions")


_mount_orchestration()


def _mount_inbox() -> None:
    from signoff.server.inbox_cli import app as inbox_app

    app.add_typer(inbox_app, name="inbox")


_mount_inbox()


def _mount_db() -> None:
    from signoff.guardrails.db_cli import app as db_app

    app.add_typer(db_app, name="db")


_mount_db()

def main() -> None:
    """The console script: typer's app, with no Python traceback for the errors a user can cause."""
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:  # Settings() in a sub-command (serve, risk, contracts, ...): exit 2 as here
        settings = exc.title == "Settings"
        err.print(f"[bold red]error:[/] {_bad_settings(exc) if settings else exc}")
        raise SystemExit(2 if settings else 1) from exc
    except UnicodeDecodeError as exc:
        err.print(f"[bold red]error:[/] a file is not UTF-8 text ({exc.reason} at byte {exc.start})")
        raise SystemExit(1) from exc
    except (OSError, ValueError, OverflowError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(1) from exc
    except SignoffError as exc:  # a command that did not catch it itself (e.g. a bad SIGNOFF_DATABASE_URL)
        err.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2 if isinstance(exc, ConfigError) else 1) from exc


if __name__ == "__main__":
    main()
