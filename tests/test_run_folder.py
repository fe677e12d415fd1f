"""A finished run is never replaced without --overwrite, replacing keeps the user's files, one run per folder,
and training values out of range are refused before anything trains."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _runs import fresh_cli, write_recipe

from nlpcompress.errors import UserError
from nlpcompress.recipe import load_recipe, recipe_from_dict
from nlpcompress.run_folder import folder_lock, lock_path
from nlpcompress.runner import run_recipe


@pytest.fixture
def earlier_run(tmp_path: Path, finished_run: Path) -> Path:
    """A copy of a finished run folder (as ``nlpcompress run`` left it), with a file the user added."""
    folder = tmp_path / "out"
    shutil.copytree(finished_run, folder)
    (folder / "notes.txt").write_text("my notes")
    (folder / "mine").mkdir()
    (folder / "mine" / "data.csv").write_text("a,b\n")
    return folder


def test_a_finished_run_is_refused_in_one_line_and_left_untouched(
    tmp_path, earlier_run, tiny_bert_dir, glue_root
):
    before = {p: p.read_bytes() for p in earlier_run.rglob("*") if p.is_file()}
    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root))
    done = fresh_cli("run", str(recipe), "--no-progress")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"nlpcompress: error: output_dir {str(earlier_run)!r} holds a finished run (task sst2, score "
        f"{json.loads((earlier_run / 'results.json').read_text())['score']:.4f}); add --overwrite to replace it "
        "(files the run did not write are kept), or choose another output_dir"
    )
    assert {p: p.read_bytes() for p in earlier_run.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "recipe.yaml"]


def test_overwrite_replaces_what_the_earlier_run_wrote_and_keeps_the_rest(
    tmp_path, earlier_run, tiny_bert_dir, glue_root, caplog
):
    results = json.loads((earlier_run / "results.json").read_text())
    assert "notes.txt" not in results["files"] and "model.safetensors" in results["files"]
    stale = earlier_run / "artifacts" / "old-stage" / "plot.png"  # the earlier run's: listed, not rewritten
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    results["files"].append("artifacts/old-stage/plot.png")
    (earlier_run / "results.json").write_text(json.dumps(results))
    recipe = load_recipe(write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root), seed=8))
    with caplog.at_level(logging.WARNING, logger="nlpcompress"):
        run_recipe(recipe, progress=False, overwrite=True)
    assert (earlier_run / "notes.txt").read_text() == "my notes"
    assert (earlier_run / "mine" / "data.csv").read_text() == "a,b\n"
    assert not stale.exists()
    new = json.loads((earlier_run / "results.json").read_text())
    assert "seed: 8" in (earlier_run / "recipe.yaml").read_text()  # the new run's record replaced the old
    assert "notes.txt" not in new["files"] and "results.json" in new["files"]
    said = [r.getMessage() for r in caplog.records if "--overwrite" in r.getMessage()]
    assert len(said) == 1 and "kept 2 files it did not write: mine/data.csv, notes.txt" in said[0]
    assert not list(tmp_path.glob(".out.*"))


def test_the_files_a_run_lists_are_exactly_the_files_it_published(finished_run):
    listed = json.loads((finished_run / "results.json").read_text())["files"]
    assert listed == sorted(str(p.relative_to(finished_run)) for p in finished_run.rglob("*") if p.is_file())


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_second_run_into_a_held_folder_names_the_holder(tmp_path, tiny_bert_dir, glue_root):
    recipe = load_recipe(write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root)))
    holder = sleeper()
    try:
        lock = lock_path(tmp_path / "out")
        lock.write_text(json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(),
                                    "purpose": "run", "since": 0}))  # fmt: skip
        with pytest.raises(UserError, match=rf"out is in use by process {holder.pid} on .* \(run since "):
            run_recipe(recipe, progress=False)
        assert not (tmp_path / "out").exists() and lock.exists()
        (tmp_path / "out").mkdir()  # an export into the same folder is refused too
        done = fresh_cli("export", str(tmp_path / "out"), "--format", "onnx")
        assert done.returncode == 2 and f"is in use by process {holder.pid}" in done.stderr
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_process_that_ended_is_taken_over_and_said(tmp_path, caplog):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    folder = tmp_path / "out"
    lock_path(folder).write_text(json.dumps({"pid": ended.pid, "host": __import__("socket").gethostname(),
                                             "purpose": "run", "since": 0}))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="nlpcompress"), folder_lock(folder, "run"):
        assert json.loads(lock_path(folder).read_text())["pid"] != ended.pid
        second = folder_lock(folder, "export")
        with pytest.raises(UserError, match="is in use by process"):  # held now: a second holder refused
            second.__enter__()
    assert f"taking over the lock of process {ended.pid} (run), which is no longer running" in caplog.text
    assert not lock_path(folder).exists()  # released at the end


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"num_train_epochs": -1}, "training.num_train_epochs: must be > 0 (got -1)"),
        ({"learning_rate": -1}, "training.learning_rate: must be >= 0 (got -1)"),
        ({"per_device_train_batch_size": 0}, "training.per_device_train_batch_size: must be >= 1 (got 0)"),
        ({"max_steps": 0}, "training.max_steps: must be > 0 (or -1: use num_train_epochs) (got 0)"),
        ({"warmup_steps": -5}, "training.warmup_steps: must be >= 0 (got -5)"),
    ],
)
def test_training_values_out_of_range_are_refused_before_anything_trains(training, message):
    data = {
        "model": "m",
        "task": "sst2",
        "output_dir": "o",
        "stages": [{"type": "finetune", "training": training}],
    }
    with pytest.raises(UserError) as info:
        recipe_from_dict(data, "r.yaml")
    assert str(info.value) == f"r.yaml: stages.0.{message}"


def test_a_corrected_recipe_reuses_the_unchanged_stages_it_finished(
    tmp_path, tiny_bert_dir, glue_root, caplog
):
    # the tiny model has 8 heads: a count of 9 is found wrong only when the stage runs, after finetune finished
    wrong = {"type": "prune_heads", "target": 9, "score_samples": 16, "recovery": {"train": False}}
    path = write_recipe(
        tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root), stages=[{"type": "finetune"}, wrong]
    )
    with pytest.raises(UserError, match="stage 'prune_heads': target: exceeds the 8 heads"):
        run_recipe(load_recipe(path), progress=False)
    finished = json.loads((tmp_path / ".out.partial" / "progress.json").read_text())["finished"]
    assert [record["name"] for record in finished] == ["finetune"]
    right = write_recipe(
        tmp_path,
        model=str(tiny_bert_dir),
        data_dir=str(glue_root),
        stages=[{"type": "finetune"}, {**wrong, "target": 2}],
    )
    with caplog.at_level(logging.INFO, logger="nlpcompress"):
        results = run_recipe(load_recipe(right), progress=False).results
    assert "stages finetune are unchanged and reused; the rest starts over" in caplog.text
    assert results["stages"][0] == finished[0]  # the same record: not trained again
    assert sum(results["stages"][1]["heads_per_layer"]) == 6


def test_a_recipe_changed_before_its_last_finished_stage_starts_over(
    tmp_path, tiny_bert_dir, glue_root, caplog
):
    wrong = {"type": "prune_heads", "target": 9, "score_samples": 16, "recovery": {"train": False}}
    path = write_recipe(
        tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root), stages=[{"type": "finetune"}, wrong]
    )
    with pytest.raises(UserError):
        run_recipe(load_recipe(path), progress=False)
    changed = write_recipe(
        tmp_path,
        model=str(tiny_bert_dir),
        data_dir=str(glue_root),
        seed=9,
        stages=[{"type": "finetune"}, {**wrong, "target": 2}],
    )
    with caplog.at_level(logging.INFO, logger="nlpcompress"):
        run_recipe(load_recipe(changed), progress=False)
    assert "is of another recipe: starting over" in caplog.text and "reused" not in caplog.text
