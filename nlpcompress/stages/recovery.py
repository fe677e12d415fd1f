"""One recovery for every stage that changes the model and trains it: the ``recovery:`` sub-config (whether
to train, the task loss or distillation from the run's teacher, training overrides), checked in one place,
and the base class that derives ``needs_teacher`` from it and builds the recovery Trainer.

Recipes written before it used ``recover:`` (``qat:`` in ``quantize``) and ``distillation:`` on the stage;
they are read into ``recovery:`` with a one-line deprecation notice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from pydantic import Field, model_validator
from transformers import Trainer

from nlpcompress.distill import DistillationConfig, distillation_terms
from nlpcompress.distill.config import logit_distillation
from nlpcompress.errors import ConfigError
from nlpcompress.loss_terms import LossTerm, TaskLoss
from nlpcompress.schema import Training, build_config, config_keys, validation_error
from nlpcompress.stages.registry import Model, Stage, StageContext, StageOutput
from nlpcompress.stages.training import build_trainer, evaluate, run_training, train_facts
from nlpcompress.trainer import CompressionTrainer

logger = logging.getLogger(__name__)


@dataclass
class RecoveryConfig:
    """How a stage trains after (or while) it changes the model.

    ``train``: whether it trains (None: the stage's default, ``RecoveringStage.default_train``).
    ``distillation``: ``kd`` or ``distilbert`` settings to distil the run's teacher's logits instead of the
    task loss alone (needs ``train``). ``training``: TrainingArguments for this training, over the stage's
    ``training`` key by key.
    """

    train: bool | None = None
    distillation: DistillationConfig | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.distillation = logit_distillation(self.distillation, "recovery")
        if self.distillation is not None and self.train is False:
            raise ConfigError("distillation", self.distillation.as_dict(), "applies when train is true")

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings, for results.json."""
        return {
            "train": self.train,
            "distillation": self.distillation.as_dict() if self.distillation else None,
            "training": self.training,
        }


class RecoveryKeys(config_keys(RecoveryConfig, exclude=("training",))):
    """``train``: whether the stage trains after changing the model (null: the stage's default, true for
    all but ``quantize: {method: ptq}``; false saves the changed model as it is). ``distillation``: distil
    the run's teacher while training (``method: kd`` or ``distilbert``, with their weights and temperature;
    null: the task loss alone). ``training``: TrainingArguments over the stage's own ``training``, key by
    key (checked like every recipe's training block)."""

    training: Training = Field(default_factory=dict)


class RecoveringStage(Stage):
    """A stage that changes the model, then trains it (``recovery:``): subclasses call :meth:`recovered`,
    :meth:`recover` or :meth:`recovery_trainer` in ``run``.

    ``always_trains``: the stage's technique happens during the training (movement), so ``train: false``
    is refused. ``legacy_train_key``: the stage's old name for ``recovery.train``.
    """

    recovery: RecoveryKeys = Field(default_factory=RecoveryKeys)

    always_trains: ClassVar[bool] = False
    legacy_train_key: ClassVar[str] = "recover"

    @model_validator(mode="before")
    @classmethod
    def _read_legacy_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        legacy = {"train": cls.legacy_train_key, "distillation": "distillation"}
        found = {key: old for key, old in legacy.items() if old in data}
        if not found:
            return data
        if "recovery" in data:
            old = next(iter(found.values()))
            raise validation_error([((old,), data[old], "give it inside recovery:, not beside it")])
        data = dict(data)
        data["recovery"] = {key: data.pop(old) for key, old in found.items()}
        logger.warning(
            "stage %s: %s %s deprecated; write recovery: %s",
            data.get("name") or data.get("type"),
            " and ".join(found.values()),
            "are" if len(found) > 1 else "is",
            json.dumps(data["recovery"]),
        )
        return data

    @model_validator(mode="after")
    def _valid_recovery(self) -> RecoveringStage:
        config = self.recovery_config()
        if self.always_trains and not config.train:
            raise validation_error(
                [(("recovery", "train"), False, f"{self.type} works while it trains: needs true")]
            )
        return self

    def default_train(self) -> bool:
        """Whether the stage trains when ``recovery.train`` is not given."""
        return True

    def recovery_config(self) -> RecoveryConfig:
        """The resolved ``recovery:`` settings."""
        config: RecoveryConfig = build_config(self.recovery, RecoveryConfig, "recovery")
        if config.train is None:
            config.train = self.default_train()
        return config

    def needs_teacher(self) -> bool:
        return self.recovery_config().distillation is not None

    def recovery_loss_terms(self) -> list[LossTerm]:
        """The distillation terms, or the task loss alone."""
        distillation = self.recovery_config().distillation
        return distillation_terms(distillation, []) if distillation else [TaskLoss()]

    def recovery_context(self, ctx: StageContext) -> StageContext:
        """``ctx`` with the recovery's ``training`` over the stage's, key by key."""
        return replace(ctx, training=ctx.training | self.recovery_config().training)

    def recovery_trainer(
        self, model: Model, ctx: StageContext, loss_terms: list[LossTerm] | None = None, **kwargs: Any
    ) -> Trainer:
        """A CompressionTrainer on ``model`` with the recovery's loss, teacher and training settings;
        ``kwargs`` go to ``build_trainer`` (callbacks, param_groups)."""
        config = self.recovery_config()
        distillation = config.distillation
        return build_trainer(
            self.recovery_context(ctx),
            self,
            model,
            trainer_class=CompressionTrainer,
            loss_terms=loss_terms if loss_terms is not None else self.recovery_loss_terms(),
            teacher=ctx.teacher if distillation else None,
            teacher_dtype=distillation.teacher_dtype if distillation else "float32",
            augment=distillation.augment if distillation else None,
            **kwargs,
        )

    def recover(self, model: Model, ctx: StageContext, **kwargs: Any) -> dict[str, Any]:
        """Train ``model`` in place; returns the training facts and the recovery settings."""
        trainer = self.recovery_trainer(model, ctx, **kwargs)
        return train_facts(trainer, run_training(trainer, ctx)) | {
            "recovery": self.recovery_config().as_dict()
        }

    def recovered(self, model: Model, ctx: StageContext, info: dict[str, Any]) -> StageOutput:
        """The stage's output: ``model`` evaluated, then (when the stage trains) recovered and evaluated again."""
        info["metrics_before_recovery"] = metrics = evaluate(model, ctx)
        if self.recovery_config().train:
            info |= self.recover(model, ctx)
            metrics = evaluate(model, ctx)
        return StageOutput(model=model, metrics=metrics, info=info)
