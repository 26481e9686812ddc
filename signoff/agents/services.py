"""Wiring: build the services a run needs from settings (Odoo, model, policy, store, audit, executor).

Embedded by default: with no ``SIGNOFF_ODOO_URL`` the built-in Odoo stand-in is started for the
duration of the command (a real HTTP server on 127.0.0.1, read through odoorpc like a real Odoo).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from langgraph.checkpoint.sqlite import SqliteSaver

from signoff.agents.runner import TriageRunner
from signoff.agents.triage import Classifier, TriageServices
from signoff.config import Settings
from signoff.domain import Prediction
from signoff.errors import ConfigError
from signoff.guardrails.approvals import Approvals
from signoff.guardrails.audit import SqliteAuditLog
from signoff.guardrails.executor import Executor
from signoff.guardrails.policy import Policy, load_policy
from signoff.guardrails.store import SqliteApprovalStore
from signoff.integrations.odoo import OdooReader, connect_reader, connect_writer
from signoff.integrations.odoo_approvals import OdooApprovalChannel
from signoff.llm.classifier import TextClassifier
from signoff.sandbox.embedded import odoo_for


class LazyClassifier:
    """Loads the model on first use: resuming a run never needs it, triaging does.

    ``SIGNOFF_LLM_BACKEND=embedded`` (default): the trained embedded model; ``openai``: the LLM backend
    (:mod:`signoff.llm.openai_backend`), with the trained model's classes as its label set."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model: Classifier | None = None

    @property
    def model(self) -> Classifier:
        if self._model is None:
            backend = self._settings.llm_backend
            if backend == "openai":
                from signoff.llm.openai_backend import LLMClassifier

                self._model = LLMClassifier.from_settings(self._settings)
            elif backend == "embedded":
                self._model = TextClassifier.load(self._settings.models_path)
            else:
                raise ConfigError(f"SIGNOFF_LLM_BACKEND must be embedded or openai, not {backend!r}")
        return self._model

    @property
    def version(self) -> str:
        return self.model.version

    def predict(self, texts: list[str]) -> list[Prediction]:
        return self.model.predict(texts)


@dataclass
class Runtime:
    settings: Settings
    """Settings with ``odoo_url`` resolved (the stand-in's URL when embedded)."""
    policy: Policy
    store: SqliteApprovalStore
    audit: SqliteAuditLog
    executor: Executor
    approvals: Approvals
    runner: TriageRunner
    reader: OdooReader
    odoo_channel: OdooApprovalChannel
    """Approval activities in Odoo for actions whose policy channel is ``odoo``."""

    def sync_odoo(self) -> int:
        """Post new Odoo approval activities, pick up decisions made there, resume runs now ready."""
        self.odoo_channel.poll()
        return len(self.runner.recover())


def _checkpointer(settings: Settings) -> SqliteSaver:
    if settings.database_url:
        raise ConfigError("SIGNOFF_DATABASE_URL (Postgres) is not supported yet: unset it to use SQLite")
    return SqliteSaver(sqlite3.connect(settings.checkpoint_db_path, check_same_thread=False))


@contextmanager
def open_runtime(settings: Settings, *, classifier: Classifier | None = None) -> Iterator[Runtime]:
    """Everything a command needs, with Odoo reachable (embedded stand-in unless configured)."""
    settings.ensure_dirs()
    policy = load_policy(settings.policy_path)
    with odoo_for(settings) as live:
        store = SqliteApprovalStore(live.state_db_path)
        audit = SqliteAuditLog(live.state_db_path)
        reader = connect_reader(live)
        executor = Executor(
            store, audit, lambda: connect_writer(live),
            max_attempts=live.executor_max_attempts, stale_after=live.executor_stale_seconds,
            fault=live.fault_injection,
        )
        services = TriageServices(
            settings=live, reader=reader, classifier=classifier or LazyClassifier(live), policy=policy,
            store=store, audit=audit, executor=executor, db=live.odoo_db,
        )
        checkpointer = _checkpointer(live)
        approvals = Approvals(store, audit, policy)
        channel = OdooApprovalChannel(live.state_db_path, store, audit, approvals, reader,
                                      lambda: connect_writer(live))
        try:
            yield Runtime(live, policy, store, audit, executor, approvals, TriageRunner(services, checkpointer),
                          reader, channel)
        finally:
            checkpointer.conn.close()
