"""The web inbox in a real browser: headless Chromium from Debian (``apt-get install chromium``; ``.ci/run``
installs it), driven by Playwright over CDP. No browser is ever downloaded: ``playwright install`` is
never run, the tests launch ``/usr/bin/chromium`` (or ``SIGNOFF_TEST_CHROMIUM``).

A screenshot of every page goes to ``test-artifacts/inbox/`` (git-ignored; ``SIGNOFF_TEST_ARTIFACTS``
to move it); the paths are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LEAD, Live, new_ticket_ids, wait_for
from pydantic import SecretStr
from test_inbox import INBOX_SECRET, USERS, add_users, ticket_writes

from signoff.config import Settings
from signoff.sandbox.odoo import OdooStandIn

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("SIGNOFF_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-proxy-server", "--disable-dev-shm-usage"]
ARTIFACTS = Path(os.environ.get("SIGNOFF_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parent.parent / "test-artifacts") / "inbox"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no system Chromium: apt-get install -y chromium chromium-driver")


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"inbox_secret": SecretStr(INBOX_SECRET),
                                       "inbox_reports_dir": tmp_path / "reports"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Numbered full-page screenshots in ``ARTIFACTS``."""

    def __init__(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob("*.png"):
            old.unlink()
        self.paths: list[Path] = []

    def __call__(self, page: Any, name: str) -> Path:
        path = ARTIFACTS / f"{len(self.paths) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        return path


def sign_in(browser: Any, live: Live, name: str) -> Any:
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/inbox/pending")  # not signed in: sent to the sign-in form
    assert "/inbox/login" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", USERS[name][1])
    page.click("button[type=submit]")
    page.wait_for_url("**/inbox/pending")
    return page


def test_approver_decides_in_the_browser(start_server: Callable[..., Live], browser: Any,
                                         odoo_standin: OdooStandIn) -> None:
    expect = playwright_api.expect
    shots = Shots()
    live = start_server()  # approval messages go to Slack too: one record, several views
    add_users(live)
    tickets = new_ticket_ids(live)[:2]
    threads = [live.webhook(t).json()["thread_id"] for t in tickets]
    runs = [live.wait_run(t) for t in threads]
    wait_for(lambda: len(live.slack.messages_in("approvals")) == sum(len(r["proposals"]) for r in runs),
             what="approval messages")
    first = [p["id"] for p in runs[0]["proposals"]]
    assert len(first) == 2, runs[0]
    a_reject, a_approve = first
    b_slack = runs[1]["proposals"][0]["id"]

    # Someone decides one of the second ticket's proposals in Slack first.
    message = next(m for m in live.slack.messages_in("approvals") if b_slack in str(m["blocks"]))
    assert live.slack.click("approvals", message["ts"], "approve", LEAD).status == 200
    wait_for(lambda: live.svc.rt.store.get(b_slack).state == "approved", what="Slack decision")

    # Sign in.
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/inbox/pending")
    expect(page.locator("#login")).to_be_visible()
    shots(page, "sign-in")
    page.fill("input[name=username]", "lead")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("#error")).to_contain_text("Wrong user name or password")
    page.fill("input[name=username]", "lead")
    page.fill("input[name=password]", USERS["lead"][1])
    page.click("button[type=submit]")
    page.wait_for_url("**/inbox/pending")
    rows = page.locator("#pending tbody tr")
    expect(rows).to_have_count(len(first) + len(runs[1]["proposals"]) - 1)
    shots(page, "pending")
    page.select_option("select[name=agent]", "ticket")
    page.select_option("select[name=action]", "ticket.set_team")
    page.click("form.filters button")
    expect(page.locator("#pending tbody tr")).to_have_count(2)
    shots(page, "pending-filtered")

    # Open a pending proposal: the diff read live from Odoo, why, the policy, the buttons.
    page.goto(f"/inbox/p/{a_reject}")
    expect(page.locator("#state")).to_have_text("pending")
    expect(page.locator("#diff")).to_be_visible()
    expect(page.locator("#policy")).to_contain_text("support-leads")
    shots(page, "proposal")
    # Reject without a reason: refused.
    page.click("#reject")
    expect(page.locator("#error")).to_contain_text("reason is required")
    assert live.svc.rt.store.get(a_reject).state == "pending"
    shots(page, "reject-without-reason-refused")
    # With one.
    page.fill("#reason", "wrong category: it is a refund")
    page.click("#reject")
    expect(page.locator("#state")).to_have_text("rejected")
    expect(page.locator("#decided")).to_contain_text("cli:lead")
    expect(page.locator("#approve")).to_have_count(0)
    shots(page, "rejected")
    assert ticket_writes(odoo_standin) == []

    # CSRF: the same form without its token is refused (the browser still sends the session cookie).
    page.goto(f"/inbox/p/{a_approve}")
    page.evaluate("document.querySelector('#approve-form input[name=csrf]').remove()")
    page.click("#approve")
    expect(page.locator("#error")).to_contain_text("CSRF")
    shots(page, "csrf-missing-refused")
    assert live.svc.rt.store.get(a_approve).state == "pending"
    refused = page.request.post(f"{live.url}/inbox/p/{a_approve}/approve", form={"x": "1"})
    assert refused.status == 403

    # Approve the other: the run resumes, the executor writes once.
    page.goto(f"/inbox/p/{a_approve}")
    page.click("#approve")
    expect(page.locator("#state")).to_have_text("executed")
    shots(page, "approved-executed")
    writes = ticket_writes(odoo_standin)
    assert len(writes) == 1, writes
    page.go_back()
    page.reload()  # a second click on a decided proposal: no buttons, nothing written again
    expect(page.locator("#approve")).to_have_count(0)
    assert len(ticket_writes(odoo_standin)) == 1

    # The Slack-decided one: who, where, when; no buttons.
    page.goto(f"/inbox/p/{b_slack}")
    expect(page.locator("#decided")).to_contain_text(f"slack:{LEAD}")
    expect(page.locator("#decided")).to_contain_text("via slack")
    expect(page.locator("#actions")).to_have_count(0)
    shots(page, "decided-in-slack")

    # The other pages.
    page.goto("/inbox/exceptions")
    expect(page.locator("#nothing")).to_be_visible()
    shots(page, "exceptions")
    page.goto(f"/inbox/audit?subject={tickets[0]}")
    expect(page.locator("#chain")).to_contain_text("Hash chain verified")
    expect(page.locator("#trail")).to_contain_text("execution.succeeded")
    shots(page, "audit")
    page.goto("/inbox/quality")
    expect(page.locator("#quality")).to_contain_text("ticket.set_team")
    shots(page, "quality")
    context.close()

    # An outsider: signed in, but nothing to decide, and a proposal's page is refused.
    outsider = sign_in(browser, live, "mallory")
    expect(outsider.locator("#nothing")).to_contain_text("Nothing to decide")
    shots(outsider, "outsider-pending")
    answer = outsider.goto(f"/inbox/p/{runs[1]['proposals'][-1]['id']}")
    assert answer is not None and answer.status == 403
    shots(outsider, "outsider-proposal-refused")
    outsider.context.close()

    for path in shots.paths:
        print(f"screenshot: {path}")
    assert all(p.stat().st_size > 5000 for p in shots.paths)
