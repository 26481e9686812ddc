"""Settings: the only module that reads the environment.

Every setting is an environment variable prefixed ``SIGNOFF_`` (or a line in ``.env``);
``.env.example`` names them all. Secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The public labelled data sits beside the checkout (``../shared/data``); CI has it there too.
log = logging.getLogger(__name__)
_DEFAULT_PUBLIC_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _default_data_dir() -> Path:
    return Path.cwd() / ".signoff"


class Settings(BaseSettings):
    """All of Signoff's settings, read from ``SIGNOFF_*`` environment variables and ``.env``."""

    model_config = SettingsConfigDict(env_prefix="SIGNOFF_", env_file=".env", extra="ignore")

    # Local state ---------------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=_default_data_dir)
    """Local state: approvals store, audit log, checkpoints, trained models, the Odoo stand-in's database."""
    public_data_dir: Path = _DEFAULT_PUBLIC_DATA
    """The public labelled data (tickets, contracts, churn); read in place, never copied."""
    database_url: str | None = None
    """Postgres URL for state; unset means SQLite files in ``data_dir``."""

    # Odoo ----------------------------------------------------------------------------------------
    odoo_url: str | None = None
    """e.g. ``http://127.0.0.1:8069``. Unset: the built-in Odoo stand-in is started in-process."""
    odoo_db: str = "signoff"
    odoo_login: str = "agent"
    """The read-only user the agents read with."""
    odoo_password: SecretStr = SecretStr("agent")
    """Password or API key of ``odoo_login``."""
    odoo_executor_login: str = "executor"
    """The user the executor writes approved proposals with (the only write-capable credential)."""
    odoo_executor_password: SecretStr = SecretStr("executor")
    odoo_timeout: float = Field(default=30.0, gt=0)
    odoo_version: str = "17.0"
    """Version profile of the built-in stand-in (16.0, 17.0 or 18.0)."""

    # Guardrails ----------------------------------------------------------------------------------
    policy_path: Path | None = None
    """Guardrail policy YAML; unset means the packaged default ``signoff/guardrails/default_policy.yaml``."""
    contract_policy_path: Path | None = None
    """Clause policy YAML of the contracts agent (deviations, thresholds); unset means the packaged
    ``signoff/guardrails/contract_policy.yaml``."""
    max_ticket_chars: int = Field(default=4000, ge=100)
    """Longer ticket text is cut to this size before any model sees it."""
    executor_max_attempts: int = Field(default=3, ge=1)
    executor_stale_seconds: float = Field(default=60.0, ge=0)
    """An ``executing`` proposal older than this is reconciled by the recovery sweep."""

    # Models --------------------------------------------------------------------------------------
    model_dir: Path | None = None
    """Where trained model artefacts live; unset means ``data_dir/models``."""
    chroma_url: str | None = None
    """A Chroma server (``http://host:8000``) for the contracts agent's labelled-clause collection;
    unset means an on-disk Chroma inside the model artefact."""
    llm_backend: str = "embedded"
    """``embedded`` (offline, no key) or ``openai`` (any OpenAI-compatible endpoint)."""
    llm_base_url: str | None = None
    """e.g. ``https://api.openai.com/v1``, vLLM/llama.cpp ``http://host:8000/v1``, Ollama ``http://host:11434/v1``."""
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    llm_timeout: float = Field(default=60.0, gt=0)
    """Seconds per LLM request."""
    llm_max_retries: int = Field(default=2, ge=0)
    """Retries of a request that got 408/409/429/5xx or no connection (exponential backoff, by the client)."""
    llm_max_tokens: int = Field(default=64, ge=1)
    """Cap on the answer's tokens (a label and a one-sentence rationale)."""
    llm_confidence: str = "auto"
    """``logprobs`` (label-token log-probabilities), ``samples`` (agreement of k answers) or ``auto``."""
    llm_samples: int = Field(default=5, ge=1)
    """k for ``samples`` confidence."""
    llm_sample_temperature: float = 0.8
    llm_price_input: float = 0.0
    """USD per million input tokens, for the cost in audit events (0: a local model)."""
    llm_price_cached_input: float = 0.0
    """USD per million cached input tokens (counted apart from fresh input)."""
    llm_price_output: float = 0.0
    """USD per million output tokens."""

    # Slack ---------------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_base_url: str = "https://slack.com/api/"
    """Slack Web API base URL; must end with ``/`` (the Slack stand-in's ``.../api/`` in tests and demos)."""
    slack_approvals_channel: str = "approvals"
    """Channel (name or id) where approval messages for ``channel: slack`` actions are posted."""

    # Server ----------------------------------------------------------------------------------------
    webhook_secret: SecretStr | None = None
    """Shared secret of ``POST /webhooks/odoo`` (header ``X-Signoff-Webhook-Secret`` or ``?token=``).
    Unset: the webhook endpoint refuses every call (503)."""
    api_token: SecretStr | None = None
    """Bearer token of the approvals REST API (``/api/...``). Unset: the API refuses every call (503)."""
    server_workers: int = Field(default=4, ge=1)
    """Threads that run triage, resumes and Slack follow-ups off the event loop."""
    sweep_seconds: float = Field(default=30.0, ge=0)
    """How often the server expires overdue proposals, sends reminders and resumes decided runs (0: never)."""

    # Orchestration (runs from outside, events out) ------------------------------------------------
    inbound_mapping_path: Path | None = None
    """YAML mapping ``POST /webhooks/in/{source}`` payloads to agent runs (``source: {agent, input, when}``)."""
    inbound_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """HMAC secret per inbound source, as JSON: ``{"billing": "..."}``. A source without one answers 404."""
    outbound_poll_seconds: float = Field(default=1.0, ge=0)
    """How often the event worker tails the audit log and sends due deliveries (0: no worker)."""
    outbound_timeout: float = Field(default=10.0, gt=0)
    """Seconds per event delivery request."""
    outbound_backoff_seconds: float = Field(default=5.0, ge=0)
    """Wait before the second delivery attempt; doubles each attempt up to ``outbound_backoff_max_seconds``."""
    outbound_backoff_max_seconds: float = Field(default=900.0, ge=0)
    outbound_give_up_seconds: float = Field(default=86400.0, gt=0)
    """A delivery still failing this long after its first attempt is ``failed`` (replay it by hand)."""

    # Web inbox (/inbox) ---------------------------------------------------------------------------
    inbox_secret: SecretStr | None = None
    """Signs the inbox's session cookies and CSRF tokens (16+ characters). Unset: ``/inbox`` answers 503."""
    inbox_trusted_header: str | None = None
    """Header a reverse proxy that authenticates people sets to the user name (e.g. ``X-Forwarded-User``).
    Only set it when the proxy strips that header from clients' requests. Unset: sign-in with a password."""
    inbox_session_hours: float = Field(default=12.0, gt=0)
    """How long an inbox sign-in lasts."""
    inbox_secure_cookie: bool = False
    """Mark the session cookie ``Secure`` (set it when the inbox is served over HTTPS)."""
    inbox_reports_dir: Path = Path("evals/reports")
    """Where the Quality page finds the eval HTML reports (``signoff eval --html``; ``make evals``)."""

    log_level: str = "WARNING"
    fault_injection: str | None = None
    """Test hook only: ``before_write`` or ``after_write`` makes the executor die like ``kill -9`` there."""

    @field_validator("inbox_secret")
    @classmethod
    def _inbox_secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("needs at least 16 characters (it signs the inbox's sessions); leave it unset to keep "
                             "the inbox off")
        return value

    @property
    def models_path(self) -> Path:
        return self.model_dir or self.data_dir / "models"

    @property
    def state_db_path(self) -> Path:
        """SQLite file holding proposals, decisions and the audit log."""
        return self.data_dir / "signoff.sqlite"

    @property
    def checkpoint_db_path(self) -> Path:
        """SQLite file of LangGraph's checkpointer (paused runs)."""
        return self.data_dir / "checkpoints.sqlite"

    @property
    def sandbox_db_path(self) -> Path:
        """SQLite file of the built-in Odoo stand-in."""
        return self.data_dir / "odoo-sandbox.sqlite"

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.models_path.mkdir(parents=True, exist_ok=True)


#: ``SIGNOFF_*`` variables that are not settings: CLI option defaults (``--as``, a new inbox password) and
#: switches of the test suite and tools.
TOOL_VARIABLES = ("SIGNOFF_APPROVER", "SIGNOFF_INBOX_NEW_PASSWORD", "SIGNOFF_TEST_", "SIGNOFF_LLM_LIVE",
                  "SIGNOFF_RECORD_CASSETTES")


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SIGNOFF_*`` environment variables that name no setting (a typo is otherwise silently ignored),
    each with the closest setting when there is one."""
    import difflib

    known = [f"SIGNOFF_{name.upper()}" for name in Settings.model_fields]
    out = []
    for var in sorted(environ if environ is not None else os.environ):
        if var.startswith("SIGNOFF_") and var not in known and not var.startswith(TOOL_VARIABLES):
            close = difflib.get_close_matches(var, known, n=1)
            out.append(f"{var} is not a Signoff setting (ignored)" + (f"; did you mean {close[0]}?" if close else ""))
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    for problem in unknown_variables():
        log.warning("%s", problem)
    return Settings()
