"""The GLUE harness's summaries: per recipe over seeds, a Markdown table and Pareto plots."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from nlpcompress.comparisons import mean_std, pareto_front
from nlpcompress.glue.metrics import score_keys
from nlpcompress.glue.tasks import Task, get_task

MB = 1e6


def summarise(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per recipe: seeds run, score and retention as mean ± std, the first seed's bootstrap interval, and the
    mean size, latencies and speedups (each seed's the median of its timings)."""
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for row in rows.values():
        if "error" not in row:
            by_recipe.setdefault(row["recipe"], []).append(row)
    summary = {}
    for recipe, runs in by_recipe.items():
        score, score_std = mean_std([r["score"] for r in runs])
        retention, retention_std = mean_std([r["retention"] for r in runs])
        summary[recipe] = {
            "seeds": [r["seed"] for r in runs],
            "backend": runs[0].get("backend", "torch"),
            "score": round(score, 4),
            "score_std": round(score_std, 4),
            "retention": round(retention, 4),
            "retention_std": round(retention_std, 4),
            "retention_ci95_first_seed": runs[0]["retention_ci95"],
            "params": runs[0]["params"]["total"],
            "nonzero": runs[0]["params"]["nonzero"],
            "size_bytes": round(mean_std([r["size_bytes"] for r in runs])[0]),
            **{
                f"{key}_{shape}": round(mean_std([timed(r, key, shape) for r in runs])[0], 3)
                for key in ("latency_ms", "speedup")
                for shape in runs[0]["latency_ms"]
            },
        }
    return summary


def timed(row: dict[str, Any], key: str, shape: str) -> float:
    """A row's latency or speedup (``key``) at ``shape``: the median of its timings, the first and every
    ``--retime`` one, so one disturbed process does not decide it."""
    return statistics.median([row[key][shape], *(again[key][shape] for again in row.get("retimed", []))])


def score_name(task: Task) -> str:
    """What a task's score is: its one metric, or the mean of its metrics (STS-B, MRPC, MNLI)."""
    keys = score_keys(task)
    return keys[0] if len(keys) == 1 else "mean of " + " and ".join(keys)


def spread(summary: dict[str, Any], key: str, digits: int) -> str:
    """The standard deviation over seeds in points, or "—" when one seed was run (no spread measured)."""
    if len(summary["seeds"]) < 2:
        return "—"
    return f"{100 * summary[f'{key}_std']:.{digits}f}"


def timed_on(results: dict[str, Any], recipe: str) -> dict[str, Any]:
    """The CPU a recipe's rows were timed on (rows from before rows recorded it: the file's CPU)."""
    row = next(row for row in results["rows"].values() if row["recipe"] == recipe and "error" not in row)
    return row.get("timed_on", {}).get("cpu", results["cpu"])


def cpus_timed_on(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The CPUs the summarised recipes' rows were timed on, by model name (the file's CPU if none ran)."""
    cpus = {cpu["model"]: cpu for cpu in (timed_on(results, recipe) for recipe in results["summary"])}
    return cpus or {results["cpu"]["model"]: results["cpu"]}


def recipe_table(results: dict[str, Any], source: str) -> str:
    """The README's table of recipes: what each keeps of the baseline and how much smaller and faster it is,
    read from one task's harness results (``source``: their file, linked under the table)."""
    summary = results["summary"]
    base = summary["baseline"]
    task = results["task"]
    lines = [
        f"| recipe | runs on | {task} dev | retention (95% CI) | seeds | smaller | faster bs 1 / 32 | timed on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cpu_of = {recipe: timed_on(results, recipe) for recipe in summary}
    for recipe, s in sorted(summary.items(), key=lambda item: item[1]["size_bytes"]):
        low, high = s["retention_ci95_first_seed"]
        score = f"{100 * s['score']:.2f}" + (f" ± {spread(s, 'score', 2)}" if len(s["seeds"]) > 1 else "")
        lines.append(
            f"| [`{recipe}`](recipes/{recipe}.yaml) | {s['backend']} | {score} | "
            f"{100 * s['retention']:.1f}% ({100 * low:.1f}–{100 * high:.1f}%) | {len(s['seeds'])} | "
            f"{base['size_bytes'] / s['size_bytes']:.1f}× | "
            f"{s['speedup_bs1_seq128']:.2f}× / {s['speedup_bs32_seq128']:.2f}× | {cpu_of[recipe]['model']} |"
        )
    described = "; ".join(
        f"{model}: {', '.join(cpu['instruction_sets'])}" for model, cpu in cpus_timed_on(results).items()
    )
    lines += [
        "",
        f"From [`{source}`]({source}) ({results['suite']} suite, model {results['model']}, "
        f"{results['threads']} threads; instruction sets of the CPUs in `timed on`: {described}). "
        "Speed: batch 1 and 32 at seq 128, each model timed alternately with the baseline (PyTorch fp32) "
        "in one process: compare speedups only between rows timed on the same CPU. Size: the bytes a user "
        "ships for the backend in `runs on`.",
    ]
    return "\n".join(lines) + "\n"


def table(results: dict[str, Any]) -> str:
    """The task's Markdown table: one line per recipe (mean ± std over its seeds)."""
    summary = results["summary"]
    base = summary.get("baseline")
    described = "; ".join(
        f"{model} ({', '.join(cpu['instruction_sets'])})" for model, cpu in cpus_timed_on(results).items()
    )
    lines = [
        f"### {results['task']} ({results['suite']} suite, score: "
        f"{results.get('score_name') or score_name(get_task(results['task']))})",
        "",
        f"Model {results['model']}; timed on {described}, "
        f"{results['threads']} threads. Score and retention: mean ± std over the seeds run (— for one seed: no "
        "spread was measured); the 95% interval is "
        "a paired bootstrap over the dev examples for the first seed. Latency: seq 128, each model timed "
        "alternately with its baseline (PyTorch fp32) in one process; a recipe that exports is scored, sized and "
        "timed on its runtime.",
        "",
        "| recipe | runs on | seeds | score | retention | 95% CI | params | non-zero | size MB | size × | bs1 ms | "
        "speedup bs1 | speedup bs32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, s in summary.items():
        low, high = s["retention_ci95_first_seed"]
        size_ratio = s["size_bytes"] / base["size_bytes"] if base else float("nan")
        lines.append(
            f"| {recipe} | {s['backend']} | {len(s['seeds'])} | {100 * s['score']:.2f} ± {spread(s, 'score', 2)} | "
            f"{100 * s['retention']:.1f}% ± {spread(s, 'retention', 1)} | {100 * low:.1f}–{100 * high:.1f}% | "
            f"{s['params'] / 1e6:.2f}M | {s['nonzero'] / 1e6:.2f}M | {s['size_bytes'] / MB:.1f} | "
            f"{size_ratio:.2f} | {s['latency_ms_bs1_seq128']:.1f} | {s['speedup_bs1_seq128']:.2f}× | "
            f"{s['speedup_bs32_seq128']:.2f}× |"
        )
    lines += waterfall_lines(results["rows"])
    lines += retiming_lines(results["rows"])
    failed = [
        f"- {row['recipe']} (seed {row['seed']}): {row['error']}"
        for row in results["rows"].values()
        if "error" in row
    ]
    if failed:
        lines += ["", "Recipes that could not run:", *failed]
    return "\n".join(lines) + "\n"


def waterfall_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """For every recipe of more than one stage: its score after each step (baseline, each stage, its
    runtime), the mean over its seeds with their spread, or one seed's value marked as one seed."""
    by_recipe: dict[str, list[list]] = {}
    for row in rows.values():
        if "waterfall" in row and len(row["waterfall"]) > 2:
            by_recipe.setdefault(row["recipe"], []).append(row["waterfall"])
    if not by_recipe:
        return []
    lines = ["", "Where the accuracy goes (score after each step; mean ± std over the seeds):", ""]
    for recipe, falls in by_recipe.items():
        steps = []
        for index, (name, _) in enumerate(falls[0]):
            scores = [fall[index][1] for fall in falls if len(fall) > index]
            mean, std = mean_std(scores)
            spread = f" ± {100 * std:.2f}" if len(scores) > 1 else ""
            steps.append(f"{name} {100 * mean:.2f}{spread}")
        seeds = f"{len(falls)} seeds" if len(falls) > 1 else "1 seed"
        lines.append(f"- {recipe} ({seeds}): " + " → ".join(steps))
    return lines


def retiming_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Rows whose model the harness timed again (``--retime``): every timing's speedups at seq 128, and how
    far the furthest lies from their mean."""
    lines = []
    for row in rows.values():
        if not row.get("retimed"):
            continue
        timings = [row["speedup"], *(again["speedup"] for again in row["retimed"])]
        parts = []
        for shape, label in (("bs1_seq128", "bs1"), ("bs32_seq128", "bs32")):
            values = [timing[shape] for timing in timings]
            mean = sum(values) / len(values)
            furthest = max(abs(value - mean) for value in values) / mean
            listed = ", ".join(f"{value:.2f}×" for value in values)
            parts.append(f"{label} {listed} (within ±{100 * furthest:.1f}% of their mean)")
        lines.append(f"- {row['recipe']} (seed {row['seed']}), {len(timings)} timings: " + "; ".join(parts))
    if lines:
        lines[:0] = [
            "",
            "The same saved models timed again (`--resume --retime`, one process each run; the table above "
            "takes the median of a row's timings):",
        ]
    return lines


def suite_table(by_task: dict[str, dict[str, Any]], stale: set[str] = frozenset()) -> str:
    """Every recipe's retention per task (mean over its seeds, their count), its macro-average over the
    tasks and its worst task, from each task's harness results (``by_task``); a recipe missing a task has
    no average. Tasks in ``stale`` were measured under settings the suite has since changed (marked †)."""
    tasks = list(by_task)
    recipes = list(dict.fromkeys(recipe for results in by_task.values() for recipe in results["summary"]))
    header = [f"{task}†" if task in stale else task for task in tasks]
    lines = [
        f"| recipe | {' | '.join(header)} | macro-average | worst task |",
        "|---" * (len(tasks) + 3) + "|",
    ]
    for recipe in recipes:
        kept = {
            task: by_task[task]["summary"][recipe] for task in tasks if recipe in by_task[task]["summary"]
        }
        cells = []
        for task in tasks:
            if task not in kept:
                cells.append("—")
                continue
            s = kept[task]
            seeds = len(s["seeds"])
            extra = f" ± {spread(s, 'retention', 1)} ({seeds} seeds)" if seeds > 1 else " (1 seed)"
            cells.append(f"{100 * s['retention']:.1f}%{extra}")
        if len(kept) == len(tasks):
            average = f"{100 * sum(s['retention'] for s in kept.values()) / len(kept):.1f}%"
            worst = min(kept, key=lambda task: kept[task]["retention"])
            worst_cell = f"{worst} {100 * kept[worst]['retention']:.1f}%"
        else:
            average, worst_cell = f"— ({len(kept)} of {len(tasks)} tasks)", "—"
        lines.append(f"| {recipe} | {' | '.join(cells)} | {average} | {worst_cell} |")
    if stale:
        lines += [
            "",
            "† measured against an earlier baseline: the task's settings changed since (rerun with `--resume`).",
        ]
    return "\n".join(lines) + "\n"


def paired_table(
    by_task: dict[str, dict[str, Any]], reference: str, variants: list[str] | None = None
) -> str:
    """Every recipe (or those in ``variants``) against ``reference`` on the seeds both ran, task by task:
    the per-seed score differences (points; both rows of a seed start from its baseline and share the data
    order), their mean ± std and the 95% t-interval of that mean. A change is kept only when the interval
    excludes 0: with 3 seeds the mean must clear 2.48 standard deviations (t with 2 degrees of freedom,
    4.30 / √3). A seed whose two rows distil from two trainings of its baseline (``baseline_run`` differs:
    retrained, e.g. on another CPU) is marked †, and a note under the table gives how far apart those
    baselines' dev scores are."""
    lines = [
        f"| task | recipe | seeds | Δ score per seed vs {reference} | mean Δ ± std | 95% interval | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    retrained_gaps = []
    for task, results in by_task.items():
        rows = [row for row in results["rows"].values() if "error" not in row]
        theirs = {row["seed"]: row for row in rows if row["recipe"] == reference}
        for recipe in dict.fromkeys(row["recipe"] for row in rows):
            if recipe in (reference, "baseline") or (variants is not None and recipe not in variants):
                continue
            mine = {row["seed"]: row for row in rows if row["recipe"] == recipe}
            seeds = [seed for seed in mine if seed in theirs]
            if not seeds:
                continue
            deltas = [100 * (mine[seed]["score"] - theirs[seed]["score"]) for seed in seeds]
            listed = ", ".join(f"{delta:+.2f}" for delta in deltas)
            retrained = [s for s in seeds if mine[s].get("baseline_run") != theirs[s].get("baseline_run")]
            retrained_gaps += [
                100 * abs(mine[s]["baseline_score"] - theirs[s]["baseline_score"]) for s in retrained
            ]
            seed_list = ", ".join(f"{seed}†" if seed in retrained else str(seed) for seed in seeds)
            if len(deltas) < 2:
                lines.append(
                    f"| {task} | {recipe} | {seed_list} | {listed} | {deltas[0]:+.2f} (1 seed) | — | "
                    "1 seed: not tested |"
                )
                continue
            mean, std = mean_std(deltas)
            half = student_t.ppf(0.975, len(deltas) - 1) * std / len(deltas) ** 0.5
            low, high = mean - half, mean + half
            verdict = "better" if low > 0 else "worse" if high < 0 else "no difference shown"
            lines.append(
                f"| {task} | {recipe} | {seed_list} | {listed} | {mean:+.2f} ± {std:.2f} | "
                f"{low:+.2f} to {high:+.2f} | {verdict} |"
            )
    if retrained_gaps:
        gap = max(retrained_gaps)
        scores = f"differ by at most {gap:.2f} points" if gap >= 0.005 else "are equal"
        lines += [
            "",
            "† the two rows distil from two trainings of the seed's baseline with the same settings "
            f"(`baseline_run` differs: retrained, e.g. on another CPU); their dev scores {scores}.",
        ]
    return "\n".join(lines) + "\n"


def suite_front(by_task: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per recipe measured on every task of ``by_task``: its macro-average retention, and its size ratio
    (the task's baseline size over its size) and batch-1 and batch-32 speedups, each averaged over the
    tasks. A recipe missing a task is left out, as the suite table gives it no average."""
    tasks = list(by_task)
    front = {}
    for recipe in dict.fromkeys(r for results in by_task.values() for r in results["summary"]):
        if not all(recipe in by_task[task]["summary"] for task in tasks):
            continue
        per_task = [(by_task[t]["summary"][recipe], by_task[t]["summary"]["baseline"]) for t in tasks]
        front[recipe] = {
            "retention": sum(s["retention"] for s, _ in per_task) / len(tasks),
            "size_ratio": sum(b["size_bytes"] / s["size_bytes"] for s, b in per_task) / len(tasks),
            "speedup_bs1": sum(s["speedup_bs1_seq128"] for s, _ in per_task) / len(tasks),
            "speedup_bs32": sum(s["speedup_bs32_seq128"] for s, _ in per_task) / len(tasks),
        }
    return front


def _plot_fronts(
    names: list[str],
    panels: list[tuple[str, str, list[tuple[float, float]]]],
    higher_x_is_better: bool,
    title: str,
    path,
) -> None:
    """One panel per (x label, y label, points): each named point (y, x) in grey, the Pareto front joined in
    red; saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(11, 4.2))
    for axis, (x_label, y_label, points) in zip(axes, panels, strict=True):
        front = sorted(pareto_front(points, maximize=(True, higher_x_is_better)), key=lambda i: points[i][1])
        axis.scatter([p[1] for p in points], [p[0] for p in points], color="tab:gray")
        axis.plot(
            [points[i][1] for i in front], [points[i][0] for i in front], "o-", color="tab:red", label="front"
        )
        for name, (y, x) in zip(names, points, strict=True):
            axis.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_suite_front(front: dict[str, dict[str, float]], tasks: list[str], stale: set[str], path) -> None:
    """Macro-average retention against the mean batch-1 speedup and against the mean size ratio, one point
    per recipe of ``suite_front``, its Pareto front joined; stale tasks are named in the title."""
    names = list(front)
    y_label = f"macro-average retention over {len(tasks)} tasks, %"
    panels = [
        (x_label, y_label, [(100 * front[n]["retention"], front[n][key]) for n in names])
        for key, x_label in (
            ("speedup_bs1", "× faster at batch 1 (seq 128), mean over tasks"),
            ("size_ratio", "× smaller"),
        )
    ]
    note = f" (against earlier baselines: {', '.join(sorted(stale))})" if stale else ""
    title = f"{', '.join(tasks)}: recipes run on every task, the Pareto front in red{note}"
    _plot_fronts(names, panels, True, title, path)


def plot_front(results: dict[str, Any], path) -> None:
    """Score against batch-1 latency and against size on disk, one point per recipe, its Pareto front joined."""
    summary = results["summary"]
    names = list(summary)
    y_label = f"{results['task']} score"
    panels = [
        (x_label, y_label, [(summary[n]["score"], summary[n][key] / scale) for n in names])
        for key, x_label, scale in (
            ("latency_ms_bs1_seq128", "batch-1 latency, ms (seq 128)", 1.0),
            ("size_bytes", "size on disk, MB", MB),
        )
    ]
    title = f"{results['task']}, {results['suite']} suite: the Pareto front in red"
    _plot_fronts(names, panels, False, title, path)


def paired_report(
    parser: argparse.ArgumentParser, by_task: dict[str, dict[str, Any]], args: argparse.Namespace
) -> str:
    """``--paired``: the paired table, after checking the reference recipe has rows."""
    if not any(row["recipe"] == args.paired for r in by_task.values() for row in r["rows"].values()):
        parser.error(f"--paired: no rows of recipe {args.paired!r} in the files given")
    variants = [name.strip() for name in args.variants.split(",")] if args.variants else None
    return paired_table(by_task, args.paired, variants)


def suite_report(by_task: dict[str, dict[str, Any]], plot: Path | None) -> str:
    """``--suite-table``: the suite table, marking tasks run under earlier settings; ``plot``: also the plot."""
    from benchmarks.glue import current_settings

    stale = {task for task, results in by_task.items() if results["settings"] != current_settings(results)}
    if plot:
        plot_suite_front(suite_front(by_task), list(by_task), stale, plot)
    return suite_table(by_task, stale)


def main(argv: list[str] | None = None) -> None:
    """Rewrite each results file's Markdown table from its JSON, or print the README's table of recipes."""
    import json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.glue_report", description=main.__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="benchmarks/results/<suite>/<task>.json files")
    parser.add_argument("--readme", action="store_true", help="print the README's table of the first file")
    parser.add_argument(
        "--suite-table", action="store_true", help="print the retention of every recipe on every task given"
    )
    parser.add_argument("--suite-plot", type=Path, metavar="PNG", help="with --suite-table: also plot it")
    parser.add_argument(
        "--paired",
        metavar="RECIPE",
        help="print every recipe against RECIPE on the seeds both ran, per task given (paired by seed)",
    )
    parser.add_argument("--variants", help="with --paired: only these recipes (comma-separated)")
    args = parser.parse_args(argv)
    if args.suite_plot and not args.suite_table:
        parser.error("--suite-plot: give it with --suite-table")
    if args.paired and args.suite_table:
        parser.error("--paired: give it without --suite-table")
    if args.variants and not args.paired:
        parser.error("--variants: give it with --paired")
    if args.paired or args.suite_table:
        by_task = {path.stem: json.loads(path.read_text()) for path in args.results}
        print(
            paired_report(parser, by_task, args) if args.paired else suite_report(by_task, args.suite_plot),
            end="",
        )
        return
    for path in args.results:
        results = json.loads(path.read_text())
        if args.readme:
            print(recipe_table(results, path.as_posix()), end="")
            return
        path.with_suffix(".md").write_text(table(results))
        print(f"wrote {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
