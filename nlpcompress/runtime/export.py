"""``nlpcompress export``: a model folder's ONNX or OpenVINO files, verified against PyTorch, written whole.

Everything is built in a hidden folder beside the target and moved into place (``onnx/`` or
``openvino/``, replacing an earlier export) only when every file passed verification; a refused or
failed export leaves the model folder as it was.
"""

import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlpcompress.errors import UserError
from nlpcompress.glue import Task
from nlpcompress.runtime import onnx_export, openvino_export, qdq
from nlpcompress.runtime.backends import file_predictor
from nlpcompress.runtime.extras import require
from nlpcompress.runtime.inputs import Batches, example_batches, random_batches
from nlpcompress.runtime.verify import compare
from nlpcompress.task import task_option

FORMATS = ("onnx", "openvino")
VERIFY_SAMPLES = 64
CALIBRATION_SAMPLES = 300
TRACE_EXAMPLE = (2, 16)  # rows, tokens


def require_runtime(fmt: str, int8: bool) -> None:
    """The packages an export to ``fmt`` needs are installed (else one line naming the extra)."""
    require("onnx", f"--format {fmt}")
    require("onnxruntime", f"--format {fmt}")
    if fmt == "openvino":
        require("openvino", "--format openvino")
        if int8:
            require("nncf", "--format openvino --int8")


def check_options(fmt: str, int8: bool, calibration_samples: int | None) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if calibration_samples is not None and not int8:
        raise UserError(
            "--calibration-samples applies to --int8 exports only (an fp32 export is not calibrated)"
        )
    if calibration_samples is not None and calibration_samples < 1:
        raise UserError(f"--calibration-samples must be a positive integer (got {calibration_samples})")


def _logits(predictor, batches: Batches) -> np.ndarray:
    return np.concatenate(
        [predictor(**{k: torch.from_numpy(v) for k, v in batch.items()}).numpy() for batch in batches.batches]
    )


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for module in ("onnx", "onnxruntime", "openvino", "nncf"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            continue
    return versions


def _move_into_place(built: Path, target: Path) -> None:
    """``built`` becomes ``target``; an earlier ``target`` is removed only once the new one is in place."""
    previous = None
    if target.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        target.rename(previous / target.name)
    built.rename(target)
    if previous is not None:
        shutil.rmtree(previous)


def _grid_sources(linears: dict[str, dict], calibrated: list[str], calibration: str) -> str:
    """Where the input grids came from: learned in quantization-aware training, calibrated here, or both."""
    learned = len(linears) - len(calibrated)
    if not calibrated:
        return "learned in quantization-aware training"
    where = f"calibrated (min/max) on {calibration}"
    return (
        where
        if not learned
        else f"{learned} learned in quantization-aware training, {len(calibrated)} {where}"
    )


def _qdq_record(linears: dict[str, dict], kernels: dict[str, str] | None, grids: str) -> dict[str, Any]:
    """What export.json says of a QDQ export: per linear its bits, grid and (ONNX Runtime) kernel, and the
    linears whose GEMM falls back to float."""
    per_linear = {
        name: {key: value for key, value in facts.items() if key != "codes"}
        | ({"kernel": kernels[name]} if kernels else {})
        for name, facts in linears.items()
    }
    record: dict[str, Any] = {
        "weights": "the model's own codes and scales (QDQ, int8 per output channel)",
        "activations": f"unsigned 8 bits per tensor, grids {grids}",
        "linears": per_linear,
    }
    if kernels is not None:
        record["float_fallbacks"] = sorted(name for name, op in kernels.items() if op.startswith("float"))
    return record


def export_model(
    folder: str | Path,
    fmt: str,
    int8: bool = False,
    task: Task | str | None = None,
    data_dir: str | Path | None = None,
    calibration_samples: int | None = None,
    max_length: int = 128,
) -> dict[str, Any]:
    """Export, verify and write ``folder/<fmt>/``; returns what its ``export.json`` records.

    Verification inputs are one right-padded batch of the task's first validation examples (the task
    from ``task``, a GLUE name or a task YAML, or the folder's run; the user's own data, or GLUE's from ``data_dir`` or $NLPCOMPRESS_GLUE_DIR),
    else deterministic random tokens.

    int8: a quantized model (its encoder linears packed by the ``quantize`` stage) is exported with its own
    weight codes and scales in a QDQ graph (``runtime.qdq``), the activation ranges calibrated on the first
    ``calibration_samples`` (default 300) training examples, for ONNX Runtime and OpenVINO alike; the record
    names the kernel each linear runs on. Any other model: ONNX Runtime's dynamic int8, or NNCF's
    post-training int8 for OpenVINO (calibrated on the same rows).
    """
    from nlpcompress.models import load_model_dir

    check_options(fmt, int8, calibration_samples)
    require_runtime(fmt, int8)
    if isinstance(task, str):
        task = task_option(task, folder)
    folder = Path(folder)
    model = load_model_dir(str(folder)).eval()
    config = model.config
    packed = qdq.quantized_linears(model)  # a quantized model: exported on its own grids (QDQ)
    if int8 and fmt == "onnx" and not packed and calibration_samples is not None:
        raise UserError(
            "--calibration-samples: this model has no quantized linears, so its ONNX int8 export is dynamic "
            "quantization (nothing to calibrate); quantize it first (a quantize stage) or leave the option out"
        )
    check = example_batches(
        folder, config, task, "validation", data_dir, VERIFY_SAMPLES, VERIFY_SAMPLES, max_length
    )
    calibration, calibrated = None, []
    if int8 and (packed or fmt == "openvino"):  # ONNX Runtime's dynamic int8 needs no training rows
        count = calibration_samples or CALIBRATION_SAMPLES
        calibration = example_batches(folder, config, task, "train", data_dir, count, 1, max_length)
        if packed:  # the model computes on the input grids its export will use
            calibrated = qdq.calibrate_inputs(model, calibration.batches)
    rounds_inputs = any(layer.input_bits is not None for layer in packed.values())
    with torch.inference_mode():
        reference = np.concatenate(
            [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.numpy() for b in check.batches]
        )
    built = Path(tempfile.mkdtemp(prefix=f".{fmt}-partial-", dir=folder))
    built.chmod(folder.stat().st_mode & 0o777)  # readable as the model folder is (mkdtemp makes it private)
    try:
        traced = built / "traced.onnx"
        example = random_batches(config, *TRACE_EXAMPLE, max_length).batches[0]
        onnx_export.trace(model, example, traced)
        record: dict[str, Any] = {"format": fmt, "int8": int8, "opset": onnx_export.OPSET, "files": {}}

        def verified(path: Path, backend: str, is_int8: bool) -> None:
            # A model that rounds its inputs to 8-bit grids rounds a value on a grid boundary either way
            # when float operations are reordered (fused): its fp32 graph is held to the int8 criterion too.
            predictor = file_predictor(path, config, torch.get_num_threads(), backend)
            rounds = is_int8 or rounds_inputs
            record["files"][path.name] = {
                "int8": is_int8,
                "backend": backend,
                "verification": compare(reference, _logits(predictor, check), rounds, path.name, check.source)
                | (
                    {"criterion": "int8 (the model rounds its inputs to 8-bit grids)"}
                    if rounds_inputs
                    else {}
                ),
            }

        if int8 and packed:
            onnx_export.trace(model, example, built / "float_inputs.onnx", input_grids=False)
            linears = qdq.write_qdq(built / "float_inputs.onnx", built / "qdq.onnx", model)
            (built / "float_inputs.onnx").unlink()
            grids = _grid_sources(linears, calibrated, calibration.source)
        if fmt == "onnx":
            record["fused_operators"] = onnx_export.optimize(traced, built / "model.onnx")
            verified(built / "model.onnx", "onnxruntime", False)
            if int8 and packed:
                (built / "qdq.onnx").rename(built / "model_int8.onnx")
                kernels = qdq.integer_kernels(
                    built / "model_int8.onnx", {n: r["codes"] for n, r in linears.items()}
                )
                record["quantization"] = _qdq_record(linears, kernels, grids)
                verified(built / "model_int8.onnx", "onnxruntime-int8", True)
            elif int8:
                onnx_export.quantize_int8(built / "model.onnx", built / "model_int8.onnx")
                record["quantization"] = {"weights": "dynamic int8 (ONNX Runtime, per output channel)"}
                verified(built / "model_int8.onnx", "onnxruntime-int8", True)
        else:
            openvino_export.convert(traced, built / "model.xml")
            verified(built / "model.xml", "openvino", False)
            if int8 and packed:
                openvino_export.convert(built / "qdq.onnx", built / "model_int8.xml")
                (built / "qdq.onnx").unlink()
                precisions = openvino_export.matmul_precisions(built / "model_int8.xml")
                record["quantization"] = _qdq_record(linears, None, grids) | {
                    "openvino_matmul_precisions": precisions
                }
                verified(built / "model_int8.xml", "openvino-int8", True)
            elif int8:
                openvino_export.quantize_int8(
                    built / "model.xml", calibration.batches, built / "model_int8.xml"
                )
                record["calibration"] = calibration.source
                record["quantization"] = {
                    "weights": "NNCF post-training int8",
                    "activations": calibration.source,
                }
                verified(built / "model_int8.xml", "openvino-int8", True)
        traced.unlink()
        record["verified_on"] = check.source
        record["versions"] = _versions()
        (built / "export.json").write_text(json.dumps(record, indent=2) + "\n")
        _move_into_place(built, folder / fmt)
    finally:
        if built.exists():
            shutil.rmtree(built)
    return record
