"""Multi-fidelity search: stop a poor trial at one of its Trainer evaluations, as an Optuna pruner decides.

Every evaluation a stage's Trainer runs while training (``eval_strategy: steps`` in the space's
``training``) reports the objective's metric to the trial; steps count the trial's evaluations across
its stages. The pruner compares it with the other trials at the same step: ``median`` (the default:
below the median of earlier trials), ``successive_halving`` or ``hyperband`` (rungs of growing
budget). Optuna prunes single-objective studies only. A space may also search ``max_train_samples``,
so that cheap trials train on part of the data.
"""

from __future__ import annotations

from typing import Any

import optuna
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from nlpcompress.search.objectives import Objectives
from nlpcompress.search.space import OptionalStage, SearchSpace

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The named pruner with Optuna's default settings (``SearchSettings.pruner`` checked the name)."""
    return PRUNERS[name]()


class TrialPruningCallback(TrainerCallback):
    """Report each evaluation's ``key`` (e.g. ``eval_accuracy``) to ``trial``; when the pruner says so, stop
    the training by raising ``optuna.TrialPruned`` out of ``trainer.train()`` and the run (which publishes
    nothing); the study records the trial as PRUNED.

    One instance serves every stage of a trial, so its steps keep counting from stage to stage.
    """

    def __init__(self, trial: optuna.Trial, key: str):
        self.trial = trial
        self.key = key
        self.step = 0

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        value = (metrics or {})[self.key]
        self.step += 1
        self.trial.report(value, self.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {self.step} ({self.key} {value:.4f})")


def _evaluates_while_training(template: Any) -> bool:
    """Whether some ``training`` section of the space sets an ``eval_strategy`` other than ``no``."""
    if isinstance(template, dict):
        training = template.get("training")
        if isinstance(training, dict) and training.get("eval_strategy", "no") != "no":
            return True
        return any(_evaluates_while_training(value) for value in template.values())
    if isinstance(template, list):
        return any(_evaluates_while_training(value) for value in template)
    return isinstance(template, OptionalStage) and _evaluates_while_training(template.body)


def pruning_note(space: SearchSpace, objectives: Objectives) -> str | None:
    """One line when the space's pruner cannot stop any trial (and why); None when it can."""
    pruner = space.settings.pruner
    if pruner == "none":
        return None
    if objectives.pruning_key() is None:
        why = (
            "Optuna prunes single-objective studies only"
            if len(objectives.metrics) > 1
            else f"no evaluation during training estimates {objectives.names[0]}"
        )
        return f"pruner {pruner} is not used: {why}"
    if not _evaluates_while_training(space.template):
        return (
            f"pruner {pruner} has nothing to judge: no stage evaluates while training "
            "(set training.eval_strategy: steps and eval_steps, e.g. 0.25)"
        )
    return None
