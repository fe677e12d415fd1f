"""Converged baselines: per task, the baseline fine-tuned at every cell of a learning rate × epochs grid on
the task's training rows, one seed, chosen on the dev score as GLUE papers choose (Devlin et al. 2019, §4.1:
the best fine-tuning learning rate and epochs on the dev set).

    .venv/bin/python -m benchmarks.baseline_grid --suite small --tasks rte,cola --data-dir ../shared/data/glue --resume

Each cell is a run of ``recipes/baseline.yaml`` with the task's settings (``benchmarks/suite_settings/``)
and the cell's learning rate and epochs; its row (metrics, dev score, wall seconds) is written to
``benchmarks/results/baselines/<suite>/<task>.json`` as soon as it finishes (``--resume`` keeps rows of the
same settings, baseline recipe and data). When every cell of a task is done, the best one (ties: fewer
epochs, then the lower learning rate) becomes the task's ``baseline`` in the settings file, which every recipe
of the GLUE harness inherits; the harness then reuses that cell's run as its seed-42 baseline.
``--table`` prints the summary of the committed grids (docs/glue.md holds it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.glue import (
    BASELINE,
    SEEDS,
    SUITES,
    TINY,
    Suite,
    baseline_recipe,
    grid_folder,
    harness_task,
    recipe_path,
    row_hash,
    run_folder,
    tiny_model,
    write_atomically,
)
from benchmarks.glue_report import score_name
from benchmarks.paths import portable
from benchmarks.task_settings import load_settings, settings_path, settings_text
from nlpcompress.errors import UserError
from nlpcompress.glue import Task
from nlpcompress.glue.tasks import get_task
from nlpcompress.measure import cpu_description

EARLIER = Path(__file__).resolve().parent / "results" / "small"
LEARNING_RATES = (5.0e-5, 1.0e-4, 2.0e-4)
EPOCHS = (3, 6)
PUBLISHED = {
    "source": "MiniLM-L6xH384 fine-tuned on GLUE, dev set (Wang et al. 2020; github.com/microsoft/unilm, "
    "minilm/README.md); the pretrained MiniLM, not the sentence-embedding all-MiniLM-L6-v2 used here",
    "scores": {"sst2": 91.5, "cola": 47.5, "rte": 68.8, "mrpc": 88.9},
}


def cell_name(learning_rate: float, epochs: int) -> str:
    return f"lr{learning_rate:g}-ep{epochs}"


def cell_recipe(
    suite: Suite,
    task: Task,
    model: str,
    work_dir: Path,
    data_dir: str | None,
    learning_rate: float,
    epochs: int,
) -> dict[str, Any]:
    """The baseline's recipe at one cell: the task's settings, the cell's learning rate and epochs, and no
    step limit of the suite's (the epochs are what the cell varies)."""
    seed = SEEDS[0]
    folder = grid_folder(work_dir, task.name, seed) / cell_name(learning_rate, epochs)
    data = baseline_recipe(suite, task, seed, model, folder, data_dir)
    data["training"] = {key: value for key, value in data["training"].items() if key != "max_steps"}
    data["training"] |= {"learning_rate": learning_rate, "num_train_epochs": epochs}
    for stage in data["stages"]:
        stage.get("training", {}).pop("max_steps", None)
    return data


def chosen_cell(rows: dict[str, dict[str, Any]]) -> str:
    """The best cell by dev score; a tie goes to fewer epochs, then to the lower learning rate."""
    return max(
        rows,
        key=lambda name: (
            round(rows[name]["score"], 6),
            -rows[name]["num_train_epochs"],
            -rows[name]["learning_rate"],
        ),
    )


def grid_table(results: dict[str, Any]) -> str:
    """One task's grid as Markdown: learning rates down, epochs across, the chosen cell in bold."""
    lrs, epochs = results["grid"]["learning_rate"], results["grid"]["num_train_epochs"]
    lines = [
        f"# Baseline grid: {results['task']} ({results['score_name']}, dev, seed {results['seed']})",
        "",
        f"Command: `{results['command']}`  ",
        f"Training rows: {results['train_rows']}; the rest of the baseline's training: "
        f"`{json.dumps(results['training'])}`",
        "",
        "| learning rate | " + " | ".join(f"epochs {e}" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for lr in lrs:
        cells = []
        for e in epochs:
            row = results["rows"].get(cell_name(lr, e))
            text = "not run" if row is None else f"{100 * row['score']:.2f}"
            cells.append(f"**{text}**" if cell_name(lr, e) == results.get("chosen") else text)
        lines.append(f"| {lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def earlier_baseline(task: str) -> float | None:
    """The seed-42 baseline score in the suite's committed results, if any: what a new grid is set against
    (recorded in the grid's file as ``earlier_baseline``)."""
    path = EARLIER / f"{task}.json"
    row = json.loads(path.read_text())["rows"].get("baseline@42") if path.is_file() else None
    return row["score"] if row else None


def summary_table(paths: Sequence[Path]) -> str:
    """The committed grids side by side: cells run, the best cell and its dev score (chosen once the grid is
    complete), the worst cell, the suite's earlier baseline and the published MiniLM-L6xH384 score."""
    lines = [
        "| task | metric | cells run | best cell (lr, epochs) | best dev | worst dev | chosen | "
        "earlier baseline | MiniLM-L6xH384, published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        results = json.loads(path.read_text())
        rows, task = results["rows"], results["task"]
        total = len(results["grid"]["learning_rate"]) * len(results["grid"]["num_train_epochs"])
        best = rows[chosen_cell(rows)]
        before = results.get("earlier_baseline")
        published = PUBLISHED["scores"].get(task)
        lines.append(
            f"| {task} | {results['score_name']} | {len(rows)} of {total} | "
            f"{best['learning_rate']:g}, {best['num_train_epochs']} | {100 * best['score']:.2f} | "
            f"{100 * min(r['score'] for r in rows.values()):.2f} | "
            f"{'yes' if results.get('chosen') else 'not yet'} | "
            + (f"{100 * before:.2f}" if before is not None else "—")
            + f" | {published if published is not None else '—'} |"
        )
    return "\n".join(lines) + "\n"


def grid_files(folder: Path, tasks: Sequence[str]) -> list[Path]:
    """The grid result files in ``folder`` of the tasks given, in their order (tasks without one left out)."""
    paths = [folder / f"{get_task(name.strip()).name}.json" for name in tasks]
    return [path for path in paths if path.is_file()]


@dataclasses.dataclass
class TaskGrid:
    """One task's grid: its cells, result file and the settings file the chosen cell is written to."""

    args: argparse.Namespace
    suite: Suite
    task: Task
    model: str

    @property
    def path(self) -> Path:
        return self.args.output_dir / f"{self.task.name}.json"

    def results(self) -> dict[str, Any]:
        first = baseline_recipe(
            self.suite, self.task, SEEDS[0], self.model, self.args.work_dir, self.args.data_dir
        )
        header = {
            "suite": self.args.suite,
            "task": self.task.name,
            "score_name": score_name(self.task),
            "model": "tiny random BERT (MiniLM vocabulary)" if self.suite.model == TINY else self.model,
            "seed": SEEDS[0],
            "train_rows": "all" if first["max_train_samples"] is None else first["max_train_samples"],
            "max_length": first["max_length"],
            "training": {
                key: value
                for key, value in first["training"].items()
                if key not in ("learning_rate", "num_train_epochs", "max_steps")
            },
            "grid": {
                "learning_rate": list(self.args.learning_rates),
                "num_train_epochs": list(self.args.epochs),
            },
            "cpu": cpu_description(),
            "threads": torch.get_num_threads(),
            "command": "python -m benchmarks.baseline_grid " + " ".join(self.args.argv),
        }
        kept = json.loads(self.path.read_text()) if self.args.resume and self.path.is_file() else {}
        # recorded when the grid begins: once the suite reruns, its baseline is the grid's own
        before = kept.get("earlier_baseline", earlier_baseline(self.task.name))
        return header | {"earlier_baseline": before, "rows": kept.get("rows", {})}

    def save(self, results: dict[str, Any]) -> None:
        write_atomically(self.path, json.dumps(portable(results), indent=1) + "\n")
        write_atomically(self.path.with_suffix(".md"), grid_table(results))

    def run(self) -> None:
        results = self.results()
        source = str(recipe_path(BASELINE))
        for lr in self.args.learning_rates:
            for epochs in self.args.epochs:
                name = cell_name(lr, epochs)
                data = cell_recipe(
                    self.suite, self.task, self.model, self.args.work_dir, self.args.data_dir, lr, epochs
                )
                hashed = row_hash(data, source, "none")
                if self.args.resume and results["rows"].get(name, {}).get("row_hash") == hashed:
                    continue
                print(f"{self.task.name}: {name}", flush=True)
                run = run_folder(data, source, self.args.resume)
                results["rows"][name] = {
                    "learning_rate": lr,
                    "num_train_epochs": epochs,
                    "metrics": run["metrics"],
                    "score": run["score"],
                    "wall_s": run["wall_s"],
                    "row_hash": hashed,
                }
                results.pop("chosen", None)
                self.save(results)
                print(f"  score {run['score']:.4f}", flush=True)
        results["chosen"] = chosen_cell(results["rows"])
        self.save(results)
        self.write_setting(results["rows"][results["chosen"]])

    def write_setting(self, row: dict[str, Any]) -> None:
        """The chosen cell's learning rate and epochs become the task's baseline in the settings file."""
        settings = load_settings(self.args.settings)
        setting = settings.get(self.task.name, self.suite.setting(self.task.name))
        training = setting.baseline_training | {
            "learning_rate": row["learning_rate"],
            "num_train_epochs": row["num_train_epochs"],
        }
        settings[self.task.name] = dataclasses.replace(
            setting, baseline_training=training, selected_from=portable(str(self.path.resolve()))
        )
        write_atomically(self.args.settings, settings_text(self.args.suite, settings))
        print(
            f"{self.task.name}: chose {cell_name(row['learning_rate'], row['num_train_epochs'])} "
            f"({row['score']:.4f}); wrote {self.args.settings}",
            flush=True,
        )


def positive_floats(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(",") if v.strip())
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated positive numbers")
    return values


def positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated positive whole numbers")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=SUITES, default="small")
    parser.add_argument("--tasks", help="comma-separated GLUE tasks (default: the suite's)")
    parser.add_argument("--learning-rates", type=positive_floats, default=LEARNING_RATES)
    parser.add_argument("--epochs", type=positive_ints, default=EPOCHS)
    parser.add_argument(
        "--data-dir", default=None, help="local GLUE folder (else $NLPCOMPRESS_GLUE_DIR / Hub)"
    )
    parser.add_argument("--resume", action="store_true", help="keep finished cells")
    parser.add_argument("--output-dir", type=Path, help="default: benchmarks/results/baselines/<suite>")
    parser.add_argument(
        "--work-dir", type=Path, help="run folders (default: runs/glue-<suite>, the harness's)"
    )
    parser.add_argument("--settings", type=Path, help="default: benchmarks/suite_settings/<suite>.yaml")
    parser.add_argument("--table", action="store_true", help="print the summary of the grids in --output-dir")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.output_dir = args.output_dir or Path("benchmarks/results/baselines") / args.suite
    args.work_dir = (args.work_dir or Path("runs") / f"glue-{args.suite}").resolve()
    args.settings = args.settings or settings_path(args.suite)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    suite = SUITES[args.suite]
    names = args.tasks.split(",") if args.tasks else suite.tasks
    if args.table:
        print(summary_table(grid_files(args.output_dir, names)), end="")
        return
    suite = dataclasses.replace(suite, per_task=suite.per_task | load_settings(args.settings))
    model = tiny_model(args.work_dir / "tiny-model") if suite.model == TINY else suite.model
    for name in names:
        TaskGrid(args, suite, harness_task(name), model).run()


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
