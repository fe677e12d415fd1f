"""YAML recipe schema and loader: what to compress, on which GLUE task, through which stages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BeforeValidator, Field, SerializeAsAny, ValidationError, model_validator

from nlpcompress.errors import UserError
from nlpcompress.runtime.step import ExportStep
from nlpcompress.schema import (
    NonEmptyStr,
    OptionalStr,
    Schema,
    Training,
    check,
    describe_errors,
    is_int,
    short_repr,
    validation_error,
)
from nlpcompress.stages import (
    Stage,
    builtin,  # noqa: F401  (registers the built-in stage types)
    parse_stage,
)
from nlpcompress.user_data import TaskBlock


class _SafeFloatLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``5e-5`` / ``1E6`` as floats (PyYAML's YAML 1.1 wants ``5.0e-5``)."""


_SafeFloatLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+.0123456789"),
)


def _yaml_load(text: str) -> Any:
    """Parse YAML safely, with scientific-notation floats."""
    return yaml.load(text, Loader=_SafeFloatLoader)


SampleCount = Annotated[
    int | None, check(lambda v: v is None or (is_int(v) and v > 0), "must be a positive integer or null")
]
MaxLength = Annotated[
    int, check(lambda v: is_int(v) and 8 <= v <= 4096, "must be an integer between 8 and 4096")
]
Seed = Annotated[int, check(lambda v: is_int(v) and v >= 0, "must be an integer >= 0")]
RecipeStage = Annotated[SerializeAsAny[Stage], BeforeValidator(parse_stage)]
Stages = Annotated[
    list[RecipeStage],
    check(lambda v: isinstance(v, list) and len(v) > 0, "must be a list of at least one stage"),
]


class PushToHub(Schema):
    """Where a finished run goes on the Hub (``nlpcompress push`` takes the same settings)."""

    repo_id: NonEmptyStr
    private: bool = False
    revision: OptionalStr = None
    commit_message: OptionalStr = None


class Recipe(Schema):
    """A whole compression run: model, task, data limits, shared training args and ordered stages."""

    model: NonEmptyStr
    task: NonEmptyStr | TaskBlock  # a GLUE task's name (the runner checks it), or the user's own data
    data_dir: OptionalStr = None
    max_train_samples: SampleCount = None
    max_eval_samples: SampleCount = None
    max_length: MaxLength = 128
    seed: Seed = 42
    output_dir: NonEmptyStr
    teacher: OptionalStr = None  # a fine-tuned model for distilling stages; "input": the model itself
    allow_untrained_teacher: bool = (
        False  # distil from a teacher whose head is new or another task's (research)
    )
    training: Training = Field(default_factory=dict)
    stages: Stages
    push_to_hub: PushToHub | None = None
    export: ExportStep | None = None  # after saving: a verified ONNX / OpenVINO export, evaluated and timed

    @model_validator(mode="after")
    def _name_stages(self) -> Recipe:
        """Reject duplicate explicit names; name the others `type`, `type-2`, ..."""
        taken: set[str] = set()
        duplicates = []
        for index, stage in enumerate(self.stages):
            if stage.name in taken:
                duplicates.append((("stages", index, "name"), stage.name, "duplicate stage name"))
            if stage.name is not None:
                taken.add(stage.name)
        if duplicates:
            raise validation_error(duplicates)
        self.stages = [self._named(stage, taken) for stage in self.stages]
        return self

    @staticmethod
    def _named(stage: Stage, taken: set[str]) -> Stage:
        if stage.name is not None:
            return stage
        name, n = stage.type, 1
        while name in taken:
            n += 1
            name = f"{stage.type}-{n}"
        taken.add(name)
        return stage.model_copy(update={"name": name})

    def stage_training(self, stage: Stage) -> dict[str, Any]:
        """TrainingArguments for `stage`: the top-level ones, overridden key by key by the stage's."""
        return {**self.training, **stage.training}

    def to_yaml(self) -> str:
        """The resolved recipe (defaults and stage names filled in) as YAML that load_recipe reads back."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- loading


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate `data` as a Recipe; errors become one-line UserErrors prefixed with `source`."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: top level must be a mapping of recipe keys (got {short_repr(data)})")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: {describe_errors(exc)}") from None


def _read_yaml(path: Path) -> Any:
    """Parse the YAML file at `path`, turning I/O and syntax errors into UserErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read recipe ({exc})") from None
    try:
        return _yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise UserError(f"{path}: invalid YAML{where}: {problem}") from None


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set data[parts...] = value, creating missing mappings; raises ValueError with the reason."""
    node: Any = data
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth]) or "the top level"
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                raise ValueError(f"{here} is a list; {part!r} is not an index")
            if int(part) >= len(node):
                raise ValueError(f"index {part} is out of range ({here} has {len(node)} items)")
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
            if not last and node.get(key) is None:
                node[key] = {}
        else:
            raise ValueError(f"{here} is {short_repr(node)}, not a mapping or list")
        if last:
            node[key] = value
        else:
            node = node[key]


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "<recipe>") -> None:
    """Apply `key.path=value` overrides to `data` in place; values are YAML (`5e-5`, `null`, `[a, b]`)."""
    for override in overrides:
        path, sep, raw = override.partition("=")
        parts = path.strip().split(".")
        if not sep or "" in parts:
            raise UserError(f"{source}: override {override!r} must look like key.path=value")
        try:
            _set_path(data, parts, _yaml_load(raw))
        except yaml.YAMLError:
            raise UserError(f"{source}: override {override!r}: value is not valid YAML") from None
        except ValueError as exc:
            raise UserError(f"{source}: override {override!r}: {exc}") from None


def read_recipe_data(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A YAML recipe file (or search space) as a mapping, with `overrides` (e.g. `training.learning_rate=5e-5`)
    applied; not yet validated."""
    data = _read_yaml(Path(path))
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level must be a mapping of recipe keys (got {short_repr(data)})")
    apply_overrides(data, overrides, str(path))
    return data


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe, apply `overrides` (e.g. `training.learning_rate=5e-5`), and validate it."""
    return recipe_from_dict(read_recipe_data(path, overrides), str(path))
