"""Movement pruning (Sanh et al. 2020) on SST-2 with MiniLM-L6: the issue #9 measurements.

Arms (``--arms``, any of):

- ``sweep``: accuracy against the remaining encoder weights (3%–50%) for magnitude, movement and
  soft movement (whose sparsity follows from λ: each λ's reached density is recorded).
- ``seeds``: movement against magnitude at 10% remaining weights, one row per seed (mean ± std).
- ``speed``: block movement (whole heads and FFN neurons) against importance pruning of the same
  number of heads and neurons (Michel-style gates, then the same distillation budget): accuracy and
  CPU latency at batch 1 and 32, seq 128, timed against the fine-tuned baseline in one process,
  alternating.
- ``paper``: the paper's setting for hard movement and magnitude at 10% remaining: the student starts
  from the pretrained MiniLM (a new classifier) and is pruned while it is fine-tuned, distilling from
  the fine-tuned baseline (rows ``*-pretrained``).
- ``step``: the time of a masked training step (per-weight scores; heads and neurons) against the
  plain step, alternating in one process.

Every other pruned model starts from the same fine-tuned baseline (``--teacher``, else fine-tuned here)
and distils from it (kd: 0.9·T²·KL + 0.1·CE, T = 2, as in the paper's §5) at the same budget.
Rows are written to ``benchmarks/results/movement.json`` as they finish; a rerun skips rows already
there (delete the file to start over). ``movement.png`` plots both trade-offs.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.movement \\
        --data-dir ../shared/data/glue --teacher /tmp/runs/baseline --arms sweep seeds speed step
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorWithPadding

from benchmarks.sst2 import Results, Sst2Bench, add_arguments
from nlpcompress.finalize import finalize
from nlpcompress.measure import compare_latency, count_parameters, cpu_description, size_on_disk, sparsity
from nlpcompress.movement import MovementCallback, MovementConfig, attach_score_masks
from nlpcompress.parametrize import clone
from nlpcompress.stages.training import training_arguments
from nlpcompress.structure import describe
from nlpcompress.trainer import CompressionTrainer, ParamGroup

DISTILLATION = {"method": "kd", "alpha_ce": 0.9, "alpha_task": 0.1, "temperature": 2.0}
SWEEP_REMAINING = (0.03, 0.10, 0.25, 0.50)
SOFT_LAMBDAS = (400.0, 4000.0, 20000.0)
SEEDS = (42, 1, 2)


def movement_stage(method: str, **settings: Any) -> dict[str, Any]:
    return {"type": "movement", "method": method, "recovery": {"distillation": DISTILLATION}, **settings}


def sweep_runs() -> dict[str, tuple[list[dict], int]]:
    runs: dict[str, tuple[list[dict], int]] = {}
    for remaining in SWEEP_REMAINING:
        for method in ("magnitude", "movement"):
            runs[f"{method}-r{remaining:g}"] = (
                [movement_stage(method, sparsity=round(1 - remaining, 4))],
                42,
            )
    for lam in SOFT_LAMBDAS:
        runs[f"soft_movement-l{lam:g}"] = ([movement_stage("soft_movement", lambda_l1=lam)], 42)
    return runs


SEED_ARMS = {
    "magnitude-r0.1": movement_stage("magnitude", sparsity=0.9),
    "movement-r0.1": movement_stage("movement", sparsity=0.9),
    "soft_movement-l4000": movement_stage("soft_movement", lambda_l1=4000.0),  # ends ~90% sparse
}


def seed_runs() -> dict[str, tuple[list[dict], int]]:
    """Magnitude, hard and soft movement at ~10% remaining weights; seed 42 is the sweep's row of the same name."""
    return {
        name + ("" if seed == 42 else f"-seed{seed}"): ([stage], seed)
        for name, stage in SEED_ARMS.items()
        for seed in SEEDS
    }


def paper_runs() -> dict[str, tuple[list[dict], int]]:
    """Hard movement and magnitude pruned while fine-tuning from the pretrained model (Sanh et al. §5)."""
    return {f"{name}-pretrained": ([SEED_ARMS[name]], 42) for name in ("movement-r0.1", "magnitude-r0.1")}


def speed_runs(sparsity_: float) -> dict[str, tuple[list[dict], int]]:
    """Block movement, and importance pruning of the heads and neurons the same fractions ask for."""
    block = movement_stage("movement", sparsity=sparsity_, attention="head", ffn="neuron")
    heads, neurons = int(72 * sparsity_), int(6 * 1536 * sparsity_)
    importance = [
        {"type": "prune_heads", "target": heads, "neurons": neurons, "recovery": {"train": False}},
        {"type": "distill", **DISTILLATION},
    ]
    return {f"block-movement-s{sparsity_:g}": ([block], 42), f"importance-s{sparsity_:g}": (importance, 42)}


def prune(
    bench: Sst2Bench,
    teacher,
    stages: list[dict],
    seed: int,
    epochs: float,
    learning_rate: float,
    from_pretrained: bool = False,
):
    """Run ``stages`` on a copy of the baseline (or on the pretrained model), then finalize it as a saved
    model would be."""
    bench.args.seed = seed
    # (a copy of the teacher: an earlier run's trainer froze it in place, so the copy is made trainable)
    student = bench.pretrained() if from_pretrained else clone(teacher).requires_grad_(True)
    outputs, seconds = bench.run(stages, student, learning_rate, epochs, teacher=teacher)
    model = outputs[-1].model
    masked_sparsity = sparsity(model)
    report = finalize(model)
    folder = bench.args.work_dir / "saved"
    model.save_pretrained(folder)
    structure = describe(model)
    row = {
        "stages": stages,
        "seed": seed,
        "accuracy": outputs[-1].metrics["accuracy"],
        "encoder_sparsity": round(masked_sparsity, 4),
        "remaining": round(1 - masked_sparsity, 4),
        "heads": sum(structure["heads_per_depth"]),
        "ffn_widths": structure["ffn_width_per_depth"],
        "params_stored": count_parameters(model)["total"],
        "weights_bytes": (folder / "model.safetensors").stat().st_size,
        "finalize": report,
        "train_s": round(seconds, 1),
    }
    return model, row


def step_times(bench: Sst2Bench, teacher, repeats: int) -> dict[str, Any]:
    """Median seconds of one training step (forward, backward, optimizer step), plain against masked."""
    rows = bench.train.select(range(32))
    inputs = dict(DataCollatorWithPadding(bench.tokenizer)([rows[i] for i in range(len(rows))]))
    recipe = bench.recipe([{"type": "finetune"}])
    arguments = training_arguments(bench.context(recipe, recipe.stages[0]), recipe.stages[0])
    variants = {
        "plain": None,
        "movement_per_weight": MovementConfig(method="movement", sparsity=0.9),
        "movement_heads_neurons": MovementConfig(
            method="movement", sparsity=0.5, attention="head", ffn="neuron"
        ),
    }
    trainers = {}
    for name, config in variants.items():
        model = clone(teacher).train()
        groups = []
        if config is not None:
            attach_score_masks(model, config)
            MovementCallback(config).apply(model, 1 - config.sparsity)
            groups = [ParamGroup("scores", r"\.scores$", 1e-2, 0.0)]
        trainers[name] = CompressionTrainer(model=model, args=arguments, param_groups=groups)
        trainers[name].create_optimizer()
    timings: dict[str, list[float]] = {name: [] for name in trainers}
    for step in range(repeats + 2):  # two warm-up rounds
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.compute_loss(trainer.model, inputs).backward()
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
            if step >= 2:
                timings[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "seconds": {name: round(value, 4) for name, value in medians.items()},
        "ratio_over_plain": {name: round(value / medians["plain"], 3) for name, value in medians.items()},
        "batch_shape": list(inputs["input_ids"].shape),
        "repeats": repeats,
    }


def summarise_seeds(runs: dict[str, Any]) -> dict[str, Any]:
    summary = {}
    for arm in SEED_ARMS:
        rows = [row for name, row in runs.items() if name.split("-seed")[0] == arm]
        if len(rows) >= 2:
            accuracy = [row["accuracy"] for row in rows]
            summary[arm] = {
                "n": len(rows),
                "mean": round(statistics.mean(accuracy), 4),
                "std": round(statistics.stdev(accuracy), 4),
                "remaining": round(statistics.mean(row["remaining"] for row in rows), 4),
            }
    return summary


def plot(data: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    baseline = data["teacher"]["accuracy"]
    for method, marker in (("magnitude", "s"), ("movement", "o"), ("soft_movement", "^")):
        points = sorted(
            (row["remaining"], row["accuracy"])
            for name, row in data["runs"].items()
            if name.split("-")[0] == method and "seed" not in name and "pretrained" not in name
        )
        if points:
            left.plot(*zip(*points, strict=True), marker=marker, label=method)
    for summary in data.get("seeds_summary", {}).values():
        left.errorbar(
            summary["remaining"], summary["mean"], yerr=summary["std"], color="black", capsize=3, fmt="none"
        )
    for name, row in data["runs"].items():
        if name.endswith("-pretrained"):
            left.scatter(row["remaining"], row["accuracy"], facecolors="none", edgecolors="red", label=name)
    left.axhline(baseline, color="gray", linestyle="--", label="fine-tuned baseline")
    left.set_xscale("log")
    left.set_xlabel("remaining encoder weights")
    left.set_ylabel("SST-2 dev accuracy")
    left.set_title("unstructured sparsity (bars: mean ± std over 3 seeds)")
    left.legend()
    for name, row in data["runs"].items():
        if "speedup_bs1" in row:
            right.scatter(row["speedup_bs1"], row["accuracy"], label=name)
    right.axhline(baseline, color="gray", linestyle="--")
    right.set_xlabel("CPU speedup at batch 1, seq 128 (vs the baseline)")
    right.set_title("structured: heads + FFN neurons")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "movement")
    parser.add_argument("--teacher", help="a fine-tuned baseline folder to reuse (else fine-tuned here)")
    parser.add_argument(
        "--arms", nargs="+", choices=("sweep", "seeds", "paper", "speed", "step"), default=["seeds"]
    )
    parser.add_argument("--epochs", type=float, default=3.0, help="training epochs of every pruning run")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="weights' learning rate")
    parser.add_argument(
        "--speed-sparsity", type=float, default=0.6, help="fraction of heads and neurons removed"
    )
    parser.add_argument("--step-repeats", type=int, default=10)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these rows of the chosen arms")
    args = parser.parse_args()

    bench = Sst2Bench.load(args)
    teacher, teacher_metrics = bench.baseline(args.teacher)
    results = Results(
        args.output,
        {
            **bench.facts(),
            "teacher": {"source": args.teacher or "fine-tuned here", "accuracy": teacher_metrics["accuracy"]},
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "distillation": DISTILLATION,
            "cpu": cpu_description(),
            "threads": torch.get_num_threads(),
        },
    )
    base_folder = args.work_dir / "baseline"
    teacher.save_pretrained(base_folder)
    results.put("baseline_weights_bytes", (base_folder / "model.safetensors").stat().st_size)
    runs: dict[str, tuple[list[dict], int]] = {}
    if "sweep" in args.arms:
        runs |= sweep_runs()
    if "seeds" in args.arms:
        runs |= seed_runs()
    if "paper" in args.arms:
        runs |= paper_runs()
    if "speed" in args.arms:
        runs |= speed_runs(args.speed_sparsity)
    for name, (stages, seed) in runs.items():
        if results.has(name) or (args.only and name not in args.only):
            continue
        print(f"{name}: {stages}", flush=True)
        model, row = prune(
            bench, teacher, stages, seed, args.epochs, args.learning_rate, name.endswith("-pretrained")
        )
        row["retention"] = round(row["accuracy"] / teacher_metrics["accuracy"], 4)
        if name.startswith(("block", "importance")):
            latency = compare_latency(
                {"baseline": teacher, "pruned": model.eval()}, threads=torch.get_num_threads()
            )
            row["latency_ms"] = latency
            row["speedup_bs1"] = round(latency["baseline"]["bs1_seq128"] / latency["pruned"]["bs1_seq128"], 3)
            row["speedup_bs32"] = round(
                latency["baseline"]["bs32_seq128"] / latency["pruned"]["bs32_seq128"], 3
            )
        print(f"  {json.dumps({k: v for k, v in row.items() if k != 'stages'})}", flush=True)
        results.put(name, row, run=True)
    results.put("seeds_summary", summarise_seeds(results.data["runs"]))
    if "step" in args.arms:
        results.put("step_time", step_times(bench, teacher, args.step_repeats))
        print(json.dumps(results.data["step_time"]), flush=True)
    plot(results.data, args.output.with_suffix(".png"))
    print(
        f"wrote {args.output} and {args.output.with_suffix('.png')}; baseline folder {size_on_disk(base_folder)} bytes"
    )


if __name__ == "__main__":
    main()
