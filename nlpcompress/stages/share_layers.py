"""The `share_layers` stage: cross-layer parameter sharing of a trained model (ALBERT §3.1), then recovery."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

from nlpcompress.errors import ConfigError
from nlpcompress.measure import count_parameters
from nlpcompress.schema import config_keys
from nlpcompress.sharing import INITS, PARTS, check_groups, consecutive_groups, share_layers
from nlpcompress.stages.recovery import RecoveringStage
from nlpcompress.stages.registry import Model, StageContext, StageOutput, register_stage


@dataclass
class SharingConfig:
    """Which depths share what, and how the shared weights start.

    ``groups``: runs of consecutive depths, e.g. ``[[0, 1, 2], [3, 4, 5]]``, or ``num_groups``: that many
    equal runs (1: every layer shared, as in ALBERT). ``share``: ``layer`` (the whole layer), ``attention``
    or ``ffn`` (that block only; ALBERT Table 4). ``init``: ``mean`` (the members' weights averaged)
    or ``member`` (the weights of the depth at position ``member`` in each group; −1 the last).
    The stage's ``recovery`` trains afterwards (distilling the run's teacher: the unshared model).
    """

    groups: list[list[int]] | None = None
    num_groups: int | None = None
    share: str = "layer"
    init: str = "mean"
    member: int = 0

    def __post_init__(self) -> None:
        if (self.groups is None) == (self.num_groups is None):
            raise ConfigError("groups", self.groups, "give groups or num_groups (one of them)")
        if self.groups is not None:
            check_groups(self.groups)
        if self.num_groups is not None and not (isinstance(self.num_groups, int) and self.num_groups >= 1):
            raise ConfigError("num_groups", self.num_groups, "must be a whole number >= 1")
        if self.share not in PARTS:
            raise ConfigError("share", self.share, f"allowed: {', '.join(PARTS)}")
        if self.init not in INITS:
            raise ConfigError("init", self.init, f"allowed: {', '.join(INITS)}")
        if self.init != "member" and self.member != 0:
            raise ConfigError("member", self.member, "applies to init: member only")


@register_stage
class ShareLayersStage(config_keys(SharingConfig), RecoveringStage):
    """Cross-layer parameter sharing (ALBERT §3.1): groups of consecutive depths use one layer, then recovery."""

    type: Literal["share_layers"]
    config_class: ClassVar[type] = SharingConfig
    accepts: ClassVar[frozenset[str]] = frozenset()
    prepares: ClassVar[tuple[str, ...]] = ("densify", "bake")
    produces_states: ClassVar[frozenset[str]] = frozenset({"shared"})

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: SharingConfig = self.config()
        before = count_parameters(model)
        groups = config.groups or consecutive_groups(model.config.num_hidden_layers, config.num_groups)
        shared = share_layers(model, groups, config.init, config.member, config.share)
        info = {
            "sharing": asdict(config) | {"groups": groups},
            "params_before": before,
            "params_after": count_parameters(shared),
        }
        return self.recovered(shared, ctx, info)
