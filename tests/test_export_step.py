"""A recipe's closing `export:` step: the saved model exported and verified, its accuracy measured through
the runtime and its speed beside PyTorch fp32, all in results.json and the model card; a quantized
(packed) model exports too."""

import json

import pytest
from _require import require_module

from nlpcompress import cli
from nlpcompress.cli import run_summary
from nlpcompress.errors import UserError
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import run_recipe

require_module("onnxruntime")


def recipe(tmp_path, tiny_bert_dir, glue_root, stages, **extra):
    return recipe_from_dict(
        {
            "model": str(tiny_bert_dir), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 48,
            "max_eval_samples": 32, "max_length": 32, "seed": 3, "output_dir": str(tmp_path / "out"),
            "training": {"max_steps": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3},
            "stages": stages, **extra,
        }
    )  # fmt: skip


def test_an_int8_export_step_reports_accuracy_and_speed_through_the_runtime(
    tmp_path, tiny_bert_dir, glue_root
):
    stages = [{"type": "finetune"}]
    results = run_recipe(
        recipe(tmp_path, tiny_bert_dir, glue_root, stages, export={"format": "onnx", "int8": True}),
        progress=False,
    ).results
    runtime = results["runtime"]
    folder = tmp_path / "out"
    printed = run_summary(results, folder).splitlines()
    assert printed[-1].startswith(
        f"deployed on onnxruntime-int8: accuracy={runtime['metrics']['accuracy']:.4f} | "
    )
    assert f"{runtime['speedup_bs1_seq128']:.2f}x (bs1)" in printed[-1]
    assert runtime["backend"] == "onnxruntime-int8"
    assert (folder / "onnx" / "model_int8.onnx").is_file() and (folder / "onnx" / "export.json").is_file()
    assert set(runtime["metrics"]) == set(results["metrics"])
    assert runtime["score_vs_torch"] == pytest.approx(runtime["score"] / results["score"], abs=1e-4)
    assert runtime["speedup_bs1_seq128"] > 0 and "instruction_sets" in runtime["cpu"]
    assert runtime["export"]["files"]["model_int8.onnx"]["verification"]
    assert "onnx/model_int8.onnx" in (folder / "README.md").read_text()


def test_a_packed_quantized_model_exports_with_the_logits_it_was_saved_with(
    tmp_path, tiny_bert_dir, glue_root
):
    stages = [{"type": "finetune"}, {"type": "quantize", "method": "ptq", "avg_bits": 4}]
    results = run_recipe(
        recipe(tmp_path, tiny_bert_dir, glue_root, stages, export={"format": "onnx"}), progress=False
    ).results
    assert results["runtime"]["metrics"] == pytest.approx(results["metrics"], abs=1e-6)


def test_export_options_are_checked_when_the_recipe_is_read(tmp_path, tiny_bert_dir, glue_root):
    with pytest.raises(UserError, match=r"export.calibration_samples: .*--int8 exports only"):
        recipe(
            tmp_path,
            tiny_bert_dir,
            glue_root,
            [{"type": "finetune"}],
            export={"format": "onnx", "calibration_samples": 8},
        )
    with pytest.raises(UserError, match=r"export\.format"):
        recipe(tmp_path, tiny_bert_dir, glue_root, [{"type": "finetune"}], export={"format": "tflite"})


def test_bench_against_a_baseline_shows_each_sides_recorded_score_and_the_retention(
    tmp_path, tiny_bert_dir, glue_root, capsys
):
    stages = [{"type": "finetune"}]
    results = run_recipe(
        recipe(tmp_path, tiny_bert_dir, glue_root, stages, export={"format": "onnx", "int8": True}),
        progress=False,
    ).results
    folder = tmp_path / "out"
    timed = [
        "bench",
        str(folder),
        "--backend",
        "onnxruntime-int8",
        "--baseline",
        str(folder),
        "--repeats",
        "2",
    ]
    capsys.readouterr()  # the run's own output
    assert cli.main([*timed, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["score"] == results["runtime"]["score"]  # measured through the runtime
    assert report["baseline"]["score"] == results["score"]  # the baseline folder in PyTorch
    assert report["retention"] == pytest.approx(results["runtime"]["score"] / results["score"], abs=1e-4)
    assert cli.main(timed) == 0
    model_line, baseline_line, summary = capsys.readouterr().out.splitlines()
    assert f"score {100 * results['runtime']['score']:6.2f}" in model_line
    assert f"score {100 * results['score']:6.2f}" in baseline_line
    assert summary.startswith(f"{100 * report['retention']:.1f}% of the baseline's score, speedup bs1 ")
    assert f"{1 / report['size_ratio']:.1f}x smaller" in summary
