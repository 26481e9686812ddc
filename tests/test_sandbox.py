"""The Odoo stand-in as a product: seeding, persistence, the CLI, the embedded helper."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import odoorpc
import pytest
from typer.testing import CliRunner

from signoff.config import Settings
from signoff.integrations.odoo import OdooWriter, ReadOnlyOdoo, connect_reader, connect_writer
from signoff.sandbox.cli import app as sandbox_app
from signoff.sandbox.embedded import odoo_for
from signoff.sandbox.odoo import OdooStandIn
from signoff.sandbox.orm import Engine, SqliteStore, normalize_domain, read_calls
from signoff.sandbox.seed import TEAM_BY_CATEGORY, is_seeded, seed, subject_of

REPO = Path(__file__).resolve().parent.parent
PUBLIC = Settings(_env_file=None).public_data_dir  # type: ignore[call-arg]
HAS_PUBLIC = (PUBLIC / "tickets" / "bitext_dev.jsonl").exists()


def _counts(path: Path) -> dict[str, int]:
    store = SqliteStore(path)
    with store.session(write=False) as backend:
        conn = backend.conn
        return dict(conn.execute("SELECT model, COUNT(*) FROM records GROUP BY model").fetchall())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_seed_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "odoo.sqlite"
    first = seed(path, PUBLIC, n_history=30, n_new=4, n_contracts=1)
    counts = _counts(path)
    second = seed(path, PUBLIC, n_history=30, n_new=4, n_contracts=1)
    assert first["helpdesk.ticket"] == 30 + 4 + 3 and first["res.partner"] == 24
    assert not any(second.values())
    assert _counts(path) == counts
    assert is_seeded(path) and not is_seeded(tmp_path / "absent.sqlite")


def test_seeded_tickets_are_labelled_and_routed(tmp_path: Path) -> None:
    path = tmp_path / "odoo.sqlite"
    seed(path, PUBLIC, n_history=60, n_new=5, n_contracts=1)
    with SqliteStore(path).session(write=False) as backend:
        engine = Engine(backend)
        history = engine.search_read(
            "helpdesk.ticket",
            [["stage_id.closed", "=", True]],
            ["category_id", "team_id", "ticket_ref", "name", "description"],
        )
        new = engine.search_read(
            "helpdesk.ticket",
            [["stage_id.name", "=", "New"]],
            ["category_id", "team_id", "priority", "ticket_ref", "partner_id"],
        )
    assert len(history) == 60 and all(t["category_id"] and t["team_id"] for t in history)
    assert all(
        len(t["name"]) <= 63 and t["description"].startswith(t["name"].rstrip(".")[:20]) for t in history
    )
    assert all(t["category_id"] is False and t["team_id"] is False and t["priority"] == "1" for t in new)
    refs = {t["ticket_ref"] for t in new}
    assert {"signoff-pii", "signoff-injection", "signoff-outage"} <= refs
    if HAS_PUBLIC:
        rows = {
            json.loads(line)["id"]: json.loads(line)
            for line in (PUBLIC / "tickets" / "bitext_dev.jsonl").open()
        }
        for t in history:
            src = rows[t["ticket_ref"]]
            assert t["category_id"][1] == src["intent"]
            assert t["team_id"][1] == TEAM_BY_CATEGORY[src["category"]]


@pytest.mark.skipif(not HAS_PUBLIC, reason="public Bitext data not present")
def test_default_seed_loads_all_bitext_dev_rows(tmp_path: Path) -> None:
    started = time.perf_counter()
    created = seed(tmp_path / "odoo.sqlite", PUBLIC)
    assert created["helpdesk.ticket"] == 3197 + 25 + 3
    assert created["helpdesk.ticket.category"] == 27 and created["ir.attachment"] == 3
    assert time.perf_counter() - started < 10


def test_seed_without_public_data_uses_the_packaged_sample(tmp_path: Path) -> None:
    created = seed(tmp_path / "odoo.sqlite", tmp_path / "no-public-data")
    assert created["helpdesk.ticket"] > 40 and created["helpdesk.ticket.category"] == 8
    assert created["ir.attachment"] == 1


def test_subject_of() -> None:
    assert subject_of("short") == "short"
    long = "word " * 30
    assert len(subject_of(long)) <= 63 and subject_of(long).endswith("...")


def test_records_survive_a_restart(odoo_db_copy: Path) -> None:
    with OdooStandIn(odoo_db_copy) as first:
        writer = OdooWriter.connect(first.url, "signoff", "executor", "executor")
        tag = writer.create("helpdesk.ticket.tag", {"name": "persisted"})
    with OdooStandIn(odoo_db_copy) as second:
        reader = ReadOnlyOdoo.connect(second.url, "signoff", "agent", "agent")
        assert reader.read("helpdesk.ticket.tag", [tag], ["name"]) == [{"id": tag, "name": "persisted"}]
        assert any(c["method"] == "create" for c in second.calls())


def test_call_log_over_http_and_from_another_process(odoo_standin: OdooStandIn) -> None:
    script = textwrap.dedent(f"""
        from signoff.integrations.odoo import OdooWriter
        w = OdooWriter.connect({odoo_standin.url!r}, "signoff", "executor", "executor")
        t = w.search_read("helpdesk.ticket", [["ticket_ref", "=", "signoff-outage"]], ["id"])[0]["id"]
        w.write("helpdesk.ticket", [t], {{"priority": "3"}})
    """)
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, env=env, timeout=60)
    writes = [c for c in read_calls(odoo_standin.db_path) if c["method"] == "write"]
    assert len(writes) == 1 and writes[0]["login"] == "executor" and writes[0]["ok"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{odoo_standin.url}/_fake/calls?since=0", timeout=5) as resp:
        over_http = json.loads(resp.read())
    assert [c["seq"] for c in over_http] == [c["seq"] for c in odoo_standin.calls()]
    assert all("admin" not in json.dumps(c["args"]) or c["method"] != "login" for c in over_http)


def test_concurrent_requests(odoo_standin: OdooStandIn) -> None:
    from concurrent.futures import ThreadPoolExecutor

    writer = OdooWriter.connect(odoo_standin.url, "signoff", "executor", "executor")

    def work(i: int) -> int:
        tag = writer.create("helpdesk.ticket.tag", {"name": f"c{i}"})
        writer.search_read("helpdesk.ticket", [["priority", "=", "1"]], ["id"], limit=5)
        return tag

    with ThreadPoolExecutor(8) as pool:
        tags = list(pool.map(work, range(24)))
    assert len(set(tags)) == 24
    assert writer.search_count("helpdesk.ticket.tag", [["name", "=like", "c%"]]) == 24


def test_cli_seed(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "cli.sqlite"
    args = ["seed", "--db", str(path), "--history", "10", "--new", "2", "--contracts", "1"]
    result = runner.invoke(sandbox_app, args)
    assert result.exit_code == 0, result.output
    assert "helpdesk.ticket" in result.output
    again = runner.invoke(sandbox_app, args)
    assert again.exit_code == 0 and "Already seeded" in again.output
    assert runner.invoke(sandbox_app, ["--help"]).exit_code == 0
    assert "Ctrl-C" in runner.invoke(sandbox_app, ["odoo", "--help"]).output


def test_cli_odoo_serves_in_a_subprocess(odoo_db_copy: Path) -> None:
    port = free_port()
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "SIGNOFF_DATA_DIR": str(odoo_db_copy.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "signoff.sandbox.cli", "odoo", "--port", str(port), "--db", str(odoo_db_copy)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"stand-in did not start: {proc.stdout.read() if proc.stdout else ''}"
                    ) from exc
                time.sleep(0.05)
        odoo = odoorpc.ODOO(
            "127.0.0.1", port=port, opener=urllib.request.build_opener(urllib.request.ProxyHandler({}))
        )
        odoo.login("signoff", "agent", "agent")
        assert odoo.env.uid > 2 and "helpdesk.ticket" in odoo.env
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}" in out and "executor" in out


def test_odoo_for_starts_and_stops_the_embedded_standin(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        odoo_url=None,  # type: ignore[call-arg]
        public_data_dir=PUBLIC,
    )
    with odoo_for(settings, n_history=10) as live:
        assert live.odoo_url and live.odoo_url.startswith("http://127.0.0.1:")
        assert settings.odoo_url is None
        reader = connect_reader(live)
        assert reader.search_count("helpdesk.ticket", [["stage_id.closed", "=", True]]) == 10
    with pytest.raises(Exception):  # noqa: B017 - stopped: any connection error
        connect_reader(live)
    configured = settings.model_copy(update={"odoo_url": "http://odoo.example:8069"})
    with odoo_for(configured) as same:
        assert same is configured


def test_domain_normalisation() -> None:
    assert normalize_domain([["a", "=", 1], ["b", "=", 2]]) == ["&", ["a", "=", 1], ["b", "=", 2]]
    assert normalize_domain(["|", ["a", "=", 1], ["b", "=", 2], ["c", "=", 3]]) == [
        "&",
        "|",
        ["a", "=", 1],
        ["b", "=", 2],
        ["c", "=", 3],
    ]
    assert normalize_domain([]) == []


def test_fault_hook_drops_or_delays_requests(odoo_standin: OdooStandIn, settings: Settings) -> None:
    """The fault trials' hook: "down" drops connections unanswered, "delay" (optionally per method) slows them."""
    from signoff.errors import OdooConnectionError

    def fault(**body: object) -> dict[str, object]:
        req = urllib.request.Request(odoo_standin.url + "/_fake/fault", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return dict(json.loads(r.read()))

    reader = connect_reader(settings)
    assert reader.search_count("res.users", []) > 0
    assert fault(down=True) == {"delay": 0.0, "down": True, "only": None}
    with pytest.raises(OdooConnectionError):
        reader.search_count("res.users", [])
    assert fault(only="write")["only"] == "write"  # now only writes are dropped: reads answer
    assert reader.search_count("res.users", []) > 0
    writer = connect_writer(settings)
    ticket = reader.search_read("helpdesk.ticket", [], ["id"], limit=1)[0]["id"]
    with pytest.raises(OdooConnectionError):
        writer.write("helpdesk.ticket", [ticket], {"priority": "2"})
    assert not [c for c in odoo_standin.calls() if c["method"] == "write"]  # dropped before it was handled
    odoo_standin.set_fault(down=False, only=None)
    assert odoo_standin.set_fault() == {"delay": 0.0, "down": False, "only": None}
