"""Command line: `nlpcompress run | eval | bench | export | push | inspect`.

User mistakes print one line on stderr and exit with code 2, without a traceback.
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from nlpcompress.errors import UserError
from nlpcompress.search.cli import add_parser as add_search_parser

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def _cmd_run(args: argparse.Namespace) -> None:
    from nlpcompress.distributed import is_main
    from nlpcompress.recipe import load_recipe
    from nlpcompress.runner import run_recipe

    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    result = run_recipe(
        load_recipe(args.recipe, overrides),
        progress=not args.no_progress,
        restart=args.restart,
        overwrite=args.overwrite,
    )
    if not is_main():
        return  # one report: the main process prints it
    print(run_summary(result.results, result.output_dir, result.pushed_to))


def run_summary(res: dict[str, Any], output_dir: Path, pushed_to: str | None = None) -> str:
    """What ``run`` prints: each stage, the final metrics and size, where the model went, and what it is
    through its runtime when the recipe exports."""
    from nlpcompress.measure import BATCH_1, BATCH_32
    from nlpcompress.structure import summary_line

    lines = [
        f"stage {stage['name']}: {_format_metrics(stage['metrics'])} ({stage['wall_s']:.0f} s)"
        for stage in res["stages"]
    ]
    lines.append(f"{res['task']}: {_format_metrics(res['metrics'])}")
    if "input_model" in res:
        given = res["input_model"]
        lines.append(f"input model: {_format_metrics(given['metrics'])} (retention {given['retention']})")
    lines.append(
        f"params {res['structure']['params']['total']:,} | size {res['size_bytes'] / 1e6:.1f} MB | latency "
        f"bs1 {res['latency_ms'][BATCH_1]:.1f} ms, bs32 {res['latency_ms'][BATCH_32]:.1f} ms "
        f"| wall {res['wall_s']:.0f} s"
    )
    lines.append(f"model saved to {output_dir}: {summary_line(res['structure'])}")
    if "runtime" in res:  # what a user deploys: its accuracy and speed through the runtime
        deployed = res["runtime"]
        lines.append(
            f"deployed on {deployed['backend']}: {_format_metrics(deployed['metrics'])} | "
            f"{deployed['speedup_bs1_seq128']:.2f}x (bs1), {deployed['speedup_bs32_seq128']:.2f}x (bs32) "
            "faster than this model in PyTorch fp32, timed in one process"
        )
    if pushed_to:
        lines.append(f"pushed to {pushed_to}")
    return "\n".join(lines)


def _cmd_push(args: argparse.Namespace) -> None:
    from nlpcompress.hub import push_folder

    url = push_folder(args.model_dir, args.repo_id, args.private, args.revision, args.commit_message)
    print(f"pushed {args.model_dir} to {url}")


def _cmd_eval(args: argparse.Namespace) -> None:
    from nlpcompress.evaluation import evaluate_splits
    from nlpcompress.glue import load_task_data
    from nlpcompress.models import check_task_fit, load_model_dir, load_tokenizer
    from nlpcompress.predict import DEFAULT_MAX_LENGTH, run_settings
    from nlpcompress.task import task_option

    task = task_option(args.task, args.model_dir)
    # the run's own rows by default, so that eval FOLDER reproduces its results.json
    own = run_settings(Path(args.model_dir)) if args.task is None else {}
    max_length = args.max_length or own.get("max_length") or DEFAULT_MAX_LENGTH
    max_eval_samples = args.max_eval_samples or own.get("max_eval_samples")
    data_dir = args.data_dir or own.get("data_dir")
    if args.backend:
        from nlpcompress.runtime import load_predictor
        from nlpcompress.runtime.evaluate import evaluate_predictor

        model = load_predictor(args.model_dir, args.backend, args.threads)
    else:
        model = load_model_dir(args.model_dir)
    check_task_fit(model.config, task, args.model_dir)
    tokenizer = load_tokenizer(args.model_dir)
    _, evals = load_task_data(
        task, tokenizer, data_dir, max_length, max_eval_samples=max_eval_samples, need_train=False
    )
    report: dict[str, Any] = {"task": task.name}
    if args.backend:
        report["backend"] = args.backend
        report["metrics"] = evaluate_predictor(model, task, evals, tokenizer, progress=not args.no_progress)
    else:
        report["metrics"] = evaluate_splits(model, task, evals, tokenizer, progress=not args.no_progress)
    print(json.dumps(report, indent=None if args.json else 2))


def _add_comparison(report: dict[str, Any], latency: dict[str, dict[str, float]], threads: int) -> None:
    """The machine, and the model's speedups and size ratio against the baseline (when there is one)."""
    from nlpcompress.measure import speedups, timing_environment

    report |= timing_environment(threads)
    if "baseline" in latency:
        report |= speedups(latency["baseline"], latency["model"])
        report["size_ratio"] = round(report["model"]["size_bytes"] / report["baseline"]["size_bytes"], 4)


def _bench_report(model_dir: str, baseline: str | None, threads: int | None, repeats: int) -> dict[str, Any]:
    import torch

    from nlpcompress.measure import compare_latency, count_parameters, size_on_disk, sparsity
    from nlpcompress.models import load_model_dir

    models = {"model": load_model_dir(model_dir)}
    folders = {"model": model_dir}
    if baseline:
        models["baseline"] = load_model_dir(baseline)
        folders["baseline"] = baseline
    latency = compare_latency(models, threads=threads, repeats=repeats)
    report: dict[str, Any] = {
        name: {
            "path": str(Path(folders[name]).resolve()),
            "params": count_parameters(model),
            "size_bytes": size_on_disk(folders[name]),
            "sparsity": round(sparsity(model), 4),
            "latency_ms": latency[name],
        }
        for name, model in models.items()
    }
    _add_comparison(report, latency, threads or torch.get_num_threads())
    if baseline:
        report["params_ratio"] = round(
            report["model"]["params"]["total"] / report["baseline"]["params"]["total"], 4
        )
    return report


def _backend_bench_report(
    model_dir: str, backend: str, baseline: str, baseline_backend: str, threads: int | None, repeats: int
) -> dict[str, Any]:
    """Latency of ``model_dir`` run by ``backend`` against ``baseline`` run by ``baseline_backend``, timed
    alternating in one process, with the bytes a user ships for each (``deployable_bytes``)."""
    import torch

    from nlpcompress.measure import compare_latency
    from nlpcompress.runtime import load_predictor
    from nlpcompress.runtime.backends import deployable_bytes

    threads = threads or torch.get_num_threads()
    predictors = {
        "model": load_predictor(model_dir, backend, threads),
        "baseline": load_predictor(baseline, baseline_backend, threads),
    }
    latency = compare_latency(predictors, threads=threads, repeats=repeats)
    report: dict[str, Any] = {
        name: {
            "path": str(Path(folder).resolve()),
            "backend": predictors[name].backend,
            "score": recorded_score(Path(folder), predictors[name].backend),
            "size_bytes": deployable_bytes(folder, predictors[name].backend),
            "latency_ms": latency[name],
        }
        for name, folder in (("model", model_dir), ("baseline", baseline))
    }
    _add_comparison(report, latency, threads)
    scores = [report[name]["score"] for name in ("model", "baseline")]
    if None not in scores and scores[1]:
        report["retention"] = round(scores[0] / scores[1], 4)
    return report


def recorded_score(folder: Path, backend: str) -> float | None:
    """The task score ``folder``'s results.json measured through ``backend`` (its export step's runtime, or
    PyTorch for the model itself); None when its run did not evaluate that backend."""
    results = _read_json(folder / "results.json")
    runtime = results.get("runtime") or {}
    if runtime.get("backend") == backend:
        return runtime.get("score")
    return results.get("score") if backend == "torch" else None


def _print_backend_bench(report: dict[str, Any]) -> None:
    from nlpcompress.measure import latency_text, speedup_text

    for name in ("model", "baseline"):
        r = report[name]
        lat = r["latency_ms"]
        score = "  n/a " if r["score"] is None else f"{100 * r['score']:6.2f}"
        print(
            f"{name:9s} {r['backend']:17s} score {score}  size {r['size_bytes'] / 1e6:7.1f} MB  "
            f"{latency_text(lat)}"
        )
    kept = f"{100 * report['retention']:.1f}% of the baseline's score, " if "retention" in report else ""
    print(
        f"{kept}{speedup_text(report)}; "
        f"size {report['size_ratio']:.3f}x, {1 / report['size_ratio']:.1f}x smaller ({report['threads']} "
        f"threads, alternating in one process; "
        f"{report['cpu']['model']}, {' '.join(report['cpu']['instruction_sets']) or 'no AVX2'})"
    )


def _cmd_bench(args: argparse.Namespace) -> None:
    from nlpcompress.measure import latency_text, speedup_text

    if args.backend or args.baseline_backend:
        report = _backend_bench_report(
            args.model_dir,
            args.backend or "torch",
            args.baseline or args.model_dir,
            args.baseline_backend or "torch",
            args.threads,
            args.repeats,
        )
        if args.json:
            print(json.dumps(report))
        else:
            _print_backend_bench(report)
        return
    report = _bench_report(args.model_dir, args.baseline, args.threads, args.repeats)
    if args.json:
        print(json.dumps(report))
        return
    for name in ("model", "baseline"):
        if name in report:
            r = report[name]
            lat = r["latency_ms"]
            print(
                f"{name:9s} params {r['params']['total']:>11,}  size {r['size_bytes'] / 1e6:7.1f} MB  "
                f"sparsity {r['sparsity']:.3f}  {latency_text(lat)}"
            )
    if args.baseline:
        print(
            f"{speedup_text(report)}; "
            f"size {report['size_ratio']:.3f}x, params {report['params_ratio']:.3f}x "
            f"({report['threads']} threads, alternating in one process; {report['cpu']['model']}, "
            f"{' '.join(report['cpu']['instruction_sets']) or 'no AVX2'})"
        )


def _cmd_export(args: argparse.Namespace) -> None:
    from nlpcompress.run_folder import folder_lock
    from nlpcompress.runtime import export_model

    folder = Path(args.model_dir).resolve()
    with folder_lock(folder, "export") if folder.is_dir() else nullcontext():  # else export_model says so
        record = export_model(
            args.model_dir,
            args.format,
            int8=args.int8,
            task=args.task,
            data_dir=args.data_dir,
            calibration_samples=args.calibration_samples,
            max_length=args.max_length,
        )
    if args.json:
        print(json.dumps(record))
        return
    for name, file in record["files"].items():
        checked = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in file["verification"].items()
        )
        print(f"{args.model_dir}/{args.format}/{name}: backend {file['backend']}, verified ({checked})")
    print(f"verified on {record['verified_on']}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from nlpcompress.predict import load, read_inputs, text_columns

    folder = Path(args.model_dir)
    inputs = read_inputs(Path(args.input), text_columns(folder))  # every line checked before any runs
    classifier = load(folder, args.backend, args.max_length, args.batch_size, args.threads)
    lines = "".join(json.dumps(output) + "\n" for output in classifier(inputs))
    if args.output is None:
        print(lines, end="")
    else:
        output = Path(args.output)
        partial = output.with_name(f".{output.name}.partial")
        partial.write_text(lines)
        partial.replace(output)  # all or nothing
    print(f"{len(inputs)} inputs labelled on {classifier.backend}", file=sys.stderr)


def _cmd_inspect(args: argparse.Namespace) -> None:
    from nlpcompress.models import load_model_dir
    from nlpcompress.structure import describe, layer_table, summary_line

    structure = describe(load_model_dir(args.model_dir))
    if args.json:
        print(json.dumps(structure))
        return
    print(summary_line(structure))
    print("\n".join(layer_table(structure)))
    p = structure["params"]
    print(
        f"params total {p['total']:,} (encoder {p['encoder']:,}, embeddings {p['embeddings']:,}, "
        f"non-zero {p['nonzero']:,}); multiply-accumulates at seq 128: {structure['macs_seq128']:,}"
    )
    for line in deployed_lines(Path(args.model_dir)):
        print(line)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def deployed_lines(folder: Path) -> list[str]:
    """One line per exported file of ``folder``: its backend, the bytes a user ships for it, how many of its
    quantized linears (the encoder's, and the head's dense matrix under head_bits) run on integer kernels
    (a QDQ export), and the recipe's accuracy and speed through it."""
    from nlpcompress.measure import BATCH_1, BATCH_32
    from nlpcompress.runtime.backends import EXPORT_FILES, deployable_bytes

    runtime = _read_json(folder / "results.json").get("runtime")
    lines = []
    for backend, (subfolder, name) in EXPORT_FILES.items():
        if not (folder / subfolder / name).is_file():
            continue
        line = f"deployable on {backend}: {subfolder}/{name}, {deployable_bytes(folder, backend) / 1e6:.1f} MB shipped"
        quantization = _read_json(folder / subfolder / "export.json").get("quantization", {})
        kernels = [facts["kernel"] for facts in quantization.get("linears", {}).values() if "kernel" in facts]
        if kernels and backend.endswith("int8"):
            integer = sum(not kernel.startswith("float") for kernel in kernels)
            line += f"; {integer} of {len(kernels)} quantized linears on integer kernels"
        if runtime and runtime["backend"] == backend:
            line += (
                f"; {_format_metrics(runtime['metrics'])}, {runtime[f'speedup_{BATCH_1}']:.2f}x (bs1) / "
                f"{runtime[f'speedup_{BATCH_32}']:.2f}x (bs32) PyTorch fp32 (the recipe's export step)"
            )
        lines.append(line)
    return lines


BACKENDS_HELP = "torch, torch-bf16, onnxruntime, onnxruntime-int8, openvino, openvino-int8"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlpcompress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="fine-tune + compress + evaluate + save, as a recipe says")
    run.add_argument("recipe", help="a recipe YAML file")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a recipe value")
    run.add_argument("--output-dir", help="where the model goes (overrides the recipe's output_dir)")
    run.add_argument("--data-dir", help="local GLUE folder (overrides the recipe's data_dir)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--restart",
        action="store_true",
        help="discard an interrupted run of this recipe instead of resuming it",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in the output folder (files the run did not write are kept)",
    )
    run.set_defaults(func=_cmd_run)

    ev = sub.add_parser("eval", help="evaluate a saved model on a task's validation split(s)")
    ev.add_argument("model_dir")
    ev.add_argument(
        "--task",
        help="a GLUE task, or a YAML file with a task block (your own data); default: the run's own task",
    )
    ev.add_argument(
        "--data-dir", help="local GLUE folder (default: the run's, else $NLPCOMPRESS_GLUE_DIR, else the Hub)"
    )
    ev.add_argument("--max-eval-samples", type=int, help="the first N rows (default: the run's)")
    ev.add_argument("--max-length", type=int, help="tokens per row (default: the run's, else 128)")
    ev.add_argument("--json", action="store_true", help="print one JSON line")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument(
        "--backend", help=f"run the model on this backend ({BACKENDS_HELP}); default: PyTorch fp32"
    )
    ev.add_argument("--threads", type=int, help="threads of the backend (default: torch's choice)")
    ev.set_defaults(func=_cmd_eval)

    bench = sub.add_parser("bench", help="size, parameters, sparsity and CPU latency (vs a baseline)")
    bench.add_argument("model_dir")
    bench.add_argument("--baseline", help="a baseline model folder, timed in the same process, alternating")
    bench.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    bench.add_argument(
        "--repeats",
        type=int,
        default=60,
        help="timed passes at batch 1, at least (a third at batch 32); more, up to 3 times as many, until "
        "each median is known within ±3%%",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--backend",
        help=f"time the model on this backend ({BACKENDS_HELP}) against PyTorch fp32 (or --baseline)",
    )
    bench.add_argument(
        "--baseline-backend",
        help="the backend of the baseline (default torch; the baseline folder: the model's)",
    )
    bench.set_defaults(func=_cmd_bench)

    export = sub.add_parser(
        "export", help="write a verified ONNX or OpenVINO copy of a model folder (fp32, and int8 with --int8)"
    )
    export.add_argument("model_dir")
    export.add_argument("--format", required=True, help="onnx (ONNX Runtime) or openvino")
    export.add_argument(
        "--int8", action="store_true", help="also an int8 model (ONNX: dynamic; OpenVINO: NNCF)"
    )
    export.add_argument(
        "--calibration-samples", type=int, help="OpenVINO int8: training examples (default 300)"
    )
    export.add_argument(
        "--task",
        help="the task whose examples verify the export: a GLUE task or a task YAML (default: the run's own)",
    )
    export.add_argument(
        "--data-dir", help="local GLUE folder (default: $NLPCOMPRESS_GLUE_DIR, else random tokens)"
    )
    export.add_argument("--max-length", type=int, default=128, help="tokens per verification example")
    export.add_argument("--json", action="store_true", help="print the export record as one JSON object")
    export.set_defaults(func=_cmd_export)

    push = sub.add_parser(
        "push", help="upload a run folder to the Hugging Face Hub (token: HF_TOKEN or hf auth login)"
    )
    push.add_argument("model_dir")
    push.add_argument("--repo-id", required=True, help="<user or organisation>/<name>")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", help="a branch (created when missing); default: main")
    push.add_argument("--commit-message")
    push.set_defaults(func=_cmd_push)

    inspect = sub.add_parser("inspect", help="structure: heads and FFN width per layer, sparsity, parameters")
    inspect.add_argument("model_dir")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_cmd_inspect)
    predict = sub.add_parser("predict", help="label the texts of a JSON Lines file with a saved model")
    predict.add_argument("model_dir")
    predict.add_argument(
        "--input", required=True, help='JSON Lines: {"text": ...} or {"text": ..., "text_pair": ...} per line'
    )
    predict.add_argument("--output", help="write the labels here (JSON Lines; default: standard output)")
    predict.add_argument(
        "--backend",
        default="auto",
        help=f"auto (the folder's exported runtime, else the fastest it holds), {BACKENDS_HELP}",
    )
    predict.add_argument("--max-length", type=int, help="tokens per input (default: the run's own, else 128)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--threads", type=int)
    predict.set_defaults(func=_cmd_predict)
    add_search_parser(sub)
    return parser


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("threads", "repeats", "max_eval_samples", "batch_size", "max_length"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer (got {value})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING  # one log under torchrun
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if getattr(args, "no_progress", False):
        import datasets

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    try:
        _check_numbers(args)
        args.func(args)
        from nlpcompress.distributed import finish

        finish()
    except UserError as err:
        print(f"nlpcompress: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "nlpcompress: interrupted; run the same command again to resume (or add --restart to start over)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
