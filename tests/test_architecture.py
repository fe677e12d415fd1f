"""The seams: every module imports on its own, every stage type runs through `run_recipe` and is documented,
and the documented example stage and storage kind work as written (docs/architecture.md)."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import run_recipe
from nlpcompress.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
RECIPES_DOC = (REPO / "docs" / "recipes.md").read_text()
ARCHITECTURE_DOC = (REPO / "docs" / "architecture.md").read_text()

# One minimal recipe per stage type: a stage registered without an entry here fails the test below.
STAGE_EXAMPLES = {
    "finetune": [{"type": "finetune"}],
    "prune_heads": [
        {"type": "finetune"},
        {
            "type": "prune_heads",
            "target": 2,
            "neurons": 0.25,
            "score_samples": 16,
            "distillation": {"method": "kd"},
        },
    ],
    "distill": [{"type": "finetune"}, {"type": "distill", "student": {"layers": [1]}}],
    "movement": [
        {"type": "finetune"},
        {
            "type": "movement",
            "method": "movement",
            "sparsity": 0.5,
            "attention": "head",
            "distillation": {"method": "kd"},
        },
    ],
    "share_layers": [
        {"type": "finetune"},
        {"type": "share_layers", "num_groups": 1, "share": "attention", "distillation": {"method": "kd"}},
    ],
    "prune_vocab": [{"type": "finetune"}, {"type": "prune_vocab"}],
    "nm_sparsity": [
        {"type": "finetune"},
        {"type": "nm_sparsity", "score": "movement", "distillation": {"method": "kd"}},
    ],
    # scores the untouched model, then hands it on as the teacher of a distilling stage
    "evaluate": [{"type": "evaluate"}, {"type": "distill", "method": "kd", "student": {"layers": [0]}}],
    "quantize": [
        {"type": "finetune"},
        {"type": "quantize", "avg_bits": 3, "candidate_bits": [2, 4], "hessian_samples": 16},
    ],
    "factorize": [
        {"type": "finetune"},
        {"type": "factorize", "embeddings_rank": 8, "linears_rank": 4, "distillation": {"method": "kd"}},
    ],
}


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """Import order must not matter: each module first, with no other nlpcompress module loaded before it."""
    script = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys, traceback
        import torch, transformers, datasets  # third-party modules stay loaded: only ours are made fresh
        import nlpcompress
        names = [m.name for m in pkgutil.walk_packages(nlpcompress.__path__, "nlpcompress.")]
        failures = {}
        for name in names:
            for loaded in [m for m in sys.modules if m == "nlpcompress" or m.startswith("nlpcompress.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except Exception:
                failures[name] = traceback.format_exc(limit=-3)
        print(json.dumps({"modules": names, "failures": failures}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 30 and "nlpcompress.stages.registry" in report["modules"]
    assert report["failures"] == {}


def test_every_stage_type_has_an_example_and_a_row_in_the_recipes_page():
    assert set(STAGE_EXAMPLES) == set(STAGES)
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", RECIPES_DOC, flags=re.MULTILINE))
    assert set(STAGES) <= documented


def _recipe(tmp_path: Path, model: Path, glue_root: Path, stages: list[dict]):
    return recipe_from_dict(
        {
            "model": str(model), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 48,
            "max_eval_samples": 32, "max_length": 32, "seed": 3, "output_dir": str(tmp_path / "out"),
            "training": {"max_steps": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3},
            "stages": stages,
        }
    )  # fmt: skip


@pytest.mark.parametrize("stage_type", sorted(STAGE_EXAMPLES))
def test_every_stage_type_runs_end_to_end(
    stage_type: str, tmp_path: Path, tiny_bert_dir: Path, glue_root: Path
):
    result = run_recipe(
        _recipe(tmp_path, tiny_bert_dir, glue_root, STAGE_EXAMPLES[stage_type]), progress=False
    )
    results = json.loads((result.output_dir / "results.json").read_text())
    assert stage_type in [stage["type"] for stage in results["stages"]]
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0 and results["structure"]["params"]["total"] > 0
    if stage_type == "share_layers":
        assert results["structure"]["params"]["total"] < results["stages"][-1]["params_before"]["total"]
    if stage_type == "factorize":
        factorized = results["stages"][-1]
        assert factorized["embeddings"]["rank"] == 8 and factorized["linears"]
        assert factorized["params_after"]["total"] < factorized["params_before"]["total"]
        assert results["structure"]["params"]["total"] == factorized["params_after"]["total"]
    if (
        stage_type == "nm_sparsity"
    ):  # the FFN output's 37 inputs do not split into groups of 4: it stays dense
        saved = json.loads((result.output_dir / "config.json").read_text())["stored_linears"]
        assert len(saved) == 10 and {entry["kind"] for entry in saved.values()} == {"n_m"}
    if stage_type == "prune_heads":
        assert (
            sum(results["structure"]["heads_per_depth"]) == 6
            and results["stages"][-1]["pruned_neurons"] == 18
        )


def test_evaluate_saves_the_model_it_was_given(tmp_path: Path, tiny_bert_dir: Path, glue_root: Path):
    from nlpcompress.glue import get_task
    from nlpcompress.models import load_compact

    result = run_recipe(_recipe(tmp_path, tiny_bert_dir, glue_root, [{"type": "evaluate"}]), progress=False)
    given = load_compact(str(tiny_bert_dir), get_task("sst2")).state_dict()
    saved = load_compact(str(result.output_dir), get_task("sst2")).state_dict()
    assert saved.keys() == given.keys() and all(torch.equal(saved[k], given[k]) for k in given)
    results = json.loads((result.output_dir / "results.json").read_text())
    assert results["metrics"] == results["stages"][0]["metrics"] and set(results["metrics"]) == {"accuracy"}


def test_the_documented_example_stage_runs(tmp_path: Path, tiny_bert_dir: Path, glue_root: Path):
    code = ARCHITECTURE_DOC.split("### Writing a stage", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    saved = dict(STAGES)
    try:
        exec(compile(code, "docs/architecture.md", "exec"), {"__name__": "documented_example"})
        stages = [{"type": "scale_logits", "factor": 0.25}]
        result = run_recipe(_recipe(tmp_path, tiny_bert_dir, glue_root, stages), progress=False)
    finally:
        STAGES.clear()
        STAGES.update(saved)
    assert result.results["stages"][0]["factor"] == 0.25


def test_the_documented_example_storage_kind_is_chosen_by_finalize_and_reloads(tmp_path: Path):
    from _tiny import tiny_model
    from transformers import AutoModelForSequenceClassification

    from nlpcompress.compact.storage import STORAGE_KINDS
    from nlpcompress.finalize import finalize
    from nlpcompress.measure import count_parameters

    code = (
        ARCHITECTURE_DOC.split("### Writing a storage kind", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    )
    saved = dict(STORAGE_KINDS)
    try:
        exec(compile(code, "docs/architecture.md", "exec"), {"__name__": "documented_storage_example"})
        model = tiny_model()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if ".encoder." in name and name.endswith("weight") and parameter.dim() == 2:
                    parameter.copy_(parameter.half().float())  # float16 holds them exactly
        inputs = {"input_ids": torch.tensor([[3, 7, 11, 2]])}
        expected = model(**inputs).logits.detach()
        params = count_parameters(model)
        finalize(model)
        assert {entry["kind"] for entry in model.config.stored_linears.values()} == {"half"}
        assert len(model.config.stored_linears) == 12 and count_parameters(model) == params
        model.save_pretrained(tmp_path)
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
        assert torch.equal(reloaded(**inputs).logits, expected)
    finally:
        STORAGE_KINDS.clear()
        STORAGE_KINDS.update(saved)


def test_a_recipe_level_teacher_serves_distilling_stages(
    tmp_path: Path, tiny_bert_dir: Path, glue_root: Path
):
    from nlpcompress.errors import UserError

    stages = [{"type": "movement", "method": "magnitude", "sparsity": 0.5, "distillation": {"method": "kd"}}]
    with pytest.raises(UserError, match="no earlier stage provides one"):
        run_recipe(_recipe(tmp_path / "none", tiny_bert_dir, glue_root, stages), progress=False)
    recipe = _recipe(tmp_path / "input", tiny_bert_dir, glue_root, stages)
    recipe = recipe.model_copy(
        update={"teacher": "input", "training": {**recipe.training, "logging_steps": 1}}
    )
    result = run_recipe(recipe, progress=False)
    assert result.results["stages"][0]["last_loss_terms"]["loss_ce"] >= 0
    assert result.results["structure"]["encoder_sparsity"] == pytest.approx(0.5, abs=0.02)
