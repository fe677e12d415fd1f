"""Recipe search: spaces and their errors, conditional stages, objectives, pruning through the Trainer,
resuming a study, two workers on one SQLite file, the Pareto front and the report (tiny BERT, seconds)."""

import argparse
import itertools
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FixedTrial, TrialState, create_trial

from nlpcompress.errors import UserError
from nlpcompress.recipe import load_recipe, recipe_from_dict
from nlpcompress.search.cli import add_parser
from nlpcompress.search.objectives import objectives_from_settings
from nlpcompress.search.pruning import PRUNERS, TrialPruningCallback, make_pruner, pruning_note
from nlpcompress.search.report import front_trials, table
from nlpcompress.search.settings import PRUNER_NAMES, parse_settings
from nlpcompress.search.space import ChoiceParam, FloatParam, IntParam, load_space, space_from_dict
from nlpcompress.search.study import run_trials

REPO = Path(__file__).resolve().parents[1]


def space(output_dir: Path, model: str = "tiny", data_dir: str = "glue", **fields) -> dict:
    """A small space: fine-tune, then an optional head-pruning stage; accuracy against latency."""
    return {
        "model": model,
        "task": "sst2",
        "data_dir": data_dir,
        "max_train_samples": 32,
        "max_eval_samples": 32,
        "max_length": 32,
        "seed": 7,
        "output_dir": str(output_dir),
        "training": {
            "learning_rate": {"float": [1e-4, 1e-2], "log": True},
            "per_device_train_batch_size": 16,
            "num_train_epochs": 1,
            "save_strategy": "no",
        },
        "stages": [
            {"type": "finetune"},
            {
                "type": "prune_heads",
                "optional": True,
                "target": {"int": [1, 4]},
                "score_samples": 16,
                "recovery": {"train": False},
            },
        ],
        "search": {"objectives": ["accuracy", "latency_bs1_ms"]},
        **fields,
    }


@pytest.fixture
def tiny_space(tmp_path: Path, tiny_bert_dir: Path, glue_root: Path):
    """Write a space file for the tiny BERT (``changes`` edit the dict first); returns its path."""

    def write(**changes) -> Path:
        data = space(tmp_path / "search", str(tiny_bert_dir), str(glue_root))
        data.update(changes)
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def search(*argv: str) -> None:
    """``nlpcompress search ...`` in this process (the parser the main CLI adds)."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["search", *argv])
    args.func(args)


def stored(output_dir: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{output_dir / 'study.db'}")


# ---------------------------------------------------------------- spaces


def test_distributions_become_parameters_named_by_their_path(tmp_path):
    data = space(tmp_path)
    data["stages"][0]["training"] = {"per_device_train_batch_size": {"int": [8, 32], "step": 8}}
    data["max_length"] = {"choice": [32, 64]}
    parsed = space_from_dict(data)
    assert parsed.parameters == [
        ChoiceParam("max_length", (32, 64)),
        FloatParam("training.learning_rate", 1e-4, 1e-2, None, True),
        IntParam("stages.0.training.per_device_train_batch_size", 8, 32, 8),
        IntParam("stages.1.target", 1, 4),
    ]
    assert parsed.settings.objectives == ["accuracy", "latency_bs1_ms"]
    assert parsed.settings.pruner == "median"


@pytest.mark.parametrize(
    "value, message",
    [
        (
            {"int": [2, 6], "stp": 2},
            "max_length: unknown distribution key 'stp'; allowed with int: step, log",
        ),
        ({"int": [6, 2]}, "max_length: int bounds [6, 2]: low must be <= high"),
        ({"float": [0.0, 1.0], "log": True}, "max_length: log: true needs low > 0"),
        ({"float": [1e-3, 1.0], "log": True, "step": 0.1}, "step and log: true cannot be combined"),
        ({"int": [2.5, 6]}, "max_length: int must be [low, high], two integers"),
        ({"int": [2, 6], "step": 0}, "max_length: step must be a positive integer"),
        ({"choice": []}, "max_length: choice must be a non-empty list"),
        ({"choice": [32, 32]}, "max_length: choice lists a value twice"),
        ({"choice": [32], "log": True}, "unknown distribution key 'log'; allowed no other key with choice"),
        (
            {"int": [8, 9], "float": [8, 9]},
            "give one of int, float, choice in a distribution, not int and float",
        ),
    ],
)
def test_bad_distributions_are_one_line_errors(tmp_path, value, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        space_from_dict(space(tmp_path, max_length=value))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("search"), "needs a search: section"),
        (lambda d: d["stages"][1].update(optional="yes"), "stages.1.optional: must be true or false"),
        (
            lambda d: d["stages"][1].update(targt=3),
            r"stages.1.targt: unknown key; did you mean: target\? allowed: ",
        ),
        (
            lambda d: d.update(max_length={"choice": [4, 32]}),
            r"at its first value\): max_length: must be an integer",
        ),
        (
            lambda d: d["search"].update(objectives=["acc"]),
            "search.objectives: unknown metric 'acc'; allowed: score",
        ),
        (lambda d: d["search"].update(objectives=[]), "search.objectives: must be a non-empty list"),
        (lambda d: d["search"].update(directions=["maximize"]), "gives 1 directions for 2 objectives"),
        (lambda d: d["search"].update(pruner="asha"), "search.pruner: "),
        (
            lambda d: d["search"].update(trials=3),
            "search.trials: unknown key; allowed: objectives, directions",
        ),
        (
            lambda d: d["search"].update(constraints={"under_size_mb": 3}),
            "must be max_<metric> or min_<metric>",
        ),
        (
            lambda d: d["search"].update(constraints={"min_retention": 0.9}),
            "search.baseline_score: required by retention",
        ),
        (lambda d: d.update(task={"choice": ["sst2", "rte"]}), "task: must be one fixed task"),
        (
            lambda d: d["stages"][1].update(target={"float": [0.5, 1.5]}),
            r"s.yaml \(stages.1.target = 1.5, which a trial can draw\): stages.1.target: must be a fraction in",
        ),
        (
            lambda d: d.update(max_length={"choice": [32, 5]}),
            r"\(max_length = 5, which a trial can draw\): max_length: must be an integer between 8 and 4096",
        ),
        (lambda d: d.update(output_dir={"choice": ["a", "b"]}), "output_dir: must be one fixed folder"),
    ],
)
def test_bad_spaces_are_one_line_errors(tmp_path, change, message):
    data = space(tmp_path)
    change(data)
    with pytest.raises(UserError, match=message) as caught:
        parsed = space_from_dict(data, "s.yaml")
        objectives_from_settings(parsed.settings, parsed.template["task"], "s.yaml")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("s.yaml")


def test_an_optional_stage_samples_its_parameters_only_when_kept(tmp_path):
    data = space(tmp_path)
    data["stages"].append(
        {
            "type": "factorize",
            "optional": True,
            "embeddings_rank": {"int": [8, 16]},
            "recovery": {"train": False},
        }
    )
    parsed = space_from_dict(data)
    dropped = FixedTrial(
        {
            "training.learning_rate": 1e-3,
            "stages.1.included": False,
            "stages.2.included": True,
            "stages.2.embeddings_rank": 12,
        }
    )
    recipe = recipe_from_dict(parsed.sample(dropped))
    assert [stage.type for stage in recipe.stages] == ["finetune", "factorize"]
    assert recipe.stages[1].embeddings_rank == 12 and recipe.training["learning_rate"] == 1e-3
    assert set(dropped.params) == {
        "training.learning_rate",
        "stages.1.included",
        "stages.2.included",
        "stages.2.embeddings_rank",
    }
    kept = FixedTrial(
        {
            "training.learning_rate": 1e-3,
            "stages.1.included": True,
            "stages.1.target": 3,
            "stages.2.included": False,
        }
    )
    recipe = recipe_from_dict(parsed.sample(kept))
    assert [stage.type for stage in recipe.stages] == ["finetune", "prune_heads"] and recipe.stages[
        1
    ].target == 3
    assert (
        "stages.2.embeddings_rank" not in kept.params and "optional" not in parsed.sample(kept)["stages"][1]
    )


def test_a_choice_of_lists_is_stored_as_text_and_sampled_as_the_list(tmp_path):
    data = space(tmp_path)
    data["stages"].append(
        {"type": "distill", "method": "kd", "student": {"layers": {"choice": [[0], [0, 1]]}}}
    )
    parsed = space_from_dict(data)
    assert parsed.parameters[-1].labels == ("[0]", "[0, 1]")
    trial = FixedTrial(
        {"training.learning_rate": 1e-3, "stages.1.included": False, "stages.2.student.layers": "[0, 1]"}
    )
    assert parsed.sample(trial)["stages"][-1]["student"]["layers"] == [0, 1]


def test_overrides_may_set_distributions(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(space(tmp_path)))
    parsed = load_space(path, ["stages.1.target={int: [2, 3]}", "search.objectives=[accuracy]"])
    assert IntParam("stages.1.target", 2, 3) in parsed.parameters and parsed.settings.objectives == [
        "accuracy"
    ]


def test_the_sst2_space_gives_valid_recipes_for_every_stage_combination():
    parsed = load_space(REPO / "recipes" / "search" / "sst2.yaml")
    objectives = objectives_from_settings(parsed.settings, parsed.template["task"], "sst2.yaml")
    assert objectives.names == ["accuracy", "latency_bs1_ms", "size_mb"]
    assert objectives.maximize == [True, False, False]
    assert (
        pruning_note(parsed, objectives)
        == "pruner median is not used: Optuna prunes single-objective studies only"
    )
    for prune, factorize, quantize in itertools.product((True, False), repeat=3):
        trial = FixedTrial(
            {
                "stages.0.student.layers": "[0, 2, 4]",
                "stages.1.included": prune,
                "stages.1.target": 0.3,
                "stages.1.neurons": 0.5,
                "stages.2.included": factorize,
                "stages.2.embeddings_rank": 128,
                "stages.3.included": quantize,
                "stages.3.avg_bits": 4,
            }
        )
        recipe = recipe_from_dict(parsed.sample(trial))
        assert recipe.model == "minilm-l6" and recipe.max_train_samples == 8000 and recipe.max_length == 64
        assert len(recipe.stages) == 1 + prune + factorize + quantize


# ---------------------------------------------------------------- objectives and the front


def objectives(**search):
    settings = parse_settings({"objectives": ["accuracy", "latency_bs1_ms"], **search}, "t")
    return objectives_from_settings(settings, "sst2", "t")


RESULTS = {
    "metrics": {"accuracy": 0.8},
    "score": 0.8,
    "latency_ms": {"bs1_seq128": 12.0, "bs32_seq128": 300.0},
    "size_bytes": 40_000_000,
    "structure": {"params": {"total": 10_000_000}},
}


def test_objectives_read_results_json_and_constraints_measure_violations():
    chosen = objectives(
        constraints={"max_latency_ms": 10, "max_size_mb": 50, "min_retention": 0.9}, baseline_score=0.85
    )
    measured = chosen.measure(RESULTS)
    assert measured["size_mb"] == 40.0 and measured["params"] == 1e7 and measured["latency_bs32_ms"] == 300.0
    assert measured["retention"] == pytest.approx(0.8 / 0.85)
    assert chosen.values(measured) == (0.8, 12.0)
    assert chosen.violations(measured) == pytest.approx([2.0, -10.0, 0.9 - 0.8 / 0.85])
    assert [c.key for c in chosen.constraints] == ["max_latency_bs1_ms", "max_size_mb", "min_retention"]
    assert "retention" not in objectives().measure(RESULTS)
    assert objectives(directions=["minimize", "maximize"]).maximize == [False, True]


def test_pruning_applies_to_one_quality_objective_only():
    assert objectives().pruning_key() is None
    assert objectives(objectives=["accuracy"]).pruning_key() == "eval_accuracy"
    assert objectives(objectives=["score"]).pruning_key() == "eval_accuracy"
    assert objectives(objectives=["size_mb"]).pruning_key() is None


def trial(number, values, state=TrialState.COMPLETE, **constraints):
    made = create_trial(
        state=state, values=values if state == TrialState.COMPLETE else None, constraints=constraints
    )
    made.number = number
    return made


def test_front_is_the_hand_computed_one_among_feasible_trials():
    chosen = objectives(constraints={"max_size_mb": 50})
    trials = [
        trial(0, [0.80, 10.0], max_size_mb=-1.0),
        trial(1, [0.85, 20.0], max_size_mb=-5.0),
        trial(2, [0.78, 12.0], max_size_mb=-1.0),  # worse than #0 in both
        trial(3, [0.85, 25.0], max_size_mb=-1.0),  # as accurate as #1, slower
        trial(4, [0.90, 30.0], max_size_mb=3.0),  # best accuracy, but too big
        trial(5, [0.95, 5.0], state=TrialState.FAIL),
        trial(6, [0.80, 10.0], max_size_mb=-2.0),  # equal to #0: both stay
    ]
    assert [t.number for t in front_trials(trials, chosen)] == [0, 1, 6]
    infeasible = [trial(0, [0.8, 10.0], max_size_mb=1.0), trial(1, [0.7, 12.0], max_size_mb=1.0)]
    assert [t.number for t in front_trials(infeasible, chosen)] == [0]  # none meets them: front of all
    single = objectives(objectives=["latency_bs1_ms"])
    assert [t.number for t in front_trials([trial(0, [3.0]), trial(1, [2.0]), trial(2, [4.0])], single)] == [
        1
    ]
    rows = table(trials, chosen, front_trials(trials, chosen)).splitlines()
    assert rows[0].split() == [
        "trial",
        "state",
        "accuracy",
        "latency_bs1_ms",
        "score",
        "size_mb",
        "constraints",
        "front",
    ]
    assert (
        rows[5].startswith("#4") and "misses max_size_mb" in rows[5] and rows[6].split()[:2] == ["#5", "fail"]
    )


# ---------------------------------------------------------------- pruning


class FakeTrial:
    """What the callback uses of an Optuna trial; the pruner says yes from the ``prune_at``-th report."""

    def __init__(self, prune_at: int):
        self.reports: list[tuple[float, int]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reports) >= self.prune_at


def test_every_pruner_name_makes_its_pruner():
    assert tuple(PRUNERS) == PRUNER_NAMES
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("successive_halving"), optuna.pruners.SuccessiveHalvingPruner)


def test_the_callback_reports_each_evaluation_and_raises_when_told_to_prune():
    fake = FakeTrial(prune_at=2)
    callback = TrialPruningCallback(fake, "eval_accuracy")
    callback.on_evaluate(None, None, None, metrics={"eval_accuracy": 0.6, "eval_loss": 0.7})
    with pytest.raises(optuna.TrialPruned, match=r"pruned at evaluation 2 \(eval_accuracy 0\.6500\)"):
        callback.on_evaluate(None, None, None, metrics={"eval_accuracy": 0.65})
    assert fake.reports == [(0.6, 1), (0.65, 2)]


def test_a_trial_is_pruned_through_the_stage_trainer(tiny_space, tmp_path):
    path = tiny_space(search={"objectives": ["accuracy"]})
    parsed = load_space(
        path, ["training.eval_strategy=steps", "training.eval_steps=0.5", "stages.1.optional=false"]
    )
    chosen = objectives_from_settings(parsed.settings, "sst2", "t")
    assert pruning_note(parsed, chosen) is None
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.5))
    lines: list[str] = []
    run_trials(study, parsed, chosen, tmp_path / "out", trials=1, write=lines.append)
    pruned = study.trials[0]
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [1]
    assert lines[0].startswith("trial 0 pruned at evaluation 1 | 1/1 done | no complete trial yet")
    assert (
        not (tmp_path / "out" / "trials" / "0").exists()
        and not (tmp_path / "out" / "trials" / ".0.partial").exists()
    )


PRUNE = {"type": "prune_heads", "score_samples": 16, "recovery": {"train": False}}


def test_a_trial_the_model_cannot_take_fails_and_the_search_goes_on(tiny_space, tmp_path):
    # a count of 9 heads parses (it is a count), but the tiny model has 8: known only once it is loaded
    parsed = load_space(tiny_space(stages=[{"type": "finetune"}, {**PRUNE, "target": {"choice": [9, 2]}}]))
    chosen = objectives_from_settings(parsed.settings, "sst2", "t")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"stages.1.target": 9})
    study.enqueue_trial({"stages.1.target": 2})
    lines: list[str] = []
    run_trials(study, parsed, chosen, tmp_path / "out", trials=2, write=lines.append)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert (
        "stage 'prune_heads': target: exceeds the 8 heads of the model" in study.trials[0].user_attrs["error"]
    )
    assert lines[0].startswith("trial 0 failed: stage 'prune_heads': target: exceeds the 8 heads")
    assert lines[1].startswith("trial 1 accuracy ") and "| 2/2 done | front: #1 |" in lines[1]


def test_a_search_without_one_complete_trial_exits_with_an_error(tiny_space, capsys):
    path = tiny_space(stages=[{"type": "finetune"}, {**PRUNE, "target": {"choice": [9, 10]}}])
    with pytest.raises(
        UserError, match=r"^no trial of study tiny completed \(2 tried\): each trial's error is above$"
    ):
        search(str(path), "--trials", "2")
    out = capsys.readouterr().out
    assert "trial 0 failed: stage 'prune_heads': target: exceeds the 8 heads" in out
    assert "trial 1 failed: stage 'prune_heads': target: exceeds the 8 heads" in out


# ---------------------------------------------------------------- the command


def test_the_same_command_resumes_the_study_and_report_reads_it_back(tiny_space, tmp_path, capsys):
    path = tiny_space()
    out = tmp_path / "search"
    search(str(path), "--trials", "2")
    first = capsys.readouterr().out
    assert "0 trials so far, 2 more now" in first and "trial 1 " in first and "2/2 done" in first
    search(str(path), "--trials", "2")
    assert "2 trials so far, 2 more now" in capsys.readouterr().out
    study = stored(out)
    assert [t.number for t in study.trials] == [0, 1, 2, 3] and study.metric_names == [
        "accuracy",
        "latency_bs1_ms",
    ]
    front = {t.number for t in front_trials(study.trials, objectives())}
    assert {int(p.name) for p in (out / "trials").iterdir()} == front  # the others were deleted
    for number in front:
        saved = load_recipe(out / "trials" / str(number) / "recipe.yaml")  # reruns with nlpcompress run
        assert Path(saved.output_dir) == out / "trials" / str(number)
        assert (
            yaml.safe_load((out / "front" / f"trial-{number}.yaml").read_text())["output_dir"]
            == saved.output_dir
        )
    search(str(path), "--report")
    report = capsys.readouterr().out
    assert len(stored(out).trials) == 4 and "study tiny: 4 trials (4 complete)" in report
    assert all(f"#{n} " in report for n in range(4)) and "parameter importances: " in report
    assert (out / "pareto.png").stat().st_size > 0 and "front recipes: " in report


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_command_errors_are_one_line(tiny_space, tmp_path):
    path = tiny_space()
    with pytest.raises(UserError, match=r"no study database at sqlite:///.*: run the search first"):
        search(str(path), "--report")
    with pytest.raises(UserError, match="--trials must be a positive integer"):
        search(str(path), "--trials", "0")
    with pytest.raises(UserError, match="storage 'nosuch://x': cannot open it"):
        search(str(path), "--storage", "nosuch://x")
    storage = f"sqlite:///{tmp_path / 'search' / 'study.db'}"
    optuna.create_study(storage=storage, study_name="tiny", direction="maximize").set_metric_names(
        ["accuracy"]
    )
    with pytest.raises(
        UserError, match=r"study 'tiny' in .* optimises accuracy \(maximize\), the space accuracy"
    ):
        search(str(path), "--trials", "1")


def test_two_workers_add_to_one_study(tiny_space, tmp_path):
    path = tiny_space()
    script = (
        "import argparse, sys; from nlpcompress.search.cli import add_parser; p = argparse.ArgumentParser(); "
        "add_parser(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); a.func(a)"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, "search", str(path), "--trials", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in outputs]
    study = stored(tmp_path / "search")
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_the_sst2_space_runs_on_a_tiny_model_keeping_all_folders(tmp_path, tiny_bert_dir, glue_root):
    overrides = {
        "model": tiny_bert_dir,
        "data_dir": glue_root,
        "max_train_samples": 64,
        "max_eval_samples": 32,
        "max_length": 32,
        "output_dir": tmp_path / "sst2",
        "stages.0.student.layers": "{choice: [[0], [1]]}",
        "stages.0.training.num_train_epochs": 1,
        "stages.1.score_samples": 16,
        "stages.1.training.max_steps": 2,
        "stages.2.embeddings_rank": "{int: [8, 16], step: 8}",
        "search.population_size": 2,
    }
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    search(str(REPO / "recipes" / "search" / "sst2.yaml"), "--trials", "2", "--keep-all", *sets)
    study = stored(tmp_path / "sst2", "sst2")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(p.name for p in (tmp_path / "sst2" / "trials").iterdir()) == ["0", "1"]  # --keep-all
    for done in study.trials:
        recipe = yaml.safe_load(done.user_attrs["recipe"])
        assert recipe["stages"][0]["student"]["layers"] in ([0], [1])
        assert (
            len(recipe["stages"])
            == 1
            + done.params["stages.1.included"]
            + done.params["stages.2.included"]
            + done.params["stages.3.included"]
        )
        assert done.user_attrs["metrics"]["latency_bs1_ms"] > 0


KILL_IN_SECOND_TRIAL = (  # SIGKILL at the first optimizer step of trial 1's run
    "import os, signal, sys, argparse\n"
    "from transformers import TrainerCallback\n"
    "import nlpcompress.search.study as study\n"
    "from nlpcompress.search.cli import add_parser\n"
    "class Kill(TrainerCallback):\n"
    "    def on_step_end(self, args, state, control, **kwargs):\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "runs, run_recipe = [], study.run_recipe\n"
    "def run_and_kill(recipe, **kwargs):\n"
    "    runs.append(recipe)\n"
    "    if len(runs) == 2:\n"
    "        kwargs['callbacks'] = [*kwargs.get('callbacks', []), Kill()]\n"
    "    return run_recipe(recipe, **kwargs)\n"
    "study.run_recipe = run_and_kill\n"
    "p = argparse.ArgumentParser(); add_parser(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); a.func(a)\n"
)


def complete(study: optuna.Study) -> list[tuple]:
    return sorted(
        (tuple(sorted(t.params.items())), tuple(t.values))
        for t in study.trials
        if t.state == TrialState.COMPLETE
    )


def test_a_search_killed_inside_a_trial_fails_it_queues_it_again_and_ends_as_an_uninterrupted_one(
    tiny_space, tmp_path, capsys
):
    deterministic = {"objectives": ["accuracy", "params"], "seed": 3}  # no timing among the objectives
    path = tiny_space(search=deterministic)
    whole = tmp_path / "whole"
    search(str(path), "--until", "3", "--output-dir", str(whole))
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_SECOND_TRIAL, "search", str(path), "--until", "3"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    out = tmp_path / "search"
    assert [t.state for t in stored(out).trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    capsys.readouterr()
    search(str(path), "--until", "3")  # the same command again
    printed = capsys.readouterr().out
    assert "1 trials so far, 2 more now (until 3)" in printed
    assert "trial 1 was left running by a worker that died: failed, its parameters queued again" in printed
    resumed, uninterrupted = stored(out), stored(whole)
    lost, retry = resumed.trials[1], resumed.trials[2]
    assert lost.state == TrialState.FAIL and retry.system_attrs["failed_trial"] == 1
    assert retry.params == lost.params and retry.state == TrialState.COMPLETE
    assert complete(resumed) == complete(uninterrupted)  # the same 3 trials, the same values
    objectives = objectives_from_settings(parse_settings(deterministic, "s"), "sst2", "s")
    assert [(t.params, t.values) for t in front_trials(resumed.trials, objectives)] == [
        (t.params, t.values) for t in front_trials(uninterrupted.trials, objectives)
    ]
    search(str(path), "--until", "3")  # a finished study: nothing more runs
    assert "3 trials so far, 0 more now (until 3)" in capsys.readouterr().out
