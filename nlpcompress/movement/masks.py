"""Score masks on the compact model's encoder linears: W' = W ⊙ expand(binarize(S)) (Sanh et al. 2020, Eq. 3).

A score covers one weight, one block of weights, or one unit: a head (its Q, K and V rows and the
output projection's columns) or an FFN neuron (its intermediate row and output column). A unit's
score tensor is shared by the linears it spans, so the straight-through gradient sums their
movement. Movement scores are parameters; magnitude scores are buffers the callback refreshes from
|W|. Each score tensor is registered once (on the first transform that uses it) and referenced by
the others, so checkpoints hold it once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from nlpcompress.errors import ConfigError
from nlpcompress.movement.binarizers import ThresholdBinarizer
from nlpcompress.movement.config import MovementConfig
from nlpcompress.parametrize import Mask, WeightTransform, attach, detach, stored_weight, transforms_of
from nlpcompress.surgery import ENCODER_LINEARS


@dataclass(frozen=True)
class Expansion:
    """How a score tensor covers a weight: ``weight`` (one each), ``block`` (rows × cols tiles),
    ``rows`` (groups of ``rows`` output rows) or ``columns`` (groups of ``cols`` input columns)."""

    kind: str
    rows: int = 1
    cols: int = 1

    def score_shape(self, weight_shape: torch.Size, name: str) -> tuple[int, ...]:
        out_features, in_features = weight_shape
        if self.kind == "weight":
            return (out_features, in_features)
        if self.kind == "rows":
            return (out_features // self.rows,)
        if self.kind == "columns":
            return (in_features // self.cols,)
        if out_features % self.rows or in_features % self.cols:
            raise ConfigError(
                "block_shape",
                [self.rows, self.cols],
                f"does not divide the {out_features}×{in_features} weight of {name}",
            )
        return (out_features // self.rows, in_features // self.cols)

    def expand(self, small: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        """The score-sized mask as a weight-sized one."""
        if self.kind == "weight":
            return small
        if self.kind == "block":
            return small.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1)
        if self.kind == "rows":
            return small.repeat_interleave(self.rows)[:, None].expand(weight_shape)
        return small.repeat_interleave(self.cols)[None, :].expand(weight_shape)

    @property
    def pool(self) -> str:
        """Scores in one pool are comparable (a global TopK ranks them together)."""
        return {"weight": "weights", "block": "blocks", "rows": "units", "columns": "units"}[self.kind]


class ScoreMask(WeightTransform):
    """W ⊙ expand(M(S)), M = 1 where S ≥ ``threshold`` (TopK: the k-th largest score of this tensor or of
    its pool) or, for soft movement, where sigmoid(S) > ``threshold``. The callback sets ``threshold``
    every optimizer step; before it does, every weight is kept."""

    def __init__(self, scores: torch.Tensor, expansion: Expansion, soft: bool, owner: bool, unit: str | None):
        super().__init__()
        self.expansion = expansion
        self.soft = soft
        self.unit = unit  # "heads"/"neurons" when the scores cover units
        self.threshold: float | torch.Tensor = 0.0 if soft else -torch.inf
        self.owner = owner
        if owner and isinstance(scores, nn.Parameter):
            self.scores = scores
        elif owner:
            self.register_buffer("scores", scores)
        else:
            self._shared = [scores]  # a plain list: referenced, not registered twice

    @property
    def score_tensor(self) -> torch.Tensor:
        return self.scores if self.owner else self._shared[0]

    def small_mask(self) -> torch.Tensor:
        return ThresholdBinarizer.apply(self.score_tensor, self.threshold, self.soft)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.expansion.expand(self.small_mask(), weight.shape).to(weight.dtype)


def _new_scores(shape: tuple[int, ...], learned: bool, device: torch.device) -> torch.Tensor:
    """Scores start at 0 (the authors' constant init): every weight kept until they move."""
    scores = torch.zeros(shape, device=device)
    return nn.Parameter(scores) if learned else scores


def attach_score_masks(model: nn.Module, config: MovementConfig) -> list[ScoreMask]:
    """Attach a ScoreMask to every encoder linear of every unique layer, as ``config`` says."""
    soft, learned = config.method == "soft_movement", config.uses_scores
    rows, cols = config.block_shape or (1, 1)
    head = model.config.attention_head_size
    attached = []
    for index, layer in enumerate(model.base_model.encoder.layers):
        for block_name, names, granularity in (
            ("attention", ENCODER_LINEARS["attention"], config.attention),
            ("ffn", ENCODER_LINEARS["ffn"], config.ffn),
        ):
            block = getattr(layer, block_name)
            prefix = f"layers.{index}.{block_name}"
            if granularity in ("head", "neuron"):
                size = head if granularity == "head" else 1
                unit = "heads" if granularity == "head" else "neurons"
                consumer = block.output
                scores = _new_scores((consumer.in_features // size,), learned, consumer.weight.device)
                plan = [(name, Expansion("rows", rows=size)) for name in names if name != "output"]
                plan.insert(0, ("output", Expansion("columns", cols=size)))
                for position, (name, expansion) in enumerate(plan):
                    transform = ScoreMask(scores, expansion, soft, owner=position == 0, unit=unit)
                    attached += _attach_one(model, f"{prefix}.{name}", transform)
                continue
            for name in names:
                linear = getattr(block, name)
                expansion = Expansion("block", rows, cols) if granularity == "block" else Expansion("weight")
                shape = expansion.score_shape(linear.weight.shape, f"{prefix}.{name}")
                scores = _new_scores(shape, learned, linear.weight.device)
                attached += _attach_one(
                    model, f"{prefix}.{name}", ScoreMask(scores, expansion, soft, True, None)
                )
    return attached


def _attach_one(model: nn.Module, path: str, transform: ScoreMask) -> list[ScoreMask]:
    pattern = r"(.*\.)?encoder\." + path.replace(".", r"\.")
    return list(attach(model, pattern, lambda name, linear: transform).values())


def score_masks(model: nn.Module) -> list[ScoreMask]:
    """Every ScoreMask on the model, shared score tensors included once per transform."""
    return [t for module in model.modules() for t in transforms_of(module) if isinstance(t, ScoreMask)]


def owned_scores(model: nn.Module) -> Iterator[ScoreMask]:
    """One transform per distinct score tensor (its owner)."""
    return (mask for mask in score_masks(model) if mask.owner)


@torch.no_grad()
def refresh_magnitude_scores(model: nn.Module) -> None:
    """Magnitude scores = Σ |W| over what each score covers (a weight, a block, a unit across its linears)."""
    owners: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for mask in transforms_of(module):
            if not isinstance(mask, ScoreMask):
                continue
            magnitude = stored_weight(module).abs()
            expansion = mask.expansion
            if expansion.kind == "weight":
                covered = magnitude
            elif expansion.kind == "block":
                out_features, in_features = magnitude.shape
                covered = magnitude.reshape(
                    out_features // expansion.rows,
                    expansion.rows,
                    in_features // expansion.cols,
                    expansion.cols,
                ).sum((1, 3))
            elif expansion.kind == "rows":
                covered = magnitude.sum(1).reshape(-1, expansion.rows).sum(1)
            else:
                covered = magnitude.sum(0).reshape(-1, expansion.cols).sum(1)
            scores = mask.score_tensor
            if id(scores) not in owners:
                owners[id(scores)] = scores
                scores.zero_()
            scores += covered


@torch.no_grad()
def freeze_masks(model: nn.Module) -> int:
    """Replace every ScoreMask by a fixed Mask of its current binary mask (the scores go); returns how many."""
    fixed = []
    for module in model.modules():
        for mask in transforms_of(module):
            if isinstance(mask, ScoreMask):
                weight = stored_weight(module)
                fixed.append(
                    (module, mask.expansion.expand(mask.small_mask(), weight.shape).to(weight.dtype))
                )
    detach(model, keep=lambda t: not isinstance(t, ScoreMask))
    for module, mask in fixed:
        torch.nn.utils.parametrize.register_parametrization(module, "weight", Mask(mask))
    return len(fixed)
