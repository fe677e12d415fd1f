"""Low-rank factorization of a trained compact model: the word embeddings (ALBERT's factorized embedding
parameterization, Lan et al. 2020 §3.1) and any encoder linear, initialised by truncated SVD so that each
product is the best rank-r approximation of the trained matrix (Eckart–Young).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from nlpcompress.compact.modeling_compact_bert import LowRankLinear
from nlpcompress.errors import UserError

_LINEARS = (("attention", ("query", "key", "value", "output")), ("ffn", ("intermediate", "output")))


@dataclass(frozen=True)
class Factors:
    """``left @ right`` ≈ the matrix; ``residual`` is ‖matrix − left @ right‖_F / ‖matrix‖_F."""

    left: torch.Tensor  # rows × rank
    right: torch.Tensor  # rank × columns
    residual: float


@torch.no_grad()
def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(matrix.detach().double())


def rank_for_energy(values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose singular values keep ``energy`` of Σ s² (the squared Frobenius norm)."""
    kept = torch.cumsum(values.double() ** 2, 0) / (values.double() ** 2).sum()
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype) - 1e-12).item()) + 1


@torch.no_grad()
def truncated_svd(matrix: torch.Tensor, rank: int) -> Factors:
    """The best rank-``rank`` approximation as two factors, each carrying √s (balanced scales)."""
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    left, right = u[:, :rank] * root, root[:, None] * vh[:rank]
    total = s.pow(2).sum()
    residual = float((s[rank:].pow(2).sum() / total).sqrt()) if total > 0 else 0.0
    return Factors(left.to(matrix.dtype), right.to(matrix.dtype), residual)


def saves_parameters(rows: int, columns: int, rank: int) -> bool:
    """Two factors of this rank hold fewer numbers than the matrix."""
    return rank * (rows + columns) < rows * columns


@torch.no_grad()
def factorize_word_embeddings(model: nn.Module, rank: int) -> float:
    """Replace the vocab × H word embeddings by vocab × rank and a rank × H projection; returns the residual."""
    embeddings = model.base_model.embeddings
    if embeddings.word_projection is not None or model.config.embedding_size is not None:
        raise UserError("the word embeddings are already factorized; factorize them once")
    table = embeddings.word_embeddings
    if not 0 < rank < table.embedding_dim:
        raise UserError(f"embeddings rank {rank}: give a whole number in [1, {table.embedding_dim - 1}]")
    factors = truncated_svd(table.weight, rank)
    device = table.weight.device
    words = nn.Embedding(table.num_embeddings, rank, padding_idx=table.padding_idx, device=device)
    words.weight.copy_(factors.left)
    projection = nn.Linear(rank, table.embedding_dim, bias=False, device=device)
    projection.weight.copy_(factors.right.T)
    embeddings.word_embeddings, embeddings.word_projection = words, projection
    model.config.word_embedding_rank = rank
    return factors.residual


def encoder_linears(model: nn.Module, include: str = ".*") -> dict[str, tuple[nn.Module, str]]:
    """``{config name: (block, attribute)}`` of the unique layers' dense encoder linears matching ``include``."""
    regex = re.compile(include)
    found = {}
    for index, layer in enumerate(model.base_model.encoder.layers):
        for block_name, names in _LINEARS:
            block = getattr(layer, block_name)
            for name in names if block is not None else ():  # a borrowed block is its owner's
                key = f"layers.{index}.{block_name}.{name}"
                if isinstance(getattr(block, name), nn.Linear) and regex.fullmatch(key):
                    found[key] = (block, name)
    return found


@torch.no_grad()
def factorize_linear(linear: nn.Linear, rank: int) -> tuple[LowRankLinear, float]:
    """A LowRankLinear whose product is the best rank-``rank`` approximation of ``linear.weight``."""
    factors = truncated_svd(linear.weight, rank)
    low = LowRankLinear(linear.in_features, linear.out_features, rank).to(linear.weight.device)
    low.down.weight.copy_(factors.right)
    low.up.weight.copy_(factors.left)
    low.up.bias.copy_(linear.bias)
    low.train(linear.training)
    return low, factors.residual


def factorize_linears(
    model: nn.Module, rank: int | None = None, energy: float | None = None, include: str = ".*"
) -> dict[str, dict[str, float]]:
    """Replace each matching encoder linear by two factors of ``rank`` (or of the rank keeping ``energy``),
    when that holds fewer parameters; returns ``{name: {"rank", "residual"}}`` of those replaced. A
    ``rank`` at or above a matched matrix's smaller side is refused (it cannot compress anything)."""
    chosen_ranks = {}
    for name, (block, attribute) in encoder_linears(model, include).items():
        weight = getattr(block, attribute).weight
        if weight.numel() == 0:
            continue
        if rank is not None and rank >= min(weight.shape):
            raise UserError(
                f"linears_rank {rank}: {name} is {weight.shape[0]}×{weight.shape[1]}; "
                f"give a rank below {min(weight.shape)} (or narrow include)"
            )
        chosen_ranks[name] = rank if rank is not None else rank_for_energy(singular_values(weight), energy)
    report = {}
    for name, chosen in chosen_ranks.items():
        block, attribute = encoder_linears(model, re.escape(name))[name]
        linear = getattr(block, attribute)
        if not saves_parameters(linear.out_features, linear.in_features, chosen):
            continue
        low, residual = factorize_linear(linear, chosen)
        setattr(block, attribute, low)
        model.config.low_rank[name] = chosen
        report[name] = {"rank": chosen, "residual": round(residual, 6)}
    return report
