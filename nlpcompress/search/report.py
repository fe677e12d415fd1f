"""What a search found: the Pareto front (a table, the front's recipes as YAML, a plot of the task metric
against latency and size) and which parameters mattered, all read back from the study's storage."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from nlpcompress.comparisons import pareto_front
from nlpcompress.search.objectives import Objectives

# what a trial records in the study (user attributes; study.py writes them): measured metrics, resolved
# recipe YAML, and the one-line error of a failed trial
METRICS, RECIPE, ERROR = "metrics", "recipe", "error"
FRONT_DIR = "front"
PLOT = "pareto.png"
MIN_TRIALS_FOR_IMPORTANCE = 4
# the extra columns of the table, when not objectives already
CONTEXT_METRICS = ("score", "latency_bs1_ms", "size_mb")


def feasible(trial: FrozenTrial) -> bool:
    """Whether a trial meets every constraint (a trial without constraints does)."""
    return all(value <= 0 for value in trial.constraints.values())


def front_trials(trials: Sequence[FrozenTrial], objectives: Objectives) -> list[FrozenTrial]:
    """The complete trials no other dominates (one objective: the best), among those meeting the constraints
    (among all complete ones when none does)."""
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    candidates = [trial for trial in complete if feasible(trial)] or complete
    if not candidates:
        return []
    indices = pareto_front([trial.values for trial in candidates], objectives.maximize)
    return [candidates[index] for index in indices]


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(trials: Sequence[FrozenTrial], objectives: Objectives, front: Sequence[FrozenTrial]) -> str:
    """One row per trial: state, objectives and context metrics, constraints, ``*`` on the front."""
    columns = objectives.names + [name for name in CONTEXT_METRICS if name not in objectives.names]
    on_front = {trial.number for trial in front}
    rows = [["trial", "state", *columns, "constraints", "front"]]
    for trial in trials:
        metrics = trial.user_attrs.get(METRICS, {})
        broken = [key for key, value in trial.constraints.items() if value > 0]
        rows.append(
            [
                f"#{trial.number}",
                trial.state.name.lower(),
                *(_cell(metrics[name]) if name in metrics else "-" for name in columns),
                ("misses " + ", ".join(broken)) if broken else ("met" if trial.constraints else "-"),
                "*" if trial.number in on_front else "",
            ]
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def write_front_recipes(front: Sequence[FrozenTrial], output_dir: Path) -> list[Path]:
    """The front's recipes as ``<output_dir>/front/trial-<number>.yaml``, replacing those of an earlier front."""
    folder = output_dir / FRONT_DIR
    folder.mkdir(parents=True, exist_ok=True)  # another worker may be writing it too
    for old in folder.glob("trial-*.yaml"):
        old.unlink(missing_ok=True)
    written = []
    for trial in front:
        path = folder / f"trial-{trial.number}.yaml"
        path.write_text(trial.user_attrs[RECIPE])
        written.append(path)
    return written


def quality_metric(objectives: Objectives) -> str:
    """The metric the plots put on their vertical axis: the first quality objective, else the score."""
    return next((metric.name for metric in objectives.metrics if metric.quality), "score")


def plot_front(
    trials: Sequence[FrozenTrial], front: Sequence[FrozenTrial], objectives: Objectives, path: Path
) -> Path | None:
    """The task metric against batch-1 latency and against size: every complete trial, the front in red.
    None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metric = quality_metric(objectives)
    measured = [
        trial for trial in trials if trial.state == TrialState.COMPLETE and METRICS in trial.user_attrs
    ]
    on_front = {trial.number for trial in front}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axis, x in zip(axes, ("latency_bs1_ms", "size_mb"), strict=True):
        for group, style in (
            ([t for t in measured if t.number not in on_front], {"color": "0.6", "label": "trials"}),
            ([t for t in measured if t.number in on_front], {"color": "tab:red", "label": "Pareto front"}),
        ):
            xs = [trial.user_attrs[METRICS][x] for trial in group]
            ys = [trial.user_attrs[METRICS][metric] for trial in group]
            axis.scatter(xs, ys, s=28, **style)
        for trial in measured:
            if trial.number in on_front:
                axis.annotate(
                    f"#{trial.number}",
                    (trial.user_attrs[METRICS][x], trial.user_attrs[METRICS][metric]),
                    fontsize=8,
                )
        axis.set_xlabel(
            {"latency_bs1_ms": "CPU latency, batch 1, seq 128 (ms)", "size_mb": "size on disk (MB)"}[x]
        )
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[0].legend()
    figure.suptitle(f"{len(measured)} trials, front of {objectives.describe()}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def importances(study: optuna.Study) -> str:
    """Parameter importances (PED-ANOVA: which parameters set the best trials, or the front, apart)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return f"parameter importances: after {MIN_TRIALS_FOR_IMPORTANCE} complete trials (so far {len(complete)})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few trials per regime: the numbers say as much
        scores = optuna.importance.get_param_importances(study)
    return "parameter importances: " + ", ".join(f"{name} {value:.2f}" for name, value in scores.items())


def report(study: optuna.Study, objectives: Objectives, output_dir: Path) -> str:
    """The report's text; writes the front's recipes and the plot into ``output_dir``."""
    trials = study.get_trials(deepcopy=False)
    front = front_trials(trials, objectives)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    lines = [
        f"study {study.study_name}: {len(trials)} trials ("
        + ", ".join(f"{n} {state.name.lower()}" for state, n in counts.items() if n)
        + f"); objectives {objectives.describe()}",
        table(trials, objectives, front),
    ]
    if front and not any(feasible(trial) for trial in front):
        lines.append("no trial meets the constraints: the front below is of all complete trials")
    for trial in trials:
        if ERROR in trial.user_attrs:
            lines.append(f"#{trial.number} failed: {trial.user_attrs[ERROR]}")
    for trial in front:
        settings = ", ".join(f"{name}={value}" for name, value in trial.params.items())
        lines.append(f"front #{trial.number}: {settings}")
    written = write_front_recipes(front, output_dir)
    if written:
        lines.append(f"front recipes: {output_dir / FRONT_DIR}/ (nlpcompress run <file> reruns one)")
    plot = plot_front(trials, front, objectives, output_dir / PLOT)
    lines.append(
        f"plot: {plot}" if plot else "plot: skipped, matplotlib is missing (pip install 'nlpcompress[plots]')"
    )
    lines.append(importances(study))
    return "\n".join(lines)
