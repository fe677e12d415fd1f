"""The Optuna study behind a search: where it is stored, how trials are sampled, run, recorded and tidied.

The study lives in a database (``sqlite:///<output_dir>/study.db`` unless ``--storage`` names another
URL), so the same command run again, or several workers at once, add trials to the same study.
One objective: TPE; several: NSGA-II. Each trial is a normal run of its sampled recipe in
``<output_dir>/trials/<number>``; a trial whose recipe or run fails with a UserError is recorded as
failed and the search goes on.

A worker that dies (a kill, a crash, a machine that goes down) leaves its trial RUNNING. The trial is
marked failed and its parameters are queued again, once, as a new trial: by the next worker started on
the same host, which sees that the trial's process no longer runs, or by any worker once the trial's
heartbeat is older than its grace period (Optuna's ``RetryHeartbeatStaleTrialCallback``). Such a lost
trial is left out of the trial counts, and each trial's sampler is seeded from the sampler seed and the
trial's place among the trials not lost, so a study resumed after a kill samples the trials an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from nlpcompress.errors import UserError
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.run_folder import process_running
from nlpcompress.runner import run_recipe
from nlpcompress.search.objectives import Objectives
from nlpcompress.search.pruning import TrialPruningCallback, make_pruner
from nlpcompress.search.report import ERROR, METRICS, RECIPE, front_trials
from nlpcompress.search.settings import SearchSettings
from nlpcompress.search.space import SearchSpace

TRIALS = "trials"
HEARTBEAT_S = 60
STORAGE_ATTEMPTS = 3
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
WORKER = "worker"  # user attribute: the host and process id running the trial
RETRIED = "failed_trial"  # system attribute of a retry (Optuna's name): the lost trial it repeats


def default_storage(output_dir: Path) -> str:
    return f"sqlite:///{output_dir.resolve() / 'study.db'}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (a dead worker's trial is failed and retried once). Workers started
    together on a new database race to create its tables: the loser tries again."""
    # SQLite: workers wait up to a minute for each other's write lock
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=3 * HEARTBEAT_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=1
                    ),
                )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as err:
            # "table ... already exists", the other worker's alembic_version row, a server not up yet
            error: Exception = err
            time.sleep(1 + attempt)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:  # a bad URL, a missing driver
            error = err
            break
    reason = str(error).splitlines()[0]
    raise UserError(
        f"storage {url!r}: cannot open it ({reason}); give a database URL such as "
        "sqlite:///path/study.db or postgresql://user@host/db"
    )


def lost_trials(trials: Sequence[FrozenTrial]) -> set[int]:
    """The trials a dead worker left, each repeated by a retry that counts in its place."""
    return {trial.system_attrs[RETRIED] for trial in trials if RETRIED in trial.system_attrs}


def counted_trials(study: optuna.Study) -> int:
    """Finished trials (complete, pruned or failed), lost ones left out."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return len(trials) - len(lost_trials(study.get_trials(deepcopy=False)) & {t.number for t in trials})


class PlaceSeededSampler(BaseSampler):
    """A sampler made afresh for each trial, seeded from ``seed`` and the trial's place in the study
    (trials lost to a dead worker left out), so that a study resumed after a kill draws what an
    uninterrupted one would; TPE and NSGA-II keep their state in the study, so nothing else is lost."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int):
        self._make = make
        self._seed = seed
        self._sampler = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        lost = lost_trials(trials)
        place = sum(1 for t in trials if t.number < trial.number and t.number not in lost)
        seed = int(np.random.SeedSequence([self._seed, place]).generate_state(1)[0])
        self._sampler = self._make(seed)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def _sampler(objectives: Objectives, settings: SearchSettings) -> BaseSampler:
    def make(seed: int | None) -> BaseSampler:
        if len(objectives.metrics) == 1:
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.NSGAIISampler(population_size=settings.population_size, seed=seed)

    return make(None) if settings.seed is None else PlaceSeededSampler(make, settings.seed)


def fail_dead_workers_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of this host's worker processes that no longer run and queue each once
    more with its parameters (what the heartbeat does, without waiting for its grace period); returns
    their numbers. A trial another worker fails first is left to it."""
    host, failed = socket.gethostname(), []
    storage = study._storage  # the study's own storage: Optuna's fail_stale_trials works on it too
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER)
        if not worker or worker["host"] != host or process_running(worker["pid"]):
            continue
        try:
            storage.set_trial_user_attr(
                trial._trial_id, ERROR, f"its worker (process {worker['pid']}) died; queued again"
            )
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        lost = copy.deepcopy(storage.get_trial(trial._trial_id))
        lost.user_attrs = {key: value for key, value in lost.user_attrs.items() if key != WORKER}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, lost)
        failed.append(trial.number)
    return failed


def _check_same_objectives(study: optuna.Study, objectives: Objectives, storage: str) -> None:
    """A resumed study must optimise what the space asks for."""
    names = study.metric_names or objectives.names  # a study just created has none yet
    directions = [d.name.lower() for d in study.directions]
    if names != objectives.names or directions != list(objectives.directions):
        have = ", ".join(f"{n} ({d})" for n, d in zip(study.metric_names or [], directions, strict=False))
        raise UserError(
            f"study {study.study_name!r} in {storage} optimises {have or directions}, the space "
            f"{objectives.describe()}: give another --study name or --output-dir"
        )


def open_study(storage: str, name: str, objectives: Objectives, settings: SearchSettings) -> optuna.Study:
    """The study ``name`` in ``storage``: created, or loaded to go on (its objectives must match)."""
    study = optuna.create_study(
        storage=open_storage(storage),
        study_name=name,
        sampler=_sampler(objectives, settings),
        pruner=make_pruner(settings.pruner),
        directions=list(objectives.directions),
        load_if_exists=True,
    )
    _check_same_objectives(study, objectives, storage)
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objectives.names)
    return study


def load_study(storage: str, name: str, objectives: Objectives) -> optuna.Study:
    """An existing study, for a report (nothing is created)."""
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise UserError(f"no study database at {storage}: run the search first (without --report)")
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        names = optuna.get_all_study_names(open_storage(storage))
        raise UserError(
            f"no study {name!r} in {storage}; studies there: {', '.join(names) or 'none'}"
        ) from None
    _check_same_objectives(study, objectives, storage)
    return study


def trial_folder(output_dir: Path, number: int) -> Path:
    return output_dir / TRIALS / str(number)


class TrialRun:
    """The objective function: sample a recipe, run it in the trial's folder, return the objectives."""

    def __init__(self, space: SearchSpace, objectives: Objectives, output_dir: Path):
        self.space = space
        self.objectives = objectives
        self.output_dir = output_dir

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        trial.set_user_attr(WORKER, {"host": socket.gethostname(), "pid": os.getpid()})
        try:
            data = self.space.sample(trial)
            data["output_dir"] = str(trial_folder(self.output_dir, trial.number))
            recipe = recipe_from_dict(data, f"trial {trial.number}")
            trial.set_user_attr(RECIPE, recipe.to_yaml())
            key = self.objectives.pruning_key() if self.space.settings.pruner != "none" else None
            pruner = [TrialPruningCallback(trial, key)] if key else []
            result = run_recipe(recipe, progress=False, callbacks=pruner)
        except UserError as err:
            trial.set_user_attr(ERROR, str(err))
            raise
        measured = self.objectives.measure(result.results)
        trial.set_user_attr(METRICS, measured)
        for constraint, violation in zip(
            self.objectives.constraints, self.objectives.violations(measured), strict=True
        ):
            trial.set_constraint(constraint.key, violation)
        return self.objectives.values(measured)


def remove_trial_folders(study: optuna.Study, objectives: Objectives, output_dir: Path) -> None:
    """Delete the folders (and partial runs) of finished trials not on the Pareto front; running trials'
    folders stay (another worker may be writing them)."""
    trials = study.get_trials(deepcopy=False)
    keep = {trial.number for trial in front_trials(trials, objectives)}
    for trial in trials:
        if trial.state in FINISHED and trial.number not in keep:
            folder = trial_folder(output_dir, trial.number)
            for path in (folder, folder.with_name(f".{folder.name}.partial")):
                shutil.rmtree(path, ignore_errors=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Progress:
    """One line per finished trial: how it ended, trials done, the best so far (or the front), time left."""

    def __init__(
        self, objectives: Objectives, trials: int, timeout: float | None, write: Callable[[str], None] = print
    ):
        self.objectives = objectives
        self.trials = trials
        self.timeout = timeout
        self.write = write
        self.started = time.monotonic()
        self.done = 0

    def _outcome(self, trial: FrozenTrial) -> str:
        if trial.state == TrialState.COMPLETE:
            values = ", ".join(
                f"{n} {v:.4g}" for n, v in zip(self.objectives.names, trial.values, strict=True)
            )
            broken = [key for key, value in trial.constraints.items() if value > 0]
            return f"{values}" + (f" (misses {', '.join(broken)})" if broken else "")
        if trial.state == TrialState.PRUNED:
            step = max(trial.intermediate_values, default=0)
            return f"pruned at evaluation {step}"
        return f"failed: {trial.user_attrs.get(ERROR, 'an objective value is NaN')}"

    def _best(self, study: optuna.Study) -> str:
        front = front_trials(study.get_trials(deepcopy=False), self.objectives)
        if not front:
            return "no complete trial yet"
        if len(self.objectives.metrics) == 1:
            return f"best #{front[0].number} {self.objectives.names[0]} {front[0].values[0]:.4g}"
        return f"front: {', '.join(f'#{t.number}' for t in front)}"

    def _left(self) -> str:
        elapsed = time.monotonic() - self.started
        left = (self.trials - self.done) * elapsed / self.done
        if self.timeout is not None:
            left = min(left, max(0.0, self.timeout - elapsed))
        return f"~{_duration(left)} left"

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.done += 1
        self.write(
            f"trial {trial.number} {self._outcome(trial)} | {self.done}/{self.trials} done | "
            f"{self._best(study)} | {self._left()}"
        )


def run_trials(
    study: optuna.Study,
    space: SearchSpace,
    objectives: Objectives,
    output_dir: Path,
    trials: int,
    timeout: float | None = None,
    keep_all: bool = False,
    write: Callable[[str], None] = print,
    until: int | None = None,
) -> None:
    """Run ``trials`` more trials (fewer if ``timeout`` seconds pass first, or once the study counts
    ``until`` trials), one progress line each; after each, unless ``keep_all``, delete the folders of
    finished trials off the front. First, the trials of this host's dead workers are failed and queued
    again."""
    for number in fail_dead_workers_trials(study):
        write(f"trial {number} was left running by a worker that died: failed, its parameters queued again")
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [
        Progress(objectives, trials, timeout, write)
    ]
    if until is not None:  # other workers add to the same count
        callbacks.append(lambda study, _: study.stop() if counted_trials(study) >= until else None)
    if not keep_all:
        callbacks.append(lambda study, _: remove_trial_folders(study, objectives, output_dir))
    study.optimize(
        TrialRun(space, objectives, output_dir),
        n_trials=trials,
        timeout=timeout,
        catch=(UserError,),
        callbacks=callbacks,
        gc_after_trial=True,
    )
