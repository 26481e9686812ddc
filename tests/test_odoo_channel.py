"""The Odoo approval channel, round trip over real sockets: activity posted, marked done / cancelled
by a person logged in to the Odoo stand-in, the decision picked up, the write executed once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ODOO_DB, both_dbs, write_policy

from signoff.agents.services import Runtime, open_runtime
from signoff.config import Settings
from signoff.domain import Decision, Proposal
from signoff.integrations.odoo import OdooWriter
from signoff.sandbox.odoo import OdooStandIn
from signoff.tools.tickets import untriaged_ticket_ids

ALICE_UID, BOB_UID = 5, 6


@pytest.fixture
def rt(settings: Settings, model_dir: Path, tmp_path: Path, serve_db: str,
       request: pytest.FixtureRequest) -> Iterator[Runtime]:
    odoo_settings = settings.model_copy(update={
        "model_dir": model_dir, "policy_path": write_policy(tmp_path / "policy.yaml", 0.0, channel="odoo"),
        "database_url": request.getfixturevalue("postgres_url") if serve_db == "postgres" else None,
    })
    with open_runtime(odoo_settings) as runtime:
        yield runtime


def as_user(standin: OdooStandIn, login: str) -> OdooWriter:
    return OdooWriter.connect(standin.url, ODOO_DB, login, login, timeout=5.0)


def triaged(rt: Runtime) -> list[Proposal]:
    tid = untriaged_ticket_ids(rt.reader)[0]
    rt.runner.run(tid)
    return rt.store.find(thread_id=f"ticket:{ODOO_DB}:{tid}")


def activity_of(standin: OdooStandIn, p: Proposal, *, active: bool | None = True) -> dict[str, Any]:
    domain: list[Any] = [["summary", "like", p.id]]
    if active is not None:
        domain.append(["active", "=", active])
    rows = as_user(standin, "admin").search_read("mail.activity", domain, ["id", "user_id", "res_id", "active"],
                                                 context={"active_test": False})
    assert len(rows) == 1, rows
    return rows[0]


def ticket_writes(standin: OdooStandIn) -> int:
    return sum(1 for c in standin.calls() if c["method"] == "write" and c["model"] == "helpdesk.ticket" and c["ok"])


@both_dbs
def test_approve_in_odoo_round_trip(rt: Runtime, odoo_standin: OdooStandIn) -> None:
    proposals = triaged(rt)
    assert proposals and all(p.channel == "odoo" for p in proposals)
    assert rt.odoo_channel.poll().posted == len(proposals)
    assert rt.odoo_channel.poll().posted == 0, "posting is idempotent"
    alice = as_user(odoo_standin, "alice")
    for p in proposals:
        act = activity_of(odoo_standin, p)
        assert act["user_id"][0] == ALICE_UID and act["res_id"] == p.target_id
        alice.call("mail.activity", "action_feedback", [act["id"]], feedback="looks right")
    assert ticket_writes(odoo_standin) == 0, "nothing is written before the decision is picked up"
    assert rt.sync_odoo() == 1
    states = {p.state for p in rt.store.find(thread_id=proposals[0].thread_id)}
    assert states == {"executed"}
    assert ticket_writes(odoo_standin) == len(proposals)
    decided = rt.store.get(proposals[0].id)
    assert decided.decided_by == f"odoo:{ALICE_UID}"
    assert any(e.kind == "proposal.approved" and e.data["channel"] == "odoo" for e in rt.audit.trail(decided.id))
    rt.sync_odoo()
    assert ticket_writes(odoo_standin) == len(proposals), "polling again writes nothing more"


def test_reject_with_feedback_and_cancel_write_nothing(rt: Runtime, odoo_standin: OdooStandIn) -> None:
    proposals = triaged(rt)
    rt.odoo_channel.poll()
    alice = as_user(odoo_standin, "alice")
    first, *rest = proposals
    alice.call("mail.activity", "action_feedback", [activity_of(odoo_standin, first)["id"]],
               feedback="reject: wrong team")
    for p in rest:
        alice.unlink("mail.activity", [activity_of(odoo_standin, p)["id"]])
    rt.sync_odoo()
    stored = rt.store.get(first.id)
    assert stored.state == "rejected" and stored.decision_reason == "wrong team"
    assert all(rt.store.get(p.id).state == "rejected" for p in rest)
    assert ticket_writes(odoo_standin) == 0


@both_dbs
def test_an_unauthorised_odoo_user_is_refused_and_the_request_reposted(
    rt: Runtime, odoo_standin: OdooStandIn
) -> None:
    p = triaged(rt)[0]
    rt.odoo_channel.poll()
    bob = as_user(odoo_standin, "bob")  # finance, not a support lead
    bob.call("mail.activity", "action_feedback", [activity_of(odoo_standin, p)["id"]])
    result = rt.odoo_channel.poll()
    assert result.refused == 1
    assert rt.store.get(p.id).state == "pending"
    refused = [e for e in rt.audit.trail(p.id) if e.kind == "decision.refused"]
    assert refused and refused[0].actor == f"odoo:{BOB_UID}"
    rt.odoo_channel.poll()
    assert activity_of(odoo_standin, p)["user_id"][0] == ALICE_UID, "a fresh request for a real approver"
    assert ticket_writes(odoo_standin) == 0


def test_decided_elsewhere_closes_the_odoo_activity(rt: Runtime, odoo_standin: OdooStandIn) -> None:
    proposals = triaged(rt)
    rt.odoo_channel.poll()
    for p in proposals:
        rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:lead"))
    assert rt.odoo_channel.poll().closed == len(proposals)
    for p in proposals:
        assert activity_of(odoo_standin, p, active=None)["active"] is False
    rt.runner.recover()
    assert ticket_writes(odoo_standin) == len(proposals)
