"""The GLUE harness (benchmarks/glue.py) on its ci suite, its recipe rewriting, and the statistics it reports."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _require import require_module

import benchmarks.glue as glue
from benchmarks.paths import REPO
from nlpcompress.comparisons import mean_std, paired_bootstrap, pareto_front
from nlpcompress.errors import UserError
from nlpcompress.glue import get_task


def ci_args(tmp_path: Path, glue_root: Path, *extra: str) -> list[str]:
    return [
        "--suite",
        "ci",
        "--data-dir",
        str(glue_root),
        "--output-dir",
        str(tmp_path / "results"),
        "--work-dir",
        str(tmp_path / "work"),
        *extra,
    ]


def recorded_runs(monkeypatch) -> list:
    """The recipes the harness runs from now on, in order (they still run)."""
    real_run, ran = glue.run_recipe, []
    monkeypatch.setattr(glue, "run_recipe", lambda recipe, **kw: ran.append(recipe) or real_run(recipe, **kw))
    return ran


def test_ci_suite_end_to_end_then_resume_after_an_interruption(tmp_path, glue_root, monkeypatch) -> None:
    real_run = glue.run_recipe

    def interrupted(recipe, **kwargs):
        if recipe.output_dir.endswith("block-movement"):
            raise KeyboardInterrupt
        return real_run(recipe, **kwargs)

    monkeypatch.setattr(glue, "run_recipe", interrupted)
    recipes = "head-pruning,block-movement,factorized-embeddings"  # E = 128 does not fit the tiny model
    args = ci_args(tmp_path, glue_root, "--tasks", "stsb", "--recipes", recipes)
    with pytest.raises(KeyboardInterrupt):
        glue.main(args)
    result_file = tmp_path / "results" / "stsb.json"
    assert set(json.loads(result_file.read_text())["rows"]) == {"baseline@42", "head-pruning@42"}

    counted = []
    monkeypatch.setattr(
        glue, "run_recipe", lambda recipe, **kw: counted.append(recipe) or real_run(recipe, **kw)
    )
    glue.main([*args, "--resume"])
    assert [Path(r.output_dir).name for r in counted] == ["block-movement", "factorized-embeddings"]

    results = json.loads(result_file.read_text())
    assert set(results["rows"]) == {
        "baseline@42",
        "head-pruning@42",
        "block-movement@42",
        "factorized-embeddings@42",
    }
    assert "embeddings rank 128" in results["rows"]["factorized-embeddings@42"]["error"]
    assert "factorized-embeddings" not in results["summary"]
    block = results["rows"]["block-movement@42"]
    base = results["rows"]["baseline@42"]
    assert block["retention"] == pytest.approx(block["score"] / base["score"], abs=1e-4)
    assert block["params"]["encoder"] < base["params"]["encoder"]  # heads and neurons really removed
    assert block["resolved_recipe"]["teacher"] == "input"  # distils from the cached baseline
    assert block["resolved_recipe"]["model"] == str(tmp_path / "work" / "stsb" / "seed42" / "baseline")
    assert [s["type"] for s in block["resolved_recipe"]["stages"]] == ["movement"]
    shapes = {"bs1_seq128", "bs32_seq128", "bs1_seq32", "bs32_seq32"}  # seq 128 and the suite's own
    assert set(block["latency_ms"]) == set(block["speedup"]) == set(block["timing"]["model"]) == shapes
    assert block["timing"]["model"]["bs1_seq128"]["passes"] >= 60
    assert block["timing"]["baseline"]["bs32_seq32"]["passes"] >= 20
    assert block["timed_on"]["threads"] >= 1 and "omp_wait_policy" in block["timed_on"]
    low, high = block["retention_ci95"]
    assert low <= high
    assert results["summary"]["block-movement"]["seeds"] == [42]
    assert results["cpu"]["model"]
    table = (tmp_path / "results" / "stsb.md").read_text()
    assert table.startswith("### stsb (ci suite, score: mean of pearson and spearmanr)\n")
    assert table.count("\n| ") == 4  # header and three recipes
    assert [step for step, _ in block["waterfall"]] == ["baseline", "movement"]
    assert [score for _, score in block["waterfall"]] == pytest.approx(
        [base["score"], block["score"]], abs=1e-4
    )
    assert "Recipes that could not run:\n- factorized-embeddings (seed 42): " in table
    assert (tmp_path / "results" / "stsb.png").stat().st_size > 0
    assert not list((tmp_path / "results").glob(".*.tmp"))


def test_a_task_setting_retrains_the_cached_baseline_and_reruns_its_rows(
    tmp_path, glue_root, monkeypatch
) -> None:
    args = ci_args(tmp_path, glue_root, "--tasks", "rte", "--recipes", "head-pruning")
    glue.main(args)
    ran = recorded_runs(monkeypatch)
    glue.main([*args, "--resume"])
    assert ran == []  # same settings: the cached baseline and the finished row are kept
    shutil.rmtree(tmp_path / "work" / "rte" / "seed42" / "baseline")  # a lost cache (a new checkout)
    glue.main([*args, "--resume"])
    assert [Path(r.output_dir).name for r in ran] == ["baseline"]  # retrained to the same weights
    ran.clear()

    result_file = tmp_path / "results" / "rte.json"
    first = json.loads(result_file.read_text())["rows"]["head-pruning@42"]
    glue.main([*args, "--resume", "--retime"])
    assert ran == []  # timed again, not trained again
    again = json.loads(result_file.read_text())["rows"]["head-pruning@42"]
    assert again["speedup"] == first["speedup"]  # the first timing stays the row's headline
    assert len(again["retimed"]) == 1
    assert set(again["retimed"][0]["speedup"]) == set(first["speedup"])
    assert again["retimed"][0]["timed_on"]["threads"] >= 1
    assert "timings: bs1 " in (tmp_path / "results" / "rte.md").read_text()

    earlier = json.loads(result_file.read_text())
    earlier["rows"]["distilbert@42"] = earlier["rows"]["head-pruning@42"] | {"recipe": "distilbert"}
    result_file.write_text(json.dumps(earlier))  # a row this resume does not rerun
    setting = glue.TaskSetting(max_length=16, baseline_training={"learning_rate": 3.0e-3})
    monkeypatch.setitem(glue.SUITES, "ci", dataclasses.replace(glue.SUITES["ci"], per_task={"rte": setting}))
    glue.main([*args, "--resume"])
    assert [Path(r.output_dir).name for r in ran] == ["baseline", "head-pruning"]
    baseline, pruned = ran
    assert (baseline.max_length, baseline.training["learning_rate"]) == (16, 3.0e-3)
    assert (pruned.max_length, pruned.training["learning_rate"]) == (16, 1.0e-4)  # the recipe's own
    results = json.loads((tmp_path / "results" / "rte.json").read_text())
    assert results["rows"]["head-pruning@42"]["baseline_score"] == results["rows"]["baseline@42"]["score"]
    assert results["rows"]["head-pruning@42"]["resolved_recipe"]["max_length"] == 16
    assert set(results["rows"]) == {"baseline@42", "head-pruning@42"}  # never kept under the new settings
    command = results["rows"]["head-pruning@42"]["command"]  # each row names the run that made it
    assert command.startswith("python -m benchmarks.glue ") and command.endswith(" --resume")
    assert results["command"] == command  # a file begun again: its command is the run that began it
    assert set(results["summary"]) == {"baseline", "head-pruning"}


def test_changed_task_data_retrains_the_cached_baseline_and_reruns_its_rows(
    tmp_path, glue_root, monkeypatch
) -> None:
    data = tmp_path / "glue"
    (data / "rte").mkdir(parents=True)
    for split in ("train", "validation"):  # the first rows of RTE, as a user's own copy
        lines = (glue_root / "rte" / f"{split}.tsv").read_text().splitlines(keepends=True)
        (data / "rte" / f"{split}.tsv").write_text("".join(lines[:80]))
    args = ci_args(tmp_path, data, "--tasks", "rte", "--recipes", "head-pruning")
    glue.main(args)
    ran = recorded_runs(monkeypatch)
    glue.main([*args, "--resume"])
    assert ran == []  # the same data: kept
    before = json.loads((tmp_path / "results" / "rte.json").read_text())["rows"]["head-pruning@42"][
        "row_hash"
    ]
    train = data / "rte" / "train.tsv"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:-1]))  # one training row less
    glue.main([*args, "--resume"])
    assert [Path(r.output_dir).name for r in ran] == ["baseline", "head-pruning"]
    rows = json.loads((tmp_path / "results" / "rte.json").read_text())["rows"]
    assert rows["head-pruning@42"]["row_hash"] != before
    baseline = json.loads((tmp_path / "work" / "rte" / "seed42" / "baseline" / "results.json").read_text())
    assert baseline["data"] == {"source": str((data / "rte").resolve()), "sha256": baseline["data"]["sha256"]}
    assert baseline["data"]["sha256"] == glue.data_record(get_task("rte"), str(data))["sha256"]


def test_a_users_task_gets_its_own_report(tmp_path, glue_root) -> None:
    lines = (glue_root / "sst2" / "train.tsv").read_text().splitlines()
    data = tmp_path / "reviews.csv"
    data.write_text(
        "text,stars\n"
        + "".join(f'"{f[0]}",{3 + 2 * int(f[1])}\n' for f in (x.split("\t") for x in lines[1:81]))
    )
    task_file = tmp_path / "reviews.yaml"
    task_file.write_text(
        json.dumps(
            {
                "name": "reviews",
                "data": {"train": str(data)},
                "text": "text",
                "label": "stars",
                "metric": "macro_f1",
            }
        )
    )
    glue.main(ci_args(tmp_path, glue_root, "--tasks", str(task_file), "--recipes", "head-pruning"))
    results = json.loads((tmp_path / "results" / "reviews.json").read_text())
    assert set(results["rows"]) == {"baseline@42", "head-pruning@42"}
    assert results["rows"]["head-pruning@42"]["metrics"].keys() == {"macro_f1"}
    assert results["rows"]["head-pruning@42"]["resolved_recipe"]["task"]["label"] == "stars"
    table = (tmp_path / "results" / "reviews.md").read_text()
    assert table.startswith("### reviews (ci suite, score: macro_f1)\n")


def test_a_recipe_with_its_own_vocabulary_is_scored_with_its_own_tokenizer(tmp_path, glue_root) -> None:
    recipe = tmp_path / "vocab.yaml"
    recipe.write_text("model: x\ntask: sst2\noutput_dir: x\nstages:\n- type: finetune\n- type: prune_vocab\n")
    glue.main(ci_args(tmp_path, glue_root, "--tasks", "sst2", "--recipes", str(recipe)))
    row = json.loads((tmp_path / "results" / "sst2.json").read_text())["rows"][f"{recipe}@42"]
    assert (
        row["params"]["embeddings"] < 30522 * 32
        and row["resolved_recipe"]["stages"][0]["type"] == "prune_vocab"
    )


def test_an_export_only_recipe_is_the_baseline_scored_and_timed_on_its_runtime(tmp_path, glue_root) -> None:
    require_module("onnxruntime")
    recipe = tmp_path / "int8.yaml"
    recipe.write_text(
        "model: x\ntask: sst2\noutput_dir: x\nstages:\n- type: finetune\nexport: {format: onnx, int8: true}\n"
    )
    glue.main(ci_args(tmp_path, glue_root, "--tasks", "sst2", "--recipes", str(recipe)))
    results = json.loads((tmp_path / "results" / "sst2.json").read_text())
    row, base = results["rows"][f"{recipe}@42"], results["rows"]["baseline@42"]
    assert [s["type"] for s in row["resolved_recipe"]["stages"]] == ["evaluate"]
    assert (row["backend"], base["backend"]) == ("onnxruntime-int8", "torch")
    run = json.loads((tmp_path / "work" / "sst2" / "seed42" / "int8" / "results.json").read_text())
    assert run["score"] == base["score"]  # evaluated as it came: the baseline's own score
    assert row["score"] == run["runtime"]["score"]  # the row's score is the int8 runtime's
    assert row["size_bytes"] < 0.5 * base["size_bytes"]  # int8 weights: the file the runtime loads
    assert f"| {recipe} | onnxruntime-int8 | 1 |" in (tmp_path / "results" / "sst2.md").read_text()


def test_a_recipe_that_only_fine_tunes_is_refused() -> None:
    data = {"stages": [{"type": "finetune"}], "training": {}}
    with pytest.raises(UserError, match=r"r.yaml: only fine-tunes; it is the baseline"):
        glue.from_baseline(data, Path("base"), "r.yaml")


def test_a_plain_finetune_is_replaced_by_the_cached_baseline(tmp_path) -> None:
    raw = {"stages": [{"type": "finetune"}, {"type": "distill", "method": "kd"}], "training": {}}
    data = glue.suite_recipe(
        raw, glue.SUITES["small"], get_task("rte"), 1, "minilm-l6", tmp_path / "out", None
    )
    moved = glue.from_baseline(data, tmp_path / "base", "r.yaml")
    assert moved["model"] == str(tmp_path / "base")
    assert moved["teacher"] == "input"
    assert moved["stages"] == [{"type": "distill", "method": "kd"}]
    # 128: RTE's own sequence length in the small suite
    assert (moved["task"], moved["seed"], moved["max_length"]) == ("rte", 1, 128)

    pruning = {**data, "stages": [{"type": "finetune"}, {"type": "prune_heads", "target": 0.5}]}
    assert glue.from_baseline(pruning, tmp_path / "base", "r.yaml").get("teacher") is None

    compresses_its_input = {**data, "teacher": "input", "stages": [{"type": "prune_heads", "target": 0.5}]}
    given = glue.from_baseline(compresses_its_input, tmp_path / "base", "r.yaml")
    assert given == {
        **compresses_its_input,
        "model": str(tmp_path / "base"),
    }  # demo.yaml: the baseline is its input

    own = {"stages": [{"type": "finetune", "learning_rate_note": 1}, {"type": "prune_heads"}]}
    assert (
        glue.from_baseline(own, tmp_path / "base", "r.yaml") is own
    )  # not a plain finetune: runs as written


def test_bad_options_name_what_is_allowed(tmp_path, glue_root) -> None:
    with pytest.raises(UserError, match=r"--recipes: no recipe 'nope' .*allowed: .*baseline, block-movement"):
        glue.main(ci_args(tmp_path, glue_root, "--recipes", "nope"))
    with pytest.raises(UserError, match=r"unknown task 'sst3'; allowed: cola"):
        glue.main(ci_args(tmp_path, glue_root, "--tasks", "sst3"))
    with pytest.raises(UserError, match=r"--seeds 9: give 1 to 5"):
        glue.main(ci_args(tmp_path, glue_root, "--seeds", "9"))
    assert not (tmp_path / "results").exists()


def test_the_waterfall_shows_each_steps_mean_over_seeds_and_marks_one_seed() -> None:
    from benchmarks.glue_report import waterfall_lines

    fall = [["baseline", 0.85], ["distill", 0.84], ["quantize", 0.83], ["on onnxruntime-int8", 0.82]]
    rows = {
        "full-stack@1": {"recipe": "full-stack", "waterfall": fall},
        "full-stack@2": {"recipe": "full-stack", "waterfall": [[n, v + 0.01] for n, v in fall]},
        "qbert@1": {"recipe": "qbert", "waterfall": fall[:3]},
        "head-pruning@1": {"recipe": "head-pruning", "waterfall": fall[:2]},  # one stage: no waterfall
    }
    lines = waterfall_lines(rows)
    assert lines[3] == (
        "- full-stack (2 seeds): baseline 85.50 ± 0.71 → distill 84.50 ± 0.71 → quantize 83.50 ± 0.71 → "
        "on onnxruntime-int8 82.50 ± 0.71"
    )
    assert lines[4] == "- qbert (1 seed): baseline 85.00 → distill 84.00 → quantize 83.00"
    assert len(lines) == 5


def test_pareto_front_matches_a_hand_computed_one() -> None:
    # (accuracy up, latency down): b dominates d; e ties c exactly and both stay; a is the most accurate
    points = [(0.90, 40.0), (0.88, 20.0), (0.85, 10.0), (0.87, 25.0), (0.85, 10.0), (0.80, 12.0)]
    assert pareto_front(points, maximize=(True, False)) == [0, 1, 2, 4]
    assert pareto_front([(1.0, 1.0, 1.0), (1.0, 1.0, 2.0)], maximize=(True, True, False)) == [0]


def test_paired_bootstrap_interval() -> None:
    labels = np.array([0, 1] * 50)
    same = labels.copy()
    half = np.where(np.arange(100) < 50, labels, 1 - labels)  # right on the first 50 rows only

    def accuracy(predicted):
        return lambda rows: float(np.mean(predicted[rows["dev"]] == labels[rows["dev"]]))

    assert paired_bootstrap(accuracy(same), accuracy(same), {"dev": 100}) == (1.0, 1.0)
    low, high = paired_bootstrap(accuracy(half), accuracy(same), {"dev": 100}, resamples=500)
    assert low < 0.5 < high and high - low < 0.25
    assert paired_bootstrap(accuracy(half), accuracy(same), {"dev": 100}, resamples=500) == (low, high)


def test_mean_std() -> None:
    assert mean_std([0.8]) == (0.8, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)


def test_suite_table_averages_each_recipes_retention_over_the_tasks_and_names_the_worst() -> None:
    from benchmarks.glue_report import suite_table

    def summary(**retention):
        return {
            recipe: {"seeds": seeds, "retention": value, "retention_std": 0.01}
            for recipe, (value, seeds) in retention.items()
        }

    by_task = {
        "cola": {"summary": summary(baseline=(1.0, [42]), stack=(0.80, [42, 1, 2]))},
        "sst2": {"summary": summary(baseline=(1.0, [42]), stack=(0.97, [42, 1, 2]), int8=(1.0, [42]))},
    }
    lines = suite_table(by_task, stale={"cola"}).splitlines()
    assert lines[0] == "| recipe | cola† | sst2 | macro-average | worst task |"
    stack = next(line for line in lines if line.startswith("| stack |"))
    assert stack == "| stack | 80.0% ± 1.0 (3 seeds) | 97.0% ± 1.0 (3 seeds) | 88.5% | cola 80.0% |"
    assert "| int8 | — | 100.0% (1 seed) | — (1 of 2 tasks) | — |" in lines  # no average over a missing task
    assert lines[-1].startswith("† measured against an earlier baseline")


def test_suite_front_averages_retention_size_ratio_and_speedups_over_the_tasks(tmp_path) -> None:
    from benchmarks.glue_report import plot_suite_front, suite_front

    def row(retention, size, bs1, bs32):
        return {
            "retention": retention,
            "size_bytes": size,
            "speedup_bs1_seq128": bs1,
            "speedup_bs32_seq128": bs32,
        }

    by_task = {
        "cola": {"summary": {"baseline": row(1.0, 100, 1.0, 1.0), "stack": row(0.8, 10, 6.0, 8.0)}},
        "rte": {
            "summary": {
                "baseline": row(1.0, 200, 1.0, 1.0),
                "stack": row(0.9, 40, 4.0, 10.0),
                "int8": row(1.0, 50, 2.0, 2.0),
            }
        },
    }
    front = suite_front(by_task)
    assert set(front) == {"baseline", "stack"}  # int8 misses cola: no average, no point
    assert front["stack"] == pytest.approx(
        {"retention": 0.85, "size_ratio": (10.0 + 5.0) / 2, "speedup_bs1": 5.0, "speedup_bs32": 9.0}
    )
    assert front["baseline"]["size_ratio"] == 1.0
    plot = tmp_path / "suite.png"
    plot_suite_front(front, list(by_task), {"cola"}, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suite_plot_needs_the_suite_table(capsys) -> None:
    from benchmarks.glue_report import main as report

    with pytest.raises(SystemExit) as exit_info:
        report(["--suite-plot", "x.png", "results.json"])
    assert exit_info.value.code == 2
    assert "--suite-plot: give it with --suite-table" in capsys.readouterr().err


def test_paired_table_compares_recipes_seed_by_seed_with_a_t_interval() -> None:
    from benchmarks.glue_report import paired_table

    def rows(**scores):
        return {
            f"{recipe}@{seed}": {"recipe": recipe, "seed": seed, "score": score}
            for recipe, by_seed in scores.items()
            for seed, score in by_seed.items()
        }

    by_task = {
        "cola": {
            "rows": {
                **rows(
                    baseline={42: 0.30, 1: 0.31, 2: 0.29},
                    stack={42: 0.10, 1: 0.20, 2: 0.15},
                    spread={42: 0.11, 1: 0.22, 2: 0.18},  # +1, +2, +3: mean 2 ± 1, 2.48 std wide
                    steady={42: 0.12, 1: 0.221, 2: 0.169},  # +2, +2.1, +1.9
                    once={42: 0.05, 7: 0.5},  # only seed 42 is shared
                ),
                "broken@1": {"recipe": "broken", "seed": 1, "error": "out of memory"},
            }
        }
    }
    lines = paired_table(by_task, "stack").splitlines()
    assert lines[0].startswith("| task | recipe | seeds | Δ score per seed vs stack |")
    body = {line.split(" | ")[1]: line for line in lines[2:]}
    assert set(body) == {"spread", "steady", "once"}  # not the reference, the baseline or a failed row
    assert body["spread"] == (
        "| cola | spread | 42, 1, 2 | +1.00, +2.00, +3.00 | +2.00 ± 1.00 | -0.48 to +4.48 | no difference shown |"
    )
    assert body["steady"].endswith("| +2.00 ± 0.10 | +1.75 to +2.25 | better |")
    assert body["once"] == "| cola | once | 42 | -5.00 | -5.00 (1 seed) | — | 1 seed: not tested |"
    only = paired_table(by_task, "stack", variants=["steady"]).splitlines()[2:]
    assert [line.split(" | ")[1] for line in only] == ["steady"]


def test_paired_table_marks_seeds_whose_rows_distil_from_two_trainings_of_the_baseline() -> None:
    from benchmarks.glue_report import paired_table

    def row(recipe, seed, score, run, baseline_score=0.30):
        return {"recipe": recipe, "seed": seed, "score": score, "baseline_run": run,
                "baseline_score": baseline_score}  # fmt: skip

    by_task = {
        "cola": {
            "rows": {
                "stack@42": row("stack", 42, 0.10, "aaa"),
                "stack@1": row("stack", 1, 0.20, "bbb"),
                "variant@42": row("variant", 42, 0.12, "aaa"),
                "variant@1": row("variant", 1, 0.21, "ccc", baseline_score=0.3125),
            }
        }
    }
    lines = paired_table(by_task, "stack").splitlines()
    assert lines[2].split(" | ")[2] == "42, 1†"
    assert lines[-1].startswith("† the two rows distil from two trainings of the seed's baseline")
    assert lines[-1].endswith("their dev scores differ by at most 1.25 points.")
    by_task["cola"]["rows"]["variant@1"]["baseline_run"] = "bbb"
    assert "†" not in paired_table(by_task, "stack")


def test_paired_table_options_name_what_is_wrong(tmp_path, capsys) -> None:
    from benchmarks.glue_report import main as report

    results = tmp_path / "cola.json"
    results.write_text(json.dumps({"rows": {"stack@42": {"recipe": "stack", "seed": 42, "score": 0.1}}}))
    for argv, message in (
        (["--variants", "a", str(results)], "--variants: give it with --paired"),
        (["--paired", "nosuch", str(results)], "--paired: no rows of recipe 'nosuch' in the files given"),
        (["--paired", "stack", "--suite-table", str(results)], "--paired: give it without --suite-table"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            report(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_retiming_lines_list_every_timing_and_the_furthest_from_their_mean() -> None:
    from benchmarks.glue_report import retiming_lines

    def speedup(bs1, bs32):
        return {"bs1_seq128": bs1, "bs32_seq128": bs32, "bs1_seq64": 9.0}

    rows = {
        "stack@42": {
            "recipe": "stack",
            "seed": 42,
            "speedup": speedup(6.0, 10.0),
            "retimed": [{"speedup": speedup(6.3, 10.0)}, {"speedup": speedup(5.7, 10.0)}],
        },
        "int8@42": {"recipe": "int8", "seed": 42, "speedup": speedup(2.0, 2.0)},  # timed once: no line
    }
    lines = retiming_lines(rows)
    assert lines[1].startswith("The same saved models timed again")
    assert lines[2:] == [
        "- stack (seed 42), 3 timings: bs1 6.00×, 6.30×, 5.70× (within ±5.0% of their mean); "
        "bs32 10.00×, 10.00×, 10.00× (within ±0.0% of their mean)"
    ]
    assert retiming_lines({"int8@42": rows["int8@42"]}) == []


def test_a_rows_speedup_in_the_summary_is_the_median_of_its_timings() -> None:
    from benchmarks.glue_report import summarise

    def timing(bs1):
        return {"latency_ms": {"bs1_seq128": 10.0 / bs1}, "speedup": {"bs1_seq128": bs1}}

    row = {
        "recipe": "stack",
        "seed": 42,
        "score": 0.8,
        "retention": 0.95,
        "retention_ci95": [0.9, 1.0],
        "params": {"total": 10, "nonzero": 10},
        "size_bytes": 100,
        **timing(9.5),  # the first timing, disturbed
        "retimed": [timing(5.7), timing(5.8)],
    }
    summary = summarise({"stack@42": row})["stack"]
    assert summary["speedup_bs1_seq128"] == 5.8
    assert summary["latency_ms_bs1_seq128"] == pytest.approx(10.0 / 5.8, abs=1e-3)
    alone = summarise({"stack@42": {k: v for k, v in row.items() if k != "retimed"}})["stack"]
    assert alone["speedup_bs1_seq128"] == 9.5  # a row timed once: its one timing


def test_every_committed_task_file_summarises_its_own_rows() -> None:
    from benchmarks.glue_report import summarise

    for path in sorted((REPO / "benchmarks" / "results" / "small").glob("*.json")):
        results = json.loads(path.read_text())
        assert results["summary"] == summarise(results["rows"]), path.name


def test_retime_needs_resume() -> None:
    with pytest.raises(UserError, match="--retime times the rows --resume keeps"):
        glue.parse_args(["--retime"])


def test_timing_runs_in_a_process_of_its_own() -> None:
    assert glue.in_fresh_process(os.getpid) != os.getpid()
    assert glue.in_fresh_process(max, 3, 7) == 7


def ended(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie (dead, waiting to be reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_killed_harness_takes_its_timing_process_with_it(tmp_path) -> None:
    marker = tmp_path / "worker.pid"
    work = f"import os, pathlib, time; pathlib.Path({str(marker)!r}).write_text(str(os.getpid())); time.sleep(300)"
    harness = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from benchmarks.glue import in_fresh_process; in_fresh_process(exec, {work!r})",
        ],
        cwd=REPO,
    )
    deadline = time.monotonic() + 180
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    worker = int(marker.read_text())
    try:
        harness.kill()
        harness.wait()
        deadline = time.monotonic() + 20
        while not ended(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ended(worker)
    finally:
        if not ended(worker):
            os.kill(worker, signal.SIGKILL)


def test_current_settings_are_what_the_harness_runs_a_task_with_today() -> None:
    small = glue.SUITES["small"]
    current = glue.current_settings({"suite": "small", "task": "mrpc"})
    assert current == glue.task_settings(small, "mrpc")
    assert current["baseline_training"] == small.setting("mrpc").baseline_training
    assert current["max_length"] == small.max_length_of("mrpc")


def test_the_glue_page_shows_the_suite_table_as_generated(capsys) -> None:
    from benchmarks.glue_report import main as report

    report(
        [
            "--suite-table",
            *(
                str(REPO / "benchmarks" / "results" / "small" / f"{t}.json")
                for t in ("cola", "sst2", "mrpc", "stsb", "rte")
            ),
        ]
    )
    text = (REPO / "docs" / "glue.md").read_text()
    block = text.split("<!-- suite-table:start -->\n")[1].split("<!-- suite-table:end -->")[0]
    assert block == capsys.readouterr().out


@pytest.mark.parametrize(
    ("marker", "reference", "variants"),
    [
        (
            "paired-table",
            "full-stack",
            "full-stack-vocab,full-stack-vocab-long,full-stack-augment,full-stack-full-rank,"
            "full-stack-full-rank-restart",
        ),
        (
            "paired-full-rank-table",
            "full-stack-full-rank",
            "full-stack-full-rank-low-lr,full-stack-full-rank-4-layers,full-stack-two-step,full-stack-vocab-nearest,"
            "full-stack-full-rank-restart,full-stack-full-rank-augment",
        ),
    ],
)
def test_the_glue_page_shows_the_paired_tables_as_generated(capsys, marker, reference, variants) -> None:
    from benchmarks.glue_report import main as report

    files = [
        str(REPO / "benchmarks" / "results" / "small" / f"{t}.json")
        for t in ("cola", "sst2", "mrpc", "stsb", "rte")
    ]
    report(["--paired", reference, "--variants", variants, *files])
    text = (REPO / "docs" / "glue.md").read_text()
    block = text.split(f"<!-- {marker}:start -->\n")[1].split(f"<!-- {marker}:end -->")[0]
    assert block == capsys.readouterr().out
