"""ALBERT's embedding layout from a trained BERT-family model, and the export of an ALBERT-shaped compact
model to a plain ``AlbertForSequenceClassification``.

ALBERT (Lan et al. 2020, §3.1) keeps word, position and token-type embeddings at width E, normalises at
E and projects E → H. A trained BERT adds them at H and normalises at H. ``albert_layout_embeddings``
finds the rank-E subspace B (E × H, orthonormal rows) that best holds the three tables with their
rows centred (LayerNorm_H only sees the centred sum; the truncated SVD of the stacked centred tables),
stores each centred table as its coordinates z in B, and sets the projection so that LayerNorm_E
followed by it approximates LayerNorm_H of the trained sum: with x − mean(x) ≈ z·B and |z| ≈ |x − mean(x)|,
std_H ≈ |z|/√H and std_E ≈ |z|/√E, so LN_H(x) ≈ LN_E(z)·√(H/E)·B·diag(γ_H) + β_H. B holds the top E − 1
directions and one empty coordinate, rotated so that the all-ones direction of z is that empty one:
LayerNorm_E's own centring then removes nothing. Exact up to the dropped directions (the residual);
recovery training closes the rest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlpcompress.compact.convert import to_hf
from nlpcompress.parametrize import clone


@torch.no_grad()
def albert_layout_embeddings(model: nn.Module, rank: int) -> float:
    """Word, position and token-type embeddings at width ``rank`` with LayerNorm at ``rank`` and a
    ``rank`` → H projection (``config.embedding_size``); returns the centred tables' SVD residual."""
    config = model.config
    embeddings = model.base_model.embeddings
    if config.embedding_size is not None or config.word_embedding_rank is not None:
        raise ValueError("the word embeddings are already factorized; factorize them once")
    hidden = config.hidden_size
    if not 1 < rank < hidden:
        raise ValueError(f"embeddings rank {rank}: give a whole number in [2, {hidden - 1}]")
    names = [name for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
             if getattr(embeddings, name) is not None]  # fmt: skip
    centred = {name: _centred(getattr(embeddings, name).weight) for name in names}
    _, values, vh = torch.linalg.svd(torch.cat(list(centred.values())), full_matrices=False)
    residual = float((values[rank - 1 :].pow(2).sum() / values.pow(2).sum()).sqrt())
    content = torch.cat([vh[: rank - 1], vh.new_zeros(1, hidden)])  # the last coordinate stays 0
    basis = _mean_on_last(rank, vh.dtype, vh.device) @ content  # rows ⊥ 1; z·basis = the projection
    for name in names:
        table = getattr(embeddings, name)
        reduced = nn.Embedding(table.num_embeddings, rank, padding_idx=table.padding_idx)
        reduced.weight.copy_(centred[name] @ basis.T)
        setattr(embeddings, name, reduced.to(table.weight.device, table.weight.dtype))
    norm = embeddings.layer_norm
    projection = nn.Linear(rank, hidden)
    projection.weight.copy_((math.sqrt(hidden / rank) * basis * norm.weight.double()).T)
    projection.bias.copy_(norm.bias)
    embeddings.projection = projection.to(norm.weight.device, norm.weight.dtype)
    embeddings.layer_norm = nn.LayerNorm(rank, eps=config.layer_norm_eps).to(norm.weight.device)
    config.embedding_size = rank
    return residual


def _centred(weight: torch.Tensor) -> torch.Tensor:
    """Rows minus their mean over the hidden units: what LayerNorm_H sees of each table (sums stay sums)."""
    weight = weight.detach().double()
    return weight - weight.mean(dim=1, keepdim=True)


def _mean_on_last(rank: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An orthogonal rank × rank reflection taking the last coordinate onto the all-ones direction."""
    ones = torch.full((rank,), rank**-0.5, dtype=dtype, device=device)
    last = torch.zeros(rank, dtype=dtype, device=device)
    last[-1] = 1.0
    v = last - ones
    return torch.eye(rank, dtype=dtype, device=device) - 2 * torch.outer(v, v) / v.dot(v)


def to_albert(model: nn.Module) -> nn.Module:
    """The model as a plain ``AlbertForSequenceClassification`` (ValueError unless it is exactly ALBERT's
    structure: factorized embeddings at E, layers shared in ALBERT's grouping, uniform heads and widths)."""
    config = model.config
    if config.embedding_size is None:
        raise ValueError(
            "no exact AlbertForSequenceClassification equivalent: the embeddings are not at width E"
        )
    twin = clone(model)
    twin.config.source_family = "albert"
    return to_hf(twin)


@torch.no_grad()
def export_albert(
    model: nn.Module, tokenizer, folder: Path, inputs: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Save the model as plain ALBERT into ``folder`` and check that transformers alone reloads it to the
    same logits on ``inputs``; what results.json records (or why there is no ALBERT equivalent)."""
    from transformers import AutoModelForSequenceClassification

    try:
        albert = to_albert(model)
    except ValueError as err:
        return {"exported": False, "reason": str(err)}
    albert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    difference = float((reloaded(**inputs).logits - model.eval()(**inputs).logits).abs().max())
    if difference > 1e-4:
        raise RuntimeError(
            f"the ALBERT export's logits differ from the model's by {difference:.2e}; not saved"
        )
    return {
        "exported": True,
        "folder": folder.name,
        "class": type(albert).__name__,
        "max_abs_diff": difference,
    }
