"""The GLUE benchmark harness: every recipe on every task, against a fine-tuned baseline of the same seed.

    .venv/bin/python -m benchmarks.glue --suite small --tasks sst2,rte --data-dir ../shared/data/glue

For each task and seed the baseline (``recipes/baseline.yaml``) is fine-tuned once, cached under the work
folder and reused by every recipe and every rerun. Each recipe then runs through ``nlpcompress run``'s own
code path (``run_recipe``); a recipe whose first stage is a plain ``finetune`` starts from the cached
baseline instead (which is also its teacher when a later stage distils). A row records the metrics, the
retention against the baseline with a paired-bootstrap 95% interval over the dev examples, parameters,
size on disk, CPU latency at batch 1 and 32 (seq 128; the model and the baseline alternate in one process),
wall seconds and the resolved recipe. The JSON is rewritten atomically after every row (``--resume`` skips
finished rows); ``<task>.md`` and ``<task>.png`` (metric against latency and size, Pareto front marked)
sit beside it in ``benchmarks/results/<suite>/``.

Suites: ``ci`` (a tiny random BERT with MiniLM's vocabulary, a few steps: seconds), ``small`` (MiniLM-L6,
8,000 training rows, seq 64: CoLA, SST-2, MRPC, STS-B, RTE), ``full`` (bert-base-uncased, all data, seq
128, the nine tasks: the papers' setting, for a GPU machine with the Hub reachable).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from transformers import BertConfig, BertModel

from benchmarks.glue_report import plot_front, score_name, summarise, table
from benchmarks.paths import portable
from benchmarks.task_settings import ALL_ROWS, TaskSetting, load_settings, settings_path
from nlpcompress.comparisons import paired_bootstrap
from nlpcompress.errors import UserError
from nlpcompress.evaluation import collect_logits
from nlpcompress.file_digest import concatenated_files_digest
from nlpcompress.glue import Task, data_record, load_task_data
from nlpcompress.glue.metrics import compute_metrics, merge_split_metrics, task_score
from nlpcompress.measure import (
    LATENCY_SHAPES,
    count_parameters,
    cpu_description,
    medians,
    time_alternating,
    timing_environment,
)
from nlpcompress.models import load_model_dir, load_tokenizer
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import run_recipe
from nlpcompress.runtime.backends import Predictor, deployable_bytes, load_predictor
from nlpcompress.task import resolve_task, task_option

T = TypeVar("T")

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
BASELINE = "baseline"
SEEDS = (42, 1, 2, 3, 4)
TINY = "tiny"
RUN_SETTINGS = (
    "task",
    "max_train_samples",
    "max_eval_samples",
    "max_length",
    "seed",
    "training",
    "stages",
    "export",
)


@dataclass(frozen=True)
class Suite:
    """What every run of a suite shares; ``training`` overrides every recipe's and every stage's settings."""

    model: str
    tasks: tuple[str, ...]
    max_train_samples: int | None
    max_eval_samples: int | None
    max_length: int
    training: dict[str, Any] = field(default_factory=dict)
    per_task: dict[str, TaskSetting] = field(default_factory=dict)

    def setting(self, task: str) -> TaskSetting:
        return self.per_task.get(task, TaskSetting())

    def max_length_of(self, task: str) -> int:
        return self.setting(task).max_length or self.max_length

    def max_train_samples_of(self, task: str) -> int | None:
        rows = self.setting(task).train_rows
        return self.max_train_samples if rows is None else None if rows == ALL_ROWS else int(rows)


SUITES = {
    "ci": Suite(
        TINY,
        ("sst2", "rte"),
        max_train_samples=48,
        max_eval_samples=32,
        max_length=32,
        training={"max_steps": 3, "per_device_train_batch_size": 8, "warmup_steps": 0, "logging_steps": 1},
    ),
    "small": Suite(
        "minilm-l6",
        ("cola", "sst2", "mrpc", "stsb", "rte"),
        8000,
        None,
        64,
        per_task=load_settings(settings_path("small")),
    ),
    "full": Suite(
        "bert-base-uncased",
        ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"),
        None,
        None,
        128,
    ),
}


def tiny_model(folder: Path) -> str:
    """A seeded random 6-layer BERT (width 32, 4 heads, FFN 64) with MiniLM's tokenizer, saved once."""
    if not (folder / "config.json").is_file():
        tokenizer = load_tokenizer("minilm-l6")
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=6,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        BertModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def recipe_path(name: str) -> Path:
    """``head-pruning`` -> ``recipes/head-pruning.yaml``; a path to a YAML file is taken as it is."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        raise UserError(f"--recipes: no recipe {name!r} ({path}); allowed: {known}, or a path to a YAML file")
    return path


def suite_recipe(
    raw: dict[str, Any],
    suite: Suite,
    task: Task,
    seed: int,
    model: str,
    output_dir: Path,
    data_dir: str | None,
) -> dict[str, Any]:
    """``raw`` (a recipe's YAML) set to the suite's model, data and limits, one task (a GLUE one, or the
    user's data) and one seed."""
    data = copy.deepcopy(raw)
    data.pop("push_to_hub", None)
    data |= {
        "model": model,
        "task": json.loads(task.data.block_json) if task.data is not None else task.name,
        "data_dir": data_dir,
        "max_train_samples": suite.max_train_samples_of(task.name),
        "max_eval_samples": suite.max_eval_samples,
        "max_length": suite.max_length_of(task.name),
        "seed": seed,
        "output_dir": str(output_dir),
    }
    if suite.training:
        data["training"] = {**data.get("training", {}), **suite.training}
        for stage in data["stages"]:
            stage["training"] = {**stage.get("training", {}), **suite.training}
    return data


def baseline_recipe(
    suite: Suite, task: Task, seed: int, model: str, output_dir: Path, data_dir: str | None
) -> dict[str, Any]:
    """The baseline's recipe for one task and seed: ``recipes/baseline.yaml`` set to the suite, trained as the
    task's settings say (``benchmarks/suite_settings/<suite>.yaml``)."""
    raw = yaml.safe_load(recipe_path(BASELINE).read_text())
    data = suite_recipe(raw, suite, task, seed, model, output_dir, data_dir)
    data["training"] = {**data.get("training", {}), **suite.setting(task.name).baseline_training}
    return data


def grid_folder(work_dir: Path, task: str, seed: int) -> Path:
    """Where ``benchmarks.baseline_grid`` keeps the runs of a task's grid of baselines for one seed."""
    return work_dir / task / f"seed{seed}" / "grid"


def adopt_grid_run(data: dict[str, Any], source: str, folder: Path, grid: Path) -> None:
    """Copy into ``folder`` a finished run of the grid that is the run ``data`` asks for (the chosen cell of
    the task's grid), so the baseline is not trained twice."""
    for cell in sorted(grid.iterdir()) if grid.is_dir() else ():
        if finished_run_of(data, source, cell):
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(cell, folder)
            return


def from_baseline(data: dict[str, Any], baseline_dir: Path, source: str) -> dict[str, Any]:
    """A recipe that opens with a plain ``finetune`` starts from the cached baseline instead (its teacher too,
    when a later stage distils); one that only fine-tunes and exports (``int8``) evaluates the baseline and
    exports it; one that compresses its fine-tuned input model (``teacher: input``, as ``demo``) gets the
    baseline as that model; any other recipe runs as it is."""
    first = data["stages"][0] if data["stages"] else {}
    if data.get("teacher") == "input" and first.get("type") != "finetune":
        return {**data, "model": str(baseline_dir)}
    if {key: value for key, value in first.items() if key != "training"} != {"type": "finetune"}:
        return data
    data = {**data, "stages": data["stages"][1:], "model": str(baseline_dir)}
    if not data["stages"]:
        if data.get("export") is None:
            raise UserError(f"{source}: only fine-tunes; it is the baseline (recipes/{BASELINE}.yaml) itself")
        data["stages"] = [{"type": "evaluate"}]
    if data.get("teacher") is None and any(s.needs_teacher() for s in recipe_from_dict(data, source).stages):
        data["teacher"] = "input"
    return data


def run_settings(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The settings of the run the recipe ``data`` asks for (resolved, wherever its paths point)."""
    asked = yaml.safe_load(recipe_from_dict(data, source).to_yaml())
    return {key: asked.get(key) for key in RUN_SETTINGS}


def same_settings(data: dict[str, Any], source: str, resolved: dict[str, Any]) -> bool:
    """Whether the recipe ``data`` asks for the run that the saved, resolved recipe describes."""
    return run_settings(data, source) == {key: resolved.get(key) for key in RUN_SETTINGS}


def row_hash(data: dict[str, Any], source: str, baseline_run: str) -> str:
    """A row's key: the SHA-256 of its resolved settings, its baseline's run and the task data's bytes. A
    resumed harness keeps a row only under the same key."""
    record = {
        "settings": run_settings(data, source),
        "baseline_run": baseline_run,
        "data": data_record(resolve_task(data["task"]), data.get("data_dir")),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def finished_run_of(data: dict[str, Any], source: str, folder: Path) -> bool:
    """Whether ``folder`` holds a finished run of the recipe ``data`` on the same data (a baseline cached
    with other settings, or trained on other data, is not reused)."""
    saved = folder / "recipe.yaml"
    if not (folder / "results.json").is_file() or not saved.is_file():
        return False
    ran_on = json.loads((folder / "results.json").read_text()).get("data")
    return ran_on == data_record(resolve_task(data["task"]), data.get("data_dir")) and same_settings(
        data, source, yaml.safe_load(saved.read_text())
    )


def run_folder(data: dict[str, Any], source: str, resume: bool) -> dict[str, Any]:
    """Run the recipe (a finished run of it is reused when resuming) and return its results."""
    output_dir = Path(data["output_dir"])
    if resume and finished_run_of(data, source, output_dir):
        return json.loads((output_dir / "results.json").read_text())
    if output_dir.exists():
        shutil.rmtree(output_dir)
    return run_recipe(recipe_from_dict(data, source), progress=False, restart=not resume).results


def model_digest(folder: Path) -> str:
    """What tells one trained baseline from another: the SHA-256 of its config and weights. A baseline
    retrained to the same weights (training on one CPU is deterministic) is the same run, so a lost cache
    costs the baseline's training, not its task's rows; another CPU model's training differs in the low bits
    and is another run."""
    names = ("config.json", *sorted(p.name for p in folder.glob("*.safetensors")))
    return concatenated_files_digest(folder / name for name in names)[:16]


@dataclass
class Predictions:
    """Logits of one model on each dev split, and the labels."""

    logits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    @classmethod
    def of(cls, predictor: Predictor, evals: dict[str, Any], tokenizer) -> Predictions:
        pairs = {
            split: collect_logits(lambda batch: predictor(**batch), data, tokenizer, progress=False)
            for split, data in evals.items()
        }
        return cls({s: p[0] for s, p in pairs.items()}, {s: p[1] for s, p in pairs.items()})

    def score(self, task: Task, rows: dict[str, np.ndarray]) -> float:
        per_split = {s: compute_metrics(task, self.logits[s][rows[s]], self.labels[s][rows[s]]) for s in rows}
        return task_score(task, merge_split_metrics(task, per_split))


def waterfall(results: dict[str, Any], task: Task, baseline_score: float) -> list[list]:
    """Where a row's accuracy goes: ``[step, score]`` for the baseline it starts from (the teacher), after
    each stage of the run, and through the runtime when the recipe exports."""
    steps = [["baseline", round(baseline_score, 4)]]
    steps += [[stage["name"], round(task_score(task, stage["metrics"]), 4)] for stage in results["stages"]]
    if "runtime" in results:
        steps.append([f"on {results['runtime']['backend']}", round(results["runtime"]["score"], 4)])
    return steps


def timed_shapes(max_length: int) -> dict[str, tuple[int, int]]:
    """Batch 1 and 32 at seq 128 (every report's columns) and at the task's own ``max_length``."""
    own = {f"bs{batch}_seq{max_length}": (batch, max_length) for batch in (1, 32)}
    return LATENCY_SHAPES | own


def measure(
    folder: Path,
    backend: str,
    max_length: int,
    expected_score: float,
    baseline_folder: Path,
    base_predictions: Predictions,
    task: Task,
    evals,
    tokenizer,
) -> dict[str, Any]:
    """Parameters, size, latency beside the baseline (``timed_apart``), and the bootstrap interval of
    retention. The saved folder's predictions on ``backend`` must reproduce the score its run reported
    (same rows, same tokenizer)."""
    threads = torch.get_num_threads()
    predictor = load_predictor(folder, backend, threads)
    predictions = Predictions.of(predictor, evals, tokenizer)
    sizes = {split: len(labels) for split, labels in predictions.labels.items()}
    everything = {split: np.arange(size) for split, size in sizes.items()}
    if abs(predictions.score(task, everything) - expected_score) > 1e-4:
        raise RuntimeError(f"{folder}: its predictions here do not reproduce the score of its run")
    low, high = paired_bootstrap(
        lambda rows: predictions.score(task, rows), lambda rows: base_predictions.score(task, rows), sizes
    )
    return {
        "backend": backend,
        "params": count_parameters(load_model_dir(str(folder))),
        "size_bytes": deployable_bytes(folder, backend),  # what a user ships for the backend
        **timed_apart(folder, backend, baseline_folder, max_length, threads),
        "retention_ci95": [round(low, 4), round(high, 4)],
    }


def timed_beside(predictor: Predictor, baseline: Predictor, max_length: int, threads: int) -> dict[str, Any]:
    """The model's latency and speedup per shape, timed alternately with the baseline in this process."""
    timed = time_alternating(
        {"model": predictor, "baseline": baseline}, timed_shapes(max_length), threads=threads
    )
    latency = medians(timed)
    return {
        "latency_ms": latency["model"],
        "baseline_latency_ms": latency["baseline"],
        "speedup": {
            shape: round(latency["baseline"][shape] / ms, 3) for shape, ms in latency["model"].items()
        },
        "timing": timed,  # median, interquartile range, the median's 95% interval and passes, per shape
        "timed_on": timing_environment(threads),
    }


def timed_from_folders(
    folder: str, backend: str, baseline_folder: str, max_length: int, threads: int
) -> dict[str, Any]:
    """``timed_beside`` of two saved folders (the baseline on PyTorch), loaded in the calling process."""
    torch.set_num_threads(threads)
    return timed_beside(
        load_predictor(folder, backend, threads),
        load_predictor(baseline_folder, "torch", threads),
        max_length,
        threads,
    )


def exit_when_orphaned(parent: int, every_s: float = 1.0) -> None:
    """Start a daemon thread that ends this process once ``parent`` is no longer its parent: a harness
    stopped with ``kill`` takes its timing process with it instead of leaving it to time on, competing
    with whatever runs next."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` run in a new Python process (spawned, not forked), its result sent back; the
    process ends with the harness's if the harness is killed first (``exit_when_orphaned``)."""
    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_when_orphaned,
        initargs=(os.getpid(),),
    ) as pool:
        return pool.submit(function, *args).result()


def timed_apart(
    folder: Path, backend: str, baseline_folder: Path, max_length: int, threads: int
) -> dict[str, Any]:
    """``timed_from_folders`` in a fresh process. The harness's own process has just trained a model, and
    its timings there came out slower than any later one of the same folders (SST-2's first batch-32
    timings, docs/glue.md): every timing starts from the saved folders in a process that did nothing else."""
    return in_fresh_process(
        timed_from_folders, str(folder), backend, str(baseline_folder), max_length, threads
    )


def retime(row: dict[str, Any], folder: Path, max_length: int, baseline_folder: Path) -> None:
    """Time a kept row's saved model beside its baseline once more and append it to ``row["retimed"]``
    (speedups, latencies, environment): how far the harness's speedups move between processes. The row's
    own fields keep the first timing; its tables take the median of all (``glue_report.timed``)."""
    timed = timed_apart(
        folder, row.get("backend", "torch"), baseline_folder, max_length, torch.get_num_threads()
    )
    del timed["timing"]
    row.setdefault("retimed", []).append(timed)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, so an interruption leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


@dataclass
class Baseline:
    """One seed's cached baseline: its folder, its run (``model_digest``: tells one training of it from
    another) and predictions."""

    folder: Path
    data: dict[str, Any]
    results: dict[str, Any]
    run: str
    predictions: Predictions


@dataclass
class TaskBench:
    """One task of a suite: its data, its baselines (one per seed) and its result file."""

    args: argparse.Namespace
    suite: Suite
    task: Task
    model: str
    tokenizer: Any
    evals: dict[str, Any]
    results: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.args.output_dir / f"{self.task.name}.json"

    def save(self) -> None:
        self.results["summary"] = summarise(self.results["rows"])
        write_atomically(self.path, json.dumps(portable(self.results), indent=1) + "\n")
        write_atomically(self.path.with_suffix(".md"), table(self.results))

    def run(self, names: Sequence[str], seeds: Sequence[int]) -> None:
        for seed in seeds:
            baseline = self.baseline(seed)
            for name in names:
                self.run_row(name, seed, baseline)
        plot_front(self.results, self.path.with_suffix(".png"))

    def baseline(self, seed: int) -> Baseline:
        """The seed's fine-tuned baseline, trained once and reused while its settings stay the same."""
        folder = self.args.work_dir / self.task.name / f"seed{seed}" / BASELINE
        data = self.prepared(BASELINE, seed, self.model, folder)
        source = str(recipe_path(BASELINE))
        if not finished_run_of(data, source, folder):
            adopt_grid_run(data, source, folder, grid_folder(self.args.work_dir, self.task.name, seed))
        results = run_folder(data, source, resume=True)
        return Baseline(
            folder,
            data,
            results,
            model_digest(folder),
            Predictions.of(load_predictor(folder, "torch"), self.evals, self.tokenizer),
        )

    def run_row(self, name: str, seed: int, baseline: Baseline) -> None:
        """Run one recipe against the baseline and record its row; a row finished under the same key
        (``row_hash``: settings, baseline run, data) is kept when resuming, a recipe that does not fit is
        recorded as such."""
        key = f"{name}@{seed}"
        try:
            source, data = self.row_recipe(name, seed, baseline)
            done = self.results["rows"].get(key)
            hashed = row_hash(data, str(source), baseline.run)
            if self.args.resume and done is not None and done.get("row_hash") == hashed:
                if self.args.retime and "error" not in done:
                    print(f"{self.task.name} seed {seed}: {name} timed again", flush=True)
                    retime(
                        done,
                        Path(data["output_dir"]),
                        self.suite.max_length_of(self.task.name),
                        baseline.folder,
                    )
                    self.save()
                return
            print(f"{self.task.name} seed {seed}: {name}", flush=True)
            results = (
                baseline.results if name == BASELINE else run_folder(data, str(source), self.args.resume)
            )
        except UserError as error:  # a recipe that does not fit this model or task: say so, go on
            self.results["rows"][key] = {"recipe": name, "seed": seed, "error": str(error)}
            self.save()
            print(f"  failed: {error}", flush=True)
            return
        folder = Path(data["output_dir"])
        evals, tokenizer = self.evals_for(folder)
        scored = results.get("runtime", results)  # an exported run is scored through its runtime
        base_score = baseline.results["score"]
        row = {
            "recipe": name,
            "seed": seed,
            "metrics": scored["metrics"],
            "score": scored["score"],
            "baseline_score": base_score,
            "baseline_run": baseline.run,
            "row_hash": hashed,
            "retention": round(scored["score"] / base_score, 4),
            **measure(
                folder,
                scored.get("backend", "torch"),
                self.suite.max_length_of(self.task.name),
                scored["score"],
                baseline.folder,
                baseline.predictions,
                self.task,
                evals,
                tokenizer,
            ),
            "waterfall": waterfall(results, self.task, base_score),
            "wall_s": results["wall_s"],
            "command": harness_command(self.args),  # the file's own is the first run's
            "resolved_recipe": yaml.safe_load((folder / "recipe.yaml").read_text()),
        }
        self.results["rows"][key] = row
        self.save()
        print(f"  score {row['score']:.4f}, retention {row['retention']:.4f}", flush=True)

    def row_recipe(self, name: str, seed: int, baseline: Baseline) -> tuple[Path, dict[str, Any]]:
        """The recipe's file and what the row runs: the baseline's own run, or the recipe set to this suite
        and task, starting from the baseline."""
        if name == BASELINE:
            return recipe_path(BASELINE), baseline.data
        source = recipe_path(name)
        data = self.prepared(name, seed, str(baseline.folder), baseline.folder.parent / source.stem)
        return source, from_baseline(data, baseline.folder, str(source))

    def evals_for(self, folder: Path) -> tuple[dict[str, Any], Any]:
        """The dev rows as the saved folder's own tokenizer reads them (a pruned vocabulary has its own)."""
        tokenizer = load_tokenizer(str(folder))
        if tokenizer.get_vocab() == self.tokenizer.get_vocab():
            return self.evals, self.tokenizer
        _, evals = load_task_data(
            self.task,
            tokenizer,
            self.args.data_dir,
            self.suite.max_length_of(self.task.name),
            None,
            self.suite.max_eval_samples,
            False,
        )
        return evals, tokenizer

    def prepared(self, name: str, seed: int, model: str, output_dir: Path) -> dict[str, Any]:
        if name == BASELINE:
            return baseline_recipe(self.suite, self.task, seed, model, output_dir, self.args.data_dir)
        raw = yaml.safe_load(recipe_path(name).read_text())
        return suite_recipe(raw, self.suite, self.task, seed, model, output_dir, self.args.data_dir)


def task_settings(suite: Suite, task: str) -> dict[str, Any]:
    """What every row of a task's results shares; a resumed harness drops rows of other settings."""
    return {
        "max_train_samples": suite.max_train_samples_of(task),
        "max_eval_samples": suite.max_eval_samples,
        "max_length": suite.max_length_of(task),
        "training": suite.training,
        "baseline_training": suite.setting(task).baseline_training,
    }


def current_settings(results: dict[str, Any]) -> dict[str, Any]:
    """The settings the harness would run the results' suite and task with today."""
    return task_settings(SUITES[results["suite"]], results["task"])


def task_bench(args: argparse.Namespace, suite: Suite, task: Task, model: str) -> TaskBench:
    tokenizer = load_tokenizer(model)
    _, evals = load_task_data(
        task, tokenizer, args.data_dir, suite.max_length_of(task.name), None, suite.max_eval_samples, False
    )
    path = args.output_dir / f"{task.name}.json"
    settings = task_settings(suite, task.name)
    kept = json.loads(path.read_text()) if args.resume and path.is_file() else None
    if kept is not None and kept["settings"] != settings:  # every row measured another baseline or data
        print(
            f"{task.name}: settings changed; {len(kept['rows'])} rows of the earlier ones dropped", flush=True
        )
        kept = None  # and the file's machine and command with them
    if kept is not None:
        results = kept
    else:
        results = {
            "suite": args.suite,
            "task": task.name,
            "score_name": score_name(task),
            "main_metric": task.main_metric,
            "model": "tiny random BERT (MiniLM vocabulary)" if suite.model == TINY else model,
            "settings": settings,
            "cpu": cpu_description(),
            "threads": torch.get_num_threads(),
            "command": harness_command(args),
            "rows": {},
        }
    return TaskBench(args, suite, task, model, tokenizer, evals, results)


def harness_command(args: argparse.Namespace) -> str:
    """The command line this harness run was given."""
    return "python -m benchmarks.glue " + " ".join(args.argv)


def tiny_model_path(args: argparse.Namespace) -> str:
    return str(args.work_dir / "tiny-model")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=SUITES, default="small")
    parser.add_argument(
        "--tasks",
        help="comma-separated GLUE tasks, or YAML files each holding a task block (your own data); "
        "default: the suite's",
    )
    parser.add_argument(
        "--recipes", help="comma-separated recipe names in recipes/ or YAML paths (default: all)"
    )
    parser.add_argument("--seeds", type=int, default=1, help=f"how many of the seeds {SEEDS} to run")
    parser.add_argument(
        "--data-dir", default=None, help="local GLUE folder (else $NLPCOMPRESS_GLUE_DIR / Hub)"
    )
    parser.add_argument("--resume", action="store_true", help="keep finished rows and finished run folders")
    parser.add_argument(
        "--retime",
        action="store_true",
        help="with --resume: time every kept row's model beside its baseline again (its tables: the median)",
    )
    parser.add_argument("--output-dir", type=Path, help="default: benchmarks/results/<suite>")
    parser.add_argument(
        "--work-dir", type=Path, help="run folders and baselines (default: runs/glue-<suite>)"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.retime and not args.resume:
        raise UserError("--retime times the rows --resume keeps: give both")
    if not 1 <= args.seeds <= len(SEEDS):
        raise UserError(f"--seeds {args.seeds}: give 1 to {len(SEEDS)}")
    args.output_dir = args.output_dir or Path("benchmarks/results") / args.suite
    args.work_dir = (args.work_dir or Path("runs") / f"glue-{args.suite}").resolve()
    return args


def harness_task(value: str) -> Task:
    """A ``--tasks`` entry: a GLUE task's name, or a YAML file with a task block (your own data)."""
    return task_option(value.strip(), Path("."))


def recipe_names(option: str | None) -> list[str]:
    """The recipes to run, the baseline first; each checked before anything trains."""
    names = option.split(",") if option else sorted(p.stem for p in RECIPES.glob("*.yaml"))
    names = [name.strip() for name in names if name.strip()]
    for name in names:
        recipe_path(name)
    return [BASELINE] + [name for name in names if name != BASELINE]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    suite = SUITES[args.suite]
    tasks = [harness_task(name) for name in (args.tasks.split(",") if args.tasks else suite.tasks)]
    names = recipe_names(args.recipes)
    model = tiny_model(Path(tiny_model_path(args))) if suite.model == TINY else suite.model
    for task in tasks:
        task_bench(args, suite, task, model).run(names, SEEDS[: args.seeds])
    print(f"wrote {', '.join(str(args.output_dir / f'{task.name}.json') for task in tasks)} (+ .md, .png)")


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
