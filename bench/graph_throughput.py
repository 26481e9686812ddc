"""Tickets per second through the whole triage graph, checkpoints included, against the Odoo stand-in.

Seeds a fresh stand-in in a temporary data dir, trains the embedded model on its history, then
triages N new tickets (each: odoorpc reads over HTTP, screen, classify, decide, proposals stored,
audit events, SQLite checkpoints) and reports tickets/s, plus approve+execute throughput.

    python bench/graph_throughput.py [--tickets 200]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from signoff.agents.services import open_runtime
from signoff.config import Settings
from signoff.domain import Decision
from signoff.llm.training import train
from signoff.tools.tickets import labelled_history, untriaged_ticket_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=200, help="new tickets to triage")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        settings.ensure_dirs()
        with open_runtime(settings) as rt:
            texts, labels = labelled_history(rt.reader)
            t0 = time.perf_counter()
            report = train(texts, labels, settings.models_path)
            train_s = time.perf_counter() - t0
            ids = untriaged_ticket_ids(rt.reader)
            # Re-triage closed history tickets too if the seed has few new ones: the graph does the same work.
            if len(ids) < args.tickets:
                extra = rt.reader.search_read("helpdesk.ticket", [["id", "not in", ids]], ["id"],
                                              limit=args.tickets - len(ids))
                ids += [int(r["id"]) for r in extra]
            ids = ids[: args.tickets]
            rt.runner.services.classifier.predict(["warm up"])
            t0 = time.perf_counter()
            results = [rt.runner.run(i) for i in ids]
            graph_s = time.perf_counter() - t0
            pending = rt.store.find(states=("pending",))
            t0 = time.perf_counter()
            threads = set()
            for p in pending:
                rt.approvals.decide(Decision(proposal_id=p.id, verdict="approve", actor="cli:lead"))
                threads.add(p.thread_id)
            for thread in threads:
                rt.runner.resume_if_ready(thread)
            approve_s = time.perf_counter() - t0
            executed = len(rt.store.find(states=("executed",)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    statuses = {s: sum(r.status == s for r in results) for s in {r.status for r in results}}
    print(f"training: {len(texts)} examples in {train_s:.1f}s ({report.version})")
    print(f"graph: {len(ids)} tickets in {graph_s:.2f}s = {len(ids) / graph_s:.1f} tickets/s  {statuses}")
    print(f"approve + resume + execute: {len(pending)} proposals ({len(threads)} runs) in {approve_s:.2f}s "
          f"= {len(pending) / max(approve_s, 1e-9):.1f} proposals/s; executed {executed}")
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
