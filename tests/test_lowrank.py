"""Low-rank factorization (nlpcompress.lowrank, the `factorize` stage): SVD optimality, exactness on low-rank
matrices, save/load with and without nlpcompress, training of both factors, bad input."""

import pytest
import torch
from _tiny import logits_without_nlpcompress, tiny_model
from transformers import AutoModelForSequenceClassification

import nlpcompress.stages.builtin  # noqa: F401  (registers the stages)
from nlpcompress.compact.storage import LowRankLinear
from nlpcompress.errors import ConfigError, UserError
from nlpcompress.lowrank import (
    factorize_linear,
    factorize_linears,
    factorize_word_embeddings,
    rank_for_energy,
    truncated_svd,
)
from nlpcompress.stages import parse_stage
from nlpcompress.stages.contracts import prepare
from nlpcompress.stages.factorize import FactorizeConfig

INPUTS = {"input_ids": torch.tensor([[1, 5, 9, 3, 0], [2, 7, 7, 4, 8]]), "attention_mask": torch.ones(2, 5)}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**INPUTS).logits


def make_low_rank(weight: torch.nn.Parameter, rank: int) -> None:
    """Overwrite ``weight`` with a matrix of exactly ``rank`` (so a rank-``rank`` factorization is exact)."""
    generator = torch.Generator().manual_seed(rank)
    rows, columns = weight.shape
    with torch.no_grad():
        weight.copy_(
            torch.randn(rows, rank, generator=generator) @ torch.randn(rank, columns, generator=generator) / 4
        )


def test_truncated_svd_reaches_the_eckart_young_optimum():
    matrix = torch.randn(40, 24, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(matrix.double())
    for rank in (1, 5, 23):
        factors = truncated_svd(matrix, rank)
        assert factors.left.shape == (40, rank) and factors.right.shape == (rank, 24)
        error = torch.linalg.norm(matrix.double() - (factors.left @ factors.right).double())
        optimum = s[rank:].pow(2).sum().sqrt()
        assert error.item() == pytest.approx(optimum.item(), rel=1e-4)
        assert factors.residual == pytest.approx((optimum / s.pow(2).sum().sqrt()).item(), rel=1e-4)
        random = (
            torch.randn(40, rank) @ torch.linalg.pinv(torch.randn(40, rank)) @ matrix
        )  # another rank-r matrix
        assert torch.linalg.norm(matrix - random) > error


def test_rank_for_energy_keeps_the_asked_share_of_the_squared_norm():
    values = torch.tensor([3.0, 2.0, 1.0])  # squares 9, 4, 1 of 14
    assert [rank_for_energy(values, e) for e in (0.5, 9 / 14, 0.65, 13 / 14, 0.93)] == [1, 1, 2, 2, 3]


def test_word_embeddings_of_low_rank_give_the_same_logits_and_fewer_parameters():
    model = tiny_model()
    make_low_rank(model.base_model.embeddings.word_embeddings.weight, 6)
    before, params = logits(model), sum(p.numel() for p in model.parameters())
    residual = factorize_word_embeddings(model, 6)
    assert residual < 1e-6
    assert model.base_model.embeddings.word_embeddings.weight.shape == (50, 6)
    assert model.config.word_embedding_rank == 6
    assert torch.allclose(logits(model), before, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == params - 50 * 32 + 50 * 6 + 6 * 32
    with pytest.raises(ValueError, match="already factorized"):
        factorize_word_embeddings(model, 4)


def test_factorized_linears_save_and_reload_with_and_without_nlpcompress(tmp_path):
    model = tiny_model()
    make_low_rank(model.base_model.encoder.layers[0].ffn.intermediate.weight, 3)
    make_low_rank(model.base_model.encoder.layers[1].attention.query.weight, 3)
    before = logits(model)
    report = factorize_linears(
        model, rank=3, include=r"layers\.0\.ffn\.intermediate|layers\.1\.attention\.query"
    )
    assert {name: r["rank"] for name, r in report.items()} == {
        "layers.0.ffn.intermediate": 3,
        "layers.1.attention.query": 3,
    }
    assert all(r["residual"] < 1e-5 for r in report.values())
    assert isinstance(model.base_model.encoder.layers[0].ffn.intermediate, LowRankLinear)
    assert torch.allclose(logits(model), before, atol=1e-5)
    factorize_word_embeddings(model, 8)
    expected = logits(model)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert (
        reloaded.config.stored_linears == model.config.stored_linears
        and reloaded.config.word_embedding_rank == 8
    )
    assert torch.allclose(logits(reloaded), expected, atol=1e-6)
    assert torch.allclose(logits_without_nlpcompress(tmp_path, INPUTS), expected, atol=1e-5)


def test_energy_picks_a_rank_per_matrix_and_skips_factors_that_would_not_save_parameters():
    model = tiny_model()
    make_low_rank(model.base_model.encoder.layers[0].attention.value.weight, 2)
    report = factorize_linears(model, energy=0.999)
    assert report["layers.0.attention.value"]["rank"] == 2
    # a random 32 × 32 matrix needs most of its rank for 99.9%: two factors would be larger, so it stays
    assert "layers.1.attention.value" not in report
    assert isinstance(model.base_model.encoder.layers[1].attention.value, torch.nn.Linear)


def test_a_low_rank_linear_at_full_rank_is_the_linear():
    linear = torch.nn.Linear(12, 7)
    low, residual = factorize_linear(linear, 7)
    x = torch.randn(3, 12)
    assert residual < 1e-6
    assert torch.allclose(low(x), linear(x), atol=1e-5)
    assert torch.allclose(low.weight, linear.weight, atol=1e-6) and low.bias is low.up.bias


def test_a_rank_that_cannot_compress_is_refused_before_anything_changes():
    model = tiny_model()
    with pytest.raises(
        ValueError, match=r"linears_rank 32: layers\.0\.attention\.query is 32×32; give a rank below 32"
    ):
        factorize_linears(model, rank=32)
    assert model.config.stored_as("low_rank") == {}
    with pytest.raises(ValueError, match=r"embeddings rank 32: give a whole number in \[1, 31\]"):
        factorize_word_embeddings(model, 32)


def test_both_factors_train():
    model = tiny_model()
    factorize_linears(model, rank=4, include=r"layers\.0\.ffn\.output")
    linear = model.base_model.encoder.layers[0].ffn.output
    model.train()
    model(**INPUTS, labels=torch.tensor([0, 1])).loss.backward()
    assert linear.down.weight.grad.abs().sum() > 0 and linear.up.weight.grad.abs().sum() > 0


def test_pruning_a_factorized_model_is_refused_with_the_order_to_use():
    model = tiny_model()
    factorize_linears(model, rank=2)
    stage = parse_stage({"type": "prune_heads", "target": 2})
    with pytest.raises(
        UserError, match=r"'prune_heads' \(prune_heads\) cannot take a model that is factorized"
    ):
        prepare(stage, model)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "nothing to factorize"),
        ({"linears_rank": 4, "linears_energy": 0.9}, "give linears_rank or linears_energy, not both"),
        ({"embeddings_energy": 1.5}, r"share of the squared norm in \(0, 1\)"),
        ({"embeddings_rank": 0}, "whole number >= 1"),
        ({"linears_rank": 4, "include": "("}, "not a regular expression"),
    ],
)
def test_bad_settings_are_refused_with_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        FactorizeConfig(**settings)
