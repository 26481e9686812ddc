"""``signoff risk``: train the renewal-risk model, score accounts (and propose), explain a score."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from signoff.config import Settings, get_settings
from signoff.errors import DataError, SignoffError

app = typer.Typer(
    name="risk",
    help="Renewal risk: train the churn model, score accounts (proposals go to `signoff approvals`), explain.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)
Source = Literal["telco", "odoo"]


def _settings() -> Settings:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return settings


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code)


def train_risk(settings: Settings, source: str = "telco", calibration: str = "sigmoid", c: float = 0.1) -> Any:
    """Fit and save the risk model; returns it. ``telco``: the public Telco dev split; ``odoo``: churned vs
    running subscriptions in Odoo."""
    from signoff.agents.renewal import risk_model_dir
    from signoff.agents.risk_model import RiskModel
    from signoff.tools.accounts import read_telco, telco_paths

    if calibration not in ("sigmoid", "isotonic"):
        raise DataError(f"--calibration must be sigmoid or isotonic, not {calibration!r}")
    if not (0 < c < float("inf")):
        raise DataError(f"--c must be a positive number, not {c!r}")
    if source == "telco":
        dev, _test = telco_paths(settings.public_data_dir)
        _ids, feats, labels = read_telco(dev)
        origin = f"telco:{dev.name}"
    elif source == "odoo":
        from signoff.guardrails.statedb import statedb_for
        from signoff.integrations.odoo import connect_reader
        from signoff.sandbox.embedded import odoo_for
        from signoff.tools.accounts import odoo_labelled_history
        from signoff.tools.contract_terms import ContractTermsStore

        with odoo_for(settings) as live, statedb_for(settings) as statedb:
            feats, labels = odoo_labelled_history(connect_reader(live), contract_terms=ContractTermsStore(statedb),
                                                  db=settings.odoo_db)
        origin = f"odoo:{settings.odoo_db}"
    else:
        raise DataError(f"--source must be telco or odoo, not {source!r}")
    settings.ensure_dirs()
    model = RiskModel.fit(feats, labels, c=c, method=calibration, source=origin)  # type: ignore[arg-type]
    model.save(risk_model_dir(settings))
    return model


def print_trained(model: Any, settings: Settings) -> None:
    from signoff.agents.renewal import risk_model_dir

    h = model.manifest["heldout"]
    console.print(f"[green]trained[/] {model.version} on {model.manifest['n']} accounts ({model.manifest['source']}, "
                  f"churn rate {model.manifest['churn_rate']:.1%}): held-out ROC-AUC {h['roc_auc']:.3f}, "
                  f"Brier {h['brier']:.3f}, ECE {h['ece_before']:.3f} -> {h['ece_after']:.3f} "
                  f"({model.manifest['calibration']}, C={model.manifest['c']:g}; measured on "
                  f"{h.get('measured_on', 'the held-out share')})")
    console.print(f"saved to {risk_model_dir(settings) / model.version}")


@app.command("train")
def train(
    source: Annotated[str, typer.Option(help="telco (the public Telco dev split, read in place) or odoo "
                                             "(Odoo's churned vs running subscriptions).")] = "telco",
    calibration: Annotated[str, typer.Option(help="sigmoid (Platt) or isotonic, fitted on a held-out 25%.")]
    = "sigmoid",
    c: Annotated[float, typer.Option("--c", help="Inverse L2 strength of the logistic regression.")] = 0.1,
) -> None:
    """Fit the calibrated churn model and save a versioned artefact (also: `signoff train risk`)."""
    settings = _settings()
    try:
        model = train_risk(settings, source, calibration, c)
    except DataError as exc:  # bad input: an option, or a malformed Telco row (file:line, column)
        raise _fail(exc, 2) from exc
    except SignoffError as exc:
        raise _fail(exc) from exc
    print_trained(model, settings)


def check_partner_id(pid: int) -> None:
    """A partner id the CLI passes on: positive and below 2**31 (Odoo's ids are 32-bit integers)."""
    from signoff.domain import check_odoo_id

    try:
        check_odoo_id(pid, "partner")
    except ValueError as exc:
        raise _fail(exc, 2) from exc


def _band_style(band: str) -> str:
    return {"high": "bold red", "medium": "yellow", "low": "green"}.get(band, "")


@app.command("score")
def score(
    partner: Annotated[list[int] | None, typer.Option("--partner", "-p", help="Customer (res.partner) id; repeatable.")]
    = None,
    all_: Annotated[bool, typer.Option("--all", help="Every customer with a subscription.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print scores as JSON lines (one object per line).")]
    = False,
) -> None:
    """Score accounts, ranked by churn probability, and propose follow-ups / retention offers for approval.

    Each account runs once per renewal cycle (thread account:<db>:<id>:<cycle>, the cycle being the
    month its subscription's current term ends, else the current month): scoring it again in the same cycle
    shows a fresh score and proposes nothing new; after the term rolls over it runs, and may propose,
    again. Proposals wait in `signoff approvals list`; retention offers go to the approver tier their
    amount picks (policy `tiers`). An action the account already has pending (from any cycle), or had
    rejected within the policy's `risk.cooldown_days`, is not proposed again; the reason is shown.
    A partner without a subscription is answered "no subscription: nothing to score" (no run).
    """
    from signoff.agents.renewal import parse_thread, renewal_runner
    from signoff.agents.services import open_runtime
    from signoff.tools.accounts import account_partner_ids

    if not partner and not all_:
        raise _fail(ValueError("give --partner N (repeatable) or --all"), 2)
    if partner and all_:
        raise _fail(ValueError("--all and --partner are mutually exclusive"), 2)
    for pid in partner or []:
        check_partner_id(pid)
    settings = _settings()
    try:
        with open_runtime(settings) as rt, renewal_runner(rt) as runner:
            runner.services.model.model  # noqa: B018 - load the model (or fail) before the loop
            ids = list(dict.fromkeys(partner or [])) if not all_ else account_partner_ids(rt.reader)
            runs = [runner.run(pid) for pid in ids]
            pending = [p for p in rt.store.find(states=("pending",)) if p.thread_id.startswith("account:")]
    except SignoffError as exc:
        raise _fail(exc) from exc
    skipped = [r for r in runs if r.status == "skipped"]
    failed = [r for r in runs if r.score is None and r.status != "skipped"]
    scored = sorted((r for r in runs if r.score is not None), key=lambda r: -r.score.probability)  # type: ignore[union-attr]
    if as_json:
        for r in scored:
            print(json.dumps({"status": r.status, **r.score.model_dump(mode="json")}), flush=True)  # type: ignore[union-attr]
        for r in skipped:
            print(json.dumps({"status": "skipped", "partner_id": parse_thread(r.thread_id)[1], "reason": r.error}),
                  flush=True)
    else:
        table = Table(title=f"Renewal risk ({len(scored)} accounts)")
        for col in ("account", "churn p (90%)", "band", "conf.", "top drivers", "cycle", "outcome"):
            table.add_column(col, overflow="fold")
        for r in scored:
            s = r.score
            assert s is not None
            drivers = "; ".join(d.text for d in s.drivers[:3])
            outcome: str = "already has a run this cycle" if r.status == "duplicate" else s.outcome
            if s.proposal_ids:
                outcome += f" ({len(s.proposal_ids)} proposal(s))"
            if s.reasons:
                outcome += ("; " if s.proposal_ids else ": ") + "; ".join(s.reasons)
            p90 = f"{s.probability:.2f} ({s.interval[0]:.2f}-{s.interval[1]:.2f})"
            band = f"[{_band_style(s.band)}]{s.band}[/]"
            cycle = r.thread_id.rsplit(":", 1)[-1]
            table.add_row(f"{s.name} ({s.partner_id})", p90, band, f"{s.confidence:.2f}", drivers, cycle, outcome)
        if scored:
            console.print(table)
        for r in skipped:
            console.print(f"partner {parse_thread(r.thread_id)[1]}: {r.error}")
    for r in failed:
        err.print(f"[red]{r.thread_id}: {r.error}[/]")
    if pending and not as_json:
        console.print(f"\n{len(pending)} renewal proposal(s) wait for a decision: [bold]signoff approvals list[/]")
    if failed:
        raise typer.Exit(1)


@app.command("explain")
def explain(partner: Annotated[int, typer.Argument(help="Customer (res.partner) id.")]) -> None:
    """Explain an account's churn probability in words: drivers, what is unknown, where each value came from,
    and the renewal cycle it is in (its current term's end, the run's thread). Reads only: proposes nothing."""
    from signoff.agents.renewal import NO_SUBSCRIPTION, assess, renewal_runner
    from signoff.agents.services import open_runtime
    from signoff.errors import OdooMissingError
    check_partner_id(partner)
    settings = _settings()
    try:
        with open_runtime(settings) as rt, renewal_runner(rt) as runner:
            account = runner.services.account(partner)
            if account.subscription_id is None:
                console.print(f"{account.name} (partner {partner}): {NO_SUBSCRIPTION}")
                return
            snap, s, result = assess(runner.services, partner)
    except OdooMissingError as exc:
        raise _fail(ValueError(f"no partner {partner}")) from exc
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"[bold]{s.name}[/] (partner {s.partner_id}, subscription {snap.subscription_name or 'none'}, "
                  f"{snap.subscription_state or 'no state'}; "
                  + (f"current term ends {snap.term_end}" if snap.term_end else "term end unknown") +
                  f"; run thread {s.thread_id})")
    console.print(f"churn probability [bold]{s.probability:.0%}[/] (90% interval {s.interval[0]:.0%}-"
                  f"{s.interval[1]:.0%}), band [{_band_style(s.band)}]{s.band}[/], confidence {s.confidence:.2f} "
                  f"(the account's data carries {s.coverage:.0%} of the model's signal); model {s.model_version}")
    console.print("\n[bold]Drivers[/] (largest first):")
    from signoff.agents.risk_model import describe

    for d in [d for d in result.drivers if d.contribution != 0.0][:8]:
        console.print(f"  {'+' if d.contribution > 0 else '-'} {describe(d, snap.currency)}")
    unknown = [d for d in result.drivers if d.missing]
    if unknown:
        console.print("\n[bold]Unknown[/] (missing, so no effect unless the model learnt what missing means):")
        for d in unknown:
            console.print(f"  ? {d.label}: {snap.sources.get(d.feature, 'missing')}")
    used = {d.feature for d in result.drivers if d.contribution != 0.0}
    known = [d for d in result.drivers if not d.missing]
    shown = [d for d in known if d.feature in used]
    unused = [d for d in known if d.feature not in used]
    if shown:
        console.print("\n[bold]Known[/] (the value, and where it came from):")
        for d in shown:
            console.print(f"  {d.label} = {_show(snap.features.get(d.feature))}: {snap.sources.get(d.feature, 'Odoo')}")
    if unused:
        console.print("\n[bold]Known but not used[/] (no effect: the training data never had them, or the model "
                      "gives them none; train on Odoo history with `signoff train risk --source odoo`):")
        for d in unused:
            console.print(f"  {d.label} = {_show(snap.features.get(d.feature))}: {snap.sources.get(d.feature, 'Odoo')}")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
