"""Triage end to end: the real model, the Odoo stand-in over HTTP, SQLite checkpoints, the CLI in other processes.

Every write is counted in the stand-in's call log, which is what Odoo received over the wire.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import write_policy

from signoff.agents.services import Runtime, open_runtime
from signoff.config import Settings
from signoff.domain import Decision, Prediction
from signoff.errors import AlreadyDecided, InvalidDecision, NotAuthorised
from signoff.llm.classifier import TextClassifier
from signoff.sandbox.odoo import OdooStandIn


def public_data_dir() -> Path:
    return Settings(_env_file=None).public_data_dir  # type: ignore[call-arg]


@pytest.fixture
def triage_settings(settings: Settings, model_dir: Path, tmp_path: Path) -> Settings:
    return settings.model_copy(update={
        "model_dir": model_dir,
        "policy_path": write_policy(tmp_path / "policy.yaml", 0.0),
        "executor_stale_seconds": 0.0,
    })


@pytest.fixture
def rt(triage_settings: Settings) -> Iterator[Runtime]:
    with open_runtime(triage_settings) as runtime:
        yield runtime


def ticket_id(rt: Runtime, ref: str) -> int:
    rows = rt.reader.search_read("helpdesk.ticket", [["ticket_ref", "=", ref]], ["id"])
    assert rows, f"seed has no ticket {ref}"
    return int(rows[0]["id"])


def any_new_ticket(rt: Runtime) -> int:
    from signoff.tools.tickets import untriaged_ticket_ids

    return untriaged_ticket_ids(rt.reader)[0]


def ticket_writes(standin: OdooStandIn) -> list[dict[str, Any]]:
    return [c for c in standin.calls() if c["method"] == "write" and c["model"] == "helpdesk.ticket"
            and c["ok"]]


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({
        "SIGNOFF_DATA_DIR": str(settings.data_dir),
        "SIGNOFF_ODOO_URL": str(settings.odoo_url),
        "SIGNOFF_ODOO_DB": settings.odoo_db,
        "SIGNOFF_MODEL_DIR": str(settings.model_dir),
        "SIGNOFF_POLICY_PATH": str(settings.policy_path),
        "SIGNOFF_EXECUTOR_STALE_SECONDS": "0",
        "SIGNOFF_PUBLIC_DATA_DIR": str(settings.public_data_dir),
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    })
    return env


def signoff(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a separate process, as a person in another terminal would."""
    return subprocess.run([sys.executable, "-m", "signoff.cli", *args], env=cli_env(settings, **extra),
                          capture_output=True, text=True, timeout=120)


def test_ticket_flows_to_pending_proposals_and_pauses(rt: Runtime, odoo_standin: OdooStandIn) -> None:
    tid = any_new_ticket(rt)
    result = rt.runner.run(tid)
    assert result.status == "paused"
    assert result.triage is not None and result.triage.outcome == "proposed"
    proposals = rt.store.find(thread_id=f"ticket:signoff:{tid}")
    assert {p.action for p in proposals} >= {"ticket.set_category", "ticket.set_team"}
    assert all(p.state == "pending" for p in proposals)
    category = next(p for p in proposals if p.action == "ticket.set_category")
    assert category.confidence is not None and category.evidence, "confidence and similar tickets as evidence"
    assert category.policy_version and category.model_version
    assert ticket_writes(odoo_standin) == [], "nothing is written before approval"
    # A second event for the same ticket starts no second run.
    again = rt.runner.run(tid)
    assert again.status == "duplicate"
    assert len(rt.store.find(thread_id=f"ticket:signoff:{tid}")) == len(proposals)


def test_approving_from_another_process_resumes_and_writes_once(
    rt: Runtime, triage_settings: Settings, odoo_standin: OdooStandIn
) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    proposals = rt.store.find(thread_id=f"ticket:signoff:{tid}")
    for p in proposals[:-1]:
        done = signoff(triage_settings, "approvals", "approve", p.id[:12], "--as", "cli:lead")
        assert done.returncode == 0, done.stderr
        assert "still pending" in done.stdout
    assert ticket_writes(odoo_standin) == []
    last = signoff(triage_settings, "approvals", "approve", proposals[-1].id, "--as", "cli:alice")
    assert last.returncode == 0, last.stderr
    writes = ticket_writes(odoo_standin)
    assert len(writes) == len(proposals)
    assert {w["login"] for w in writes} == {"executor"}, "only the executor's credential writes"
    assert all(p.state == "executed" for p in rt.store.find(thread_id=f"ticket:signoff:{tid}"))
    row = rt.reader.read("helpdesk.ticket", [tid], ["category_id", "team_id"])[0]
    category = next(p for p in proposals if p.action == "ticket.set_category")
    assert row["category_id"][1] == category.args["category"]
    # Approving again: told who decided, nothing more written.
    again = signoff(triage_settings, "approvals", "approve", proposals[-1].id, "--as", "cli:lead")
    assert again.returncode == 3 and "already decided" in again.stdout and "cli:alice" in again.stdout
    assert len(ticket_writes(odoo_standin)) == len(proposals)
    kinds = [e.kind for e in rt.audit.trail(f"ticket:signoff:{tid}")]
    for kind in ("ticket.loaded", "ticket.screened", "ticket.classified", "triage.decided", "proposal.created",
                 "proposal.approved", "run.resumed", "execution.intent", "execution.succeeded",
                 "triage.completed"):
        assert kind in kinds
    assert rt.audit.verify() > 0


def test_two_concurrent_approvals_write_once(
    rt: Runtime, triage_settings: Settings, odoo_standin: OdooStandIn
) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    proposals = rt.store.find(thread_id=f"ticket:signoff:{tid}")
    for p in proposals[:-1]:
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:lead"))
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(
            lambda who: signoff(triage_settings, "approvals", "approve", proposals[-1].id, "--as", who),
            ["cli:lead", "cli:alice"],
        ))
    assert sorted(r.returncode for r in runs) == [0, 3], [r.stdout + r.stderr for r in runs]
    writes = ticket_writes(odoo_standin)
    assert len(writes) == len(proposals)
    assert len({json.dumps(w["args"], sort_keys=True) for w in writes}) == len(proposals)


def test_reject_records_the_reason_and_writes_nothing(rt: Runtime, odoo_standin: OdooStandIn) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    thread = f"ticket:signoff:{tid}"
    proposals = rt.store.find(thread_id=thread)
    with pytest.raises(InvalidDecision, match="reason"):
        rt.approvals.decide(Decision(proposal_id=proposals[0].id, verdict="reject", actor="cli:lead"))
    for p in proposals:
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="reject", actor="cli:lead", reason="wrong queue"))
    result = rt.runner.resume_if_ready(thread)
    assert result is not None and result.status == "done"
    assert ticket_writes(odoo_standin) == []
    stored = rt.store.get(proposals[0].id)
    assert stored.state == "rejected" and stored.decision_reason == "wrong queue"
    rejected = [e for e in rt.audit.trail(thread) if e.kind == "proposal.rejected"]
    assert len(rejected) == len(proposals) and rejected[0].data["reason"] == "wrong queue"


def test_cli_shows_stored_text_literally_and_refuses_bad_ids_and_unknown_subjects(
    rt: Runtime, triage_settings: Settings
) -> None:
    """Reasons, args and Odoo markers like [signoff:p_...] are printed as stored (never read as rich markup);
    a ticket id out of range is refused up front (exit 2); an audit subject with no events says so (exit 1)."""
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    p = rt.store.find(thread_id=f"ticket:signoff:{tid}")[0]
    reason = "[dim]dup of [ACME-1][/dim] see [link=x] [signoff:p_123]"
    done = signoff(triage_settings, "approvals", "reject", p.id, "--as", "cli:lead", "--reason", reason,
                   COLUMNS="300")
    assert done.returncode == 0, done.stderr
    shown = signoff(triage_settings, "approvals", "show", p.id, COLUMNS="300")
    assert reason in shown.stdout, shown.stdout
    audited = signoff(triage_settings, "audit", p.id, COLUMNS="400")
    assert "[ACME-1]" in audited.stdout and "[signoff:p_123]" in audited.stdout, audited.stdout
    for bad in ("0", "4294967296"):
        refused = signoff(triage_settings, "triage", "--ticket", bad)
        assert refused.returncode == 2 and "positive integer below 2**31" in refused.stderr, refused.stderr
    for bad in ("0", "-1"):
        refused = signoff(triage_settings, "triage", "--limit", bad)
        assert refused.returncode == 2 and "--limit" in refused.stderr, refused.stderr
    # --limit N takes the next N tickets without a run, not the first ones again as duplicates.
    from signoff.tools.tickets import untriaged_ticket_ids

    def with_runs() -> int:
        return sum(bool(rt.runner.status(rt.runner.thread_for(t))[0]) for t in untriaged_ticket_ids(rt.reader))

    before = with_runs()
    first = signoff(triage_settings, "triage", "--limit", "1", COLUMNS="300")
    second = signoff(triage_settings, "triage", "--limit", "1", COLUMNS="300")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "duplicate" not in first.stdout and "duplicate" not in second.stdout, second.stdout
    assert with_runs() == before + 2, "each --limit 1 triaged a ticket of its own"
    unknown = signoff(triage_settings, "audit", "99999999")
    assert unknown.returncode == 1 and "no audit events for 'ticket:signoff:99999999'" in unknown.stderr.replace(
        "\n", ""), unknown.stderr


def test_edit_is_revalidated_then_written(rt: Runtime, odoo_standin: OdooStandIn) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    thread = f"ticket:signoff:{tid}"
    proposals = rt.store.find(thread_id=thread)
    category = next(p for p in proposals if p.action == "ticket.set_category")
    with pytest.raises(InvalidDecision, match="no helpdesk.ticket.category named"):
        rt.approvals.decide(Decision(proposal_id=category.id, verdict="edit", actor="cli:lead",
                                     args={"category": "not_a_category"}), reader=rt.reader)
    with pytest.raises(InvalidDecision, match=r"unknown field\(s\) priority"):
        rt.approvals.decide(Decision(proposal_id=category.id, verdict="edit", actor="cli:lead",
                                     args={"category": "get_refund", "priority": "3"}), reader=rt.reader)
    target = "get_refund" if category.args["category"] != "get_refund" else "track_refund"
    edited = rt.approvals.decide(Decision(proposal_id=category.id, verdict="edit", actor="cli:lead",
                                          args={"category": target}), reader=rt.reader)
    assert edited.state == "approved" and edited.effective_args == {"category": target}
    for p in proposals:
        if p.id != category.id:
            rt.approvals.decide(Decision(proposal_id=p.id, verdict="reject", actor="cli:lead", reason="no"))
    rt.runner.resume_if_ready(thread)
    assert len(ticket_writes(odoo_standin)) == 1
    assert rt.reader.read("helpdesk.ticket", [tid], ["category_id"])[0]["category_id"][1] == target


@pytest.mark.parametrize("fault", ["after_write", "before_write"])
def test_killed_between_approval_and_write_is_reconciled_with_one_write(
    rt: Runtime, triage_settings: Settings, odoo_standin: OdooStandIn, fault: str
) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    thread = f"ticket:signoff:{tid}"
    proposals = rt.store.find(thread_id=thread)
    for p in proposals[:-1]:
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:lead"))
    crashed = signoff(triage_settings, "approvals", "approve", proposals[-1].id, "--as", "cli:lead",
                      SIGNOFF_FAULT_INJECTION=fault)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    states = [p.state for p in rt.store.find(thread_id=thread)]
    assert "executing" in states, states
    assert len(ticket_writes(odoo_standin)) == (1 if fault == "after_write" else 0)
    recovered = signoff(triage_settings, "approvals", "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert all(p.state == "executed" for p in rt.store.find(thread_id=thread))
    writes = ticket_writes(odoo_standin)
    assert len(writes) == len(proposals), "each approved proposal written exactly once"
    if fault == "after_write":
        assert any(e.kind == "execution.succeeded" and e.data["result"].get("reconciled")
                   for e in rt.audit.trail(thread))
    # Recovering again changes nothing.
    assert signoff(triage_settings, "approvals", "recover").returncode == 0
    assert len(ticket_writes(odoo_standin)) == len(proposals)


def test_below_threshold_yields_no_proposal(triage_settings: Settings, tmp_path: Path,
                                            odoo_standin: OdooStandIn) -> None:
    strict = triage_settings.model_copy(update={"policy_path": write_policy(tmp_path / "strict.yaml", 1.0)})
    with open_runtime(strict) as rt:
        tid = any_new_ticket(rt)
        result = rt.runner.run(tid)
        assert result.status == "done"
        assert result.triage is not None and result.triage.outcome == "needs_human"
        assert "below" in result.triage.reasons[0]
        assert rt.store.find() == []
        assert any(e.kind == "run.needs_human" for e in rt.audit.trail(f"ticket:signoff:{tid}"))
    assert ticket_writes(odoo_standin) == []


def test_per_class_thresholds_gate_the_predicted_class_only(triage_settings: Settings, tmp_path: Path,
                                                             model_dir: Path, odoo_standin: OdooStandIn) -> None:
    """min_confidence_by_class: a listed class uses its own threshold, any other class the action's (1.0)."""
    import yaml

    classes = [str(c) for c in TextClassifier.load(model_dir).classes_]
    path = write_policy(tmp_path / "per-class.yaml", 1.0)
    data = yaml.safe_load(path.read_text())
    data["actions"]["ticket.set_category"]["min_confidence_by_class"] = dict.fromkeys(classes, 0.0)
    data["actions"]["ticket.set_team"]["min_confidence_by_class"] = dict.fromkeys(classes, 0.0)
    path.write_text(yaml.safe_dump(data))
    lenient = triage_settings.model_copy(update={"policy_path": path})
    with open_runtime(lenient) as rt:
        tid = any_new_ticket(rt)
        result = rt.runner.run(tid)
        assert result.triage is not None and result.triage.outcome != "needs_human", result.triage.reasons
        assert rt.store.find(thread_id=f"ticket:signoff:{tid}")
    data["actions"]["ticket.set_category"]["min_confidence_by_class"] = {"no_such_class": 0.0}
    path.write_text(yaml.safe_dump(data))
    with open_runtime(lenient) as rt:
        from signoff.tools.tickets import untriaged_ticket_ids

        other = next(t for t in untriaged_ticket_ids(rt.reader) if t != tid)
        result = rt.runner.run(other)
        assert result.triage is not None and result.triage.outcome == "needs_human"
        assert "below 1.00" in result.triage.reasons[0]
        assert rt.store.find(thread_id=f"ticket:signoff:{other}") == []


def test_injection_is_flagged_and_yields_no_extra_proposal(rt: Runtime) -> None:
    tid = ticket_id(rt, "signoff-injection")
    result = rt.runner.run(tid)
    assert result.triage is not None
    assert result.triage.screen.injection, "the ticket's instructions to the AI are flagged"
    assert result.triage.outcome == "needs_human"
    assert any("prompt injection" in r for r in result.triage.reasons)
    assert rt.store.find() == [], "text that steers the agent gets a human, not proposals"
    assert "urgency cues ignored" in result.triage.priority_reason


def test_unauthorised_approver_is_refused_and_audited(rt: Runtime, triage_settings: Settings) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    p = rt.store.find(thread_id=f"ticket:signoff:{tid}")[0]
    with pytest.raises(NotAuthorised, match="not in approver group"):
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:mallory"))
    via_cli = signoff(triage_settings, "approvals", "approve", p.id, "--as", "cli:nobody")
    assert via_cli.returncode == 1 and "not in approver group" in via_cli.stderr
    other_channel = signoff(triage_settings, "approvals", "approve", p.id, "--as", "slack:U0LEAD")
    assert other_channel.returncode == 2 and "decides as cli:<name>" in " ".join(other_channel.stderr.split())
    assert rt.store.get(p.id).state == "pending"
    refused = [e for e in rt.audit.trail(p.id) if e.kind == "decision.refused"]
    assert [e.actor for e in refused] == ["cli:mallory", "cli:nobody"]
    # Separation of duties: whoever raised a proposal may not decide it.
    rt.store.transition(p.id, ("pending",), requested_by="cli:lead")
    with pytest.raises(NotAuthorised, match="raised this proposal"):
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:lead"))


def test_expired_proposal_is_expired_not_rejected(rt: Runtime) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    thread = f"ticket:signoff:{tid}"
    from signoff.domain import utcnow

    for p in rt.store.find(thread_id=thread):
        rt.store.transition(p.id, ("pending",), expires_at=utcnow())
    first = rt.store.find(thread_id=thread)[0]
    with pytest.raises(AlreadyDecided, match="expired"):
        rt.approvals.decide(Decision(proposal_id=first.id, verdict="approve", actor="cli:lead"))
    expired = rt.approvals.expire_due()
    assert {p.state for p in rt.store.find(thread_id=thread)} == {"expired"}
    assert len(expired) == len(rt.store.find(thread_id=thread)) - 1
    assert rt.runner.resume_if_ready(thread) is not None


class SpyClassifier:
    """The real model, recording exactly what text it was given."""

    def __init__(self, model: TextClassifier) -> None:
        self.model, self.inputs = model, []  # type: ignore[var-annotated]

    @property
    def version(self) -> str:
        return self.model.version

    def predict(self, texts: list[str]) -> list[Prediction]:
        self.inputs.extend(texts)
        return self.model.predict(texts)


def test_pii_never_reaches_the_model(triage_settings: Settings, model_dir: Path) -> None:
    spy = SpyClassifier(TextClassifier.load(model_dir))
    with open_runtime(triage_settings, classifier=spy) as rt:
        tid = ticket_id(rt, "signoff-pii")
        result = rt.runner.run(tid)
    assert spy.inputs, "the model was called"
    seen = "\n".join(spy.inputs)
    for secret in ("dana.whitfield@globex.example", "415 555 0142", "4111 1111 1111 1111", "DE89 3704"):
        assert secret not in seen
    assert "[EMAIL]" in seen and "[CARD]" in seen and "[IBAN]" in seen
    assert result.triage is not None and result.triage.screen.redactions["CARD"] == 1
    assert result.triage.screen.redactions["PHONE"] == 1
    assert all("4111" not in json.dumps(e.data) for e in rt.audit.trail())
    files = [triage_settings.checkpoint_db_path, Path(f"{triage_settings.checkpoint_db_path}-wal")]
    stored = b"".join(f.read_bytes() for f in files if f.exists())
    assert b"[CARD]" in stored, "the checkpoint holds the redacted ticket"
    for secret in (b"dana.whitfield@globex.example", b"4111 1111 1111 1111", b"DE89 3704", b"555 0142"):
        assert secret not in stored, "the checkpointer never stores the raw ticket"


class UnknownLabelClassifier(SpyClassifier):
    """The real model, but sure of a category Odoo does not have (a model trained on someone else's labels)."""

    def predict(self, texts: list[str]) -> list[Prediction]:
        return [p.model_copy(update={"label": "moon_cheese", "confidence": 0.97}) for p in super().predict(texts)]


def test_a_category_odoo_does_not_have_is_never_proposed(triage_settings: Settings, model_dir: Path) -> None:
    with open_runtime(triage_settings, classifier=UnknownLabelClassifier(TextClassifier.load(model_dir))) as rt:
        tid = any_new_ticket(rt)
        result = rt.runner.run(tid)
        assert result.triage is not None and result.triage.outcome == "needs_human"
        assert any("'moon_cheese' is not a helpdesk.ticket.category in Odoo" in r for r in result.triage.reasons)
        assert rt.store.find(thread_id=f"ticket:signoff:{tid}") == [], "no category, and no team routed from it"


def test_odoo_down_fails_the_run_cleanly_and_it_can_be_retried(rt: Runtime, odoo_standin: OdooStandIn) -> None:
    tid = any_new_ticket(rt)
    odoo_standin.stop()
    result = rt.runner.run(tid)
    assert result.status == "failed" and "OdooConnectionError" in (result.error or "")
    assert rt.store.find() == []
    assert any(e.kind == "run.failed" for e in rt.audit.trail(f"ticket:signoff:{tid}"))


def test_two_concurrent_runs_of_one_ticket_triage_it_once(rt: Runtime) -> None:
    tid = any_new_ticket(rt)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: rt.runner.run(tid), range(2)))
    assert sorted(r.status for r in results) == ["duplicate", "paused"]
    decided = [e for e in rt.audit.trail(f"ticket:signoff:{tid}") if e.kind == "triage.decided"]
    assert len(decided) == 1


def test_exception_queue_actions_need_an_approver(rt: Runtime, triage_settings: Settings) -> None:
    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    p = rt.store.find(thread_id=f"ticket:signoff:{tid}")[0]
    rt.store.transition(p.id, ("pending",), state="failed", error="OdooConnectionError: down")
    for args in (["cancel", p.id, "--reason", "x"], ["retry", p.id]):
        refused = signoff(triage_settings, "approvals", *args, "--as", "cli:mallory")
        assert refused.returncode == 1 and "not in approver group" in refused.stderr
    assert rt.store.get(p.id).state == "failed"
    done = signoff(triage_settings, "approvals", "cancel", p.id, "--reason", "not needed", "--as", "cli:lead")
    assert done.returncode == 0 and rt.store.get(p.id).state == "cancelled"
    listed = signoff(triage_settings, "approvals", "list", "--state", "cancelled", COLUMNS="200")
    assert listed.returncode == 0 and p.id[:8] in listed.stdout and "Proposals (cancelled): 1" in listed.stdout
    bogus = signoff(triage_settings, "approvals", "list", "--state", "bogus", COLUMNS="200")
    assert bogus.returncode == 2 and bogus.stdout == "", bogus.stdout
    assert "unknown state 'bogus': use one of proposed, pending, approved" in bogus.stderr
    assert "cancelled" in bogus.stderr and "all" in bogus.stderr


def test_on_postgres_one_ticket_is_proposed_approved_and_written_once(
    triage_settings: Settings, postgres_url: str, odoo_standin: OdooStandIn
) -> None:
    """``SIGNOFF_DATABASE_URL`` set: proposals, audit and the paused run live in Postgres; the approving CLI
    process resumes the run from Postgres's checkpoints; nothing of it touches the SQLite state files."""
    pg_settings = triage_settings.model_copy(update={"database_url": postgres_url})
    with open_runtime(pg_settings) as rt:
        assert type(rt.store).__name__ == "PostgresApprovalStore"
        tid = any_new_ticket(rt)
        assert rt.runner.run(tid).status == "paused"
        thread = f"ticket:signoff:{tid}"
        proposals = rt.store.find(thread_id=thread)
        assert proposals and all(p.state == "pending" for p in proposals)
        assert ticket_writes(odoo_standin) == []
        for p in proposals:  # from another process, as a person in another terminal would
            done = signoff(pg_settings, "approvals", "approve", p.id, "--as", "cli:lead",
                           SIGNOFF_DATABASE_URL=postgres_url)
            assert done.returncode == 0, done.stderr
        again = signoff(pg_settings, "approvals", "approve", proposals[0].id, "--as", "cli:alice",
                        SIGNOFF_DATABASE_URL=postgres_url)
        assert again.returncode != 0, "a second decision is refused"
        writes = ticket_writes(odoo_standin)
        assert len(writes) == len(proposals), "each approved proposal written exactly once"
        assert {w["login"] for w in writes} == {"executor"}
        assert all(p.state == "executed" for p in rt.store.find(thread_id=thread))
        assert rt.runner.status(thread)[1:] == (False, False), "the run finished (resumed from Postgres)"
        kinds = [e.kind for e in rt.audit.trail(thread)]
        assert kinds.count("execution.succeeded") == len(proposals)
        assert rt.audit.verify() >= len(kinds)
    assert not pg_settings.checkpoint_db_path.exists(), "no SQLite checkpoints on Postgres"
    assert not pg_settings.state_db_path.exists() or not sqlite_has_table(pg_settings.state_db_path, "proposals")


def sqlite_has_table(path: Path, table: str) -> bool:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None


def test_a_field_changed_in_odoo_after_the_proposal_is_not_overwritten(rt: Runtime, odoo_standin: OdooStandIn,
                                                                       triage_settings: Settings) -> None:
    """The approver approved "current -> proposed". Someone changes the field in Odoo before the approval: the
    executor (in another process, the CLI) writes nothing and parks the proposal in the exception queue with
    both values; a human's retry from there writes over the change, once."""
    from signoff.integrations.odoo import OdooWriter

    tid = any_new_ticket(rt)
    rt.runner.run(tid)
    category = next(p for p in rt.store.find(thread_id=f"ticket:signoff:{tid}") if p.action == "ticket.set_category")
    other = next(n for n in ("complaint", "get_refund", "track_refund") if n != category.args["category"])
    admin = OdooWriter.connect(odoo_standin.url, triage_settings.odoo_db, "admin", "admin", timeout=5.0)
    other_id = admin.search_read("helpdesk.ticket.category", [["name", "=", other]], ["id"], limit=1)[0]["id"]
    team = next((p for p in rt.store.find(thread_id=f"ticket:signoff:{tid}") if p.action == "ticket.set_team"), None)
    for p in rt.store.find(thread_id=f"ticket:signoff:{tid}", states=("pending",)):
        if p.id == category.id:
            continue  # the run resumes when its last pending decision is made: this one, below
        if team is not None and p.id == team.id:  # the team was routed from the agent's category
            rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:lead"))
        else:
            rt.approvals.decide(Decision(proposal_id=p.id, verdict="reject", actor="cli:lead", reason="not now"))
    admin.write("helpdesk.ticket", [tid], {"category_id": other_id})  # a person, in Odoo
    writes_before = len(ticket_writes(odoo_standin))

    done = signoff(triage_settings, "approvals", "approve", category.id, "--as", "cli:lead")
    assert done.returncode != 0 and "changed in Odoo since the proposal" in " ".join(done.stdout.split()), \
        done.stdout + done.stderr  # the approver is told, at once
    failed = rt.store.get(category.id)
    assert failed.state == "failed" and "ChangedInOdoo" in (failed.error or ""), failed
    assert f"it is now {other!r}" in (failed.error or "") and "not written" in (failed.error or "")
    assert len(ticket_writes(odoo_standin)) == writes_before, "nothing written over the person's change"
    assert rt.reader.read("helpdesk.ticket", [tid], ["category_id"])[0]["category_id"][1] == other
    assert team is not None, "the seeded ticket gets a team proposal too"
    if team is not None:  # nor a team chosen for a category the ticket no longer has
        held = rt.store.get(team.id)
        assert held.state == "failed" and "chosen for category" in (held.error or ""), held.error
        assert f"now {other!r}" in (held.error or "")

    again = signoff(triage_settings, "approvals", "retry", category.id, "--as", "cli:lead")
    assert again.returncode == 0 and "executed" in again.stdout, again.stdout + again.stderr
    assert rt.reader.read("helpdesk.ticket", [tid], ["category_id"])[0]["category_id"][1] == category.args["category"]
    assert len(ticket_writes(odoo_standin)) == writes_before + 1


def test_triage_file_reports_without_odoo_and_refuses_bad_lines(triage_settings: Settings, tmp_path: Path) -> None:
    good = tmp_path / "tickets.jsonl"
    good.write_text('{"id": 7, "text": "I want a refund for my last order"}\n'
                    '{"subject": "where is my package", "description": "it was due on Monday"}\n')
    report = signoff(triage_settings, "triage", "--file", str(good), COLUMNS="300")
    assert report.returncode == 0, report.stdout + report.stderr
    assert "file:7" in report.stdout or " 7 " in report.stdout, report.stdout
    bad_id = tmp_path / "bad.jsonl"
    bad_id.write_text('{"id": "x", "text": "hello"}\n')
    refused = signoff(triage_settings, "triage", "--file", str(bad_id), COLUMNS="300")
    assert refused.returncode == 1 and f"{bad_id}:1" in refused.stderr and "'id' must be" in refused.stderr
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    refused = signoff(triage_settings, "triage", "--file", str(latin), COLUMNS="300")
    assert refused.returncode == 1 and f"{latin} is not UTF-8" in " ".join(refused.stderr.split()), refused.stderr
    for body, says in (('{"id": 3, "text": 42}', "'text' must be a string"),
                       ('{"id": 2, "text": "a"}\n{"text": "b"}', "ticket id 2 is also on line 1")):
        bad = tmp_path / "bad2.jsonl"
        bad.write_text(body + "\n")
        refused = signoff(triage_settings, "triage", "--file", str(bad), COLUMNS="300")
        assert refused.returncode == 1 and says in " ".join(refused.stderr.split()), refused.stderr
    both = signoff(triage_settings, "triage", "--file", str(good), "--ticket", "3")
    assert both.returncode == 2 and "give it alone" in " ".join(both.stderr.split()), both.stderr
