"""The recipe reference, generated from the schemas the recipe parser itself uses (``docs/reference.md``).

Every key a recipe may hold is listed with its type and default: the top-level keys, the ``task:`` block,
``export:``, ``push_to_hub:`` and each registered stage, with the stage's docstring, its contract and its
config's docstring. Nothing here is written by hand, so the page cannot drift from what is accepted:
``python -m nlpcompress.recipe_reference > docs/reference.md`` regenerates it and a test keeps it equal.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from nlpcompress.recipe import PushToHub, Recipe
from nlpcompress.runtime.step import ExportStep
from nlpcompress.schema import UnionMembers
from nlpcompress.stages.contracts import contract_table
from nlpcompress.stages.recovery import RecoveryKeys
from nlpcompress.stages.registry import STAGES, Stage
from nlpcompress.user_data import TaskBlock

# Keys every stage has, documented once above the stages rather than in every table.
COMMON_STAGE_KEYS = ("type", "name", "training")
ANY_TRAINING_ARGUMENT = "mapping of transformers.TrainingArguments fields"


def type_name(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """A short, readable name of a field's type (``int or null``, ``list of int``, ``one of `a`, `b```);
    ``metadata``: the field's Annotated extras (a :func:`~nlpcompress.schema.one_of` union keeps its members there)."""
    union = next((m for m in metadata if isinstance(m, UnionMembers)), None)
    if union is not None:
        return " or ".join(dict.fromkeys(type_name(member) for member in union.members))
    origin = get_origin(annotation)
    if origin is Annotated:
        return type_name(get_args(annotation)[0], get_args(annotation)[1:])
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_name(member) for member in get_args(annotation)))
    if origin in (list, tuple):
        members = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"list of {' or '.join(dict.fromkeys(type_name(m) for m in members))}" if members else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "mapping"
    return {str: "str", int: "int", float: "float", bool: "bool", Any: "any"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def nested_schemas(annotation: Any) -> list[type[BaseModel]]:
    """The mappings with keys of their own inside a field's type (``StudentSpec | None`` -> StudentSpec)."""
    origin = get_origin(annotation)
    if origin is Annotated or origin in (typing.Union, types.UnionType):
        return [schema for member in get_args(annotation) for schema in nested_schemas(member)]
    return [annotation] if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else []


def default_text(field: Any) -> str:
    """The default as a recipe would write it; "required" when there is none."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True)
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == {}:
        return "`{}`"
    return f"`{value}`"


def key_rows(
    schema: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = (), flat: tuple[str, ...] = ()
) -> Iterator[tuple[str, str, str]]:
    """(dotted key, type, default) for every key of ``schema``, nested mappings after their own row (not
    for the keys in ``flat``, documented in a section of their own)."""
    for name, field in schema.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        kind = ANY_TRAINING_ARGUMENT if name == "training" else type_name(field.annotation, field.metadata)
        if name in flat:
            kind += f" (see `{name}:`)"
        yield key, kind, default_text(field)
        if name not in flat:
            for nested in nested_schemas(field.annotation):
                yield from key_rows(nested, f"{key}.")


def key_table(schema: type[BaseModel], skip: tuple[str, ...] = (), flat: tuple[str, ...] = ()) -> list[str]:
    lines = ["| key | type | default |", "|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {default} |" for key, kind, default in key_rows(schema, "", skip, flat)]
    return lines


def doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


def stage_section(name: str, stage: type[Stage]) -> list[str]:
    contract = next(line for line in contract_table() if line.startswith(f"| {name} |"))
    takes, first, leaves = (cell.strip() for cell in contract.strip("|").split("|")[1:])
    lines = [
        f"### `{name}`",
        "",
        doc(stage),
        "",
        f"Takes a model that is: {takes}. The runner first: {first}. Leaves it: {leaves}.",
        "",
    ]
    if stage.config_class is not None and doc(stage.config_class):
        lines += [doc(stage.config_class), ""]
    rows = key_table(stage, skip=COMMON_STAGE_KEYS, flat=("recovery",))
    return [*lines, *(rows if len(rows) > 2 else ["No keys besides `type`, `name` and `training`."]), ""]


def reference() -> str:
    """The whole reference page as Markdown."""
    import nlpcompress.stages.builtin  # noqa: F401  (registers the built-in stages)

    sections = [
        "# Recipe reference",
        "",
        "Generated from the schemas the recipe parser uses (`python -m nlpcompress.recipe_reference > "
        "docs/reference.md`; a test keeps this page equal to them). Every key not listed here is refused with "
        "one line naming the keys that exist. How the stages work and what they measured: "
        "[recipes and stages](recipes.md).",
        "",
        "## Top-level keys",
        "",
        doc(Recipe),
        "",
        *key_table(Recipe, flat=("task", "push_to_hub", "export")),
        "",
        "## `task:` as a block (your own data)",
        "",
        doc(TaskBlock),
        "",
        *key_table(TaskBlock),
        "",
        "## `export:`",
        "",
        doc(ExportStep),
        "",
        *key_table(ExportStep),
        "",
        "## `push_to_hub:`",
        "",
        doc(PushToHub),
        "",
        *key_table(PushToHub),
        "",
        "## Stages",
        "",
        "Every stage takes `type` (which stage), `name` (default: its type, then `type-2`, ...) and `training` "
        f"({ANY_TRAINING_ARGUMENT}, over the recipe's `training` key by key). Which stage can follow which:",
        "",
        *contract_table(),
        "",
        "### `recovery:`",
        "",
        "The stages that change a trained model and then train it take one `recovery:` key. "
        + doc(RecoveryKeys),
        "",
        *key_table(RecoveryKeys),
        "",
    ]
    for name, stage in sorted(STAGES.items()):
        sections += stage_section(name, stage)
    return "\n".join(sections).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
