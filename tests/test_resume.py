"""Resume after a crash: a run killed (SIGKILL) mid-stage continues from its last checkpoint, skips the
finished stages, and ends exactly as an uninterrupted run."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from nlpcompress import cli

KILL_SCRIPT = Path(__file__).with_name("_kill_run.py")
STAGES = [
    {"type": "finetune", "training": {"max_steps": 8}},
    {"type": "movement", "method": "movement", "sparsity": 0.5, "warmup_fraction": 0.0,
     "recovery": {"distillation": {"method": "kd"}}, "training": {"max_steps": 12}},
    {"type": "prune_heads", "target": 3, "strategy": "iterative", "step_fraction": 0.2, "score_samples": 16,
     "training": {"max_steps": 12, "eval_strategy": "steps", "eval_steps": 4}},
]  # fmt: skip


def write_recipe(folder: Path, model: Path, glue: Path, output: Path, stages: list | None = None) -> Path:
    recipe = {
        "model": str(model), "task": "sst2", "data_dir": str(glue), "max_train_samples": 64, "max_eval_samples": 32,
        "max_length": 32, "seed": 5, "output_dir": str(output),
        "training": {"learning_rate": 1e-3, "per_device_train_batch_size": 8, "logging_steps": 2},
        "stages": stages or STAGES,
    }  # fmt: skip
    path = folder / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def outcome(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    results = json.loads((folder / "results.json").read_text())
    return results, load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_bert_dir, glue_root):
    folder = tmp_path_factory.mktemp("whole")
    recipe = write_recipe(folder, tiny_bert_dir, glue_root, folder / "out")
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    return outcome(folder / "out")


def killed_then_resumed(
    folder: Path,
    stage: str,
    step: int,
    tiny_bert_dir: Path,
    glue_root: Path,
    capsys,
    stages: list | None = None,
):
    """SIGKILL at ``step`` of ``stage`` (``hessian``: at that Hessian-vector product), then the same command."""
    recipe = write_recipe(folder, tiny_bert_dir, glue_root, folder / "out", stages)
    command = [sys.executable, str(KILL_SCRIPT), stage, str(step), str(recipe), "--no-progress"]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    staging = folder / ".out.partial"
    assert not (folder / "out").exists() and staging.is_dir()
    if stage != "hessian":
        assert list((staging / "work" / stage).glob("checkpoint-*"))  # the killed stage left a checkpoint
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    return outcome(folder / "out")


@pytest.mark.parametrize(("stage", "step"), [("movement", 7), ("prune_heads", 6)])
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(
    uninterrupted, tmp_path, tiny_bert_dir, glue_root, capsys, caplog, stage, step
):
    caplog.set_level("INFO", logger="nlpcompress")
    results, weights = killed_then_resumed(tmp_path, stage, step, tiny_bert_dir, glue_root, capsys)
    finished = {"movement": "finetune", "prune_heads": "finetune, movement"}[stage]
    assert f"stages {finished} finished, continuing with {stage}" in caplog.text
    assert "resuming the stage from checkpoint-" in caplog.text
    expected_results, expected_weights = uninterrupted
    assert results["structure"] == expected_results["structure"]  # same masks, same heads pruned
    assert results["metrics"] == pytest.approx(expected_results["metrics"], abs=1e-6)
    assert [s["metrics"] for s in results["stages"]] == [s["metrics"] for s in expected_results["stages"]]
    assert results["stages"][2]["pruned"] == expected_results["stages"][2]["pruned"]
    assert weights.keys() == expected_weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(value, expected_weights[key], atol=1e-5, rtol=0)
    assert not (tmp_path / ".out.partial").exists()


def test_restart_discards_the_partial_run(tmp_path, tiny_bert_dir, glue_root, caplog):
    caplog.set_level("INFO", logger="nlpcompress")
    recipe = write_recipe(tmp_path, tiny_bert_dir, glue_root, tmp_path / "out")
    command = [sys.executable, str(KILL_SCRIPT), "movement", "5", str(recipe), "--no-progress"]
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == -signal.SIGKILL
    assert cli.main(["run", str(recipe), "--no-progress", "--restart"]) == 0
    assert "--restart: discarding the partial run" in caplog.text and "resuming" not in caplog.text


def test_the_same_recipe_and_seed_give_identical_masks_and_metrics(
    uninterrupted, tmp_path, tiny_bert_dir, glue_root
):
    recipe = write_recipe(tmp_path, tiny_bert_dir, glue_root, tmp_path / "out")
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    results, weights = outcome(tmp_path / "out")
    expected_results, expected_weights = uninterrupted
    assert [s["metrics"] for s in results["stages"]] == [s["metrics"] for s in expected_results["stages"]]
    assert results["stages"][2]["pruned"] == expected_results["stages"][2]["pruned"]
    assert all(torch.equal(value, expected_weights[key]) for key, value in weights.items())  # bit for bit


# Q-BERT: Hessian sensitivities choose the bits, then quantization-aware training; a kill inside the QAT
QBERT = [
    {"type": "finetune", "training": {"max_steps": 8}},
    {"type": "quantize", "method": "qbert", "avg_bits": 3, "candidate_bits": [2, 4], "hessian_samples": 16,
     "recovery": {"distillation": {"method": "kd"}}, "training": {"max_steps": 12}},
]  # fmt: skip


@pytest.fixture(scope="module")
def qbert_uninterrupted(tmp_path_factory, tiny_bert_dir, glue_root):
    folder = tmp_path_factory.mktemp("qbert-whole")
    recipe = write_recipe(folder, tiny_bert_dir, glue_root, folder / "out", QBERT)
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    return outcome(folder / "out")


@pytest.mark.parametrize(
    ("phase", "step", "resumed_from"),
    [
        ("quantize", 6, "resuming the stage from checkpoint-"),  # inside quantization-aware training
        ("hessian", 5, "continuing with quantize"),  # inside the power iteration: the stage starts over
    ],
)
def test_a_run_killed_inside_q_bert_ends_with_the_same_bits_and_integers(
    qbert_uninterrupted, tmp_path, tiny_bert_dir, glue_root, capsys, caplog, phase, step, resumed_from
):
    caplog.set_level("INFO", logger="nlpcompress")
    results, weights = killed_then_resumed(tmp_path, phase, step, tiny_bert_dir, glue_root, capsys, QBERT)
    assert "stages finetune finished, continuing with quantize" in caplog.text
    assert resumed_from in caplog.text
    if phase == "hessian":  # killed before the stage's first checkpoint
        assert "resuming the stage from checkpoint-" not in caplog.text
    expected_results, expected_weights = qbert_uninterrupted
    assert results["stages"][1]["bits_per_layer"] == expected_results["stages"][1]["bits_per_layer"]
    assert results["stages"][1]["sensitivity"] == expected_results["stages"][1]["sensitivity"]
    assert [s["metrics"] for s in results["stages"]] == [s["metrics"] for s in expected_results["stages"]]
    assert results["structure"] == expected_results["structure"]
    assert weights.keys() == expected_weights.keys()
    for key, value in weights.items():  # packed integer codes equal, scales equal
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, expected_weights[key], atol=1e-6, rtol=0)
        else:
            assert torch.equal(value, expected_weights[key]), key


def test_a_run_killed_while_saving_is_never_taken_for_finished_and_resumes_at_the_save(
    uninterrupted, tmp_path, tiny_bert_dir, glue_root, caplog
):
    caplog.set_level("INFO", logger="nlpcompress")
    recipe = write_recipe(tmp_path, tiny_bert_dir, glue_root, tmp_path / "out")
    kill_at_card = (  # SIGKILL once the model is saved into the staging folder, before results.json is written
        "import os, signal, sys; import nlpcompress.runner as runner; "
        "runner.write_model_card = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL); "
        f"from nlpcompress import cli; sys.exit(cli.main(['run', {str(recipe)!r}, '--no-progress']))"
    )
    killed = subprocess.run([sys.executable, "-c", kill_at_card], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # nothing published
    assert (tmp_path / ".out.partial" / "model.safetensors").is_file()  # the save was under way
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    assert "stages finetune, movement, prune_heads finished, continuing with the save" in caplog.text
    results, weights = outcome(tmp_path / "out")
    expected_results, expected_weights = uninterrupted
    assert [s["metrics"] for s in results["stages"]] == [s["metrics"] for s in expected_results["stages"]]
    for key, value in weights.items():
        torch.testing.assert_close(value, expected_weights[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("point", ["before the progress record", "after the progress record"])
def test_a_run_killed_between_stages_resumes_at_the_next_stage(
    uninterrupted, tmp_path, tiny_bert_dir, glue_root, caplog, point
):
    caplog.set_level("INFO", logger="nlpcompress")
    recipe = write_recipe(tmp_path, tiny_bert_dir, glue_root, tmp_path / "out")
    # SIGKILL once movement (stage 2) is finished: its resume point is saved, its progress record
    # is about to be written, or was just written
    after = point == "after the progress record"
    kill_between = (
        "import os, signal, sys; import nlpcompress.runner as runner; write = runner._write_progress\n"
        "def write_and_kill(staging, recipe, records):\n"
        f"    if {after}: write(staging, recipe, records)\n"
        "    if len(records) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"    if not {after}: write(staging, recipe, records)\n"
        "runner._write_progress = write_and_kill\n"
        f"from nlpcompress import cli; sys.exit(cli.main(['run', {str(recipe)!r}, '--no-progress']))"
    )
    killed = subprocess.run([sys.executable, "-c", kill_between], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    finished = "finetune, movement" if after else "finetune"
    assert f"stages {finished} finished, continuing with" in caplog.text
    results, weights = outcome(tmp_path / "out")
    expected_results, expected_weights = uninterrupted
    assert [s["metrics"] for s in results["stages"]] == [s["metrics"] for s in expected_results["stages"]]
    assert results["structure"] == expected_results["structure"]
    for key, value in weights.items():
        torch.testing.assert_close(value, expected_weights[key], atol=1e-5, rtol=0)
