"""Prometheus text exposition (format 0.0.4) for the server, without a client library.

Counters and one histogram live in memory (per process); proposals by state are read from the
store at scrape time, so they are right across processes and restarts.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

LATENCY_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    escaped = [v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values]
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


class Counter:
    def __init__(self, name: str, help_: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labels = name, help_, labels
        self._values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[tuple(labels)] += amount

    def value(self, *labels: str) -> float:
        return self._values.get(tuple(labels), 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labels:
            items = [((), 0.0)]
        for labels, value in items:
            yield f"{self.name}{_labels(self.labels, labels)} {value:g}"


class Histogram:
    def __init__(self, name: str, help_: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help_, buckets
        self._counts = [0] * len(buckets)
        self._sum, self._count = 0.0, 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
            self._sum += value
            self._count += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            for bound, count in zip(self.buckets, self._counts, strict=True):
                yield f'{self.name}_bucket{{le="{bound:g}"}} {count}'
            yield f'{self.name}_bucket{{le="+Inf"}} {self._count}'
            yield f"{self.name}_sum {self._sum:g}"
            yield f"{self.name}_count {self._count}"


class Metrics:
    def __init__(self) -> None:
        self.runs = Counter("signoff_runs_total", "Triage runs started or resumed, by outcome.", ("status",))
        self.webhooks = Counter("signoff_webhooks_total", "Odoo webhook calls, by result.", ("result",))
        self.decisions = Counter("signoff_decisions_total", "Decisions recorded, by resulting state and channel.",
                                 ("state", "channel"))
        self.refusals = Counter("signoff_decisions_refused_total", "Decisions refused, by reason.", ("reason",))
        self.executor_failures = Counter("signoff_executor_failures_total",
                                         "Approved proposals that landed in the exception queue.")
        self.slack = Counter("signoff_slack_requests_total", "Slack requests handled, by kind.", ("kind",))
        self.expired = Counter("signoff_proposals_expired_total", "Proposals expired by the sweep.")
        self.reminders = Counter("signoff_reminders_total", "Reminders sent to approvers.")
        self.decision_latency = Histogram("signoff_decision_latency_seconds",
                                          "Time from proposal to human decision.", LATENCY_BUCKETS)

    def render(self, proposals_by_state: dict[str, int]) -> str:
        lines: list[str] = []
        for metric in (self.runs, self.webhooks, self.decisions, self.refusals, self.executor_failures,
                       self.slack, self.expired, self.reminders, self.decision_latency):
            lines += metric.render()
        lines += ["# HELP signoff_proposals Proposals in the store, by state.", "# TYPE signoff_proposals gauge"]
        for state, count in sorted(proposals_by_state.items()):
            lines.append(f'signoff_proposals{{state="{state}"}} {count}')
        return "\n".join(lines) + "\n"
