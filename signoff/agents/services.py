"""Wiring: build the services a run needs from settings (Odoo, model, policy, store, audit, executor).

Embedded by default: with no ``SIGNOFF_ODOO_URL`` the built-in Odoo stand-in is started for the
duration of the command (a real HTTP server on 127.0.0.1, read through odoorpc like a real Odoo).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from signoff.agents.runner import TriageRunner
from signoff.agents.triage import Classifier, TriageServices
from signoff.config import Settings
from signoff.domain import Prediction
from signoff.errors import ConfigError
from signoff.guardrails.approvals import Approvals
from signoff.guardrails.audit import AuditLog
from signoff.guardrails.executor import Executor
from signoff.guardrails.policy import Policy, load_policy
from signoff.guardrails.state import open_state
from signoff.guardrails.statedb import StateDB
from signoff.guardrails.store import ApprovalStore
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
    store: ApprovalStore
    """SQLite (``data_dir/signoff.sqlite``) or Postgres when ``database_url`` is set."""
    audit: AuditLog
    executor: Executor
    approvals: Approvals
    runner: TriageRunner
    reader: OdooReader
    odoo_channel: OdooApprovalChannel
    """Approval activities in Odoo for actions whose policy channel is ``odoo``."""
    statedb: StateDB
    """The state database (SQLite file or the Postgres pool) for the server's own tables."""
    checkpointer: BaseCheckpointSaver[Any] | None = field(default=None, repr=False)
    """The Postgres checkpointer (shared by every agent) when ``database_url`` is set; None on SQLite."""

    @contextmanager
    def checkpointer_for(self, sqlite_path: Path) -> Iterator[BaseCheckpointSaver[Any]]:
        """The checkpointer of another agent's runs: its own SQLite file, or the shared Postgres one."""
        if self.checkpointer is not None:
            yield self.checkpointer
            return
        conn = sqlite3.connect(sqlite_path, check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()

    def sync_odoo(self) -> int:
        """Post new Odoo approval activities, pick up decisions made there, resume runs now ready."""
        self.odoo_channel.poll()
        return len(self.runner.recover())


def _checkpointer(settings: Settings) -> BaseCheckpointSaver[Any]:
    """LangGraph's checkpointer: ``PostgresSaver`` (set up) when ``database_url`` is set, else SQLite."""
    if settings.database_url:
        from signoff.guardrails.postgres import postgres_checkpointer

        return postgres_checkpointer(settings.database_url)
    return SqliteSaver(sqlite3.connect(settings.checkpoint_db_path, check_same_thread=False))


def _close_checkpointer(checkpointer: BaseCheckpointSaver[Any]) -> None:
    conn = getattr(checkpointer, "conn", None)  # a sqlite3.Connection or a psycopg_pool.ConnectionPool
    if conn is not None:
        conn.close()


@contextmanager
def open_runtime(settings: Settings, *, classifier: Classifier | None = None,
                 odoo_at_first_use: bool = False) -> Iterator[Runtime]:
    """Everything a command needs, with Odoo reachable (embedded stand-in unless configured).
    ``odoo_at_first_use``: do not log in to Odoo yet (the server: it starts, and says on /readyz, while Odoo is
    down); otherwise an unreachable Odoo fails here."""
    settings.ensure_dirs()
    policy = load_policy(settings.policy_path)
    with odoo_for(settings) as live:
        state = open_state(live)
        store, audit = state.store, state.audit
        reader = connect_reader(live, lazy=odoo_at_first_use)
        executor = Executor(
            store, audit, lambda: connect_writer(live),
            max_attempts=live.executor_max_attempts, stale_after=live.executor_stale_seconds,
            fault=live.fault_injection,
        )
        services = TriageServices(
            settings=live, reader=reader, classifier=classifier or LazyClassifier(live), policy=policy,
            store=store, audit=audit, executor=executor, db=live.odoo_db,
        )
        try:
            checkpointer = _checkpointer(live)
        except BaseException:
            state.close()
            raise
        approvals = Approvals(store, audit, policy)
        channel = OdooApprovalChannel(state.statedb, store, audit, approvals, reader,
                                      lambda: connect_writer(live))
        try:
            yield Runtime(live, policy, store, audit, executor, approvals, TriageRunner(services, checkpointer),
                          reader, channel, state.statedb, checkpointer=checkpointer if live.database_url else None)
        finally:
            _close_checkpointer(checkpointer)
            state.close()
