"""``backend: llm`` triage suites: the LLM classifier, its HTTP traffic replayed from a vcrpy cassette.

Each case goes through what the triage graph does with ``SIGNOFF_LLM_BACKEND=openai``: the ticket text is
screened (PII redacted, size bounded), :class:`~signoff.llm.openai_backend.LLMClassifier` (the real
``ChatOpenAI`` client, the packaged ``triage_classify`` prompt unless the suite names another prompt
file) classifies it, and the policy's threshold gates it (:func:`~signoff.evals.runner.accepted`).

Replay (default): the client points at an address nothing listens on and vcrpy answers from the
suite's cassette (``record_mode="none"``, matched on method + path + body). The request body holds the
prompt text, the label set, the model name and the screened ticket, so a changed prompt, label set,
model or case is a request the cassette does not have: the run stops with an error naming the case
and saying to re-record, never a stale answer.

Record (``signoff eval SUITE --record``): the same calls go to ``SIGNOFF_LLM_BASE_URL`` (with
``SIGNOFF_LLM_API_KEY``) and the cassette is rewritten. Authorization, API-key and cookie headers are
dropped from requests and responses; request bodies carry only screened text, and the message content
of every recorded answer is passed through the same PII redaction. Not resumable: a recording must
see every case (a replay takes well under a second anyway).

Metrics are the triage ones; ``brier`` is approximate (only the chosen label's probability and the top
three alternatives are known; the rest counts as 0); ``cost`` has the endpoint's calls, tokens, USD
and latency.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from signoff.config import Settings
from signoff.errors import ConfigError, DataError, ModelError
from signoff.evals.runner import CaseArrays, ModelInfo, ProgressFn, RunState, SuiteRun, compute_metrics, gate_for
from signoff.evals.runner import policy_for as triage_policy_for
from signoff.evals.suite import Suite, load_cases

#: replay mode: nothing listens here, so a request the cassette does not hold cannot reach a network
REPLAY_URL = "http://127.0.0.1:9/v1"
FILTER_HEADERS = ["authorization", "api-key", "x-api-key", "cookie", "set-cookie", "openai-organization",
                  "openai-project"]


class ReplayMismatch(ModelError):
    """A replayed suite made a request its cassette does not hold (prompt, labels, model or case changed)."""


class _LLMModel:
    """What the runner's reports need of a model, for the LLM classifier."""

    def __init__(self, clf: Any) -> None:
        self.clf = clf
        self.version = clf.version
        self.n_train = 0
        self.classes_ = np.array(clf.labels, dtype=object)


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    from signoff.guardrails.screens import redact

    headers = response.get("headers") or {}
    for name in list(headers):
        if name.lower() in FILTER_HEADERS:
            del headers[name]
    body = response.get("body") or {}
    raw = body.get("string")
    was_bytes = isinstance(raw, bytes)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        try:
            doc = json.loads(raw)
        except ValueError:
            return response
        changed = False
        for choice in doc.get("choices") or []:
            msg = choice.get("message") or {}
            if isinstance(msg.get("content"), str):
                clean = redact(msg["content"])[0]
                changed |= clean != msg["content"]
                msg["content"] = clean
        if changed:  # vcrpy also runs this on loading a cassette: keep the body's type (bytes)
            text = json.dumps(doc)
            body["string"] = text.encode("utf-8") if was_bytes else text
    return response


def cassette_vcr(*, record: bool) -> Any:
    try:
        import vcr
    except ImportError as exc:  # pragma: no cover - vcrpy is in the dev extra
        raise ConfigError("backend: llm suites replay vcrpy cassettes: pip install vcrpy (or '.[dev]')") from exc
    return vcr.VCR(record_mode="all" if record else "none", match_on=["method", "path", "body"],
                   filter_headers=FILTER_HEADERS, decode_compressed_response=True,
                   before_record_response=_scrub_response)


def _mismatch(exc: BaseException) -> bool:
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        if type(e).__name__ == "CannotOverwriteExistingCassetteException":
            return True
        seen.append(e)
        e = e.__cause__ or e.__context__
    return False


def classifier_for(suite: Suite, settings: Settings, *, record: bool) -> Any:
    from signoff.llm.openai_backend import LLMClassifier, Pricing, make_chat
    from signoff.prompts import parse_prompt

    spec = suite.llm
    assert spec is not None
    if record:
        if not settings.llm_base_url:
            raise ConfigError(f"suite {suite.name}: --record needs SIGNOFF_LLM_BASE_URL (an OpenAI-compatible "
                              "endpoint, e.g. `signoff llm serve`)")
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        url, retries = settings.llm_base_url, settings.llm_max_retries
    else:
        url, key, retries = REPLAY_URL, "replay-not-a-key", 0
    prompt = None
    if spec.prompt:
        p = Path(spec.prompt)
        prompt = parse_prompt(p if p.is_absolute() else suite.directory / p)
    chat = make_chat(base_url=url, api_key=key, model=spec.model, timeout=spec.timeout, max_retries=retries,
                     max_tokens=spec.max_tokens)
    return LLMClassifier(spec.labels, chat, model_name=spec.model, prompt=prompt, confidence=spec.confidence,
                         samples=spec.samples, pricing=Pricing(settings.llm_price_input,
                                                               settings.llm_price_cached_input,
                                                               settings.llm_price_output))


def cassette_path(suite: Suite) -> Path:
    assert suite.llm is not None
    p = Path(suite.llm.cassette)
    return p if p.is_absolute() else suite.directory / p


def run_llm_suite(suite: Suite, settings: Settings, *, progress: ProgressFn | None = None, fresh: bool = False,
                  record: bool = False) -> SuiteRun:
    """Score the suite's cases with the LLM classifier, replaying (or recording) its cassette."""
    from signoff.guardrails.screens import screen

    started = time.perf_counter()
    spec = suite.llm
    assert spec is not None
    policy = triage_policy_for(suite, settings)
    cases = load_cases(suite.dataset, suite, settings.public_data_dir)
    unknown = sorted(set(cases.labels) - set(spec.labels))
    if unknown:
        raise DataError(f"suite {suite.name}: gold labels {unknown[:5]} are not in llm.labels")
    cassette = cassette_path(suite)
    if not record and not cassette.is_file():
        raise DataError(f"suite {suite.name}: no cassette at {cassette}; record one with `signoff eval "
                        f"{suite.name} --record` (SIGNOFF_LLM_BASE_URL set)")
    tape_path = cassette
    if record:  # into a new file, moved over the old cassette only when every case was recorded
        cassette.parent.mkdir(parents=True, exist_ok=True)
        tape_path = cassette.with_name(f".{cassette.stem}.recording{cassette.suffix}")
        tape_path.unlink(missing_ok=True)
    clf = classifier_for(suite, settings, record=record)
    threshold, source, by_class = gate_for(suite, policy)
    rows: list[dict[str, Any]] = []
    seconds: list[tuple[int, float]] = []
    usage = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "retries": 0,
             "cost_usd": 0.0}
    index = {label: i for i, label in enumerate(clf.labels)}
    with cassette_vcr(record=record).use_cassette(str(tape_path)) as tape:
        for n, (cid, text, gold) in enumerate(zip(cases.ids, cases.texts, cases.labels, strict=True)):
            screened = screen(text, max_chars=settings.max_ticket_chars).text
            t0 = time.perf_counter()
            try:
                pred = clf.classify(screened)
            except ModelError as exc:
                if _mismatch(exc):
                    raise ReplayMismatch(
                        f"suite {suite.name}: case {cid}: the request is not in the cassette {cassette} (the prompt, "
                        f"label set, model or ticket changed since it was recorded; prompt now {clf.prompt.ref}). "
                        f"Re-record with `signoff eval {suite.name} --record` against an endpoint") from exc
                raise
            seconds.append((1, time.perf_counter() - t0))
            u = pred.usage or {}
            for k in usage:
                usage[k] += u.get(k) or 0
            proba = np.zeros(len(clf.labels))
            proba[index[pred.label]] = pred.confidence
            for label, p in pred.alternatives:
                if label in index:
                    proba[index[label]] = p
            gi = index.get(gold, -1)
            term = float(((proba - np.eye(len(clf.labels))[gi]) ** 2).sum())
            rows.append({"id": cid, "pred": pred.label, "conf": round(pred.confidence, 6), "brier": round(term, 6),
                         "gold": gold})
            if progress is not None:
                progress("recording" if record else "replaying", n + 1, len(cases))
        played = bool(getattr(tape, "all_played", True))
    if record:
        os.replace(tape_path, cassette)
        played = True
    arrays = CaseArrays.from_records(rows)
    values = compute_metrics(arrays, threshold=threshold, oos_label=suite.oos_label, policy=policy, by_class=by_class)
    total = sum(s for _, s in seconds)
    cost = {"model_calls": usage["calls"], "cases_per_call": round(len(rows) / usage["calls"], 2) if usage["calls"]
            else None, "latency_ms_per_case": round(total / max(1, len(rows)) * 1000, 3),
            "tokens": usage["input_tokens"] + usage["output_tokens"], "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"], "cached_input_tokens": usage["cached_input_tokens"],
            "retries": usage["retries"], "cost_usd": round(float(usage["cost_usd"]), 8), "backend": "llm",
            "mode": "record" if record else "replay",
            "latency_note": "replayed: the latency of reading the cassette, not of the model" if not record else ""}
    state = RunState(rows, seconds, n_computed=len(rows), run_file=cassette)
    model = ModelInfo(_LLMModel(clf), f"llm {spec.model} ({'recorded' if record else 'replayed'}: {cassette})")  # type: ignore[arg-type]
    extra = {"dataset": str(cases.source), "cost": cost, "cassette": str(cassette), "prompt": clf.prompt.ref,
             "cassette_all_played": played}
    _ = fresh  # nothing to resume: a replay is fast, a recording must see every case
    return SuiteRun(suite, arrays, values, threshold, source, model, cases.sha256, state,
                    time.perf_counter() - started, policy, extra=extra, class_thresholds=by_class)
