"""The LLM backend: the real ChatOpenAI client replayed from a cassette, fail-closed validation,
log-probability confidence, calibration, the prompt lock, and (opt-in) a live call to SmolLM2.

Cassettes: ``SIGNOFF_RECORD_CASSETTES=1 pytest tests/test_llm_backend.py`` re-records them against the
offline SmolLM2 server (``signoff.llm.local_server``); otherwise they replay with ``record_mode="none"``
and match on method + path + body, so a changed prompt fails loudly instead of reaching a network.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import vcr
from vcr.errors import CannotOverwriteExistingCassetteException

from signoff.agents.services import LazyClassifier
from signoff.config import Settings
from signoff.errors import ConfigError, ModelError
from signoff.llm.openai_backend import (
    LLMClassifier,
    Pricing,
    fit_calibration,
    load_calibration,
    logprob_distribution,
    make_chat,
    save_calibration,
)
from signoff.prompts import Prompt, all_prompts, load_prompt, lock_problems, parse_prompt, write_lock

CASSETTES = Path(__file__).resolve().parent / "cassettes"
RECORD = os.environ.get("SIGNOFF_RECORD_CASSETTES") == "1"
LIVE = os.environ.get("SIGNOFF_LLM_LIVE") == "1"
LABELS = ["cancel_order", "change_shipping_address", "get_refund", "payment_issue", "track_order"]
TICKET = "i want to cancel purchase 00123842"
MODEL = "smollm2-135m-instruct-q4_1"
REPLAY_URL = "http://127.0.0.1:9/v1"  # nothing listens there: in replay mode vcrpy answers


def cassette_vcr(record: bool = False) -> vcr.VCR:
    return vcr.VCR(
        cassette_library_dir=str(CASSETTES), record_mode="all" if record else "none",
        match_on=["method", "path", "body"], filter_headers=["authorization", "api-key", "x-api-key", "cookie"],
        decode_compressed_response=True,
    )


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    """The offline SmolLM2 server when recording; an address nothing listens on when replaying."""
    if not RECORD:
        yield REPLAY_URL
        return
    from signoff.llm.local_server import LocalLLMServer

    with LocalLLMServer() as server:
        yield server.base_url


def classifier(url: str, *, prompt: Prompt | None = None, max_retries: int = 0, **kw: Any) -> LLMClassifier:
    chat = make_chat(base_url=url, api_key="sk-test-not-a-secret", model=MODEL, timeout=120.0,
                     max_retries=max_retries, max_tokens=64)
    return LLMClassifier(LABELS, chat, model_name=MODEL, prompt=prompt, **kw)


def chain(exc: BaseException | None) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


# --- (1) replay: a validated Prediction through the real ChatOpenAI client -----------------------------


def test_cassette_replay_gives_a_validated_prediction(llm_url: str) -> None:
    clf = classifier(llm_url, pricing=Pricing(input=0.15, cached_input=0.075, output=0.6))
    with cassette_vcr(RECORD).use_cassette("llm_triage_classify.yaml") as cassette:
        prediction = clf.classify(TICKET)
    assert RECORD or cassette.all_played
    assert prediction.label in LABELS
    assert 0.0 <= prediction.confidence <= 1.0
    assert prediction.rationale is not None
    prompt = load_prompt("triage_classify")
    assert prompt.sha256[:12] in prediction.model_version and MODEL in prediction.model_version
    usage = prediction.usage or {}
    assert usage["prompt_sha256"] == prompt.sha256 and usage["calls"] == 1 and usage["retries"] == 0
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["confidence_method"] == "logprobs"  # llama.cpp's server returns logprobs
    assert usage["cost_usd"] > 0
    assert {lab for lab, _ in prediction.alternatives} <= set(LABELS) - {prediction.label}
    recorded = (CASSETTES / "llm_triage_classify.yaml").read_text()
    assert "sk-test-not-a-secret" not in recorded  # the authorization header is filtered


# --- (2) a changed prompt does not match the cassette: it fails loudly ----------------------------------


def test_changed_prompt_fails_loudly_in_replay() -> None:
    original = load_prompt("triage_classify")
    changed = Prompt(original.id, original.version, original.sha256, original.text + "\nBe terse.")
    clf = classifier(REPLAY_URL, prompt=changed)
    with cassette_vcr(False).use_cassette("llm_triage_classify.yaml"), pytest.raises(ModelError) as info:
        clf.classify(TICKET)
    assert any(isinstance(e, CannotOverwriteExistingCassetteException) for e in chain(info.value))


# --- (3) invalid output: one retry with the error in the prompt, then ModelError -----------------------


class StubLLM:
    """A tiny OpenAI-shaped server on 127.0.0.1 answering from a script of (status, content) pairs."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                status, content = stub.script.pop(0) if stub.script else (500, "script exhausted")
                payload = {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
                                     "prompt_tokens_details": {"cached_tokens": 60}}}
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


@pytest.fixture
def stub() -> Iterator[Any]:
    made: list[StubLLM] = []

    def make(script: list[tuple[int, str]]) -> StubLLM:
        made.append(StubLLM(script))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_invalid_output_is_retried_once_then_fails_closed(stub: Any) -> None:
    llm = stub([(200, '{"label": "refund_please", "rationale": "x"}'), (200, "not json at all")])
    with pytest.raises(ModelError, match="invalid answer twice"):
        classifier(llm.url).classify(TICKET)
    assert len(llm.requests) == 2
    retry_prompt = llm.requests[1]["messages"][-1]["content"]
    assert "invalid" in retry_prompt and "label" in retry_prompt  # the validation error went back to the model
    assert llm.requests[1]["messages"][-2] == {"role": "assistant",
                                               "content": '{"label": "refund_please", "rationale": "x"}'}


def test_a_good_retry_answers_and_samples_give_confidence_without_logprobs(stub: Any) -> None:
    good = '{"label": "get_refund", "rationale": "asks for the money back"}'
    llm = stub([(200, "{oops"), (200, good), (200, good), (200, '{"label": "track_order", "rationale": "r"}')])
    prediction = classifier(llm.url, samples=3, pricing=Pricing(input=1.0, cached_input=0.5, output=2.0)).classify(
        "refund me")
    assert prediction.label == "get_refund"
    assert prediction.confidence == pytest.approx(2 / 3)
    usage = prediction.usage or {}
    assert usage["confidence_method"] == "samples" and usage["retries"] == 1 and usage["calls"] == 4
    assert usage["cached_input_tokens"] == 240 and usage["input_tokens"] == 400 and usage["output_tokens"] == 40
    assert usage["cost_usd"] == pytest.approx((160 * 1.0 + 240 * 0.5 + 40 * 2.0) / 1e6)
    assert [r.get("temperature") for r in llm.requests] == [0.0, 0.0, 0.8, 0.8]


def test_endpoint_errors_are_retried_by_the_client_then_fail_closed(stub: Any) -> None:
    llm = stub([(503, "overloaded"), (503, "overloaded")])
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="503"):
        classifier(llm.url, max_retries=1).classify(TICKET)
    assert len(llm.requests) == 2 and time.monotonic() - t0 < 10


# --- confidence and calibration (no model) --------------------------------------------------------------


def _tok(token: str, logprob: float, alts: list[tuple[str, float]]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alts]}


def test_logprob_confidence_renormalises_over_the_label_set() -> None:
    tokens = [
        _tok("```", -1.0, []), _tok('{"', -0.1, []), _tok("label", -0.1, []), _tok('":', -0.01, []),
        _tok(' "', -0.01, []),
        _tok("get", -0.2, [("get", -0.2), ("track", -2.0), ("The", -3.0)]),
        _tok("_ref", -0.1, [("_ref", -0.1), ("_inv", -2.5)]),
        _tok("und", -0.0, [("und", 0.0)]),
        _tok('",', -0.01, []),
    ]
    dist = logprob_distribution(tokens, "get_refund", LABELS)
    assert dist is not None and sum(dist.values()) == pytest.approx(1.0)
    assert max(dist, key=lambda k: dist[k]) == "get_refund"
    assert dist["track_order"] > dist["cancel_order"]  # ranked beats the unranked bound
    assert dist["cancel_order"] == pytest.approx(dist["payment_issue"])  # unranked: the k-th alternative's mass
    assert logprob_distribution([], "get_refund", LABELS) is None


def test_calibration_maps_overconfidence_down(tmp_path: Path) -> None:
    import random

    rng = random.Random(0)
    conf = [rng.uniform(0.5, 1.0) for _ in range(400)]
    correct = [rng.random() < (c - 0.3) for c in conf]  # the raw scores are 0.3 too high
    for method in ("platt", "isotonic"):
        cal = fit_calibration(conf, correct, method=method, key="m|p|logprobs")  # type: ignore[arg-type]
        assert cal.metrics["ece"] < cal.metrics["ece_uncalibrated"]
        assert cal.apply(0.9) < 0.8
    save_calibration(cal, tmp_path)
    loaded = load_calibration(tmp_path, "m|p|logprobs")
    assert loaded is not None and loaded.apply(0.9) == pytest.approx(cal.apply(0.9))
    assert load_calibration(tmp_path, "another|model|logprobs") is None


# --- integration point: the backend setting picks the LLM ---------------------------------------------


def test_lazy_classifier_picks_the_llm_backend_with_the_trained_label_set(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"classes": LABELS}))
    settings = Settings(_env_file=None, data_dir=tmp_path, model_dir=tmp_path, llm_backend="openai",  # type: ignore[call-arg]
                        llm_base_url=REPLAY_URL, llm_model=MODEL)
    model = LazyClassifier(settings).model
    assert isinstance(model, LLMClassifier) and model.labels == LABELS
    assert LazyClassifier(settings).version.startswith(f"llm:{MODEL}:triage_classify.v")
    with pytest.raises(ConfigError, match="SIGNOFF_LLM_MODEL"):
        _ = LazyClassifier(settings.model_copy(update={"llm_model": None})).model
    with pytest.raises(ConfigError, match="SIGNOFF_LLM_BACKEND"):
        _ = LazyClassifier(settings.model_copy(update={"llm_backend": "gpt"})).model


# --- (4) prompts: versioned, hashed, locked -------------------------------------------------------------


def test_every_prompt_matches_its_locked_hash() -> None:
    assert all_prompts(), "no prompts found"
    assert lock_problems() == []


def test_a_prompt_changed_without_a_new_version_is_caught(tmp_path: Path) -> None:
    src = load_prompt("triage_classify")
    source_file = next(Path(__file__).resolve().parent.parent.joinpath("signoff", "prompts").glob(
        f"{src.id}.v{src.version}.md"))
    (tmp_path / source_file.name).write_text(source_file.read_text())
    lock = tmp_path / "prompts.lock"
    write_lock(tmp_path, lock)
    assert lock_problems(tmp_path, lock) == []
    (tmp_path / source_file.name).write_text(source_file.read_text() + "Also be polite.\n")
    problems = lock_problems(tmp_path, lock)
    assert len(problems) == 1 and "needs a new version" in problems[0]
    with pytest.raises(ConfigError, match="add a new version"):
        write_lock(tmp_path, lock)
    assert parse_prompt(tmp_path / source_file.name).sha256 != src.sha256


# --- (5) live: one short call to the offline SmolLM2 server (opt-in: SIGNOFF_LLM_LIVE=1) ---------------


@pytest.mark.llm_live
@pytest.mark.skipif(not LIVE, reason="live LLM smoke test: set SIGNOFF_LLM_LIVE=1 (make test-llm)")
def test_live_smollm2_gives_a_prediction() -> None:
    from signoff.llm.local_server import LocalLLMServer

    t0 = time.monotonic()
    with LocalLLMServer() as server:
        prediction = classifier(server.base_url, max_retries=1).classify(TICKET)
    assert prediction.label in LABELS and 0.0 <= prediction.confidence <= 1.0
    print(f"live SmolLM2 call: {time.monotonic() - t0:.1f}s (server start included)")


# --- through the triage graph: usage and prompt hash in the audit trail; bad output fails closed --------


def test_triage_graph_records_llm_usage_and_fails_closed(stub: Any, settings: Settings, tmp_path: Path) -> None:
    from conftest import write_policy

    from signoff.agents.services import open_runtime
    from signoff.llm.openai_backend import labels_from_odoo
    from signoff.tools.tickets import untriaged_ticket_ids

    live = settings.model_copy(update={"policy_path": write_policy(tmp_path / "policy.yaml", 0.0)})
    with open_runtime(live) as probe:
        labels = labels_from_odoo(probe.reader)
    answer = json.dumps({"label": labels[0], "rationale": "the ticket says so"})
    llm = stub([(200, answer), (200, answer), (200, "garbage"), (200, "{}")])
    chat = make_chat(base_url=llm.url, api_key="k", model=MODEL, max_retries=0)
    clf = LLMClassifier(labels, chat, model_name=MODEL, samples=2)
    with open_runtime(live, classifier=clf) as rt:
        first, second = untriaged_ticket_ids(rt.reader)[:2]
        ok = rt.runner.run(first)
        assert ok.status in ("paused", "done") and ok.triage is not None
        assert ok.triage.category.label == labels[0] and ok.triage.category.confidence == 1.0
        event = next(e for e in rt.audit.trail() if e.kind == "ticket.classified")
        assert event.data["usage"]["prompt_sha256"] == load_prompt("triage_classify").sha256
        assert event.data["usage"]["calls"] == 2 and event.data["rationale"] == "the ticket says so"
        assert load_prompt("triage_classify").sha256[:12] in event.data["model"]
        bad = rt.runner.run(second)
        assert bad.status == "failed" and "ModelError" in (bad.error or "") and "invalid answer twice" in bad.error
        assert not rt.store.find(thread_id=bad.thread_id)  # nothing proposed
