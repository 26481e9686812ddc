"""One set of assertions, two adapters: the real client + HTTP stand-in, and InMemoryOdoo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from signoff.errors import (
    OdooAccessError,
    OdooInternalError,
    OdooMissingError,
    OdooValidationError,
    ReadOnlyViolation,
)
from signoff.integrations.odoo import InMemoryOdoo, OdooReader, OdooWriter, OdooWriterPort, ReadOnlyOdoo
from signoff.sandbox.odoo import OdooStandIn


class Twin:
    """What a test needs from either adapter: a writer (executor), a reader (agent), another user."""

    def __init__(
        self, writer: OdooWriter, reader: ReadOnlyOdoo, as_user: Callable[[str], OdooWriter]
    ) -> None:
        self.writer, self.reader, self.as_user = writer, reader, as_user


@pytest.fixture(params=["standin", "memory"])
def twin(request: pytest.FixtureRequest) -> Twin:
    if request.param == "standin":
        standin: OdooStandIn = request.getfixturevalue("odoo_standin")

        def login(name: str) -> OdooWriter:
            return OdooWriter.connect(standin.url, "signoff", name, name)

        return Twin(login("executor"), ReadOnlyOdoo.connect(standin.url, "signoff", "agent", "agent"), login)
    fake: InMemoryOdoo = request.getfixturevalue("memory_odoo")
    return Twin(fake, fake.reader(), fake.as_user)


def test_ports_are_satisfied(twin: Twin) -> None:
    assert isinstance(twin.writer, OdooWriterPort)
    assert isinstance(twin.reader, OdooReader)


def test_same_seed(twin: Twin) -> None:
    r = twin.reader
    assert r.search_count("helpdesk.ticket", []) == 48
    assert r.search_count("helpdesk.ticket", [["category_id", "=", False]]) == 8
    assert r.search_count("res.partner", [["is_company", "=", True], ["customer_rank", ">", 0]]) == 12
    assert r.search_count("helpdesk.ticket.category", []) >= 20
    assert r.search_count("ir.attachment", [["res_model", "=", "sale.order"]]) == 1
    teams = r.search_read("helpdesk.ticket.team", [], ["name"], order="sequence")
    assert [t["name"] for t in teams] == ["Billing", "Orders & Shipping", "Accounts", "Customer Care"]


def test_domains(twin: Twin) -> None:
    r = twin.reader
    rows = r.search_read(
        "res.partner", ["|", ["name", "ilike", "acme"], ["name", "=ilike", "hoo%"]], ["name"], order="name"
    )
    assert [x["name"] for x in rows] == ["Acme Corp", "Hooli"]  # name, not display_name
    billing = r.search_read("helpdesk.ticket", [["team_id.name", "=", "Billing"]], ["category_id"])
    assert billing and all(x["category_id"] for x in billing)
    in_plans = r.search_read("sale.order", [["plan_id.name", "in", ["Starter", "Business"]]], ["plan_id"])
    assert len(in_plans) == 8 and {x["plan_id"][1] for x in in_plans} == {"Starter", "Business"}
    assert r.search_count("sale.order", ["!", ["plan_id.name", "in", ["Starter", "Business"]]]) == 4
    first = r.search_read("helpdesk.ticket", [], ["id"], order="id", limit=2, offset=1)
    assert [x["id"] for x in first] == [2, 3]
    assert r.search_count("helpdesk.ticket", [["name", "like", "Ignore all previous"]]) == 1
    assert r.search_count("helpdesk.ticket", [["name", "not ilike", "ignore all previous"]]) == 47


def test_reads_and_errors(twin: Twin) -> None:
    r = twin.reader
    [acme] = r.search_read("res.partner", [["name", "=", "Acme Corp"]], ["id", "display_name", "child_ids"])
    [contact] = r.read("res.partner", acme["child_ids"], ["parent_id", "display_name"])
    assert contact["parent_id"] == [acme["id"], "Acme Corp"]
    assert contact["display_name"] == "Acme Corp, Wile Coyote"
    with pytest.raises(OdooMissingError):
        r.read("helpdesk.ticket", [10_000], ["name"])
    with pytest.raises(OdooValidationError):
        r.search_count("no.such.model", [])
    with pytest.raises(ReadOnlyViolation):
        r.call("helpdesk.ticket", "write", [1], {"priority": "3"})  # type: ignore[attr-defined]
    with pytest.raises(OdooInternalError):
        twin.writer.call("helpdesk.ticket", "no_such_method")


def test_writes(twin: Twin) -> None:
    w = twin.writer
    [ticket] = w.search_read("helpdesk.ticket", [["ticket_ref", "=", "signoff-outage"]], ["id", "stage_id"])
    solved = w.search_read("helpdesk.ticket.stage", [["name", "=", "Solved"]], ["id"])[0]["id"]
    assert w.write("helpdesk.ticket", [ticket["id"]], {"priority": "3", "stage_id": solved})
    [after] = w.read("helpdesk.ticket", [ticket["id"]], ["priority", "stage_id", "closed", "closed_date"])
    assert after["priority"] == "3" and after["stage_id"] == [solved, "Solved"]
    assert after["closed"] is True and after["closed_date"]
    msg = w.message_post("helpdesk.ticket", ticket["id"], "<b>done</b>")
    assert w.read("mail.message", [msg], ["body"])[0]["body"] == "&lt;b&gt;done&lt;/b&gt;"
    tag = w.create("helpdesk.ticket.tag", {"name": "twin"})
    w.write("helpdesk.ticket", [ticket["id"]], {"tag_ids": [[4, tag]]})
    assert tag in w.read("helpdesk.ticket", [ticket["id"]], ["tag_ids"])[0]["tag_ids"]
    with pytest.raises(OdooValidationError):
        w.write("helpdesk.ticket", [ticket["id"]], {"name": False})
    with pytest.raises(OdooInternalError):
        w.write("helpdesk.ticket", [ticket["id"]], {"priority": "9"})
    with pytest.raises(OdooAccessError):
        twin.as_user("agent").write("helpdesk.ticket", [ticket["id"]], {"priority": "0"})
    assert w.read("helpdesk.ticket", [ticket["id"]], ["priority"])[0]["priority"] == "3"


def test_activity_approval_round_trip(twin: Twin) -> None:
    w = twin.writer
    order = w.search_read("sale.order", [["partner_id.name", "=", "Globex Corporation"]], ["id"])[0]["id"]
    approval = w.search_read("mail.activity.type", [["name", "=", "Signoff approval"]], ["id"])[0]["id"]
    activity = w.create(
        "mail.activity",
        {
            "res_model": "sale.order",
            "res_id": order,
            "activity_type_id": approval,
            "summary": "Approve retention offer",
            "date_deadline": "2030-01-01",
        },
    )
    [row] = w.read("mail.activity", [activity], ["res_model_id", "res_name", "state", "user_id"])
    assert row["res_model_id"][1] == "Sales Order" and row["state"] == "planned"
    assert row["user_id"][0] == w.uid
    alice = twin.as_user("alice")
    message = alice.call("mail.activity", "action_feedback", [activity], feedback="ok, go")
    assert isinstance(message, int)
    [done] = w.search_read(
        "mail.activity", [["id", "=", activity]], ["state", "active"], context={"active_test": False}
    )
    assert done == {"id": activity, "state": "done", "active": False}
    [msg] = w.read("mail.message", [message], ["model", "res_id", "author_id", "body"])
    assert (msg["model"], msg["res_id"]) == ("sale.order", order) and "Alice Moreau" in msg["author_id"][1]


def _without_dates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if not k.endswith("_date") and k not in ("last_stage_update",)}
        for r in rows
    ]


def test_the_fake_answers_like_the_standin(odoo_standin: OdooStandIn, memory_odoo: InMemoryOdoo) -> None:
    real = ReadOnlyOdoo.connect(odoo_standin.url, "signoff", "agent", "agent")
    fake = memory_odoo.reader()
    queries: list[tuple[str, list[Any], list[str]]] = [
        ("helpdesk.ticket", [["stage_id.closed", "=", False]], ["number", "name", "partner_id", "priority"]),
        ("helpdesk.ticket", [], ["category_id", "team_id", "tag_ids", "ticket_ref", "closed"]),
        ("sale.order", [], ["name", "plan_id", "subscription_state", "recurring_monthly", "invoice_ids"]),
        ("account.move", [["payment_state", "!=", "paid"]], ["name", "partner_id", "amount_residual"]),
        ("res.users", [], ["login", "name", "partner_id"]),
    ]
    for model, domain, fields in queries:
        assert _without_dates(real.search_read(model, domain, fields)) == _without_dates(
            fake.search_read(model, domain, fields)
        ), model
    assert real.fields_get("helpdesk.ticket") == fake.fields_get("helpdesk.ticket")
