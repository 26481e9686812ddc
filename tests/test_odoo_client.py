"""The odoorpc-based client against the stand-in, over a real socket."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import odoorpc
import pytest

from signoff.config import Settings
from signoff.errors import (
    ConfigError,
    OdooAccessError,
    OdooConnectionError,
    OdooInternalError,
    OdooMissingError,
    OdooValidationError,
    ReadOnlyViolation,
)
from signoff.integrations.odoo import (
    OdooReader,
    OdooWriter,
    OdooWriterPort,
    ReadOnlyOdoo,
    connect_reader,
    connect_writer,
    parse_odoo_url,
)
from signoff.sandbox.odoo import OdooStandIn

TICKET_FIELDS = [
    "number",
    "name",
    "partner_id",
    "stage_id",
    "category_id",
    "team_id",
    "priority",
    "ticket_ref",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_from_settings_logs_in_as_the_configured_users(settings: Settings) -> None:
    reader = connect_reader(settings)
    writer = connect_writer(settings)
    assert (reader.login, writer.login) == ("agent", "executor")
    assert reader.uid != writer.uid and reader.uid > 2
    assert reader.version == "17.0" and reader.db == "signoff"
    assert isinstance(reader, OdooReader) and isinstance(writer, OdooWriterPort)
    assert not isinstance(reader, OdooWriterPort)


def test_bad_password_is_an_access_error(odoo_standin: OdooStandIn) -> None:
    with pytest.raises(OdooAccessError) as info:
        ReadOnlyOdoo.connect(odoo_standin.url, "signoff", "agent", "wrong")
    assert info.value.name == "odoo.exceptions.AccessDenied"
    assert odoo_standin.url in str(info.value)


def test_missing_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        connect_reader(Settings(_env_file=None, data_dir=tmp_path, odoo_url=None))  # type: ignore[call-arg]


def test_search_read_domains_limit_offset_order(odoo_reader: ReadOnlyOdoo) -> None:
    companies = odoo_reader.search_read(
        "res.partner", [["is_company", "=", True], ["customer_rank", ">", 0]], ["name"], order="name asc"
    )
    names = [c["name"] for c in companies]
    assert len(names) == 12 and names == sorted(names)
    either = odoo_reader.search_read(
        "res.partner", ["|", ["name", "ilike", "acme"], ["name", "ilike", "GLOBEX"]], ["name"], order="id"
    )
    assert {r["name"] for r in either} >= {"Acme Corp", "Globex Corporation"}
    assert all("acme" in r["name"].lower() or "globex" in r["name"].lower() for r in either)
    ids = [c["id"] for c in companies[:3]]
    picked = odoo_reader.search_read("res.partner", [["id", "in", ids]], ["id"], order="id desc")
    assert [r["id"] for r in picked] == sorted(ids, reverse=True)
    page1 = odoo_reader.search_read("helpdesk.ticket", [], ["id"], limit=5, order="id asc")
    page2 = odoo_reader.search_read("helpdesk.ticket", [], ["id"], limit=5, offset=5, order="id asc")
    assert len(page1) == len(page2) == 5 and page1[-1]["id"] < page2[0]["id"]
    total = odoo_reader.search_count("helpdesk.ticket", [])
    closed = odoo_reader.search_count("helpdesk.ticket", [["stage_id.closed", "=", True]])
    new = odoo_reader.search_count("helpdesk.ticket", [["stage_id.name", "=", "New"]])
    assert closed == 40 and new == 5 + 3 and total == closed + new
    not_new = odoo_reader.search_count("helpdesk.ticket", ["!", ["stage_id.name", "=", "New"]])
    assert not_new == closed


def test_values_follow_odoo_conventions(odoo_reader: ReadOnlyOdoo) -> None:
    [ticket] = odoo_reader.search_read(
        "helpdesk.ticket",
        [["ticket_ref", "=", "signoff-pii"]],
        [*TICKET_FIELDS, "create_date", "closed_date", "tag_ids", "display_name"],
    )
    partner_id, partner_name = ticket["partner_id"]
    assert isinstance(partner_id, int) and partner_name.startswith("Globex Corporation, ")
    assert ticket["stage_id"][1] == "New"
    assert ticket["category_id"] is False and ticket["team_id"] is False and ticket["closed_date"] is False
    assert ticket["priority"] == "1" and isinstance(ticket["tag_ids"], list)
    assert ticket["display_name"] == f"{ticket['number']} - {ticket['name']}"
    assert len(ticket["create_date"]) == 19 and ticket["create_date"][10] == " "
    [order] = odoo_reader.search_read(
        "sale.order",
        [["partner_id.name", "=", "Acme Corp"]],
        ["plan_id", "start_date", "recurring_monthly", "is_subscription"],
    )
    assert order["plan_id"][1] == "Enterprise" and order["is_subscription"] is True
    assert len(order["start_date"]) == 10 and isinstance(order["recurring_monthly"], float)
    fields = odoo_reader.fields_get("helpdesk.ticket", attributes=["type", "relation", "selection"])
    assert fields["category_id"] == {"type": "many2one", "relation": "helpdesk.ticket.category"}
    assert fields["priority"]["selection"][3] == ["3", "Very High"]


def test_overdue_invoices_are_seeded(odoo_reader: ReadOnlyOdoo) -> None:
    overdue = odoo_reader.search_read(
        "account.move",
        [
            ["move_type", "=", "out_invoice"],
            ["payment_state", "in", ["not_paid", "partial"]],
            ["invoice_date_due", "<", "2999-01-01"],
        ],
        ["partner_id", "amount_residual", "invoice_date_due"],
    )
    assert overdue and all(r["amount_residual"] > 0 for r in overdue)


def test_errors_surface_by_name(odoo_reader: ReadOnlyOdoo, odoo_writer: OdooWriter) -> None:
    with pytest.raises(OdooMissingError) as missing:
        odoo_reader.read("res.partner", [999_999], ["name"])
    assert missing.value.name == "odoo.exceptions.MissingError"
    assert "Record does not exist or has been deleted" in str(
        missing.value
    ) and "res.partner(999999,)" in str(missing.value)
    with pytest.raises(OdooValidationError) as unknown:
        odoo_reader.search_read("no.such.model", [], ["name"])
    assert unknown.value.name == "odoo.exceptions.UserError"
    with pytest.raises(OdooInternalError) as attr:
        odoo_writer.call("res.partner", "no_such_method")
    assert attr.value.name == "builtins.AttributeError"
    with pytest.raises(OdooAccessError) as private:
        odoo_writer.call("res.partner", "_compute_display_name", [1])
    assert "Private methods" in str(private.value)
    acme = odoo_writer.search_read("res.partner", [["name", "=", "Acme Corp"]], ["id"])[0]["id"]
    with pytest.raises(OdooValidationError) as invalid:
        odoo_writer.write("res.partner", [acme], {"email": "not-an-email"})
    assert invalid.value.name == "odoo.exceptions.ValidationError"
    with pytest.raises(OdooInternalError) as bad_field:
        odoo_reader.read("res.partner", [acme], ["no_such_field"])
    assert bad_field.value.name == "builtins.ValueError"


def test_odoo_refuses_writes_by_the_agent_user(odoo_standin: OdooStandIn) -> None:
    as_agent = OdooWriter.connect(odoo_standin.url, "signoff", "agent", "agent")
    ticket = as_agent.search_read("helpdesk.ticket", [], ["id"], limit=1)[0]["id"]
    for attempt in (
        lambda: as_agent.write("helpdesk.ticket", [ticket], {"priority": "3"}),
        lambda: as_agent.create("helpdesk.ticket.tag", {"name": "x"}),
        lambda: as_agent.unlink("helpdesk.ticket", [ticket]),
        lambda: as_agent.message_post("helpdesk.ticket", ticket, "hello"),
    ):
        with pytest.raises(OdooAccessError) as info:
            attempt()
        assert info.value.name == "odoo.exceptions.AccessError"
        assert "You are not allowed to modify" in str(info.value)
    failed = [c for c in odoo_standin.calls() if c["login"] == "agent" and not c["ok"]]
    assert {c["method"] for c in failed} == {"write", "create", "unlink", "message_post"}
    assert as_agent.read("helpdesk.ticket", [ticket], ["priority"])[0]["priority"] != "3"


def test_read_only_view_refuses_everything_else_without_a_request(
    odoo_reader: ReadOnlyOdoo, odoo_standin: OdooStandIn
) -> None:
    before = len(odoo_standin.calls())
    for method in (
        "write",
        "create",
        "unlink",
        "message_post",
        "action_feedback",
        "name_get",
        "search",
        "_private",
        "execute_kw",
    ):
        with pytest.raises(ReadOnlyViolation):
            odoo_reader.call("helpdesk.ticket", method, [1], {"priority": "3"})
    with pytest.raises(ReadOnlyViolation):
        asyncio.run(odoo_reader.acall("helpdesk.ticket", "write", [1], {"priority": "3"}))
    assert len(odoo_standin.calls()) == before  # nothing reached the server
    for name in ("write", "create", "unlink", "message_post", "execute", "execute_kw", "env", "odoo"):
        assert not hasattr(odoo_reader, name)
    public = {name: getattr(odoo_reader, name) for name in dir(odoo_reader) if not name.startswith("_")}
    assert not any(isinstance(v, odoorpc.ODOO) for v in public.values())
    with pytest.raises(AttributeError):
        odoo_reader.odoo = "x"  # type: ignore[attr-defined]
    assert odoo_reader.call("res.partner", "search_count", [["is_company", "=", True]]) >= 13
    assert len(odoo_standin.calls()) == before + 1


def test_writer_writes_and_the_call_log_names_the_executor(
    odoo_writer: OdooWriter, odoo_reader: ReadOnlyOdoo, odoo_standin: OdooStandIn
) -> None:
    [ticket] = odoo_reader.search_read("helpdesk.ticket", [["ticket_ref", "=", "signoff-outage"]], ["id"])
    billing = odoo_reader.search_read("helpdesk.ticket.team", [["name", "=", "Billing"]], ["id"])[0]["id"]
    assert odoo_writer.write("helpdesk.ticket", [ticket["id"]], {"priority": "3", "team_id": billing}) is True
    after = odoo_reader.read("helpdesk.ticket", [ticket["id"]], ["priority", "team_id", "write_uid"])[0]
    assert after["priority"] == "3" and after["team_id"] == [billing, "Billing"]
    assert after["write_uid"][0] == odoo_writer.uid
    writes = [c for c in odoo_standin.calls() if c["method"] == "write"]
    assert writes[-1]["login"] == "executor" and writes[-1]["ok"] is True
    assert writes[-1]["model"] == "helpdesk.ticket" and writes[-1]["args"] == [
        [ticket["id"]],
        {"priority": "3", "team_id": billing},
    ]
    message = odoo_writer.message_post("helpdesk.ticket", ticket["id"], "Approved by <alice>")
    [msg] = odoo_reader.read(
        "mail.message", [message], ["body", "subtype_id", "model", "res_id", "author_id"]
    )
    assert msg["body"] == "Approved by &lt;alice&gt;" and msg["subtype_id"][1] == "Note"
    assert (msg["model"], msg["res_id"]) == ("helpdesk.ticket", ticket["id"])
    tag = odoo_writer.create("helpdesk.ticket.tag", {"name": "signoff"})
    assert odoo_reader.read("helpdesk.ticket.tag", [tag], ["name"]) == [{"id": tag, "name": "signoff"}]


def test_active_test_hides_archived_records(odoo_writer: OdooWriter) -> None:
    tag = odoo_writer.create("helpdesk.ticket.tag", {"name": "archived-tag", "active": False})
    assert odoo_writer.search_read("helpdesk.ticket.tag", [["name", "=", "archived-tag"]], ["id"]) == []
    found = odoo_writer.search_read(
        "helpdesk.ticket.tag", [["name", "=", "archived-tag"]], ["id"], context={"active_test": False}
    )
    assert found == [{"id": tag}]
    assert odoo_writer.search_count("helpdesk.ticket.tag", [["active", "=", False]]) == 1


def test_odoo_down_is_a_connection_error(odoo_standin: OdooStandIn, odoo_reader: ReadOnlyOdoo) -> None:
    url = odoo_standin.url
    odoo_standin.stop()
    with pytest.raises(OdooConnectionError) as down:
        odoo_reader.search_count("res.partner", [])
    assert url in str(down.value)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(OdooConnectionError) as refused:
        ReadOnlyOdoo.connect(closed, "signoff", "agent", "agent", timeout=2)
    assert closed in str(refused.value)


def test_timeout_is_a_connection_error() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(OdooConnectionError) as info:
            ReadOnlyOdoo.connect(url, "signoff", "agent", "agent", timeout=0.3)
    assert url in str(info.value)


def test_proxy_settings_are_ignored_for_localhost(
    odoo_standin: OdooStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, dead_proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    reader = ReadOnlyOdoo.connect(odoo_standin.url, "signoff", "agent", "agent", timeout=5)
    assert reader.search_count("res.users", []) >= 5


@pytest.mark.parametrize("version", ["16.0", "17.0", "18.0"])
def test_version_profiles(version: str, odoo_db_copy: Path) -> None:
    with OdooStandIn(odoo_db_copy, version=version) as standin:
        raw = _post(standin.url + "/web/webclient/version_info", {})
        assert raw["result"]["server_version"] == version
        assert raw["result"]["server_version_info"][:2] == [int(version[:2]), 0]
        writer = OdooWriter.connect(standin.url, "signoff", "executor", "executor")
        assert writer.version == version
        if version == "18.0":  # name_get was removed in 18: read display_name instead
            with pytest.raises(OdooInternalError):
                writer.call("res.partner", "name_get", [1])
        else:
            assert writer.call("res.partner", "name_get", [1]) == [[1, "Skyline Software"]]


def test_error_object_is_odoos(odoo_standin: OdooStandIn) -> None:
    raw = _post(
        odoo_standin.url + "/jsonrpc",
        {
            "service": "object",
            "method": "execute_kw",
            "args": ["signoff", 2, "admin", "res.partner", "read", [[999]], {"fields": ["name"]}],
        },
    )
    error = raw["error"]
    assert error["code"] == 200 and error["message"] == "Odoo Server Error"
    assert error["data"]["name"] == "odoo.exceptions.MissingError"
    assert error["data"]["message"] == (
        "Record does not exist or has been deleted.\n(Record: res.partner(999,), User: 2)"
    )
    assert set(error["data"]) == {"name", "message", "arguments", "context", "debug"}
    denied = _post(
        odoo_standin.url + "/jsonrpc",
        {
            "service": "object",
            "method": "execute_kw",
            "args": ["signoff", 2, "wrong", "res.partner", "search", [[]], {}],
        },
    )
    assert denied["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"
    assert (
        _post(
            odoo_standin.url + "/jsonrpc",
            {"service": "common", "method": "login", "args": ["signoff", "admin", "nope"]},
        )["result"]
        is False
    )
    assert _post(odoo_standin.url + "/jsonrpc", {"service": "db", "method": "list", "args": []})[
        "result"
    ] == ["signoff"]


def test_async_wrappers(odoo_reader: ReadOnlyOdoo) -> None:
    async def main() -> tuple[list[dict[str, Any]], int]:
        rows, count = await asyncio.gather(
            odoo_reader.asearch_read("helpdesk.ticket.team", [], ["name"], order="sequence"),
            odoo_reader.asearch_count("helpdesk.ticket", []),
        )
        return rows, count

    rows, count = asyncio.run(main())
    assert [r["name"] for r in rows] == ["Billing", "Orders & Shipping", "Accounts", "Customer Care"]
    assert count == 48


def test_explicit_fields_are_required(odoo_reader: ReadOnlyOdoo) -> None:
    with pytest.raises(ValueError):
        odoo_reader.search_read("res.partner", [], [])
    with pytest.raises(ValueError):
        odoo_reader.read("res.partner", [1], "name")


def test_parse_odoo_url() -> None:
    assert parse_odoo_url("http://127.0.0.1:8069") == ("127.0.0.1", "jsonrpc", 8069)
    assert parse_odoo_url("https://erp.example.com") == ("erp.example.com", "jsonrpc+ssl", 443)
    assert parse_odoo_url("https://erp.example.com:8443/") == ("erp.example.com", "jsonrpc+ssl", 8443)
    with pytest.raises(ConfigError):
        parse_odoo_url("https://example.com/erp")
    with pytest.raises(ConfigError):
        parse_odoo_url("ftp://example.com")


def _post(url: str, params: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "method": "call", "params": params, "id": 1}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as resp:
        assert resp.status == 200
        return json.loads(resp.read())  # type: ignore[no-any-return]
