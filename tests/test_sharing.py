"""Cross-layer sharing of a trained model (nlpcompress.sharing, the `share_layers` stage): initialisation,
one stored tensor per group, gradients summed over the depths, save/load, bad input."""

import pytest
import torch
from _tiny import logits_without_nlpcompress, tiny_model
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from nlpcompress.errors import ConfigError, UserError
from nlpcompress.sharing import check_groups, consecutive_groups, share_layers
from nlpcompress.stages.share_layers import SharingConfig

INPUTS = {"input_ids": torch.tensor([[1, 5, 9, 3, 0], [2, 7, 7, 4, 8]]), "attention_mask": torch.ones(2, 5)}
LABELS = torch.tensor([0, 1])


def four_layers():
    return tiny_model(num_hidden_layers=4)


def query(model, unique: int) -> torch.Tensor:
    return model.base_model.encoder.layers[unique].attention.query.weight


def test_consecutive_groups():
    assert consecutive_groups(6, 1) == [[0, 1, 2, 3, 4, 5]]
    assert consecutive_groups(6, 2) == [[0, 1, 2], [3, 4, 5]]
    assert consecutive_groups(6, 4) == [[0, 1], [2, 3], [4], [5]]
    with pytest.raises(ValueError, match="num_groups 7: give 1 to 6"):
        consecutive_groups(6, 7)


def test_mean_and_member_initialisation():
    model = four_layers()
    mean = share_layers(model, [[0, 1], [2, 3]], "mean")
    assert mean.config.layer_map == [0, 0, 1, 1] and len(mean.base_model.encoder.layers) == 2
    assert torch.allclose(query(mean, 0), (query(model, 0) + query(model, 1)) / 2)
    assert torch.allclose(query(mean, 1), (query(model, 2) + query(model, 3)) / 2)
    last = share_layers(model, [[0, 1, 2], [3]], "member", member=-1)
    assert torch.equal(query(last, 0), query(model, 2)) and torch.equal(query(last, 1), query(model, 3))


def test_sharing_every_layer_with_one_member_keeps_a_one_layer_model_exact():
    model = tiny_model(num_hidden_layers=1)
    shared = share_layers(model, [[0]], "member")
    with torch.no_grad():
        assert torch.allclose(shared.eval()(**INPUTS).logits, model.eval()(**INPUTS).logits, atol=1e-6)


def test_a_shared_layer_is_stored_once_and_reloads_to_the_same_logits(tmp_path):
    model = four_layers()
    model.save_pretrained(tmp_path / "unshared")
    shared = share_layers(model, [[0, 1, 2, 3]], "mean").eval()
    shared.save_pretrained(tmp_path / "shared")
    stored = load_file(tmp_path / "shared" / "model.safetensors")
    layer_keys = {key.split("encoder.layers.")[1].split(".")[0] for key in stored if "encoder.layers." in key}
    assert layer_keys == {"0"}  # one layer's tensors for four depths
    unshared_bytes = (tmp_path / "unshared" / "model.safetensors").stat().st_size
    layer_bytes = sum(v.numel() * 4 for k, v in stored.items() if "encoder.layers." in k)
    assert (tmp_path / "shared" / "model.safetensors").stat().st_size < unshared_bytes - 2.9 * layer_bytes
    with torch.no_grad():
        expected = shared(**INPUTS).logits
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "shared").eval()
        assert reloaded.config.layer_map == [0, 0, 0, 0]
        assert torch.allclose(reloaded(**INPUTS).logits, expected, atol=1e-6)
    assert torch.allclose(logits_without_nlpcompress(tmp_path / "shared", INPUTS), expected, atol=1e-5)


def twin_layers(**overrides):
    """A 2-layer model whose two layers hold identical weights (so sharing them changes nothing)."""
    model = tiny_model(
        num_hidden_layers=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides
    )
    layers = model.base_model.encoder.layers
    layers[1].load_state_dict(layers[0].state_dict())
    return model


@pytest.mark.parametrize("part", ["layer", "attention", "ffn"])
def test_the_gradient_of_a_shared_block_is_the_sum_over_the_depths_that_use_it(part):
    copies = twin_layers()
    shared = share_layers(copies, [[0, 1]], "member", part=part)
    with torch.no_grad():
        assert torch.allclose(shared.eval()(**INPUTS).logits, copies.eval()(**INPUTS).logits, atol=1e-6)
    for net in (shared, copies):
        net.train()
        net(**INPUTS, labels=LABELS).loss.backward()
    for block, linear in (("attention", "query"), ("ffn", "intermediate")):
        summed = sum(
            getattr(getattr(layer, block), linear).weight.grad for layer in copies.base_model.encoder.layers
        )
        own = getattr(getattr(shared.base_model.encoder.layers[0], block), linear).weight.grad
        if part in ("layer", block):
            assert torch.allclose(own, summed, atol=1e-6)  # one tensor, both depths' gradients
        else:
            assert torch.allclose(
                own,
                getattr(getattr(copies.base_model.encoder.layers[0], block), linear).weight.grad,
                atol=1e-6,
            )


@pytest.mark.parametrize("part", ["attention", "ffn"])
def test_a_shared_block_is_stored_once_and_reloads_with_and_without_nlpcompress(tmp_path, part):
    model = four_layers()
    shared = share_layers(model, [[0, 1], [2, 3]], "mean", part=part).eval()
    other = "ffn" if part == "attention" else "attention"
    assert getattr(shared.config, f"{part}_owner") == [0, 0, 2, 2]
    assert getattr(shared.config, f"{other}_owner") == [0, 1, 2, 3]
    layers = shared.base_model.encoder.layers
    assert getattr(layers[1], part) is None and getattr(layers[1], other) is not None
    shared.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    owners = {key.split("encoder.layers.")[1].split(".")[0] for key in stored if f".{part}." in key}
    assert owners == {"0", "2"}
    with torch.no_grad():
        expected = shared(**INPUTS).logits
        reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
        assert torch.allclose(reloaded(**INPUTS).logits, expected, atol=1e-6)
    assert torch.allclose(logits_without_nlpcompress(tmp_path, INPUTS), expected, atol=1e-5)
    first = model.base_model.encoder.layers
    block = "query" if part == "attention" else "intermediate"
    mean = (
        getattr(getattr(first[0], part), block).weight + getattr(getattr(first[1], part), block).weight
    ) / 2
    assert torch.allclose(getattr(getattr(layers[0], part), block).weight, mean)


def test_a_model_sharing_blocks_is_finalized_described_and_refused_by_pruning():
    from nlpcompress.finalize import finalize
    from nlpcompress.stages import parse_stage
    from nlpcompress.stages.contracts import prepare
    from nlpcompress.structure import describe

    shared = share_layers(four_layers(), [[0, 1, 2, 3]], "mean", part="attention")
    before = shared.eval()(**INPUTS).logits
    finalize(shared)
    with torch.no_grad():
        assert torch.allclose(shared(**INPUTS).logits, before, atol=1e-6)
    structure = describe(shared)
    assert [layer["attention_from"] for layer in structure["layers"]] == [0, 0, 0, 0]
    assert [layer["ffn_from"] for layer in structure["layers"]] == [0, 1, 2, 3]
    with pytest.raises(UserError, match=r"'prune_heads' \(prune_heads\) cannot take a model that is shared"):
        prepare(parse_stage({"type": "prune_heads", "target": 2}), shared)
    with pytest.raises(ValueError, match="already shares layers; share once"):
        share_layers(shared, [[0, 1, 2, 3]], part="ffn")


def test_layers_of_different_shapes_cannot_share():
    model = tiny_model(num_hidden_layers=2, heads_per_layer=[4, 2])
    with pytest.raises(ValueError, match=r"depths \[0, 1\] have different shapes"):
        share_layers(model, [[0, 1]])
    with pytest.raises(ValueError, match=r"only attentions of one shape can share"):
        share_layers(model, [[0, 1]], part="attention")
    share_layers(model, [[0, 1]], part="ffn")  # same FFN widths: fine


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "give groups or num_groups"),
        ({"groups": [[0, 1]], "num_groups": 2}, "give groups or num_groups"),
        ({"groups": [[0], [2]]}, "consecutive depths covering 0, 1, 2"),
        ({"groups": [[0, 2], [1]]}, "consecutive depths covering 0, 1, 2"),
        ({"groups": [[1, 2]]}, "consecutive depths covering 0, 1, 2"),
        ({"num_groups": 0}, "whole number >= 1"),
        ({"num_groups": 2, "init": "median"}, "allowed: mean, member"),
        ({"num_groups": 2, "member": 1}, "applies to init: member only"),
        ({"num_groups": 2, "share": "heads"}, "allowed: layer, attention, ffn"),
    ],
)
def test_bad_settings_are_refused_with_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        SharingConfig(**settings)


def test_groups_must_cover_the_model():
    check_groups([[0, 1], [2]], 3)
    with pytest.raises(ValueError, match=r"cover 3 depths; the model has 4 layers"):
        check_groups([[0, 1], [2]], 4)
