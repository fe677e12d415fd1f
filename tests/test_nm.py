"""N:M semi-structured sparsity: the mask, the n_m storage kind, finalize and reload, the stage's contract."""

from pathlib import Path

import pytest
import torch
from _tiny import logits_without_nlpcompress, tiny_model
from torch import nn
from transformers import AutoModelForSequenceClassification

import nlpcompress.stages.builtin  # noqa: F401  (registers the stages)
from nlpcompress.compact.nm_sparse import NMSparseLinear, pack_indices, unpack_indices
from nlpcompress.compact.storage import SparseLinear, smallest_storage
from nlpcompress.errors import UserError
from nlpcompress.finalize import densify, finalize
from nlpcompress.measure import count_parameters
from nlpcompress.nm import NMConfig, NMScores, attach_nm, freeze_scores, nm_mask
from nlpcompress.parametrize import Mask, transforms
from nlpcompress.stages import parse_stage
from nlpcompress.stages.contracts import check_order

INPUTS = {"input_ids": torch.tensor([[1, 5, 9, 3, 0, 0], [4, 8, 2, 7, 6, 1]])}
INPUTS["attention_mask"] = (INPUTS["input_ids"] != 0).long()


def test_the_mask_keeps_the_n_largest_of_every_m():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.5, 4.0, 3.0, 2.0, 1.0]])
    assert nm_mask(scores, 2, 4).tolist() == [[False, True, False, True, True, True, False, False]]
    random = torch.randn(16, 32)
    mask = nm_mask(random.abs(), 2, 4)
    assert (mask.view(16, 8, 4).sum(-1) == 2).all()
    kept_min = (random.abs() * mask).view(16, 8, 4).masked_fill(~mask.view(16, 8, 4), float("inf")).amin(-1)
    dropped_max = (random.abs() * ~mask).view(16, 8, 4).amax(-1)
    assert (kept_min >= dropped_max).all()


def test_positions_round_trip_through_their_bits():
    positions = torch.randint(0, 8, (1000,))
    assert torch.equal(unpack_indices(pack_indices(positions, 3), 3, 1000), positions)


def test_a_2_4_linear_is_stored_in_kept_values_and_2_bit_positions():
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight.abs(), 2, 4))
    stored = NMSparseLinear.from_dense(linear)
    assert (stored.n, stored.m) == (2, 4) and torch.equal(stored.weight, linear.weight)
    assert stored.stored_elements() == 16 * 32 // 2
    assert stored.stored_bytes() == 16 * 32 // 2 * 4 + 16 * 32 // 2 * 2 // 8  # values + 2 bits per kept value
    assert torch.equal(stored.fixed_mask(), linear.weight != 0)
    # as small as the bitmask form, and structured: finalize takes it
    assert stored.stored_bytes() == SparseLinear.from_dense(linear).stored_bytes()
    assert isinstance(smallest_storage(linear, 0.9 * 16 * 32 * 4), NMSparseLinear)
    x = torch.randn(3, 32)
    torch.testing.assert_close(stored(x), linear(x), rtol=0, atol=0)


def test_unstructured_sparsity_is_not_taken_for_n_m():
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    with torch.no_grad():
        linear.weight.mul_(torch.rand_like(linear.weight) < 0.3)
    assert isinstance(smallest_storage(linear, 0.9 * 16 * 32 * 4), SparseLinear)


def test_a_2_4_model_finalizes_to_n_m_storage_and_reloads_anywhere(tmp_path: Path):
    model = tiny_model(intermediate_size=36)
    masked = attach_nm(model, 2, 4, "magnitude")
    assert len(masked) == 12
    expected = model(**INPUTS).logits.detach()
    params_before = count_parameters(model)["encoder"]
    finalize(model)
    kinds = {entry["kind"] for entry in model.config.stored_linears.values()}
    assert kinds == {"n_m"} and len(model.config.stored_linears) == 12
    assert params_before - count_parameters(model)["encoder"] == sum(
        linear.weight.numel() // 2 for linear in model.modules() if isinstance(linear, NMSparseLinear)
    )
    torch.testing.assert_close(model(**INPUTS).logits, expected, atol=1e-6, rtol=0)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(**INPUTS).logits, expected, atol=1e-6, rtol=0)
    assert (tmp_path / "nm_sparse.py").is_file()
    torch.testing.assert_close(logits_without_nlpcompress(tmp_path, INPUTS), expected, atol=1e-5, rtol=0)
    # loaded for more compression: dense again, with the 2:4 pattern as a fixed mask
    assert densify(reloaded) == 12 and reloaded.config.stored_linears == {}
    query = reloaded.compact_bert.encoder.layers[0].attention.query
    assert (query.weight != 0).view(-1, 8, 4).sum(-1).max() <= 2


def test_movement_scores_learn_and_freeze_into_the_mask_they_choose():
    model = tiny_model(intermediate_size=36).train()
    attach_nm(model, 2, 4, "movement")
    scored = transforms(model, NMScores)
    first = next(iter(scored.values()))
    model(**INPUTS, labels=torch.tensor([0, 1])).loss.backward()
    assert first.nm_scores.grad is not None and first.nm_scores.grad.abs().sum() > 0
    chosen = first.mask()
    assert freeze_scores(model) == len(scored) and not transforms(model, NMScores)
    frozen = transforms(model, Mask)
    assert torch.equal(next(iter(frozen.values())).mask.bool(), chosen)


def test_the_stage_settings_are_checked():
    with pytest.raises(Exception, match="must be below m"):
        NMConfig(n=4, m=4)
    with pytest.raises(Exception, match="movement scores are learned while recovering"):
        parse_stage({"type": "nm_sparsity", "score": "movement", "recovery": {"train": False}})


def test_n_m_after_quantize_is_refused_before_anything_trains():
    stages = [
        parse_stage({"type": "quantize", "avg_bits": 4, "method": "uniform"}),
        parse_stage({"type": "nm_sparsity"}),
    ]
    with pytest.raises(
        UserError, match=r"cannot take a model that is quantized .*put nm_sparsity before quantize"
    ):
        check_order(stages)
