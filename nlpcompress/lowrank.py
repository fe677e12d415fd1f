"""Low-rank factorization of a trained compact model: the word embeddings (ALBERT's factorized embedding
parameterization, Lan et al. 2020 §3.1) and any encoder linear, initialised by truncated SVD so that each
product is the best rank-r approximation of the trained matrix (Eckart–Young).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from nlpcompress.compact.storage import LowRankLinear, set_linear
from nlpcompress.surgery import encoder_linears


@dataclass(frozen=True)
class Factors:
    """``left @ right`` ≈ the matrix; ``residual`` is ‖matrix − left @ right‖_F / ‖matrix‖_F."""

    left: torch.Tensor  # rows × rank
    right: torch.Tensor  # rank × columns
    residual: float

    @property
    def rank(self) -> int:
        return self.left.shape[1]


def rank_for_energy(values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose singular values keep ``energy`` of Σ s² (the squared Frobenius norm)."""
    kept = torch.cumsum(values.double() ** 2, 0) / (values.double() ** 2).sum()
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype) - 1e-12).item()) + 1


@torch.no_grad()
def truncated_svd(matrix: torch.Tensor, rank: int | None = None, energy: float | None = None) -> Factors:
    """The best approximation of rank ``rank`` (or of the smallest rank keeping ``energy``) as two factors,
    each carrying √s (balanced scales); one SVD either way."""
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    rank = rank if rank is not None else rank_for_energy(s, energy)
    root = s[:rank].sqrt()
    left, right = u[:, :rank] * root, root[:, None] * vh[:rank]
    total = s.pow(2).sum()
    residual = float((s[rank:].pow(2).sum() / total).sqrt()) if total > 0 else 0.0
    return Factors(left.to(matrix.dtype), right.to(matrix.dtype), residual)


def saves_parameters(rows: int, columns: int, rank: int) -> bool:
    """Two factors of this rank hold fewer numbers than the matrix."""
    return rank * (rows + columns) < rows * columns


@torch.no_grad()
def factorize_word_embeddings(
    model: nn.Module, rank: int | None = None, energy: float | None = None
) -> float:
    """Replace the vocab × H word embeddings by vocab × r and an r × H projection, r = ``rank`` or the rank
    keeping ``energy`` (recorded as ``config.word_embedding_rank``); returns the residual."""
    embeddings = model.base_model.embeddings
    if embeddings.word_projection is not None or model.config.embedding_size is not None:
        raise ValueError("the word embeddings are already factorized; factorize them once")
    table = embeddings.word_embeddings
    if rank is not None and not 0 < rank < table.embedding_dim:
        raise ValueError(f"embeddings rank {rank}: give a whole number in [1, {table.embedding_dim - 1}]")
    factors = truncated_svd(table.weight, rank, energy)
    device = table.weight.device
    words = nn.Embedding(table.num_embeddings, factors.rank, padding_idx=table.padding_idx, device=device)
    words.weight.copy_(factors.left)
    projection = nn.Linear(factors.rank, table.embedding_dim, bias=False, device=device)
    projection.weight.copy_(factors.right.T)
    embeddings.word_embeddings, embeddings.word_projection = words, projection
    model.config.word_embedding_rank = factors.rank
    return factors.residual


def low_rank_linear(linear: nn.Linear, factors: Factors) -> LowRankLinear:
    """A LowRankLinear holding ``factors`` of ``linear.weight``, with its bias."""
    low = LowRankLinear(linear.in_features, linear.out_features, factors.rank).to(linear.weight.device)
    with torch.no_grad():
        low.down.weight.copy_(factors.right)
        low.up.weight.copy_(factors.left)
        low.up.bias.copy_(linear.bias)
    return low.train(linear.training)


def factorize_linear(linear: nn.Linear, rank: int) -> tuple[LowRankLinear, float]:
    """A LowRankLinear whose product is the best rank-``rank`` approximation of ``linear.weight``."""
    factors = truncated_svd(linear.weight, rank)
    return low_rank_linear(linear, factors), factors.residual


def factorize_linears(
    model: nn.Module, rank: int | None = None, energy: float | None = None, include: str = ".*"
) -> dict[str, dict[str, float]]:
    """Replace each dense encoder linear whose name fully matches ``include`` by two factors of ``rank`` (or
    of the rank keeping ``energy``), when that holds fewer parameters; returns ``{name: {"rank",
    "residual"}}`` of those replaced. A ``rank`` at or above a matched matrix's smaller side is refused
    (it cannot compress anything) before anything changes."""
    regex = re.compile(include)
    matched = [
        (name, block, attribute)
        for name, block, attribute in encoder_linears(model)
        if isinstance(getattr(block, attribute), nn.Linear)
        and getattr(block, attribute).weight.numel()
        and regex.fullmatch(name)
    ]
    for name, block, attribute in matched:
        shape = getattr(block, attribute).weight.shape
        if rank is not None and rank >= min(shape):
            raise ValueError(
                f"linears_rank {rank}: {name} is {shape[0]}×{shape[1]}; "
                f"give a rank below {min(shape)} (or narrow include)"
            )
    report = {}
    for name, block, attribute in matched:
        linear = getattr(block, attribute)
        factors = truncated_svd(linear.weight, rank, energy)
        if not saves_parameters(linear.out_features, linear.in_features, factors.rank):
            continue
        set_linear(model, name, block, attribute, low_rank_linear(linear, factors))
        report[name] = {"rank": factors.rank, "residual": round(factors.residual, 6)}
    return report
