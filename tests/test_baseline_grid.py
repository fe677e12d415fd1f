"""The baseline grid (benchmarks/baseline_grid.py): every cell runs, the best is chosen and written to the
suite's settings file, the harness inherits it without training the baseline again, and the committed
settings say what the committed grids chose."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

import benchmarks.baseline_grid as grid
import benchmarks.glue as glue
from benchmarks.task_settings import FOLDER, TaskSetting, load_settings, parse_setting, settings_text
from nlpcompress.errors import UserError
from nlpcompress.glue import get_task

REPO = Path(__file__).resolve().parent.parent


def grid_args(tmp_path: Path, glue_root: Path, *extra: str) -> list[str]:
    return [
        "--suite",
        "ci",
        "--tasks",
        "rte",
        "--data-dir",
        str(glue_root),
        "--learning-rates",
        "3e-3,1e-4",
        "--epochs",
        "1,2",
        "--output-dir",
        str(tmp_path / "baselines"),
        "--work-dir",
        str(tmp_path / "work"),
        "--settings",
        str(tmp_path / "ci.yaml"),
        *extra,
    ]


@pytest.fixture
def epoch_suite(monkeypatch) -> glue.Suite:
    """The ci suite without its step limit (48 rows, batch 8: 6 steps an epoch), as the grid trains it."""
    training = {k: v for k, v in glue.SUITES["ci"].training.items() if k != "max_steps"}
    suite = dataclasses.replace(glue.SUITES["ci"], training=training)
    monkeypatch.setitem(glue.SUITES, "ci", suite)
    return suite


def test_every_cell_runs_the_best_is_written_to_the_settings_and_the_harness_reuses_its_run(
    tmp_path, glue_root, monkeypatch, epoch_suite
) -> None:
    real_run, ran = glue.run_recipe, []
    monkeypatch.setattr(glue, "run_recipe", lambda recipe, **kw: ran.append(recipe) or real_run(recipe, **kw))
    grid.main(grid_args(tmp_path, glue_root))
    assert sorted((r.training["learning_rate"], r.training["num_train_epochs"]) for r in ran) == [
        (1e-4, 1),
        (1e-4, 2),
        (3e-3, 1),
        (3e-3, 2),
    ]
    results = json.loads((tmp_path / "baselines" / "rte.json").read_text())
    rows = results["rows"]
    assert len(rows) == 4 and results["train_rows"] == 48 and results["seed"] == 42
    for name, row in rows.items():  # each row is its cell's own run
        run = json.loads((tmp_path / "work" / "rte" / "seed42" / "grid" / name / "results.json").read_text())
        assert row["score"] == run["score"]
    best = max(row["score"] for row in rows.values())
    assert rows[results["chosen"]]["score"] == best
    chosen = rows[results["chosen"]]
    setting = load_settings(tmp_path / "ci.yaml")["rte"]
    assert setting.baseline_training == {
        "learning_rate": chosen["learning_rate"],
        "num_train_epochs": chosen["num_train_epochs"],
    }
    assert setting.selected_from == str(tmp_path / "baselines" / "rte.json")

    assert results["earlier_baseline"] == grid.earlier_baseline("rte")  # the suite's baseline before the grid
    recorded = tmp_path / "baselines" / "rte.json"
    recorded.write_text(json.dumps(results | {"earlier_baseline": 0.5}))
    ran.clear()
    grid.main(grid_args(tmp_path, glue_root, "--resume"))
    assert ran == []  # every cell kept
    assert json.loads(recorded.read_text())["earlier_baseline"] == 0.5  # as recorded when the grid began

    monkeypatch.setitem(glue.SUITES, "ci", dataclasses.replace(epoch_suite, per_task={"rte": setting}))
    glue.main(
        [
            *("--suite", "ci", "--tasks", "rte", "--recipes", "baseline", "--data-dir", str(glue_root)),
            *("--output-dir", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")),
        ]
    )
    assert ran == []  # the chosen cell's run is the harness's baseline: not trained again
    row = json.loads((tmp_path / "results" / "rte.json").read_text())["rows"]["baseline@42"]
    assert row["score"] == chosen["score"]


def test_ties_go_to_fewer_epochs_then_to_the_lower_learning_rate() -> None:
    rows = {
        "a": {"score": 0.5, "learning_rate": 1e-4, "num_train_epochs": 6},
        "b": {"score": 0.5, "learning_rate": 2e-4, "num_train_epochs": 3},
        "c": {"score": 0.5, "learning_rate": 5e-5, "num_train_epochs": 3},
        "d": {"score": 0.4, "learning_rate": 5e-5, "num_train_epochs": 1},
    }
    assert grid.chosen_cell(rows) == "c"
    assert (
        grid.chosen_cell({**rows, "e": {"score": 0.51, "learning_rate": 2e-4, "num_train_epochs": 6}}) == "e"
    )


def test_a_task_setting_of_all_rows_trains_on_the_whole_training_set() -> None:
    suite = dataclasses.replace(
        glue.SUITES["ci"], per_task={"rte": TaskSetting(train_rows="all"), "stsb": TaskSetting(train_rows=20)}
    )
    assert suite.max_train_samples_of("rte") is None
    assert suite.max_train_samples_of("stsb") == 20
    assert suite.max_train_samples_of("cola") == suite.max_train_samples
    data = glue.baseline_recipe(suite, get_task("rte"), 42, "m", Path("/x"), None)
    assert data["max_train_samples"] is None


@pytest.mark.parametrize(
    ("block", "says"),
    [
        ({"max_len": 64}, "unknown key 'max_len'; allowed: max_length, train_rows, baseline, selected_from"),
        ({"train_rows": "most"}, "train_rows 'most': give a positive integer or 'all'"),
        ({"max_length": 2}, "max_length 2: give an integer of at least 8"),
        ({"baseline": [1]}, "baseline: expected a mapping of training settings"),
    ],
)
def test_a_wrong_settings_block_is_refused_with_one_line(block, says) -> None:
    with pytest.raises(UserError, match=says):
        parse_setting("cola", block, "small.yaml")


def test_the_settings_file_round_trips() -> None:
    settings = {
        "cola": TaskSetting(
            train_rows="all", baseline_training={"learning_rate": 1e-4}, selected_from="x.json"
        ),
        "sst2": TaskSetting(),
    }
    path_text = settings_text("small", settings)
    assert {
        task: parse_setting(task, block, "t") for task, block in yaml.safe_load(path_text).items()
    } == settings


def test_the_committed_settings_hold_the_best_cell_of_each_committed_grid() -> None:
    settings = load_settings(FOLDER / "small.yaml")
    assert set(settings) == set(glue.SUITES["small"].tasks)
    for task, setting in settings.items():
        if setting.selected_from is None:
            continue
        results = json.loads((REPO / setting.selected_from).read_text())
        assert results["task"] == task
        assert len(results["rows"]) == len(results["grid"]["learning_rate"]) * len(
            results["grid"]["num_train_epochs"]
        )
        chosen = results["rows"][grid.chosen_cell(results["rows"])]
        assert results["chosen"] == grid.chosen_cell(results["rows"])
        assert setting.baseline_training["learning_rate"] == chosen["learning_rate"]
        assert setting.baseline_training["num_train_epochs"] == chosen["num_train_epochs"]


def test_the_docs_show_the_summary_of_the_committed_grids() -> None:
    text = (REPO / "docs" / "glue.md").read_text()
    block = text.split("<!-- baseline-grid:start -->\n")[1].split("<!-- baseline-grid:end -->")[0]
    files = grid.grid_files(
        REPO / "benchmarks" / "results" / "baselines" / "small", glue.SUITES["small"].tasks
    )
    assert files, "no committed grid"
    assert block == grid.summary_table(files), "rerun: python -m benchmarks.baseline_grid --table"
