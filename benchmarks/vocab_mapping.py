"""What vocabulary pruning costs a fine-tuned model on dev, and what mapping each dropped token to its
nearest kept one would win back, before any training: the GLUE harness's cached baselines scored three
ways, (a) the whole vocabulary, (b) tokens the training rows never use as ``[UNK]`` (what ``prune_vocab``
does today), (c) each such token read as its nearest kept token of the same kind (``nearest_kept_tokens``).
Writes ``benchmarks/results/vocab_mapping/<task>.json``.

    python -m benchmarks.vocab_mapping --task cola --seeds 42 1 2 --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.glue import write_atomically
from benchmarks.paths import REPO, portable
from nlpcompress.evaluation import predict_logits
from nlpcompress.glue import get_task, load_task_data
from nlpcompress.glue.metrics import compute_metrics, task_score
from nlpcompress.measure import cpu_description
from nlpcompress.models import load_model_dir, load_tokenizer
from nlpcompress.vocab import continuation_pieces, kept_token_ids, nearest_kept_tokens


def remapped(dataset, mapping: torch.Tensor):
    """``dataset`` with every input id replaced by ``mapping[id]``."""
    table = mapping.numpy()
    return dataset.map(lambda row: {"input_ids": table[np.asarray(row["input_ids"])].tolist()})


def measure(task_name: str, baseline: Path, data_dir: str) -> dict[str, Any]:
    """One baseline folder's dev score with the whole vocabulary, with dropped tokens as [UNK] and with them
    mapped to their nearest kept tokens; how much of dev the training rows' vocabulary covers."""
    task = get_task(task_name)
    max_length = yaml.safe_load((baseline / "recipe.yaml").read_text())["max_length"]
    model, tokenizer = load_model_dir(str(baseline)), load_tokenizer(str(baseline))
    train, evals = load_task_data(task, tokenizer, data_dir, max_length)
    kept = kept_token_ids(tokenizer, [train])
    table = model.get_input_embeddings().weight.detach()
    special = tokenizer.all_special_ids
    nearest = nearest_kept_tokens(table, kept, continuation_pieces(tokenizer, len(table)), special)
    whole = torch.arange(len(table))
    as_unknown = torch.full_like(whole, tokenizer.unk_token_id)
    as_unknown[kept] = whole[kept]
    dev = evals["validation"]
    dropped = [[i for i in ids if int(nearest[i]) != i] for ids in dev["input_ids"]]
    scores = {}
    for name, mapping in (
        ("whole_vocabulary", whole),
        ("dropped_as_unk", as_unknown),
        ("nearest_kept", nearest),
    ):
        logits, labels = predict_logits(model, remapped(dev, mapping), tokenizer, progress=False)
        scores[name] = task_score(task, compute_metrics(task, logits, labels))
    tokens = sum(i not in special for ids in dev["input_ids"] for i in ids)
    return {
        "baseline": portable(str(baseline)),
        "max_length": max_length,
        "kept_tokens": len(kept),
        "vocab_size": len(table),
        "dev_rows_with_a_dropped_token": sum(bool(d) for d in dropped),
        "dev_rows": len(dev),
        "dev_dropped_token_share": round(sum(len(d) for d in dropped) / tokens, 4),
        "scores": scores,
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
