"""ALBERT's layout from a trained model (every embedding table at E, LayerNorm at E, E → H) and the export
of an ALBERT-shaped compact model to a plain AlbertForSequenceClassification."""

import json

import pytest
import torch
from _tiny import tiny_model
from transformers import AlbertForSequenceClassification, AutoModelForSequenceClassification

from nlpcompress.albert import albert_layout_embeddings, export_albert, to_albert
from nlpcompress.errors import ConfigError
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import run_recipe
from nlpcompress.sharing import share_layers
from nlpcompress.stages.factorize import FactorizeConfig

INPUTS = {
    "input_ids": torch.tensor([[2, 7, 3, 9, 3, 1], [2, 9, 12, 7, 0, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
    "token_type_ids": torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]]),
}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**INPUTS).logits


def test_tables_of_low_rank_keep_the_logits_exactly_in_albert_layout():
    model = tiny_model()
    embeddings = model.base_model.embeddings
    torch.manual_seed(1)
    subspace, _ = torch.linalg.qr(torch.randn(32, 10))
    with torch.no_grad():
        for table in (
            embeddings.word_embeddings,
            embeddings.position_embeddings,
            embeddings.token_type_embeddings,
        ):
            table.weight.copy_(table.weight @ subspace @ subspace.T)
    before = logits(model)
    residual = albert_layout_embeddings(model, 12)
    assert residual < 1e-6 and model.config.embedding_size == 12
    assert embeddings.position_embeddings.weight.shape == (
        32,
        12,
    ) and embeddings.layer_norm.normalized_shape == (12,)
    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=0)


def test_a_smaller_width_approximates_better_with_more_directions():
    errors = []
    for rank in (8, 16, 31):
        model = tiny_model()
        before = logits(model)
        albert_layout_embeddings(model, rank)
        errors.append(float((logits(model) - before).abs().max()))
    assert errors[0] > errors[1] > errors[2]


def test_an_albert_shaped_model_exports_to_plain_albert_with_the_same_logits(tmp_path, minilm_path):
    from transformers import AutoTokenizer

    model = tiny_model()
    albert_layout_embeddings(model, 16)
    model = share_layers(model, [[0, 1]])
    albert = to_albert(model)
    assert isinstance(albert, AlbertForSequenceClassification) and albert.config.num_hidden_groups == 1
    record = export_albert(model, AutoTokenizer.from_pretrained(minilm_path), tmp_path / "albert", INPUTS)
    assert record["exported"] and record["max_abs_diff"] < 1e-5
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "albert")
    torch.testing.assert_close(logits(reloaded), logits(model), atol=1e-5, rtol=0)


def test_models_that_are_not_albert_say_why():
    with pytest.raises(ValueError, match="not at width E"):
        to_albert(tiny_model())
    uneven = tiny_model(heads_per_layer=[4, 2])
    albert_layout_embeddings(uneven, 16)
    assert "AlbertForSequenceClassification" in export_albert(uneven, None, None, INPUTS)["reason"]


def test_bad_albert_settings_are_refused_with_one_line():
    with pytest.raises(ValueError, match=r"embeddings rank 32: give a whole number in \[2, 31\]"):
        albert_layout_embeddings(tiny_model(), 32)
    with pytest.raises(ConfigError, match="needs embeddings_rank"):
        FactorizeConfig(embeddings_energy=0.9, embeddings_layout="albert")
    with pytest.raises(ConfigError, match="allowed: projection, albert"):
        FactorizeConfig(embeddings_rank=8, embeddings_layout="electra")


def test_a_recipe_ending_in_albert_structure_saves_an_albert_folder(tmp_path, tiny_bert_dir, glue_root):
    kd = {"method": "kd"}
    recipe = recipe_from_dict(
        {
            "model": str(tiny_bert_dir), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 48,
            "max_eval_samples": 32, "max_length": 32, "seed": 3, "output_dir": str(tmp_path / "out"),
            "training": {"max_steps": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3},
            "stages": [
                {"type": "finetune"},
                {"type": "factorize", "embeddings_rank": 8, "embeddings_layout": "albert", "distillation": kd},
                {"type": "share_layers", "num_groups": 1, "distillation": kd},
            ],
        }
    )  # fmt: skip
    results = run_recipe(recipe, progress=False).results
    assert results["albert_export"]["exported"] and results["structure"]["unique_layers"] == 1
    folder = tmp_path / "out" / "albert"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "albert"
    assert (folder / "tokenizer.json").is_file()
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] & 0o044  # readable like the rest
    assert "local_files_only" not in json.loads((folder / "tokenizer_config.json").read_text())
