"""One recovery (the `recovery:` key of every stage that trains after changing the model), the runner's one
error line for a stage's refusal, and the exporters' registry."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import pytest

import nlpcompress.stages.builtin  # noqa: F401  (registers the stages)
from nlpcompress.errors import UserError
from nlpcompress.exporters import EXPORTERS, ExportContext, Exporter, register_exporter
from nlpcompress.recipe import Recipe, recipe_from_dict
from nlpcompress.runner import run_recipe
from nlpcompress.schema import describe_errors
from nlpcompress.stages import STAGES, parse_stage
from nlpcompress.stages.recovery import RecoveringStage
from nlpcompress.stages.training import training_arguments

RECOVERING = sorted(name for name, cls in STAGES.items() if issubclass(cls, RecoveringStage))
MINIMAL = {
    "prune_heads": {"target": 2},
    "factorize": {"embeddings_rank": 8},
    "share_layers": {"num_groups": 1},
    "quantize": {"method": "uniform", "avg_bits": 4},
    "movement": {"method": "magnitude", "sparsity": 0.5},
    "nm_sparsity": {},
}
KD = {"method": "kd", "alpha_ce": 0.9, "alpha_task": 0.1, "temperature": 2.0}


def refusal(stage: dict[str, Any]) -> str:
    with pytest.raises(Exception) as info:
        parse_stage(stage)
    return describe_errors(info.value)


def test_every_stage_that_recovers_has_the_one_recovery_key():
    assert sorted(MINIMAL) == RECOVERING
    for name in RECOVERING:
        stage = parse_stage({"type": name, **MINIMAL[name], "recovery": {"distillation": KD}})
        config = stage.recovery_config()
        assert config.train is True and config.distillation.alpha_ce == 0.9 and stage.needs_teacher()
        assert not parse_stage({"type": name, **MINIMAL[name]}).needs_teacher()


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_recovery_settings_are_checked_in_one_place_with_the_same_words(name: str):
    base = {"type": name, **MINIMAL[name]}
    if name != "movement":
        assert refusal(base | {"recovery": {"train": False, "distillation": KD}}).startswith(
            "recovery.distillation: applies when train is true"
        )
    assert refusal(
        base | {"recovery": {"distillation": {"method": "tinybert", "phase": "prediction"}}}
    ).startswith("recovery.distillation.method: recovery distils the logits: use kd or distilbert")
    assert "did you mean: learning_rate?" in refusal(
        base | {"recovery": {"training": {"learning_rat": 1e-4}}}
    )
    assert refusal(base | {"recovery": {"epochs": 1}}).startswith("recovery.epochs: unknown key")


def test_stage_specific_rules_name_the_recovery_key():
    assert refusal({"type": "movement", **MINIMAL["movement"], "recovery": {"train": False}}) == (
        "recovery.train: movement works while it trains: needs true (got False)"
    )
    assert refusal(
        {"type": "quantize", "method": "ptq", "avg_bits": 4, "recovery": {"train": True}}
    ).startswith("recovery.train: method ptq does not train")
    assert parse_stage({"type": "quantize", "method": "ptq", "avg_bits": 4}).recovery_config().train is False
    assert parse_stage({"type": "quantize", "method": "qbert"}).recovery_config().train is True


def test_old_keys_are_read_into_recovery_with_one_deprecation_line(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        old = parse_stage({"type": "prune_heads", "target": 2, "recover": True, "distillation": KD})
        quantize = parse_stage({"type": "quantize", "method": "uniform", "avg_bits": 4, "qat": False})
    new = parse_stage({"type": "prune_heads", "target": 2, "recovery": {"train": True, "distillation": KD}})
    assert old.recovery_config() == new.recovery_config() and quantize.recovery_config().train is False
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == (
        'stage prune_heads: recover and distillation are deprecated; write recovery: {"train": true, '
        '"distillation": {"method": "kd", "alpha_ce": 0.9, "alpha_task": 0.1, "temperature": 2.0}}'
    )
    assert (
        lines[1] == 'stage quantize: qat is deprecated; write recovery: {"train": false}' and len(lines) == 2
    )
    assert refusal({"type": "factorize", "embeddings_rank": 8, "recover": False, "recovery": {}}) == (
        "recover: give it inside recovery:, not beside it (got False)"
    )


def test_recovery_training_overrides_the_stages_training_key_by_key(tmp_path):
    from nlpcompress.context import RunData, stage_context
    from nlpcompress.glue import get_task

    recipe = recipe_from_dict(
        {"model": "m", "task": "sst2", "output_dir": str(tmp_path), "training": {"learning_rate": 1e-4, "max_steps": 5},
         "stages": [{"type": "factorize", "embeddings_rank": 8, "training": {"max_steps": 7},
                     "recovery": {"training": {"learning_rate": 3e-5}}}]}
    )  # fmt: skip
    stage = recipe.stages[0]
    ctx = stage_context(recipe, stage, RunData(get_task("sst2"), None, None, {}), tmp_path)
    arguments = training_arguments(stage.recovery_context(ctx), stage)
    assert (arguments.learning_rate, arguments.max_steps) == (3e-5, 7)


def tiny_recipe(tmp_path, tiny_bert_dir, glue_root, stages: list[dict[str, Any]], **extra: Any) -> Recipe:
    return recipe_from_dict(
        {"model": str(tiny_bert_dir), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 32,
         "max_eval_samples": 16, "max_length": 32, "output_dir": str(tmp_path / "out"),
         "training": {"max_steps": 1, "per_device_train_batch_size": 16}, "stages": stages, **extra}
    )  # fmt: skip


def test_a_techniques_refusal_is_one_line_naming_the_stage_and_nothing_is_written(
    tmp_path, tiny_bert_dir, glue_root
):
    # the tiny model has 2 layers: num_groups 3 is known to be impossible only once the model is loaded
    recipe = tiny_recipe(
        tmp_path, tiny_bert_dir, glue_root, [{"type": "share_layers", "name": "tie", "num_groups": 3}]
    )
    with pytest.raises(UserError) as info:
        run_recipe(recipe, progress=False)
    assert str(info.value) == "stage 'tie': num_groups 3: give 1 to 2 (the model has 2 layers)"
    assert isinstance(info.value.__cause__, ValueError)  # the technique raised its own type
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.fixture
def recording_exporter():
    """An exporter registered for one test: it applies to every model with 2 layers and writes a file."""

    class Recording(Exporter):
        key = "recording"
        checked: ClassVar[list[str]] = []

        def applies(self, recipe: Recipe, structure: dict[str, Any]) -> bool:
            return structure["depth"] == 2

        def check(self, recipe: Recipe) -> None:
            if recipe.seed == 13:
                raise UserError("seed 13 cannot be exported")
            self.checked.append(recipe.output_dir)

        def export(self, ctx: ExportContext) -> dict[str, Any]:
            (ctx.folder / "recording.txt").write_text(str(ctx.metrics))
            return {"params": ctx.structure["params"], "score": ctx.task.main_metric}

    register_exporter(Recording)
    yield Recording
    EXPORTERS[:] = [exporter for exporter in EXPORTERS if exporter.key != "recording"]


def test_a_registered_exporter_runs_after_the_save_and_its_entry_lands_in_results(
    tmp_path, tiny_bert_dir, glue_root, recording_exporter
):
    recipe = tiny_recipe(tmp_path, tiny_bert_dir, glue_root, [{"type": "finetune"}])
    result = run_recipe(recipe, progress=False)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["recording"] == {"params": saved["structure"]["params"], "score": "accuracy"}
    assert (tmp_path / "out" / "recording.txt").read_text() == str(saved["metrics"])
    assert "recording" in result.results and "albert_export" not in saved
    assert recording_exporter.checked == [recipe.output_dir]


def test_an_exporters_check_refuses_before_anything_trains(
    tmp_path, tiny_bert_dir, glue_root, recording_exporter
):
    recipe = tiny_recipe(tmp_path, tiny_bert_dir, glue_root, [{"type": "finetune"}], seed=13)
    with pytest.raises(UserError, match="seed 13 cannot be exported"):
        run_recipe(recipe, progress=False)
    assert not list(tmp_path.iterdir())


def test_exporter_keys_are_unique():
    assert [exporter.key for exporter in EXPORTERS] == ["albert_export", "runtime", "hub"]

    class Twin(Exporter):
        key = "runtime"

    with pytest.raises(ValueError, match="already registered"):
        register_exporter(Twin)
