"""Your own data end to end (#24, "done when"): a three-class task and a regression task from the user's
files, each through run, eval, bench, export and push; a three-class head in another label order teaching a
recipe that starts compressing; and a GLUE TSV read as the user's file giving, run for run, what its GLUE
name gives. The files are built on the fly from the first rows of GLUE's STS-B and SST-2 TSVs."""

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from _fake_hub import FakeHub
from _require import require_module
from _runs import write_task_recipe
from _tiny import users_classifier
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from nlpcompress import cli
from nlpcompress.glue import get_task, load_split
from nlpcompress.models import load_compact
from nlpcompress.task import resolve_task

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_end_to_end_test_token"
RELATIONS = ("different", "related", "similar")  # sorted: the order the task takes them in
SCORED_ROWS = 16  # max_eval_samples of the end-to-end runs


def stsb_rows(glue_root: Path, split: str, count: int) -> list[tuple[str, str, float]]:
    lines = (glue_root / "stsb" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1 : count + 1]
    return [(first, second, float(score)) for first, second, score, _ in (line.split("\t") for line in lines)]


def relation(score: float) -> str:
    """An STS-B score (0-5) binned into three classes."""
    return RELATIONS[0] if score < 2 else RELATIONS[1] if score < 4 else RELATIONS[2]


def write_relations(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    """JSON Lines of sentence pairs labelled with their relation (the first row's is 'similar': the file's
    order of first appearance is not the sorted one)."""
    lines = (json.dumps({"first": a, "second": b, "relation": relation(score)}) for a, b, score in rows)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def relations(tmp_path: Path, glue_root: Path) -> dict[str, str]:
    """A three-class task's files: 160 train and 48 dev pairs of STS-B, every class in both."""
    train = write_relations(tmp_path / "relations-train.jsonl", stsb_rows(glue_root, "train", 160))
    dev = write_relations(tmp_path / "relations-dev.jsonl", stsb_rows(glue_root, "validation", 48))
    return {"train": str(train), "validation": str(dev)}


@pytest.fixture
def similarity(tmp_path: Path, glue_root: Path) -> dict[str, str]:
    """A regression task's one file, no validation file: 200 STS-B pairs and scores, columns of its own."""
    path = tmp_path / "similarity.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["left", "right", "similarity"])
        writer.writerows((a, b, f"{score:.3f}") for a, b, score in stsb_rows(glue_root, "train", 200))
    return {"train": str(path)}


@dataclass(frozen=True)
class Case:
    """A user task and what a run on it must come out as: its metric names, its config's id2label, the split
    its card names, and its validation rows (a run scores the first ``SCORED_ROWS``)."""

    block: dict
    metrics: set[str]
    id2label: dict[str, str]
    split: str
    validation_rows: int


def three_classes(files: dict[str, str]) -> Case:
    return Case(
        block={"name": "relations", "data": files, "text": ["first", "second"], "label": "relation",
               "metric": "macro_f1"},
        metrics={"macro_f1"},
        id2label=dict(zip("012", RELATIONS, strict=True)),
        split=f"validation[:{SCORED_ROWS}]",
        validation_rows=48,
    )  # fmt: skip


def regression(files: dict[str, str]) -> Case:
    return Case(
        block={"name": "similarity", "data": files, "text": ["left", "right"], "label": "similarity"},
        metrics={"pearson", "spearmanr"},
        id2label={"0": "score"},
        # the data has no validation split: 10% of 200 rows are held out of train
        split=f"the first {SCORED_ROWS} rows of 10% of train held out as validation (seed 0)",
        validation_rows=20,
    )


def cli_json(argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    """An nlpcompress command run in this process with --json: what it printed last, parsed."""
    capsys.readouterr()
    assert cli.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def hub():
    server = FakeHub(TOKEN)
    yield server
    server.close()


def push(folder: Path, repo_id: str, hub: FakeHub, home: Path) -> None:
    """``nlpcompress push`` in a fresh process, to the loopback Hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN}
    command = [str(Path(sys.executable).with_name("nlpcompress")), "push", str(folder), "--repo-id", repo_id]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env | {"HF_HUB_DISABLE_TELEMETRY": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- run, eval, bench, export, push


@pytest.mark.parametrize("make", [three_classes, regression], ids=["three-classes", "regression"])
def test_a_users_task_runs_evaluates_benches_exports_and_pushes_under_its_own_names(
    make, request, tmp_path, tiny_bert_dir, hub, capsys
):
    require_module("onnxruntime", "make setup")
    case = make(request.getfixturevalue("relations" if make is three_classes else "similarity"))
    stages = [
        {"type": "finetune"},
        {"type": "prune_heads", "target": 2, "recovery": {"distillation": {"method": "kd"}}},
    ]
    recipe = write_task_recipe(tmp_path, tiny_bert_dir, case.block, stages, max_eval_samples=SCORED_ROWS)
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == case.block["name"] and results["eval_rows"] == {"validation": SCORED_ROWS}
    assert set(results["metrics"]) == case.metrics
    assert all(set(stage["metrics"]) == case.metrics for stage in results["stages"])
    assert json.loads((out / "config.json").read_text())["id2label"] == case.id2label

    evaluated = cli_json(["eval", str(out), "--no-progress"], capsys)
    assert evaluated["task"] == case.block["name"]
    assert evaluated["metrics"] == pytest.approx(results["metrics"], abs=1e-6)

    benched = cli_json(["bench", str(out), "--baseline", str(tiny_bert_dir), "--repeats", "2"], capsys)
    assert benched["model"]["params"]["total"] < benched["baseline"]["params"]["total"]  # heads were cut out
    assert benched["speedup_bs1_seq128"] > 0 and benched["model"]["size_bytes"] > 0

    exported = cli_json(["export", str(out), "--format", "onnx", "--int8"], capsys)
    assert exported["verified_on"] == f"{case.validation_rows} {case.block['name']} validation examples"
    assert set(exported["files"]) == {"model.onnx", "model_int8.onnx"}
    assert exported["files"]["model.onnx"]["verification"]["max_abs_diff"] <= 1e-3
    through_onnx = cli_json(["eval", str(out), "--backend", "onnxruntime", "--no-progress"], capsys)
    assert through_onnx["metrics"] == pytest.approx(results["metrics"], abs=1e-3)
    timed = cli_json(["bench", str(out), "--backend", "onnxruntime-int8", "--repeats", "2"], capsys)
    assert timed["model"]["backend"] == "onnxruntime-int8" and timed["baseline"]["backend"] == "torch"

    push(out, f"me/{case.block['name']}", hub, tmp_path / "hf-home")
    [commit] = hub.commits
    assert {"model.safetensors", "onnx/model.onnx", "onnx/model_int8.onnx"} <= set(commit["files"])
    card = commit["files"]["README.md"].decode()
    [scored, *others] = ModelCard(card).data.eval_results
    assert (scored.dataset_type, scored.dataset_name, scored.dataset_split) == (
        "local",
        case.block["name"],
        case.split,
    )
    assert {r.metric_type: r.metric_value for r in [scored, *others]} == {
        name: round(value, 4) for name, value in results["metrics"].items()
    }
    assert f"{case.block['name']} (`train: {case.block['data']['train']}" in card
    assert f"scored on {results['data']['validation']})" in card


# ---------------------------------------------------------------- a head in another label order


def accuracy_of(folder: Path, files: dict[str, str], names: list[str]) -> float:
    """The classifier's accuracy on the dev file, run by transformers alone, output i read as ``names[i]``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = [json.loads(line) for line in Path(files["validation"]).read_text().splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    correct = 0
    for row in rows:
        inputs = tokenizer(row["first"], row["second"], truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            correct += names[int(model(**inputs).logits.argmax())] == row["relation"]
    return correct / len(rows)


def test_a_three_class_head_in_another_order_teaches_a_recipe_that_starts_compressing(
    relations, tmp_path, tiny_bert_dir
):
    from transformers import AutoModelForSequenceClassification

    theirs = {0: "similar", 1: "different", 2: "related"}  # a rotation: read backwards, it is another one
    mine = users_classifier(tmp_path / "mine", tiny_bert_dir, theirs, seed=5)
    block = three_classes(relations).block | {"metric": "accuracy"}
    task = resolve_task(block)
    assert task.label_names == RELATIONS
    ids = torch.tensor([[101, 1037, 2158, 2003, 2652, 1037, 8928, 1012, 102]])
    with torch.no_grad():
        ours = load_compact(str(mine), task).eval()(input_ids=ids).logits
        hf = AutoModelForSequenceClassification.from_pretrained(mine).eval()(input_ids=ids).logits
    torch.testing.assert_close(ours, hf[:, [1, 2, 0]], atol=1e-5, rtol=0)  # different, related, similar

    expected = accuracy_of(mine, relations, [theirs[i] for i in range(3)])
    assert expected != accuracy_of(mine, relations, list(RELATIONS))  # a permuted head would score otherwise
    stages = [{"type": "prune_heads", "target": 2, "recovery": {"distillation": {"method": "kd"}}}]
    assert cli.main(["run", str(write_task_recipe(tmp_path, mine, block, stages)), "--no-progress"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["input_model"]["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert results["stages"][0]["teacher"]["head"] == "trained elsewhere (labels checked)"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == dict(
        zip("012", RELATIONS, strict=True)
    )


# ---------------------------------------------------------------- GLUE by name and as the user's file


def sst2_as_users_files(glue_root: Path) -> dict:
    """A task block reading GLUE's SST-2 TSVs as the user's own files, by their own column names."""
    files = {split: str(glue_root / "sst2" / f"{split}.tsv") for split in ("train", "validation")}
    return {"name": "my-sst2", "data": files, "text": "sentence", "label": "label", "metric": "accuracy"}


def test_sst2_rows_are_the_same_by_glue_name_and_as_the_users_tsv(glue_root):
    user, glue = resolve_task(sst2_as_users_files(glue_root)), get_task("sst2")
    for split in ("train", "validation"):
        ours, theirs = load_split(user, split).to_dict(), load_split(glue, split, glue_root).to_dict()
        assert len(ours["sentence"]) == len(theirs["sentence"]) > 0, split
        assert ours["sentence"] == theirs["sentence"] and ours["label"] == theirs["label"], split


def run_both_ways(recipe: Path, overrides: list[str], glue_root: Path, tmp_path: Path) -> dict[str, Path]:
    """``recipe`` run with ``task: sst2`` from the GLUE folder, and with SST-2's TSVs as the user's files."""
    tasks = {
        "glue": ["task=sst2", f"data_dir={glue_root}"],
        "user": [f"task={json.dumps(sst2_as_users_files(glue_root))}"],
    }
    for way, task in tasks.items():
        settings = [*overrides, *task, f"output_dir={tmp_path / way}"]
        argv = ["run", str(recipe), "--no-progress", *(arg for s in settings for arg in ("--set", s))]
        assert cli.main(argv) == 0
    return {way: tmp_path / way for way in tasks}


TINY_DATA = ["max_train_samples=64", "max_eval_samples=48", "max_length=32", "training.warmup_steps=0",
             "training.per_device_train_batch_size=16"]  # fmt: skip
# full-stack.yaml's stages on a 2-layer model: its layer 1 as the student, 32 rows to score heads, rank 8
SHORT_FULL_STACK = ["training.max_steps=2", "stages.1.student.layers=[1]", "stages.2.score_samples=32",
                    "stages.3.embeddings_rank=8"]  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [("baseline.yaml", ["training.max_steps=4"]), ("full-stack.yaml", SHORT_FULL_STACK)],
    ids=["baseline", "full-stack"],
)
def test_a_recipe_on_sst2_as_the_users_tsv_gives_the_glue_runs_metrics_and_weights(
    recipe, overrides, glue_root, tmp_path, tiny_bert_dir
):
    path = REPO / "recipes" / recipe
    runs = run_both_ways(path, [f"model={tiny_bert_dir}", *TINY_DATA, *overrides], glue_root, tmp_path)
    glue, user = (json.loads((runs[way] / "results.json").read_text()) for way in ("glue", "user"))
    stages = [stage["type"] for stage in yaml.safe_load(path.read_text())["stages"]]
    assert (
        [stage["type"] for stage in user["stages"]] == [stage["type"] for stage in glue["stages"]] == stages
    )
    assert [stage["metrics"] for stage in user["stages"]] == [stage["metrics"] for stage in glue["stages"]]
    assert user["metrics"] == glue["metrics"] and user["eval_rows"] == glue["eval_rows"] == {"validation": 48}
    ours, theirs = (load_file(runs[way] / "model.safetensors") for way in ("user", "glue"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
