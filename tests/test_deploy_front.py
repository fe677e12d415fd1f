"""The deploy front: records of one variant's seeds combine into mean ± std, never across CPUs."""

import json
import statistics

import pytest

from benchmarks.deploy import front_table, reference_score, variant_of
from nlpcompress.glue import get_task

XEON = {"model": "Xeon", "instruction_sets": ["avx512_vnni"]}


def _record(run: str, score: float, retention: float, bs1: float, bs32: float, cpu=XEON) -> dict:
    row = {
        "score": score,
        "retention": retention,
        "smaller": 25.0,
        "speedup": {"bs1_seq128": bs1, "bs32_seq128": bs32},
    }
    return {"run": f"../runs/{run}", "cpu": cpu, "runs_on": {"openvino-int8": row}}


def test_variant_is_the_run_folder_without_its_seed():
    assert variant_of({"run": "../runs/sst2-full-stack-fast-s43"}) == "sst2-full-stack-fast"
    assert variant_of({"run": "../runs/sst2-full-stack-fast-tables8"}) == "sst2-full-stack-fast-tables8"
    assert (
        variant_of({"run": "runs/glue-small/sst2/seed1/full-stack", "name": "sst2-full-stack-s1"})
        == "sst2-full-stack"
    )


def test_seeds_combine_into_mean_and_sample_std():
    records = {
        "a": _record("fs-s42", 0.82, 0.97, 10.0, 12.0),
        "b": _record("fs-s43", 0.80, 0.95, 12.0, 14.0),
        "c": _record("fast-s42", 0.79, 0.94, 15.5, 20.0),
    }
    lines = front_table(records).splitlines()
    combined = next(line for line in lines if line.startswith("| fs |"))
    std = statistics.stdev([82.0, 80.0])
    assert f"| 2 | 81.00 ± {std:.2f} | 96.0% ± {statistics.stdev([97.0, 95.0]):.1f} |" in combined
    assert "| 11.00× ± 1.41 | 13.00× ± 1.41 |" in combined
    single = next(line for line in lines if line.startswith("| fast |"))
    assert "| 1 | 79.00 ± — | 94.0% ± — |" in single and "15.50× ± —" in single


def test_records_timed_on_two_cpus_do_not_combine():
    amd = {"model": "AMD EPYC", "instruction_sets": ["avx2"]}
    records = {"a": _record("fs-s42", 0.8, 0.95, 10, 12), "b": _record("fs-s43", 0.8, 0.95, 14, 16, cpu=amd)}
    with pytest.raises(ValueError, match="fs: its records were timed on 2 CPUs"):
        front_table(records)


def _run(folder, first: dict, model: str) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"stages": [first]}))
    (folder / "recipe.yaml").write_text(f"model: {model}\n")


def test_retention_is_against_the_runs_teacher_or_the_baseline_it_compressed(tmp_path):
    sst2 = get_task("sst2")
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "results.json").write_text(json.dumps({"score": 0.8544}))
    own = tmp_path / "own"
    _run(own, {"type": "finetune", "metrics": {"accuracy": 0.8452}}, "minilm-l6")
    assert reference_score(own, baseline, sst2) == (0.8452, "the run's finetune stage (its teacher)")
    harness = tmp_path / "harness"
    _run(harness, {"type": "distill", "metrics": {"accuracy": 0.83}}, str(baseline))
    assert reference_score(harness, baseline, sst2)[0] == 0.8544
    other = tmp_path / "other"
    _run(other, {"type": "distill", "metrics": {"accuracy": 0.83}}, str(tmp_path / "elsewhere"))
    with pytest.raises(SystemExit, match="not from a fine-tuning run it can be scored against"):
        reference_score(other, baseline, sst2)
