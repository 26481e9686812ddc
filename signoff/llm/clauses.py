"""The embedded clause model: which chunks of a contract state which key term (CUAD categories).

Per chunk (a sentence or clause, :func:`signoff.tools.contracts.chunk_text`), three kinds of features:

* the frozen MiniLM embedding (:mod:`signoff.llm.embeddings`): meaning, paraphrase;
* TF-IDF word 1–2-grams: the exact legal wording ("governed by", "without cause");
* nearest labelled examples: for each category, the highest cosine similarity to a labelled CUAD clause
  of that category. The labelled clauses live in a Chroma collection on disk (PersistentClient under
  the model directory, with *our* embedding function, never Chroma's downloading default); at fit time
  the similarity skips clauses of the chunk's own contract, so the feature is never a copy of the label.

One logistic regression per category over all three, then Platt scaling fitted on out-of-fold scores
(contracts grouped into folds, never split), so ``confidence`` is a calibrated probability that the
chunk is (most of) an expert-labelled clause of that category. A per-category threshold maximising
out-of-fold F1 ships with the model; the clause policy may override it.

Second stage (:class:`SpanRanker`, fitted with the model): CUAD labels parties and dates as short
values ("Acme Corp.", "Company", "June 8, 2010") that a sentence-sized chunk never matches at word
Jaccard >= 0.5, so for Parties, Agreement Date and Effective Date the candidates are pattern spans in
the preamble / signature area (``party_candidates`` / ``date_candidates`` in
:mod:`signoff.tools.contracts`) plus the best chunks, scored by gradient-boosted heads over span
features and the chunk model's out-of-fold scores, Platt-scaled, with a span-F1 threshold. Every other
category gets the same second stage over its best chunks (keyword counts, the other categories'
scores, position), and keeps it only if it beat the plain chunk ranking out of fold on cuad_dev.

Artefact (``save(dir)``): ``dir/LATEST`` and ``dir/<version>/{manifest.json, model.joblib, chroma/}``
(``chroma/`` only without ``SIGNOFF_CHROMA_URL``); ``<version>`` = ``cm1-<data sha[:12]>-<embedder version>``.

Public API (kept stable; the evals and the agent use it):

* ``CATEGORIES``; ``load_cuad(path, *, limit=None, ids=None) -> list[LabelledContract]``;
  ``chunk_labels(chunks, contract) -> ndarray``;
* ``ClauseModel(*, embedder=None, c=2.0, folds=3, cache_dir=None, chroma_url=None, span_ranker=True)``:
  ``fit(contracts, *, progress=None)``, ``score(text, chunks=None) -> (chunks, proba, vectors)``,
  ``candidates(text, chunks, proba, *, top=20)`` (with its ranker), ``evidence(vector, category, k=2)``,
  ``save(directory)``, ``ClauseModel.load(directory, *, embedder=None, cache_dir=None, chroma_url=None)``;
  attributes ``thresholds``, ``version``, ``categories``, ``ranker``, ``metrics``;
* ``candidates(text, chunks, proba, *, top=20, categories=CATEGORIES, ranker=None) ->
  dict[category, list[Candidate]]`` (pass ``ranker=model.ranker`` for the model's second stage;
  without it, the first-stage candidates);
* ``Candidate(category, start, end, score, chunk)``; ``SpanRanker``; ``ExampleStore``;
  ``collection_name(version)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signoff.domain import utcnow
from signoff.errors import DataError, ModelError, ModelNotTrained
from signoff.llm.embeddings import Embedder, get_embedder, sha256_file
from signoff.tools.contracts import CHUNKER_VERSION, Chunk, chunk_text, text_sha256

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, float], None]

#: The key terms the contracts agent extracts, by CUAD category name.
CATEGORIES: tuple[str, ...] = (
    "Parties", "Agreement Date", "Effective Date", "Expiration Date", "Renewal Term",
    "Notice Period To Terminate Renewal", "Termination For Convenience", "Cap On Liability",
    "Uncapped Liability", "Governing Law", "Minimum Commitment", "Price Restrictions", "Exclusivity",
    "Change Of Control", "Anti-Assignment",
)
FORMAT = 1
_MODEL_FILE = "model.joblib"
_MANIFEST = "manifest.json"
_LATEST = "LATEST"
_COLLECTION = "cuad_clauses"


@dataclass
class LabelledContract:
    """A contract's text and its expert clause spans per category (CUAD JSONL record)."""

    id: str
    text: str
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """category -> [start, end) segments of its labelled clauses."""
    clauses: dict[str, list[str]] = field(default_factory=dict)
    """category -> the labelled clause texts (CUAD's excerpts; ``<omitted>`` marks cut middles)."""


def load_cuad(path: Path, *, limit: int | None = None, ids: Sequence[str] | None = None) -> list[LabelledContract]:
    """Contracts from ``cuad_dev.jsonl`` / ``cuad_test.jsonl`` (read in place); ``limit``: the first N
    (a positive number; None: all)."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of contracts, not {limit}")
    out: list[LabelledContract] = []
    wanted = set(ids) if ids else None
    try:
        fh = Path(path).open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    with fh:
        for line in fh:
            row = json.loads(line)
            if wanted is not None and row["id"] not in wanted:
                continue
            spans: dict[str, list[tuple[int, int]]] = {}
            clauses: dict[str, list[str]] = {}
            for cat in CATEGORIES:
                lab = row["labels"].get(cat) or {}
                clauses[cat] = list(lab.get("clauses") or [])
                spans[cat] = [(int(a), int(b)) for segs in lab.get("spans") or [] for a, b in (segs or [])
                              if a is not None]
            out.append(LabelledContract(row["id"], row["text"], spans, clauses))
            if limit and len(out) >= limit:
                break
    return out


def chunk_labels(chunks: Sequence[Chunk], contract: LabelledContract) -> np.ndarray:
    """``(n_chunks, n_categories)`` 0/1: a chunk is positive when at least half of it lies inside a
    labelled clause of the category, or it covers at least half of one (short clauses)."""
    y = np.zeros((len(chunks), len(CATEGORIES)), dtype=np.int8)
    for j, cat in enumerate(CATEGORIES):
        for a, b in contract.spans.get(cat, []):
            for i, ch in enumerate(chunks):
                if ch.end <= a or ch.start >= b:
                    continue
                inter = min(ch.end, b) - max(ch.start, a)
                if inter >= 0.5 * (ch.end - ch.start) or inter >= 0.5 * (b - a):
                    y[i, j] = 1
    return y


# --- embeddings, cached on disk ------------------------------------------------------------------


class EmbeddingCache:
    """Chunk embeddings of a whole contract, kept as ``.npy`` files keyed by text, chunker and model."""

    def __init__(self, directory: Path | None, embedder: Embedder) -> None:
        self.dir = directory
        self.embedder = embedder

    def _path(self, text: str) -> Path | None:
        if self.dir is None:
            return None
        key = hashlib.sha256(f"{self.embedder.version}|{CHUNKER_VERSION}|{text_sha256(text)}".encode()).hexdigest()
        return self.dir / f"{key[:32]}.npy"

    def chunks(self, text: str, chunks: Sequence[Chunk]) -> np.ndarray:
        path = self._path(text)
        if path is not None and path.is_file():
            vecs = np.load(path)
            if vecs.shape == (len(chunks), self.embedder.dim):
                return np.asarray(vecs, dtype=np.float32)
        vecs = self.embedder.encode([c.text for c in chunks])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, vecs.astype(np.float16))
            os.replace(tmp, path)
        return vecs


# --- Chroma: the labelled examples ---------------------------------------------------------------


class _OurEmbeddingFunction:
    """Chroma embedding function backed by :class:`Embedder` (no download, no torch)."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return list(self._embedder.encode(list(input)))

    @staticmethod
    def name() -> str:
        return "signoff-minilm-onnx-int8"

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]

    def embed_query(self, input: list[str]) -> list[np.ndarray]:
        return self(input)

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> _OurEmbeddingFunction:
        return _OurEmbeddingFunction(get_embedder())

    def validate_config(self, config: dict[str, Any]) -> None:
        return None

    def validate_config_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        return None


def _chroma_client(path: Path | None, url: str | None = None) -> Any:
    """A Chroma client: ``HttpClient`` for a server URL (``http://host:8000``), else ``PersistentClient``."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DataError(f"SIGNOFF_CHROMA_URL must look like http://host:8000, not {url!r}")
        ssl = parts.scheme == "https"
        try:
            return chromadb.HttpClient(host=parts.hostname, port=parts.port or (443 if ssl else 8000), ssl=ssl,
                                       settings=settings)
        except Exception as exc:  # chromadb raises ValueError / httpx errors when the server is down
            raise DataError(f"cannot reach the Chroma server at {url}: {exc}") from exc
    if path is None:
        raise DataError("an on-disk Chroma store needs a path")
    return chromadb.PersistentClient(path=str(path), settings=settings)


def collection_name(version: str) -> str:
    """The collection of a model version on a shared Chroma server (one per model, never mixed)."""
    return f"signoff-clauses-{hashlib.sha256(version.encode()).hexdigest()[:16]}"


class ExampleStore:
    """The labelled clauses (text, category, contract) in a Chroma collection: on disk under the model
    artefact (``path``), or on a Chroma server (``url``; one collection per model version)."""

    def __init__(self, path: Path | None, embedder: Embedder, *, url: str | None = None,
                 name: str = _COLLECTION, fresh: bool = False) -> None:
        self.path = path
        self.url = url
        self.embedder = embedder
        self._client = _chroma_client(path, url)
        ef = _OurEmbeddingFunction(embedder)
        if fresh:
            try:
                self._client.delete_collection(name)
            except Exception:  # not there yet (chromadb raises NotFoundError / ValueError by version)
                pass
        self.collection = self._client.get_or_create_collection(
            name, embedding_function=ef, metadata={"hnsw:space": "cosine"},
        )

    def count(self) -> int:
        return int(self.collection.count())

    def add(self, ids: list[str], texts: list[str], vectors: np.ndarray, metas: list[dict[str, Any]]) -> None:
        for s in range(0, len(ids), 2000):
            self.collection.add(ids=ids[s : s + 2000], documents=texts[s : s + 2000],
                                embeddings=[v.tolist() for v in vectors[s : s + 2000]],
                                metadatas=metas[s : s + 2000])

    def matrix(self) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
        got = self.collection.get(include=["embeddings", "metadatas", "documents"])
        vecs = np.asarray(got["embeddings"], dtype=np.float32).reshape(-1, self.embedder.dim)
        return vecs, list(got["metadatas"] or []), list(got["documents"] or [])

    def nearest(self, vector: np.ndarray, category: str, k: int = 3) -> list[dict[str, Any]]:
        """The ``k`` labelled clauses of ``category`` nearest to ``vector`` (evidence for a term)."""
        res = self.collection.query(query_embeddings=[vector.tolist()], n_results=k,
                                    where={"category": category}, include=["documents", "metadatas", "distances"])
        out = []
        for doc, meta, dist in zip(res["documents"][0], res["metadatas"][0], res["distances"][0], strict=False):
            out.append({"text": doc, "contract": meta.get("contract"), "similarity": round(1.0 - float(dist), 4)})
        return out


def knn_features(vecs: np.ndarray, ex_vecs: np.ndarray, ex_cat: np.ndarray, ex_group: np.ndarray | None = None,
                 group: str | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """Per chunk and category, the best cosine similarity to a labelled clause of that category.
    ``groups`` (one per chunk) masks examples of the chunk's own contract (fit time only)."""
    out = np.zeros((len(vecs), len(CATEGORIES)), dtype=np.float32)
    if not len(ex_vecs) or not len(vecs):
        return out
    cols = [np.flatnonzero(ex_cat == j) for j in range(len(CATEGORIES))]
    for s in range(0, len(vecs), 2048):
        sims = vecs[s : s + 2048] @ ex_vecs.T
        if groups is not None and ex_group is not None:
            sims[groups[s : s + 2048, None] == ex_group[None, :]] = -1.0
        for j, idx in enumerate(cols):
            if idx.size:
                out[s : s + 2048, j] = sims[:, idx].max(axis=1)
    return out


# --- the model -----------------------------------------------------------------------------------


def _platt_fit(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():
        return 0.0, -10.0 if y.max() == 0 else 10.0
    # mildly regularised: with few positives an unregularised fit saturates (every score 0 or 1)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(scores.reshape(-1, 1), y)
    return max(0.05, float(lr.coef_[0, 0])), float(lr.intercept_[0])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))


#: Folds of the out-of-fold calibration (contracts grouped into folds).
DEFAULT_FOLDS = 3


def min_training_contracts(folds: int = DEFAULT_FOLDS) -> int:
    """Labelled contracts :meth:`ClauseModel.fit` needs: one per fold (and at least two)."""
    return max(2, folds)


class ClauseModel:
    """Scores chunks per category; ``fit`` on labelled contracts, ``save``/``load`` as a versioned artefact."""

    def __init__(self, *, embedder: Embedder | None = None, c: float = 2.0, folds: int = DEFAULT_FOLDS,
                 cache_dir: Path | None = None, chroma_url: str | None = None, span_ranker: bool = True) -> None:
        self._embedder = embedder
        self.span_ranker = span_ranker
        """Fit the second stage (:class:`SpanRanker`) after the chunk heads."""
        self.ranker: SpanRanker | None = None
        self.chroma_url = chroma_url
        """A Chroma server for the labelled clauses (``SIGNOFF_CHROMA_URL``); None: on disk in the artefact."""
        self.c = c
        self.folds = folds
        self.cache_dir = cache_dir
        self.categories: tuple[str, ...] = CATEGORIES
        self.version = ""
        self.thresholds: dict[str, float] = {}
        self.metrics: dict[str, Any] = {}
        self.platt: dict[str, tuple[float, float]] = {}
        self._tfidf: Any = None
        self._heads: dict[str, Any] = {}
        self._ex_vecs = np.zeros((0, 384), dtype=np.float32)
        self._ex_cat = np.zeros(0, dtype=np.int64)
        self.examples: ExampleStore | None = None
        self.path: Path | None = None
        self._ex_texts: list[str] = []
        self._ex_groups: list[str] = []
        self.oof_docs: list[_Doc] = []
        """After ``fit``: each training contract with its out-of-fold chunk scores (not saved)."""

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    @property
    def fitted(self) -> bool:
        return bool(self._heads)

    def embed(self, text: str, chunks: Sequence[Chunk]) -> np.ndarray:
        return EmbeddingCache(self.cache_dir, self.embedder).chunks(text, chunks)

    # -- features ---------------------------------------------------------------------------------

    def _features(self, texts: Sequence[str], vecs: np.ndarray, knn: np.ndarray) -> Any:
        from scipy import sparse

        x_t = self._tfidf.transform(list(texts))
        return sparse.hstack([sparse.csr_matrix(vecs), sparse.csr_matrix(knn * 2.0), x_t], format="csr")

    def _new_tfidf(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=60_000,
                               dtype=np.float32)

    # -- fitting ----------------------------------------------------------------------------------

    def fit(self, contracts: Sequence[LabelledContract], *, progress: ProgressFn | None = None) -> ClauseModel:
        from sklearn.linear_model import LogisticRegression

        def report(stage: str, frac: float) -> None:
            if progress is not None:
                progress(stage, min(1.0, max(0.0, frac)))

        if len(contracts) < min_training_contracts(self.folds):
            raise DataError(f"need at least {min_training_contracts(self.folds)} labelled contracts, "
                            f"got {len(contracts)}")
        texts: list[str] = []
        chunk_lists: list[list[Chunk]] = []
        vec_parts: list[np.ndarray] = []
        y_parts: list[np.ndarray] = []
        groups: list[int] = []
        for n, contract in enumerate(contracts):
            chunks = chunk_text(contract.text)
            chunk_lists.append(chunks)
            vec_parts.append(self.embed(contract.text, chunks))
            y_parts.append(chunk_labels(chunks, contract))
            texts.extend(c.text for c in chunks)
            groups.extend([n] * len(chunks))
            report("embedding", 0.7 * (n + 1) / len(contracts))
        vecs = np.vstack(vec_parts).astype(np.float32)
        y = np.vstack(y_parts)
        g = np.asarray(groups)
        # labelled examples: the positive chunks of every category
        ex_rows, ex_cat = np.nonzero(y)
        self._ex_vecs, self._ex_cat = vecs[ex_rows], ex_cat.astype(np.int64)
        ex_group = g[ex_rows]
        knn = knn_features(vecs, self._ex_vecs, self._ex_cat, ex_group, groups=g)
        self._tfidf = self._new_tfidf().fit(texts)
        x = self._features(texts, vecs, knn)

        # out-of-fold scores (contracts grouped) -> Platt scaling and thresholds
        fold = g % self.folds
        oof = np.zeros(y.shape, dtype=np.float64)
        report("calibrating", 0.7)
        for k in range(self.folds):
            tr, te = fold != k, fold == k
            for j, _cat in enumerate(self.categories):
                if y[tr, j].max() == 0:
                    oof[te, j] = -10.0
                    continue
                head = LogisticRegression(C=self.c, max_iter=2000).fit(x[tr], y[tr, j])
                oof[te, j] = head.decision_function(x[te])
            report("calibrating", 0.7 + 0.2 * (k + 1) / self.folds)
        self.platt, self.thresholds, self.metrics = {}, {}, {"n_contracts": len(contracts), "n_chunks": len(texts)}
        p_oof = np.zeros(y.shape, dtype=np.float64)
        for j, cat in enumerate(self.categories):
            a, b = _platt_fit(oof[:, j], y[:, j])
            self.platt[cat] = (a, b)
            p = p_oof[:, j] = _sigmoid(a * oof[:, j] + b)
            self.thresholds[cat], best_f1 = _best_threshold(p, y[:, j])
            self.metrics[cat] = {"positives": int(y[:, j].sum()), "oof_chunk_f1": round(best_f1, 4),
                                 "oof_ece": round(_ece(p, y[:, j]), 4), "chunk_threshold": self.thresholds[cat]}
        # the second stage learns from out-of-fold chunk scores, as it will see unseen contracts
        bounds = np.cumsum([0] + [len(c) for c in chunk_lists])
        self.oof_docs = [_Doc.of(c.text, chunk_lists[n], p_oof[bounds[n]:bounds[n + 1]])
                         for n, c in enumerate(contracts)]
        self.ranker = None
        if self.span_ranker:
            self.ranker = SpanRanker(self.categories, folds=self.folds).fit(
                contracts, self.oof_docs, base_thresholds=self.thresholds,
                progress=lambda s, f: report(s, 0.9 + 0.05 * f))
            for cat, used in self.ranker.use.items():
                self.metrics[cat]["ranker"] = self.ranker.metrics.get(cat)
                if used:
                    self.thresholds[cat] = self.ranker.thresholds[cat]
        self._heads = {}
        for j, cat in enumerate(self.categories):
            if y[:, j].max() == 0:
                continue
            self._heads[cat] = LogisticRegression(C=self.c, max_iter=2000).fit(x, y[:, j])
        report("done", 1.0)
        digest = hashlib.sha256("|".join(sorted(c.id for c in contracts)).encode()).hexdigest()
        self.version = f"cm{FORMAT}-{digest[:12]}-{self.embedder.version}"
        self._ex_texts = [texts[i] for i in ex_rows]
        self._ex_groups = [contracts[int(gi)].id for gi in ex_group]
        return self

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, text: str, chunks: Sequence[Chunk] | None = None) -> tuple[list[Chunk], np.ndarray, np.ndarray]:
        """``(chunks, probabilities (n_chunks, n_categories), chunk vectors)`` for a contract text."""
        if not self.fitted:
            raise ModelNotTrained("the clause model is not trained: run `signoff contracts train`")
        chunks = list(chunks) if chunks is not None else chunk_text(text)
        if not chunks:
            return chunks, np.zeros((0, len(self.categories))), np.zeros((0, self.embedder.dim), dtype=np.float32)
        vecs = self.embed(text, chunks)
        knn = knn_features(vecs, self._ex_vecs, self._ex_cat)
        x = self._features([c.text for c in chunks], vecs, knn)
        proba = np.zeros((len(chunks), len(self.categories)))
        for j, cat in enumerate(self.categories):
            head = self._heads.get(cat)
            if head is None:
                continue
            a, b = self.platt[cat]
            proba[:, j] = _sigmoid(a * head.decision_function(x) + b)
        return chunks, proba, vecs

    def evidence(self, vector: np.ndarray, category: str, k: int = 2) -> list[dict[str, Any]]:
        """Nearest labelled clauses (from the Chroma store) of a category: why a chunk scored."""
        if self.examples is None:
            return []
        try:
            return self.examples.nearest(vector, category, k)
        except Exception as exc:  # chroma raises its own types; evidence is optional
            log.warning("example lookup failed: %s", exc)
            return []

    # -- persistence ------------------------------------------------------------------------------

    def save(self, directory: Path) -> Path:
        import joblib

        if not self.fitted:
            raise ModelNotTrained("nothing to save: the clause model is not trained")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / self.version
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
        try:
            joblib.dump({"tfidf": self._tfidf, "heads": self._heads, "platt": self.platt,
                         "ex_vecs": self._ex_vecs.astype(np.float16), "ex_cat": self._ex_cat,
                         "ex_texts": self._ex_texts, "ex_groups": self._ex_groups,
                         "categories": self.categories, "c": self.c, **self._extra_state()}, tmp / _MODEL_FILE)
            if self.chroma_url:
                store = ExampleStore(None, self.embedder, url=self.chroma_url, name=collection_name(self.version),
                                     fresh=True)
                examples = {"store": "chroma-server", "collection": collection_name(self.version)}
            else:
                store = ExampleStore(tmp / "chroma", self.embedder)
                examples = {"store": "chroma-disk", "collection": _COLLECTION}
            self._fill(store)
            del store
            manifest = {"format": FORMAT, "version": self.version, "created_at": utcnow().isoformat(),
                        "examples": examples,
                        "embedder": self.embedder.version, "chunker": CHUNKER_VERSION,
                        "categories": list(self.categories), "thresholds": self.thresholds,
                        "metrics": self.metrics, "model_sha256": sha256_file(tmp / _MODEL_FILE)}
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (directory / _LATEST).write_text(self.version)
        self.path = final
        return final

    @classmethod
    def load(cls, directory: Path, *, embedder: Embedder | None = None, cache_dir: Path | None = None,
             chroma_url: str | None = None) -> ClauseModel:
        import joblib

        directory = Path(directory)
        latest = directory / _LATEST
        if not latest.is_file():
            raise ModelNotTrained(f"no clause model in {directory}: run `signoff contracts train`")
        path = directory / latest.read_text().strip()
        try:
            manifest = json.loads((path / _MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"clause model {path} has no readable manifest: {exc}") from exc
        if sha256_file(path / _MODEL_FILE) != manifest.get("model_sha256"):
            raise ModelError(f"clause model {path} failed its integrity check; retrain it")
        model = cls(embedder=embedder, cache_dir=cache_dir)
        if manifest.get("embedder") != model.embedder.version:
            raise ModelError(f"clause model {path} was trained with {manifest.get('embedder')}, "
                             f"not {model.embedder.version}; retrain it")
        blob = joblib.load(path / _MODEL_FILE)
        model._tfidf, model._heads, model.platt = blob["tfidf"], blob["heads"], blob["platt"]
        model._ex_vecs = np.asarray(blob["ex_vecs"], dtype=np.float32)
        model._ex_cat = np.asarray(blob["ex_cat"], dtype=np.int64)
        model.categories = tuple(blob["categories"])
        model.version, model.thresholds = manifest["version"], dict(manifest["thresholds"])
        model.metrics, model.path = manifest.get("metrics", {}), path
        model._ex_texts = list(blob.get("ex_texts") or [])
        model._ex_groups = list(blob.get("ex_groups") or [])
        model._load_extra_state(blob)
        model.chroma_url = chroma_url
        try:
            if chroma_url:
                store = ExampleStore(None, model.embedder, url=chroma_url, name=collection_name(model.version))
                if store.count() == 0 and model._ex_texts:  # a fresh server: publish this model's examples
                    model._fill(store)
                model.examples = store
            else:
                model.examples = ExampleStore(path / "chroma", model.embedder)
        except Exception as exc:  # evidence only; scoring does not need it
            log.warning("labelled-example store unavailable: %s", exc)
        return model

    def _fill(self, store: ExampleStore) -> None:
        store.add([f"ex{i}" for i in range(len(self._ex_texts))], self._ex_texts, self._ex_vecs,
                  [{"category": self.categories[int(c)], "contract": gid}
                   for c, gid in zip(self._ex_cat, self._ex_groups, strict=True)])

    def _extra_state(self) -> dict[str, Any]:
        return {"ranker": self.ranker.state() if self.ranker is not None else None}

    def _load_extra_state(self, blob: dict[str, Any]) -> None:
        self.ranker = SpanRanker.from_state(blob["ranker"]) if blob.get("ranker") else None

    def candidates(self, text: str, chunks: Sequence[Chunk], proba: np.ndarray, *, top: int = 20
                   ) -> dict[str, list[Candidate]]:
        """:func:`candidates` with this model's span ranker."""
        return candidates(text, chunks, proba, top=top, categories=self.categories, ranker=self.ranker)


def _best_threshold(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The probability threshold with the best chunk-level F1 (ties: the higher threshold); at least 0.3."""
    if y.sum() == 0:
        return 0.99, 0.0
    order = np.argsort(-p, kind="stable")
    tp = np.cumsum(y[order])
    k = np.arange(1, len(p) + 1)
    f1 = 2 * tp / (k + y.sum())
    i = int(np.argmax(f1))
    return max(0.3, float(round(p[order][i], 4))), float(f1[i])


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    from signoff.evals.metrics import expected_calibration_error

    return float(expected_calibration_error(p, y, n_bins=bins))


# --- from chunk scores to candidate spans --------------------------------------------------------

#: Categories whose answer is a short value inside a sentence (CUAD labels the value, not the clause).
DATE_CATEGORIES = ("Agreement Date", "Effective Date")
PARTY_CATEGORY = "Parties"


@dataclass(frozen=True)
class Candidate:
    """A span proposed for a category: ``text[start:end]`` with a calibrated ``score``."""

    category: str
    start: int
    end: int
    score: float
    chunk: int


def candidates(text: str, chunks: Sequence[Chunk], proba: np.ndarray, *, top: int = 20,
               categories: Sequence[str] = CATEGORIES, ranker: SpanRanker | None = None
               ) -> dict[str, list[Candidate]]:
    """Per category, up to ``top`` candidate spans, best first.

    With a ``ranker`` (``model.ranker`` of a model trained with one), the categories it covers get its
    span-level candidates and calibrated scores (:class:`SpanRanker`). Otherwise: clause categories,
    the chunks themselves; date categories, the dates inside the best chunks (CUAD labels "October 1,
    2019", not the sentence around it); parties, company names and their defined short names inside the
    best chunks."""
    from signoff.tools.contracts import find_dates, find_parties

    out: dict[str, list[Candidate]] = {}
    ranked = ranker.rank(text, chunks, proba, top=top, categories=categories) if ranker is not None else {}
    for j, cat in enumerate(categories):
        if cat in ranked:
            out[cat] = ranked[cat]
            continue
        if not len(chunks):
            out[cat] = []
            continue
        order = np.argsort(-proba[:, j], kind="stable")[: max(top, 1)]
        found: list[Candidate] = []
        if cat in DATE_CATEGORIES or cat == PARTY_CATEGORY:
            for i in order:
                ch = chunks[int(i)]
                p = float(proba[i, j])
                if cat == PARTY_CATEGORY:
                    spans = [(s, e) for _n, s, e in find_parties(ch.text, ch.start)]
                else:
                    spans = [(d.start, d.end) for d in find_dates(ch.text, ch.start)]
                for rank, (s, e) in enumerate(spans):
                    # later matches in the same chunk are slightly less likely to be the answer
                    found.append(Candidate(cat, s, e, p * (0.98 ** rank), int(i)))
            found.sort(key=lambda c: (-c.score, c.start))
            found = found[:top]
        else:
            found = [Candidate(cat, chunks[int(i)].start, chunks[int(i)].end, float(proba[i, j]), int(i))
                     for i in order]
        out[cat] = found
    return out


# --- the span ranker: span-level candidates, scored and calibrated -------------------------------

#: Candidate kinds (:func:`signoff.tools.contracts.party_candidates` / ``date_candidates``, or a chunk).
KINDS = ("chunk", "date", "blankdate", "entity", "quoted", "capseq", "paren", "partydef")
#: Words that signal a category inside a span (counted; the chunk model sees them only through TF-IDF).
_KEYWORDS = {
    "convenience": r"for (?:its |their )?convenience|without cause|for any reason|for no reason|at any time|"
                   r"sole discretion|with or without cause",
    "minimum": r"\bminimum\b|at least|not less than|no less than|shall (?:purchase|order|pay)|commit",
    "exclusive": r"exclusiv|\bsole\b|\bonly\b|\bsolely\b|shall not (?:sell|distribute|market|engage|appoint)|compet",
    "control": r"change (?:of|in) (?:control|ownership)|merger|acqui|consolidat|controlling|voting|reorgani|"
               r"substantially all",
    "price": r"\bprices?\b|increase|decrease|most favou?red|not exceed|discount",
    "liability": r"in no event|liabilit|aggregate|exceed|limited to|consequential",
    "assign": r"assign|transfer|delegat",
    "term": r"renew|expir|terminat|notice|term\b",
    "date": r"\bdated?\b|as of|effective|entered into|commenc",
    "party": r"\bpart(?:y|ies)\b|hereinafter|referred to|between|among",
}
_KEYWORD_RX = {k: re.compile(v, re.I) for k, v in _KEYWORDS.items()}
_BEFORE = ("between", "among", " and ", " by ", "dated", "as of", "effective", "entered into", "made", "day of",
           "commenc", "signed", "executed", "date:", "hereinafter", "referred to", "f/k/a", " with ", "(", "\"",
           "“", "name:", "by:", "on ")
_AFTER = ("(", "\"", "”", ", a ", " a ", "corporation", "company", "organized", "incorporated", "having",
          "effective date", "(the", "between", "located", "principal", "limited liability", ")", " and ", ",",
          "agreement", "inc")
_SUFFIX_RX = re.compile(r"(?:Inc|Corp|Corporation|Company|Ltd|Limited|LLC|L\.L\.C|LLP|L\.P|PLC|GmbH|AG|S\.A|N\.V|"
                        r"B\.V|Pte|Pty|SE|AB|Oy|Incorporated)\.?$", re.I)


@dataclass
class _Doc:
    """A contract's chunks and chunk scores, with what the span features look up."""

    text: str
    chunks: Sequence[Chunk]
    proba: np.ndarray
    starts: np.ndarray
    ranks: np.ndarray

    @classmethod
    def of(cls, text: str, chunks: Sequence[Chunk], proba: np.ndarray) -> _Doc:
        starts = np.asarray([c.start for c in chunks], dtype=np.int64)
        ranks = np.argsort(np.argsort(-proba, axis=0, kind="stable"), axis=0, kind="stable") if len(chunks) \
            else np.zeros((0, proba.shape[1] if proba.ndim == 2 else 0), dtype=np.int64)
        return cls(text, chunks, proba, starts, ranks)

    def chunk_of(self, pos: int) -> int:
        return max(0, int(np.searchsorted(self.starts, pos, side="right")) - 1) if len(self.starts) else 0


def _raw_candidates(doc: _Doc, cat: str, j: int, k_chunks: int) -> list[tuple[str, int, int]]:
    from signoff.tools.contracts import date_candidates, party_candidates

    order: list[int] = [int(i) for i in np.argsort(-doc.proba[:, j], kind="stable")[:k_chunks]] \
        if len(doc.chunks) else []
    out = [("chunk", doc.chunks[i].start, doc.chunks[i].end) for i in order]
    if cat == PARTY_CATEGORY:
        out += party_candidates(doc.text, list(doc.chunks))
    elif cat in DATE_CATEGORIES:
        out += date_candidates(doc.text)
    return out


def _span_features(doc: _Doc, j: int, cands: list[tuple[str, int, int]]) -> np.ndarray:
    text, n = doc.text, max(1, len(doc.text))
    n_cat = doc.proba.shape[1]
    width = len(KINDS) + 12 + len(_KEYWORD_RX) + len(_BEFORE) + len(_AFTER) + n_cat
    x = np.zeros((len(cands), width), dtype=np.float32)
    kind_seen: dict[str, int] = {}
    counts: dict[str, int] = {}
    order_in_kind = np.zeros(len(cands), dtype=np.float32)
    for i in sorted(range(len(cands)), key=lambda i: cands[i][1]):
        kind = cands[i][0]
        order_in_kind[i] = kind_seen.get(kind, 0)
        kind_seen[kind] = kind_seen.get(kind, 0) + 1
    for r, (kind, s, e) in enumerate(cands):
        span = text[s:e]
        c = doc.chunk_of(s) if len(doc.chunks) else 0
        col = 0
        x[r, KINDS.index(kind)] = 1.0
        col = len(KINDS)
        if len(doc.chunks):
            p = doc.proba[c]
            nb = max(float(doc.proba[c - 1, j]) if c > 0 else 0.0,
                     float(doc.proba[c + 1, j]) if c + 1 < len(doc.chunks) else 0.0)
            x[r, col:col + 3] = (p[j], np.log1p(doc.ranks[c, j]), nb)
        letters = [ch for ch in span if ch.isalpha()]
        if len(span) <= 80:
            if span not in counts:
                counts[span] = text.count(span)
            cnt = counts[span]
        else:
            cnt = 1
        before = text[max(0, s - 50):s].lower()
        after = text[e:e + 40].lower()
        x[r, col + 3:col + 12] = (
            s / n, np.log1p(s), np.log1p(e - s), len(span.split()),
            (sum(ch.isupper() for ch in letters) / len(letters)) if letters else 0.0,
            np.log1p(cnt), np.log1p(order_in_kind[r]), float(s > 0.85 * n),
            float(bool(_SUFFIX_RX.search(span.rstrip(" ,")))),
        )
        col += 12
        for k, rx in enumerate(_KEYWORD_RX.values()):
            x[r, col + k] = min(3, len(rx.findall(span)))
        col += len(_KEYWORD_RX)
        for k, w in enumerate(_BEFORE):
            x[r, col + k] = float(w in before[-25:]) + float(w in before)
        col += len(_BEFORE)
        for k, w in enumerate(_AFTER):
            x[r, col + k] = float(w in after[:12]) + float(w in after)
        col += len(_AFTER)
        if len(doc.chunks):
            x[r, col:col + n_cat] = doc.proba[c]
    return x


#: Span categories: a candidate whose words overlap a better one's (Jaccard >= 0.5) is scored x this
#: (it most likely competes for the same expert span; tuned out of fold on cuad_dev: 0.8).
NEAR_DUPLICATE_FACTOR = 0.8


def _dedupe(items: list[tuple[str, int, int, float, int]], top: int, near: float = 1.0
            ) -> list[tuple[str, int, int, float, int]]:
    """Best first; a span with the same words as a better one is dropped (it could only match the same
    gold); with ``near`` < 1, one that overlaps a better one by word Jaccard >= 0.5 is scored x ``near``."""
    from signoff.evals.metrics import _words

    out: list[tuple[str, int, int, float, int]] = []
    kept: list[frozenset[str]] = []
    seen: set[frozenset[str]] = set()
    for item in sorted(items, key=lambda t: (-t[3], t[1])):
        key = frozenset(_words(item[0]))
        if not key or key in seen:
            continue
        seen.add(key)
        if near < 1.0 and any(len(key & k) >= 0.5 * len(key | k) for k in kept):
            item = (item[0], item[1], item[2], item[3] * near, item[4])
        kept.append(key)
        out.append(item)
    out.sort(key=lambda t: (-t[3], t[1]))
    return out[:top]


def _near(cat: str) -> float:
    return NEAR_DUPLICATE_FACTOR if cat == PARTY_CATEGORY or cat in DATE_CATEGORIES else 1.0


class SpanRanker:
    """Second stage over span candidates, one gradient-boosted head per category.

    Candidates: the category's best chunks plus, for Parties and the two dates, the pattern spans of
    :func:`signoff.tools.contracts.party_candidates` / ``date_candidates`` (a party name, a defined
    term, a date inside the preamble). Features: the chunk model's (out-of-fold at fit time) scores of
    the chunk holding the span, its rank, the span's kind, position, length, case, how often it recurs,
    keyword counts and the words just before and after it. A span is positive when CUAD's own test
    holds (word-level Jaccard >= 0.5 with an expert span). Platt-scaled on out-of-fold scores, a
    threshold per category maximising out-of-fold span F1; a category uses the ranker only when it beat
    the chunk candidates out of fold on cuad_dev (``use``)."""

    def __init__(self, categories: Sequence[str] = CATEGORIES, *, k_chunks: int = 30, folds: int = 3) -> None:
        self.categories = tuple(categories)
        self.k_chunks = k_chunks
        self.folds = folds
        self.heads: dict[str, Any] = {}
        self.platt: dict[str, tuple[float, float]] = {}
        self.thresholds: dict[str, float] = {}
        self.use: dict[str, bool] = {}
        self.metrics: dict[str, Any] = {}
        self.oof: dict[str, tuple[list[list[tuple[str, int, int]]], np.ndarray]] = {}
        """After ``fit``: per category, the candidates and their out-of-fold probabilities (not saved)."""

    @staticmethod
    def _head() -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.06, max_leaf_nodes=15,
                                              min_samples_leaf=15, l2_regularization=1.0, random_state=0)

    def dataset(self, contracts: Sequence[LabelledContract], docs: Sequence[_Doc], cat: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[tuple[str, int, int]]]]:
        from signoff.evals.metrics import word_jaccard

        j = self.categories.index(cat)
        xs, ys, gs, cands_all = [], [], [], []
        for n, (contract, doc) in enumerate(zip(contracts, docs, strict=True)):
            cands = _raw_candidates(doc, cat, j, self.k_chunks)
            gold = [g.replace("<omitted>", " ") for g in contract.clauses.get(cat, [])]
            y = np.asarray([any(word_jaccard(doc.text[s:e], g) >= 0.5 for g in gold) for _k, s, e in cands],
                           dtype=np.int8)
            xs.append(_span_features(doc, j, cands))
            ys.append(y)
            gs.append(np.full(len(cands), n))
            cands_all.append(cands)
        return np.vstack(xs), np.concatenate(ys), np.concatenate(gs), cands_all

    def fit(self, contracts: Sequence[LabelledContract], docs: Sequence[_Doc], *,
            base_thresholds: dict[str, float] | None = None, only: Sequence[str] | None = None,
            progress: ProgressFn | None = None) -> SpanRanker:
        """``docs``: each contract's chunks with *out-of-fold* chunk probabilities."""
        from threadpoolctl import threadpool_limits

        # one OpenMP thread: on a shared machine the boosting's thread pool oversubscribes (15x slower)
        with threadpool_limits(1):
            return self._fit(contracts, docs, base_thresholds=base_thresholds, only=only, progress=progress)

    def _fit(self, contracts: Sequence[LabelledContract], docs: Sequence[_Doc], *,
             base_thresholds: dict[str, float] | None, only: Sequence[str] | None,
             progress: ProgressFn | None) -> SpanRanker:
        from signoff.evals.metrics import span_scores

        cats = [c for c in self.categories if only is None or c in only]
        base_cands = [candidates(d.text, d.chunks, d.proba, categories=self.categories) for d in docs]
        for ci, cat in enumerate(cats):
            x, y, g, cands_all = self.dataset(contracts, docs, cat)
            if y.sum() < 5:
                continue
            fold = g % self.folds
            oof = np.zeros(len(y))
            for k in range(self.folds):
                tr, te = fold != k, fold == k
                if y[tr].max() == 0 or not te.any():
                    oof[te] = -10.0
                    continue
                oof[te] = self._head().fit(x[tr], y[tr]).decision_function(x[te])
            a, b = _platt_fit(oof, y)
            p = _sigmoid(a * oof + b)
            self.oof[cat] = (cands_all, p)
            gold = {f"{n}": [t.replace("<omitted>", " ") for t in c.clauses.get(cat, [])]
                    for n, c in enumerate(contracts)}
            preds, off = [], 0
            for n, cands in enumerate(cands_all):
                items = [(docs[n].text[s:e], s, e, float(p[off + i]), 0) for i, (_k, s, e) in enumerate(cands)]
                off += len(cands)
                preds += [(f"{n}", t, sc) for t, _s, _e, sc, _c in _dedupe(items, 20, _near(cat))]
            thr, f1 = _best_span_threshold(preds, gold)
            rk = span_scores(preds, gold, recall_levels=tuple(round(0.1 * i, 1) for i in range(11)))
            aupr = sum(rk[f"precision_at_{i * 10}_recall"] for i in range(11)) / 11
            base = _base_oof_scores(contracts, docs, base_cands, cat, (base_thresholds or {}).get(cat, 1.0))
            self.platt[cat], self.thresholds[cat] = (a, b), thr
            self.metrics[cat] = {"oof_span_f1": round(f1, 4), "oof_aupr": round(aupr, 4),
                                 "oof_p_at_80r": round(rk["precision_at_80_recall"], 4),
                                 "base_oof_span_f1": round(base[0], 4), "base_oof_aupr": round(base[1], 4),
                                 "candidates": int(len(y)), "positives": int(y.sum())}
            self.use[cat] = f1 + aupr > base[0] + base[1]
            if self.use[cat]:
                self.heads[cat] = self._head().fit(x, y)
            if progress is not None:
                progress("ranking spans", (ci + 1) / len(cats))
        return self

    def rank(self, text: str, chunks: Sequence[Chunk], proba: np.ndarray, *, top: int = 20,
             categories: Sequence[str] | None = None) -> dict[str, list[Candidate]]:
        """Per category the ranker covers, up to ``top`` calibrated candidates, best first."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self._rank(text, chunks, proba, top=top, categories=categories)

    def _rank(self, text: str, chunks: Sequence[Chunk], proba: np.ndarray, *, top: int,
              categories: Sequence[str] | None) -> dict[str, list[Candidate]]:
        out: dict[str, list[Candidate]] = {}
        if not len(chunks):
            return out
        doc = _Doc.of(text, chunks, proba)
        for cat, head in self.heads.items():
            if not self.use.get(cat) or (categories is not None and cat not in categories):
                continue
            j = self.categories.index(cat)
            cands = _raw_candidates(doc, cat, j, self.k_chunks)
            if not cands:
                out[cat] = []
                continue
            a, b = self.platt[cat]
            p = _sigmoid(a * head.decision_function(_span_features(doc, j, cands)) + b)
            items = [(text[s:e], s, e, float(p[i]), doc.chunk_of(s)) for i, (_k, s, e) in enumerate(cands)]
            out[cat] = [Candidate(cat, s, e, sc, c) for _t, s, e, sc, c in _dedupe(items, top, _near(cat))]
        return out

    def state(self) -> dict[str, Any]:
        return {"categories": self.categories, "k_chunks": self.k_chunks, "heads": self.heads, "platt": self.platt,
                "thresholds": self.thresholds, "use": self.use, "metrics": self.metrics}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SpanRanker:
        r = cls(state["categories"], k_chunks=int(state["k_chunks"]))
        r.heads, r.platt, r.thresholds = state["heads"], state["platt"], state["thresholds"]
        r.use, r.metrics = state["use"], state["metrics"]
        return r


def _best_span_threshold(preds: list[tuple[str, str, float]], gold: dict[str, list[str]]) -> tuple[float, float]:
    """The score threshold with the best CUAD span F1 over ``preds`` (at least 0.3) and that F1."""
    from signoff.evals.metrics import span_hits

    n_gold = sum(len(v) for v in gold.values())
    if not preds or not n_gold:
        return 0.99, 0.0
    by_key: dict[str, list[tuple[str, float]]] = {}
    for key, t, sc in preds:
        by_key.setdefault(key, []).append((t, sc))
    scored = []
    for key, items in by_key.items():
        scored += [(sc, h) for (_t, sc), h in zip(items, span_hits(items, gold.get(key, [])), strict=True)]
    scored.sort(key=lambda t: -t[0])
    tp = np.cumsum([h for _s, h in scored])
    f1 = 2 * tp / (np.arange(1, len(scored) + 1) + n_gold)
    i = int(np.argmax(f1))
    return max(0.3, float(round(scored[i][0], 4))), float(f1[i])


def _base_oof_scores(contracts: Sequence[LabelledContract], docs: Sequence[_Doc],
                     base_cands: Sequence[dict[str, list[Candidate]]], cat: str, threshold: float
                     ) -> tuple[float, float]:
    """(span F1 at ``threshold``, 11-point AUPR) of the chunk-model candidates, out of fold."""
    from signoff.evals.metrics import span_scores

    shown, ranked, gold = [], [], {}
    for n, (c, doc) in enumerate(zip(contracts, docs, strict=True)):
        gold[f"{n}"] = [t.replace("<omitted>", " ") for t in c.clauses.get(cat, [])]
        for cand in base_cands[n][cat]:
            item = (f"{n}", doc.text[cand.start:cand.end], cand.score)
            ranked.append(item)
            if cand.score >= threshold:
                shown.append(item)
    at = span_scores(shown, gold)
    rk = span_scores(ranked, gold, recall_levels=tuple(round(0.1 * i, 1) for i in range(11)))
    return at["span_f1"], sum(rk[f"precision_at_{i * 10}_recall"] for i in range(11)) / 11
