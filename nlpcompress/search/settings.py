"""The ``search:`` section of a search space: what to optimise, under which limits, with which pruner."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError

from nlpcompress.errors import UserError
from nlpcompress.schema import NonEmptyStr, Schema, check, describe_error, is_int, short_repr

PRUNER_NAMES = ("median", "successive_halving", "hyperband", "none")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _distinct_names(value: object) -> bool:
    return isinstance(value, list) and len(value) > 0 and len(set(map(str, value))) == len(value)


Objectives = Annotated[
    list[NonEmptyStr], check(_distinct_names, "must be a non-empty list of distinct metric names")
]
Limit = Annotated[float, check(_is_number, "must be a number")]
Baseline = Annotated[
    float | None,
    check(lambda v: v is None or (_is_number(v) and v > 0), "must be a number > 0 (the baseline's score)"),
]
Population = Annotated[int, check(lambda v: is_int(v) and v >= 2, "must be an integer >= 2")]
Seed = Annotated[int | None, check(lambda v: v is None or (is_int(v) and v >= 0), "must be an integer >= 0")]


class SearchSettings(Schema):
    """``objectives``: metric names (see ``objectives.METRICS``; task metrics such as ``accuracy`` too);
    ``directions``: maximize / minimize per objective (default: the metric's own); ``constraints``:
    ``max_<metric>`` / ``min_<metric>`` limits a trial must meet to count; ``baseline_score``: the
    reference for ``retention`` (score / baseline); ``pruner``: stops poor trials at the Trainer's
    evaluations (one objective only); ``population_size``: NSGA-II's generation (several objectives);
    ``seed``: the sampler's (null: random)."""

    objectives: Objectives
    directions: list[Literal["maximize", "minimize"]] | None = None
    constraints: dict[str, Limit] = Field(default_factory=dict)
    baseline_score: Baseline = None
    pruner: Literal[PRUNER_NAMES] = "median"
    population_size: Population = 10
    seed: Seed = None


def parse_settings(data: object, source: str) -> SearchSettings:
    """Validate a space's ``search:`` section; errors become one line prefixed with ``source: search.``."""
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: search must be a mapping with objectives, e.g. "
            f"search: {{objectives: [accuracy, latency_bs1_ms]}} (got {short_repr(data)})"
        )
    try:
        settings = SearchSettings.model_validate(data)
    except ValidationError as exc:
        raise UserError(
            f"{source}: {'; '.join(f'search.{describe_error(e)}' for e in exc.errors())}"
        ) from None
    if settings.directions is not None and len(settings.directions) != len(settings.objectives):
        raise UserError(
            f"{source}: search.directions: gives {len(settings.directions)} directions for "
            f"{len(settings.objectives)} objectives; give one per objective (or leave it out)"
        )
    return settings
