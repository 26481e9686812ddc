"""The LLM triage classifier: ``langchain-openai`` against any OpenAI-compatible endpoint.

OpenAI, vLLM, Ollama, llama.cpp's server and the offline SmolLM2 server of
:mod:`signoff.llm.local_server` all speak the same chat-completions API. This backend asks for a
JSON-schema constrained answer ``{"label": <one of the labels>, "rationale": <short text>}``
(``response_format`` json_schema, strict) and validates it with a pydantic model built from the label
set. It returns the same :class:`~signoff.domain.Prediction` as the embedded model, so the triage
graph, the guardrails and the evals do not care which one ran.

Failure is closed:

* transport: the OpenAI client retries 408/409/429/5xx and connection errors with exponential backoff
  (``SIGNOFF_LLM_MAX_RETRIES``) within ``SIGNOFF_LLM_TIMEOUT`` per request; then :class:`ModelError`;
* content: an answer that is not valid JSON, names a label outside the set, or is cut off at the token
  limit is retried **once**, with the validation error in the prompt; a second bad answer raises
  :class:`ModelError` with the reason. The triage runner turns that into a failed run a human sees.

Confidence (``SIGNOFF_LLM_CONFIDENCE``):

* ``logprobs`` — from the token log-probabilities of the label tokens (``logprobs=true,
  top_logprobs=k``). The chosen label's probability is the product of its tokens' probabilities; every
  other label gets the probability of the branch where it leaves the chosen path (from the top-k
  alternatives there) or, when it is not among the top k, the k-th alternative's probability as an
  upper bound. The chosen label's share of that mass is the confidence: labels the endpoint did not
  rank are assumed as likely as the least likely one it did, so the estimate errs low (toward a human).
  Log-probabilities are renormalised over the label set, so it works whether or not the endpoint applies
  the schema before reporting them (llama.cpp reports the unconstrained distribution).
* ``samples`` — agreement of k answers: one greedy answer plus k-1 sampled at temperature
  ``SIGNOFF_LLM_SAMPLE_TEMPERATURE``; the confidence is the share that agrees with the greedy label.
  Costs k calls per ticket.
* ``auto`` (default) — logprobs when the endpoint returns them, else samples.

Either raw confidence can then be calibrated on labelled dev data (:func:`fit_calibration`: Platt
scaling or isotonic regression, saved per model+prompt+method in ``<model dir>/llm-calibration.json``)
so that the policy's thresholds mean what they mean for the embedded model; ``bench/llm_triage.py``
fits and measures it.

Usage: every :class:`Prediction` carries ``usage`` (calls, input/output tokens, cached input tokens
counted apart, cost in USD from ``SIGNOFF_LLM_PRICE_*``, latency, retries, prompt ref and sha256,
confidence method); the triage graph writes it into the ``ticket.classified`` audit event.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model

from signoff.domain import Prediction, canonical_json
from signoff.errors import ConfigError, ModelError, ModelNotTrained
from signoff.prompts import Prompt, load_prompt

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

    from signoff.config import Settings

log = logging.getLogger(__name__)

ConfidenceMethod = Literal["auto", "logprobs", "samples"]
PROMPT_ID = "triage_classify"
RATIONALE_MAX_CHARS = 100
CALIBRATION_FILE = "llm-calibration.json"


# --- answers ---------------------------------------------------------------------------------------


def answer_model(labels: Sequence[str]) -> type[BaseModel]:
    """``{label: Literal[*labels], rationale: str}``: the schema the model must answer in."""
    if len(set(labels)) < 2:
        raise ConfigError("the LLM classifier needs at least two distinct labels")
    label_type: Any = Literal[tuple(labels)]
    return create_model(
        "TriageAnswer",
        label=(label_type, Field(description="exactly one of the allowed categories")),
        rationale=(str, Field(max_length=RATIONALE_MAX_CHARS, description="one short sentence")),
        __config__={"extra": "forbid"},
    )


def response_format(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema["additionalProperties"] = False
    return {"type": "json_schema", "json_schema": {"name": "triage_answer", "strict": True, "schema": schema}}


# --- usage and cost --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens; cached input tokens are billed apart (0 everywhere = a local model)."""

    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0

    def cost(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        fresh = max(0, input_tokens - cached_tokens)
        return (fresh * self.input + cached_tokens * self.cached_input + output_tokens * self.output) / 1e6


@dataclass
class Usage:
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    retries: int = 0
    seconds: float = 0.0

    def add(self, usage: dict[str, Any] | None) -> None:
        self.calls += 1
        if not usage:
            return
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        details = usage.get("input_token_details") or {}
        self.cached_input_tokens += int(details.get("cache_read") or 0)

    def as_dict(self, pricing: Pricing) -> dict[str, Any]:
        return {
            "calls": self.calls, "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens, "output_tokens": self.output_tokens,
            "retries": self.retries, "seconds": round(self.seconds, 3),
            "cost_usd": round(pricing.cost(self.input_tokens, self.cached_input_tokens, self.output_tokens), 8),
        }


def _usage_from_completion(completion: Any) -> dict[str, Any] | None:
    """usage_metadata-shaped dict from a raw openai completion (used when the client raised)."""
    u = getattr(completion, "usage", None)
    if u is None:
        return None
    details = getattr(u, "prompt_tokens_details", None)
    return {"input_tokens": u.prompt_tokens or 0, "output_tokens": u.completion_tokens or 0,
            "input_token_details": {"cache_read": getattr(details, "cached_tokens", 0) or 0}}


# --- confidence from log-probabilities -------------------------------------------------------------


def _value_span(content: str, label: str) -> tuple[int, int] | None:
    """Character span of the label value in the JSON answer."""
    key = content.find('"label"')
    if key < 0:
        return None
    start = content.find(label, content.find(":", key))
    return None if start < 0 else (start, start + len(label))


def logprob_distribution(token_logprobs: list[dict[str, Any]], label: str,
                         labels: Sequence[str]) -> dict[str, float] | None:
    """Probabilities over ``labels`` from the label tokens' log-probabilities (see the module doc).

    Returns None when the log-probabilities do not cover the label (then use samples)."""
    if not token_logprobs:
        return None
    # Work on the text the tokens spell, not the message content: servers may strip a ```json fence.
    content = "".join(str(entry.get("token", "")) for entry in token_logprobs)
    span = _value_span(content, label)
    if span is None:
        return None
    s, e = span
    positions: list[tuple[int, dict[str, Any]]] = []  # (token start offset, entry) overlapping [s, e)
    offset = 0
    for entry in token_logprobs:
        tok = str(entry.get("token", ""))
        if offset < e and offset + len(tok) > s:
            positions.append((offset, entry))
        offset += len(tok)
    if not positions or offset < e:
        return None
    chosen_lp = sum(float(entry["logprob"]) for _, entry in positions)
    mass: dict[str, float] = {label: math.exp(chosen_lp)}
    prefix_lp = 0.0
    for start, entry in positions:
        before = content[:start]
        alts = entry.get("top_logprobs") or []
        floor_lp = min((float(a["logprob"]) for a in alts), default=float(entry["logprob"]))
        seen: set[str] = set()
        for alt in alts:
            tok = str(alt.get("token", ""))
            if tok == entry.get("token"):
                continue
            so_far = (before + tok)[s:].split('"', 1)[0]
            closed = '"' in (before + tok)[s:]
            for other in labels:
                if other == label or not (other == so_far if closed else other.startswith(so_far)):
                    continue
                p = math.exp(prefix_lp + float(alt["logprob"]))
                if p > mass.get(other, 0.0):
                    mass[other] = p
                seen.add(other)
        # Labels that leave the chosen path here without being ranked: the k-th alternative's mass, a bound.
        emitted = content[s:start + len(str(entry.get("token", "")))][: e - s]
        path_so_far = content[s:start] if start > s else ""
        for other in labels:
            if other in mass or other in seen:
                continue
            if other.startswith(path_so_far) and not other.startswith(emitted):
                mass[other] = math.exp(prefix_lp + floor_lp)
        prefix_lp += float(entry["logprob"])
    for other in labels:  # labels the chosen path never ruled out (e.g. a longer label with this prefix)
        mass.setdefault(other, math.exp(prefix_lp + floor_lp))
    total = sum(mass.values())
    return {k: v / total for k, v in mass.items()}


# --- calibration -----------------------------------------------------------------------------------


@dataclass
class Calibration:
    """Maps a raw top-label confidence to a calibrated one (Platt or isotonic), fitted on dev data."""

    method: Literal["platt", "isotonic", "identity"]
    params: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    """The model+prompt+confidence-method it was fitted for; another model ignores it."""
    metrics: dict[str, Any] = field(default_factory=dict)

    def apply(self, p: float) -> float:
        p = min(1.0 - 1e-9, max(1e-9, p))
        if self.method == "platt":
            z = self.params["a"] * math.log(p / (1.0 - p)) + self.params["b"]
            return 1.0 / (1.0 + math.exp(-z))
        if self.method == "isotonic":
            import numpy as np

            return float(np.interp(p, self.params["x"], self.params["y"]))
        return p

    @property
    def tag(self) -> str:
        import hashlib

        return hashlib.sha256(canonical_json([self.method, self.params]).encode()).hexdigest()[:8]

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "key": self.key, "metrics": self.metrics}


def fit_calibration(confidences: Sequence[float], correct: Sequence[bool], *,
                    method: Literal["platt", "isotonic"] = "platt", key: str = "") -> Calibration:
    """Fit a calibration map of raw confidence -> P(correct) on labelled dev predictions.

    ``platt`` (two parameters on the logit; safe on a few dozen examples) or ``isotonic`` (monotone,
    needs a few hundred). The metrics record ECE before and after on the fitting data."""
    import numpy as np

    from signoff.evals.metrics import expected_calibration_error

    x = np.clip(np.asarray(confidences, dtype=np.float64), 1e-9, 1 - 1e-9)
    y = np.asarray(correct, dtype=bool)
    if len(x) != len(y) or len(x) < 2:
        raise ModelError("calibration needs at least two labelled predictions")
    if y.all() or not y.any():
        cal = Calibration("platt", {"a": 0.0, "b": 9.0 if y.all() else -9.0}, key)
    elif method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y.astype(float))
        cal = Calibration("isotonic", {"x": [float(v) for v in iso.X_thresholds_],
                                       "y": [float(v) for v in iso.y_thresholds_]}, key)
    else:
        from sklearn.linear_model import LogisticRegression

        logit = np.log(x / (1 - x)).reshape(-1, 1)
        lr = LogisticRegression(C=100.0).fit(logit, y)
        cal = Calibration("platt", {"a": float(lr.coef_[0][0]), "b": float(lr.intercept_[0])}, key)
    after = np.array([cal.apply(float(v)) for v in x])
    cal.metrics = {"n": len(x), "accuracy": float(y.mean()),
                   "ece_uncalibrated": expected_calibration_error(x, y),
                   "ece": expected_calibration_error(after, y)}
    return cal


def save_calibration(cal: Calibration, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CALIBRATION_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[cal.key] = cal.to_json()
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def load_calibration(model_dir: Path, key: str) -> Calibration | None:
    path = model_dir / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text()).get(key)
    except ValueError as exc:
        raise ModelError(f"unreadable {path}: {exc}") from exc
    if not row:
        return None
    return Calibration(row["method"], row["params"], key, row.get("metrics", {}))


# --- labels ----------------------------------------------------------------------------------------


def labels_from_model_dir(model_dir: Path) -> list[str]:
    """The label set of the trained embedded model (its manifest's classes), without loading it."""
    from signoff.llm.classifier import TextClassifier

    vdir = TextClassifier.resolve(model_dir)
    try:
        classes = json.loads((vdir / "manifest.json").read_text())["classes"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the label set from {vdir}: {exc}") from exc
    return [str(c) for c in classes]


def labels_from_odoo(reader: Any) -> list[str]:
    """The label set as Odoo names it: every ``helpdesk.ticket.category``."""
    rows = reader.search_read("helpdesk.ticket.category", [], ["name"], order="name asc")
    return [str(r["name"]) for r in rows]


# --- the classifier --------------------------------------------------------------------------------


def make_chat(*, base_url: str | None, api_key: str | None, model: str, timeout: float = 60.0,
              max_retries: int = 2, max_tokens: int = 64) -> BaseChatModel:
    """A ``ChatOpenAI`` at temperature 0 (the OpenAI client retries 429/5xx with backoff)."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    return ChatOpenAI(
        model=model, base_url=base_url, api_key=SecretStr(api_key or "not-needed"), temperature=0.0,
        max_tokens=max_tokens, timeout=timeout, max_retries=max_retries, stream_usage=False,  # type: ignore[call-arg]
    )


class LLMClassifier:
    """:class:`~signoff.agents.triage.Classifier` backed by a chat model with structured output."""

    def __init__(
        self,
        labels: Sequence[str],
        chat: BaseChatModel,
        *,
        model_name: str,
        prompt: Prompt | None = None,
        confidence: ConfidenceMethod = "auto",
        samples: int = 5,
        sample_temperature: float = 0.8,
        top_logprobs: int = 5,
        pricing: Pricing | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        if confidence not in ("auto", "logprobs", "samples"):
            raise ConfigError(f"SIGNOFF_LLM_CONFIDENCE must be auto, logprobs or samples, not {confidence!r}")
        self.labels = list(dict.fromkeys(labels))
        self.chat = chat
        self.model_name = model_name
        self.prompt = prompt or load_prompt(PROMPT_ID)
        self.confidence = confidence
        self.samples = max(2, samples)
        self.sample_temperature = sample_temperature
        self.top_logprobs = top_logprobs
        self.pricing = pricing or Pricing()
        self.answer = answer_model(self.labels)
        self.response_format = response_format(self.answer)
        self.system = self.prompt.render(labels="\n".join(f"- {lab}" for lab in self.labels))
        self.calibration = calibration if calibration and calibration.key == self.calibration_key else None

    @classmethod
    def from_settings(cls, settings: Settings, labels: Sequence[str] | None = None,
                      *, chat: BaseChatModel | None = None) -> LLMClassifier:
        if not settings.llm_model:
            raise ConfigError("SIGNOFF_LLM_BACKEND=openai needs SIGNOFF_LLM_MODEL (and usually SIGNOFF_LLM_BASE_URL)")
        if labels is None:
            try:
                labels = labels_from_model_dir(settings.models_path)
            except ModelNotTrained as exc:
                raise ModelNotTrained(f"the LLM backend takes its label set from the trained model's classes: "
                                      f"{exc}") from exc
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        chat = chat or make_chat(base_url=settings.llm_base_url, api_key=key, model=settings.llm_model,
                                 timeout=settings.llm_timeout, max_retries=settings.llm_max_retries,
                                 max_tokens=settings.llm_max_tokens)
        clf = cls(labels, chat, model_name=settings.llm_model,
                  confidence=settings.llm_confidence,  # type: ignore[arg-type]
                  samples=settings.llm_samples, sample_temperature=settings.llm_sample_temperature,
                  pricing=Pricing(settings.llm_price_input, settings.llm_price_cached_input,
                                  settings.llm_price_output))
        clf.calibration = load_calibration(settings.models_path, clf.calibration_key)
        return clf

    @property
    def calibration_key(self) -> str:
        return f"{self.model_name}|{self.prompt.ref}|{self.confidence}"

    @property
    def version(self) -> str:
        """``llm:<model>:<prompt id.vN@sha12>:<confidence>[:cal-<hash>]``: changes with the prompt text."""
        v = f"llm:{self.model_name}:{self.prompt.ref}:{self.confidence}"
        return v + (f":cal-{self.calibration.tag}" if self.calibration else "")

    # -- one call -----------------------------------------------------------------------------------

    def _call(self, messages: list[BaseMessage], usage: Usage, *, temperature: float | None = None,
              logprobs: bool) -> tuple[str, list[dict[str, Any]] | None, str | None]:
        """(content, token logprobs, error) of one completion; transport errors raise ModelError."""
        import openai

        kwargs: dict[str, Any] = {"response_format": self.response_format}
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
            return content, None, "the answer was cut off at the token limit: give a shorter rationale"
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

    def _validate(self, content: str) -> tuple[BaseModel | None, str | None]:
        try:
            return self.answer.model_validate_json(content), None
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:3])
            return None, errs

    # -- one ticket ---------------------------------------------------------------------------------

    def classify(self, text: str) -> Prediction:
        """Classify one (screened) ticket text; :class:`ModelError` when the answer stays invalid."""
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        usage = Usage()
        messages: list[BaseMessage] = [SystemMessage(self.system), HumanMessage(text)]
        want_lp = self.confidence in ("auto", "logprobs")
        content, token_lp, error = self._call(messages, usage, logprobs=want_lp)
        answer = None
        if error is None:
            answer, error = self._validate(content)
        if answer is None:
            usage.retries += 1
            log.info("LLM answer invalid (%s): retrying once", error)
            retry = (f"That answer is invalid: {error}. Answer again with only a JSON object "
                     '{"label": <one of the allowed categories>, "rationale": <one short sentence>}.')
            messages = [*messages, AIMessage(content or "(empty)"), HumanMessage(retry)]
            content, token_lp, error = self._call(messages, usage, logprobs=want_lp)
            if error is None:
                answer, error = self._validate(content)
            if answer is None:
                raise ModelError(f"{self.model_name} gave an invalid answer twice (prompt {self.prompt.ref}): {error}")
        label: str = answer.label  # type: ignore[attr-defined]
        rationale: str = answer.rationale  # type: ignore[attr-defined]

        dist: dict[str, float] | None = None
        method = "logprobs"
        if self.confidence != "samples" and token_lp:
            dist = logprob_distribution(token_lp, label, self.labels)
        if dist is None:
            if self.confidence == "logprobs":
                raise ModelError(f"{self.model_name} returned no usable logprobs: set SIGNOFF_LLM_CONFIDENCE="
                                 f"samples (or auto)")
            method = "samples"
            dist = self._sample(messages, label, usage)
        raw = dist[label]
        confidence = self.calibration.apply(raw) if self.calibration else raw
        scale = (1.0 - confidence) / (1.0 - raw) if raw < 1.0 else 0.0
        others = sorted(((k, v * scale) for k, v in dist.items() if k != label and v > 0), key=lambda kv: -kv[1])
        return Prediction(
            label=label, confidence=min(1.0, max(0.0, confidence)),
            alternatives=[(k, round(v, 6)) for k, v in others[:3]],
            model_version=self.version, rationale=rationale,
            usage=usage.as_dict(self.pricing) | {
                "model": self.model_name, "prompt": self.prompt.ref, "prompt_sha256": self.prompt.sha256,
                "confidence_method": method, "raw_confidence": round(raw, 6),
                "calibrated": self.calibration is not None,
            },
        )

    def _sample(self, messages: list[BaseMessage], label: str, usage: Usage) -> dict[str, float]:
        """Agreement of k answers (the greedy one plus k-1 samples); an invalid sample counts against."""
        votes: Counter[str] = Counter({label: 1})
        for _ in range(self.samples - 1):
            content, _, error = self._call(messages, usage, temperature=self.sample_temperature, logprobs=False)
            answer = self._validate(content)[0] if error is None else None
            votes[answer.label if answer is not None else "\x00invalid"] += 1  # type: ignore[attr-defined]
        return {k: n / self.samples for k, n in votes.items() if k in self.labels}

    def predict(self, texts: list[str]) -> list[Prediction]:
        return [self.classify(t) for t in texts]
