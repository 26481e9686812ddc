"""The contracts agent's LLM path: pick and quote the span of a key term among retrieved candidates.

Used when ``SIGNOFF_LLM_BACKEND=openai`` (the same endpoint and settings as triage's LLM path,
:mod:`signoff.llm.openai_backend`). The embedded clause model still retrieves and ranks: for each
category the LLM sees the chunks holding its best candidates, numbered ``c1..ck``, and answers a
JSON-schema constrained ``{"label": "c2" | "none", "quote": <exact words>, "rationale": <one sentence>}``.

Fail closed, like triage:

* the quote must be an exact substring of the chosen candidate (``text[start:end] == quote`` is checked
  on the offsets computed from it); a quote that is not, an unknown label or bad JSON is retried once
  with the error in the prompt; a second bad answer is **rejected**: the term is "needs review" with
  the reason, never a guessed span;
* a transport failure (after the client's retries) also makes the term "needs review" with the reason.

Confidence is triage's: log-probabilities of the label tokens renormalised over the candidate ids
(``logprobs``), or agreement of k answers (``samples``), ``auto`` picks; then the Platt/isotonic map of
:func:`signoff.llm.openai_backend.fit_calibration` keyed by model + prompt + method (``<model
dir>/llm-calibration.json``) when one was fitted on dev data. The category's threshold is the same as
for the embedded model (a calibrated probability either way).

Public: :class:`LLMSpanPicker` (``pick(category, text, passages) -> SpanPick``), :func:`picker_for`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model

from signoff.errors import ConfigError, ModelError
from signoff.llm.openai_backend import (
    Calibration,
    ConfidenceMethod,
    Pricing,
    Usage,
    _usage_from_completion,
    load_calibration,
    logprob_distribution,
    make_chat,
)
from signoff.prompts import Prompt, load_prompt

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

    from signoff.config import Settings

log = logging.getLogger(__name__)
PROMPT_ID = "contract_span"
QUOTE_MAX_CHARS = 900
PASSAGE_MAX_CHARS = 1200

#: What each key term means (CUAD's category descriptions, shortened).
DESCRIPTIONS = {
    "Parties": "the names of the parties who signed the contract (and their defined short names)",
    "Agreement Date": "the date of the contract",
    "Effective Date": "the date when the contract becomes effective",
    "Expiration Date": "when the initial term expires",
    "Renewal Term": "the renewal term after the initial term, including automatic extensions",
    "Notice Period To Terminate Renewal": "the notice needed to stop a renewal",
    "Termination For Convenience": "a party may terminate without cause, by notice",
    "Cap On Liability": "a cap on liability or on the time to bring claims",
    "Uncapped Liability": "liability that is uncapped for some breach",
    "Governing Law": "which state's or country's law governs the contract",
    "Minimum Commitment": "a minimum order size, amount or units per period one party must buy",
    "Price Restrictions": "a restriction on raising or reducing prices",
    "Exclusivity": "an exclusive dealing commitment, or a ban on dealing with others",
    "Change Of Control": "rights or consent required when a party undergoes a change of control",
    "Anti-Assignment": "consent or notice required to assign the contract",
}


@dataclass
class SpanPick:
    """What the LLM answered for one category: a verified span, ``none``, or ``rejected`` (with why)."""

    category: str
    status: Literal["picked", "none", "rejected"]
    confidence: float = 0.0
    """Calibrated probability of the answer (the picked candidate, or "none")."""
    start: int | None = None
    end: int | None = None
    raw_confidence: float = 0.0
    rationale: str = ""
    reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        return {"llm": {"status": self.status, "rationale": self.rationale, "reason": self.reason,
                        "raw_confidence": round(self.raw_confidence, 6), "usage": self.usage}}


def _answer_model(ids: Sequence[str]) -> type[BaseModel]:
    label_type: Any = Literal[(*ids, "none")]
    return create_model(
        "SpanAnswer",
        label=(label_type, Field(description="the candidate id, or none")),
        quote=(str, Field(max_length=QUOTE_MAX_CHARS, description="exact words copied from the candidate")),
        rationale=(str, Field(max_length=160, description="one short sentence")),
        __config__={"extra": "forbid"},
    )


def _response_format(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema["additionalProperties"] = False
    return {"type": "json_schema", "json_schema": {"name": "contract_span", "strict": True, "schema": schema}}


class LLMSpanPicker:
    """Asks a chat model which retrieved passage states a key term, and verifies the quote."""

    def __init__(self, chat: BaseChatModel, *, model_name: str, prompt: Prompt | None = None,
                 confidence: ConfidenceMethod = "auto", samples: int = 5, sample_temperature: float = 0.8,
                 top_logprobs: int = 5, pricing: Pricing | None = None, calibration: Calibration | None = None,
                 k: int = 5, categories: Sequence[str] | None = None) -> None:
        if confidence not in ("auto", "logprobs", "samples"):
            raise ConfigError(f"SIGNOFF_LLM_CONFIDENCE must be auto, logprobs or samples, not {confidence!r}")
        self.chat = chat
        self.model_name = model_name
        self.prompt = prompt or load_prompt(PROMPT_ID)
        self.confidence = confidence
        self.samples = max(2, samples)
        self.sample_temperature = sample_temperature
        self.top_logprobs = top_logprobs
        self.pricing = pricing or Pricing()
        self.k = k
        self.categories = tuple(categories) if categories is not None else tuple(DESCRIPTIONS)
        self.calibration = calibration if calibration and calibration.key == self.calibration_key else None

    @classmethod
    def from_settings(cls, settings: Settings, *, chat: BaseChatModel | None = None,
                      categories: Sequence[str] | None = None) -> LLMSpanPicker:
        if not settings.llm_model:
            raise ConfigError("SIGNOFF_LLM_BACKEND=openai needs SIGNOFF_LLM_MODEL (and usually SIGNOFF_LLM_BASE_URL)")
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        chat = chat or make_chat(base_url=settings.llm_base_url, api_key=key, model=settings.llm_model,
                                 timeout=settings.llm_timeout, max_retries=settings.llm_max_retries,
                                 max_tokens=max(settings.llm_max_tokens, 256))
        picker = cls(chat, model_name=settings.llm_model, confidence=settings.llm_confidence,  # type: ignore[arg-type]
                     samples=settings.llm_samples, sample_temperature=settings.llm_sample_temperature,
                     pricing=Pricing(settings.llm_price_input, settings.llm_price_cached_input,
                                     settings.llm_price_output), categories=categories)
        picker.calibration = load_calibration(settings.models_path, picker.calibration_key)
        return picker

    @property
    def calibration_key(self) -> str:
        return f"{self.model_name}|{self.prompt.ref}|{self.confidence}"

    @property
    def version(self) -> str:
        v = f"llm:{self.model_name}:{self.prompt.ref}:{self.confidence}"
        return v + (f":cal-{self.calibration.tag}" if self.calibration else "")

    # -- one call -----------------------------------------------------------------------------------

    def _call(self, messages: list[BaseMessage], usage: Usage, fmt: dict[str, Any], *,
              temperature: float | None = None, logprobs: bool) -> tuple[str, list[dict[str, Any]] | None, str | None]:
        import openai

        kwargs: dict[str, Any] = {"response_format": fmt}
        if logprobs:
            kwargs |= {"logprobs": True, "top_logprobs": self.top_logprobs}
        if temperature is not None:
            kwargs["temperature"] = temperature
        t0 = time.perf_counter()
        try:
            msg = self.chat.invoke(messages, **kwargs)
        except openai.LengthFinishReasonError as exc:
            usage.add(_usage_from_completion(exc.completion))
            content = exc.completion.choices[0].message.content or "" if exc.completion.choices else ""
            return content, None, "the answer was cut off at the token limit: quote fewer words"
        except openai.APIError as exc:
            raise ModelError(f"LLM endpoint {self.model_name}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # connection refused, timeouts after retries, malformed HTTP
            raise ModelError(f"LLM endpoint {self.model_name} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            usage.seconds += time.perf_counter() - t0
        usage.add(getattr(msg, "usage_metadata", None))
        content = msg.content if isinstance(msg.content, str) else json.dumps(msg.content)
        lp = (msg.response_metadata or {}).get("logprobs") or {}
        return content, (lp.get("content") if isinstance(lp, dict) else None), None

    @staticmethod
    def _check(answer_model: type[BaseModel], content: str, text: str, passages: Sequence[tuple[int, int]]
               ) -> tuple[BaseModel | None, tuple[int, int] | None, str | None]:
        """(answer, verified (start, end) or None for "none", error)."""
        try:
            answer = answer_model.model_validate_json(content)
        except ValidationError as exc:
            return None, None, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}"
                                         for e in exc.errors()[:3])
        label: str = answer.label  # type: ignore[attr-defined]
        quote: str = answer.quote  # type: ignore[attr-defined]
        if label == "none":
            return answer, None, None
        a, b = passages[int(label[1:]) - 1]
        at = text[a:b].find(quote) if quote.strip() else -1
        if at < 0:
            return None, None, f"the quote is not an exact substring of candidate {label}"
        start, end = a + at, a + at + len(quote)
        if text[start:end] != quote:  # the offsets must give back the quote
            return None, None, f"the quote does not match candidate {label} at its offsets"
        return answer, (start, end), None

    # -- one category -------------------------------------------------------------------------------

    def pick(self, category: str, text: str, passages: Sequence[tuple[int, int]]) -> SpanPick:
        """Which of ``passages`` (``(start, end)`` into ``text``) states ``category``, with the exact quote."""
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        passages = list(passages)[: self.k]
        if not passages:
            return SpanPick(category, "none", 1.0, raw_confidence=1.0, reason="no candidate passage")
        ids = [f"c{i + 1}" for i in range(len(passages))]
        answer_model = _answer_model(ids)
        fmt = _response_format(answer_model)
        system = self.prompt.render(category=category, description=DESCRIPTIONS.get(category, category))
        body = "\n\n".join(f"[{cid}]\n{text[a:b][:PASSAGE_MAX_CHARS]}" for cid, (a, b) in zip(ids, passages,
                                                                                               strict=True))
        messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(body)]
        usage = Usage()
        want_lp = self.confidence in ("auto", "logprobs")
        try:
            content, token_lp, error = self._call(messages, usage, fmt, logprobs=want_lp)
            answer, span, error = (None, None, error) if error else self._check(answer_model, content, text, passages)
            if answer is None:
                usage.retries += 1
                retry = (f"That answer is invalid: {error}. Answer again with only a JSON object "
                         '{"label": <a candidate id or none>, "quote": <words copied exactly from it>, '
                         '"rationale": <one short sentence>}.')
                messages = [*messages, AIMessage(content or "(empty)"), HumanMessage(retry)]
                content, token_lp, error = self._call(messages, usage, fmt, logprobs=want_lp)
                answer, span, error = (None, None, error) if error else self._check(answer_model, content, text,
                                                                                    passages)
            if answer is None:
                return SpanPick(category, "rejected", reason=f"invalid answer twice: {error}",
                                usage=self._usage(usage, "none"))
            label: str = answer.label  # type: ignore[attr-defined]
            dist = logprob_distribution(token_lp or [], label, [*ids, "none"]) \
                if self.confidence != "samples" and token_lp else None
            method = "logprobs"
            if dist is None:
                if self.confidence == "logprobs":
                    return SpanPick(category, "rejected", reason="the endpoint returned no usable logprobs",
                                    usage=self._usage(usage, "none"))
                method = "samples"
                dist = self._sample(messages, label, usage, answer_model, fmt, text, passages)
        except ModelError as exc:
            return SpanPick(category, "rejected", reason=str(exc), usage=self._usage(usage, "none"))
        raw = dist.get(label, 0.0)
        conf = self.calibration.apply(raw) if self.calibration else raw
        return SpanPick(category, "none" if span is None else "picked", round(min(1.0, max(0.0, conf)), 6),
                        start=span[0] if span else None, end=span[1] if span else None, raw_confidence=raw,
                        rationale=answer.rationale, usage=self._usage(usage, method))  # type: ignore[attr-defined]

    def _sample(self, messages: list[BaseMessage], label: str, usage: Usage, answer_model: type[BaseModel],
                fmt: dict[str, Any], text: str, passages: Sequence[tuple[int, int]]) -> dict[str, float]:
        """Agreement of k answers; a sample with an invalid answer (or quote) counts against."""
        votes: Counter[str] = Counter({label: 1})
        for _ in range(self.samples - 1):
            content, _lp, error = self._call(messages, usage, fmt, temperature=self.sample_temperature, logprobs=False)
            answer = self._check(answer_model, content, text, passages)[0] if error is None else None
            votes[answer.label if answer is not None else "\x00invalid"] += 1  # type: ignore[attr-defined]
        return {k: n / self.samples for k, n in votes.items() if not k.startswith("\x00")}

    def _usage(self, usage: Usage, method: str) -> dict[str, Any]:
        return usage.as_dict(self.pricing) | {"model": self.model_name, "prompt": self.prompt.ref,
                                               "prompt_sha256": self.prompt.sha256, "confidence_method": method,
                                               "calibrated": self.calibration is not None}


def picker_for(settings: Settings) -> LLMSpanPicker | None:
    """The LLM span picker when ``SIGNOFF_LLM_BACKEND=openai``; None for the embedded default."""
    if settings.llm_backend == "embedded":
        return None
    if settings.llm_backend != "openai":
        raise ConfigError(f"SIGNOFF_LLM_BACKEND must be embedded or openai, not {settings.llm_backend!r}")
    return LLMSpanPicker.from_settings(settings)
