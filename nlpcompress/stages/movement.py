"""The `movement` stage: movement pruning (Sanh et al. 2020) or its magnitude baseline, while fine-tuning."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from nlpcompress.distill import distillation_terms
from nlpcompress.errors import ConfigError, UserError
from nlpcompress.finalize import finalize
from nlpcompress.loss_terms import LossTerm, TaskLoss
from nlpcompress.measure import sparsity
from nlpcompress.movement import MovementCallback, MovementConfig, ScoreL1, attach_score_masks, freeze_masks
from nlpcompress.parametrize import clone
from nlpcompress.schema import config_keys
from nlpcompress.stages.registry import Model, Stage, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import build_trainer, evaluate, run_training, train_facts
from nlpcompress.structure import describe
from nlpcompress.trainer import CompressionTrainer, ParamGroup


@register_stage
class MovementStage(config_keys(MovementConfig), Stage):
    """Movement pruning (Sanh et al. 2020): learn which weights, blocks, heads or FFN neurons to drop while fine-tuning."""

    type: Literal["movement"]
    config_class: ClassVar[type] = MovementConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"transforms"})
    prepares: ClassVar[tuple[str, ...]] = ("densify",)
    produces_states: ClassVar[frozenset[str]] = frozenset({"transforms"})

    def needs_teacher(self) -> bool:
        return self.distillation is not None

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: MovementConfig = self.config()
        try:
            attach_score_masks(model, config)
        except ConfigError as err:
            raise UserError(f"stage {self.name!r}: {err}") from None
        callback = MovementCallback(config)
        trainer = build_trainer(
            ctx,
            self,
            model,
            trainer_class=CompressionTrainer,
            callbacks=[callback],
            loss_terms=self.loss_terms(config),
            teacher=ctx.teacher if config.distillation is not None else None,
            teacher_dtype=config.distillation.teacher_dtype if config.distillation is not None else "float32",
            param_groups=(
                [ParamGroup("scores", r"\.scores$", config.scores_learning_rate, weight_decay=0.0)]
                if config.uses_scores
                else []
            ),
        )
        result = run_training(trainer, ctx)
        freeze_masks(model)
        return StageOutput(
            model=model,
            metrics=evaluate(model, ctx),
            info={
                **train_facts(trainer, result),
                "movement": config.as_dict(),
                "encoder_sparsity": round(sparsity(model), 4),
                "after_finalize": _after_finalize(model),
                **({"warnings": callback.warnings} if callback.warnings else {}),
            },
        )

    @staticmethod
    def loss_terms(config: MovementConfig) -> list[LossTerm]:
        """The task loss (or the distillation terms), plus soft movement's regulariser."""
        terms = (
            distillation_terms(config.distillation, []) if config.distillation is not None else [TaskLoss()]
        )
        if config.method == "soft_movement":
            terms.append(ScoreL1(config.lambda_l1, config.threshold))
        return terms


def _after_finalize(model: Model) -> dict[str, Any]:
    """Heads and FFN widths per depth once masked-out units are removed (what the saved model will have)."""
    structure = describe(_finalized_copy(model))
    return {key: structure[key] for key in ("heads_per_depth", "ffn_width_per_depth", "encoder_sparsity")}


def _finalized_copy(model: Model) -> Model:
    twin = clone(model)
    finalize(twin)
    return twin
