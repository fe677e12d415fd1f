"""The recipe schema's building blocks: a strict base model, field types, one-line error messages.

Techniques keep their parameters in a typed dataclass that validates itself (``ConfigError``);
:func:`config_keys` derives the recipe keys from that dataclass, so a parameter is declared and
checked in one place. Every validation error becomes one line: ``path.to.key: message (got value)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, get_args, get_origin

import transformers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from nlpcompress.errors import ConfigError

# TrainingArguments keys the toolkit sets itself from the recipe's top-level keys of the same name.
OWNED_TRAINING_KEYS = frozenset({"output_dir", "seed"})


def validation_error(
    errors: list[tuple[tuple[str | int, ...], Any, str]], kind: str = "invalid_value"
) -> ValidationError:
    """A ValidationError from ``(loc, input, message)`` triples; locs nest under the caller's.

    ``kind`` ``unknown_key``, ``unknown_stage`` or ``missing`` leave the input out of the message.
    """
    details = [
        InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
        for loc, value, message in errors
    ]
    return ValidationError.from_exception_data("Recipe", details)


def config_error(err: ConfigError, *prefix: str | int) -> ValidationError:
    """A technique config's error as a validation error at ``prefix + (err.field,)``."""
    return validation_error([((*prefix, err.field), err.value, err.message)])


class Schema(BaseModel):
    """Base for recipe models: strict types (no "1" for 1, no true for 1), unknown keys list the allowed ones."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = list(cls.model_fields)
        unknown = [key for key in data if key not in allowed]
        if unknown:
            raise validation_error(
                [((str(key),), data[key], _unknown_key_message(str(key), allowed)) for key in unknown],
                "unknown_key",
            )
        return data


def _unknown_key_message(key: str, allowed: list[str]) -> str:
    """``unknown key; allowed: ...``, naming the close ones first when the key looks misspelt."""
    close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    return f"unknown key; {hint}allowed: {', '.join(allowed)}"


# ---------------------------------------------------------------- field types


def check(predicate: Callable[[Any], bool], message: str) -> BeforeValidator:
    """A validator that rejects values failing ``predicate`` with a human ``message``."""

    def run(value: Any) -> Any:
        if not predicate(value):
            raise PydanticCustomError("invalid_value", message)
        return value

    return BeforeValidator(run)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


NonEmptyStr = Annotated[str, check(_is_text, "must be a non-empty string")]
OptionalStr = Annotated[
    str | None, check(lambda v: v is None or _is_text(v), "must be a non-empty string or null")
]

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if get_origin(annotation) is Literal:
        return " or ".join(repr(value) for value in get_args(annotation))
    if get_origin(annotation) is list:
        return f"a list of {_type_name(get_args(annotation)[0]).removeprefix('an ').removeprefix('a ')}s"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


@dataclasses.dataclass(frozen=True)
class UnionMembers:
    """The members of a :func:`one_of` union, kept in its annotation for the generated reference."""

    members: tuple[Any, ...]


def one_of(annotation: Any) -> Any:
    """A union field as one check with one message ("must be a number or null"), not one error per member."""
    members = get_args(annotation)
    adapters = [TypeAdapter(member, config=ConfigDict(strict=True)) for member in members]
    message = "must be " + " or ".join(_type_name(member) for member in members)

    def run(value: Any) -> Any:
        # a member of the value's own type first, so 36 stays an int in `float | int` (as pydantic's smart mode)
        exact = [a for m, a in zip(members, adapters, strict=True) if type(value) is m]
        for adapter in exact + adapters:
            try:
                return adapter.validate_python(value)
            except ValidationError:
                continue
        raise PydanticCustomError("invalid_value", message)

    return Annotated[Any, BeforeValidator(run), UnionMembers(members)]


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


@cache
def training_argument_names() -> tuple[str, ...]:
    """Field names of the installed ``transformers.TrainingArguments``."""
    return tuple(f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init)


def _check_training_key(key: str) -> str:
    """Accept only TrainingArguments field names the toolkit does not own."""
    if key in OWNED_TRAINING_KEYS:
        raise PydanticCustomError(
            "training_key", f"set by nlpcompress; use the top-level '{key}' key instead"
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


_SIMPLE_TYPES = {int: is_int, float: lambda v: isinstance(v, int | float) and not isinstance(v, bool)}
_SIMPLE_TYPES |= {bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str)}


@cache
def _training_value_checks() -> dict[str, tuple[str, Callable[[Any], bool]]]:
    """For TrainingArguments fields of a plain type (int, float, bool, str, optional or not): its check."""
    checks = {}
    for name, annotation in typing.get_type_hints(transformers.TrainingArguments).items():
        members = get_args(annotation) if _is_union(annotation) else (annotation,)
        plain = [m for m in members if m is not type(None)]
        if len(plain) == 1 and plain[0] in _SIMPLE_TYPES:
            optional = type(None) in members
            test = _SIMPLE_TYPES[plain[0]]
            described = _type_name(plain[0]) + (" or null" if optional else "")
            checks[name] = (described, lambda v, t=test, o=optional: (o and v is None) or t(v))
    return checks


def _positive(value: Any) -> bool:
    return value > 0


def _not_negative(value: Any) -> bool:
    return value >= 0


# Ranges of the TrainingArguments a recipe sets most, checked before anything trains (transformers checks
# some only when training starts, and accepts num_train_epochs: -1, which trains zero steps).
TRAINING_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": (_not_negative, ">= 0"),
    "num_train_epochs": (_positive, "> 0"),
    "max_steps": (lambda v: v == -1 or v > 0, "> 0 (or -1: use num_train_epochs)"),
    "per_device_train_batch_size": (_positive, ">= 1"),
    "per_device_eval_batch_size": (_positive, ">= 1"),
    "gradient_accumulation_steps": (_positive, ">= 1"),
    "warmup_steps": (_not_negative, ">= 0"),
    "weight_decay": (_not_negative, ">= 0"),
    "max_grad_norm": (_not_negative, ">= 0"),
    "logging_steps": (_positive, "> 0"),
    "save_steps": (_positive, "> 0"),
    "eval_steps": (_positive, "> 0"),
    "save_total_limit": (_positive, ">= 1"),
    "adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_epsilon": (_positive, "> 0"),
    "dataloader_num_workers": (_not_negative, ">= 0"),
}


def _check_training_values(values: dict[str, Any]) -> dict[str, Any]:
    """Values of the type TrainingArguments declares and in their range, so a typo fails here and not in the
    middle of a run."""
    errors = []
    for key, value in values.items():
        described, test = _training_value_checks().get(key, ("", lambda v: True))
        in_range, allowed = TRAINING_RANGES.get(key, (lambda v: True, ""))
        if not test(value):
            errors.append(((key,), value, f"must be {described}"))
        elif value is not None and not in_range(value):
            errors.append(((key,), value, f"must be {allowed}"))
    if errors:
        raise validation_error(errors)
    return values


Training = Annotated[
    dict[Annotated[str, AfterValidator(_check_training_key)], Any],
    BeforeValidator(lambda v: {} if v is None else v),
    AfterValidator(_check_training_values),
]


# ---------------------------------------------------------------- keys from a typed config


def config_keys(config_class: type, exclude: tuple[str, ...] = ()) -> type[Schema]:
    """A Schema whose keys are ``config_class``'s dataclass fields (types and defaults), minus ``exclude``.

    A stage inherits it and builds the config with :func:`build_config`; the dataclass's own
    ``__post_init__`` is the only place its values are checked.
    """
    hints = typing.get_type_hints(config_class)
    keys = {}
    for field in dataclasses.fields(config_class):
        if not field.init or field.name in exclude:
            continue
        annotation = _nested(hints[field.name])
        annotation = (
            one_of(annotation) if _is_union(annotation) and not _is_optional(annotation) else annotation
        )
        if field.default is not dataclasses.MISSING:
            default: Any = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = ...
        keys[field.name] = (annotation, default)
    return create_model(f"{config_class.__name__}Keys", __base__=Schema, **keys)


def _nested(annotation: Any) -> Any:
    """A dataclass config (or ``Config | None``) inside a config becomes its own keys schema."""
    members = get_args(annotation) if _is_union(annotation) else (annotation,)
    if not any(dataclasses.is_dataclass(member) for member in members):
        return annotation
    nested = tuple(config_keys(m) if dataclasses.is_dataclass(m) else m for m in members)
    return nested[0] if len(nested) == 1 else typing.Union[nested]  # noqa: UP007  (built from a tuple)


def _is_optional(annotation: Any) -> bool:
    """``X | None`` with a single X: pydantic reports it as one field, so no merging is needed."""
    members = get_args(annotation)
    return len(members) == 2 and type(None) in members


def build_config(schema: BaseModel, config_class: type, *prefix: str | int) -> Any:
    """``config_class`` from the schema's keys; its ``ConfigError`` becomes a validation error at the key."""
    names = [
        f.name for f in dataclasses.fields(config_class) if f.init and f.name in type(schema).model_fields
    ]
    values = {name: getattr(schema, name) for name in names}
    values = {name: v.model_dump() if isinstance(v, BaseModel) else v for name, v in values.items()}
    try:
        return config_class(**values)
    except ConfigError as err:
        raise config_error(err, *prefix) from None


# ---------------------------------------------------------------- messages

_MESSAGES = {
    "missing": "required key is missing",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
}
_INPUT_IMPLIED = {"missing", "unknown_key", "unknown_stage", "training_key"}


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: ErrorDetails) -> str:
    """``loc.path: message (got value)`` for one pydantic error."""
    loc = error["loc"]
    is_key = bool(loc) and loc[-1] == "[key]"
    path = ".".join(str(part) for part in loc if part != "[key]") or "top level"
    message = _MESSAGES.get(error["type"], error["msg"])
    if not is_key and error["type"] not in _INPUT_IMPLIED and "(got " not in message:
        message += f" (got {short_repr(error['input'])})"
    return f"{path}: {message}"


def describe_errors(exc: ValidationError) -> str:
    """All errors of ``exc`` on one line, separated by ``; ``."""
    return "; ".join(describe_error(e) for e in exc.errors())
