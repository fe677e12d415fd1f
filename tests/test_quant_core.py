"""Group-wise quantization core (nlpcompress.quant, Q-BERT §3.2) and packed storage in the compact model
(nlpcompress.compact.quantized): bit packing, error bounds, per-head ranges, the straight-through
gradient, the FakeQuantize transform, and save/load with and without nlpcompress."""

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from _tiny import logits_without_nlpcompress, tiny_model
from torch import nn

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.compact.quantized import QuantizedEmbedding, QuantizedLinear, pack_bits, unpack_bits
from nlpcompress.parametrize import attach, stored_weight
from nlpcompress.quant import (
    FakeQuantize,
    GroupLayout,
    fake_quantize,
    layout_for,
    quantize_codes,
    symmetric_scales,
)

HEAD_SIZE = 8  # the tiny model's: hidden 32, 4 heads
INPUTS = {
    "input_ids": torch.tensor([[1, 5, 9, 3, 0], [2, 7, 7, 4, 49]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
}


def random_weight(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def reference_pack(codes: list[int], bits: int) -> list[int]:
    """Bit by bit in plain Python: code k offset by 2**(bits-1) at stream bits k·bits.., LSB first."""
    stream = [(code + 2 ** (bits - 1)) >> i & 1 for code in codes for i in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return [sum(stream[8 * j + i] << i for i in range(8)) for j in range(len(stream) // 8)]


# --- bit packing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("count", [1, 8, 13, 203])
def test_pack_unpack_is_exact_and_dense(bits: int, count: int) -> None:
    qmax = 2 ** (bits - 1) - 1
    codes = torch.randint(-qmax, qmax + 1, (count,), generator=torch.Generator().manual_seed(count))
    codes[0] = qmax
    codes[-1] = -qmax
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(count * bits / 8)
    assert packed.tolist() == reference_pack(codes.tolist(), bits)
    unpacked = unpack_bits(packed, bits, count)
    assert unpacked.dtype == torch.int8
    assert torch.equal(unpacked, codes.to(torch.int8))


def test_three_bit_codes_pack_eight_to_three_bytes() -> None:
    codes = torch.tensor([[1, 0, -1, 3], [-3, 2, -2, 0]])
    packed = pack_bits(codes, 3)
    # unsigned 5,4,3,7,1,6,2,4 as 3-bit little-endian fields: 0b11100101, 0b00011110, 0b10001011
    assert packed.tolist() == [0b11100101, 0b00011110, 0b10001011]
    assert torch.equal(unpack_bits(packed, 3, 8).view(2, 4), codes.to(torch.int8))


@pytest.mark.parametrize("bits", [0, 9])
def test_packing_rejects_bit_widths_outside_one_to_eight(bits: int) -> None:
    with pytest.raises(ValueError, match=f"bits {bits}"):
        pack_bits(torch.zeros(4, dtype=torch.int8), bits)


# --- quantizers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quantize_error_is_at_most_half_a_step(bits: int) -> None:
    weight = random_weight(32, 24)
    layout = layout_for("layers.0.attention.query", (32, 24), HEAD_SIZE, "head")
    scales = symmetric_scales(weight, bits, layout)
    error = (fake_quantize(weight, bits, layout) - weight).abs()
    per_element_scale = scales.repeat_interleave(HEAD_SIZE)[:, None].expand_as(weight)
    assert torch.all(error <= per_element_scale / 2 * (1 + 1e-6))
    assert torch.allclose(scales, weight.abs().view(4, -1).amax(1) / (2 ** (bits - 1) - 1))


def test_fake_quantize_error_decreases_with_bits() -> None:
    weight = random_weight(32, 24)
    layout = GroupLayout(dim=0, size=1)
    errors = [(fake_quantize(weight, bits, layout) - weight).abs().mean().item() for bits in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == 4
    assert errors[-1] < errors[0] / 20


def test_head_groups_keep_small_heads_that_one_matrix_range_crushes() -> None:
    weight = random_weight(32, 32)
    weight[:HEAD_SIZE] *= 100  # head 0 is 100x larger than heads 1..3
    small = slice(HEAD_SIZE, None)
    per_head = fake_quantize(weight, 4, layout_for("layers.0.attention.key", (32, 32), HEAD_SIZE, "head"))
    whole = fake_quantize(weight, 4, layout_for("layers.0.attention.key", (32, 32), HEAD_SIZE, "matrix"))
    relative = (per_head[small] - weight[small]).norm() / weight[small].norm()
    assert relative < 0.2
    assert torch.count_nonzero(whole[small]) == 0
    assert (per_head[:HEAD_SIZE] - weight[:HEAD_SIZE]).norm() / weight[:HEAD_SIZE].norm() < 0.2


def test_attention_output_groups_are_per_head_columns() -> None:
    weight = random_weight(32, 32)
    weight[:, :HEAD_SIZE] *= 100  # the columns reading head 0's context
    layout = layout_for("layers.0.attention.output", (32, 32), HEAD_SIZE, "head")
    quantized = fake_quantize(weight, 4, layout)
    small = weight[:, HEAD_SIZE:]
    assert (quantized[:, HEAD_SIZE:] - small).norm() / small.norm() < 0.2
    assert torch.allclose(
        symmetric_scales(weight, 4, layout)[1:] * 7, small.abs().reshape(32, 3, 8).amax((0, 2))
    )


@pytest.mark.parametrize(
    ("name", "shape", "groups", "layout", "num_groups"),
    [
        ("layers.0.attention.query", (32, 32), "head", GroupLayout(0, 8), 4),
        ("layers.1.attention.key", (16, 32), "head", GroupLayout(0, 8), 2),
        ("layers.0.attention.value", (32, 32), 4, GroupLayout(0, 2), 16),
        ("layers.0.attention.output", (32, 24), "head", GroupLayout(1, 8), 3),
        ("layers.0.attention.output", (32, 32), 2, GroupLayout(1, 4), 8),
        ("layers.0.ffn.intermediate", (37, 32), "head", GroupLayout(0, 1), 37),
        ("layers.3.ffn.output", (32, 37), 8, GroupLayout(0, 1), 32),
        ("layers.0.attention.output", (32, 32), "matrix", GroupLayout(0, 32), 1),
        ("layers.0.ffn.intermediate", (37, 32), "matrix", GroupLayout(0, 37), 1),
    ],
)
def test_layout_for_each_linear_kind(
    name: str, shape: tuple[int, int], groups: str | int, layout: GroupLayout, num_groups: int
) -> None:
    assert layout_for(name, shape, HEAD_SIZE, groups) == layout
    assert layout.num_groups(shape) == num_groups
    assert symmetric_scales(random_weight(*shape), 4, layout).shape == (num_groups,)


@pytest.mark.parametrize("groups", [3, 0, 16, "row", True])
def test_layout_for_rejects_groups_that_do_not_split_a_head(groups) -> None:
    with pytest.raises(ValueError, match=rf"groups {groups!r}: .*dividing the head size 8"):
        layout_for("layers.0.attention.query", (32, 32), HEAD_SIZE, groups)


def test_layout_for_rejects_an_unknown_linear() -> None:
    with pytest.raises(ValueError, match=r"classifier\.dense"):
        layout_for("classifier.dense", (32, 32), HEAD_SIZE, "head")


@pytest.mark.parametrize("bits", [1, 9])
def test_quantizers_reject_bits_outside_two_to_eight(bits: int) -> None:
    weight, layout = random_weight(8, 8), GroupLayout(0, 1)
    for call in (
        lambda: fake_quantize(weight, bits, layout),
        lambda: symmetric_scales(weight, bits, layout),
        lambda: FakeQuantize(bits, layout),
    ):
        with pytest.raises(ValueError, match=f"bits {bits}: symmetric quantization takes 2..8 bits"):
            call()


def test_a_zero_group_gets_a_positive_scale_and_stays_zero() -> None:
    weight = random_weight(4, 6)
    weight[1] = 0
    layout = GroupLayout(0, 1)
    scales = symmetric_scales(weight, 4, layout)
    assert scales[1] > 0
    quantized = fake_quantize(weight, 4, layout)
    assert torch.isfinite(quantized).all() and torch.equal(quantized[1], torch.zeros(6))
    assert torch.equal(quantize_codes(weight, scales, 4, layout)[1], torch.zeros(6, dtype=torch.int8))


def test_percentile_clipping_clamps_the_largest_weights_to_the_range() -> None:
    weight = random_weight(4, 100)
    layout = GroupLayout(0, 1)
    scales = symmetric_scales(weight, 3, layout, clip="percentile", percentile=90)
    assert torch.allclose(scales * 3, weight.abs().kthvalue(90, dim=1).values)
    codes = quantize_codes(weight, scales, 3, layout)
    assert codes.abs().max() == 3
    assert torch.equal(codes.abs() == 3, (weight / scales[:, None]).abs() > 2.5)


def test_straight_through_gradient_is_one_inside_the_range() -> None:
    weight = random_weight(16, 32).requires_grad_()
    fake_quantize(weight, 3, GroupLayout(0, 8)).sum().backward()
    assert torch.equal(weight.grad, torch.ones(16, 32))


def test_straight_through_gradient_is_zero_for_clipped_weights() -> None:
    weight = random_weight(16, 32).requires_grad_()
    layout = GroupLayout(0, 1)
    fake_quantize(weight, 4, layout, clip="percentile", percentile=75).sum().backward()
    limit = weight.detach().abs().kthvalue(24, dim=1, keepdim=True).values  # 75% of 32
    clipped = weight.detach().abs() > limit
    assert clipped.sum() == 16 * 8  # the top quarter of each row
    assert torch.equal(weight.grad, (~clipped).float())


# --- FakeQuantize as a parametrization --------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.query = nn.Linear(32, 16)
        self.other = nn.Linear(32, 16)


def test_fake_quantize_transform_on_a_linear_and_its_state_dict_round_trip() -> None:
    layout = GroupLayout(0, HEAD_SIZE)
    block = Block()
    attached = attach(block, "query", lambda name, linear: FakeQuantize(3, layout))
    assert list(attached) == ["query"]
    stored = stored_weight(block.query).detach().clone()
    assert torch.equal(block.query.weight, fake_quantize(stored, 3, layout))
    assert not torch.equal(block.query.weight, stored)
    state = block.state_dict()
    assert state["query.parametrizations.weight.0.bits"].item() == 3

    twin = Block()
    attach(twin, "query", lambda name, linear: FakeQuantize(8, layout))
    twin.load_state_dict(state)
    assert int(twin.query.parametrizations.weight[0].bits) == 3
    assert torch.equal(twin.query.weight, block.query.weight)


def test_fake_quantize_trains_the_stored_weight_through_the_estimator() -> None:
    block = Block()
    attach(block, "query", lambda name, linear: FakeQuantize(4, GroupLayout(0, 1)))
    block.query(torch.ones(2, 32)).sum().backward()
    assert torch.equal(stored_weight(block.query).grad, torch.full((16, 32), 2.0))


# --- packed storage ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "groups"), [(2, "head"), (3, 2), (4, "head"), (8, "matrix")])
def test_quantized_linear_from_codes_reproduces_fake_quantize_exactly(bits: int, groups: str | int) -> None:
    linear = nn.Linear(32, 24)
    layout = layout_for("layers.0.attention.query", (24, 32), HEAD_SIZE, groups)
    transform = FakeQuantize(bits, layout)
    codes, scales = transform.codes_and_scales(linear.weight.detach())
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    packed = QuantizedLinear.from_codes(codes, scales, linear.bias.detach(), bits, layout.dim, layout.size)
    assert packed.packed.numel() == math.ceil(24 * 32 * bits / 8)
    expected = transform(linear.weight.detach())
    assert torch.equal(packed.weight, expected)
    assert torch.equal(packed.codes(), codes)
    hidden = torch.randn(3, 32)
    assert torch.equal(packed(hidden), nn.functional.linear(hidden, expected, linear.bias))


def test_packed_weight_cache_follows_the_buffers() -> None:
    layer = QuantizedLinear(16, 8, 4, group_dim=0, group_size=1)
    assert torch.equal(layer.weight, torch.zeros(8, 16))  # unloaded: zero scales
    codes = torch.randint(-7, 8, (8, 16))
    layer.load_codes(codes, torch.full((8,), 0.5))
    assert torch.equal(layer.weight, codes.float() * 0.5)
    assert layer.double().weight.dtype == torch.float64
    with pytest.raises(ValueError, match="do not fit"):
        layer.load_codes(codes[:4], torch.ones(8))


def test_quantized_embedding_has_one_scale_per_token() -> None:
    table = random_weight(10, 6)
    layout = GroupLayout(0, 1)
    scales = symmetric_scales(table, 8, layout)
    embedding = QuantizedEmbedding.from_codes(
        quantize_codes(table, scales, 8, layout), scales, 8, padding_idx=0
    )
    assert embedding.scales.shape == (10,)
    ids = torch.tensor([[3, 0, 9]])
    assert torch.equal(embedding(ids), nn.functional.embedding(ids, fake_quantize(table, 8, layout)))


# --- the compact model ------------------------------------------------------------------------------------

QUANTIZED = {
    **{
        f"layers.0.attention.{linear}": {"bits": 4, "group_dim": 0, "group_size": HEAD_SIZE}
        for linear in ("query", "key", "value")
    },
    "layers.0.attention.output": {"bits": 4, "group_dim": 1, "group_size": HEAD_SIZE},
    "layers.0.ffn.intermediate": {"bits": 3, "group_dim": 0, "group_size": 1},
    "layers.1.ffn.output": {"bits": 2, "group_dim": 0, "group_size": 32},
}


def quantized_tiny_model() -> CompactBertForSequenceClassification:
    """The tiny model with ``QUANTIZED`` linears and 8-bit word embeddings, filled with random codes."""
    model = tiny_model(quantized_weights=QUANTIZED, quantized_embeddings={"bits": 8})
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, QuantizedLinear | QuantizedEmbedding):
            qmax = 2 ** (module.bits - 1) - 1
            codes = torch.randint(-qmax, qmax + 1, module.shape, generator=generator)
            module.load_codes(codes, torch.rand(module.scales.shape, generator=generator) / qmax)
    return model.eval()


def logits(model: CompactBertForSequenceClassification) -> torch.Tensor:
    with torch.no_grad():
        return model(**INPUTS).logits


def safetensors_bytes(path: Path) -> dict[str, int]:
    """Bytes each tensor takes in a .safetensors file, read from its header."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return {
        key: end - start
        for key, entry in header.items()
        if key != "__metadata__"
        for start, end in [entry["data_offsets"]]
    }


def test_compact_model_builds_quantized_modules_from_the_config() -> None:
    model = tiny_model(quantized_weights=QUANTIZED, quantized_embeddings={"bits": 8})
    layer0 = model.base_model.encoder.layers[0]
    assert isinstance(layer0.attention.output, QuantizedLinear) and layer0.attention.output.group_dim == 1
    assert isinstance(layer0.ffn.intermediate, QuantizedLinear) and layer0.ffn.intermediate.bits == 3
    assert isinstance(model.base_model.encoder.layers[1].attention.query, nn.Linear)
    assert isinstance(model.get_input_embeddings(), QuantizedEmbedding)
    assert torch.equal(layer0.attention.query.bias, torch.zeros(32))
    assert torch.isfinite(logits(model.eval())).all()


def test_quantized_compact_model_saves_packed_and_loads_with_and_without_nlpcompress(tmp_path: Path) -> None:
    model = quantized_tiny_model()
    expected = logits(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "quantized.py").is_file()

    reloaded = CompactBertForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.stored_as("quantized") == QUANTIZED
    assert reloaded.config.quantized_embeddings == {"bits": 8}
    assert torch.equal(logits(reloaded.eval()), expected)
    assert torch.equal(logits_without_nlpcompress(tmp_path, INPUTS), expected)

    sizes = safetensors_bytes(tmp_path / "model.safetensors")
    prefix = "compact_bert.encoder.layers.0.attention.query"
    assert sizes[f"{prefix}.packed"] == 32 * 32 // 2  # 4 bits a weight
    assert sizes[f"{prefix}.scales"] == 4 * 4  # one float32 per head
    assert sizes["compact_bert.embeddings.word_embeddings.packed"] == 50 * 32
    assert sizes["compact_bert.encoder.layers.1.ffn.output.packed"] == 32 * 37 * 2 // 8
    assert "compact_bert.encoder.layers.0.attention.query.weight" not in sizes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {
                "quantized_weights": {"layers.0.ffn.output": {"bits": 4, "group_dim": 0, "group_size": 1}},
                "sparse_weights": {"layers.0.ffn.output": 10},
            },
            "'layers.0.ffn.output' is stored two ways",
        ),
        (
            {
                "quantized_weights": {"layers.0.ffn.output": {"bits": 4, "group_dim": 0, "group_size": 1}},
                "low_rank": {"layers.0.ffn.output": 2},
            },
            "'layers.0.ffn.output' is stored two ways",
        ),
        ({"stored_linears": {"layers.0.ffn.output": {"bits": 4}}}, "needs a kind"),
        ({"quantized_embeddings": {"bits": 0}}, "quantized_embeddings"),
    ],
    ids=["sparse", "low_rank", "kind", "embedding_bits"],
)
def test_config_rejects_bad_storage_fields(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompactBertConfig(**fields)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "quantized", "bits": 9, "group_dim": 0, "group_size": 1}, "bits 9: packed codes take 1..8"),
        ({"kind": "quantized", "bits": 4, "group_dim": 2, "group_size": 1}, "group_dim 2"),
        ({"kind": "quantized", "bits": 4}, "kind 'quantized' needs bits, group_dim, group_size"),
        ({"kind": "packed"}, "storage kind 'packed' is unknown; known: sparse, low_rank, n_m"),
    ],
    ids=["bits", "group_dim", "fields", "unknown"],
)
def test_a_model_refuses_a_bad_stored_linear(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model(stored_linears={"layers.0.ffn.output": entry})


def test_config_normalises_storage_fields() -> None:
    """Legacy fields are read into stored_linears, numbers become ints, and the config round-trips."""
    plain = CompactBertConfig()
    assert plain.stored_linears == {} and plain.quantized_embeddings == {}
    config = CompactBertConfig(
        quantized_weights={"layers.0.ffn.output": {"bits": 4.0, "group_dim": "0", "group_size": 1}},
        quantized_embeddings={"bits": 8.0},
    )
    assert config.stored_linears == {
        "layers.0.ffn.output": {"kind": "quantized", "bits": 4, "group_dim": 0, "group_size": 1}
    }
    assert type(config.quantized_embeddings["bits"]) is int
    assert "quantized_weights" not in config.to_dict()
    assert CompactBertConfig.from_dict(config.to_dict()).stored_linears == config.stored_linears
