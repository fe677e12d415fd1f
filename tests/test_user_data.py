"""Your own data and your own model (#24): a task from CSV, TSV, JSON Lines, Parquet or a saved
``datasets`` folder; labels from the data; a user's fine-tuned classifier as teacher and baseline; the
run, eval and export on it. Data files are built on the fly from the first rows of GLUE's TSVs."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from _require import require_module
from _runs import write_task_recipe
from _tiny import users_classifier
from datasets import Dataset, DatasetDict

from nlpcompress import cli
from nlpcompress.errors import UserError
from nlpcompress.glue import compute_metrics, load_split
from nlpcompress.models import load_compact
from nlpcompress.search.objectives import objectives_from_settings
from nlpcompress.search.settings import parse_settings
from nlpcompress.task import resolve_task, task_option
from nlpcompress.task_spec import Task

SST2_NAMES = {"0": "neg", "1": "pos"}


def sst2_rows(glue_root: Path, split: str, count: int) -> list[tuple[str, str]]:
    lines = (glue_root / "sst2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1 : count + 1]
    return [(fields[0], SST2_NAMES[fields[1]]) for fields in (line.split("\t") for line in lines)]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    return path


@pytest.fixture
def reviews(tmp_path, glue_root) -> dict[str, Path]:
    """train.csv (120 rows) and dev.csv (40 rows) of SST-2 sentences with the labels as words."""
    return {
        "train": write_csv(tmp_path / "train.csv", sst2_rows(glue_root, "train", 120)),
        "validation": write_csv(tmp_path / "dev.csv", sst2_rows(glue_root, "validation", 40)),
    }


def block(data, **changes) -> dict:
    return {"name": "reviews", "data": data, "text": "review", "label": "sentiment", **changes}


# ---------------------------------------------------------------- a task from data


def test_every_file_format_and_a_saved_folder_give_the_same_rows_and_classes(reviews, tmp_path):
    from_csv = resolve_task(block({k: str(v) for k, v in reviews.items()}))
    assert from_csv.label_names == ("neg", "pos") and from_csv.metric_names == ("accuracy",)
    expected = {split: load_split(from_csv, split).to_dict() for split in ("train", "validation")}
    assert expected["train"]["review"][0].startswith("hide new secretions")
    frames = {split: Dataset.from_csv(str(path)) for split, path in reviews.items()}
    for suffix in ("jsonl", "parquet"):
        files = {}
        for split, frame in frames.items():
            files[split] = str(tmp_path / f"{split}.{suffix}")
            frame.to_json(files[split]) if suffix == "jsonl" else frame.to_parquet(files[split])
        task = resolve_task(block(files))
        assert task.label_names == from_csv.label_names
        assert {split: load_split(task, split).to_dict() for split in expected} == expected, suffix
    DatasetDict(frames).save_to_disk(str(tmp_path / "saved"))
    saved = resolve_task(block(str(tmp_path / "saved")))
    assert {split: load_split(saved, split).to_dict() for split in expected} == expected


def test_a_glue_tsv_read_as_the_users_own_file_with_integer_labels(glue_root):
    task = resolve_task(
        {"name": "my-pairs", "data": {"train": str(glue_root / "rte" / "train.tsv"),
         "validation": str(glue_root / "rte" / "validation.tsv")},
         "text": ["sentence1", "sentence2"], "label": "label"}
    )  # fmt: skip
    assert task.text_fields == ("sentence1", "sentence2") and task.label_names == ("0", "1")
    rows = load_split(task, "validation")
    assert len(rows) == 277 and set(rows["label"]) == {0, 1}  # every row read, none lost to quoting


def test_labels_follow_an_explicit_list_and_a_missing_validation_split_is_carved_from_train(reviews, caplog):
    caplog.set_level("INFO", logger="nlpcompress")
    task = resolve_task(
        block({"train": str(reviews["train"])}, labels=["pos", "neg"], validation_fraction=0.25)
    )
    assert task.label_names == ("pos", "neg")
    train, dev = load_split(task, "train"), load_split(task, "validation")
    assert (len(train), len(dev)) == (90, 30)
    assert not set(train["review"]) & set(dev["review"])
    assert "25% of train held out as validation (seed 0)" in caplog.text
    source = {text: label for text, label in csv.reader(reviews["train"].open())}
    assert all(
        task.label_names[label] == source[text]
        for text, label in zip(dev["review"], dev["label"], strict=True)
    )
    assert load_split(task, "validation")["review"] == dev["review"]  # the same carve every time


def test_float_labels_make_a_regression_scored_by_pearson_and_spearman(tmp_path, glue_root):
    lines = (glue_root / "stsb" / "train.tsv").read_text().splitlines()
    path = tmp_path / "scores.jsonl"
    path.write_text(
        "".join(
            json.dumps({"a": f[0], "b": f[1], "score": float(f[2])}) + "\n"
            for f in (x.split("\t") for x in lines[1:61])
        )
    )
    task = resolve_task(
        {"name": "similar", "data": {"train": str(path)}, "text": ["a", "b"], "label": "score"}
    )
    assert task.is_regression and task.num_labels == 1 and task.metric_names == ("pearson", "spearmanr")
    assert load_split(task, "train").features["label"].dtype == "float32"


def test_macro_f1_is_the_mean_of_the_per_class_f1():
    task = Task.of("t", ("x",), ("a", "b", "c"), ("macro_f1",))
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    # class a: p 1/2 r 1/2 f 1/2; b: p 2/3 r 1 f 0.8; c: p 1 r 1/2 f 2/3
    assert compute_metrics(task, logits, labels)["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"text": "body"}, "the train file '{train}' has no column 'body'; its columns: review, sentiment"),
        ({"metric": "f1", "labels": ["neg", "pos", "meh"]}, "metric f1 is binary; the data has 3 classes"),
        ({"labels": ["neg", "good"]}, "has sentiment 'pos', not one of labels: neg, good"),
        ({"metric": "pearson_spearman"}, "metric pearson_spearman is for float labels"),
        ({"name": "My Task"}, "task.name: must be a lower-case name"),
        ({"data": {"train": "nowhere.csv"}}, "the train file 'nowhere.csv' does not exist"),
        ({"data": {"train": "data.xlsx"}}, "task.data.files.train: must be a file ending in one of"),
        ({"data": "no-such-user/no-such-dataset"}, "cannot load 'no-such-user/no-such-dataset'"),
        (
            {"encoding": "base64"},
            "task.encoding: must be a text encoding Python knows, such as utf-8, latin-1",
        ),
        (
            {"data": "no-such-user/no-such-dataset", "encoding": "latin-1"},
            "encoding: is for CSV, TSV and JSON Lines files, not 'no-such-user/no-such-dataset'; leave it out",
        ),
        ({"bad_text": "keep"}, "task.bad_text: Input should be 'refuse' or 'drop'"),
    ],
)
def test_bad_task_blocks_are_one_line(reviews, change, message, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    files = {k: str(v) for k, v in reviews.items()}
    with pytest.raises(UserError, match=re.escape(message.format(**files))) as error:
        task = resolve_task(block(files) | change)
        load_split(task, "train")
        load_split(task, "validation")
    assert "\n" not in str(error.value)


def data_files(tmp_path: Path, reviews: dict[str, Path], files: dict) -> dict[str, str]:
    """The reviews' files, with the splits in ``files`` replaced by (name, text) written to ``tmp_path``
    (None: no such split)."""
    data = {split: str(path) for split, path in reviews.items()}
    for split, file in files.items():
        if file is None:
            del data[split]
            continue
        name, text = file
        (tmp_path / name).write_text(text, encoding="utf-8")
        data[split] = str(tmp_path / name)
    return data


CSV = "review,sentiment\n"
JSONL_PAIR = '{"review": "good", "sentiment": "pos"}\n{"review": "bad", "sentiment": "neg"}\n'


@pytest.mark.parametrize(
    ("files", "change", "message"),
    [
        # a split without rows, or one that is left without any
        ({"validation": ("dev.csv", CSV)}, {}, "the validation file '{validation}' has no rows"),
        (
            {
                "train": ("train.tsv", "review\tsentiment\n"),
                "validation": ("dev.tsv", "review\tsentiment\nok\tpos\n"),
            },
            {},
            "the train file '{train}' has no rows",
        ),
        (
            {"train": ("train.jsonl", ""), "validation": ("dev.jsonl", JSONL_PAIR)},
            {},
            "the train file '{train}' has no rows",
        ),
        (
            {"validation": ("dev.csv", CSV + ",pos\n  ,neg\n")},
            {"bad_text": "drop"},
            "the validation file '{validation}' has no row with text in every text column (review): bad_text: drop "
            "leaves it empty",
        ),
        (
            {"train": ("one.csv", CSV + "good,pos\n"), "validation": None},
            {},
            "the train file '{train}' has one row, too few to hold out validation from; give a validation file",
        ),
        # a validation class that train never has
        (
            {"validation": ("dev.csv", CSV + "fine,pos\nso-so,meh\n")},
            {},
            "row 2 of the validation file '{validation}' has sentiment 'meh', not one of the classes train has: "
            "neg, pos; to keep it, list every class in labels:",
        ),
        # text cells empty, missing or not strings; a text column of numbers
        (
            {
                "train": ("train.csv", CSV + "good,pos\n,neg\nbad,neg\n"),
                "validation": ("dev.csv", CSV + "ok,pos\n  ,neg\nfine,pos\n,neg\n"),
            },
            {},
            "rows whose text is empty, missing or not a string: 1 of the train file '{train}' in column 'review' (the "
            "first: row 2); 2 of the validation file '{validation}' in column 'review' (the first: row 2); fix them, "
            "or set bad_text: drop to leave such rows out",
        ),
        (
            {
                "train": ("train.jsonl", JSONL_PAIR + '{"review": 7, "sentiment": "neg"}\n'),
                "validation": None,
            },
            {},
            "1 of the train file '{train}' in column 'review' (the first: row 3)",
        ),
        (
            {"train": ("train.csv", "review,sentiment,stars\ngood,pos,5\nbad,neg,1\n"), "validation": None},
            {"text": "stars"},
            "text column 'stars' of the train file '{train}' is not text: every cell was read as int64 (e.g. 5); is "
            "it the right column?",
        ),
        # labels: missing, of mixed kinds, of one class only
        (
            {"validation": ("dev.csv", CSV + "fine,pos\nmeh,\n")},
            {},
            "the validation file '{validation}' has 1 row(s) without a 'sentiment' label (the first: row 2); give "
            "every row a label",
        ),
        (
            {"train": ("train.csv", CSV + "good,pos\nbad,0\nfine,1\n")},
            {},
            "the label column 'sentiment' of the train file '{train}' mixes kinds of label: 'pos' (a word), '0' (a "
            "number); make them one kind, or list the classes in labels:",
        ),
        (
            {
                "train": ("train.jsonl", JSONL_PAIR + '{"review": "fine", "sentiment": 1}\n'),
                "validation": None,
            },
            {},
            "mixes kinds of label: 'pos' (a word), 1 (a number)",
        ),
        (
            {
                "train": ("train.jsonl", '{"review": "good", "sentiment": 0.5}\n' + JSONL_PAIR),
                "validation": None,
            },
            {},
            "mixes kinds of label: 0.5 (a number), 'pos' (a word)",
        ),
        (
            {
                "train": ("train.jsonl", JSONL_PAIR + '{"review": "fine", "sentiment": ["pos"]}\n'),
                "validation": None,
            },
            {},
            "the label column 'sentiment' of the train file '{train}' holds a list (['pos']); a row's label is one "
            "class name or score",
        ),
        (
            {"train": ("train.csv", CSV + "good,pos\nfine,pos\n")},
            {},
            "the label column 'sentiment' of the train file '{train}' holds one class only, 'pos'; a task needs "
            "rows of two or more",
        ),
    ],
)
def test_bad_rows_are_one_line_naming_the_file_column_and_value(reviews, tmp_path, files, change, message):
    data = data_files(tmp_path, reviews, files)
    with pytest.raises(UserError, match=re.escape(message.format(**data))) as error:
        resolve_task(block(data) | change)
    assert "\n" not in str(error.value)


def test_mixed_labels_are_read_when_labels_lists_the_classes(reviews, tmp_path):
    data = data_files(
        tmp_path,
        reviews,
        {"train": ("train.jsonl", JSONL_PAIR + '{"review": "ok", "sentiment": 1}\n'), "validation": None},
    )
    task = resolve_task(block(data, labels=["neg", "pos", "1"], validation_fraction=0.5))
    assert task.label_names == ("neg", "pos", "1")
    rows = load_split(task, "train").to_list() + load_split(task, "validation").to_list()
    read = sorted((row["review"], task.label_names[row["label"]]) for row in rows)
    assert read == [("bad", "neg"), ("good", "pos"), ("ok", "1")]


def test_bad_text_drop_leaves_those_rows_out_and_says_how_many(reviews, tmp_path, caplog):
    caplog.set_level("INFO", logger="nlpcompress")
    rows = list(csv.reader(reviews["train"].open()))[1:]
    rows[4][0], rows[9][0] = "", "   "
    write_csv(tmp_path / "holes.csv", [tuple(row) for row in rows])
    data = block(
        {"train": str(tmp_path / "holes.csv"), "validation": str(reviews["validation"])}, bad_text="drop"
    )
    task = resolve_task(data)
    train = load_split(task, "train")
    assert len(train) == 118 and all(text.strip() for text in train["review"])
    assert train["review"][4] == rows[5][0]  # the rows after a dropped one move up; none is lost
    assert (
        f"bad_text: drop left out 2 of the 120 rows of the train file '{tmp_path / 'holes.csv'}'"
        in caplog.text
    )
    assert len(load_split(task, "validation")) == 40  # nothing to drop there


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_file_not_in_utf8_is_named_and_read_with_its_encoding(tmp_path, suffix):
    rows = [("un café très bon", "pos"), ("ça ne va pas", "neg"), ("pas mal du tout", "pos"), ("bof", "neg")]
    path = tmp_path / f"avis.{suffix}"
    if suffix == "csv":
        path.write_text(CSV + "".join(f"{text},{label}\n" for text, label in rows), encoding="latin-1")
    else:
        lines = [json.dumps({"review": t, "sentiment": s}, ensure_ascii=False) + "\n" for t, s in rows]
        path.write_text("".join(lines), encoding="latin-1")
    data = block({"train": str(path)}, validation_fraction=0.5)
    line = 2 if suffix == "csv" else 1
    with pytest.raises(UserError) as error:
        resolve_task(data)
    assert str(error.value) == (
        f"task reviews: the train file '{path}' is not utf-8 text (byte 0xe9 on line {line}); give its encoding "
        "in the task's encoding: key (e.g. encoding: latin-1, or cp1252)"
    )
    task = resolve_task(data | {"encoding": "latin-1"})
    read = [*load_split(task, "train")["review"], *load_split(task, "validation")["review"]]
    assert sorted(read) == sorted(text for text, _ in rows)


def test_an_empty_parquet_file_or_saved_split_is_named(reviews, tmp_path):
    frame = Dataset.from_csv(str(reviews["validation"]))
    frame.to_parquet(str(tmp_path / "train.parquet"))
    pq.write_table(frame.select([]).data.table, tmp_path / "dev.parquet")  # a schema, no rows
    files = {"train": str(tmp_path / "train.parquet"), "validation": str(tmp_path / "dev.parquet")}
    with pytest.raises(
        UserError, match=re.escape(f"the validation file '{files['validation']}' has no rows")
    ):
        resolve_task(block(files))
    empty = frame.filter(lambda row: row["sentiment"] == "none")
    DatasetDict({"train": empty, "validation": frame}).save_to_disk(str(tmp_path / "filtered"))
    with pytest.raises(
        UserError, match=re.escape(f"the train split of '{tmp_path / 'filtered'}' has no rows")
    ):
        resolve_task(block(str(tmp_path / "filtered")))
    DatasetDict({"train": frame, "validation": frame.select([])}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(
        UserError, match=re.escape(f"'{tmp_path / 'saved'}' holds a split saved with no rows")
    ):
        resolve_task(block(str(tmp_path / "saved")))


def test_a_file_not_in_utf8_stops_a_run_in_one_line_before_writing(reviews, tmp_path, tiny_bert_dir, capsys):
    path = tmp_path / "avis.csv"
    path.write_text(CSV + "un café très bon,pos\nbof,neg\n", encoding="cp1252")
    data = block({"train": str(path), "validation": str(reviews["validation"])})
    recipe = write_task_recipe(tmp_path, tiny_bert_dir, data, [{"type": "finetune"}])
    assert cli.main(["run", str(recipe), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"the train file '{path}' is not utf-8 text (byte 0xe9 on line 2)" in error[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avis.csv", "dev.csv", "recipe.yaml", "train.csv"]


# ---------------------------------------------------------------- your own model


def test_a_head_in_another_label_order_is_reordered_never_permuted(reviews, tmp_path, tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    mine = users_classifier(tmp_path / "mine", tiny_bert_dir, {0: "pos", 1: "neg"})
    task = resolve_task(block({k: str(v) for k, v in reviews.items()}))
    model = load_compact(str(mine), task).eval()
    assert (
        model.config.id2label == {0: "neg", 1: "pos"} and getattr(model.config, "head_source", None) is None
    )
    hf = AutoModelForSequenceClassification.from_pretrained(mine).eval()
    ids = torch.tensor([[101, 2023, 3185, 2003, 2307, 102]])
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, hf(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs[:, [1, 0]], atol=1e-5, rtol=0)  # neg first, as the task says


def test_the_users_classifier_is_teacher_and_baseline_of_a_recipe_that_starts_compressing(
    reviews, tmp_path, tiny_bert_dir, capsys
):
    mine = users_classifier(tmp_path / "mine", tiny_bert_dir, {0: "pos", 1: "neg"})
    data = block({k: str(v) for k, v in reviews.items()}, metric="macro_f1")
    stages = [{"type": "prune_heads", "target": 2, "recovery": {"distillation": {"method": "kd"}}}]
    assert cli.main(["run", str(write_task_recipe(tmp_path, mine, data, stages)), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    given = results["input_model"]
    assert given["model"] == str(mine) and set(given["metrics"]) == {"macro_f1"}
    assert given["retention"] == round(results["score"] / given["score"], 4)
    assert f"input model: macro_f1={given['metrics']['macro_f1']:.4f}" in printed
    assert results["stages"][0]["teacher"]["head"] == "trained elsewhere (labels checked)"
    assert results["data"]["validation"] == "the validation split"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "The model it was compressed from scored macro_f1 = " in card and "type: local" in card
    # eval, from anywhere, on the run's own task (its recipe.yaml names the data by absolute paths)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("nlpcompress")), "eval", str(tmp_path / "out"), "--json", "--no-progress"],
        capture_output=True, text=True, cwd="/", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["metrics"] == pytest.approx(results["metrics"], abs=1e-6)
    # export: verified on the task's own validation rows, not on random tokens
    require_module("onnxruntime", "make setup")
    record = cli_json(["export", str(tmp_path / "out"), "--format", "onnx", "--json"])
    assert "reviews validation" in record["verified_on"]


def test_a_search_space_may_name_a_task_block(reviews):
    settings = parse_settings({"objectives": ["macro_f1", "params"]}, "s.yaml")
    task = block({k: str(v) for k, v in reviews.items()}, metric="macro_f1")
    assert objectives_from_settings(settings, task, "s.yaml").names == ["macro_f1", "params"]
    with pytest.raises(UserError, match="unknown metric 'accuracy'"):
        objectives_from_settings(parse_settings({"objectives": ["accuracy"]}, "s.yaml"), task, "s.yaml")


def cli_json(argv: list[str]) -> dict:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("nlpcompress")), *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_head_for_other_labels_is_refused_naming_both_or_replaced_by_a_finetune_first(
    reviews, tmp_path, tiny_bert_dir, capsys
):
    other = users_classifier(tmp_path / "other", tiny_bert_dir, {0: "spam", 1: "ham"})
    data = block({k: str(v) for k, v in reviews.items()})
    folder = tmp_path / "refused"
    folder.mkdir()
    stages = [{"type": "prune_heads", "target": 2}]
    assert cli.main(["run", str(write_task_recipe(folder, other, data, stages))]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "predicts spam, ham; task 'reviews' has labels neg, pos" in error[0]
    assert not (folder / "out").exists()
    replaced = tmp_path / "replaced"
    replaced.mkdir()
    stages = [{"type": "finetune"}, {"type": "prune_heads", "target": 2}]
    assert cli.main(["run", str(write_task_recipe(replaced, other, data, stages)), "--no-progress"]) == 0
    results = json.loads((replaced / "out" / "results.json").read_text())
    assert "input_model" not in results  # fine-tuned first: there is no baseline of the user's
    assert json.loads((replaced / "out" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}


def test_task_option_reads_a_glue_name_a_task_yaml_or_the_runs_own(reviews, tmp_path):
    data = block({k: str(v) for k, v in reviews.items()})
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(data))
    assert task_option(str(tmp_path / "task.yaml"), tmp_path).name == "reviews"
    assert task_option("sst2", tmp_path).name == "sst2"
    with pytest.raises(UserError, match="does not say which task it was trained on"):
        task_option(None, tmp_path)


def docs_block(heading: str) -> str:
    """The first ```python block after ``heading`` in docs/own-data.md."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "own-data.md").read_text()
    after = text[text.index(heading) :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


def test_the_documented_script_compresses_a_users_model_on_a_users_dataset(
    tmp_path, tiny_bert_dir, glue_root, monkeypatch
):
    from transformers import AutoModelForSequenceClassification

    import nlpcompress  # noqa: F401  (registers the compact model with the Auto classes)

    mine = users_classifier(tmp_path / "mine", tiny_bert_dir, {0: "neg", 1: "pos"})
    rows = sst2_rows(glue_root, "train", 64)
    dataset = Dataset.from_dict(
        {"text": [t for t, _ in rows], "label": [int(lab == "pos") for _, lab in rows]}
    )
    monkeypatch.chdir(tmp_path)
    exec(docs_block("## In your own script"), {"model_dir": str(mine), "dataset": dataset, "steps": 8})
    small = AutoModelForSequenceClassification.from_pretrained(tmp_path / "my-small-model")
    assert sum(small.config.heads_per_layer) == 4  # half of 2 × 4 heads, cut out
    assert sum(small.config.intermediate_sizes) <= 37  # half of 2 × 37 neurons (or fewer: a whole head's)
    with torch.no_grad():
        logits = small(input_ids=torch.tensor([[101, 2307, 102]])).logits
    assert logits.shape == (1, 2)


def test_every_kind_of_stage_runs_on_a_task_from_data(reviews, tmp_path, tiny_bert_dir):
    data = block({"train": str(reviews["train"])}, metric="matthews")  # validation carved from train
    stages = [
        {"type": "finetune"},
        {"type": "prune_vocab"},
        {"type": "distill", "student": {"layers": [0]}, "method": "kd"},
        {"type": "movement", "method": "movement", "sparsity": 0.5, "attention": "head", "ffn": "neuron"},
        {"type": "factorize", "embeddings_rank": 8},
        {
            "type": "quantize",
            "method": "qbert",
            "avg_bits": 6,
            "candidate_bits": [4, 8],
            "hessian_samples": 16,
        },
    ]
    assert (
        cli.main(["run", str(write_task_recipe(tmp_path, tiny_bert_dir, data, stages)), "--no-progress"]) == 0
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [s["type"] for s in results["stages"]] == [s["type"] for s in stages]
    assert all(set(s["metrics"]) == {"matthews_correlation"} for s in results["stages"])
    assert results["data"]["validation"] == "10% of train held out as validation (seed 0)"
    assert results["eval_rows"] == {"validation": 12}
    assert "input_model" not in results  # a pretrained encoder: its head is new, the recipe fine-tunes it
