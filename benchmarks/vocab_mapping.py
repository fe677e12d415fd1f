"""What vocabulary pruning costs a fine-tuned model on dev before any training, in each of ``prune_vocab``'s
modes: the GLUE harness's cached baselines scored three ways, (a) the whole vocabulary, (b) the pruned
tokenizer and table (``dropped_tokens: unk``), (c) the whole tokenizer read through the map to each dropped
token's nearest kept token (``dropped_tokens: nearest``), both made by the stage's own functions.
Writes ``benchmarks/results/vocab_mapping/<task>.json``.

    python -m benchmarks.vocab_mapping --task cola --seeds 42 1 2 --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.glue import write_atomically
from benchmarks.paths import REPO, portable
from nlpcompress.evaluation import predict_logits
from nlpcompress.glue import get_task, load_task_data
from nlpcompress.glue.metrics import compute_metrics, task_score
from nlpcompress.measure import cpu_description
from nlpcompress.models import load_model_dir, load_tokenizer
from nlpcompress.vocab import (
    coverage,
    kept_token_ids,
    map_dropped_to_nearest,
    prune_embeddings,
    prune_tokenizer,
)


def scored(model, dataset, tokenizer, task) -> float:
    logits, labels = predict_logits(model, dataset, tokenizer, progress=False)
    return task_score(task, compute_metrics(task, logits, labels))


def measure(task_name: str, baseline: Path, data_dir: str) -> dict[str, Any]:
    """One baseline folder's dev score as it is and after each ``prune_vocab`` mode, untrained: the pruned
    tokenizer (``dropped_tokens: unk``: a word WordPiece cannot build from kept pieces becomes [UNK]) and
    the map to the nearest kept token (``dropped_tokens: nearest``); how much of dev each leaves as it was."""
    task = get_task(task_name)
    max_length = yaml.safe_load((baseline / "recipe.yaml").read_text())["max_length"]
    model, tokenizer = load_model_dir(str(baseline)), load_tokenizer(str(baseline))
    train, evals = load_task_data(task, tokenizer, data_dir, max_length)
    kept = kept_token_ids(tokenizer, [train])
    dev = evals["validation"]

    pruned_model, pruned_tokenizer = copy.deepcopy(model), prune_tokenizer(tokenizer, kept)
    prune_embeddings(pruned_model, kept)
    _, pruned_evals = load_task_data(task, pruned_tokenizer, data_dir, max_length, need_train=False)
    pruned_dev = pruned_evals["validation"]
    unk = pruned_tokenizer.unk_token_id

    mapped_model = copy.deepcopy(model)
    map_dropped_to_nearest(mapped_model, tokenizer, kept)

    kept_set = set(kept)
    return {
        "baseline": portable(str(baseline)),
        "max_length": max_length,
        "kept_tokens": len(kept),
        "vocab_size": model.config.vocab_size,
        "dev_rows": len(dev),
        "dev_rows_with_a_dropped_token": sum(any(i not in kept_set for i in ids) for ids in dev["input_ids"]),
        "dev_dropped_token_share": round(1 - coverage(dev, kept, tokenizer), 4),
        "dev_rows_with_unk_after_pruning": sum(unk in ids for ids in pruned_dev["input_ids"]),
        "scores": {
            "whole_vocabulary": scored(model, dev, tokenizer, task),
            "pruned_tokenizer": scored(pruned_model, pruned_dev, pruned_tokenizer, task),
            "nearest_kept": scored(mapped_model, dev, tokenizer, task),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "glue-small")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = {}
    for seed in args.seeds:
        folder = args.work_dir / args.task / f"seed{seed}" / "baseline"
        if not (folder / "model.safetensors").is_file():
            sys.exit(
                f"no cached baseline at {folder}: run python -m benchmarks.glue --tasks {args.task} first"
            )
        rows[str(seed)] = measure(args.task, folder, args.data_dir)
        print(args.task, seed, rows[str(seed)]["scores"], flush=True)
    output = args.output or REPO / "benchmarks" / "results" / "vocab_mapping" / f"{args.task}.json"
    record = {
        "command": portable(
            shlex.join(["python", "-m", "benchmarks.vocab_mapping", *(argv or sys.argv[1:])])
        ),
        "task": args.task,
        "cpu": cpu_description(),
        "seeds": rows,
    }
    write_atomically(output, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
