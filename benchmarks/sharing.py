"""ALBERT's Table 4 on MiniLM-L6 / SST-2: not shared vs shared attention vs shared FFN vs all shared.

Every arm starts from the same fine-tuned baseline (``--teacher``, else fine-tuned here), optionally
factorizes the word embeddings to ``--embedding-rank`` first, shares one block across all six depths
(``share_layers`` with one group, the members' mean) and recovers for ``--epochs`` distilling the
baseline's logits; "not shared" (six groups of one depth) gets the same recovery, so that training
alone is not mistaken for the effect of sharing. Lan et al. (2020, §4.5, Table 4): not shared ≥ shared attention ≥ shared FFN ≈ all
shared. Rows: parameters, size on disk, accuracy mean ± std over the seeds.

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.sharing --data-dir ../shared/data/glue \
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
ARMS = {"not-shared": None, "shared-attention": "attention", "shared-ffn": "ffn", "all-shared": "layer"}


def stages(share: str | None, embedding_rank: int | None) -> list[dict[str, Any]]:
    """The arm's stages: factorize (optional, no recovery of its own), then share and recover."""
    factorize = (
        [{"type": "factorize", "embeddings_rank": embedding_rank, "recovery": {"train": False}}]
        if embedding_rank
        else []
    )
    groups = 6 if share is None else 1  # six groups of one depth: nothing shared, the same recovery
    sharing = {
        "type": "share_layers",
        "num_groups": groups,
        "share": share or "layer",
        "recovery": {"distillation": DISTILLATION},
    }
    return [*factorize, sharing]


def run_arm(bench: Sst2Bench, teacher, arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One arm on a copy of the baseline, saved; its row of the table."""
    bench.args.seed = seed
    arm_stages = stages(ARMS[arm], args.embedding_rank)
    student = clone(teacher).requires_grad_(True)
    outputs, seconds = bench.run(arm_stages, student, args.learning_rate, args.epochs, teacher=teacher)
    model = outputs[-1].model
    finalize(model)
    folder = bench.args.work_dir / "saved"
    model.save_pretrained(folder)
    return {
        "arm": arm,
        "stages": arm_stages,
        "seed": seed,
        "accuracy": outputs[-1].metrics["accuracy"],
        "params": count_parameters(model)["total"],
        "folder_bytes": size_on_disk(folder),
        "train_s": round(seconds, 1),
    }


def summarise(runs: dict[str, Any]) -> dict[str, Any]:
    """Accuracy mean ± std per arm, with its parameters and size."""
    summary: dict[str, Any] = {}
    for row in runs.values():
        entry = summary.setdefault(
            row["arm"], {"accuracies": [], "params": row["params"], "folder_bytes": row["folder_bytes"]}
        )
        entry["accuracies"].append(row["accuracy"])
    for entry in summary.values():
        mean, std = mean_std(entry.pop("accuracies"))
        entry.update(mean=round(mean, 4), std=round(std, 4))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "sharing")
    parser.add_argument("--teacher", help="a fine-tuned baseline folder to reuse (else fine-tuned here)")
    parser.add_argument("--embedding-rank", type=int, default=None, help="factorize the embeddings first")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=float, default=1.0, help="recovery epochs of every arm")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--only", nargs="+", choices=ARMS, metavar="ARM", help="run only these arms")
    args = parser.parse_args()

    bench = Sst2Bench.load(args)
    teacher, teacher_metrics = bench.baseline(args.teacher)
    results = Results(
        args.output,
        {
            **bench.facts(),
            "teacher": {"source": args.teacher or "fine-tuned here", "accuracy": teacher_metrics["accuracy"]},
            "embedding_rank": args.embedding_rank,
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "distillation": DISTILLATION,
            "cpu": cpu_description(),
            "threads": torch.get_num_threads(),
        },
    )
    for seed in args.seeds:
        for arm in ARMS:
            name = f"{arm}-s{seed}"
            if results.has(name) or (args.only and arm not in args.only):
                continue
            row = run_arm(bench, teacher, arm, seed, args)
            row["retention"] = round(row["accuracy"] / teacher_metrics["accuracy"], 4)
            print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'stages'})}", flush=True)
            results.put(name, row, run=True)
            results.put("summary", summarise(results.data["runs"]))
    for arm, entry in results.data.get("summary", {}).items():
        print(
            f"{arm}: {100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}%  "
            f"{entry['params'] / 1e6:.2f}M params  {entry['folder_bytes'] / 1e6:.1f} MB"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
