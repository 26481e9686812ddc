"""Eval runner: metric functions against hand-computed values, suite loading, the smoke suite through
the CLI (JSON + HTML), bless / gate (pass, and fail for a worse model), resumability, thresholds,
recorded human decisions (figures by hand, export from a SQLite approvals store)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from signoff.config import Settings, get_settings
from signoff.domain import Proposal, proposal_id
from signoff.errors import DataError
from signoff.evals import metrics as M
from signoff.evals.decisions import DecisionRecord, decision_metrics, edit_distance, levenshtein, load_decisions
from signoff.evals.runner import CaseArrays, compute_metrics, load_suite_decisions, run_suite
from signoff.evals.suite import load_cases, load_suite
from signoff.guardrails.policy import DEFAULT_POLICY_PATH, load_policy
from signoff.guardrails.store import SqliteApprovalStore

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "evals" / "smoke.yaml"

# --- metrics, by hand --------------------------------------------------------------------------------


def test_accuracy_and_macro_f1() -> None:
    assert M.accuracy(["a", "b", "c", "a"], ["a", "b", "a", "a"]) == 0.75
    # a: P 1, R 1/2, F1 2/3; b: P 2/3, R 1, F1 4/5
    assert M.macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx((2 / 3 + 0.8) / 2)
    # a label only predicted (never gold) counts with F1 0, like sklearn's macro average
    assert M.macro_f1(["a", "a"], ["a", "c"]) == pytest.approx((2 / 3 + 0) / 2)
    pc = M.per_class(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert pc["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    labels, m = M.confusion(["a", "a", "b"], ["a", "b", "b"])
    assert labels == ["a", "b"] and m.tolist() == [[1, 1], [0, 1]]


def test_ece_brier_reliability() -> None:
    conf, correct = [0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1]
    # bin (0.8, 0.9]: |0.5 - 0.9| * 1/2; bin (0.5, 0.6]: |1 - 0.6| * 1/2
    assert M.expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(0.4)
    assert M.expected_calibration_error([1.0, 0.0], [1, 0], n_bins=10) == pytest.approx(0.0)
    proba = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert M.brier(proba, [0, 0]) == pytest.approx(((0.09 + 0.09) + (0.36 + 0.36)) / 2)
    assert M.brier_terms(proba, [-1, 1]).tolist() == pytest.approx([0.49 + 0.09, 0.32])
    bins = M.reliability_bins(conf, correct, n_bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    assert bins[8]["accuracy"] == 0.5 and bins[8]["confidence"] == pytest.approx(0.9)


def test_selective_oos_and_thresholds() -> None:
    assert M.selective([0.9, 0.8, 0.5, 0.3], [1, 0, 1, 0], 0.8) == (0.5, 0.5)
    gold, pred, conf = ["oos", "oos", "oos", "a"], ["oos", "a", "a", "a"], [0.9, 0.3, 0.9, 0.9]
    assert M.oos_recall(gold, pred, conf, oos_label="oos", threshold=0.5) == pytest.approx(2 / 3)
    assert M.in_scope_accuracy(gold, pred, conf, oos_label="oos", threshold=0.5) == 1.0
    rec = M.threshold_for_precision([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], 0.75)
    assert rec == {"threshold": 0.6, "coverage": 1.0, "precision": 0.75, "n_accepted": 4}
    assert M.threshold_for_precision([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], 0.9)["threshold"] == 0.8
    assert M.threshold_for_precision([0.9, 0.9], [1, 0], 0.9)["threshold"] is None  # ties stay together
    curve = M.risk_coverage([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 1])
    assert curve["risk"] == pytest.approx([0, 0.5, 1 / 3, 0.25])


def test_triage_metrics_use_the_graph_gate() -> None:
    arr = CaseArrays(["1", "2", "3", "4"], np.array(["a", "b", "oos", "oos"], dtype=object),
                     np.array(["a", "a", "oos", "a"], dtype=object), np.array([0.9, 0.85, 0.95, 0.4]),
                     np.array([0.1, 0.2, 0.3, 0.4]))
    m = compute_metrics(arr, threshold=0.8, oos_label="oos")
    assert m["accuracy"] == 0.5 and m["coverage"] == 0.75
    assert m["selective_accuracy"] == pytest.approx(2 / 3)
    assert m["oos_recall"] == 1.0  # one predicted oos, one below the threshold
    assert m["brier"] == pytest.approx(0.25)
    # no threshold in the policy: the graph never proposes (fail closed), so coverage is 0
    assert compute_metrics(arr, threshold=None, oos_label=None)["coverage"] == 0.0


def test_span_matching_cuad_style() -> None:
    assert M.word_jaccard("the cat sat", "Cat sat, down") == 0.5
    gold = {"c1/law": ["governed by the laws of New York"], "c1/term": ["a term of five years"]}
    preds = [("c1/law", "laws of New York", 0.9), ("c1/term", "five years", 0.2), ("c1/law", "Delaware", 0.7)]
    s = M.span_scores(preds, gold)
    # law: 4/7 >= 0.5 (hit); term: {five, years} / {a, term, of, five, years} = 0.4 (miss); Delaware: miss
    assert s["span_precision"] == pytest.approx(1 / 3) and s["span_recall"] == 0.5
    assert s["span_f1"] == pytest.approx(0.4)
    assert s["precision_at_80_recall"] == 0.0  # 80 % recall never reached
    preds[1] = ("c1/term", "term of five years", 0.2)
    s = M.span_scores(preds, gold)
    # ranked: hit (P 1, R .5), miss (P .5), hit (P 2/3, R 1); interpolated precision at R >= .8 = 2/3
    assert s["span_f1"] == pytest.approx(0.8) and s["precision_at_80_recall"] == pytest.approx(2 / 3)
    # one prediction cannot match the same gold span twice
    assert M.span_scores([("k", "x y", 0.9), ("k", "x y", 0.8)], {"k": ["x y"]})["span_precision"] == 0.5


def test_roc_pr_auc_and_paired_tests() -> None:
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert np.isnan(M.roc_auc([1, 1], [0.2, 0.3]))
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 300), rng.integers(0, 20, 300) / 20  # many tied scores
    assert M.roc_auc_fast(y, p) == pytest.approx(M.roc_auc(y, p))
    assert M.pr_auc_fast(y, p) == pytest.approx(M.pr_auc(y, p))
    assert np.isnan(M.roc_auc_fast([1, 1], [0.2, 0.3])) and np.isnan(M.pr_auc_fast([0, 0], [0.2, 0.3]))
    mc = M.mcnemar([True] * 10, [False] * 8 + [True] * 2)
    assert (mc["b"], mc["c"]) == (8, 0) and mc["p_worse"] == pytest.approx(0.5**8)
    assert M.mcnemar([True, False], [True, False])["p_value"] == 1.0
    worse = np.r_[np.ones(80), np.zeros(20)], np.r_[np.ones(50), np.zeros(50)]
    r = M.paired_bootstrap(lambda i: float(worse[1][i].mean() - worse[0][i].mean()), 100,
                           higher_is_better=True, rounds=300)
    assert r["p_worse"] < 0.01 and r["ci_high"] < 0


# --- recorded human decisions -----------------------------------------------------------------------


def _rec(verdict: str, proposed: dict[str, Any] | None = None, final: dict[str, Any] | None = None,
         **extra: Any) -> DecisionRecord:
    return DecisionRecord.model_validate({"verdict": verdict, "action": "ticket.set_category",
                                          "proposed": proposed, "final": final, **extra})


def test_decision_figures_by_hand(tmp_path: Path) -> None:
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("ab", "ab") == 0
    # only the changed field counts: 3 edits / 12 characters ("cancel_order" -> "change_order")
    assert edit_distance({"category": "cancel_order", "team": "Orders"},
                         {"category": "change_order", "team": "Orders"}) == pytest.approx(0.25)
    assert edit_distance({"amount": 100}, {"amount": 120}) == pytest.approx(1 / 3)  # "100" -> "120"
    assert edit_distance({"a": "x"}, {"a": "x", "b": "yz"}) == 1.0  # an added field: all new
    records = [
        _rec("approve", {"category": "a"}), _rec("approve", {"category": "a"}, {"category": "a"}),
        _rec("approve", {"category": "b"}),
        _rec("edit", {"category": "cancel_order"}, {"category": "change_order"}),  # 0.25
        _rec("edit", {"priority": "1"}, {"priority": "3"}),  # 1.0
        _rec("reject", {"category": "c"}, reason="spam"),
        _rec("expired", {"category": "d"}),  # not a decision
        _rec("human_triaged", text="t1", model_label="refund", model_confidence=0.7, human_label="refund"),
        _rec("human_triaged", thread_id="ticket:x:2", model_label="refund", human_label="complaint"),
        _rec("human_triaged", thread_id="ticket:x:3", model_label="track_order", model_confidence=0.5,
             human_label="track_order"),
        _rec("human_triaged", thread_id="ticket:x:4", model_label="a", human_label="b"),
    ]
    values, detail = decision_metrics(records)
    assert values == pytest.approx({"approval_rate": 3 / 6, "edit_rate": 2 / 6, "reject_rate": 1 / 6,
                                    "mean_edit_distance": (0.25 + 1.0) / 2, "gate_overcaution": 2 / 4})
    assert detail["counts"] == {"approve": 3, "edit": 2, "reject": 1, "expired": 1, "human_triaged": 4}
    assert detail["n_decided"] == 6 and detail["triaged_agreed_mean_confidence"] == pytest.approx(0.6)
    assert detail["by_action"]["ticket.set_category"]["expired"] == 1
    empty, _ = decision_metrics([_rec("expired", {"category": "d"})])
    assert all(np.isnan(v) for v in empty.values())
    # a malformed file names its line
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"verdict": "approve", "proposed": {"c": "a"}}\n\n'
                   '{"verdict": "approve", "proposed": {"c": "a"}, "final": {"c": "b"}}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:3: .*that is an edit"):
        load_decisions(bad)
    bad.write_text('{"verdict": "human_triaged", "text": "x", "model_label": "a"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: .*needs model_label and human_label"):
        load_decisions(bad)
    bad.write_text('{"verdict": "maybe", "proposed": {}}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: .*verdict"):
        load_decisions(bad)


def test_decisions_are_exported_from_a_sqlite_store(tmp_path: Path) -> None:
    store = SqliteApprovalStore(tmp_path / "signoff.sqlite")

    def add(n: int, state: str, args: dict[str, Any], **changes: Any) -> str:
        thread = f"ticket:test:{n}"
        pid = proposal_id(thread, "ticket.set_category", "helpdesk.ticket", n, args)
        store.add(Proposal(id=pid, thread_id=thread, action="ticket.set_category", target_model="helpdesk.ticket",
                           target_id=n, args=args, confidence=0.9, approver_group="support", state=state,
                           **changes))
        return pid

    approved = add(1, "executed", {"category": "track_order"}, decided_by="cli:alice")
    edited = add(2, "approved", {"category": "cancel_order"}, decided_by="cli:bob",
                 edited_args={"category": "change_order"}, decision_reason="wants a change")
    rejected = add(3, "rejected", {"category": "complaint"}, decided_by="cli:alice", decision_reason="spam")
    add(4, "expired", {"category": "review"}, decided_by="system:expiry")
    add(5, "pending", {"category": "get_refund"})  # undecided: not exported
    add(6, "cancelled", {"category": "get_refund"})  # withdrawn by the system: not a human decision
    same = add(7, "failed", {"category": "get_invoice"}, decided_by="cli:bob",  # an "edit" to the same values
               edited_args={"category": "get_invoice"})

    out = tmp_path / "out" / "decisions.jsonl"
    result = _cli({"SIGNOFF_DATA_DIR": str(tmp_path)}, "--export-decisions", str(out))
    assert result.exit_code == 0, result.output
    assert "5 decided proposals" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["proposal_id"]: r for r in rows}
    assert len(rows) == 5 and by_id[approved]["verdict"] == "approve" and by_id[same]["verdict"] == "approve"
    assert by_id[edited] == {"proposal_id": edited, "thread_id": "ticket:test:2", "action": "ticket.set_category",
                             "proposed": {"category": "cancel_order"}, "final": {"category": "change_order"},
                             "verdict": "edit", "confidence": 0.9, "reason": "wants a change"}
    assert by_id[rejected]["verdict"] == "reject" and by_id[rejected]["final"] == {"category": "complaint"}
    values, detail = decision_metrics(load_decisions(out))  # the export reads back as a suite's decisions
    assert detail["counts"]["expired"] == 1 and values["approval_rate"] == pytest.approx(2 / 4)
    assert values["mean_edit_distance"] == pytest.approx(0.25)
    missing = _cli({"SIGNOFF_DATA_DIR": str(tmp_path / "nowhere")}, "--export-decisions", str(out))
    assert missing.exit_code == 2 and "no approvals store" in missing.output
    assert _cli({"SIGNOFF_DATA_DIR": str(tmp_path)}).exit_code == 2  # neither a suite nor an export


# --- suites --------------------------------------------------------------------------------------------


def _write_suite(tmp: Path, **changes: Any) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if data.get("decisions") and not Path(data["decisions"]).is_absolute() and "decisions" not in changes:
        data["decisions"] = str(SMOKE.parent / data["decisions"])  # the copy lives elsewhere
    path = tmp / f"suite-{len(list(tmp.glob('suite-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_suite_errors_name_the_problem(tmp_path: Path) -> None:
    from signoff.evals.suite import find_suite

    repo_evals = Path(__file__).resolve().parent.parent / "evals"
    with pytest.raises(DataError, match=r"suite 'smok' not found.*suites in .*: .*smoke.*triage-bitext"):
        find_suite("smok", repo_evals)
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    suite = load_suite(_write_suite(tmp_path, dataset={"path": "tickets/nope.jsonl"}))
    with pytest.raises(DataError, match=r"tickets/nope\.jsonl.*not found.*nope\.jsonl"):
        load_cases(suite.dataset, suite, settings.public_data_dir)
    with pytest.raises(DataError, match="exactly one of 'train'"):
        load_suite(_write_suite(tmp_path, model="default"))
    with pytest.raises(DataError, match="unknown metrics"):
        load_suite(_write_suite(tmp_path, metrics=["accuracy", "vibes"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "hi", "intent": "x"}\n{"id": "2", "text": "", "intent": "y"}\n')
    suite = load_suite(_write_suite(tmp_path, dataset={"path": str(bad)}))
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'text'"):
        load_cases(suite.dataset, suite, settings.public_data_dir)
    with pytest.raises(DataError, match="cannot read suite"):
        load_suite(tmp_path / "missing.yaml")
    with pytest.raises(DataError, match="no tolerance for .'approval_rate'"):
        load_suite(_write_suite(tmp_path, tolerances={"approval_rate": 0.1}))
    with pytest.raises(DataError, match="decision metrics need 'decisions'"):
        load_suite(_write_suite(tmp_path, decisions=None, metrics=["accuracy", "edit_rate"]))
    suite = load_suite(_write_suite(tmp_path, decisions="decisions/nope.jsonl"))
    with pytest.raises(DataError, match=r"decisions file 'decisions/nope\.jsonl' not found"):
        load_suite_decisions(suite, settings)


# --- end to end ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str | None]]:
    """A data dir shared by the end-to-end tests (models and embeddings are cached there)."""
    if not (Settings(_env_file=None).public_data_dir / "tickets" / "bitext_dev.jsonl").is_file():  # type: ignore[call-arg]
        pytest.skip("public data not available")
    data = tmp_path_factory.mktemp("evals-data")
    env: dict[str, str | None] = {"SIGNOFF_DATA_DIR": str(data), "SIGNOFF_POLICY_PATH": None, "SIGNOFF_MODEL_DIR": None}
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def _cli(env: dict[str, str | None], *args: str) -> Any:
    from signoff.cli import app

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["eval", *args], env=env)
    finally:
        get_settings.cache_clear()


def test_smoke_suite_through_the_cli_writes_json_and_html(eval_env: dict[str, str | None], tmp_path: Path) -> None:
    """The shipped smoke suite, gated against its committed baseline (evals/baselines/smoke.json)."""
    result = _cli(eval_env, str(SMOKE), "--json", str(tmp_path / "smoke.json"), "--html", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "smoke.json").read_text())
    assert doc["suite"] == "smoke" and doc["n"] == 150
    assert set(doc["metrics"]) == {"accuracy", "macro_f1", "ece", "brier", "coverage", "selective_accuracy",
                                   "approval_rate", "edit_rate", "reject_rate", "mean_edit_distance",
                                   "gate_overcaution"}
    # evals/decisions/smoke-decisions.jsonl: 7 approved, 2 edited, 1 rejected (+1 expired); 3 of 5 held back
    # tickets got the model's label from the human; edits cancel->change_order (3/12), get->check_invoice (4/13)
    assert doc["metrics"]["approval_rate"] == pytest.approx(0.7) and doc["metrics"]["edit_rate"] == pytest.approx(0.2)
    assert doc["metrics"]["reject_rate"] == pytest.approx(0.1) and doc["metrics"]["gate_overcaution"] == 0.6
    assert doc["metrics"]["mean_edit_distance"] == pytest.approx((3 / 12 + 4 / 13) / 2)
    assert doc["decisions"]["counts"]["human_triaged"] == 5 and "approval_rate" in result.output
    assert doc["metrics"]["accuracy"] > 0.8  # 300 training rows, 27 intents
    for key in ("model_version", "dataset_hash", "suite_hash", "runtime_seconds", "threshold", "cost"):
        assert key in doc
    assert doc["threshold"] == load_policy(DEFAULT_POLICY_PATH).actions["ticket.set_category"].min_confidence
    assert doc["cost"]["tokens"] == 0 and doc["cost"]["model_calls"] == 3
    assert len(doc["confusion"]["labels"]) == 20 and len(doc["reliability"]) == 10
    page = (tmp_path / "r.html").read_text()
    for plot in ("reliability-smoke", "confusion-smoke", "risk-coverage-smoke", "decisions-smoke"):
        assert f'id="{plot}"' in page
    assert page.count("<svg") == 3 and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    if (ROOT / "evals" / "baselines" / "smoke.json").is_file():
        assert doc["comparison"]["passed"] and doc["comparison"]["n_shared"] == 150
        assert doc["comparison"]["notes"] == [], "the committed baseline matches the suite, model and data"
    else:
        assert "no baseline" in result.output


def _has(output: str, text: str) -> bool:
    """``text`` is in the CLI output, wherever rich wrapped it (whitespace and box borders ignored)."""
    def squash(s: str) -> str:
        return "".join(re.sub(r"[\u2500-\u257f]", " ", s).split())

    return squash(text) in squash(output)


GOOD_CASES = {"id": ["a", "b"], "gold": ["x", "y"], "pred": ["x", "x"], "conf": [0.9, 1], "brier": [0.02, 1.6]}


@pytest.mark.parametrize(("doc", "problem"), [
    ("not json", "is unreadable"),
    ({}, "unknown format"),
    ([], "unknown format"),
    ({"cases": "zzz"}, "unknown format"),
    ({"format": 1, "cases": "zzz"}, r"cases: Input should be a valid dictionary"),
    ({"format": 1, "cases": {**GOOD_CASES, "pred": None}}, r"cases\.pred: Input should be a valid list"),
    ({"format": 1, "cases": {**GOOD_CASES, "pred": ["x", None]}}, r"cases\.pred\.1: Input should be a valid string"),
    ({"format": 1, "cases": {**GOOD_CASES, "conf": [0.9]}}, r"columns of different lengths.*conf 1"),
    ({"format": 1, "cases": {**GOOD_CASES, "id": ["a", "a"]}}, "case ids are not unique"),
    ({"format": 1, "cases": {"id": ["a"]}}, r"cases\.gold: Field required"),
    ({"format": 1, "agent": "renewal", "cases": {"id": ["a"], "churned": [2], "p": ["high"]}},
     r"cases\.churned\.0: Input should be 0 or 1; cases\.p\.0: Input should be a valid number"),
    ({"format": 1, "agent": "contracts", "cases": {"id": ["a"], "category": ["Parties"], "n_gold": [1],
                                                   "shown": [[[0.5]]], "ranked": [[]], "threshold": [None]}},
     r"cases\.shown\.0\.0\.1: Field required"),
    ({"format": 1, "agent": "vibes", "cases": {}}, r"agent: Input should be 'triage', 'contracts' or 'renewal'"),
    ({"format": 1, "cases": GOOD_CASES, "threshold": "high"}, r"threshold: Input should be a valid number"),
])
def test_a_baseline_of_the_wrong_shape_is_a_data_error_naming_the_file(tmp_path: Path, doc: Any,
                                                                       problem: str) -> None:
    from signoff.evals.gate import load_baseline

    path = tmp_path / "smoke.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataError, match=problem) as caught:
        load_baseline(path)
    assert str(path) in str(caught.value) and "re-bless it with --bless" in str(caught.value)


def test_the_suite_hash_depends_only_on_the_suite_files_content(tmp_path: Path) -> None:
    raw = SMOKE.read_bytes()
    assert b"\r" not in raw
    elsewhere = tmp_path / "copy" / "smoke.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(raw)
    crlf = tmp_path / "crlf.yaml"
    crlf.write_bytes(raw.replace(b"\n", b"\r\n"))  # a Windows checkout (core.autocrlf)
    want = load_suite(SMOKE).sha256
    assert load_suite(elsewhere).sha256 == load_suite(crlf).sha256 == want
    edited = tmp_path / "edited.yaml"
    edited.write_bytes(raw.replace(b"alpha:", b"# a comment\nalpha:") if b"alpha:" in raw else raw + b"# edit\n")
    assert load_suite(edited).sha256 != want


def test_every_committed_baseline_has_the_shape_the_gate_reads() -> None:
    from signoff.evals.gate import load_baseline

    for path in sorted((ROOT / "evals" / "baselines").glob("*.json")):
        assert load_baseline(path) is not None, path


@pytest.mark.parametrize("doc", ["[]", '{"cases": "zzz"}', json.dumps({"format": 1, "cases": {
    "id": ["bitext-00001"], "gold": ["cancel_order"], "pred": None, "conf": [0.9], "brier": [0.1]}})])
def test_a_malformed_baseline_stops_signoff_eval_with_exit_2_before_the_run(
        eval_env: dict[str, str | None], tmp_path: Path, doc: str) -> None:
    (tmp_path / "smoke.json").write_text(doc)
    result = _cli(eval_env, str(SMOKE), "--baseline-dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert _has(result.output, f"baseline {tmp_path / 'smoke.json'}")
    assert _has(result.output, "re-bless it with --bless")
    assert "Traceback" not in result.output
    assert "accuracy" not in result.output, "the suite is not run against a baseline it cannot read"


def test_bless_then_gate_passes_and_a_worse_model_fails(eval_env: dict[str, str | None], tmp_path: Path) -> None:
    baselines = tmp_path / "baselines"
    blessed = _cli(eval_env, str(SMOKE), "--bless", "--baseline-dir", str(baselines))
    assert blessed.exit_code == 0, blessed.output
    doc = json.loads((baselines / "smoke.json").read_text())
    assert len(doc["cases"]["id"]) == 150 and set(doc["cases"]) >= {"id", "gold", "pred", "conf"}

    same = _cli(eval_env, str(SMOKE), "--baseline-dir", str(baselines), "--json", str(tmp_path / "same.json"))
    assert same.exit_code == 0, same.output
    comparison = json.loads((tmp_path / "same.json").read_text())["comparison"]
    assert comparison["passed"] and comparison["n_shared"] == 150 and comparison["mcnemar"]["b"] == 0

    # the same suite, but the model sees only 10 % of its training data
    worse = _write_suite(tmp_path, train={"limit": 30})
    failed = _cli(eval_env, str(worse), "--baseline-dir", str(baselines), "--json", str(tmp_path / "worse.json"))
    assert failed.exit_code == 1, failed.output
    assert "regression" in failed.output and "accuracy" in failed.output
    cmp_ = json.loads((tmp_path / "worse.json").read_text())["comparison"]
    regressed = {c["metric"] for c in cmp_["changes"] if c["regressed"]}
    assert "accuracy" in regressed and not cmp_["passed"]


def test_an_interrupted_run_resumes_without_recomputing(eval_env: dict[str, str | None], tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=Path(str(eval_env["SIGNOFF_DATA_DIR"])))  # type: ignore[call-arg]
    suite = load_suite(_write_suite(tmp_path, name="resume", batch_size=40))  # 150 cases: 4 batches

    class Stop(Exception):
        pass

    def stop_after_two(computed: int) -> None:
        if computed == 2:
            raise Stop

    with pytest.raises(Stop):
        run_suite(suite, settings, on_batch=stop_after_two)
    computed: list[int] = []
    run = run_suite(suite, settings, on_batch=computed.append)
    assert (run.state.n_resumed, run.state.n_computed) == (80, 70) and computed == [1, 2]
    assert run.n == 150 and run.arrays.ids == load_cases(suite.dataset, suite, settings.public_data_dir).ids
    again = run_suite(suite, settings)
    assert (again.state.n_resumed, again.state.n_computed) == (150, 0)
    assert again.values == run.values


def test_recommended_thresholds_are_written_into_a_policy(eval_env: dict[str, str | None], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(DEFAULT_POLICY_PATH.read_text())
    result = _cli(eval_env, str(SMOKE), "--baseline-dir", str(tmp_path), "--recommend-thresholds",
                  "--target-precision", "0.9", "--write-policy", str(policy), "--json", str(tmp_path / "t.json"))
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "t.json").read_text())["recommendation"]
    assert rec["target_precision"] == 0.9 and "held-out 20%" in rec["calibration"]
    written = load_policy(policy)
    before = load_policy(DEFAULT_POLICY_PATH)
    for action in ("ticket.set_category", "ticket.set_team"):
        t = rec["actions"][action]["threshold"]
        assert written.actions[action].min_confidence == pytest.approx(1.0 if t is None else t, abs=1e-3)
        if t is not None:
            assert rec["actions"][action]["precision"] >= 0.9
    assert written.routing == before.routing and written.groups == before.groups
    assert written.actions["ticket.set_priority"] == before.actions["ticket.set_priority"]


def test_write_policy_is_refused_up_front_for_a_non_triage_suite_or_a_missing_directory(
        eval_env: dict[str, str | None], tmp_path: Path) -> None:
    renewal = ROOT / "evals" / "renewal-smoke.yaml"
    policy = tmp_path / "p.yaml"
    wrong = _cli(eval_env, str(renewal), "--recommend-thresholds", "--write-policy", str(policy))
    assert wrong.exit_code == 2, wrong.output
    assert _has(wrong.output, "apply to triage suites only; renewal-smoke is a renewal suite")
    assert not _has(wrong.output, "exactly one suite")
    two = _cli(eval_env, str(SMOKE), str(SMOKE), "--recommend-thresholds", "--write-policy", str(policy))
    assert two.exit_code == 2 and _has(two.output, "--write-policy takes exactly one suite, got 2")
    missing = tmp_path / "nonexistent" / "dir" / "p.yaml"
    nodir = _cli(eval_env, str(SMOKE), "--recommend-thresholds", "--write-policy", str(missing))
    assert nodir.exit_code == 2, nodir.output
    assert _has(nodir.output, f"directory {missing.parent} does not exist") and ".tmp" not in nodir.output
    isdir = _cli(eval_env, str(SMOKE), "--recommend-thresholds", "--write-policy", str(tmp_path))
    assert isdir.exit_code == 2 and _has(isdir.output, "is a directory")
    assert not policy.exists() and not missing.parent.exists()


def test_write_policy_that_cannot_be_written_is_a_policy_error_naming_the_directory(tmp_path: Path) -> None:
    from signoff.errors import PolicyError
    from signoff.evals.thresholds import write_policy

    rec = {"actions": {"ticket.set_category": {"threshold": 0.8}}}
    target = tmp_path / "gone" / "p.yaml"
    with pytest.raises(PolicyError, match=f"cannot write policy {re.escape(str(target))} .in directory "
                                          f"{re.escape(str(target.parent))}."):
        write_policy(target, rec, base=DEFAULT_POLICY_PATH)
    assert not list(tmp_path.rglob("*.tmp"))


# --- contracts (CUAD spans) and renewal (Telco churn) suites -------------------------------------------

RENEWAL_SMOKE = ROOT / "evals" / "renewal-smoke.yaml"
CONTRACTS_SMOKE = ROOT / "evals" / "contracts-smoke.yaml"


def _copy_suite(src: Path, tmp: Path, name: str, **changes: Any) -> Path:
    data = yaml.safe_load(src.read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    if data.get("policy"):
        data["policy"] = str(src.parent / data["policy"])
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_weighted_span_scores_match_span_scores_on_repeated_cases() -> None:
    """The contracts gate resamples contract/category pairs by weighting their matched predictions; that
    must equal span_scores over the same pairs written out repeatedly."""
    from signoff.evals.contracts import ContractsRun

    gold = {"c1/law": ["governed by the laws of New York"], "c1/term": ["a term of five years"],
            "c2/law": ["laws of Delaware"]}
    preds = {"c1/law": [("laws of New York", 0.9), ("Delaware", 0.7)], "c1/term": [("term of five years", 0.2)],
             "c2/law": [("laws of the State of Delaware", 0.6), ("New York", 0.3)]}
    cols: dict[str, list[Any]] = {"id": [], "category": [], "n_gold": [], "shown": [], "ranked": [],
                                  "threshold": []}
    for key, ps in preds.items():
        hits = M.span_hits(ps, gold[key])
        pairs = [[s, h] for (_t, s), h in zip(ps, hits, strict=True)]
        for col, value in (("id", key), ("category", key.split("/")[1]), ("n_gold", len(gold[key])),
                           ("shown", pairs), ("ranked", pairs), ("threshold", 0.5)):
            cols[col].append(value)
    run = ContractsRun.__new__(ContractsRun)
    idx = np.array([0, 0, 2, 1, 2, 2])
    got = run.values_of(cols, idx)
    keys = list(preds)
    flat = [(f"{keys[i]}#{n}", t, s) for n, i in enumerate(idx) for t, s in preds[keys[i]]]
    want = M.span_scores(flat, {f"{keys[i]}#{n}": gold[keys[i]] for n, i in enumerate(idx)})
    for name in ("span_precision", "span_recall", "span_f1", "precision_at_80_recall"):
        assert got[name] == pytest.approx(want[name]), name
    assert run.values_of(cols)["span_f1"] == pytest.approx(M.span_scores(
        [(k, t, s) for k, ps in preds.items() for t, s in ps], gold)["span_f1"])


def test_renewal_smoke_suite_reports_and_a_worse_model_fails_the_gate(eval_env: dict[str, str | None],
                                                                      tmp_path: Path) -> None:
    base = tmp_path / "baselines"
    blessed = _cli(eval_env, str(RENEWAL_SMOKE), "--bless", "--baseline-dir", str(base), "--json",
                   str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"))
    assert blessed.exit_code == 0, blessed.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["agent"] == "renewal" and doc["n"] == 400 and doc["n_train"] == 1500
    assert set(doc["metrics"]) == {"roc_auc", "pr_auc", "brier", "ece", "lift_top_decile"}
    assert doc["metrics"]["roc_auc"] > 0.8 and doc["metrics"]["lift_top_decile"] > 2
    assert 'id="reliability-renewal-smoke"' in (tmp_path / "r.html").read_text()
    stored = json.loads((base / "renewal-smoke.json").read_text())
    assert stored["agent"] == "renewal" and len(stored["cases"]["id"]) == 400
    committed = json.loads((ROOT / "evals" / "baselines" / "renewal-smoke.json").read_text())
    assert committed["suite"] == "renewal-smoke" and committed["cases"]["id"] == stored["cases"]["id"]

    same = _cli(eval_env, str(RENEWAL_SMOKE), "--baseline-dir", str(base), "--json", str(tmp_path / "s.json"))
    assert same.exit_code == 0, same.output
    cmp_ = json.loads((tmp_path / "s.json").read_text())["comparison"]
    assert cmp_["passed"] and cmp_["n_shared"] == 400 and all(c["delta"] == 0 for c in cmp_["changes"])

    # a deliberately worse model: the account's tenure and contract commitment are withheld
    worse = _copy_suite(RENEWAL_SMOKE, tmp_path, "worse.yaml", drop_features=["tenure_months", "commitment"])
    failed = _cli(eval_env, str(worse), "--baseline-dir", str(base), "--json", str(tmp_path / "w.json"))
    assert failed.exit_code == 1, failed.output
    cmp_ = json.loads((tmp_path / "w.json").read_text())["comparison"]
    regressed = {c["metric"] for c in cmp_["changes"] if c["regressed"]}
    assert "roc_auc" in regressed and not cmp_["passed"] and "regression" in failed.output
    assert all(c["test"] == "paired bootstrap" and c["p_worse"] < 0.05 for c in cmp_["changes"] if c["regressed"])
    # an unknown feature is a suite error, not a silent no-op
    typo = _copy_suite(RENEWAL_SMOKE, tmp_path, "typo.yaml", drop_features=["tenure"])
    assert _cli(eval_env, str(typo), "--baseline-dir", str(base)).exit_code == 2


def test_a_non_numeric_value_in_a_renewal_train_file_names_file_line_and_column(
        eval_env: dict[str, str | None], tmp_path: Path) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    lines = (settings.public_data_dir / "churn" / "telco_churn_dev.csv").read_text().splitlines()[:60]
    header = lines[0].split(",")
    row = lines[41].split(",")
    row[header.index("tenure")] = "lots"
    lines[41] = ",".join(row)
    train = tmp_path / "dev.csv"
    train.write_text("\n".join(lines) + "\n")
    suite = _copy_suite(RENEWAL_SMOKE, tmp_path, "bad-train.yaml", train={"path": str(train), "limit": None})
    result = _cli(eval_env, str(suite), "--baseline-dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert _has(result.output, f"{train}:42: tenure must be a number, got 'lots'")


def test_contracts_smoke_suite_scores_spans_resumes_and_gates(eval_env: dict[str, str | None],
                                                              tmp_path: Path) -> None:
    base = tmp_path / "baselines"
    first = _cli(eval_env, str(CONTRACTS_SMOKE), "--bless", "--baseline-dir", str(base), "--json",
                 str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html"))
    assert first.exit_code == 0, first.output
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["agent"] == "contracts" and doc["contracts"] == 2 and doc["n"] == 6  # 2 contracts x 3 categories
    assert set(doc["metrics"]) == {"span_f1", "span_precision", "span_recall", "precision_at_80_recall", "aupr"}
    assert set(doc["per_category"]) == {"Parties", "Agreement Date", "Governing Law"}
    assert doc["per_category"]["Agreement Date"]["threshold"] == 0.05  # the suite's clause policy
    assert doc["metrics"]["span_f1"] > 0 and 0 < doc["metrics"]["aupr"] <= 1
    assert sum(r["n_gold"] for r in doc["per_category"].values()) == 13
    assert 'id="categories-contracts-smoke"' in (tmp_path / "c.html").read_text()

    again = _cli(eval_env, str(CONTRACTS_SMOKE), "--baseline-dir", str(base), "--json", str(tmp_path / "d.json"),
                 "--recommend-thresholds")
    assert again.exit_code == 0, again.output
    assert _has(again.output, "note: --recommend-thresholds applies to triage suites only: nothing recommended for "
                "contracts-smoke (contracts)")
    doc2 = json.loads((tmp_path / "d.json").read_text())
    assert doc2["run"]["n_resumed"] == 2 and doc2["run"]["n_computed"] == 0 and doc2["train_seconds"] is None
    assert doc2["comparison"]["passed"] and doc2["comparison"]["n_shared"] == 6
    assert doc2["metrics"] == doc["metrics"]
    committed = json.loads((ROOT / "evals" / "baselines" / "contracts-smoke.json").read_text())
    assert committed["agent"] == "contracts" and len(committed["cases"]["id"]) == 6


# --- per-class thresholds: policy, the agent's gate, --write-policy ---------------------------------------


def test_per_class_thresholds_use_the_agents_gate(tmp_path: Path) -> None:
    from signoff.errors import PolicyError
    from signoff.guardrails.policy import ActionPolicy

    rule = ActionPolicy(min_confidence=0.9, min_confidence_by_class={"a": 0.6})
    assert rule.min_confidence_for("a") == 0.6 and rule.min_confidence_for("b") == 0.9
    assert rule.min_confidence_for(None) == 0.9
    # no action threshold: unlisted classes never pass (fail closed), listed ones use theirs
    assert ActionPolicy(min_confidence_by_class={"a": 0.6}).min_confidence_for("b") is None
    arr = CaseArrays(["1", "2", "3"], np.array(["a", "b", "b"], dtype=object), np.array(["a", "b", "a"], dtype=object),
                     np.array([0.7, 0.7, 0.95]), np.zeros(3))
    assert compute_metrics(arr, threshold=0.9, oos_label=None)["coverage"] == pytest.approx(1 / 3)
    m = compute_metrics(arr, threshold=0.9, oos_label=None, by_class={"a": 0.6})
    assert m["coverage"] == 2 / 3 and m["selective_accuracy"] == 0.5  # case 1 (a, 0.7) now kept
    bad = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    bad["actions"]["ticket.set_category"]["min_confidence_by_class"] = {"a": 1.5}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(PolicyError, match="between 0 and 1"):
        load_policy(tmp_path / "bad.yaml")


def test_per_class_thresholds_are_written_into_the_policy_and_used_by_the_runner(
        eval_env: dict[str, str | None], tmp_path: Path) -> None:
    from signoff.evals.runner import accepted
    from signoff.evals.thresholds import round_up

    policy = tmp_path / "policy.yaml"
    result = _cli(eval_env, str(SMOKE), "--baseline-dir", str(tmp_path), "--recommend-thresholds", "--per-class",
                  "--min-class-support", "2", "--target-precision", "0.9", "--write-policy", str(policy),
                  "--json", str(tmp_path / "t.json"))
    assert result.exit_code == 0, result.output
    assert "per-class thresholds for ticket.set_category" in result.output
    rec = json.loads((tmp_path / "t.json").read_text())["recommendation"]
    written = {k for k, v in rec["per_class"].items() if v["written"]}
    assert written and written == {k for k, v in rec["per_class"].items() if v["n_predicted"] >= 2}
    rule = load_policy(policy).action("ticket.set_category")
    assert rule.min_confidence_by_class == rec["class_thresholds"]
    assert set(rule.min_confidence_by_class) == written
    for label in written:
        assert rule.min_confidence_by_class[label] == round_up(rec["per_class"][label]["threshold"])

    # the runner scores with the written policy: its coverage is the agent's gate, class by class
    env = {**eval_env, "SIGNOFF_POLICY_PATH": str(policy)}
    run = _cli(env, str(SMOKE), "--baseline-dir", str(tmp_path), "--json", str(tmp_path / "p.json"))
    assert run.exit_code == 0, run.output
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["class_thresholds"] == rule.min_confidence_by_class and "per-class" in doc["threshold_source"]
    base = json.loads((ROOT / "evals" / "baselines" / "smoke.json").read_text())["cases"]
    arr = CaseArrays.from_columns(base)
    keep = accepted(arr.conf, rule.min_confidence, labels=arr.pred, by_class=rule.min_confidence_by_class)
    if doc["model_version"] == json.loads((ROOT / "evals" / "baselines" / "smoke.json").read_text())["model_version"]:
        assert doc["metrics"]["coverage"] == pytest.approx(float(keep.mean()))
    assert rec["per_class_on_suite"]["coverage"] >= 0 and "coverage_action_only" in rec["per_class_on_suite"]


# --- the LLM backend in suites: cassettes replayed, a changed prompt fails loudly, --record ---------------

LLM_SMOKE = ROOT / "evals" / "llm-smoke.yaml"


def _llm_suite(tmp: Path, name: str, **llm: Any) -> Path:
    data = yaml.safe_load(LLM_SMOKE.read_text())
    data["llm"] = {**data["llm"], "cassette": str(LLM_SMOKE.parent / data["llm"]["cassette"]), **llm}
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_llm_suite_replays_its_cassette(eval_env: dict[str, str | None], tmp_path: Path) -> None:
    from signoff.prompts import load_prompt

    cassette = ROOT / "evals" / "cassettes" / "llm-smoke.yaml"
    before = cassette.read_bytes()
    result = _cli(eval_env, str(LLM_SMOKE), "--json", str(tmp_path / "l.json"), "--html", str(tmp_path / "l.html"))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "l.json").read_text())
    assert doc["n"] == 10 and doc["cost"]["backend"] == "llm" and doc["cost"]["mode"] == "replay"
    assert doc["cost"]["model_calls"] == 10 and doc["cost"]["tokens"] > 0 and doc["cassette_all_played"]
    assert load_prompt("triage_classify").sha256[:12] in doc["model_version"]
    assert doc["comparison"]["passed"] and doc["comparison"]["n_shared"] == 10  # evals/baselines/llm-smoke.json
    assert 'id="reliability-llm-smoke"' in (tmp_path / "l.html").read_text()
    assert cassette.read_bytes() == before  # replay never writes
    text = before.decode()
    assert "authorization" not in text.lower() and "replay-not-a-key" not in text


def test_a_changed_prompt_fails_loudly_in_replay(eval_env: dict[str, str | None], tmp_path: Path) -> None:
    source = ROOT / "signoff" / "prompts" / "triage_classify.v1.md"
    changed = tmp_path / "triage_classify.v1.md"
    changed.write_text(source.read_text() + "- Be terse.\n")
    suite = _llm_suite(tmp_path, "changed.yaml", prompt=str(changed))
    result = _cli(eval_env, str(suite), "--json", str(tmp_path / "x.json"))
    assert result.exit_code == 2, result.output
    assert "not in the cassette" in result.output and "--record" in result.output
    assert not (tmp_path / "x.json").exists()  # no report from stale answers
    # the same for a label set the cassette was not recorded with
    relabelled = _llm_suite(tmp_path, "labels.yaml", labels=["cancel_order", "change_shipping_address", "get_refund",
                                                             "payment_issue", "track_order", "complaint"])
    assert _cli(eval_env, str(relabelled)).exit_code == 2


def test_record_mode_records_scrubbed_and_replays(eval_env: dict[str, str | None], tmp_path: Path) -> None:
    from test_llm_backend import StubLLM

    from signoff.evals.llm import _scrub_response

    answer = json.dumps({"label": "track_order", "rationale": "asks where jane@example.com's order is"})
    stub = StubLLM([(200, answer)] * 6)
    try:
        cassette = tmp_path / "rec.yaml"
        data = yaml.safe_load(_llm_suite(tmp_path, "rec-base.yaml", cassette=str(cassette), confidence="samples",
                                         samples=2).read_text())
        data["dataset"]["ids"] = ["bitext-04143", "bitext-04145", "bitext-00015"]
        data["name"] = "llm-rec"
        suite = tmp_path / "rec-suite.yaml"
        suite.write_text(yaml.safe_dump(data))
        env = {**eval_env, "SIGNOFF_LLM_BASE_URL": stub.url, "SIGNOFF_LLM_API_KEY": "sk-eval-secret-123"}
        recorded = _cli(env, str(suite), "--record", "--baseline-dir", str(tmp_path), "--json",
                        str(tmp_path / "r.json"))
        assert recorded.exit_code == 0, recorded.output
        assert len(stub.requests) == 6  # 3 tickets x (greedy + 1 sample)
    finally:
        stub.close()
    text = cassette.read_text()
    assert "sk-eval-secret-123" not in text and "authorization" not in text.lower()
    assert "jane@example.com" not in text  # PII in a recorded answer is redacted
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["metrics"]["accuracy"] == pytest.approx(2 / 3) and doc["cost"]["mode"] == "record"
    # replay with the endpoint gone: the same figures, no network
    replayed = _cli(eval_env, str(suite), "--baseline-dir", str(tmp_path), "--json", str(tmp_path / "p.json"))
    assert replayed.exit_code == 0, replayed.output
    assert json.loads((tmp_path / "p.json").read_text())["metrics"] == doc["metrics"]
    # --record without an endpoint is a configuration error; the scrubber drops cookies too
    assert _cli(eval_env, str(suite), "--record").exit_code == 2
    body = b'{"choices": [{"message": {"content": "mail bob@example.org"}}]}'
    scrubbed = _scrub_response({"headers": {"Set-Cookie": ["a=b"], "Content-Type": ["x"]}, "body": {"string": body}})
    assert "Set-Cookie" not in scrubbed["headers"] and b"bob@example.org" not in scrubbed["body"]["string"]


def test_unwritable_report_paths_stop_signoff_eval_with_exit_2_before_the_run(
        eval_env: dict[str, str | None], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for option, target in (("--json", "/proc/signoff-x.json"), ("--html", str(blocker / "report.html"))):
        result = _cli(eval_env, str(SMOKE), option, target)
        assert result.exit_code == 2, result.output
        assert _has(result.output, f"{option} {target}: cannot write in"), result.output
        assert "accuracy" not in result.output, "refused before the suite runs"
