"""A teacher whose head knows nothing is refused before anything trains; the override is recorded; a teacher no
better than the trivial predictor is named in a warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import tiny_model
from transformers import AutoTokenizer, BertConfig, BertModel

from nlpcompress import cli
from nlpcompress.context import RunData, stage_context
from nlpcompress.errors import UserError
from nlpcompress.glue import get_task, load_task_data
from nlpcompress.models import load_compact, load_tokenizer
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import run_recipe
from nlpcompress.stages.teachers import head_problem, sample_score

REFUSED = "its classification head was initialised when it was loaded and never trained"


@pytest.fixture(scope="module")
def headless_bert(tmp_path_factory, minilm_path) -> Path:
    """A tiny BERT encoder saved without a classifier, as a pretrained checkpoint is: its head is new at load."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("headless")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


def recipe_data(tmp_path: Path, model: Path, glue_root: Path, stages: list, **extra: Any) -> dict[str, Any]:
    return {
        "model": str(model), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 32,
        "max_eval_samples": 32, "max_length": 32, "output_dir": str(tmp_path / "out"),
        "training": {"max_steps": 1, "per_device_train_batch_size": 16}, "stages": stages, **extra,
    }  # fmt: skip


STUDENT = {"type": "distill", "method": "kd", "student": {"layers": [0]}}


def test_distilling_from_a_pretrained_encoders_new_head_is_one_line_and_writes_nothing(
    tmp_path, headless_bert, glue_root, capsys
):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe_data(tmp_path, headless_bert, glue_root, [STUDENT])))
    assert cli.main(["run", str(path), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"nlpcompress: error: stage 'distill' distils from the incoming model, but {REFUSED}: fine-tune it on "
        "sst2 first (a finetune stage before this one, or a teacher that is fine-tuned), or set "
        "allow_untrained_teacher: true in the recipe to distil from it anyway"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.json"]


def test_the_recipes_teacher_is_checked_before_anything_trains(tmp_path, headless_bert, glue_root):
    stages = [
        {
            "type": "prune_heads",
            "target": 1,
            "score_samples": 16,
            "recovery": {"distillation": {"method": "kd"}},
        }
    ]
    recipe = recipe_from_dict(recipe_data(tmp_path, headless_bert, glue_root, stages, teacher="input"))
    with pytest.raises(
        UserError, match=rf"teacher 'input' \({headless_bert}\): {REFUSED}; fine-tune it on sst2"
    ):
        run_recipe(recipe, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_finetuned_head_teaches_and_the_stage_records_how_good_it_is(tmp_path, headless_bert, glue_root):
    stages = [{"type": "finetune"}, STUDENT]
    results = run_recipe(
        recipe_from_dict(recipe_data(tmp_path, headless_bert, glue_root, stages)), progress=False
    )
    teacher = results.results["stages"][1]["teacher"]
    assert teacher["head"] == "task:sst2" and teacher["sample_rows"] == 32
    assert 0 <= teacher["accuracy"] <= 1 and 0.5 <= teacher["majority_class"] <= 1
    assert ("warning" in teacher) == (teacher["accuracy"] <= teacher["majority_class"])
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["head_source"] == "task:sst2" and "overrides" not in results.results


def test_the_override_distils_anyway_and_says_so_in_results_and_card(tmp_path, headless_bert, glue_root):
    data = recipe_data(tmp_path, headless_bert, glue_root, [STUDENT], allow_untrained_teacher=True)
    results = run_recipe(recipe_from_dict(data), progress=False).results
    assert results["overrides"] == {"allow_untrained_teacher": True}
    assert results["stages"][0]["teacher"]["head"] == "new"
    assert results["stages"][0]["teacher"]["allowed_by"] == "allow_untrained_teacher"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "**Research setting:** `allow_untrained_teacher: true`" in card
    assert "allow_untrained_teacher: true" in (tmp_path / "out" / "recipe.yaml").read_text()


def test_a_head_trained_for_another_task_cannot_teach():
    model = tiny_model()
    assert head_problem(model, get_task("rte")) is None  # a checkpoint trained elsewhere: labels were checked
    model.config.head_source = "task:qnli"
    assert head_problem(model, get_task("rte")) == "its classification head was trained for 'qnli', not 'rte'"
    assert head_problem(model, get_task("qnli")) is None


def test_a_teacher_that_always_says_the_majority_class_is_named(tmp_path, tiny_bert_dir, glue_root):
    task = get_task("sst2")
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    train, evals = load_task_data(task, tokenizer, glue_root, 32, max_train_samples=16, max_eval_samples=100)
    labels = evals["validation"]["labels"]
    majority = max(set(labels), key=labels.count)
    teacher = load_compact(str(tiny_bert_dir), task)
    with torch.no_grad():
        teacher.classifier.out_proj.weight.zero_()
        teacher.classifier.out_proj.bias.copy_(torch.tensor([1.0, 0.0] if majority == 0 else [0.0, 1.0]))
    recipe = recipe_from_dict(recipe_data(tmp_path, tiny_bert_dir, glue_root, [{"type": "finetune"}]))
    ctx = stage_context(recipe, recipe.stages[0], RunData(task, tokenizer, train, evals), tmp_path)
    facts = sample_score(teacher, ctx)
    share = round(labels.count(majority) / len(labels), 4)
    assert facts == {
        "sample_rows": 100,
        "accuracy": share,
        "majority_class": share,
        "warning": "scores no better than the majority class on 100 dev rows: is it fine-tuned?",
    }
