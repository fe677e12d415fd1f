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
import statistics

import torch

from benchmarks.sst2 import Sst2Bench, add_arguments
from nlpcompress.measure import compare_latency, count_parameters, encoder_macs, size_on_disk

SEEDS = (0, 1, 2)
TARGET = 0.5
LATENCY_LENGTH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "head_pruning")
    parser.add_argument("--recovery-learning-rate", type=float, default=5e-5)
    args = parser.parse_args()

    bench = Sst2Bench.load(args)
    print("baseline: fine-tuning MiniLM-L6", flush=True)
    [finetuned], baseline_s = bench.run([{"type": "finetune"}], bench.pretrained())
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
                "recovery": {"train": False},
                "seed": seed,
            }
            [output], seconds = bench.run(
                [stage], copy.deepcopy(baseline), train=bench.train.shuffle(seed=seed)
            )
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
    [recovered], recover_s = bench.run([stage], copy.deepcopy(baseline))
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
        **bench.facts(),
        "epochs": 1,
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
    bench.write_results(result)


if __name__ == "__main__":
    main()
