"""The `factorize` stage: low-rank word embeddings (ALBERT §3.1) and encoder linears by truncated SVD, then
recovery by fine-tuning or distillation from the run's teacher."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

from nlpcompress.albert import albert_layout_embeddings
from nlpcompress.errors import ConfigError
from nlpcompress.lowrank import factorize_linears, factorize_word_embeddings
from nlpcompress.measure import count_parameters
from nlpcompress.schema import config_keys
from nlpcompress.stages.recovery import RecoveringStage
from nlpcompress.stages.registry import Model, StageContext, StageOutput, register_stage


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _fraction(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


EMBEDDING_LAYOUTS = ("projection", "albert")


@dataclass
class FactorizeConfig:
    """What to factorize and how to recover.

    ``embeddings_rank`` (or ``embeddings_energy``: the smallest rank keeping that share of Σ s²) turns the
    vocab × H word embeddings into vocab × r and an r × H projection. ``linears_rank`` /
    ``linears_energy`` does the same to every encoder linear whose name
    (``layers.<i>.<attention|ffn>.<query|key|value|output|intermediate>``) fully matches ``include``,
    where the two factors hold fewer parameters than the matrix. ``embeddings_layout``: ``projection``
    (only the word table at rank r, projected to H before the trained position and token-type
    embeddings and LayerNorm) or ``albert`` (every table at width E = ``embeddings_rank``, LayerNorm at
    E, then E → H: ALBERT's layout, exportable to ALBERT; see ``nlpcompress.albert``). The stage's ``recovery``
    trains afterwards.
    """

    embeddings_rank: int | None = None
    embeddings_energy: float | None = None
    linears_rank: int | None = None
    linears_energy: float | None = None
    include: str = ".*"
    embeddings_layout: str = "projection"

    def __post_init__(self) -> None:
        for part in ("embeddings", "linears"):
            rank, energy = getattr(self, f"{part}_rank"), getattr(self, f"{part}_energy")
            if rank is not None and energy is not None:
                raise ConfigError(f"{part}_energy", energy, f"give {part}_rank or {part}_energy, not both")
            if rank is not None and not _whole(rank):
                raise ConfigError(f"{part}_rank", rank, "must be a whole number >= 1")
            if energy is not None and not _fraction(energy):
                raise ConfigError(f"{part}_energy", energy, "must be a share of the squared norm in (0, 1)")
        if all(
            getattr(self, key) is None
            for key in ("embeddings_rank", "embeddings_energy", "linears_rank", "linears_energy")
        ):
            raise ConfigError(
                "embeddings_rank",
                None,
                "nothing to factorize: give embeddings_rank/_energy or linears_rank/_energy",
            )
        if self.embeddings_layout not in EMBEDDING_LAYOUTS:
            raise ConfigError(
                "embeddings_layout", self.embeddings_layout, f"allowed: {', '.join(EMBEDDING_LAYOUTS)}"
            )
        if self.embeddings_layout == "albert" and self.embeddings_rank is None:
            raise ConfigError(
                "embeddings_layout", "albert", "needs embeddings_rank (the width E of every table)"
            )
        try:
            re.compile(self.include)
        except (re.error, TypeError) as err:
            raise ConfigError("include", self.include, f"not a regular expression ({err})") from None


@register_stage
class FactorizeStage(config_keys(FactorizeConfig), RecoveringStage):
    """Low-rank factorization by truncated SVD (word embeddings as in ALBERT §3.1, encoder linears), then recovery."""

    type: Literal["factorize"]
    config_class: ClassVar[type] = FactorizeConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"factorized", "shared"})
    prepares: ClassVar[tuple[str, ...]] = ("densify", "bake", "remove_dead_units")
    produces_states: ClassVar[frozenset[str]] = frozenset({"factorized"})

    def produces(self) -> frozenset[str]:
        """Factorized encoder linears only when it factorizes linears (embeddings are no model state)."""
        return self.produces_states if self.linears_rank or self.linears_energy else frozenset()

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: FactorizeConfig = self.config()
        before = count_parameters(model)
        info: dict[str, object] = {"factorize": asdict(config)}
        if config.embeddings_layout == "albert":
            residual = albert_layout_embeddings(model, config.embeddings_rank)
            info["embeddings"] = {
                "layout": "albert",
                "rank": config.embeddings_rank,
                "residual": round(residual, 6),
            }
        elif config.embeddings_rank or config.embeddings_energy:
            residual = factorize_word_embeddings(model, config.embeddings_rank, config.embeddings_energy)
            info["embeddings"] = {
                "layout": "projection",
                "rank": model.config.word_embedding_rank,
                "residual": round(residual, 6),
            }
        if config.linears_rank or config.linears_energy:
            info["linears"] = factorize_linears(
                model, config.linears_rank, config.linears_energy, config.include
            )
        info["params_before"], info["params_after"] = before, count_parameters(model)
        return self.recovered(model, ctx, info)
