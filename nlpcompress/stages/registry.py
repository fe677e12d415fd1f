"""The stage contract and registry: one registered class per stage type holds its recipe keys and its run.

A stage is a :class:`Stage` subclass with ``type: Literal["<name>"]``, its parameters as fields
(or derived from a typed config through ``config_class``), and a ``run(model, ctx)`` that returns
the next model with its metrics. ``@register_stage`` makes it parseable in recipes; registering a
class without ``run`` fails at import, not after data and model are loaded.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

from datasets import Dataset
from pydantic import Field, model_validator
from transformers import PreTrainedTokenizerBase, TrainerCallback

from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.glue import Task
from nlpcompress.schema import OptionalStr, Schema, Training, build_config, validation_error
from nlpcompress.structure import STATES

Model = CompactBertForSequenceClassification


@dataclass
class StageContext:
    """What a stage may use; it must not write outside ``work_dir`` and ``artifacts_dir``.

    ``training`` holds the TrainingArguments values for this stage (the recipe's, overridden key by
    key by the stage's). ``teacher`` is the run's frozen teacher for stages that distil: the model
    of the last ``finetune`` stage, or the teacher a ``distill`` stage used (see ``StageOutput``).
    """

    task: Task
    tokenizer: PreTrainedTokenizerBase
    train_dataset: Dataset | None
    eval_datasets: dict[str, Dataset]
    work_dir: Path  # scratch: Trainer output_dir, checkpoints; deleted after a successful run
    artifacts_dir: Path  # saved with the run's model (plots, JSON reports)
    training: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    teacher: Model | None = None
    progress: bool = True
    # the run's rows tokenized by another tokenizer (train, {split: eval}): for stages that change the vocabulary
    load_data: Callable[[PreTrainedTokenizerBase], tuple[Dataset, dict[str, Dataset]]] | None = None
    callbacks: tuple[TrainerCallback, ...] = ()  # the run's own, given to every Trainer after the stage's
    allow_untrained_teacher: bool = False  # the recipe's override of the teacher check (stages.teachers)
    # the run's train rows as text (text fields and label, in train_dataset's order), read on demand, and the
    # length they are tokenized to: for stages that make new train rows (augmentation)
    train_rows: Callable[[], Dataset] | None = None
    max_length: int = 128


@dataclass
class StageOutput:
    model: Model
    metrics: dict[str, float]  # validation metrics of the returned model
    info: dict[str, Any] = field(default_factory=dict)  # stage facts for results.json
    teacher: Model | None = None  # what later stages distil from (None: keep the run's current teacher)
    tokenizer: PreTrainedTokenizerBase | None = None  # a new vocabulary for later stages and the saved model


class Stage(Schema):
    """One step of a recipe; subclasses fix ``type`` to a Literal, add their keys and implement ``run``.

    ``config_class``: a dataclass whose fields are the stage's keys (``schema.config_keys``); its own
    validation runs once when the recipe is parsed and ``config()`` returns it.
    """

    type: str
    name: OptionalStr = None
    training: Training = Field(default_factory=dict)

    config_class: ClassVar[type | None] = None
    provides_teacher: ClassVar[bool] = False  # run() returns StageOutput.teacher for later distilling stages
    # The contract (stages.contracts): the model states run() takes, the normalisations the runner applies
    # first (densify, bake, remove_dead_units), the states run() may leave. Default: anything, as it was.
    accepts: ClassVar[frozenset[str]] = frozenset(STATES)
    prepares: ClassVar[tuple[str, ...]] = ()
    produces_states: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _valid_config(self) -> Stage:
        if self.config_class is not None:
            self.config()
        return self

    def config(self) -> Any:
        """The stage's typed config (``config_class``) built from its keys."""
        if self.config_class is None:
            raise TypeError(f"{type(self).__name__} has no config_class")
        return build_config(self, self.config_class)

    def produces(self) -> frozenset[str]:
        """The states this stage leaves with its settings (at most ``produces_states``)."""
        return self.produces_states

    def needs_teacher(self) -> bool:
        """Whether ``run`` distils from ``ctx.teacher`` (the runner checks one exists before training)."""
        return False

    @abstractmethod
    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        """Apply the stage to ``model`` and return the next model with its validation metrics."""


STAGES: dict[str, type[Stage]] = {}


def register_stage(stage_class: type[Stage]) -> type[Stage]:
    """Make ``stage_class`` parseable in recipes under its ``type`` Literal; usable as a decorator."""
    if not (isinstance(stage_class, type) and issubclass(stage_class, Stage)):
        raise TypeError(f"register_stage: {stage_class!r} is not a Stage subclass")
    annotation = stage_class.model_fields["type"].annotation
    values = get_args(annotation) if get_origin(annotation) is Literal else ()
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"register_stage: {stage_class.__name__}.type must be Literal['<one name>']")
    if getattr(stage_class.run, "__isabstractmethod__", False):
        raise TypeError(f"register_stage: {stage_class.__name__} does not implement run(model, ctx)")
    if not stage_class.__doc__:
        raise TypeError(f"register_stage: {stage_class.__name__} needs a docstring (it documents the stage)")
    key = values[0]
    if STAGES.get(key, stage_class) is not stage_class:
        raise ValueError(f"register_stage: stage type {key!r} is already registered by {STAGES[key]!r}")
    STAGES[key] = stage_class
    return stage_class


def parse_stage(value: Any) -> Stage:
    """Validate one recipe stage with the class registered for its ``type``."""
    if isinstance(value, Stage):
        return value
    if not isinstance(value, dict):
        raise validation_error([((), value, "must be a mapping with a 'type' key")])
    allowed = f"allowed: {', '.join(STAGES)}"
    if "type" not in value:
        raise validation_error([(("type",), value, f"required; {allowed}")], "unknown_stage")
    kind = value["type"]
    if not isinstance(kind, str) or kind not in STAGES:
        raise validation_error(
            [(("type",), kind, f"{kind!r} is not a known stage; {allowed}")], "unknown_stage"
        )
    return STAGES[kind].model_validate(value)
