"""Renewal risk: features from the Odoo stand-in and from Telco, the calibrated model and its drivers,
the graph's proposals and approver tiers, exactly-once activity creation, and the CLI.

The Odoo stand-in runs on a real socket; every create is counted in its call log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import both_dbs

from signoff.agents.renewal import RenewalRunner, renewal_runner
from signoff.agents.risk_model import RiskModel, binary_ece
from signoff.agents.services import Runtime, open_runtime
from signoff.config import Settings
from signoff.domain import Decision, utcnow
from signoff.errors import InvalidDecision, ModelError, NotAuthorised
from signoff.guardrails.actions import get_action
from signoff.guardrails.policy import DEFAULT_POLICY_PATH
from signoff.integrations.odoo import InMemoryOdoo, ReadOnlyOdoo
from signoff.sandbox.odoo import OdooStandIn
from signoff.tools.accounts import (
    FEATURE_NAMES,
    account_partner_ids,
    add_months,
    coverage,
    load_account,
    read_telco,
    telco_features,
    telco_paths,
)


def public_data_dir() -> Path:
    return Settings(_env_file=None).public_data_dir  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def telco() -> tuple[list[Any], list[int], list[Any], list[int]]:
    dev, test = telco_paths(public_data_dir())
    if not dev.exists():
        pytest.skip("the public Telco data is not beside the checkout")
    _, fd, yd = read_telco(dev)
    _, ft, yt = read_telco(test)
    return fd, yd, ft, yt


@pytest.fixture(scope="session")
def risk_models(tmp_path_factory: pytest.TempPathFactory, telco: tuple[Any, ...]) -> Path:
    """A models dir holding a risk model fitted on the Telco dev split (as `signoff train risk` does)."""
    fd, yd, _, _ = telco
    out = tmp_path_factory.mktemp("risk-models")
    RiskModel.fit(fd, yd, source="telco:dev").save(out / "risk")
    return out


def policy_file(path: Path, **risk: Any) -> Path:
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    policy["risk"].update(risk)
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture
def risk_settings(settings: Settings, risk_models: Path, tmp_path: Path) -> Settings:
    # Every live account gets a follow-up and an offer here, so all three approver tiers show up (a
    # Telco-trained model puts most Odoo accounts in the low band: their MRR is far outside Telco's range).
    offer = {"bands": ["low", "medium", "high"], "months_of_mrr": 1.0, "round_to": 10, "max_amount": None}
    return settings.model_copy(update={
        "model_dir": risk_models, "executor_stale_seconds": 0.0,
        "policy_path": policy_file(tmp_path / "policy.yaml", offer=offer, followup_bands=["low", "medium", "high"]),
    })


@pytest.fixture
def rt(risk_settings: Settings) -> Iterator[Runtime]:
    with open_runtime(risk_settings) as runtime:
        yield runtime


@pytest.fixture
def runner(rt: Runtime) -> Iterator[RenewalRunner]:
    with renewal_runner(rt) as r:
        yield r


def partner_id(reader: Any, name: str) -> int:
    rows = reader.search_read("res.partner", [["name", "=", name]], ["id"], limit=1)
    assert rows, name
    return int(rows[0]["id"])


def creates(standin: OdooStandIn, model: str) -> list[dict[str, Any]]:
    return [c for c in standin.calls() if c["ok"] and c["method"] == "create" and c["model"] == model]


def notes(standin: OdooStandIn) -> list[dict[str, Any]]:
    return [c for c in standin.calls() if c["ok"] and c["method"] == "message_post"]


# --- features ------------------------------------------------------------------------------------


def test_features_from_odoo_are_read_and_missing_data_is_explicit(odoo_reader: ReadOnlyOdoo) -> None:
    globex = load_account(odoo_reader, partner_id(odoo_reader, "Globex Corporation"))
    f = globex.features
    assert set(f) == set(FEATURE_NAMES)
    assert f["overdue_invoices"] == 2.0 and f["overdue_amount"] == 2610.0 and f["unpaid_invoices"] == 2.0
    assert f["recurring_monthly"] == 1305.0 and f["seats"] == 45.0 and f["plan"] == "business"
    assert f["commitment"] == "monthly" and f["paused"] == 0.0
    assert f["tenure_months"] is not None and 5.5 < float(f["tenure_months"]) < 6.5
    assert f["tickets_90d"] is not None and f["unresolved_tickets"] is not None, "tickets of its contacts count"
    # Never silently zero: what Odoo does not have is None, with the reason.
    assert f["failed_payments"] == 2.0, "both overdue invoices had a declined card charge"
    assert "payment.transaction" in globex.sources["failed_payments"]
    stark = load_account(odoo_reader, partner_id(odoo_reader, "Stark Logistics"))
    assert stark.features["failed_payments"] == 1.0 and stark.features["overdue_invoices"] == 0.0, \
        "a declined charge that was paid on retry still counts"
    assert load_account(odoo_reader, partner_id(odoo_reader, "Acme Corp")).features["failed_payments"] == 0.0
    for name in ("auto_pay", "product_line", "addons_count", "notice_days_left", "auto_renew"):
        assert f[name] is None, name
        assert globex.sources[name].startswith("missing"), (name, globex.sources[name])
    assert "contracts agent" in globex.sources["notice_days_left"]
    assert globex.owner_uid and globex.subscription_id and globex.subscription_state == "3_progress"
    soylent = load_account(odoo_reader, partner_id(odoo_reader, "Soylent Foods"))
    assert soylent.churned and soylent.features["days_to_end"] is None
    assert len(account_partner_ids(odoo_reader)) == 12


def test_telco_columns_map_onto_the_same_features(telco: tuple[Any, ...]) -> None:
    row = {"tenure": "34", "MonthlyCharges": "56.95", "Contract": "One year", "PaymentMethod": "Mailed check",
           "PaperlessBilling": "No", "InternetService": "DSL", "OnlineSecurity": "Yes", "OnlineBackup": "No",
           "DeviceProtection": "Yes", "TechSupport": "No", "StreamingTV": "No", "StreamingMovies": "No"}
    f = telco_features(row)
    assert f["tenure_months"] == 34.0 and f["recurring_monthly"] == 56.95 and f["commitment"] == "annual"
    assert f["auto_pay"] == 0.0 and f["payment_method"] == "paper" and f["paperless_billing"] == 0.0
    assert f["addons_count"] == 2.0 and f["support_plan"] == 0.0 and f["product_line"] == "dsl"
    assert f["security_addon"] == 1.0 and f["streaming_addons"] == 0.0
    for name in ("tickets_90d", "overdue_invoices", "seats", "plan", "notice_days_left"):
        assert f[name] is None, f"{name}: Telco lacks it, so it is missing, not 0"
    assert telco_features({**row, "Contract": "", "tenure": ""})["commitment"] is None
    fd, yd, ft, yt = telco
    assert (len(fd), sum(yd), len(ft), sum(yt)) == (4888, 1297, 2155, 572)
    cov = coverage(fd)
    assert cov["tenure_months"] == 1.0 and cov["tickets_90d"] == 0.0


def test_a_malformed_telco_row_names_file_line_and_column(tmp_path: Path) -> None:
    from signoff.errors import DataError

    header = "customerID,tenure,MonthlyCharges,Contract,Churn"
    good = tmp_path / "good.csv"
    good.write_text(f"{header}\n1-A,12,30.5,One year,No\n2-B,,,Month-to-month,Yes\n")
    ids, feats, labels = read_telco(good)
    assert ids == ["1-A", "2-B"] and labels == [0, 1]
    assert feats[0]["tenure_months"] == 12.0 and feats[1]["tenure_months"] is None  # empty: missing, not an error
    for cell, column, value in (("lots,30.5", "tenure", "lots"), ("12,$30", "MonthlyCharges", "$30"),
                                ("nan,30.5", "tenure", "nan"), ("12,inf", "MonthlyCharges", "inf")):
        bad = tmp_path / "bad.csv"
        bad.write_text(f"{header}\n1-A,12,30.5,One year,No\n2-B,{cell},Month-to-month,Yes\n")
        with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}:3: {column} must be a (finite )?number, "
                                            rf"got '{re.escape(value)}'$"):
            read_telco(bad)
    short = tmp_path / "short.csv"  # a row with fewer cells than the header: missing values, not a crash
    short.write_text(f"{header}\n1-A,12\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(short))}:2: Churn must be Yes or No"):
        read_telco(short)


def test_cli_train_risk_on_a_malformed_telco_file_is_exit_2_with_file_and_line(
    settings: Settings, tmp_path: Path
) -> None:
    dev, _test = telco_paths(public_data_dir())
    if not dev.exists():
        pytest.skip("the public Telco data is not beside the checkout")
    lines = dev.read_text().splitlines()[:50]
    header = lines[0].split(",")
    row = lines[9].split(",")
    row[header.index("tenure")] = "lots"
    lines[9] = ",".join(row)
    public = tmp_path / "public"
    (public / "churn").mkdir(parents=True)
    (public / "churn" / dev.name).write_text("\n".join(lines) + "\n")
    for args in (("train", "risk"), ("risk", "train")):
        result = cli(settings, *args, SIGNOFF_PUBLIC_DATA_DIR=str(public))
        assert result.returncode == 2, (args, result.stderr)
        assert f"{public / 'churn' / dev.name}:10: tenure must be a number, got 'lots'" in result.stderr
        assert "Traceback" not in result.stderr and "could not convert" not in result.stderr


# --- model ---------------------------------------------------------------------------------------


def test_model_is_calibrated_additive_and_versioned(telco: tuple[Any, ...], tmp_path: Path) -> None:
    fd, yd, ft, yt = telco
    model = RiskModel.fit(fd[::3], yd[::3])  # a small slice: ~1,600 rows
    p = model.predict_proba(ft[:1000])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yt[:1000], p) > 0.80
    assert binary_ece(p, yt[:1000]) < 0.06
    assert abs(p.mean() - np.mean(yt[:1000])) < 0.04
    # Explanations are exact: the contributions add up to the logit.
    logit = model._logit(ft[:5])
    for row, z in zip(model.score(ft[:5]), logit, strict=True):
        assert abs(sum(d.contribution for d in row.drivers) + model.intercept - z) < 1e-3
        assert 0 < row.confidence <= 1 and row.interval[0] <= row.probability <= row.interval[1]
        assert all(d.contribution == 0 for d in row.drivers if d.feature == "tickets_90d"), "never learnt"
    # Versioned by the data: same data, same version; the artefact round-trips and is checked.
    path = model.save(tmp_path / "risk")
    again = RiskModel.load(tmp_path / "risk")
    assert again.version == model.version == RiskModel.fit(fd[::3], yd[::3]).version
    assert np.allclose(again.predict_proba(ft[:50]), model.predict_proba(ft[:50]))
    (path / "model.json").write_text((path / "model.json").read_text().replace('"intercept": ', '"intercept": 1'))
    with pytest.raises(ModelError, match="sha256"):
        RiskModel.load(tmp_path / "risk")


def test_model_version_hashes_the_options_and_corrupt_artefacts_say_retrain(
    telco: tuple[Any, ...], tmp_path: Path
) -> None:
    import hashlib
    import json

    fd, yd, _, _ = telco
    base = RiskModel.fit(fd[::3], yd[::3])
    versions = {base.version, RiskModel.fit(fd[::3], yd[::3], c=1.0).version,
                RiskModel.fit(fd[::3], yd[::3], method="isotonic").version,
                RiskModel.fit(fd[::3], yd[::3], seed=1).version}
    assert len(versions) == 4, "C, calibration and the split are part of the version"
    from signoff.agents.risk_cli import train_risk
    from signoff.errors import DataError

    with pytest.raises(DataError, match="--c must be a positive number"):
        train_risk(Settings(_env_file=None), c=0.0)  # type: ignore[call-arg]
    held = base.manifest["heldout"]
    assert "not fitted on" not in held["measured_on"] and "other half" in held["measured_on"]
    assert 0 <= held["ece_after"] < 0.1
    path = base.save(tmp_path / "risk")
    (path / "manifest.json").write_text("[]")
    with pytest.raises(ModelError, match="retrain"):
        RiskModel.load(tmp_path / "risk")
    body = json.dumps({"format": 1, "version": base.version})  # tampered, with a matching sha
    (path / "model.json").write_text(body)
    sha = hashlib.sha256(body.encode()).hexdigest()
    (path / "manifest.json").write_text(json.dumps({"files": {"model.json": sha}}))
    with pytest.raises(ModelError, match="retrain"):
        RiskModel.load(tmp_path / "risk")
    (path / "model.json").write_text("[]")
    (path / "manifest.json").write_text(json.dumps({"files": {"model.json": hashlib.sha256(b"[]").hexdigest()}}))
    with pytest.raises(ModelError, match="retrain"):
        RiskModel.load(tmp_path / "risk")


def test_scores_rank_and_explain_odoo_accounts(runner: RenewalRunner) -> None:
    from signoff.agents.renewal import assess

    svc = runner.services
    _, acme, result = assess(svc, partner_id(svc.reader, "Acme Corp"))
    assert acme.band in ("low", "medium", "high") and acme.drivers
    assert acme.coverage < 1.0, "an Odoo account lacks the Telco-only features"
    assert "product_line" in acme.missing and "tickets_90d" not in acme.missing
    top = acme.drivers[0]
    assert top.text and ("raises" in top.text or "lowers" in top.text)
    assert any(d.feature == "product_line" and d.contribution == 0 and d.missing for d in result.drivers)


def test_contract_terms_from_the_contracts_agent_become_risk_features(
    rt: Runtime, runner: RenewalRunner, odoo_writer: Any, risk_settings: Settings
) -> None:
    """The contracts agent analyses a subscription's contract in Odoo; the renewal agent then reads the notice
    deadline and the auto-renewal it found, names where they came from, and other accounts stay missing."""
    import base64

    from test_contracts import CONTRACT, KeywordModel

    from signoff.agents.contracts import contract_runner

    svc = runner.services
    acme = partner_id(rt.reader, "Acme Corp")
    before = svc.account(acme)
    assert before.features["notice_days_left"] is None and before.features["auto_renew"] is None
    assert "no contract of sale.order" in before.sources["notice_days_left"]
    att = odoo_writer.create("ir.attachment", {
        "name": "acme-msa.txt", "res_model": "sale.order", "res_id": before.subscription_id,
        "mimetype": "text/plain", "datas": base64.b64encode(CONTRACT.encode()).decode()})
    today = date.today()
    with contract_runner(rt, model=KeywordModel(), today=today) as contracts:
        _status, summary = contracts.run(att)
    assert summary is not None and summary.notice_deadline is not None
    deadline = date.fromisoformat(summary.notice_deadline)  # rolled forward by the yearly auto-renewal
    assert today <= deadline <= today + timedelta(days=366)

    after = svc.account(acme)
    assert after.features["notice_days_left"] == float((deadline - today).days)
    assert after.features["auto_renew"] == 1.0
    assert "acme-msa.txt" in after.sources["auto_renew"] and deadline.isoformat() in after.sources["notice_days_left"]
    other = svc.account(partner_id(rt.reader, "Initech"))
    assert other.features["auto_renew"] is None and other.sources["auto_renew"].startswith("missing")
    # The renewal run reads them too (its load step), and `risk explain` names the source.
    run = runner.run(acme)
    assert run.score is not None and "notice_days_left" not in run.score.missing
    explained = cli(risk_settings, "risk", "explain", str(acme))
    assert explained.returncode == 0, explained.stderr
    assert "acme-msa.txt" in explained.stdout.replace("\n", "")


# --- the graph, approvals and the executor ---------------------------------------------------------


def test_graph_proposes_followup_and_offer_with_the_tier_the_amount_picks(
    rt: Runtime, runner: RenewalRunner, odoo_standin: OdooStandIn
) -> None:
    runs = {r.score.name: r for r in (runner.run(pid) for pid in account_partner_ids(rt.reader))
            if r.score is not None}
    assert len(runs) == 12
    assert runs["Soylent Foods"].score.outcome == "churned" and not runs["Soylent Foods"].score.proposal_ids  # type: ignore[union-attr]
    offers = {p.target_id: p for p in rt.store.find() if p.action == "account.retention_offer"}
    by_name = {}
    for name in ("Initech", "Globex Corporation", "Acme Corp"):
        sub = load_account(rt.reader, partner_id(rt.reader, name)).subscription_id
        by_name[name] = offers[sub]  # type: ignore[index]
    assert (by_name["Initech"].args["amount"], by_name["Initech"].approver_group) == (140.0, "cs-leads")
    assert (by_name["Globex Corporation"].args["amount"], by_name["Globex Corporation"].approver_group) == (
        1300.0, "finance")
    assert (by_name["Acme Corp"].args["amount"], by_name["Acme Corp"].approver_group) == (6600.0, "cfo")
    followups = [p for p in rt.store.find() if p.action == "account.csm_followup"]
    assert followups and all(p.target_model == "res.partner" and p.approver_group == "cs-leads" for p in followups)
    assert all(p.state == "pending" and p.thread_id.startswith("account:signoff:") for p in rt.store.find())
    assert creates(odoo_standin, "mail.activity") == [] and notes(odoo_standin) == [], "nothing before approval"
    # A second run for an account proposes nothing new.
    again = runner.run(partner_id(rt.reader, "Initech"))
    assert again.status == "duplicate" and again.score is not None
    assert len([p for p in rt.store.find() if p.action == "account.retention_offer"]) == len(offers)


def test_term_end_rolls_forward_by_the_plan_period_and_falls_back_to_the_month() -> None:
    from signoff.agents.renewal import cycle_for, parse_thread, scoring_period
    from signoff.tools.accounts import AccountSnapshot, add_months, current_term_end

    today = date(2026, 12, 4)
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28) and add_months(date(2026, 11, 30), 3) == date(
        2027, 2, 28)
    # Odoo's next invoice date still ahead: that is the term's end.
    assert current_term_end(today, anchor=date(2026, 12, 10), period_months=1.0) == date(2026, 12, 10)
    # A stale anchor rolls forward by whole periods; a term starting today ends a period later.
    assert current_term_end(today, anchor=date(2025, 3, 10), period_months=1.0) == date(2026, 12, 10)
    assert current_term_end(today, anchor=date(2025, 3, 4), period_months=1.0) == date(2027, 1, 4)
    assert current_term_end(today, anchor=date(2020, 3, 10), period_months=12.0) == date(2027, 3, 10)
    # A fixed end date inside the term ends it; nothing known: no term.
    assert current_term_end(today, anchor=date(2026, 3, 10), period_months=12.0, end=date(2027, 1, 1)) == date(
        2027, 1, 1)
    assert current_term_end(today, anchor=None, period_months=None) is None
    snap = AccountSnapshot(partner_id=7, name="x", features={})
    assert cycle_for(snap, today) == scoring_period(today) == "2026-12"
    snap.term_end = "2027-01-04"
    assert cycle_for(snap, today) == "2027-01", "the month the term ends"
    snap.term_end = "2027-01-05"
    assert cycle_for(snap, today) == "2027-01", "moving the next invoice date by a day keeps the cycle"
    assert parse_thread("account:signoff:7:2027-01-04") == ("signoff", 7, "2027-01-04")
    assert parse_thread("account:signoff:7") == ("signoff", 7, None), "a run from before cycles still parses"
    with pytest.raises(ValueError):
        parse_thread("ticket:signoff:7")


def test_one_run_per_renewal_cycle_same_cycle_twice_is_one_run_next_cycle_is_new(
    rt: Runtime, runner: RenewalRunner, odoo_standin: OdooStandIn
) -> None:
    from signoff.agents.renewal import resume_thread

    pid = partner_id(rt.reader, "Initech")
    snap = load_account(rt.reader, pid)
    sub = rt.reader.read("sale.order", [snap.subscription_id], ["next_invoice_date"])[0]
    assert snap.term_end == sub["next_invoice_date"], "the current term ends at the next invoice"
    term_end = date.fromisoformat(snap.term_end)

    first = runner.run(pid)
    assert first.status == "paused" and first.thread_id == f"account:signoff:{pid}:{term_end.isoformat()[:7]}"
    assert runner.current_thread(pid) == first.thread_id
    proposals = rt.store.find(thread_id=first.thread_id)
    assert {p.action for p in proposals} == {"account.csm_followup", "account.retention_offer"}
    # Same cycle again (even on its last day): one run, nothing new proposed.
    runner.services.today = term_end - timedelta(days=1)
    again = runner.run(pid)
    assert (again.status, again.thread_id) == ("duplicate", first.thread_id)
    assert again.score is not None and again.score.thread_id == first.thread_id
    assert again.score.proposal_ids == first.score.proposal_ids  # type: ignore[union-attr]
    assert len(rt.store.find()) == len(proposals)
    # The term rolled over: a new run in a new thread, with its own proposals; the first is untouched (its
    # proposals expired here: a pending one would block the same action in the next cycle).
    for p in proposals:
        rt.approvals.expire(p.id)
    runner.services.today = term_end
    nxt = runner.run(pid)
    assert nxt.status == "paused" and nxt.thread_id != first.thread_id
    assert nxt.thread_id == f"account:signoff:{pid}:{add_months(term_end, 1).isoformat()[:7]}"
    new = rt.store.find(thread_id=nxt.thread_id)
    assert {p.action for p in new} == {"account.csm_followup", "account.retention_offer"}
    assert not {p.id for p in new} & {p.id for p in proposals}
    assert runner.run(pid).status == "duplicate" and len(rt.store.find()) == 2 * len(proposals)
    # Each cycle's run resumes through the account: routing on its own (server and CLI use resume_thread).
    for p in new:
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:finance"
                                     if p.approver_group == "finance" else "cli:cslead"))
    done = resume_thread(rt, nxt.thread_id, "cli:cslead")
    assert done is not None and done.status == "done"
    assert {p.state for p in rt.store.find(thread_id=nxt.thread_id)} == {"executed"}
    assert {p.state for p in rt.store.find(thread_id=first.thread_id)} == {"expired"}
    assert len(creates(odoo_standin, "mail.activity")) == 2, "one activity per approved proposal of the new cycle"
    kinds = [e.kind for e in rt.audit.trail(nxt.thread_id)]
    assert "account.loaded" in kinds and "risk.completed" in kinds


def test_unauthorised_tier_is_refused_and_edits_cannot_jump_tiers(rt: Runtime, runner: RenewalRunner) -> None:
    pid = partner_id(rt.reader, "Acme Corp")
    thread = runner.run(pid).thread_id
    offer = next(p for p in rt.store.find(thread_id=thread) if p.action == "account.retention_offer")
    assert offer.approver_group == "cfo"
    with pytest.raises(NotAuthorised, match="not in approver group 'cfo'"):
        rt.approvals.decide(Decision(proposal_id=offer.id, verdict="approve", actor="cli:cslead"))
    glob = partner_id(rt.reader, "Globex Corporation")
    fin = next(p for p in rt.store.find(thread_id=runner.run(glob).thread_id) if p.action == "account.retention_offer")
    with pytest.raises(InvalidDecision, match="needs approver group 'cfo'"):
        rt.approvals.decide(Decision(proposal_id=fin.id, verdict="edit", actor="cli:finance",
                                     args={**fin.args, "amount": 9000}))
    edited = rt.approvals.decide(Decision(proposal_id=fin.id, verdict="edit", actor="cli:finance",
                                          args={**fin.args, "amount": 1000}))
    assert edited.effective_args["amount"] == 1000.0 and edited.state == "approved"
    assert rt.store.get(offer.id).state == "pending"


def test_edit_merges_over_the_proposal_and_checks_currency_deadline_and_tier(
    rt: Runtime, runner: RenewalRunner, risk_settings: Settings, odoo_standin: OdooStandIn
) -> None:
    """An edit changes only the keys given (CLI, REST, inbox, Slack all go through Approvals.check_edit)."""
    import json

    glob = partner_id(rt.reader, "Globex Corporation")
    snap = load_account(rt.reader, glob)
    thread = runner.run(glob).thread_id
    offer = next(p for p in rt.store.find(thread_id=thread) if p.action == "account.retention_offer")
    followup = next(p for p in rt.store.find(thread_id=thread) if p.action == "account.csm_followup")
    assert offer.approver_group == "finance" and offer.args["owner_uid"] == snap.owner_uid
    check = rt.approvals.check_edit
    today = date.today()
    merged = check(followup, {"deadline": (today + timedelta(days=1)).isoformat()})
    assert {k: merged[k] for k in ("reason", "drivers", "owner_uid")} == {
        k: followup.args[k] for k in ("reason", "drivers", "owner_uid")}
    refusals = {
        "currency cannot be edited": {"currency": "EUR"},
        "drivers cannot be edited": {"drivers": "made up"},
        "in the past": {"deadline": (today - timedelta(days=1)).isoformat()},
        "more than 366 days ahead": {"deadline": (today + timedelta(days=400)).isoformat()},
        "YYYY-MM-DD": {"deadline": "next week"},
        "needs approver group 'cfo'": {"amount": "9000"},
        "amount must be positive": {"amount": "-1"},
        "owner_uid must be a user id": {"owner_uid": 5.9},
        "positive whole number": {"owner_uid": True},
        "got '-3'": {"owner_uid": "-3"},
    }
    for message, args in refusals.items():
        with pytest.raises(InvalidDecision, match=message):
            check(offer, args)
    assert check(offer, {"currency": offer.args["currency"]})["amount"] == offer.args["amount"], "unchanged: fine"
    # The inbox form and the Slack modal offer only the editable fields (the rest are merged back in).
    from signoff.integrations.slack import edit_modal
    from signoff.server.inbox import _edit_fields

    assert [f["name"] for f in _edit_fields(offer)] == ["amount", "deadline", "reason", "owner_uid"]
    assert json.loads(edit_modal(offer, "C1", "1.0")["private_metadata"])["arg"] == "amount"
    # A lower amount is a lower tier: finance (the higher authority) may still approve it. Through the CLI.
    rt.approvals.decide(Decision(proposal_id=followup.id, verdict="approve", actor="cli:cslead"))
    edited = cli(risk_settings, "approvals", "edit", offer.id[:14], "--as", "cli:finance", "--set", "amount=300",
                 "--reason", "smaller offer")
    assert edited.returncode == 0, edited.stdout + edited.stderr
    done = rt.store.get(offer.id)
    assert done.state == "executed", done
    assert done.effective_args == {**offer.args, "amount": 300.0}, "owner, reason, drivers, currency kept"
    act = rt.reader.search_read("mail.activity", [["summary", "ilike", f"[signoff:{offer.id}]"]],
                                ["user_id", "summary", "note"])
    assert len(act) == 1 and "Retention offer: 300.00" in act[0]["summary"]
    assert act[0]["user_id"][0] == snap.owner_uid, "the account owner's To-Do, not the executor's"
    assert "Drivers:" in act[0]["note"] or "drivers" in act[0]["note"].lower()


def test_cycle_is_stable_and_pending_or_rejected_actions_are_not_proposed_again(
    rt: Runtime, runner: RenewalRunner, odoo_writer: Any
) -> None:
    pid = partner_id(rt.reader, "Initech")
    snap = load_account(rt.reader, pid)
    term_end = date.fromisoformat(snap.term_end or "")
    first = runner.run(pid)
    offer = next(p for p in rt.store.find(thread_id=first.thread_id) if p.action == "account.retention_offer")
    rt.approvals.decide(Decision(proposal_id=offer.id, verdict="reject", actor="cli:cslead", reason="too generous"))
    # Moving the next invoice date by a day inside the month: the same cycle, so the same run.
    moved = term_end + timedelta(days=-1 if term_end.day > 27 else 1)
    odoo_writer.write("sale.order", [snap.subscription_id], {"next_invoice_date": moved.isoformat()})
    assert runner.current_thread(pid) == first.thread_id
    assert runner.run(pid).status == "duplicate"
    # Across a month boundary (a new cycle): the pending follow-up and the offer rejected just now block both.
    runner.services.today = moved
    nxt = runner.run(pid)
    assert nxt.thread_id != first.thread_id and nxt.score is not None
    assert nxt.score.proposal_ids == [] and not rt.store.find(thread_id=nxt.thread_id)
    assert nxt.score.outcome == "skipped", "a skipped repeat is not a case for a human"
    text = " | ".join(nxt.score.reasons)
    assert "account.csm_followup not proposed again" in text and "still pending" in text
    assert "account.retention_offer not proposed again" in text and "too generous" in text and "cooldown" in text
    # Once the follow-up is decided and the cooldown (policy risk.cooldown_days, 30) is over: proposed again.
    rt.approvals.decide(Decision(proposal_id=first.score.proposal_ids[0], verdict="reject",  # type: ignore[union-attr]
                                 actor="cli:cslead", reason="called already"))
    runner.services.today = moved + timedelta(days=31)
    later = runner.run(pid)
    assert later.status == "paused" and later.score is not None
    assert {p.action for p in rt.store.find(thread_id=later.thread_id)} == {
        "account.csm_followup", "account.retention_offer"}


def test_due_date_stays_inside_the_term_and_a_paused_term_without_invoice_is_the_month(
    rt: Runtime, runner: RenewalRunner, odoo_writer: Any
) -> None:
    from signoff.agents.renewal import cycle_for

    pid = partner_id(rt.reader, "Initech")
    snap = load_account(rt.reader, pid)
    term_end = date.fromisoformat(snap.term_end or "")
    runner.services.today = term_end - timedelta(days=3)
    run = runner.run(pid)
    deadlines = {p.action: p.args["deadline"] for p in rt.store.find(thread_id=run.thread_id)}
    assert deadlines and set(deadlines.values()) == {(term_end - timedelta(days=1)).isoformat()}, deadlines
    odoo_writer.write("sale.order", [snap.subscription_id], {"subscription_state": "4_paused",
                                                             "next_invoice_date": False})
    paused = load_account(rt.reader, pid, today=date(2026, 12, 4))
    assert paused.subscription_state == "4_paused" and paused.term_end is None
    assert cycle_for(paused, date(2026, 12, 4)) == "2026-12"


def test_partner_without_subscription_is_not_scored_and_has_no_run(
    rt: Runtime, runner: RenewalRunner, risk_settings: Settings
) -> None:
    from signoff.agents.renewal import NO_SUBSCRIPTION

    accounts = set(account_partner_ids(rt.reader))
    others = [int(r["id"]) for r in rt.reader.search_read("res.partner", [], ["id"]) if int(r["id"]) not in accounts]
    bare = [p for p in others if load_account(rt.reader, p).subscription_id is None]
    assert bare
    events = len(rt.audit.trail())
    for pid in bare[:3]:
        run = runner.run(pid)
        assert (run.status, run.error, run.score) == ("skipped", NO_SUBSCRIPTION, None)
        assert runner.status(run.thread_id)[0] == {}, "no checkpointed run"
    assert len(rt.audit.trail()) == events and rt.store.find() == []
    out = cli(risk_settings, "risk", "score", "-p", str(bare[0]))
    assert out.returncode == 0 and NO_SUBSCRIPTION in out.stdout, out.stdout + out.stderr
    explained = cli(risk_settings, "risk", "explain", str(bare[0]))
    assert explained.returncode == 0 and NO_SUBSCRIPTION in explained.stdout


def test_cli_score_validates_partner_ids_and_prints_json_lines(rt: Runtime, risk_settings: Settings) -> None:
    import json

    for bad in ("0", "-5", "99999999999999999999"):
        out = cli(risk_settings, "risk", "score", "-p", bad)
        assert out.returncode == 2 and f"no partner {bad}" in out.stderr.replace("\n", ""), out.stderr
        assert "Traceback" not in out.stderr
    missing = cli(risk_settings, "risk", "score", "-p", "9999")
    assert missing.returncode == 1 and "no partner 9999" in missing.stderr and "Traceback" not in missing.stderr
    assert "OdooMissingError" not in missing.stderr
    both = cli(risk_settings, "risk", "score", "--all", "-p", "1")
    assert both.returncode == 2 and "mutually exclusive" in both.stderr
    pid = partner_id(rt.reader, "Initech")
    twice = cli(risk_settings, "risk", "score", "-p", str(pid), "-p", str(pid), "--json")
    assert twice.returncode == 0, twice.stderr
    lines = twice.stdout.strip().splitlines()
    assert len(lines) == 1, "repeated -p is scored once, one JSON object per line"
    assert json.loads(lines[0])["partner_id"] == pid
    audit = cli(risk_settings, "audit", f"account:signoff:{pid}")
    assert audit.returncode == 0 and "account.loaded" in audit.stdout, "a thread prefix: every cycle"


def test_approval_creates_exactly_one_activity_even_twice_or_after_a_crash(
    rt: Runtime, runner: RenewalRunner, odoo_standin: OdooStandIn
) -> None:
    pid = partner_id(rt.reader, "Initech")
    thread = runner.run(pid).thread_id
    proposals = rt.store.find(thread_id=thread)
    assert {p.action for p in proposals} == {"account.csm_followup", "account.retention_offer"}
    for p in proposals:
        actor = "cli:cslead"
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor=actor))
    done = runner.resume_if_ready(thread, actor="cli:cslead")
    assert done is not None and done.status == "done"
    assert all(p.state == "executed" for p in rt.store.find(thread_id=thread))
    assert len(creates(odoo_standin, "mail.activity")) == 2 and len(notes(odoo_standin)) == 2
    assert {c["login"] for c in creates(odoo_standin, "mail.activity")} == {"executor"}
    offer = next(p for p in proposals if p.action == "account.retention_offer")
    acts = rt.reader.search_read("mail.activity", [["summary", "ilike", f"[signoff:{offer.id}]"]],
                                 ["res_model", "res_id", "summary", "user_id"])
    assert len(acts) == 1 and acts[0]["res_model"] == "sale.order"
    assert "Retention offer: 140.00 USD" in acts[0]["summary"]
    assert acts[0]["user_id"], "assigned to the account owner"
    # Executed again (a node re-run): the stored result, nothing created.
    rt.executor.execute(offer.id)
    # A crash left it "executing": the sweep reconciles by the marker, without a second create.
    rt.store.transition(offer.id, ("executed",), state="executing", executing_since=utcnow())
    reconciled = rt.executor.execute(offer.id)
    assert reconciled.state == "executed" and reconciled.result and reconciled.result.get("reconciled")
    # Even the action applied twice directly looks its marker up first.
    action = get_action("account.retention_offer")
    writer = rt.executor.writer
    assert action.apply(writer, offer.target_id, offer.effective_args, marker_id=offer.id)["created"] == []
    assert len(creates(odoo_standin, "mail.activity")) == 2 and len(notes(odoo_standin)) == 2


def test_completed_activity_is_not_recreated() -> None:
    """Odoo 17 deletes a done activity; its done message still carries the marker."""
    odoo = InMemoryOdoo.seeded(n_history=5, n_new=1, n_contracts=0)
    action = get_action("account.csm_followup")
    partner = partner_id(odoo, "Initech")
    args = action.validate({"reason": "churn risk high", "deadline": "2030-01-01"}, odoo)
    result = action.apply(odoo, partner, args, marker_id="p_test")
    assert result["created"] == ["activity", "note"]
    odoo.call("mail.activity", "action_feedback", [result["activity"]], feedback="called them")
    assert not odoo.search_read("mail.activity", [["id", "=", result["activity"]]], ["id"])
    assert action.is_applied(odoo, partner, args, marker_id="p_test")
    assert action.apply(odoo, partner, args, marker_id="p_test")["created"] == []
    with pytest.raises(InvalidDecision):
        action.validate({"reason": "x", "deadline": "tomorrow"})


# --- CLI -----------------------------------------------------------------------------------------


def cli(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({
        "SIGNOFF_DATA_DIR": str(settings.data_dir), "SIGNOFF_ODOO_URL": str(settings.odoo_url),
        "SIGNOFF_ODOO_DB": settings.odoo_db, "SIGNOFF_MODEL_DIR": str(settings.model_dir),
        "SIGNOFF_POLICY_PATH": str(settings.policy_path), "SIGNOFF_EXECUTOR_STALE_SECONDS": "0",
        "SIGNOFF_PUBLIC_DATA_DIR": str(settings.public_data_dir), "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "200", **extra,
    })
    return subprocess.run([sys.executable, "-m", "signoff.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_trains_scores_all_explains_and_approves_once_after_a_crash(
    risk_settings: Settings, tmp_path: Path, odoo_standin: OdooStandIn
) -> None:
    settings = risk_settings.model_copy(update={"model_dir": tmp_path / "cli-models"})
    refused = cli(settings, "train", "risk", "--limit", "5")
    assert refused.returncode == 2 and "only apply to `signoff train triage`" in refused.stderr
    trained = cli(settings, "train", "risk", "--calibration", "sigmoid", "--c", "0.1")
    assert trained.returncode == 0, trained.stderr
    assert "trained rk1-" in trained.stdout and "ECE" in trained.stdout and "C=0.1" in trained.stdout
    scored = cli(settings, "risk", "score", "--all")
    assert scored.returncode == 0, scored.stderr
    assert "Renewal risk (12 accounts)" in scored.stdout and "Globex Corporation" in scored.stdout
    assert "signoff approvals list" in scored.stdout
    listed = cli(settings, "approvals", "list")
    assert listed.returncode == 0 and "retention_offer" in listed.stdout and "cfo" in listed.stdout
    assert "cfo -> cli:cfo" in listed.stdout and "finance -> cli:finance" in listed.stdout, listed.stdout
    with open_runtime(settings) as rt:
        pid = partner_id(rt.reader, "Initech")
        explained = cli(settings, "risk", "explain", str(pid))
        assert explained.returncode == 0, explained.stderr
        assert "churn probability" in explained.stdout and "Unknown" in explained.stdout
        assert "not built yet" not in explained.stdout and "sale.order.recurring_monthly" in explained.stdout
        drivers = explained.stdout.split("Drivers", 1)[1].split("Unknown", 1)[0]
        unused = explained.stdout.split("Known but not used", 1)[-1] if "Known but not used" in explained.stdout else ""
        assert not any(line.strip()[2:].split(" = ")[0] in unused for line in drivers.splitlines() if " = " in line), \
            "a driver is never listed as unused"
        with renewal_runner(rt) as r:
            thread = r.current_thread(pid)
        assert f"run thread {thread}" in explained.stdout.replace("\n", "")
        offer = next(p for p in rt.store.find(thread_id=thread) if p.action == "account.retention_offer")
        shown = cli(settings, "approvals", "show", offer.id[:14])
        assert shown.returncode == 0 and "driver +" in shown.stdout and "similar (" not in shown.stdout, shown.stdout
        assert "editable: amount, deadline, owner_uid, reason" in shown.stdout
        others = [p for p in rt.store.find(thread_id=thread) if p.id != offer.id]
        for p in others:
            rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:cslead"))
    crashed = cli(settings, "approvals", "approve", offer.id[:14], "--as", "cli:cslead",
                  SIGNOFF_FAULT_INJECTION="after_write")
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    recovered = cli(settings, "approvals", "recover")
    assert recovered.returncode == 0, recovered.stderr
    with open_runtime(settings) as rt:
        mine = rt.store.find(thread_id=thread)
        assert {p.state for p in mine} == {"executed"}
        # The run's first write was interrupted after it reached Odoo: reconciled by its marker, not redone.
        assert any((p.result or {}).get("reconciled") for p in mine)
    for p in mine:
        made = [c for c in creates(odoo_standin, "mail.activity") if p.id in str(c["args"])]
        assert len(made) == 1, f"one activity for {p.action} despite the crash"


# --- server --------------------------------------------------------------------------------------


def risk_server(start_server: Any, model_dir: Path, risk_models: Path, risk_settings: Settings,
                tmp_path: Path) -> Any:
    """A live server with the triage and the risk models, the risk policy, approvals in the inbox."""
    models = tmp_path / "models-with-risk"
    models.mkdir()
    for entry in model_dir.iterdir():
        (models / entry.name).symlink_to(entry)
    (models / "risk").symlink_to(risk_models / "risk")
    return start_server(channel="inbox", settings_update={"model_dir": models,
                                                          "policy_path": risk_settings.policy_path})


def test_server_starts_one_renewal_run_per_cycle_and_shows_it(
    start_server: Any, model_dir: Path, risk_models: Path, risk_settings: Settings, tmp_path: Path
) -> None:
    """POST /runs for an account names its cycle's thread; a repeat is a duplicate of the same run."""
    from conftest import wait_for

    from signoff.server.apikeys import ApiKeyStore

    live = risk_server(start_server, model_dir, risk_models, risk_settings, tmp_path)
    _, key = ApiKeyStore(live.svc.rt.statedb).create("n8n", ["start", "read"])
    auth = {"Authorization": f"Bearer {key}"}
    pid = partner_id(live.svc.rt.reader, "Initech")
    term_end = load_account(live.svc.rt.reader, pid).term_end
    assert term_end
    body = {"agent": "renewal", "input": {"partner_id": pid}}
    first = live.http.post(live.url + "/runs", json=body, headers=auth)
    assert first.status_code == 202 and first.json()["status"] == "accepted", first.text
    thread = first.json()["thread_id"]
    assert thread == f"account:signoff:{pid}:{term_end[:7]}"

    def settled() -> dict[str, Any] | None:
        view = live.http.get(f"{live.url}/runs/{thread}", headers=auth).json()
        return view if view["state"] == "paused" else None

    view = wait_for(settled, 30, "paused renewal run")
    assert isinstance(view, dict) and view["agent"] == "renewal" and view["outcome"]["band"]
    assert {p["action"] for p in view["proposals"]} == {"account.csm_followup", "account.retention_offer"}
    again = live.http.post(live.url + "/runs", json=body, headers=auth)
    assert again.status_code == 200 and again.json()["status"] == "duplicate" and again.json()["thread_id"] == thread
    assert len(live.svc.rt.store.find()) == len(view["proposals"]), "the same cycle proposes nothing new"
    # A REST edit changes only the key given (Approvals.check_edit merges it over the proposal's args).
    offer = next(p for p in live.svc.rt.store.find(thread_id=thread) if p.action == "account.retention_offer")
    deadline = (date.today() + timedelta(days=3)).isoformat()
    refused = live.api("POST", f"/api/proposals/{offer.id}/decision",
                       json={"verdict": "edit", "actor": "cli:cslead", "args": {"currency": "EUR"}})
    assert refused.status_code == 422 and "currency cannot be edited" in refused.text, refused.text
    for bad in (5.9, True, "5x"):  # never truncated to a user id and then written
        refused = live.api("POST", f"/api/proposals/{offer.id}/decision",
                           json={"verdict": "edit", "actor": "cli:cslead", "args": {"owner_uid": bad}})
        assert refused.status_code == 422 and "owner_uid must be a user id" in refused.text, refused.text
    assert live.svc.rt.store.get(offer.id).state == "pending"
    edited = live.api("POST", f"/api/proposals/{offer.id}/decision",
                      json={"verdict": "edit", "actor": "cli:cslead", "args": {"deadline": deadline}})
    assert edited.status_code == 200, edited.text
    assert live.svc.rt.store.get(offer.id).effective_args == {**offer.args, "deadline": deadline}


def test_runs_checks_partner_ids_as_the_cli_does_and_skips_a_partner_without_subscription(
    start_server: Any, model_dir: Path, risk_models: Path, risk_settings: Settings, tmp_path: Path
) -> None:
    """POST /runs refuses what the CLI refuses (one validator), with a 422 naming the rule; a partner with no
    subscription answers 200 ``skipped`` with the reason, no thread and no links (no dead run link)."""
    from signoff.agents.renewal import NO_SUBSCRIPTION
    from signoff.server.apikeys import ApiKeyStore

    live = risk_server(start_server, model_dir, risk_models, risk_settings, tmp_path)
    _, key = ApiKeyStore(live.svc.rt.statedb).create("n8n", ["start", "read"])
    auth = {"Authorization": f"Bearer {key}"}

    def start(body: dict[str, Any], **headers: str) -> Any:
        return live.http.post(live.url + "/runs", json=body, headers={**auth, **headers})

    events = len(live.svc.rt.audit.trail())
    for bad in (2**32, 2**31, 0, -5):
        refused = start({"agent": "renewal", "input": {"partner_id": bad}})
        assert refused.status_code == 422, refused.text
        assert f"no partner {bad}: a partner id is a positive integer below 2**31" in refused.text, refused.text
    ticket = start({"agent": "triage", "input": {"ticket_id": 2**31}})
    assert ticket.status_code == 422 and "no ticket 2147483648" in ticket.text, ticket.text
    out = cli(risk_settings, "risk", "score", "-p", str(2**32))
    assert out.returncode == 2, out.stderr
    assert "no partner 4294967296: a partner id is a positive integer below 2**31" in out.stderr.replace("\n", "")

    bare = [p for p in (int(r["id"]) for r in live.svc.rt.reader.search_read("res.partner", [], ["id"]))
            if p not in set(account_partner_ids(live.svc.rt.reader))
            and load_account(live.svc.rt.reader, p).subscription_id is None]
    assert 1 in bare, "the company itself has no subscription"
    skipped = start({"agent": "renewal", "input": {"partner_id": 1}}, **{"Idempotency-Key": "n8n-exec-1"})
    assert skipped.status_code == 200, skipped.text
    assert skipped.json() == {"status": "skipped", "thread_id": None, "agent": "renewal", "links": {},
                              "reason": NO_SUBSCRIPTION}
    replayed = start({"agent": "renewal", "input": {"partner_id": 1}}, **{"Idempotency-Key": "n8n-exec-1"})
    assert replayed.status_code == 200 and replayed.json() == skipped.json()
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert len(live.svc.rt.audit.trail()) == events and live.svc.rt.store.find() == [], "no run, nothing audited"
    for _ in range(2):  # a partner Odoo does not have: refused at once, every time, nothing started or audited
        missing = start({"agent": "renewal", "input": {"partner_id": 999999}})
        assert missing.status_code == 422 and "no partner 999999 in Odoo" in missing.text, missing.text
    assert len(live.svc.rt.audit.trail()) == events
    accepted = start({"agent": "renewal", "input": {"partner_id": partner_id(live.svc.rt.reader, "Initech")}})
    assert accepted.status_code == 202 and accepted.json()["reason"] is None, accepted.text
    view = live.http.get(live.url + accepted.json()["links"]["run"], headers=auth)
    assert view.status_code == 200, view.text


@both_dbs
def test_sweep_reconciles_an_account_runs_interrupted_write_without_a_second_activity(
    start_server: Any, model_dir: Path, risk_models: Path, risk_settings: Settings, tmp_path: Path,
    odoo_standin: OdooStandIn
) -> None:
    """An ``account:`` run's proposal left ``executing`` after its run ended (killed after the write, before it
    was marked) is finished by the server's sweep: read back by its marker, no second activity."""
    from conftest import wait_for

    live = risk_server(start_server, model_dir, risk_models, risk_settings, tmp_path)
    pid = partner_id(live.svc.rt.reader, "Initech")
    thread = live.api("POST", "/runs", json={"agent": "renewal", "input": {"partner_id": pid}}).json()["thread_id"]
    wait_for(lambda: live.api("GET", f"/runs/{thread}").json()["state"] == "paused", 30, "paused renewal run")
    proposals = live.svc.rt.store.find(thread_id=thread)
    for p in proposals:
        decided = live.api("POST", f"/api/proposals/{p.id}/decision",
                           json={"verdict": "approve", "actor": "cli:cslead"})
        assert decided.status_code == 200, decided.text
    store = live.svc.rt.store
    assert {p.state for p in store.find(thread_id=thread)} == {"executed"}
    offer = next(p for p in proposals if p.action == "account.retention_offer")
    store.transition(offer.id, ("executed",), state="executing", executing_since=utcnow() - timedelta(seconds=61))
    swept = live.api("POST", "/api/sweep").json()
    assert (swept["resumed"], swept["recovered"], swept["waiting"]) == (0, 1, 0), swept
    assert store.get(offer.id).state == "executed" and (store.get(offer.id).result or {}).get("reconciled")
    for p in proposals:
        made = [c for c in creates(odoo_standin, "mail.activity") if p.id in str(c["args"])]
        assert len(made) == 1, f"one activity for {p.action}"
    assert live.api("POST", "/api/sweep").json()["recovered"] == 0
