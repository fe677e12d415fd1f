"""The `nm_sparsity` stage: N:M semi-structured sparsity (2:4 by default), then recovery."""

from __future__ import annotations

from dataclasses import asdict
from typing import ClassVar, Literal

from pydantic import model_validator

from nlpcompress.errors import UserError
from nlpcompress.measure import sparsity
from nlpcompress.nm import NMConfig, attach_nm, freeze_scores
from nlpcompress.schema import config_keys, validation_error
from nlpcompress.stages.recovery import RecoveringStage
from nlpcompress.stages.registry import Model, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import evaluate
from nlpcompress.trainer import ParamGroup


@register_stage
class NMSparsityStage(config_keys(NMConfig), RecoveringStage):
    """N:M sparsity: keep n of every m consecutive input weights by magnitude or movement scores, then recover."""

    type: Literal["nm_sparsity"]
    config_class: ClassVar[type] = NMConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"transforms", "factorized", "shared"})
    prepares: ClassVar[tuple[str, ...]] = ("densify",)
    produces_states: ClassVar[frozenset[str]] = frozenset({"transforms"})

    @model_validator(mode="after")
    def _movement_scores_train(self) -> NMSparsityStage:
        if self.score == "movement" and not self.recovery_config().train:
            raise validation_error(
                [(("recovery", "train"), False, "movement scores are learned while recovering: needs true")]
            )
        return self

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: NMConfig = self.config()
        masked = attach_nm(model, config.n, config.m, config.score, config.include)
        if not masked:
            raise UserError(
                f"stage {self.name!r}: no dense encoder linear matches include {config.include!r} "
                f"with inputs that split into groups of m = {config.m}"
            )
        info: dict[str, object] = {"nm_sparsity": asdict(config), "masked_linears": masked}
        info["metrics_before_recovery"] = evaluate(model, ctx)
        if self.recovery_config().train:
            scores = [ParamGroup("nm_scores", r"\.nm_scores$", config.scores_learning_rate, weight_decay=0.0)]
            info |= self.recover(model, ctx, param_groups=scores if config.score == "movement" else [])
        freeze_scores(model)
        info["encoder_sparsity"] = round(sparsity(model), 4)
        return StageOutput(model=model, metrics=evaluate(model, ctx), info=info)
