"""Group-wise symmetric weight quantization (Q-BERT, Shen et al. 2020, §3.2 group-wise quantization).

A matrix is cut into groups of consecutive rows or columns (``GroupLayout``), each with its own range:
Q-BERT §3.2 gives every attention head its own range (the rows of its query, key and value
projections) and may split each head further. A weight becomes the signed code
``round(w / scale)`` clamped to ±(2**(bits-1) - 1), ``scale = range / (2**(bits-1) - 1)``.
``fake_quantize`` is quantization-aware training's forward: the dequantized weight, with a
straight-through estimator for the rounding. ``FakeQuantize`` attaches it to a linear as a
parametrization; ``codes_and_scales`` gives what ``QuantizedLinear`` stores.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from nlpcompress.compact.quantized import INPUT_QMAX, expand_scales, fake_quantize_input
from nlpcompress.parametrize import WeightTransform

CLIPS = ("minmax", "percentile")
_LINEAR_NAME = re.compile(r"layers\.\d+\.(?:attention\.(query|key|value|output)|ffn\.(intermediate|output))")


@dataclass(frozen=True)
class GroupLayout:
    """Groups of ``size`` consecutive indices along ``dim`` (0 = rows, 1 = columns) of an (out, in) matrix."""

    dim: int
    size: int

    def num_groups(self, shape: tuple[int, int]) -> int:
        """How many groups tile ``shape``; ValueError when they do not tile it."""
        if shape[self.dim] % self.size:
            raise ValueError(
                f"groups of {self.size} do not tile dimension {self.dim} of shape {tuple(shape)}"
            )
        return shape[self.dim] // self.size


def layout_for(name: str, shape: tuple[int, int], head_size: int, groups: str | int) -> GroupLayout:
    """The groups of the compact model's linear ``name`` (``layers.<i>.attention.<query|key|value|output>``
    or ``layers.<i>.ffn.<intermediate|output>``) with (out, in) ``shape``, Q-BERT §3.2.

    ``groups="matrix"``: one range for the whole matrix. ``"head"``: one per head (rows of query, key
    and value, columns of the attention output), one per row (output unit) in the FFN. An int ``k``:
    every head split into ``k`` groups of ``head_size // k``; the FFN keeps one group per row.
    ``"channel"``: one per row (output channel) of every matrix, the grid an int8 runtime's per-channel
    GEMM computes with (a column-wise group, as the attention output's per head, has no such equivalent).
    """
    match = _LINEAR_NAME.fullmatch(name)
    if match is None:
        raise ValueError(
            f"linear {name!r}: expected layers.<i>.attention.<query|key|value|output> or "
            "layers.<i>.ffn.<intermediate|output>"
        )
    if groups == "matrix":
        return GroupLayout(dim=0, size=max(shape[0], 1))
    if groups == "channel":
        return GroupLayout(dim=0, size=1)
    if groups == "head":
        per_head = 1
    elif isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1 and head_size % groups == 0:
        per_head = groups
    else:
        raise ValueError(
            f"groups {groups!r}: allowed are 'matrix', 'head', 'channel', or an int k >= 1 dividing the head "
            f"size {head_size}"
        )
    attention = match.group(1)
    if attention is None:
        return GroupLayout(dim=0, size=1)
    return GroupLayout(dim=1 if attention == "output" else 0, size=head_size // per_head)


def _qmax(bits: int) -> int:
    """The largest code, 2**(bits-1) - 1; symmetric codes need at least 2 bits (1 bit leaves only 0)."""
    if not 2 <= bits <= 8:
        raise ValueError(
            f"bits {bits}: symmetric quantization takes 2..8 bits (1 bit leaves only the code 0)"
        )
    return 2 ** (bits - 1) - 1


def _grouped(weight: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """``weight`` as (groups, elements per group), one row per group."""
    rows, cols = weight.shape
    groups = layout.num_groups((rows, cols))
    if layout.dim == 0:
        return weight.reshape(groups, layout.size * cols)
    return weight.reshape(rows, groups, layout.size).transpose(0, 1).reshape(groups, rows * layout.size)


def _check_clip(clip: str, percentile: float) -> None:
    if clip not in CLIPS:
        raise ValueError(f"clip {clip!r}; allowed: {', '.join(CLIPS)}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile}: must be in (0, 100]")


def _ranges(weight: torch.Tensor, layout: GroupLayout, clip: str, percentile: float) -> torch.Tensor:
    """Per group, in float32: the largest |w| (``minmax``) or the ``percentile`` of |w| (nearest rank)."""
    _check_clip(clip, percentile)
    magnitudes = _grouped(weight.detach().float().abs(), layout)
    if clip == "minmax":
        return magnitudes.amax(dim=1)
    count = magnitudes.shape[1]
    # Rounded before the ceiling, so that 90% of 100 is rank 90 (0.9 · 100 is 90.00000000000001).
    rank = min(max(math.ceil(round(percentile / 100 * count, 6)), 1), count)
    return magnitudes.kthvalue(rank, dim=1).values


def _scales_from_ranges(ranges: torch.Tensor, bits: int) -> torch.Tensor:
    return (ranges / _qmax(bits)).clamp_min(torch.finfo(ranges.dtype).tiny)


def symmetric_scales(
    weight: torch.Tensor, bits: int, layout: GroupLayout, clip: str = "minmax", percentile: float = 99.9
) -> torch.Tensor:
    """One float32 scale per group: its range / (2**(bits-1) - 1); the range is the group's largest |w|
    (``clip="minmax"``) or the ``percentile`` of its |w| (``"percentile"``). An all-zero group gets the
    smallest positive float, so dividing by its scale is safe."""
    return _scales_from_ranges(_ranges(weight, layout, clip, percentile), bits)


def quantize_codes(
    weight: torch.Tensor, scales: torch.Tensor, bits: int, layout: GroupLayout
) -> torch.Tensor:
    """The int8 codes ``round(w / scale)`` clamped to ±(2**(bits-1) - 1), ``scale`` that of w's group."""
    qmax = _qmax(bits)
    scale = expand_scales(scales, layout.dim, layout.size, tuple(weight.shape))
    return (weight.detach().float() / scale).round().clamp(-qmax, qmax).to(torch.int8)


class _RoundToGrid(torch.autograd.Function):
    """``round(w / scale)`` clamped to ±qmax, times ``scale``; straight-through gradient (Q-BERT §3.2 trains
    with the STE): passed unchanged where |w| ≤ ``limit`` (the clipping range), zero where clipped."""

    @staticmethod
    def forward(
        ctx, weight: torch.Tensor, scale: torch.Tensor, limit: torch.Tensor, qmax: int
    ) -> torch.Tensor:
        ctx.save_for_backward(weight.abs() <= limit)
        return ((weight / scale).round().clamp(-qmax, qmax) * scale).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


def fake_quantize(
    weight: torch.Tensor, bits: int, layout: GroupLayout, clip: str = "minmax", percentile: float = 99.9
) -> torch.Tensor:
    """``dequantize(quantize(w))`` with ranges taken from ``weight`` itself (no gradient through them) and
    the straight-through estimator: equal to ``codes · scales`` of ``quantize_codes``."""
    qmax = _qmax(bits)
    ranges = _ranges(weight, layout, clip, percentile)
    shape = tuple(weight.shape)
    scale = expand_scales(_scales_from_ranges(ranges, bits), layout.dim, layout.size, shape)
    limit = expand_scales(ranges, layout.dim, layout.size, shape)
    return _RoundToGrid.apply(weight, scale, limit, qmax)


class FakeQuantize(WeightTransform):
    """Quantization-aware training's weight: ``fake_quantize`` with ranges recomputed from the current
    weight at every forward (dynamic ranges). ``bits`` is a buffer, so checkpoints carry the bit width."""

    def __init__(self, bits: int, layout: GroupLayout, clip: str = "minmax", percentile: float = 99.9):
        super().__init__()
        _qmax(bits)
        _check_clip(clip, percentile)
        self.layout, self.clip, self.percentile = layout, clip, percentile
        self.register_buffer("bits", torch.tensor(bits))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, int(self.bits), self.layout, self.clip, self.percentile)

    def codes_and_scales(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The int8 codes and float32 per-group scales of ``weight`` (the stored one) for export."""
        bits = int(self.bits)
        scales = symmetric_scales(weight, bits, self.layout, self.clip, self.percentile)
        return quantize_codes(weight, scales, bits, self.layout), scales

    def extra_repr(self) -> str:
        return f"bits={int(self.bits)}, layout={self.layout}, clip={self.clip}, percentile={self.percentile}"


def input_grid(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point of the unsigned 8-bit grid covering [low, high], widened to hold 0 (zero
    padding and exact zeros stay exact): ``scale = (high − low) / 255``, ``zero_point = round(−low / scale)``."""
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    scale = ((high - low) / INPUT_QMAX).clamp_min(torch.finfo(torch.float32).tiny)
    return scale, torch.round(-low / scale).clamp(0, INPUT_QMAX)


class InputRange(nn.Module):
    """The range of a linear's input and the input fake-quantized to 8 bits on it (Q-BERT quantizes
    activations to 8 bits, §4): what an int8 runtime computes with, learned while training.

    ``calibrate()`` mode takes the smallest and largest value seen; in training the range follows each
    batch's min and max by an exponential moving average (``momentum``, the usual QAT observer); in
    evaluation it stays fixed. The range is a pair of buffers, so checkpoints carry it.
    """

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.calibrating = False
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def observe(self, hidden: torch.Tensor) -> None:
        """Widen (calibrating) or move (training) the range to take in ``hidden``'s min and max."""
        low, high = hidden.detach().min().float(), hidden.detach().max().float()
        if not bool(self.seen):
            self.low.copy_(low), self.high.copy_(high), self.seen.fill_(True)
        elif self.calibrating:
            self.low.copy_(torch.minimum(self.low, low)), self.high.copy_(torch.maximum(self.high, high))
        else:
            self.low.lerp_(low, self.momentum), self.high.lerp_(high, self.momentum)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current scale and zero point."""
        return input_grid(self.low, self.high)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.training or self.calibrating:
            self.observe(hidden)
        if not bool(self.seen):
            return hidden
        scale, zero_point = self.grid()
        return fake_quantize_input(hidden, scale.to(hidden.dtype), zero_point.to(hidden.dtype))

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"
