"""The renewal terms the contracts agent keeps per Odoo record: on SQLite and on Postgres (the same code)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from test_contracts import CONTRACT, KeywordModel

from signoff.agents.contracts import analyse, load_clause_policy
from signoff.domain import ContractSummary
from signoff.guardrails.statedb import StateDB
from signoff.tools.contract_terms import ContractTermsStore
from signoff.tools.contracts import ContractSource


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractTermsStore]:
    if request.param == "sqlite":
        yield ContractTermsStore(StateDB.sqlite(tmp_path / "signoff.sqlite"))
        return
    from signoff.guardrails.postgres import PostgresDatabase

    pg = PostgresDatabase(request.getfixturevalue("postgres_url"))  # migrations create the table
    try:
        yield ContractTermsStore(StateDB(postgres=pg))
    finally:
        pg.close()


def _summary(attachment: int | None, *, renewal: float = 0.9, res_id: int = 7) -> ContractSummary:
    source = ContractSource(text=CONTRACT, name=f"msa-{attachment}.txt", sha256="0" * 64, db="signoff",
                            attachment_id=attachment, res_model="sale.order" if attachment else None,
                            res_id=res_id if attachment else None)
    return analyse(source, KeywordModel({"Renewal Term": renewal}), load_clause_policy(), today=date(2024, 1, 1),
                   evidence=False)


def test_records_the_found_terms_and_the_latest_contract_speaks(store: ContractTermsStore) -> None:
    assert store.latest("signoff", "sale.order", 7) is None
    assert store.record(_summary(None)) is False, "a contract from a file has no Odoo record"
    assert store.record(_summary(11)) is True
    got = store.latest("signoff", "sale.order", 7)
    assert got is not None and got.attachment_id == 11 and got.name == "msa-11.txt"
    assert got.notice_deadline == date(2024, 12, 14) and got.auto_renewal is True
    assert got.thread_id == "contract:signoff:11"
    time.sleep(0.01)
    # A second contract of the same subscription, whose renewal clause only "needs review": it is the
    # latest, and what it did not find is unknown (None), never guessed.
    assert store.record(_summary(12, renewal=0.3)) is True
    got = store.latest("signoff", "sale.order", 7)
    assert got is not None and got.attachment_id == 12 and got.auto_renewal is None
    # Analysing the first one again updates its row, and makes it the latest again.
    time.sleep(0.01)
    store.record(_summary(11))
    got = store.latest("signoff", "sale.order", 7)
    assert got is not None and got.attachment_id == 11 and got.auto_renewal is True
    assert store.latest("other-db", "sale.order", 7) is None and store.latest("signoff", "sale.order", 8) is None
