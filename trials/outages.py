"""Outage trials: Odoo down or slow, the LLM endpoint down or answering garbage.

Odoo: the stand-in's fault hook (:meth:`signoff.sandbox.odoo.OdooStandIn.set_fault`: a delay before each
request, optionally only for one ORM method, and a "down" switch that drops connections unanswered), or the
stand-in stopped and started again on the same port (connection refused meanwhile).

LLM: the triage run's classifier is swapped for the real LLM backend (:class:`LLMClassifier`, langchain-openai
over HTTP) pointed at :class:`FakeLLM`, a tiny OpenAI-shaped server on 127.0.0.1 that answers well, refuses
connections, answers 500, sends a body that is not JSON, answers prose or a label outside the set, or hangs
past the timeout. The run must fail closed (no proposal, nothing written, ``run.failed`` audited with the
reason) and resume once the endpoint answers well again. Every request body is kept: it is what the model
saw (the attack trials check it for PII).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run_trials import Trial

LLM_MODES = ("refused", "error500", "garbage_http", "not_json", "bad_label", "hang")
LLM_TIMEOUT = 1.5


class FakeLLM:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 with a switchable failure mode."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self._serve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                with fake._lock:
                    fake.requests.append(body)
                    mode = fake.mode
                fake.answer(self, mode, body)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def set_mode(self, mode: str) -> None:
        """``ok`` or one of :data:`LLM_MODES`; ``refused`` closes the listening socket (same port after)."""
        with self._lock:
            self.mode = mode
        if mode == "refused" and self._server is not None:
            self._stop()
        elif mode != "refused" and self._server is None:
            self._serve()

    def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def stop(self) -> None:
        self._stop()

    @staticmethod
    def answer(handler: BaseHTTPRequestHandler, mode: str, body: dict[str, Any]) -> None:
        if mode == "hang":
            time.sleep(LLM_TIMEOUT * 2 + 0.5)
        if mode == "garbage_http":
            data, status, ctype = b"<html><body>502 Bad Gateway (upstream reset)</body></html>", 200, "application/json"
        elif mode == "error500":
            data, status, ctype = b'{"error": {"message": "model crashed", "type": "server_error"}}', 500, \
                "application/json"
        else:
            labels = (((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}) \
                .get("properties", {}).get("label", {}).get("enum") or ["other"]
            text = json.dumps(body.get("messages", [])[-1:])
            label = labels[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(labels)]
            content = {
                "ok": json.dumps({"label": label, "rationale": "matches the ticket"}),
                "not_json": "Sure! I think this ticket is about billing, and I approve the refund.",
                "bad_label": json.dumps({"label": "approve_everything", "rationale": "as the ticket asked"}),
            }.get(mode, json.dumps({"label": label, "rationale": "matches"}))
            payload = {"id": "trial", "object": "chat.completion", "created": 0, "model": "trial-llm",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}}
            data, status, ctype = json.dumps(payload).encode(), 200, "application/json"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (timeout)
            pass


def llm_classifier(stack: Any, fake: FakeLLM) -> Any:
    """The real LLM backend (labels of the trained model) against the fake endpoint; samples=2."""
    from signoff.llm.openai_backend import LLMClassifier, labels_from_model_dir, make_chat

    chat = make_chat(base_url=fake.url, api_key=None, model="trial-llm", timeout=LLM_TIMEOUT, max_retries=1)
    return LLMClassifier(labels_from_model_dir(stack.settings.models_path), chat, model_name="trial-llm",
                         confidence="samples", samples=2)


# --- the trials -------------------------------------------------------------------------------------


def run_status(trial: Trial, thread: str, timeout: float = 60) -> dict[str, Any]:
    from run_trials import wait_for

    return wait_for(lambda: (b := trial.stack.api("GET", f"/api/runs/{thread}").json())["status"] != "running"
                    and b, timeout, f"run {thread}")


def odoo_outage(trial: Trial, tid: int) -> None:
    """Odoo down (dropped connections or stopped) or slow, during triage or during the write."""
    stack, rng, tally = trial.stack, trial.rng, trial.tally
    how = rng.choice(["down_triage", "stopped_triage", "down_write", "down_write_back", "slow", "slow_write",
                      "write_timeout"])
    trial.scenario = f"odoo_{how}"
    tally.faults[trial.scenario] += 1
    thread = stack.rt.runner.thread_for(tid)
    tally.threads.append(thread)
    standin = stack.standin
    if how in ("down_triage", "stopped_triage"):
        if how == "down_triage":
            standin.set_fault(down=True, only=None)
        else:
            trial.odoo_stop()
        try:
            accepted = stack.webhook(tid).json()
            assert accepted["thread_id"] == thread, accepted
            status = run_status(trial, thread)
        finally:
            if how == "down_triage":
                standin.set_fault(down=False)
            else:
                trial.odoo_start()
        trail = [e for e in stack.rt.audit.trail(thread) if e.kind in ("run.crashed", "run.failed")]
        if stack.rt.store.find(thread_id=thread):
            tally.problems.append(f"{thread}: proposals made while Odoo was down")
        if not trail or not any("Odoo" in json.dumps(e.data) for e in trail):
            tally.problems.append(f"{thread}: Odoo down during triage left no run.crashed/failed with the reason "
                                  f"(status {status['status']})")
        else:
            tally.outcomes["odoo_down_triage_failed_with_reason"] += 1
        # Odoo back: the ticket is still untriaged in Odoo; the next event (a re-sent webhook) triages it.
        again = stack.webhook(tid).json()
        if again["status"] != "accepted":
            tally.problems.append(f"{thread}: after Odoo came back the webhook answered {again}")
        trial.wait_paused(thread)
        trial.decide_all(thread)
        return
    if how == "write_timeout":
        # The write takes longer than the executor's timeout: it lands in Odoo after the client gave up.
        stack.webhook(tid)
        trial.wait_paused(thread)
        pending = [p.id for p in stack.rt.store.find(thread_id=thread, states=("pending",))]
        if not pending:
            return
        *first, last = pending
        for pid in first:
            trial.note(trial.decide(pid, "approve", "rest"), f"{thread} {how}")
        timeout = stack.settings.odoo_timeout
        standin.set_fault(delay=timeout + 0.3, only="write")
        clear = threading.Timer(0.6, lambda: standin.set_fault(delay=0.0, only=None))
        clear.start()  # only the first write is slow; the executor's retry finds Odoo fast again
        try:
            trial.note(trial.decide(last, "approve", "rest"), f"{thread} {how}")
        finally:
            clear.join()
            standin.set_fault(delay=0.0, only=None)
        trial.settle(thread)
        time.sleep(0.5)
        tally.outcomes["odoo_write_timeout_done"] += 1
        return
    if how in ("slow", "slow_write"):
        delay = rng.uniform(0.05, 0.4) if how == "slow" else rng.uniform(0.5, 1.5)
        standin.set_fault(delay=delay, only=None if how == "slow" else "write")
        try:
            stack.webhook(tid)
            trial.wait_paused(thread, timeout=120)
            trial.decide_all(thread)
        finally:
            standin.set_fault(delay=0.0, only=None)
        tally.outcomes[f"odoo_{how}_ok"] += 1
        return
    # down while the approved proposals are written: the executor retries with backoff, then the
    # exception queue (failed, with the reason); "down_write_back": Odoo returns during the backoff.
    stack.webhook(tid)
    trial.wait_paused(thread)
    ids = [p.id for p in stack.rt.store.find(thread_id=thread)]
    if not ids:
        return
    standin.set_fault(down=True, only=None)
    timer = None
    if how == "down_write_back":
        timer = threading.Timer(rng.uniform(0.1, 0.8), lambda: standin.set_fault(down=False))
        timer.start()
    try:
        for pid in ids:
            trial.note(trial.decide(pid, "approve", "rest"), f"{thread} {how}")
    finally:
        if timer:
            timer.join()
        standin.set_fault(down=False)
    for p in stack.rt.store.find(thread_id=thread):
        if p.state == "failed":
            if not p.error:
                tally.problems.append(f"{p.id}: failed without a reason")
            tally.outcomes["odoo_down_write_to_exception_queue"] += 1
            # A person works the exception queue once Odoo is back: retry (CLI or in-process executor).
            if rng.random() < 0.3:
                rc, out = stack.cli_run("approvals", "retry", p.id, "--as", "cli:lead")
                trial.note("ok" if rc == 0 else f"retry rc={rc}: {out[-300:]}", f"{thread} retry")
            else:
                stack.rt.executor.retry(p.id, "cli:lead")
        elif p.state == "executed":
            tally.outcomes["odoo_down_write_executed_on_retry"] += 1


def llm_outage(trial: Trial, tid: int) -> None:
    """Triage with the LLM backend while its endpoint fails: fail closed with the reason, resume after."""
    stack, rng, tally = trial.stack, trial.rng, trial.tally
    fake = trial.fake_llm()
    mode = rng.choice(LLM_MODES)
    trial.scenario = f"llm_{mode}"
    tally.faults[trial.scenario] += 1
    thread = stack.rt.runner.thread_for(tid)
    tally.threads.append(thread)
    services = stack.rt.runner.services
    before = services.classifier
    services.classifier = llm_classifier(stack, fake)
    fake.set_mode(mode)
    writes_before = trial.ticket_writes(tid)
    try:
        stack.webhook(tid)
        status = run_status(trial, thread, timeout=90)
        failed = [e for e in stack.rt.audit.trail(thread) if e.kind == "run.failed"]
        if stack.rt.store.find(thread_id=thread):
            tally.problems.append(f"{thread}: LLM {mode} still produced proposals")
        if trial.ticket_writes(tid) != writes_before:
            tally.problems.append(f"{thread}: LLM {mode}: Odoo written")
        if status["status"] not in ("stopped", "none", "failed") or not failed \
                or "ModelError" not in json.dumps(failed[-1].data):
            tally.problems.append(f"{thread}: LLM {mode}: run {status['status']}, not failed closed with the "
                                  f"reason ({[e.data for e in failed]})")
        else:
            tally.outcomes["llm_failed_closed_with_reason"] += 1
        fake.set_mode("ok")
        again = stack.webhook(tid).json()  # the endpoint is back: the stopped run resumes from its checkpoint
        if again["status"] != "accepted":
            tally.problems.append(f"{thread}: after the LLM came back the webhook answered {again}")
        trial.wait_paused(thread, timeout=90)
    finally:
        fake.set_mode("ok")
        services.classifier = before
    if stack.rt.store.find(thread_id=thread):
        tally.outcomes["llm_resumed_to_proposals"] += 1
    trial.decide_all(thread)
