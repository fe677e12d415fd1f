"""YAML recipe schema and loader: what to compress, on which GLUE task, through which stages."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import transformers
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SerializeAsAny,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from nlpcompress.errors import UserError

# TrainingArguments keys the toolkit sets itself from the recipe's top-level keys of the same name.
OWNED_TRAINING_KEYS = frozenset({"output_dir", "seed"})


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


# ---------------------------------------------------------------- field types


def _check(predicate: Callable[[Any], bool], message: str) -> BeforeValidator:
    """A validator that rejects values failing `predicate` with a human `message`."""

    def check(value: Any) -> Any:
        if not predicate(value):
            raise PydanticCustomError("invalid_value", message)
        return value

    return BeforeValidator(check)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


NonEmptyStr = Annotated[str, _check(_is_text, "must be a non-empty string")]
OptionalStr = Annotated[
    str | None, _check(lambda v: v is None or _is_text(v), "must be a non-empty string or null")
]
SampleCount = Annotated[
    int | None, _check(lambda v: v is None or (_is_int(v) and v > 0), "must be a positive integer or null")
]
MaxLength = Annotated[
    int, _check(lambda v: _is_int(v) and 8 <= v <= 4096, "must be an integer between 8 and 4096")
]
Seed = Annotated[int, _check(lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")]


@cache
def training_argument_names() -> tuple[str, ...]:
    """Field names of the installed `transformers.TrainingArguments`."""
    return tuple(f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init)


def _check_training_key(key: str) -> str:
    """Accept only TrainingArguments field names the toolkit does not own."""
    if key in OWNED_TRAINING_KEYS:
        raise PydanticCustomError(
            "training_key",
            f"set by nlpcompress; use the top-level '{key}' key instead",
        )
    names = training_argument_names()
    if key not in names:
        close = difflib.get_close_matches(key, names, n=3)
        hint = f"did you mean: {', '.join(close)}?" if close else "see the TrainingArguments docs"
        raise PydanticCustomError(
            "training_key",
            f"not a TrainingArguments field in transformers {transformers.__version__} ({hint})",
        )
    return key


Training = Annotated[
    dict[Annotated[str, AfterValidator(_check_training_key)], Any],
    BeforeValidator(lambda v: {} if v is None else v),
]


# ---------------------------------------------------------------- models


def _validation_error(errors: list[tuple[tuple[str | int, ...], Any, str, str]]) -> ValidationError:
    """Build a ValidationError from (loc, input, error type, message) tuples; locs nest under the caller's."""
    details = [
        InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
        for loc, value, kind, message in errors
    ]
    return ValidationError.from_exception_data("Recipe", details)


class _Schema(BaseModel):
    """Base for recipe models: unknown keys are errors that list the allowed ones."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = list(cls.model_fields)
        unknown = [key for key in data if key not in allowed]
        if unknown:
            message = f"unknown key; allowed: {', '.join(allowed)}"
            raise _validation_error([((str(key),), data[key], "unknown_key", message) for key in unknown])
        return data


class StageBase(_Schema):
    """One step of a recipe; subclasses fix `type` to a Literal and add their parameters."""

    type: str
    name: OptionalStr = None
    training: Training = {}


STAGE_TYPES: dict[str, type[StageBase]] = {}


def register_stage(model_cls: type[StageBase]) -> type[StageBase]:
    """Make `model_cls` parseable as a stage under its `type` Literal; usable as a decorator."""
    if not (isinstance(model_cls, type) and issubclass(model_cls, StageBase)):
        raise TypeError(f"register_stage: {model_cls!r} is not a StageBase subclass")
    annotation = model_cls.model_fields["type"].annotation
    values = get_args(annotation) if get_origin(annotation) is Literal else ()
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"register_stage: {model_cls.__name__}.type must be Literal['<one name>']")
    key = values[0]
    if STAGE_TYPES.get(key, model_cls) is not model_cls:
        raise ValueError(f"register_stage: stage type {key!r} is already registered by {STAGE_TYPES[key]!r}")
    STAGE_TYPES[key] = model_cls
    return model_cls


@register_stage
class FinetuneStage(StageBase):
    """Plain fine-tuning on the task."""

    type: Literal["finetune"]


def _parse_stage(value: Any) -> Any:
    """Validate one stage with the model registered for its `type`."""
    if isinstance(value, StageBase):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("invalid_value", "must be a mapping with a 'type' key")
    import nlpcompress.stages  # noqa: F401 - registers the built-in stage types (it imports this module)

    allowed = f"allowed: {', '.join(STAGE_TYPES)}"
    if "type" not in value:
        raise _validation_error([(("type",), value, "unknown_stage", f"required; {allowed}")])
    kind = value["type"]
    if not isinstance(kind, str) or kind not in STAGE_TYPES:
        raise _validation_error(
            [(("type",), kind, "unknown_stage", f"{kind!r} is not a known stage; {allowed}")]
        )
    return STAGE_TYPES[kind].model_validate(value)


Stage = Annotated[SerializeAsAny[StageBase], BeforeValidator(_parse_stage)]
Stages = Annotated[
    list[Stage], _check(lambda v: isinstance(v, list) and len(v) > 0, "must be a list of at least one stage")
]


class Recipe(_Schema):
    """A whole compression run: model, task, data limits, shared training args and ordered stages."""

    model: NonEmptyStr
    task: NonEmptyStr  # the runner checks it is a GLUE task
    data_dir: OptionalStr = None
    max_train_samples: SampleCount = None
    max_eval_samples: SampleCount = None
    max_length: MaxLength = 128
    seed: Seed = 42
    output_dir: NonEmptyStr
    training: Training = {}
    stages: Stages

    @model_validator(mode="after")
    def _name_stages(self) -> Recipe:
        """Reject duplicate explicit names; name the others `type`, `type-2`, ..."""
        taken: set[str] = set()
        duplicates = []
        for index, stage in enumerate(self.stages):
            if stage.name in taken:
                duplicates.append(
                    (("stages", index, "name"), stage.name, "duplicate", "duplicate stage name")
                )
            if stage.name is not None:
                taken.add(stage.name)
        if duplicates:
            raise _validation_error(duplicates)
        self.stages = [self._named(stage, taken) for stage in self.stages]
        return self

    @staticmethod
    def _named(stage: StageBase, taken: set[str]) -> StageBase:
        if stage.name is not None:
            return stage
        name, n = stage.type, 1
        while name in taken:
            n += 1
            name = f"{stage.type}-{n}"
        taken.add(name)
        return stage.model_copy(update={"name": name})

    def stage_training(self, stage: StageBase) -> dict[str, Any]:
        """TrainingArguments for `stage`: the top-level ones, overridden key by key by the stage's."""
        return {**self.training, **stage.training}

    def to_yaml(self) -> str:
        """The resolved recipe (defaults and stage names filled in) as YAML that load_recipe reads back."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- errors

_MESSAGES = {
    "missing": "required key is missing",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
}
_INPUT_IMPLIED = {"missing", "unknown_key", "unknown_stage", "training_key"}


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ErrorDetails) -> str:
    """`loc.path: message (got value)` for one pydantic error."""
    loc = error["loc"]
    is_key = bool(loc) and loc[-1] == "[key]"
    path = ".".join(str(part) for part in loc if part != "[key]") or "top level"
    message = _MESSAGES.get(error["type"], error["msg"])
    if not is_key and error["type"] not in _INPUT_IMPLIED:
        message += f" (got {_short_repr(error['input'])})"
    return f"{path}: {message}"


# ---------------------------------------------------------------- loading


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate `data` as a Recipe; errors become one-line UserErrors prefixed with `source`."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: top level must be a mapping of recipe keys (got {_short_repr(data)})")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from None


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
            raise ValueError(f"{here} is {_short_repr(node)}, not a mapping or list")
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


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe, apply `overrides` (e.g. `training.learning_rate=5e-5`), and validate it."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level must be a mapping of recipe keys (got {_short_repr(data)})")
    apply_overrides(data, overrides, str(path))
    return recipe_from_dict(data, str(path))
