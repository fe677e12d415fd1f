"""``nlpcompress.load`` and ``nlpcompress predict`` (#23 item 6): labels and scores as the model computes
them, for single texts, pairs and batches, on the backend the folder holds; bad input in one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _require import require_module
from _runs import fresh_cli

import nlpcompress
from nlpcompress.errors import UserError
from nlpcompress.models import load_model_dir, load_tokenizer
from nlpcompress.predict import TextClassifier, pick_backend

TEXTS = [
    "a gorgeous , witty , seductive movie .",
    "dull",
    "the acting is fine but the plot goes nowhere at all",
]


def reference(folder: Path, texts, pairs=None) -> torch.Tensor:
    """The PyTorch model's softmax over the texts, one at a time (no padding)."""
    model, tokenizer = load_model_dir(str(folder)).eval(), load_tokenizer(str(folder))
    rows = []
    with torch.no_grad():
        for index, text in enumerate(texts):
            encoded = tokenizer(
                text, pairs[index] if pairs else None, truncation=True, max_length=32, return_tensors="pt"
            )
            rows.append(torch.softmax(model(**encoded).logits, dim=-1)[0])
    return torch.stack(rows)


def test_single_texts_and_batches_give_the_models_own_labels_and_probabilities(finished_run):
    classifier = nlpcompress.load(finished_run, backend="torch", batch_size=2)
    assert isinstance(classifier, TextClassifier) and classifier.max_length == 32  # the run's own
    expected = reference(finished_run, TEXTS)
    names = ["negative", "positive"]
    batch = classifier(TEXTS)  # batches of 2, padded: the same as one text at a time
    assert [row["label"] for row in batch] == [names[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose([row["score"] for row in batch], expected.max(-1).values, atol=1e-5)
    assert classifier(TEXTS[1]) == pytest.approx(batch[1])
    assert isinstance(classifier(TEXTS[1]), dict) and isinstance(classifier(TEXTS[:1]), list)


def test_pairs_are_encoded_as_pairs(finished_run):
    classifier = nlpcompress.load(finished_run, backend="torch")
    firsts, seconds = TEXTS[:2], TEXTS[1:]
    expected = reference(finished_run, firsts, seconds)
    got = classifier(list(zip(firsts, seconds, strict=True)))
    np.testing.assert_allclose([row["score"] for row in got], expected.max(-1).values, atol=1e-5)
    with pytest.raises(UserError, match="input 1: give a text or a pair of texts"):
        classifier(["fine", ("a", "b", "c")])


def test_auto_takes_the_exported_runtime(finished_run, tmp_path):
    require_module("onnxruntime", "make setup")
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    assert pick_backend(folder) == "torch"  # nothing exported yet
    done = fresh_cli("export", str(folder), "--format", "onnx", "--int8")
    assert done.returncode == 0, done.stderr[-2000:]
    classifier = nlpcompress.load(folder)
    assert classifier.backend == "onnxruntime-int8"
    assert len(classifier(TEXTS)) == len(TEXTS)
    results = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**results, "runtime": {"backend": "onnxruntime"}}))
    assert nlpcompress.load(folder).backend == "onnxruntime"  # what the recipe's export verified


def test_the_predict_command_reads_the_runs_own_columns_and_writes_all_or_nothing(finished_run, tmp_path):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"sentence": TEXTS[0]}) + "\n\n" + json.dumps({"text": TEXTS[1]}) + "\n")
    output = tmp_path / "out.jsonl"
    done = fresh_cli(
        "predict", str(finished_run), "--input", str(inputs), "--output", str(output), "--backend", "torch"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 inputs labelled on torch" in done.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    expected = nlpcompress.load(finished_run, backend="torch")(TEXTS[:2])
    assert [row["label"] for row in rows] == [row["label"] for row in expected]
    np.testing.assert_allclose([row["score"] for row in rows], [row["score"] for row in expected], atol=1e-6)

    inputs.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"review": "bad key"}) + "\n")
    output.unlink()
    done = fresh_cli("predict", str(finished_run), "--input", str(inputs), "--output", str(output))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert (
        len(lines) == 1
        and "in.jsonl:2: expected an object with the keys {text, text_pair} or {text} or {sentence}"
        in lines[0]
    )
    assert not output.exists()


def test_eval_of_a_run_folder_reproduces_its_results(finished_run):
    done = fresh_cli("eval", str(finished_run), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((finished_run / "results.json").read_text())
    assert json.loads(done.stdout.splitlines()[-1])["metrics"] == results["metrics"]  # same rows, same length
