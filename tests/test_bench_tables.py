"""The Q-BERT and sharing benchmarks' arms and summary tables (the runs themselves are the stages', tested
in their own files)."""

import pytest

from benchmarks.qbert import arms, summarise, table
from nlpcompress.quant.config import QuantizationConfig


def test_every_arm_is_a_valid_stage_at_the_same_budget():
    stages = arms(3, 2, 4)
    assert list(stages) == ["hessian", "uniform", "reverse", "hessian-matrix"]
    for stage in stages.values():
        config = QuantizationConfig(**stage)
        assert config.avg_bits == 3
    assert stages["hessian-matrix"]["groups"] == "matrix" and stages["hessian"]["groups"] == "head"


def test_seeds_are_summarised_per_arm_and_tabled_against_the_baseline():
    runs = {
        f"{arm}-w3-s{seed}": {
            "arm": arm,
            "accuracy": accuracy,
            "bits_per_layer": {"layers.0": 4, "layers.1": 2},
        }
        for arm, values in (("hessian", (0.80, 0.82)), ("reverse", (0.70, 0.70)))
        for seed, accuracy in zip((42, 43), values, strict=True)
    }
    summary = summarise(runs)
    assert summary["hessian"]["mean"] == pytest.approx(0.81) and summary["hessian"]["seeds"] == 2
    assert summary["reverse"]["std"] == 0
    lines = table({"teacher": {"accuracy": 0.81}, "summary": summary, "runs": runs})
    assert lines[2] == "| hessian | 4/2 | 81.00 ± 1.41% | 100.0% | 2 |"


def test_the_sharing_table_compares_arms_under_one_recovery():
    from benchmarks.sharing import ARMS, stages
    from nlpcompress.recipe import recipe_from_dict

    for arm, share in ARMS.items():
        arm_stages = stages(share, 128)
        recipe = recipe_from_dict(
            {"model": "minilm-l6", "task": "sst2", "output_dir": "x", "stages": arm_stages}
        )
        assert [stage.type for stage in recipe.stages] == ["factorize", "share_layers"]
        assert recipe.stages[1].num_groups == (6 if arm == "not-shared" else 1)
        distillation = recipe.stages[1].recovery_config().distillation
        assert distillation is not None and distillation.method == "kd" and distillation.alpha_ce == 0.9


def test_result_files_name_paths_relative_to_the_repository():
    from benchmarks.paths import REPO, SHARED, portable

    record = {
        "model": str(REPO / "runs" / "glue-small" / "sst2" / "seed42" / "baseline"),
        "recipe": {"data_dir": str(SHARED / "data" / "glue"), "stages": [str(REPO)]},
        "teacher": "/tmp/runs/baseline",  # outside both: kept as it was
        "task": "sst2",
    }
    assert portable(record) == {
        "model": "runs/glue-small/sst2/seed42/baseline",
        "recipe": {"data_dir": "../shared/data/glue", "stages": ["."]},
        "teacher": "/tmp/runs/baseline",
        "task": "sst2",
    }
