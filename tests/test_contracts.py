"""The contracts agent: spans, normalisation, deadline, deviations, thresholds, CLI, Odoo path, PDF.

Most tests use a keyword stand-in for the clause model (deterministic, instant) so that they test the
agent's logic; one test fits the real clause model on three short CUAD dev contracts."""

from __future__ import annotations

import base64
import re
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from signoff.agents.contracts import (
    LEGAL_ACTION,
    RENEWAL_ACTION,
    ClausePolicy,
    analyse,
    contract_runner,
    load_clause_policy,
)
from signoff.config import Settings, get_settings
from signoff.domain import Decision
from signoff.llm.clauses import CATEGORIES, ClauseModel, load_cuad
from signoff.tools.contracts import (
    ContractSource,
    chunk_text,
    decode_contract,
    find_dates,
    find_durations,
    find_governing_law,
    load_file,
    pdf_text,
    word_number,
)


def public_data_dir() -> Path:
    return Settings(_env_file=None).public_data_dir  # type: ignore[call-arg]

CONTRACT = """MASTER SUBSCRIPTION AGREEMENT

This Master Subscription Agreement is entered into as of March 1, 2023 by and between Acme Software, Inc. \
("Provider") and Globex Corporation ("Customer").

1. Term. This Agreement is effective as of March 15, 2023. The initial term shall expire on March 14, 2025.

2. Renewal. This Agreement shall automatically renew for successive one (1) year periods unless either party \
gives written notice of non-renewal at least ninety (90) days prior to the end of the then-current term.

3. Termination. Customer may terminate this Agreement for convenience upon thirty (30) days written notice.

4. Liability. In no event shall either party's aggregate liability exceed the fees paid in the twelve (12) months \
preceding the claim. The foregoing limitation shall not apply to breaches of confidentiality, for which \
liability is unlimited.

5. Governing Law. This Agreement shall be governed by the laws of the State of Texas.

6. Assignment. Neither party may assign this Agreement without the prior written consent of the other party.
"""

KEYWORDS = {
    "Parties": r"by and between",
    "Agreement Date": r"entered into as of",
    "Effective Date": r"effective as of",
    "Expiration Date": r"shall expire",
    "Renewal Term": r"automatically renew",
    "Notice Period To Terminate Renewal": r"notice of non-renewal",
    "Termination For Convenience": r"for convenience",
    "Cap On Liability": r"liability exceed",
    "Uncapped Liability": r"shall not apply",
    "Governing Law": r"governed by",
    "Minimum Commitment": r"minimum purchase",
    "Price Restrictions": r"price increase",
    "Exclusivity": r"exclusive",
    "Change Of Control": r"change of control",
    "Anti-Assignment": r"may assign",
}


class KeywordModel:
    """Stands in for :class:`ClauseModel`: 0.9 where a category's keyword occurs, else 0.02."""

    version = "keywords-test"

    def __init__(self, overrides: dict[str, float] | None = None) -> None:
        self.categories = CATEGORIES
        self.thresholds = dict.fromkeys(CATEGORIES, 0.5)
        self.overrides = overrides or {}

    def score(self, text: str, chunks: Any = None) -> tuple[list[Any], np.ndarray, np.ndarray]:
        chunks = chunk_text(text)
        proba = np.full((len(chunks), len(CATEGORIES)), 0.02)
        for i, ch in enumerate(chunks):
            for j, cat in enumerate(CATEGORIES):
                if re.search(KEYWORDS[cat], ch.text, re.I):
                    proba[i, j] = self.overrides.get(cat, 0.9)
        return chunks, proba, np.zeros((len(chunks), 384), dtype=np.float32)

    def evidence(self, vector: Any, category: str, k: int = 2) -> list[dict[str, Any]]:
        return []


def _source(text: str = CONTRACT) -> ContractSource:
    return ContractSource(text=text, name="msa.txt", sha256="0" * 64)


# --- text tools ------------------------------------------------------------------------------------


def test_chunks_and_term_spans_index_the_text_exactly() -> None:
    rows = load_cuad(public_data_dir() / "contracts" / "cuad_test.jsonl", limit=1)
    for text in (CONTRACT, rows[0].text[:20_000]):
        chunks = chunk_text(text)
        assert chunks and all(text[c.start:c.end] == c.text for c in chunks)
        assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:], strict=False))
    summary = analyse(_source(), KeywordModel(), ClausePolicy(), today=date(2024, 1, 1))  # type: ignore[arg-type]
    spans = [s for t in summary.terms for s in t.spans] + [s for d in summary.deviations for s in d.spans]
    assert spans and all(CONTRACT[s.start:s.end] == s.text for s in spans)
    for sentence in summary.summary:
        assert sentence.spans and all(CONTRACT[s.start:s.end] == s.text for s in sentence.spans)


def test_duration_and_date_normalisation() -> None:
    assert [(d.value, d.unit, d.days) for d in find_durations("ninety (90) days prior")] == [(90, "day", 90)]
    assert [d.label for d in find_durations("one (1) year, 12 months, sixty days, twenty-four (24) months")] == [
        "1 year", "12 months", "60 days", "24 months"]
    assert word_number("one hundred twenty") == 120
    text = "dated the 1st day of March, 2019; October 1, 2019; 10/1/19; 2020-12-31; Dec. 31, 2020"
    found = find_dates(text)
    assert [d.value for d in found] == [date(2019, 3, 1), date(2019, 10, 1), date(2019, 10, 1), date(2020, 12, 31),
                                        date(2020, 12, 31)]
    assert all(text[d.start:d.end] for d in found)
    assert find_governing_law("governed by the laws of the State of New York")[0] == "New York"  # type: ignore[index]


def test_span_candidates_for_parties_and_dates() -> None:
    from signoff.tools.contracts import date_candidates, party_candidates

    found = {CONTRACT[s:e]: kind for kind, s, e in party_candidates(CONTRACT, chunk_text(CONTRACT))}
    assert found.get("Acme Software, Inc.") == "entity" and found.get("Globex Corporation") == "entity"
    assert found.get("Provider") == "quoted" and found.get("Customer") == "quoted"
    text = ("made this 20t h day of January, 2020 by SIEMENS AKTIENGESELLSCHAFT; this ____ day of ________, 2000; "
            "signed 3-14-18 and [•], 2020; on October 1, 2019")
    dates = {text[s:e] for _k, s, e in date_candidates(text)}
    assert {"20t h day of January, 2020", "this ____ day of ________, 2000", "3-14-18", "[•], 2020",
            "October 1, 2019"} <= dates
    assert "SIEMENS AKTIENGESELLSCHAFT" in {text[s:e] for _k, s, e in party_candidates(text)}


def test_terms_deadline_and_deviations() -> None:
    c = analyse(_source(), KeywordModel(), load_clause_policy(), today=date(2024, 1, 1))  # type: ignore[arg-type]
    t = {x.key: x for x in c.terms}
    assert t["agreement_date"].value == "2023-03-01" and t["agreement_date"].spans[0].text == "March 1, 2023"
    assert t["effective_date"].value == "2023-03-15"
    assert t["expiration_date"].value["date"] == "2025-03-14"
    assert t["renewal_term"].value["auto_renewal"] is True
    assert t["renewal_term"].value["term"]["label"] == "1 year"
    assert t["notice_period"].value["days"] == 90
    assert t["governing_law"].value == "Texas"
    assert "Acme Software, Inc." in t["parties"].value
    assert c.notice_deadline == "2024-12-14"  # 2025-03-14 minus 90 days
    rules = {d.rule for d in c.deviations}
    assert rules == {"auto_renewal_notice", "uncapped_liability", "customer_termination_for_convenience",
                     "governing_law"}
    # an expiration long past rolls forward by renewal terms (the contract auto-renewed)
    later = analyse(_source(), KeywordModel(), load_clause_policy(), today=date(2026, 1, 1))  # type: ignore[arg-type]
    assert later.notice_deadline == "2026-12-14"
    # the term has not ended (expires 2025-03-14) but its notice deadline (2024-12-14) has passed: the
    # contract will renew, so the next deadline is the next term's, and the summary does not claim a renewal
    missed = analyse(_source(), KeywordModel(), load_clause_policy(), today=date(2025, 1, 1))  # type: ignore[arg-type]
    assert missed.notice_deadline == "2025-12-14"
    text = " ".join(s.text for s in missed.summary)
    assert "rolled forward 1 renewal term(s) from 2025-03-14" in text and "auto-renewed" not in text, text
    # an allowed jurisdiction and a short notice are not flagged
    ok = analyse(_source(CONTRACT.replace("Texas", "Delaware").replace("ninety (90)", "thirty (30)")),
                 KeywordModel(), load_clause_policy(), today=date(2024, 1, 1))  # type: ignore[arg-type]
    assert {d.rule for d in ok.deviations} == {"uncapped_liability", "customer_termination_for_convenience"}


def test_below_threshold_is_needs_review_never_a_value() -> None:
    model = KeywordModel({"Governing Law": 0.4, "Notice Period To Terminate Renewal": 0.1})
    policy = load_clause_policy()
    c = analyse(_source(), model, policy, today=date(2024, 1, 1))  # type: ignore[arg-type]
    law, notice = c.term("governing_law"), c.term("notice_period")
    assert law and law.status == "needs_review" and law.value is None and law.spans == []
    assert notice and notice.status == "not_found" and notice.value is None
    assert c.notice_deadline is None
    assert "governing_law" not in {d.rule for d in c.deviations}
    assert not any("Texas" in s.text for s in c.summary)
    # the clause policy can raise a threshold above the model's
    strict = ClausePolicy(min_confidence={"Exclusivity": 0.95, "Governing Law": 0.95})
    c2 = analyse(_source(), KeywordModel(), strict, today=date(2024, 1, 1))  # type: ignore[arg-type]
    assert c2.term("governing_law").status == "needs_review"  # type: ignore[union-attr]


def test_summary_phrases_an_end_that_is_not_a_date() -> None:
    from signoff.agents.contracts import summarise
    from signoff.domain import ContractSummary, ContractTerm, SourceSpan

    span = SourceSpan(start=0, end=10, text="in perpetuity")

    def sentence(value: dict[str, Any]) -> list[str]:
        term = ContractTerm(key="expiration_date", category="Expiration Date", status="found", confidence=0.9,
                            threshold=0.5, spans=[span], value=value)
        summary = ContractSummary(thread_id="t", name="c", sha256="0" * 64, n_chars=10, terms=[term])
        return [s.text for s in summarise({"expiration_date": term}, summary, "")]

    assert sentence({"date": None, "basis": "perpetual"}) == ["The agreement has no fixed end (perpetual)."]
    assert sentence({"date": "2025-03-14", "basis": "stated"}) == ["The initial term ends 2025-03-14."]
    assert sentence({"date": "2026-02-28", "basis": "3 years from effective date 2023-03-01"}) == [
        "The initial term ends 2026-02-28 (3 years from effective date 2023-03-01)."]
    three_years = {"value": 3, "unit": "year", "days": 1095, "label": "3 years", "source": {"start": 0, "end": 5}}
    assert sentence({"date": None, "basis": "3 years initial term; start date not found", "term": three_years}) == [
        "The initial term is 3 years; its start date was not found, so its end is not known."]
    assert sentence({"date": None, "basis": None}) == []  # nothing to say: no sentence, never "ends None"
    # through the agent: a contract that runs in perpetuity
    text = CONTRACT.replace("The initial term shall expire on March 14, 2025.",
                            "This Agreement shall expire only if terminated and otherwise continues in perpetuity.")
    c = analyse(_source(text), KeywordModel(), load_clause_policy(), today=date(2024, 1, 1))  # type: ignore[arg-type]
    assert c.term("expiration_date").value == {"date": None, "basis": "perpetual"}  # type: ignore[union-attr]
    said = [s.text for s in c.summary]
    assert "The agreement has no fixed end (perpetual)." in said and not any("ends perpetual" in t for t in said)


# --- files and PDF -----------------------------------------------------------------------------------


def _tiny_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with text (Helvetica), written with pypdf's object model."""
    import io

    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    ops = ["BT", "/F1 11 Tf", "14 TL", "72 720 Td"]
    for line in lines:
        ops.append("(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*")
    ops.append("ET")
    stream = DecodedStreamObject()
    stream.set_data("\n".join(ops).encode("latin-1"))
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_pdf_text_extraction(tmp_path: Path) -> None:
    data = _tiny_pdf(["This Agreement shall be governed by the laws of the State of Delaware.",
                      "Either party may terminate for convenience on thirty (30) days notice."])
    text = pdf_text(data)
    assert "governed by the laws of the State of Delaware" in text
    assert decode_contract(data)[1] == "application/pdf"
    path = tmp_path / "c.pdf"
    path.write_bytes(data)
    source = load_file(path)
    assert source.mimetype == "application/pdf" and "thirty (30) days" in source.text
    assert source.thread_id.startswith("contract:file:")


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_summarise_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signoff.agents.contracts as contracts_mod
    from signoff.cli import app

    monkeypatch.setattr(contracts_mod, "LazyClauseModel", lambda settings: KeywordModel())
    path = tmp_path / "msa.txt"
    path.write_text(CONTRACT)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["contracts", "summarise", str(path)],
                                    env={"SIGNOFF_DATA_DIR": str(tmp_path), "COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "governing_law" in result.output and "Texas" in result.output
    assert "needs review" not in result.output.lower() or "Needs review" in result.output
    assert "2024" in result.output or "deadline" in result.output.lower()
    assert "uncapped_liability" in result.output
    assert "Report only" in result.output
    bad = CliRunner().invoke(app, ["contracts", "summarise"])
    assert bad.exit_code == 2


def test_a_notice_period_not_shorter_than_the_term_goes_to_review_and_sets_no_deadline() -> None:
    text = CONTRACT.replace("at least ninety (90) days prior", "at least three (3) years prior")
    c = analyse(_source(text), KeywordModel(), load_clause_policy(), today=date(2024, 1, 1))  # type: ignore[arg-type]
    notice = next(t for t in c.terms if t.key == "notice_period")
    assert notice.status == "needs_review" and notice.value is None and notice.spans == []
    assert "not shorter than the 365-day term" in notice.evidence[0]["note"]  # the renewal term it ends
    assert c.notice_deadline is None, "no deadline from a misread notice"
    fine = analyse(_source(), KeywordModel(), load_clause_policy(), today=date(2024, 1, 1))  # type: ignore[arg-type]
    assert next(t for t in fine.terms if t.key == "notice_period").status == "found"


def test_files_that_are_not_contracts_are_refused_with_the_reason(tmp_path: Path) -> None:
    import zipfile

    from signoff.cli import app
    from signoff.tools.contracts import MAX_CONTRACT_CHARS

    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\t\n")
    (tmp_path / "noise.txt").write_bytes(bytes(range(256)) * 80)
    with zipfile.ZipFile(tmp_path / "msa.docx", "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    (tmp_path / "huge.txt").write_text("The parties agree. " * (MAX_CONTRACT_CHARS // 19 + 1))
    expect = {"empty.txt": "has no text", "blank.txt": "has no text", "noise.txt": "not a text file",
              "msa.docx": "a ZIP archive", "huge.txt": "over the 1,000,000"}
    env = {"SIGNOFF_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
    for name, says in expect.items():
        result = CliRunner().invoke(app, ["contracts", "summarise", str(tmp_path / name)], env=env)
        assert result.exit_code != 0 and says in " ".join(result.output.split()), (name, result.output)
        assert "Traceback" not in result.output


def test_cli_refuses_a_training_limit_below_the_minimum_and_a_non_positive_attachment_id(tmp_path: Path) -> None:
    from signoff.cli import app

    env = {"SIGNOFF_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    for limit in ("0", "-1", "2"):
        result = CliRunner().invoke(app, ["contracts", "train", "--limit", limit], env=env)
        assert result.exit_code == 2, result.output
        assert f"--limit {limit}: the clause model needs at least 3 labelled contracts" in result.output
    assert not (tmp_path / "models").exists() and not (tmp_path / "cache").exists(), "refused before any work"
    for odoo_id in ("0", "-3", str(2**31)):
        result = CliRunner().invoke(app, ["contracts", "summarise", "--odoo-id", odoo_id], env=env)
        assert result.exit_code == 2, result.output
        assert f"no attachment {odoo_id}: an attachment id is a positive integer" in result.output
        assert "Record does not exist" not in result.output


def test_an_unknown_attachment_id_is_no_attachment_n(settings: Settings) -> None:
    from signoff.agents.services import open_runtime
    from signoff.errors import OdooMissingError

    with open_runtime(settings) as rt, contract_runner(rt, model=KeywordModel()) as runner:
        with pytest.raises(OdooMissingError, match=r"^no attachment 987654\b"):
            runner.run(987654)
    from signoff.cli import app

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["contracts", "summarise", "--odoo-id", "987654"], env={
            "SIGNOFF_DATA_DIR": str(settings.data_dir), "SIGNOFF_ODOO_URL": str(settings.odoo_url),
            "SIGNOFF_ODOO_DB": settings.odoo_db, "COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1 and "error: no attachment 987654" in result.output, result.output
    assert "Record does not exist" not in result.output


# --- Odoo: read-only view, proposals, exactly one activity -----------------------------------------


def test_odoo_attachment_proposals_and_exactly_once(settings: Settings, odoo_writer: Any) -> None:
    from signoff.agents.renewal import resume_thread
    from signoff.agents.services import open_runtime

    order = odoo_writer.search_read("sale.order", [], ["id"], limit=1)[0]["id"]
    att = odoo_writer.create("ir.attachment", {
        "name": "msa.txt", "res_model": "sale.order", "res_id": order, "mimetype": "text/plain",
        "datas": base64.b64encode(CONTRACT.encode()).decode()})
    with open_runtime(settings) as rt, contract_runner(rt, model=KeywordModel(), today=date(2024, 1, 1)) as runner:
        assert type(rt.reader).__name__ == "ReadOnlyOdoo"  # the agent reads through the read-only view
        status, summary = runner.run(att)
        assert status == "paused" and summary is not None
        assert summary.thread_id == f"contract:{settings.odoo_db}:{att}"
        proposals = {rt.store.get(pid).action: rt.store.get(pid) for pid in summary.proposal_ids}
        assert set(proposals) == {RENEWAL_ACTION, LEGAL_ACTION}
        reminder = proposals[RENEWAL_ACTION]
        assert reminder.args["deadline"] == "2024-11-14"  # 30 days before the 2024-12-14 notice deadline
        assert reminder.approver_group == "cs-leads" and proposals[LEGAL_ACTION].approver_group == "legal"
        assert runner.run(att)[0] == "duplicate"  # a second event starts nothing
        from signoff.cli import app

        env = {"SIGNOFF_DATA_DIR": str(settings.data_dir), "SIGNOFF_ODOO_URL": str(settings.odoo_url),
               "COLUMNS": "300"}
        for p, says in ((proposals[LEGAL_ACTION], "deviation "), (reminder, "source [")):
            shown = CliRunner().invoke(app, ["approvals", "show", p.id], env=env)
            assert shown.exit_code == 0 and says in shown.output, shown.output
            assert "similar (0.00, None)" not in shown.output

        rt.approvals.decide(Decision(proposal_id=reminder.id, verdict="approve", actor="cli:cslead"))
        assert resume_thread(rt, reminder.thread_id, "cli:cslead") is None  # legal review still pending
        legal = proposals[LEGAL_ACTION]
        rt.approvals.decide(Decision(proposal_id=legal.id, verdict="reject", actor="cli:legal",
                                     reason="known deviations, accepted"))
        result = resume_thread(rt, reminder.thread_id, "cli:legal")
        assert result is not None and result.status == "done"
        assert rt.store.get(reminder.id).state == "executed" and rt.store.get(legal.id).state == "rejected"

        def activities(pid: str) -> list[dict[str, Any]]:
            return odoo_writer.search_read("mail.activity", [["res_model", "=", "sale.order"], ["res_id", "=", order],
                                                             ["summary", "ilike", f"[signoff:{pid}]"]], ["id"])

        assert len(activities(reminder.id)) == 1 and activities(legal.id) == []
        # executing again (a retried node, a recovery sweep) creates nothing new
        rt.executor.execute(reminder.id)
        runner.recover()
        assert len(activities(reminder.id)) == 1


# --- the real clause model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClauseModel, list[Any]]:
    """The real clause model fitted once on three short CUAD dev contracts (shared by the tests below)."""
    rows = load_cuad(public_data_dir() / "contracts" / "cuad_dev.jsonl")
    small = sorted((r for r in rows if r.spans["Governing Law"]), key=lambda r: len(r.text))[:3]
    return ClauseModel(cache_dir=tmp_path_factory.mktemp("cache")).fit(small), small


def test_clause_model_fits_calibrates_saves_and_loads(tmp_path: Path, small_fit: Any) -> None:
    model, small = small_fit
    model.chroma_url = None
    assert set(model.thresholds) == set(CATEGORIES) and all(0 < t <= 1 for t in model.thresholds.values())
    saved = model.save(tmp_path / "models")
    loaded = ClauseModel.load(tmp_path / "models", cache_dir=tmp_path / "cache")
    assert loaded.version == model.version and saved.name == model.version
    chunks, proba, vecs = loaded.score(CONTRACT)
    assert proba.shape == (len(chunks), len(CATEGORIES)) and ((proba >= 0) & (proba <= 1)).all()
    law = CATEGORIES.index("Governing Law")
    best = chunks[int(np.argmax(proba[:, law]))]
    assert "governed by" in best.text  # even three contracts teach "governed by"
    ev = loaded.evidence(vecs[best.index], "Governing Law", k=1)
    assert ev and ev[0]["contract"] in {r.id for r in small}
    # the span ranker (second stage) is saved and loaded with the model; its candidates index the text
    assert model.ranker is not None and loaded.ranker is not None
    assert loaded.ranker.use == model.ranker.use and loaded.ranker.thresholds == model.ranker.thresholds
    cands = loaded.candidates(CONTRACT, chunks, proba)
    assert set(cands) == set(CATEGORIES)
    assert all(0 <= c.start < c.end <= len(CONTRACT) and 0.0 <= c.score <= 1.0 for v in cands.values() for c in v)


def test_legal_review_decided_in_odoo_by_the_legal_member(settings: Settings, odoo_standin: Any,
                                                          odoo_writer: Any, tmp_path: Path) -> None:
    """The default policy's ``legal`` group has an ``odoo:`` member (bob, uid 6 in the stand-in), so a
    legal review posted as an Odoo activity is assigned to him and can be decided in Odoo."""
    import yaml

    from signoff.agents.renewal import resume_thread
    from signoff.agents.services import open_runtime
    from signoff.guardrails.policy import DEFAULT_POLICY_PATH, load_policy
    from signoff.integrations.odoo import OdooWriter

    assert "odoo:6" in load_policy(DEFAULT_POLICY_PATH).members("legal")
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    policy["actions"][LEGAL_ACTION]["channel"] = "odoo"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    odoo_settings = settings.model_copy(update={"policy_path": tmp_path / "policy.yaml"})
    order = odoo_writer.search_read("sale.order", [], ["id"], limit=1)[0]["id"]
    att = odoo_writer.create("ir.attachment", {
        "name": "msa.txt", "res_model": "sale.order", "res_id": order, "mimetype": "text/plain",
        "datas": base64.b64encode(CONTRACT.encode()).decode()})
    with open_runtime(odoo_settings) as rt, contract_runner(rt, model=KeywordModel(), today=date(2024, 1, 1)) as runner:
        _status, summary = runner.run(att)
        assert summary is not None
        legal = next(rt.store.get(pid) for pid in summary.proposal_ids if rt.store.get(pid).action == LEGAL_ACTION)
        assert legal.channel == "odoo" and legal.args["owner_uid"] == 6
        assert rt.odoo_channel.poll().posted == 1
        bob = OdooWriter.connect(odoo_standin.url, settings.odoo_db, "bob", "bob", timeout=5.0)
        acts = bob.search_read("mail.activity", [["summary", "like", legal.id]], ["id", "user_id"])
        assert len(acts) == 1 and acts[0]["user_id"][0] == 6
        bob.call("mail.activity", "action_feedback", [acts[0]["id"]], feedback="reviewed")
        rt.odoo_channel.poll()
        decided = rt.store.get(legal.id)
        assert decided.state == "approved" and decided.decided_by == "odoo:6"
        reminder = next(pid for pid in summary.proposal_ids if pid != legal.id)
        rt.approvals.decide(Decision(proposal_id=reminder, verdict="reject", actor="cli:cslead", reason="not now"))
        result = resume_thread(rt, legal.thread_id, "odoo:6")
        assert result is not None and result.status == "done"
        assert rt.store.get(legal.id).state == "executed"


# --- Chroma as a server (SIGNOFF_CHROMA_URL) ---------------------------------------------------------


@pytest.fixture
def chroma_server(tmp_path: Path) -> Any:
    """A real Chroma server (the installed package's ``chroma run``) on a free 127.0.0.1 port."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    exe = Path(sys.executable).with_name("chroma")
    assert exe.is_file(), "chromadb ships the `chroma` CLI"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "chroma.log").open("wb")
    proc = subprocess.Popen([str(exe), "run", "--host", "127.0.0.1", "--port", str(port),
                             "--path", str(tmp_path / "chroma-server")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "chroma.log").read_text()
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Chroma server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_labelled_clauses_on_a_chroma_server(tmp_path: Path, small_fit: Any, chroma_server: str) -> None:
    import json

    import chromadb

    from signoff.llm.clauses import collection_name

    model, small = small_fit
    model.chroma_url = chroma_server
    try:
        saved = model.save(tmp_path / "models")
    finally:
        model.chroma_url = None
    assert not (saved / "chroma").exists(), "no on-disk collection when a server is configured"
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["examples"] == {"store": "chroma-server", "collection": collection_name(model.version)}
    port = int(chroma_server.rsplit(":", 1)[1])
    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    collection = client.get_collection(collection_name(model.version))
    n = collection.count()
    assert n == len(model._ex_texts) > 0
    # the collection is embedded with our function, never Chroma's downloading default
    assert "signoff-minilm-onnx-int8" in json.dumps(collection.configuration_json)

    loaded = ClauseModel.load(tmp_path / "models", chroma_url=chroma_server)
    chunks, _proba, vecs = loaded.score(CONTRACT)
    law = next(c for c in chunks if "governed by" in c.text)
    ev = loaded.evidence(vecs[law.index], "Governing Law", k=1)
    assert ev and ev[0]["contract"] in {r.id for r in small}
    # a fresh server (collection gone) gets the model's examples published again on load
    client.delete_collection(collection_name(model.version))
    again = ClauseModel.load(tmp_path / "models", chroma_url=chroma_server)
    assert again.examples is not None and again.examples.count() == n


def test_chroma_url_setting_reaches_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signoff.agents.contracts as contracts_mod

    seen: dict[str, Any] = {}
    monkeypatch.setattr(contracts_mod.ClauseModel, "load",
                        classmethod(lambda cls, d, **kw: seen.update(kw) or KeywordModel()))
    monkeypatch.setenv("SIGNOFF_CHROMA_URL", "http://127.0.0.1:1")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.chroma_url == "http://127.0.0.1:1"
    assert contracts_mod.LazyClauseModel(settings).version == "keywords-test"
    assert seen["chroma_url"] == "http://127.0.0.1:1"
    from signoff.errors import DataError
    from signoff.llm.clauses import ExampleStore

    with pytest.raises(DataError):
        ExampleStore(None, None, url="ftp://nowhere")  # type: ignore[arg-type]


# --- the LLM path (a fake OpenAI-compatible server on 127.0.0.1) -------------------------------------


class _FakeLLM:
    """An OpenAI-shaped chat-completions server on 127.0.0.1 answering from a script of (status, content)."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script, self.requests = list(script), []  # type: ignore[var-annotated]
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status, content = fake.script.pop(0) if fake.script else (500, "script exhausted")
                payload = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": 200, "completion_tokens": 20, "total_tokens": 220}}
                data = json.dumps(payload if status == 200 else {"error": {"message": content}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_llm_path_quotes_exact_spans_and_fails_closed_to_review() -> None:
    import json

    from signoff.llm.clause_llm import LLMSpanPicker, picker_for
    from signoff.llm.openai_backend import make_chat

    law = json.dumps({"label": "c1", "quote": "the laws of the State of Texas", "rationale": "governing law clause"})
    fake = _FakeLLM([
        (200, json.dumps({"label": "c1", "quote": "Acme Software Inc", "rationale": "x"})),  # not in the text
        (200, json.dumps({"label": "c9", "quote": "Acme", "rationale": "x"})),  # no such candidate
        (500, "boom"),  # Expiration Date: the endpoint fails
        (200, law), (200, law),  # Governing Law: the answer, then one sample that agrees
    ])
    try:
        chat = make_chat(base_url=fake.url, api_key="sk-test", model="fake", max_retries=0, max_tokens=256)
        picker = LLMSpanPicker(chat, model_name="fake", confidence="samples", samples=2,
                               categories=("Parties", "Expiration Date", "Governing Law"))
        c = analyse(_source(), KeywordModel(), load_clause_policy(), today=date(2024, 1, 1),  # type: ignore[arg-type]
                    llm=picker)
    finally:
        fake.close()
    assert len(fake.requests) == 5
    assert fake.requests[0]["response_format"]["json_schema"]["name"] == "contract_span"
    assert "[c1]" in fake.requests[0]["messages"][1]["content"]
    assert "not an exact substring" in fake.requests[1]["messages"][-1]["content"]  # the error went back
    t = {x.key: x for x in c.terms}
    gl = t["governing_law"]
    assert gl.status == "found" and gl.value == "Texas" and gl.confidence == 1.0
    assert len(gl.spans) == 1 and CONTRACT[gl.spans[0].start:gl.spans[0].end] == "the laws of the State of Texas"
    assert gl.evidence[0]["llm"]["usage"]["calls"] == 2
    assert gl.evidence[0]["llm"]["usage"]["confidence_method"] == "samples"
    for key in ("parties", "expiration_date"):  # fail closed: a person looks, nothing is guessed
        assert t[key].status == "needs_review" and t[key].spans == [] and t[key].value is None
    assert "invalid answer twice" in t["parties"].evidence[0]["llm"]["reason"]
    assert "fake" in t["expiration_date"].evidence[0]["llm"]["reason"]
    assert t["renewal_term"].status == "found"  # categories the LLM does not cover: the embedded model
    assert c.notice_deadline is None  # no expiration found, so no deadline is computed
    assert "+llm:fake:contract_span.v1@" in c.model_version
    assert picker_for(Settings(_env_file=None)) is None  # type: ignore[call-arg]
