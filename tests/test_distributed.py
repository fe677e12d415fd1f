"""Two processes (torchrun, gloo on CPU) take the same data-dependent decisions as one on the same data
(heads, FFN neurons, global TopK masks, the vocabulary kept, learned movement masks, Hessian
sensitivities and bits), split the training rows, and only the main process writes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _require import missing
from safetensors.torch import load_file

TORCHRUN = Path(sys.executable).with_name("torchrun")
if shutil.which(str(TORCHRUN)) is None:
    missing(f"torchrun beside {sys.executable}", "make setup (torch installs torchrun)")


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory, minilm_path) -> Path:
    """A tiny random BERT without dropout: two processes then differ from one only in float rounding."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("no-dropout-bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


PRUNING = [
    # decisions on the same weights: all-reduced importance, a global TopK over all scores
    {"type": "prune_heads", "target": 3, "neurons": 0.3, "score_samples": 32, "recovery": {"train": False}},
    {"type": "movement", "method": "magnitude", "sparsity": 0.6, "scope": "global",
     "training": {"learning_rate": 0.0}},
    # then training split across the processes (its batches differ from one process's)
    {"type": "finetune"},
]  # fmt: skip

# With 16 training rows and a global batch of 16, every step sees all rows in one process or two, so
# training takes the same steps and the masks it learns can be compared.
LEARNED = [
    {"type": "prune_vocab"},
    {"type": "movement", "method": "movement", "sparsity": 0.5, "warmup_fraction": 0.0,
     "training": {"learning_rate": 1e-2}},
    # each Hessian batch of 8 rows is split across the processes
    {"type": "quantize", "method": "qbert", "avg_bits": 3, "candidate_bits": [2, 4], "hessian_samples": 16,
     "hessian_batch_size": 8, "hessian_tolerance": 1e-6, "hessian_iterations": 50, "recovery": {"train": False}},
]  # fmt: skip


def run(folder: Path, model: Path, glue: Path, processes: int, stages: list, train_rows: int = 64) -> dict:
    recipe = {
        "model": str(model), "task": "sst2", "data_dir": str(glue), "max_train_samples": train_rows,
        "max_eval_samples": 48, "max_length": 32, "seed": 11, "output_dir": str(folder / "out"),
        # the same global batch: 16 rows a step, from 2 × 8 or 1 × 16
        "training": {"learning_rate": 1e-3, "per_device_train_batch_size": 16 // processes, "max_steps": 4},
        "stages": stages,
    }  # fmt: skip
    folder.mkdir()
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    launcher = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [
        *launcher,
        str(Path(sys.executable).with_name("nlpcompress")),
        "run",
        str(path),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("model saved to") == 1  # one report, from the main process
    return json.loads((folder / "out" / "results.json").read_text())


def test_two_processes_decide_as_one(tmp_path, no_dropout_bert, glue_root):
    one = run(tmp_path / "one", no_dropout_bert, glue_root, 1, PRUNING)
    two = run(tmp_path / "two", no_dropout_bert, glue_root, 2, PRUNING)
    prune_one, prune_two = one["stages"][0], two["stages"][0]
    assert prune_two["pruned"] == prune_one["pruned"] and prune_two["ffn_widths"] == prune_one["ffn_widths"]
    assert prune_two["metric_before_recovery"] == pytest.approx(prune_one["metric_before_recovery"], abs=1e-9)
    assert (
        two["stages"][1]["encoder_sparsity"]
        == one["stages"][1]["encoder_sparsity"]
        == pytest.approx(0.6, abs=0.01)
    )
    assert two["stages"][1]["metrics"] == pytest.approx(one["stages"][1]["metrics"], abs=1e-9)
    assert two["structure"]["heads_per_depth"] == one["structure"]["heads_per_depth"]
    assert two["stages"][2]["train_steps"] == one["stages"][2]["train_steps"] == 4  # 64 rows, 16 a step
    # the processes train one model: DDP all-reduces the gradients (accelerate needs use_cpu on CPU)
    assert (two["stages"][2]["processes"], two["stages"][2]["data_parallel"]) == (2, True)
    assert (one["stages"][2]["processes"], one["stages"][2]["data_parallel"]) == (1, False)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["out", "recipe.yaml"]  # no leftovers
    scores = [
        json.loads(
            (
                tmp_path / n / "out" / "artifacts" / "prune_heads" / "prune_heads-head-importance.json"
            ).read_text()
        )
        for n in ("one", "two")
    ]
    for key in ("importance", "neuron_importance"):  # all-reduced: the scores of all the rows, on every rank
        for layer_one, layer_two in zip(scores[0][key], scores[1][key], strict=True):
            assert layer_two == pytest.approx(layer_one, rel=1e-5, abs=1e-9)
    assert scores[1]["pruned_neurons"] == scores[0]["pruned_neurons"]


def test_two_processes_keep_the_same_vocabulary_and_learn_the_same_masks_and_bits(
    tmp_path, no_dropout_bert, glue_root
):
    one = run(tmp_path / "one", no_dropout_bert, glue_root, 1, LEARNED, train_rows=16)
    two = run(tmp_path / "two", no_dropout_bert, glue_root, 2, LEARNED, train_rows=16)
    vocab_one, vocab_two = (
        (tmp_path / name / "out" / "tokenizer.json").read_text() for name in ("one", "two")
    )
    assert (
        vocab_two == vocab_one
        and one["stages"][0]["vocab_size_after"] == two["stages"][0]["vocab_size_after"]
    )
    masks_one, masks_two = (
        load_file(tmp_path / name / "out" / "model.safetensors") for name in ("one", "two")
    )
    movement_one, movement_two = one["stages"][1], two["stages"][1]
    assert movement_two["encoder_sparsity"] == movement_one["encoder_sparsity"]
    quantize_one, quantize_two = one["stages"][2], two["stages"][2]
    for layer, sensitivity in quantize_one["sensitivity"].items():
        assert quantize_two["sensitivity"][layer]["eigenvalues"] == pytest.approx(
            sensitivity["eigenvalues"], rel=1e-4
        )
    assert quantize_two["bits_per_layer"] == quantize_one["bits_per_layer"]
    assert masks_two.keys() == masks_one.keys()
    for key, value in masks_one.items():  # the stored sparse weights: the same positions kept, same codes
        if not value.dtype.is_floating_point:
            assert torch.equal(masks_two[key], value), key
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-6)
