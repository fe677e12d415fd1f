"""The `movement` stage: movement pruning (Sanh et al. 2020) or its magnitude baseline, while fine-tuning."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from nlpcompress.finalize import finalize
from nlpcompress.measure import sparsity
from nlpcompress.movement import MovementCallback, MovementConfig, ScoreL1, attach_score_masks, freeze_masks
from nlpcompress.parametrize import clone
from nlpcompress.schema import config_keys
from nlpcompress.stages.recovery import RecoveringStage
from nlpcompress.stages.registry import Model, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import evaluate
from nlpcompress.structure import describe
from nlpcompress.trainer import ParamGroup


@register_stage
class MovementStage(config_keys(MovementConfig), RecoveringStage):
    """Movement pruning (Sanh et al. 2020): learn which weights, blocks, heads or FFN neurons to drop while fine-tuning."""

    type: Literal["movement"]
    config_class: ClassVar[type] = MovementConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"transforms"})
    prepares: ClassVar[tuple[str, ...]] = ("densify",)
    produces_states: ClassVar[frozenset[str]] = frozenset({"transforms"})
    always_trains: ClassVar[bool] = True

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: MovementConfig = self.config()
        attach_score_masks(model, config)
        callback = MovementCallback(config)
        regulariser = (
            [ScoreL1(config.lambda_l1, config.threshold)] if config.method == "soft_movement" else []
        )
        info = self.recover(
            model,
            ctx,
            loss_terms=self.recovery_loss_terms() + regulariser,
            callbacks=[callback],
            param_groups=(
                [ParamGroup("scores", r"\.scores$", config.scores_learning_rate, weight_decay=0.0)]
                if config.uses_scores
                else []
            ),
        )
        freeze_masks(model)
        info |= {
            "movement": config.as_dict(),
            "encoder_sparsity": round(sparsity(model), 4),
            "after_finalize": _after_finalize(model),
            **({"warnings": callback.warnings} if callback.warnings else {}),
        }
        return StageOutput(model=model, metrics=evaluate(model, ctx), info=info)


def _after_finalize(model: Model) -> dict[str, Any]:
    """Heads and FFN widths per depth once masked-out units are removed (what the saved model will have)."""
    structure = describe(_finalized_copy(model))
    return {key: structure[key] for key in ("heads_per_depth", "ffn_width_per_depth", "encoder_sparsity")}


def _finalized_copy(model: Model) -> Model:
    twin = clone(model)
    finalize(twin)
    return twin
