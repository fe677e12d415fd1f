"""Finalize (bake transforms, remove dead heads and neurons exactly) and the model's description of itself."""

from pathlib import Path

import torch
from _tiny import logits_without_nlpcompress, tiny_model
from transformers import AutoModelForSequenceClassification

from nlpcompress.finalize import finalize
from nlpcompress.measure import encoder_macs
from nlpcompress.parametrize import Mask, attach, transforms
from nlpcompress.pruning import HEADS, NEURONS, gate_units
from nlpcompress.structure import describe, layer_table, summary_line


def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 50, (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs()).logits


@torch.no_grad()
def kill_units(model) -> None:
    """Dead units of each kind: zero consumer columns, and zero producer rows with a non-zero bias."""
    size = model.config.attention_head_size
    first, second = (layer for layer in model.compact_bert.encoder.layers)
    first.attention.output.weight[:, 1 * size : 2 * size] = 0  # head (0, 1): its output columns
    second.attention.value.weight[3 * size : 4 * size] = 0  # head (1, 3): its value rows (bias stays)
    second.attention.value.bias[3 * size : 4 * size] = 0.7
    first.ffn.output.weight[:, [0, 5]] = 0  # neurons (0, 0), (0, 5): output columns
    second.ffn.intermediate.weight[[2, 30]] = 0  # neurons (1, 2), (1, 30): constant GELU(bias)
    second.ffn.intermediate.bias[[2, 30]] = torch.tensor([0.9, -0.4])


def test_finalize_removes_dead_heads_and_neurons_without_changing_logits(tmp_path: Path):
    model = tiny_model(layer_map=[0, 1, 1])
    kill_units(model)
    before = logits(model)
    report = finalize(model)
    assert report == {"baked_transforms": 0, "removed_heads": 2, "removed_neurons": 4, "sparse_linears": 0}
    assert model.config.heads_per_layer == [3, 3] and model.config.intermediate_sizes == [35, 35]
    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(reloaded), before, atol=1e-5, rtol=0)


def test_finalize_bakes_masks_and_gates_then_drops_what_they_switched_off(tmp_path: Path):
    model = tiny_model()
    size = model.config.attention_head_size

    def output_mask(name: str, linear: torch.nn.Linear) -> Mask:
        mask = torch.ones_like(linear.weight)
        if ".attention." in name and ".layers.1." in name:
            mask[:, :size] = 0  # head (1, 0)
        if ".ffn." in name and ".layers.0." in name:
            mask[:, 7] = 0  # neuron (0, 7)
        return Mask(mask)

    attach(model, r".*layers\.\d+\.(attention|ffn)\.output", output_mask)
    gate_units(model, NEURONS, [(1, 4)])
    before = logits(model)
    report = finalize(model)
    assert report == {"baked_transforms": 4, "removed_heads": 1, "removed_neurons": 2, "sparse_linears": 0}
    assert transforms(model) == {} and model.config.heads_per_layer == [4, 3]
    assert model.config.intermediate_sizes == [36, 36]
    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path)  # loads where nlpcompress is not installed (the shipped modeling files)
    torch.testing.assert_close(logits_without_nlpcompress(tmp_path, inputs()), before, atol=1e-5, rtol=0)


def test_a_head_gated_off_everywhere_empties_the_layer():
    model = tiny_model()
    gate_units(model, HEADS, [(0, 0), (0, 1), (0, 2), (0, 3)])
    before = logits(model)
    assert finalize(model)["removed_heads"] == 4
    assert model.config.heads_per_layer == [0, 4]
    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=0)


def test_describe_follows_the_layer_map_and_counts_sparsity_and_macs():
    model = tiny_model(
        layer_map=[0, 1, 0], heads_per_layer=[4, 2], intermediate_sizes=[37, 20], embedding_size=16
    )
    attach(
        model, r".*layers\.1\.ffn\.intermediate", lambda name, linear: Mask(torch.zeros_like(linear.weight))
    )
    structure = describe(model)
    assert structure["heads_per_depth"] == [4, 2, 4] and structure["ffn_width_per_depth"] == [37, 20, 37]
    assert [layer["shared_with"] for layer in structure["layers"]] == [[2], [], [0]]
    assert structure["factorized_embeddings"] and structure["embedding_size"] == 16
    assert structure["unique_layers"] == 2 and structure["depth"] == 3
    weights = 3 * 16 * 32 + 32 * 16 + 2 * 20 * 32  # layer 1: Q, K, V, output, FFN in and out
    assert structure["layers"][1]["sparsity"] == round(20 * 32 / weights, 4)
    assert structure["layers"][0]["sparsity"] == 0.0
    assert structure["macs_seq128"] == encoder_macs(model.config, 128)
    per_depth = 4 * 128 * 32 * 8 * 4 + 2 * 128 * 128 * 8 * 4 + 2 * 128 * 32 * 37  # depth 0 by hand
    assert encoder_macs(model.config, 128) > 2 * per_depth
    assert "3 layers, 2 unique (shared)" in summary_line(structure)
    assert "factorized embeddings E=16" in summary_line(structure)
    assert layer_table(structure, markdown=True)[0].startswith("| depth | unique_layer | heads")
    assert len(layer_table(structure)) == 4
