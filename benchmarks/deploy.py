"""What a compressed run deploys, measured through every runtime it exports to, against its fine-tuned baseline.

    python -m benchmarks.deploy RUN_FOLDER --baseline BASELINE_FOLDER --data-dir ../shared/data/glue

Retention is against the run's own finetune stage (its teacher), or, for a run that compressed ``--baseline``
itself (the GLUE harness's rows), against that baseline's own score; ``--baseline`` is a fine-tuned model of
the same starting architecture, timed and sized as the baseline. For each way to run the run's model (PyTorch fp32
and bf16; ONNX Runtime fp32; ONNX Runtime int8 of the folder's
export, which for a quantized model is the QDQ graph of its own grids; ONNX Runtime dynamic int8 of its
fp32 graph, the path that re-quantizes from scratch; OpenVINO int8 when exported): the task's dev metrics
through it, the bytes a user ships for it, and its latency at batch 1 and 32 (seq 128) against the
baseline in PyTorch fp32, every predictor taking turns call by call in one process. Writes
``benchmarks/results/deploy/<--name, default the run folder's name>.json`` with the command, the CPU and its
instruction sets.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.paths import REPO, portable
from nlpcompress.comparisons import mean_std
from nlpcompress.glue import load_task_data, task_score
from nlpcompress.measure import (
    BATCH_1,
    BATCH_32,
    medians,
    passes_for,
    size_on_disk,
    time_alternating,
    timing_environment,
)
from nlpcompress.models import load_tokenizer
from nlpcompress.runtime import onnx_export
from nlpcompress.runtime.backends import EXPORT_FILES, deployable_bytes, file_predictor, load_predictor
from nlpcompress.runtime.evaluate import evaluate_predictor
from nlpcompress.task import task_option

OUT = REPO / "benchmarks" / "results" / "deploy"
DYNAMIC = "onnxruntime dynamic int8 (re-quantized)"


def predictors(folder: Path, threads: int, scratch: Path) -> dict[str, tuple[Any, int]]:
    """``{name: (predictor, deployable bytes)}`` of every way the folder's model can run."""
    found = {
        backend: (load_predictor(folder, backend, threads), deployable_bytes(folder, backend))
        for backend in ("torch", "torch-bf16")  # bf16: the same files, cast at load
    }
    for backend, (subfolder, name) in EXPORT_FILES.items():
        if (folder / subfolder / name).is_file():
            found[backend] = (load_predictor(folder, backend, threads), deployable_bytes(folder, backend))
    fp32 = folder / "onnx" / "model.onnx"
    if fp32.is_file():
        dynamic = scratch / "model_dynamic_int8.onnx"
        onnx_export.quantize_int8(fp32, dynamic)
        config = found["torch"][0].config
        onnx_bytes = deployable_bytes(folder, "onnxruntime") - fp32.stat().st_size + dynamic.stat().st_size
        found[DYNAMIC] = (file_predictor(dynamic, config, threads, "onnxruntime-int8"), onnx_bytes)
    return found


def reference_score(folder: Path, baseline: Path, task) -> tuple[float, str]:
    """The score a run's retention is against, and what it is: the run's own finetune stage (its teacher)
    when the run starts with one, else the score of ``baseline``'s own run when the run compressed that
    very model (as the GLUE harness's rows do)."""
    first = json.loads((folder / "results.json").read_text())["stages"][0]
    if first["type"] == "finetune":
        return task_score(task, first["metrics"]), "the run's finetune stage (its teacher)"
    started_from = Path(yaml.safe_load((folder / "recipe.yaml").read_text())["model"])
    if started_from.resolve() != baseline.resolve() or not (baseline / "results.json").is_file():
        raise SystemExit(
            f"{folder}: it starts from {started_from}, not from a fine-tuning run it can be scored against; "
            "give that run as --baseline, or a run whose first stage is finetune"
        )
    score = json.loads((baseline / "results.json").read_text())["score"]
    return score, "the baseline's own run (the model compressed)"


def deploy_table(records: dict[str, dict[str, Any]], link_prefix: str = "") -> str:
    """The docs' table of deployed runs: per result file (``{file: record}``, linked as ``link_prefix`` +
    file) and way to run it, its score, retention, deployable size and speedups, and the CPU that timed it
    (speedups are comparable only within one CPU)."""
    lines = [
        "| run | runs on | SST-2 dev | retention | deployable | × smaller | × faster bs 1 / bs 32 | timed on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, record in records.items():
        run = record_name(record)
        cpu = f"{record['cpu']['model']} ({', '.join(record['cpu']['instruction_sets'])})"
        for name, row in record["runs_on"].items():
            lines.append(
                f"| [{run}]({link_prefix}{source}) | {name} | {100 * row['score']:.2f} | {100 * row['retention']:.1f}% | "
                f"{row['size_bytes'] / 1e6:.1f} MB | {row['smaller']} | "
                f"{row['speedup'][BATCH_1]:.2f} / {row['speedup'][BATCH_32]:.2f} | {cpu} |"
            )
    return "\n".join(lines) + "\n"


def record_name(record: dict[str, Any]) -> str:
    """A record's ``--name``, or its run folder's name (records from before ``--name``)."""
    return record.get("name", Path(record["run"]).name)


def variant_of(record: dict[str, Any]) -> str:
    """The recipe variant a record measured: its name without the ``-s<seed>`` suffix."""
    return re.sub(r"-s\d+$", "", record_name(record))


def _mean_spread(values: list[float], digits: int, unit: str = "") -> str:
    """``mean ± std`` over seeds, or the one value and "—" where one seed was run (no spread measured)."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}{unit} ± {f'{std:.{digits}f}' if len(values) > 1 else '—'}"


def front_table(records: dict[str, dict[str, Any]]) -> str:
    """Per variant (records of one recipe with different seeds, ``<name>-s<seed>``) and way to run it: how
    many seeds, score, retention and speedups as mean ± std over them, and the deployable size. Only
    variants whose records were all timed on one CPU are combined; the CPU is named."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records.values():
        groups.setdefault(variant_of(record), []).append(record)
    lines = [
        "| variant | runs on | seeds | SST-2 dev | retention | × smaller | × faster bs 1 | × faster bs 32 | timed on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, group in groups.items():
        cpus = {json.dumps(record["cpu"], sort_keys=True) for record in group}
        if len(cpus) > 1:
            raise ValueError(
                f"{variant}: its records were timed on {len(cpus)} CPUs; speedups do not combine"
            )
        cpu = group[0]["cpu"]
        for name in group[0]["runs_on"]:
            rows = [record["runs_on"][name] for record in group if name in record["runs_on"]]
            if len(rows) < len(group):
                continue  # a way not measured for every seed
            lines.append(
                f"| {variant} | {name} | {len(rows)} | {_mean_spread([100 * r['score'] for r in rows], 2)} | "
                f"{_mean_spread([100 * r['retention'] for r in rows], 1, '%')} | "
                f"{mean_std([r['smaller'] for r in rows])[0]:.1f} | "
                f"{_mean_spread([r['speedup'][BATCH_1] for r in rows], 2, '×')} | "
                f"{_mean_spread([r['speedup'][BATCH_32] for r in rows], 2, '×')} | "
                f"{cpu['model']} ({', '.join(cpu['instruction_sets'])}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__.split("\n")[0])
    parser.add_argument(
        "folder", type=Path, nargs="?", help="a finished run folder (with its onnx/ or openvino/ export)"
    )
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="print the docs' table of these result files instead of measuring",
    )
    parser.add_argument(
        "--front",
        type=Path,
        nargs="+",
        help="print the seeds-combined table of these result files (runs named <variant>-s<seed>)",
    )
    parser.add_argument("--link-prefix", default="", help="before each file's link (../ from docs/)")
    parser.add_argument(
        "--baseline", type=Path,
        help="a fine-tuned model of the run's starting architecture, timed and sized as the baseline (its score "
        "is the run's own finetune stage's)",
    )  # fmt: skip
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--name",
        help="of the result file and its rows (default: the run folder's; <variant>-s<seed> for --front)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats",
        type=int,
        default=60,
        help="timed passes at batch 1, at least (a third at 32; more until settled)",
    )
    parser.add_argument("--max-length", type=int, default=64, help="of the dev rows scored")
    args = parser.parse_args(argv)
    if args.front:
        print(front_table({path.as_posix(): json.loads(path.read_text()) for path in args.front}), end="")
        return
    if args.table:
        records = {path.as_posix(): json.loads(path.read_text()) for path in args.table}
        print(deploy_table(records, args.link_prefix), end="")
        return
    if args.folder is None or args.baseline is None or args.data_dir is None:
        parser.error("measuring needs FOLDER, --baseline and --data-dir")
    torch.set_num_threads(args.threads)
    task = task_option(None, args.folder)
    tokenizer = load_tokenizer(str(args.folder))
    _, evals = load_task_data(task, tokenizer, args.data_dir, args.max_length, need_train=False)
    baseline = load_predictor(args.baseline, "torch", args.threads)
    base_score, score_of = reference_score(args.folder, args.baseline, task)
    with tempfile.TemporaryDirectory() as scratch:
        ways = predictors(args.folder, args.threads, Path(scratch))
        rows: dict[str, dict[str, Any]] = {}
        for name, (predictor, size) in ways.items():
            metrics = evaluate_predictor(predictor, task, evals, tokenizer, progress=False)
            score = task_score(task, metrics)
            rows[name] = {
                "metrics": metrics,
                "score": round(score, 4),
                "retention": round(score / base_score, 4),
            }
            rows[name]["size_bytes"] = size
        timed = time_alternating(
            {"baseline": baseline, **{name: predictor for name, (predictor, _) in ways.items()}},
            min_passes=passes_for(args.repeats),
            threads=args.threads,
        )
    latency = medians(timed)
    base_size = size_on_disk(args.baseline)
    for name, row in rows.items():
        row["latency_ms"] = latency[name]
        row["timing"] = timed[name]  # median, interquartile range, the median's 95% interval, passes
        row["speedup"] = {
            shape: round(latency["baseline"][shape] / latency[name][shape], 2)
            for shape in (BATCH_1, BATCH_32)
        }
        row["smaller"] = round(base_size / row["size_bytes"], 1)
    record = {
        "command": "python -m benchmarks.deploy " + " ".join(sys.argv[1:] if argv is None else argv),
        "run": str(args.folder),
        "name": args.name or args.folder.name,
        "baseline": {"score": round(base_score, 4), "score_of": score_of,
                     "timed_and_sized": str(args.baseline), "size_bytes": base_size,
                     "latency_ms": latency["baseline"], "timing": timed["baseline"]},
        "task": task.name,
        "repeats_bs1": args.repeats,
        **timing_environment(args.threads),
        "runs_on": rows,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"{args.name or args.folder.name}.json"
    target.write_text(json.dumps(portable(record), indent=1) + "\n")
    print(f"baseline ({score_of}): {100 * base_score:.2f}; timed and sized: {args.baseline}")
    for name, row in rows.items():
        print(
            f"{name:42s} {100 * row['score']:6.2f} ({100 * row['retention']:.1f}%)  {row['size_bytes'] / 1e6:6.1f} MB "
            f"({row['smaller']}x smaller)  {row['speedup'][BATCH_1]}x bs1  {row['speedup'][BATCH_32]}x bs32"
        )
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
