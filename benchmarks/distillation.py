"""Distillation ablation on SST-2: a 3-layer student of the fine-tuned 6-layer MiniLM teacher.

Fine-tunes the teacher once, then trains students initialised from teacher layers 1, 3, 5 with
CE only (plain fine-tuning), KL only, the DistilBERT triple loss and TinyBERT (two phases); prints
accuracy, retention vs the teacher of the same run and CPU latency (batch 1 and 32, seq 128, teacher
and student timed alternately in one process), and writes ``benchmarks/results/distillation.json``.

    OMP_NUM_THREADS=2 flock /tmp/nlpcompress-cpu.lock \
        .venv/bin/python -m benchmarks.distillation --data-dir /work/shared/data/glue
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from nlpcompress.distill import student_from_teacher
from nlpcompress.glue import get_task, load_task_data
from nlpcompress.measure import compare_latency, count_parameters
from nlpcompress.models import load_compact, load_tokenizer
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.stages import RUNNERS, StageContext

BUDGETS = {
    "small": {"max_train_samples": 8000, "max_eval_samples": None},
    "ci": {"max_train_samples": 512, "max_eval_samples": 128},
}
STUDENT_LAYERS = [1, 3, 5]
# name -> the stages that train the student (the first builds it from the teacher).
STUDENTS: dict[str, list[dict[str, Any]]] = {
    "ce_only": [{"type": "finetune"}],
    "kl_only": [{"type": "distill", "method": "kd", "alpha_ce": 1.0, "alpha_task": 0.0}],
    "triple": [{"type": "distill", "method": "distilbert"}],
    "tinybert": [
        {"type": "distill", "method": "tinybert", "phase": "intermediate"},
        {"type": "distill", "method": "tinybert", "phase": "prediction"},
    ],
}


def _recipe(args: argparse.Namespace, stages: list[dict[str, Any]]):
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
                "learning_rate": args.learning_rate,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 64,
                "num_train_epochs": 1,
                "warmup_steps": 25,
                "weight_decay": 0.01,
                "logging_steps": 50,
            },
            "stages": stages,
        },
        "benchmark",
    )


def _run_stages(args, stages, model, data) -> tuple[Any, dict[str, float], list[dict], float]:
    """Run ``stages`` on ``model`` (the student, or the teacher for the first distill stage)."""
    recipe = _recipe(args, stages)
    task, tokenizer, train, evals = data
    started, info = time.perf_counter(), []
    for stage in recipe.stages:
        ctx = StageContext(
            recipe,
            task,
            tokenizer,
            train,
            evals,
            args.work_dir / str(stage.name),
            args.work_dir / "artifacts",
            False,
        )
        set_seed(args.seed)
        output = RUNNERS[stage.type](stage, model, ctx)
        model = output.model
        info.append({k: v for k, v in output.info.items() if k != "distillation"} | {"stage": stage.name})
        print(f"  {stage.name}: {output.metrics} {output.info.get('last_loss_terms', '')}", flush=True)
    return model, output.metrics, info, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=None, help="local GLUE folder (else $NLPCOMPRESS_GLUE_DIR / Hub)"
    )
    parser.add_argument("--budget", choices=BUDGETS, default="small")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/distillation-bench"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/distillation.json"))
    args = parser.parse_args()

    task, tokenizer = get_task("sst2"), load_tokenizer("minilm-l6")
    budget = BUDGETS[args.budget]
    train, evals = load_task_data(
        task, tokenizer, args.data_dir, 64, budget["max_train_samples"], budget["max_eval_samples"]
    )
    data = (task, tokenizer, train, evals)
    set_seed(args.seed)
    print("teacher: fine-tuning MiniLM-L6", flush=True)
    teacher, teacher_metrics, _, teacher_s = _run_stages(
        args, [{"type": "finetune"}], load_compact("minilm-l6", task), data
    )
    rows: dict[str, dict[str, Any]] = {
        "teacher": {"accuracy": teacher_metrics["accuracy"], "retention": 1.0, "train_s": round(teacher_s, 1)}
    }
    students = {}
    for name, stages in STUDENTS.items():
        print(f"student {name}", flush=True)
        first = stages[0]
        if first["type"] == "distill":  # the stage copies and freezes the teacher, builds the student
            model, stages = teacher, [{**first, "student": {"layers": STUDENT_LAYERS}}, *stages[1:]]
        else:
            model = student_from_teacher(teacher, STUDENT_LAYERS)
        student, metrics, info, seconds = _run_stages(args, stages, model, data)
        students[name] = student
        rows[name] = {
            "accuracy": metrics["accuracy"],
            "retention": metrics["accuracy"] / teacher_metrics["accuracy"],
            "train_s": round(seconds, 1),
            "stages": info,
        }
    threads = torch.get_num_threads()
    latency = compare_latency({"teacher": teacher, "student": students["triple"]}, threads=threads)
    ratio = {shape: latency["student"][shape] / latency["teacher"][shape] for shape in latency["teacher"]}
    result = {
        "task": "sst2",
        "budget": args.budget,
        **budget,
        "epochs": 1,
        "batch_size": 32,
        "max_length": 64,
        "learning_rate": args.learning_rate,
        "student_layers": STUDENT_LAYERS,
        "rows": rows,
        "params": {
            "teacher": count_parameters(teacher)["total"],
            "student": count_parameters(students["triple"])["total"],
        },
        "latency_ms": latency,
        "latency_ratio_student_over_teacher": ratio,
        "threads": threads,
    }
    print(f"\n{'model':<10} {'accuracy':>9} {'retention':>10} {'train s':>8}")
    for name, row in rows.items():
        print(f"{name:<10} {row['accuracy']:>9.4f} {row['retention']:>10.2%} {row['train_s']:>8.0f}")
    for shape, value in ratio.items():
        print(
            f"latency {shape}: teacher {latency['teacher'][shape]:.1f} ms, student {latency['student'][shape]:.1f} ms, ratio {value:.2f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
