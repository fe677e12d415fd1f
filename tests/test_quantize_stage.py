"""The `quantize` stage: Q-BERT bits from the Hessian, fake quantization while training, packed storage
that reloads (with and without nlpcompress) to the fake-quantized model's logits; bad settings refused."""

import json

import pytest
import torch
from _tiny import logits_without_nlpcompress, tiny_model
from safetensors.torch import load_file

from nlpcompress.errors import ConfigError, UserError
from nlpcompress.parametrize import transforms
from nlpcompress.quant.config import QuantizationConfig
from nlpcompress.quant.qat import attach_quantizers, layer_sizes, quantization_errors, store_quantized
from nlpcompress.quant.quantizers import FakeQuantize
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import run_recipe

INPUTS = {
    "input_ids": torch.tensor([[2, 7, 3, 9, 3, 1], [2, 9, 12, 7, 0, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
}


def stored_as_fake_quantized(model: torch.nn.Module, modules: int) -> torch.Tensor:
    """Store ``model``'s fake quantizers, checking that ``modules`` were packed and that the packed model
    computes the fake-quantized logits on ``INPUTS``; those logits."""
    with torch.no_grad():
        fake = model(**INPUTS).logits
        assert store_quantized(model) == modules
        assert torch.equal(model(**INPUTS).logits, fake)
    return fake


def test_stored_integers_give_the_fake_quantized_logits_and_reload_without_nlpcompress(tmp_path):
    model = tiny_model()
    bits = {"layers.0": 2, "layers.1": 4}
    attach_quantizers(model, bits, groups="head", embedding_bits=8)
    assert len(transforms(model, FakeQuantize)) == 2 * 6 + 1
    fake = stored_as_fake_quantized(model, 2 * 6 + 1)
    assert model.config.stored_as("quantized")["layers.0.attention.query"] == {
        "bits": 2, "group_dim": 0, "group_size": model.config.attention_head_size
    }  # fmt: skip
    assert model.config.stored_as("quantized")["layers.1.ffn.intermediate"]["group_size"] == 1
    assert model.config.quantized_embeddings == {"bits": 8}
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    query = stored["compact_bert.encoder.layers.0.attention.query.packed"]
    assert query.dtype == torch.uint8 and query.numel() == 32 * 32 * 2 // 8  # 2 bits really packed
    assert torch.allclose(logits_without_nlpcompress(tmp_path, INPUTS), fake, atol=1e-6)


def test_quantization_error_falls_with_bits_and_layer_sizes_count_weights():
    model = tiny_model()
    errors = quantization_errors(model, [2, 4, 8], "head", "minmax", 99.9)
    for layer in ("layers.0", "layers.1"):
        assert errors[layer][2] > errors[layer][4] > errors[layer][8] > 0
    assert layer_sizes(model) == dict.fromkeys(("layers.0", "layers.1"), 4 * 32 * 32 + 2 * 32 * 37)


def test_checkpointed_bits_win_over_the_bits_attached_at_resume():
    saved = tiny_model()
    attach_quantizers(saved, {"layers.0": 2, "layers.1": 8}, "head", None)
    resumed = tiny_model()
    attach_quantizers(resumed, {"layers.0": 4, "layers.1": 4}, "head", None)
    resumed.load_state_dict(saved.state_dict())
    with torch.no_grad():
        assert torch.equal(resumed(**INPUTS).logits, saved(**INPUTS).logits)


def quantize_recipe(tmp_path, tiny_bert_dir, glue_root, **quantize):
    return recipe_from_dict(
        {
            "model": str(tiny_bert_dir), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 48,
            "max_eval_samples": 32, "max_length": 32, "seed": 3, "output_dir": str(tmp_path / "out"),
            "training": {"max_steps": 3, "per_device_train_batch_size": 16, "learning_rate": 1e-3},
            "stages": [{"type": "finetune"}, {"type": "quantize", "hessian_samples": 16, **quantize}],
        }
    )  # fmt: skip


def test_qbert_gives_the_more_sensitive_layer_more_bits_trains_and_saves_packed(
    tmp_path, tiny_bert_dir, glue_root
):
    recipe = quantize_recipe(
        tmp_path, tiny_bert_dir, glue_root, avg_bits=3, candidate_bits=[2, 4],
        recovery={"distillation": {"method": "kd"}}, training={"max_steps": 2},
    )  # fmt: skip
    results = run_recipe(recipe, progress=False).results
    stage = results["stages"][1]
    omega = {layer: s["omega"] for layer, s in stage["sensitivity"].items()}
    bits = stage["bits_per_layer"]
    assert sorted(bits.values()) == [2, 4] and bits[max(omega, key=omega.get)] == 4
    assert stage["average_bits"] == 3 and stage["train_steps"] == 2
    folder = tmp_path / "out"
    saved = json.loads((folder / "config.json").read_text())
    assert {v["bits"] for v in saved["stored_linears"].values() if v["kind"] == "quantized"} == {2, 4}
    assert (folder / "artifacts" / "quantize" / "quantize-hessian.json").is_file()
    assert results["metrics"] == stage["metrics"]  # reloaded from the packed folder (the runner checks)


def test_ptq_does_not_train(tmp_path, tiny_bert_dir, glue_root):
    recipe = quantize_recipe(tmp_path, tiny_bert_dir, glue_root, method="ptq", avg_bits=8, clip="percentile")
    stage = run_recipe(recipe, progress=False).results["stages"][1]
    assert "train_steps" not in stage and set(stage["bits_per_layer"].values()) == {8}
    assert stage["metrics"] == pytest.approx(stage["metrics_before_training"])


def test_groups_that_do_not_divide_a_head_are_refused_before_training(tmp_path, tiny_bert_dir, glue_root):
    recipe = quantize_recipe(tmp_path, tiny_bert_dir, glue_root, method="uniform", avg_bits=4, groups=3)
    with pytest.raises(UserError, match=r"stage 'quantize': .*3"):
        run_recipe(recipe, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"avg_bits": 9}, r"outside the candidate range 2..8"),
        ({"avg_bits": 1.5, "candidate_bits": [2, 4]}, r"outside the candidate range 2..4"),
        ({"candidate_bits": [2, 9]}, r"a list of bit widths in 2..8"),
        ({"method": "uniform", "avg_bits": 3.5}, "a whole number in 2..8"),
        ({"method": "gptq"}, "allowed: qbert, uniform, ptq"),
        ({"allocation": "greedy"}, "allowed: hessian, exact, reverse"),
        ({"groups": "row"}, "allowed: head, matrix, channel, or a number of groups per head"),
        ({"embedding_bits": 1}, r"a bit width in 2..8, or null"),
        ({"position_embedding_bits": 9}, r"position_embedding_bits.*a bit width in 2..8, or null"),
        ({"head_bits": 1}, r"head_bits.*a bit width in 2..8, or null"),
    ],
)
def test_bad_settings_are_refused_with_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        QuantizationConfig(**settings)


def test_factorized_word_embeddings_quantize_as_their_rank_r_table(tmp_path):
    model = tiny_model(word_embedding_rank=4)
    attach_quantizers(model, {"layers.0": 4, "layers.1": 4}, groups="matrix", embedding_bits=8)
    with torch.no_grad():
        fake = model(**INPUTS).logits
        store_quantized(model)
    assert model.base_model.embeddings.word_embeddings.weight.shape == (50, 4)
    model.save_pretrained(tmp_path)
    assert torch.allclose(logits_without_nlpcompress(tmp_path, INPUTS), fake, atol=1e-6)


def test_position_and_token_type_tables_quantize_apart_from_the_word_table_and_reload(tmp_path):
    model = tiny_model()
    attach_quantizers(model, {"layers.0": 4, "layers.1": 4}, "channel", None, position_embedding_bits=6)
    fake = stored_as_fake_quantized(model, 12 + 2)
    embeddings = model.base_model.embeddings
    assert type(embeddings.word_embeddings) is torch.nn.Embedding  # embedding_bits null: the word table stays
    assert model.config.quantized_embeddings == {"position_bits": 6}
    for table in (embeddings.position_embeddings, embeddings.token_type_embeddings):
        assert table.bits == 6 and table.codes().abs().max() <= 31  # 6-bit codes, one scale per row
        assert table.scales.numel() == table.shape[0]
    model.save_pretrained(tmp_path)
    stored = load_file(tmp_path / "model.safetensors")
    positions = stored["compact_bert.embeddings.position_embeddings.packed"]
    assert positions.dtype == torch.uint8 and positions.numel() == 32 * 32 * 6 // 8
    assert torch.allclose(logits_without_nlpcompress(tmp_path, INPUTS), fake, atol=1e-6)


def test_the_heads_dense_matrix_quantizes_per_output_channel_and_reloads_without_nlpcompress(tmp_path):
    model = tiny_model()
    attach_quantizers(model, {"layers.0": 4, "layers.1": 4}, "channel", None, head_bits=6)
    fake = stored_as_fake_quantized(model, 12 + 1)
    head = model.classifier.dense
    assert head.bits == 6 and head.codes().abs().max() <= 31
    assert head.scales.numel() == head.out_features  # one range per output channel
    assert type(model.classifier.out_proj) is torch.nn.Linear  # the labels' projection stays float
    model.save_pretrained(tmp_path)
    assert (
        json.loads((tmp_path / "config.json").read_text())["stored_linears"]["classifier.dense"]["bits"] == 6
    )
    stored = load_file(tmp_path / "model.safetensors")
    assert "classifier.dense.weight" not in stored
    assert stored["classifier.dense.packed"].dtype == torch.uint8
    assert stored["classifier.dense.packed"].numel() == 32 * 32 * 6 // 8  # 6 bits a weight
    assert torch.allclose(logits_without_nlpcompress(tmp_path, INPUTS), fake, atol=1e-6)


def test_a_float_head_stays_float():
    model = tiny_model()
    attach_quantizers(model, {"layers.0": 4, "layers.1": 4}, "channel", 8)
    store_quantized(model)
    assert (
        type(model.classifier.dense) is torch.nn.Linear
        and "classifier.dense" not in model.config.stored_linears
    )
