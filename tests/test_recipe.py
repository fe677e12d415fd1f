"""Recipe schema, loader, overrides and error messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from nlpcompress.errors import UserError
from nlpcompress.recipe import Recipe, load_recipe, recipe_from_dict
from nlpcompress.stages import STAGES, Stage, StageOutput, register_stage
from nlpcompress.stages.finetune import FinetuneStage

BASELINE = """\
model: minilm-l6
task: sst2
data_dir: null
max_train_samples: 8000
max_eval_samples: null
max_length: 64
seed: 42
output_dir: out/sst2-baseline
training:
  learning_rate: 1.0e-4
  per_device_train_batch_size: 32
  per_device_eval_batch_size: 64
  num_train_epochs: 1
stages:
  - type: finetune
    training: {}
"""

MINIMAL = {"model": "m", "task": "sst2", "output_dir": "out", "stages": [{"type": "finetune"}]}


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(data: dict) -> str:
    with pytest.raises(UserError) as info:
        recipe_from_dict(data, "r.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def override_error(tmp_path: Path, *overrides: str) -> str:
    with pytest.raises(UserError) as info:
        load_recipe(write(tmp_path, BASELINE), overrides)
    return str(info.value)


@pytest.fixture
def restore_registry() -> Iterator[None]:
    saved = dict(STAGES)
    yield
    STAGES.clear()
    STAGES.update(saved)


# ---------------------------------------------------------------- valid recipes


def test_baseline_loads(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, BASELINE))
    assert recipe.model == "minilm-l6"
    assert recipe.max_train_samples == 8000
    assert recipe.max_length == 64
    assert recipe.training["learning_rate"] == pytest.approx(1e-4)
    assert recipe.stages == [FinetuneStage(type="finetune", name="finetune", training={})]


def test_defaults_filled_in() -> None:
    recipe = recipe_from_dict(MINIMAL)
    assert (recipe.data_dir, recipe.max_train_samples, recipe.max_eval_samples) == (None, None, None)
    assert (recipe.max_length, recipe.seed, recipe.training) == (128, 42, {})
    assert recipe.stages[0].name == "finetune"


def test_scientific_notation_in_file_is_a_float(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, BASELINE.replace("1.0e-4", "5e-5")))
    assert recipe.training["learning_rate"] == 5e-5


def test_null_training_means_empty(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, BASELINE.replace("training: {}", "training:")))
    assert recipe.stages[0].training == {}


def test_stage_names_default_and_stay_unique() -> None:
    stages = [{"type": "finetune"}, {"type": "finetune"}, {"type": "finetune", "name": "finetune-2"}]
    recipe = recipe_from_dict({**MINIMAL, "stages": stages})
    assert [s.name for s in recipe.stages] == ["finetune", "finetune-3", "finetune-2"]


def test_duplicate_stage_names_rejected() -> None:
    stages = [{"type": "finetune", "name": "a"}, {"type": "finetune", "name": "a"}]
    assert error_of({**MINIMAL, "stages": stages}) == "r.yaml: stages.1.name: duplicate stage name (got 'a')"


def test_stage_training_merges_stage_over_top_level() -> None:
    stages = [{"type": "finetune", "training": {"learning_rate": 3e-5, "warmup_steps": 10}}]
    recipe = recipe_from_dict(
        {**MINIMAL, "training": {"learning_rate": 1e-4, "num_train_epochs": 2}, "stages": stages}
    )
    merged = recipe.stage_training(recipe.stages[0])
    assert merged == {"learning_rate": 3e-5, "num_train_epochs": 2, "warmup_steps": 10}
    assert recipe.training == {"learning_rate": 1e-4, "num_train_epochs": 2}


def test_to_yaml_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, BASELINE), ["stages.0.training.learning_rate=5e-5"])
    text = recipe.to_yaml()
    assert text.splitlines()[:3] == ["model: minilm-l6", "task: sst2", "data_dir: null"]
    assert "name: finetune" in text
    assert load_recipe(write(tmp_path, text, "resolved.yaml")) == recipe


# ---------------------------------------------------------------- stage registry


def test_unknown_stage_type_lists_allowed() -> None:
    stages = [{"type": "finetune"}, {"type": "prune"}]
    message = error_of({**MINIMAL, "stages": stages})
    allowed = ", ".join(STAGES)
    assert "finetune" in allowed and "prune_heads" in allowed and "distill" in allowed
    assert message == f"r.yaml: stages.1.type: 'prune' is not a known stage; allowed: {allowed}"


def test_stage_without_type() -> None:
    message = error_of({**MINIMAL, "stages": [{"name": "x"}]})
    assert message == f"r.yaml: stages.0.type: required; allowed: {', '.join(STAGES)}"


def test_stage_registered_after_import_is_accepted(restore_registry: None, tmp_path: Path) -> None:
    @register_stage
    class PruneStage(Stage):
        """A stage defined outside the package."""

        type: Literal["prune"]
        sparsity: float = 0.5

        def run(self, model, ctx) -> StageOutput:
            return StageOutput(model, {})

    text = BASELINE + "  - type: prune\n    sparsity: 0.9\n"
    recipe = load_recipe(write(tmp_path, text))
    assert isinstance(recipe.stages[1], PruneStage)
    assert (recipe.stages[1].name, recipe.stages[1].sparsity) == ("prune", 0.9)
    assert "sparsity: 0.9" in recipe.to_yaml()
    assert load_recipe(write(tmp_path, recipe.to_yaml(), "resolved.yaml")) == recipe
    message = error_of({**MINIMAL, "stages": [{"type": "quantize_all"}]})
    assert message.endswith(f"'quantize_all' is not a known stage; allowed: {', '.join(STAGES)}")
    assert "prune" in STAGES


def test_register_stage_rejects_bad_classes(restore_registry: None) -> None:
    class Untyped(Stage):
        """No type."""

    class NoRun(Stage):
        """Parses, but cannot run."""

        type: Literal["norun"]

    class Undocumented(Stage):
        type: Literal["undocumented"]

        def run(self, model, ctx) -> StageOutput:
            return StageOutput(model, {})

    class Clash(Stage):
        """Takes a built-in name."""

        type: Literal["finetune"]

        def run(self, model, ctx) -> StageOutput:
            return StageOutput(model, {})

    with pytest.raises(TypeError, match="Literal"):
        register_stage(Untyped)
    with pytest.raises(TypeError, match="NoRun does not implement run"):
        register_stage(NoRun)
    with pytest.raises(TypeError, match="needs a docstring"):
        register_stage(Undocumented)
    with pytest.raises(ValueError, match="'finetune' is already registered"):
        register_stage(Clash)
    assert register_stage(FinetuneStage) is FinetuneStage
    assert "norun" not in STAGES


def test_unknown_stage_key_lists_allowed() -> None:
    message = error_of({**MINIMAL, "stages": [{"type": "finetune", "epochs": 3}]})
    assert message == "r.yaml: stages.0.epochs: unknown key; allowed: type, name, training"


# ---------------------------------------------------------------- field errors


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_recipe(write(tmp_path, BASELINE + "epochs: 3\n"))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'recipe.yaml'}: epochs: unknown key; allowed: model, task, ")
    assert message.endswith("training, stages, push_to_hub, export")


def test_unknown_training_key_suggests_close_names() -> None:
    message = error_of({**MINIMAL, "training": {"warmup_ratio": 0.1}})
    assert message.startswith("r.yaml: training.warmup_ratio: not a TrainingArguments field")
    assert "did you mean: warmup_steps?" in message


def test_unknown_stage_training_key() -> None:
    stages = [{"type": "finetune", "training": {"lerning_rate": 1e-4}}]
    message = error_of({**MINIMAL, "stages": stages})
    assert message.startswith("r.yaml: stages.0.training.lerning_rate: not a TrainingArguments field")
    assert "learning_rate" in message


@pytest.mark.parametrize("key", ["output_dir", "seed"])
def test_toolkit_owned_training_keys_forbidden(key: str) -> None:
    message = error_of({**MINIMAL, "training": {key: 1}})
    assert message == f"r.yaml: training.{key}: set by nlpcompress; use the top-level '{key}' key instead"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_length", "abc", "max_length: must be an integer between 8 and 4096 (got 'abc')"),
        ("max_length", 4097, "max_length: must be an integer between 8 and 4096 (got 4097)"),
        ("max_length", True, "max_length: must be an integer between 8 and 4096 (got True)"),
        ("max_train_samples", 0, "max_train_samples: must be a positive integer or null (got 0)"),
        ("seed", -1, "seed: must be an integer >= 0 (got -1)"),
        ("model", "", "model: must be a non-empty string (got '')"),
        ("stages", [], "stages: must be a list of at least one stage (got [])"),
        ("training", [1], "training: must be a mapping (got [1])"),
    ],
)
def test_bad_field_values(field: str, value: object, expected: str) -> None:
    assert error_of({**MINIMAL, field: value}) == f"r.yaml: {expected}"


def test_several_errors_joined_on_one_line() -> None:
    data = {key: value for key, value in MINIMAL.items() if key != "model"}
    message = error_of({**data, "max_length": 2, "seed": "x"})
    assert message == (
        "r.yaml: model: required key is missing; "
        "max_length: must be an integer between 8 and 4096 (got 2); "
        "seed: must be an integer >= 0 (got 'x')"
    )


# ---------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: recipe file not found"


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m\ntask: [sst2\nseed: 1\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML at line 3, column 5: ")
    assert "\n" not in message


@pytest.mark.parametrize(("text", "got"), [("- a\n- b\n", "['a', 'b']"), ("", "None")])
def test_top_level_must_be_mapping(tmp_path: Path, text: str, got: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: top level must be a mapping of recipe keys (got {got})"


# ---------------------------------------------------------------- overrides


def test_override_scientific_float_and_null(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, BASELINE), ["training.learning_rate=5e-5", "max_train_samples=null", "max_length=128"]
    )
    assert recipe.training["learning_rate"] == 5e-5
    assert isinstance(recipe.training["learning_rate"], float)
    assert (recipe.max_train_samples, recipe.max_length) == (None, 128)


def test_override_nested_stage_index_and_new_keys(tmp_path: Path) -> None:
    overrides = ["stages.0.training.num_train_epochs=2", "stages.0.name=ft", "training.report_to=[none]"]
    recipe = load_recipe(write(tmp_path, BASELINE), overrides)
    assert recipe.stages[0].training == {"num_train_epochs": 2}
    assert recipe.stages[0].name == "ft"
    assert recipe.training["report_to"] == ["none"]
    assert recipe.stage_training(recipe.stages[0])["num_train_epochs"] == 2


def test_override_creates_missing_mapping(tmp_path: Path) -> None:
    text = BASELINE.split("training:\n")[0] + "stages:\n  - type: finetune\n"
    recipe = load_recipe(write(tmp_path, text), ["training.warmup_steps=100"])
    assert recipe.training == {"warmup_steps": 100}


def test_override_value_is_validated(tmp_path: Path) -> None:
    message = override_error(tmp_path, "max_length=4")
    assert message.endswith("recipe.yaml: max_length: must be an integer between 8 and 4096 (got 4)")


def test_override_index_out_of_range(tmp_path: Path) -> None:
    message = override_error(tmp_path, "stages.3.training.num_train_epochs=2")
    assert message.endswith(
        "override 'stages.3.training.num_train_epochs=2': index 3 is out of range (stages has 1 items)"
    )


def test_override_non_integer_index(tmp_path: Path) -> None:
    message = override_error(tmp_path, "stages.first.name=x")
    assert message.endswith("override 'stages.first.name=x': stages is a list; 'first' is not an index")


def test_override_through_scalar(tmp_path: Path) -> None:
    message = override_error(tmp_path, "seed.value=1")
    assert message.endswith("override 'seed.value=1': seed is 42, not a mapping or list")


@pytest.mark.parametrize("override", ["max_length", "=3", "training..lr=1"])
def test_malformed_override(tmp_path: Path, override: str) -> None:
    message = override_error(tmp_path, override)
    assert message.endswith(f"recipe.yaml: override {override!r} must look like key.path=value")


def test_override_value_not_yaml(tmp_path: Path) -> None:
    message = override_error(tmp_path, "training.report_to=[a")
    assert message.endswith("override 'training.report_to=[a': value is not valid YAML")


def test_recipe_from_code_objects() -> None:
    recipe = Recipe(model="m", task="sst2", output_dir="o", stages=[FinetuneStage(type="finetune")])
    assert recipe.stages[0].name == "finetune"


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_recipe_is_valid(path):
    """Each starts from the offline MiniLM, or from a fine-tuned model it names as its teacher (make demo's
    compression step reads the baseline its first step trained)."""
    recipe = load_recipe(path)
    assert recipe.stages
    assert recipe.model == "minilm-l6" or (recipe.model == "out/demo-baseline" and recipe.teacher == "input")
