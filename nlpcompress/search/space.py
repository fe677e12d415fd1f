"""A search space: a recipe whose values may be distributions, and whose stages may be optional.

Any value of the recipe may be ``{int: [low, high]}`` (with ``step``, or ``log: true``),
``{float: [low, high]}`` (with ``step`` or ``log: true``) or ``{choice: [a, b, ...]}`` (any YAML
values, lists included). A stage entry with ``optional: true`` is kept or dropped by the search; its
own distributions are sampled only when it is kept. Parameters are named by their dotted path in the
space (``stages.1.target``; ``stages.1.included`` for an optional stage), whatever stages a trial drops.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from nlpcompress.errors import UserError
from nlpcompress.recipe import read_recipe_data, recipe_from_dict
from nlpcompress.schema import is_int, short_repr
from nlpcompress.search.settings import SearchSettings, parse_settings

KINDS = ("int", "float", "choice")
MODIFIERS = {"int": ("step", "log"), "float": ("step", "log"), "choice": ()}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: optuna.Trial) -> int:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

    def first(self) -> int:
        return self.low

    def extremes(self) -> tuple[int, ...]:
        """The lowest and the highest value a trial can draw."""
        return (self.low, self.low + (self.high - self.low) // self.step * self.step)


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def suggest(self, trial: optuna.Trial) -> float:
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def first(self) -> float:
        return self.low

    def extremes(self) -> tuple[float, ...]:
        """The lowest and the highest value a trial can draw."""
        top = self.high if self.step is None else self.low + (self.high - self.low) // self.step * self.step
        return (self.low, top)


@dataclass(frozen=True)
class ChoiceParam:
    """Optuna stores plain choices (null, booleans, numbers, strings) as they are; when a choice is a
    list or mapping, every choice is stored as its JSON text and turned back into the value here."""

    name: str
    choices: tuple[Any, ...]

    @property
    def labels(self) -> tuple[Any, ...]:
        if all(value is None or isinstance(value, bool | int | float | str) for value in self.choices):
            return self.choices
        return tuple(json.dumps(value, default=str) for value in self.choices)

    def suggest(self, trial: optuna.Trial) -> Any:
        label = trial.suggest_categorical(self.name, self.labels)
        return copy.deepcopy(self.choices[self.labels.index(label)])

    def first(self) -> Any:
        return copy.deepcopy(self.choices[0])

    def extremes(self) -> tuple[Any, ...]:
        """Every choice."""
        return tuple(copy.deepcopy(choice) for choice in self.choices)


Param = IntParam | FloatParam | ChoiceParam


@dataclass(frozen=True)
class OptionalStage:
    """A stage the search keeps or drops (the boolean parameter ``<path>.included``)."""

    name: str
    body: dict[str, Any]


@dataclass
class SearchSpace:
    """A parsed space: the recipe ``template`` with parameters in place of distributions, and ``settings``."""

    template: dict[str, Any]
    settings: SearchSettings
    source: str

    @property
    def output_dir(self) -> Path:
        return Path(self.template["output_dir"])

    @property
    def parameters(self) -> list[Param]:
        """Every distribution of the space (those of optional stages too) as a parameter."""
        found: list[Param] = []

        def walk(node: Any) -> None:
            if isinstance(node, IntParam | FloatParam | ChoiceParam):
                found.append(node)
            elif isinstance(node, OptionalStage):
                walk(node.body)
            elif isinstance(node, dict):
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.template)
        return found

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """A concrete recipe dict for ``trial`` (not validated yet: see ``recipe_from_dict``)."""
        return _fill(self.template, lambda param: param.suggest(trial), lambda stage: _include(stage, trial))

    def first(self) -> dict[str, Any]:
        """The recipe with every parameter at its first value (low bound, first choice), every stage kept."""
        return _fill(self.template, lambda param: param.first(), lambda stage: True)

    def with_value(self, chosen: Param, value: Any) -> dict[str, Any]:
        """The recipe with ``chosen`` at ``value`` and every other parameter at its first value."""
        return _fill(
            self.template, lambda param: value if param is chosen else param.first(), lambda stage: True
        )

    def check(self) -> None:
        """Every parameter at each of its extremes (the others at their first value) must give a valid recipe,
        so a range that trials would fall out of is refused before the first trial."""
        recipe_from_dict(self.first(), f"{self.source} (every parameter at its first value)")
        for param in self.parameters:
            for value in param.extremes()[1:]:
                recipe_from_dict(
                    self.with_value(param, value),
                    f"{self.source} ({param.name} = {short_repr(value)}, which a trial can draw)",
                )


def _include(stage: OptionalStage, trial: optuna.Trial) -> bool:
    return trial.suggest_categorical(stage.name, (True, False))


def _fill(node: Any, value_of, include) -> Any:
    """``node`` with each parameter replaced by ``value_of(param)``, optional stages kept where ``include``."""
    if isinstance(node, IntParam | FloatParam | ChoiceParam):
        return value_of(node)
    if isinstance(node, dict):
        return {key: _fill(value, value_of, include) for key, value in node.items()}
    if isinstance(node, list):
        kept = [item for item in node if not isinstance(item, OptionalStage) or include(item)]
        return [
            _fill(item.body if isinstance(item, OptionalStage) else item, value_of, include) for item in kept
        ]
    return node


# ---------------------------------------------------------------- parsing


def _distribution(node: dict[str, Any], path: str) -> Param:
    """The parameter a ``{int|float|choice: ...}`` mapping at ``path`` describes; UserError if it is malformed."""
    kinds = [kind for kind in KINDS if kind in node]
    if len(kinds) > 1:
        raise UserError(
            f"{path}: give one of {', '.join(KINDS)} in a distribution, not {' and '.join(kinds)}"
        )
    kind = kinds[0]
    allowed = MODIFIERS[kind]
    unknown = [key for key in node if key != kind and key not in allowed]
    if unknown:
        extra = f"with {kind}: {', '.join(allowed)}" if allowed else f"no other key with {kind}"
        raise UserError(f"{path}: unknown distribution key {unknown[0]!r}; allowed {extra}")
    if kind == "choice":
        return _choice(node["choice"], path)
    return _range(kind, node, path)


def _choice(choices: Any, path: str) -> ChoiceParam:
    if not isinstance(choices, list) or not choices:
        raise UserError(f"{path}: choice must be a non-empty list of values (got {short_repr(choices)})")
    texts = [json.dumps(value, sort_keys=True, default=str) for value in choices]
    if len(set(texts)) != len(texts):
        raise UserError(f"{path}: choice lists a value twice (got {short_repr(choices)})")
    return ChoiceParam(path, tuple(choices))


def _range(kind: str, node: dict[str, Any], path: str) -> Param:
    bounds, step, log = node[kind], node.get("step"), node.get("log", False)
    fits = is_int if kind == "int" else _is_number
    noun = "integers" if kind == "int" else "numbers"
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(fits(b) for b in bounds)):
        raise UserError(f"{path}: {kind} must be [low, high], two {noun} (got {short_repr(bounds)})")
    low, high = bounds
    if low > high:
        raise UserError(f"{path}: {kind} bounds [{low}, {high}]: low must be <= high")
    if not isinstance(log, bool):
        raise UserError(f"{path}: log must be true or false (got {short_repr(log)})")
    if log and low <= 0:
        raise UserError(f"{path}: log: true needs low > 0 (got [{low}, {high}])")
    if step is not None and not (fits(step) and step > 0):
        raise UserError(
            f"{path}: step must be a positive {'integer' if kind == 'int' else 'number'} (got {step!r})"
        )
    if log and step is not None and step != 1:
        raise UserError(f"{path}: step and log: true cannot be combined; give one of them")
    if kind == "int":
        return IntParam(path, low, high, step or 1, log)
    return FloatParam(path, float(low), float(high), None if step is None else float(step), log)


def _parse(node: Any, path: str) -> Any:
    """``node`` with distributions replaced by parameters (named by their dotted ``path``)."""
    if isinstance(node, dict):
        if any(kind in node for kind in KINDS):
            return _distribution(node, path)
        return {key: _parse(value, f"{path}.{key}" if path else str(key)) for key, value in node.items()}
    if isinstance(node, list):
        return [_parse(value, f"{path}.{index}") for index, value in enumerate(node)]
    return node


def _parse_stages(stages: Any) -> Any:
    """The stage list with ``optional: true`` entries as OptionalStage (other values go to recipe validation)."""
    if not isinstance(stages, list):
        return _parse(stages, "stages")
    parsed: list[Any] = []
    for index, stage in enumerate(stages):
        path = f"stages.{index}"
        if not (isinstance(stage, dict) and "optional" in stage):
            parsed.append(_parse(stage, path))
            continue
        optional = stage["optional"]
        if not isinstance(optional, bool):
            raise UserError(f"{path}.optional: must be true or false (got {short_repr(optional)})")
        body = _parse({key: value for key, value in stage.items() if key != "optional"}, path)
        parsed.append(OptionalStage(f"{path}.included", body) if optional else body)
    return parsed


def space_from_dict(data: Any, source: str = "<space>") -> SearchSpace:
    """Parse a space (a recipe dict with distributions and a ``search:`` section) and check it: the recipe
    with every parameter at its first value and every optional stage kept must be a valid recipe."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: top level must be a mapping of recipe keys (got {short_repr(data)})")
    if "search" not in data:
        raise UserError(
            f"{source}: a search space needs a search: section, e.g. search: {{objectives: [accuracy, latency_bs1_ms]}}"
        )
    settings = parse_settings(data["search"], source)
    recipe = {key: value for key, value in data.items() if key != "search"}
    try:
        template = {
            key: _parse_stages(value) if key == "stages" else _parse(value, key)
            for key, value in recipe.items()
        }
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    space = SearchSpace(template, settings, source)
    space.check()
    if not isinstance(template["output_dir"], str):
        raise UserError(f"{source}: output_dir: must be one fixed folder in a search space (trials go in it)")
    return space


def load_space(path: str | Path, overrides: Sequence[str] = ()) -> SearchSpace:
    """Read a space YAML file, apply ``key.path=value`` overrides (values may be distributions), parse it."""
    return space_from_dict(read_recipe_data(path, overrides), str(path))
