"""Head importance pruning (Michel et al. 2019) on SST-2 with MiniLM-L6: the issue #3 measurements.

1. Fine-tune the baseline.
2. Remove 50% of the 72 heads, before any recovery: importance (gradient score on 512 training rows,
   a different shuffle per seed) against random heads (same budget and rules), 3 seeds each.
3. Prune 50% by importance and recover by fine-tuning; accuracy against the baseline of this run.
4. CPU latency (batch 1 and 32, seq 128; baseline and pruned timed alternately in one process) against
   the FLOPs ratio, the ideal speedup; parameters and size on disk.
Prints a table and writes ``benchmarks/results/head_pruning.json``.

    OMP_NUM_THREADS=2 flock /tmp/nlpcompress-cpu.lock \\
        .venv/bin/python -m benchmarks.head_pruning --data-dir /work/shared/data/glue
"""

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from nlpcompress.compact import CompactBertConfig
from nlpcompress.glue import get_task, load_task_data
from nlpcompress.measure import compare_latency, count_parameters, size_on_disk
from nlpcompress.models import load_compact, load_tokenizer
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.stages import RUNNERS, StageContext

BUDGETS = {
    "small": {"max_train_samples": 8000, "max_eval_samples": None},
    "ci": {"max_train_samples": 512, "max_eval_samples": 128},
}
SEEDS = (0, 1, 2)
TARGET = 0.5
LATENCY_LENGTH = 128


def encoder_macs(config: CompactBertConfig, length: int) -> int:
    """Multiply-accumulates of one forward pass on one sequence (encoder + classifier; embeddings are lookups)."""
    hidden, head = config.hidden_size, config.attention_head_size
    total = 0
    for layer in config.layer_map:
        inner = config.heads_per_layer[layer] * head
        total += 4 * length * hidden * inner  # Q, K, V and the output projection
        total += 2 * length * length * inner  # scores and the weighted sum of values
        total += 2 * length * hidden * config.intermediate_sizes[layer]
    return total + hidden * hidden + hidden * config.num_labels


def _recipe(args: argparse.Namespace, stage: dict[str, Any]):
    return recipe_from_dict(
        {
            "model": "minilm-l6",
            "task": "sst2",
            "data_dir": args.data_dir,
            **BUDGETS[args.budget],
            "max_length": 64,
            "seed": args.seed,
            "output_dir": str(args.work_dir),
            "training": {
                "learning_rate": 1e-4,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 64,
                "num_train_epochs": 1,
                "warmup_steps": 25,
                "weight_decay": 0.01,
                "logging_steps": 50,
            },
            "stages": [stage],
        },
        "benchmark",
    )


def _run(args, stage: dict[str, Any], model, data, train=None):
    """One stage on ``model``; ``train`` replaces the training rows (the scoring sample of a seed)."""
    task, tokenizer, train_rows, evals = data
    recipe = _recipe(args, stage)
    spec = recipe.stages[0]
    ctx = StageContext(
        recipe,
        task,
        tokenizer,
        train_rows if train is None else train,
        evals,
        args.work_dir / "work" / str(spec.name),
        args.work_dir / "artifacts",
        False,
    )
    set_seed(args.seed)
    started = time.perf_counter()
    output = RUNNERS[spec.type](spec, model, ctx)
    return output, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=None, help="local GLUE folder (else $NLPCOMPRESS_GLUE_DIR / Hub)"
    )
    parser.add_argument("--budget", choices=BUDGETS, default="small")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--recovery-learning-rate", type=float, default=5e-5)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/head-pruning-bench"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/head_pruning.json"))
    args = parser.parse_args()

    task, tokenizer = get_task("sst2"), load_tokenizer("minilm-l6")
    budget = BUDGETS[args.budget]
    train, evals = load_task_data(
        task, tokenizer, args.data_dir, 64, budget["max_train_samples"], budget["max_eval_samples"]
    )
    data = (task, tokenizer, train, evals)
    set_seed(args.seed)
    print("baseline: fine-tuning MiniLM-L6", flush=True)
    finetuned, baseline_s = _run(args, {"type": "finetune"}, load_compact("minilm-l6", task), data)
    baseline = finetuned.model
    baseline_accuracy = finetuned.metrics["accuracy"]
    print(f"  accuracy {baseline_accuracy:.4f} ({baseline_s:.0f} s)", flush=True)

    no_recovery: dict[str, list[float]] = {"importance": [], "random": []}
    for seed in SEEDS:
        for strategy, name in (("oneshot", "importance"), ("random", "random")):
            stage = {
                "type": "prune_heads",
                "target": TARGET,
                "strategy": strategy,
                "recover": False,
                "seed": seed,
            }
            output, seconds = _run(args, stage, copy.deepcopy(baseline), data, train.shuffle(seed=seed))
            no_recovery[name].append(output.metrics["accuracy"])
            print(
                f"  seed {seed} {name:<10} before recovery: {output.metrics['accuracy']:.4f} ({seconds:.0f} s)"
            )

    print("prune 50% by importance, then recover", flush=True)
    stage = {
        "type": "prune_heads",
        "target": TARGET,
        "name": "prune_recover",
        "training": {"learning_rate": args.recovery_learning_rate},
    }
    recovered, recover_s = _run(args, stage, copy.deepcopy(baseline), data)
    pruned = recovered.model
    print(f"  accuracy {recovered.metrics['accuracy']:.4f} ({recover_s:.0f} s)", flush=True)

    for name, model in (("baseline", baseline), ("pruned", pruned)):
        model.save_pretrained(args.work_dir / "models" / name)
    threads = torch.get_num_threads()
    latency = compare_latency({"baseline": baseline, "pruned": pruned}, threads=threads)
    macs = {
        name: encoder_macs(model.config, LATENCY_LENGTH)
        for name, model in (("baseline", baseline), ("pruned", pruned))
    }
    ideal = macs["baseline"] / macs["pruned"]
    speedup = {shape: latency["baseline"][shape] / latency["pruned"][shape] for shape in latency["baseline"]}
    means = {name: statistics.mean(values) for name, values in no_recovery.items()}
    result = {
        "task": "sst2",
        "model": "minilm-l6",
        "budget": args.budget,
        **budget,
        "epochs": 1,
        "batch_size": 32,
        "max_length": 64,
        "target": TARGET,
        "score_samples": 512,
        "recovery_learning_rate": args.recovery_learning_rate,
        "baseline_accuracy": baseline_accuracy,
        "before_recovery": {"per_seed": no_recovery, "mean": means, "seeds": list(SEEDS)},
        "recovered": {
            "accuracy": recovered.metrics["accuracy"],
            "delta_vs_baseline_points": 100 * (recovered.metrics["accuracy"] - baseline_accuracy),
            "metric_before_recovery": recovered.info["metric_before_recovery"],
            "heads_per_layer": recovered.info["heads_per_layer"],
            "pruned": recovered.info["pruned"],
        },
        "params": {
            "baseline": count_parameters(baseline)["total"],
            "pruned": count_parameters(pruned)["total"],
        },
        "size_bytes": {
            name: size_on_disk(args.work_dir / "models" / name) for name in ("baseline", "pruned")
        },
        "macs_seq128": macs,
        "ideal_speedup_flops": ideal,
        "latency_ms": latency,
        "speedup": speedup,
        "threads": threads,
        "wall_s": {"baseline": round(baseline_s, 1), "prune_recover": round(recover_s, 1)},
    }
    print(f"\nbaseline accuracy          {baseline_accuracy:.4f}")
    for name, values in no_recovery.items():
        print(
            f"{name:<10} before recovery {means[name]:.4f}  (seeds {', '.join(f'{v:.4f}' for v in values)})"
        )
    print(
        f"importance + recovery      {recovered.metrics['accuracy']:.4f}  "
        f"({result['recovered']['delta_vs_baseline_points']:+.2f} points), heads {recovered.info['heads_per_layer']}"
    )
    print(f"parameters                 {result['params']['baseline']:,} -> {result['params']['pruned']:,}")
    print(
        f"size on disk               {result['size_bytes']['baseline']:,} -> {result['size_bytes']['pruned']:,} bytes"
    )
    print(
        f"FLOPs (seq 128)            {macs['baseline'] / 1e9:.3f} -> {macs['pruned'] / 1e9:.3f} GMAC, ideal speedup {ideal:.3f}x"
    )
    for shape, value in speedup.items():
        print(
            f"latency {shape:<12}   {latency['baseline'][shape]:.1f} -> {latency['pruned'][shape]:.1f} ms, "
            f"speedup {value:.3f}x ({threads} threads)"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
