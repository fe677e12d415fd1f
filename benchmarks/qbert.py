"""Q-BERT on MiniLM-L6 / SST-2: Hessian-guided bits vs uniform vs reverse order, per-head vs per-matrix ranges.

Every arm quantizes the same fine-tuned baseline (``--teacher``, else fine-tuned here) with the
`quantize` stage at the same average bits (3 by default: Hessian and reverse mix 2 and 4 bits,
uniform gives every layer 3), trains with fake quantization while distilling the baseline's logits,
and stores the model packed. The paper's claims (Shen et al. 2020): Hessian order ≥ uniform > reverse
order (§4, Table 3), per-head groups > one range per matrix (§3.2, Table 5). Seeds give mean ± std.

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.qbert --data-dir ../shared/data/glue \
        --teacher /tmp/runs/baseline --seeds 42 43 44
"""

import argparse
import json
from typing import Any

import torch

from benchmarks.sst2 import Results, Sst2Bench, add_arguments
from nlpcompress.comparisons import mean_std
from nlpcompress.finalize import finalize
from nlpcompress.measure import count_parameters, cpu_description, size_on_disk
from nlpcompress.parametrize import clone

DISTILLATION = {"method": "kd", "alpha_ce": 0.9, "alpha_task": 0.1, "temperature": 2.0}


def arms(avg_bits: int, low: int, high: int) -> dict[str, dict[str, Any]]:
    """The `quantize` stage of each compared arm."""
    mixed = {"method": "qbert", "avg_bits": avg_bits, "candidate_bits": [low, high]}
    return {
        "hessian": {**mixed, "allocation": "hessian", "groups": "head"},
        "uniform": {"method": "uniform", "avg_bits": avg_bits, "groups": "head"},
        "reverse": {**mixed, "allocation": "reverse", "groups": "head"},
        "hessian-matrix": {**mixed, "allocation": "hessian", "groups": "matrix"},
    }


def quantize(bench: Sst2Bench, teacher, stage: dict[str, Any], seed: int, epochs: float, lr: float) -> dict:
    """One arm on a copy of the baseline, saved packed; its row of the table."""
    bench.args.seed = seed
    stages = [{"type": "quantize", "recovery": {"distillation": DISTILLATION}, **stage}]
    outputs, seconds = bench.run(stages, clone(teacher).requires_grad_(True), lr, epochs, teacher=teacher)
    model = outputs[-1].model
    finalize(model)
    folder = bench.args.work_dir / "saved"
    model.save_pretrained(folder)
    info = outputs[-1].info
    return {
        "stage": stage,
        "seed": seed,
        "accuracy": outputs[-1].metrics["accuracy"],
        "accuracy_before_training": info["metrics_before_training"]["accuracy"],
        "bits_per_layer": info["bits_per_layer"],
        "average_bits": info["average_bits"],
        "omega": {k: round(v["omega"], 4) for k, v in info.get("sensitivity", {}).items()},
        "folder_bytes": size_on_disk(folder),
        "params": count_parameters(model)["total"],
        "train_s": round(seconds, 1),
    }


def summarise(runs: dict[str, Any]) -> dict[str, Any]:
    """Accuracy mean ± std per arm over its seeds."""
    by_arm: dict[str, list[float]] = {}
    for row in runs.values():
        by_arm.setdefault(row["arm"], []).append(row["accuracy"])
    summary = {}
    for arm, values in by_arm.items():
        mean, std = mean_std(values)
        summary[arm] = {"mean": round(mean, 4), "std": round(std, 4), "seeds": len(values)}
    return summary


def table(data: dict[str, Any]) -> list[str]:
    """The markdown table docs/recipes.md shows."""
    baseline = data["teacher"]["accuracy"]
    lines = [
        "| arm | bits per layer (first seed) | accuracy (mean ± std) | retention | seeds |",
        "|---|---|---|---|---|",
    ]
    for arm, summary in data["summary"].items():
        first = next(row for row in data["runs"].values() if row["arm"] == arm)
        bits = "/".join(str(b) for b in first["bits_per_layer"].values())
        lines.append(
            f"| {arm} | {bits} | {100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}% "
            f"| {summary['mean'] / baseline:.1%} | {summary['seeds']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "qbert")
    parser.add_argument("--teacher", help="a fine-tuned baseline folder to reuse (else fine-tuned here)")
    parser.add_argument("--avg-bits", type=int, default=3)
    parser.add_argument("--low-bits", type=int, default=2, help="the lower bit width the mixed arms use")
    parser.add_argument("--high-bits", type=int, default=4, help="the higher bit width the mixed arms use")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=float, default=1.0, help="quantization-aware training epochs")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--only", nargs="+", metavar="ARM", help="run only these arms")
    args = parser.parse_args()

    bench = Sst2Bench.load(args)
    teacher, teacher_metrics = bench.baseline(args.teacher)
    teacher_accuracy = teacher_metrics["accuracy"]
    base_folder = args.work_dir / "baseline"
    teacher.save_pretrained(base_folder)
    results = Results(
        args.output,
        {
            **bench.facts(),
            "teacher": {
                "source": args.teacher or "fine-tuned here",
                "accuracy": teacher_accuracy,
                "folder_bytes": size_on_disk(base_folder),
            },
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "distillation": DISTILLATION,
            "cpu": cpu_description(),
            "threads": torch.get_num_threads(),
        },
    )
    for seed in args.seeds:
        for arm, stage in arms(args.avg_bits, args.low_bits, args.high_bits).items():
            name = f"{arm}-w{args.avg_bits}-s{seed}"
            if results.has(name) or (args.only and arm not in args.only):
                continue
            print(f"{name}: {stage}", flush=True)
            row = {"arm": arm, **quantize(bench, teacher, stage, seed, args.epochs, args.learning_rate)}
            row["retention"] = round(row["accuracy"] / teacher_accuracy, 4)
            print(f"  {json.dumps({k: v for k, v in row.items() if k != 'stage'})}", flush=True)
            results.put(name, row, run=True)
            results.put("summary", summarise(results.data["runs"]))
    print("\n".join(table(results.data)))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
