"""Distillation ablation on SST-2: a 3-layer student of the fine-tuned 6-layer MiniLM teacher.

Fine-tunes the teacher once (1 epoch, lr 1e-4; or reuses ``--teacher``), then trains students made
of teacher layers 1, 3, 5 (0-based) with CE only (plain fine-tuning), KL only, the DistilBERT triple
loss and TinyBERT (two phases). Every student stage gets the same rate and epochs (lr 3e-4, 3
epochs: the triple, KL and CE students take the same steps; TinyBERT's two phases take 3 epochs
each). Prints accuracy, retention vs the teacher of the same run and CPU latency (batch 1 and 32,
seq 128, teacher and student timed alternately in one process), and writes the results JSON.

    OMP_NUM_THREADS=2 flock /tmp/nlpcompress-cpu.lock \
        .venv/bin/python -m benchmarks.distillation --data-dir /work/shared/data/glue
"""

import argparse
import time
from typing import Any

import torch

from benchmarks.sst2 import Sst2Bench, add_arguments
from nlpcompress.distill import student_from_teacher
from nlpcompress.measure import compare_latency, count_parameters
from nlpcompress.models import load_model_dir
from nlpcompress.stages.training import evaluate

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


def _train(bench: Sst2Bench, stages, model, learning_rate: float, epochs: float):
    """Run ``stages`` on ``model``, printing each; (last model, its metrics, each stage's facts, seconds)."""
    outputs, seconds = bench.run(stages, model, learning_rate, epochs)
    info = []
    for output in outputs:
        info.append({k: v for k, v in output.info.items() if k != "distillation"})
        print(f"  {output.metrics} {output.info.get('last_loss_terms', '')}", flush=True)
    return outputs[-1].model, outputs[-1].metrics, info, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "distillation")
    parser.add_argument("--teacher-lr", type=float, default=1e-4, help="the teacher's fine-tuning rate")
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="every student's rate")
    parser.add_argument("--epochs", type=float, default=3.0, help="every student stage's epochs")
    parser.add_argument(
        "--teacher",
        default=None,
        help="a fine-tuned teacher folder to reuse (skips the teacher's fine-tuning; it is evaluated here)",
    )
    parser.add_argument(
        "--students", nargs="+", choices=STUDENTS, default=list(STUDENTS), help="which students to train"
    )
    args = parser.parse_args()

    bench = Sst2Bench.load(args)
    started = time.perf_counter()
    if args.teacher:
        print(f"teacher: {args.teacher}", flush=True)
        teacher = load_model_dir(args.teacher)
        recipe = bench.recipe([{"type": "finetune", "name": "teacher"}])
        teacher_metrics = evaluate(teacher, bench.context(recipe, recipe.stages[0]))
    else:
        print("teacher: fine-tuning MiniLM-L6", flush=True)
        teacher, teacher_metrics, _, _ = _train(
            bench, [{"type": "finetune"}], bench.pretrained(), args.teacher_lr, 1
        )
    teacher_s = None if args.teacher else round(time.perf_counter() - started, 1)  # reused: not trained here
    rows: dict[str, dict[str, Any]] = {
        "teacher": {"accuracy": teacher_metrics["accuracy"], "retention": 1.0, "train_s": teacher_s}
    }
    students = {}
    for name in args.students:
        stages = STUDENTS[name]
        print(f"student {name}", flush=True)
        first = stages[0]
        if first["type"] == "distill":  # the stage copies and freezes the teacher, builds the student
            model, stages = teacher, [{**first, "student": {"layers": STUDENT_LAYERS}}, *stages[1:]]
        else:
            model = student_from_teacher(teacher, STUDENT_LAYERS)
        student, metrics, info, seconds = _train(bench, stages, model, args.learning_rate, args.epochs)
        students[name] = student
        rows[name] = {
            "accuracy": metrics["accuracy"],
            "retention": metrics["accuracy"] / teacher_metrics["accuracy"],
            "train_s": round(seconds, 1),
            "stages": info,
        }
    timed = "triple" if "triple" in students else next(iter(students))
    threads = torch.get_num_threads()
    latency = compare_latency({"teacher": teacher, "student": students[timed]}, threads=threads)
    ratio = {shape: latency["student"][shape] / latency["teacher"][shape] for shape in latency["teacher"]}
    result = {
        **bench.facts(),
        "teacher": args.teacher or f"MiniLM-L6 fine-tuned here, 1 epoch, lr {args.teacher_lr}",
        "student_epochs": args.epochs,
        "student_learning_rate": args.learning_rate,
        "student_layers": STUDENT_LAYERS,
        "timed_student": timed,
        "rows": rows,
        "params": {
            "teacher": count_parameters(teacher)["total"],
            "student": count_parameters(students[timed])["total"],
        },
        "latency_ms": latency,
        "latency_ratio_student_over_teacher": ratio,
        "threads": threads,
    }
    print(f"\n{'model':<10} {'accuracy':>9} {'retention':>10} {'train s':>8}")
    for name, row in rows.items():
        seconds = "-" if row["train_s"] is None else f"{row['train_s']:.0f}"
        print(f"{name:<10} {row['accuracy']:>9.4f} {row['retention']:>10.2%} {seconds:>8}")
    for shape, value in ratio.items():
        print(
            f"latency {shape}: teacher {latency['teacher'][shape]:.1f} ms, student {latency['student'][shape]:.1f} ms, ratio {value:.2f}"
        )
    bench.write_results(result)


if __name__ == "__main__":
    main()
