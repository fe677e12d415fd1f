"""A recipe's closing ``export:`` step: export the saved model to a CPU runtime, then report accuracy and
speed for what actually runs (GLUE metrics through the runtime, latency against PyTorch fp32 in one
process, alternating, with the CPU's int8/bf16 instruction sets)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset
from pydantic import model_validator
from transformers import PreTrainedTokenizerBase

from nlpcompress.errors import UserError
from nlpcompress.glue import Task, task_score
from nlpcompress.schema import Schema, validation_error


class ExportStep(Schema):
    """``export: {format: onnx, int8: true}``: what ``nlpcompress export`` does, run on the finished model."""

    format: Literal["onnx", "openvino"]
    int8: bool = False
    calibration_samples: int | None = None

    @model_validator(mode="after")
    def _valid_options(self) -> ExportStep:
        from nlpcompress.runtime.export import check_options

        try:
            check_options(self.format, self.int8, self.calibration_samples)
        except UserError as err:
            raise validation_error([(("calibration_samples",), self.calibration_samples, str(err))]) from None
        return self

    @property
    def backend(self) -> str:
        """The runtime that runs the exported file (``load_predictor``'s name for it)."""
        name = "onnxruntime" if self.format == "onnx" else "openvino"
        return f"{name}-int8" if self.int8 else name


def run_export_step(
    folder: Path,
    step: ExportStep,
    task: Task,
    evals: Mapping[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    torch_metrics: dict[str, float],
    data_dir: str | None,
    max_length: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Export ``folder`` (verified against its PyTorch logits), evaluate through the runtime and time it
    beside PyTorch fp32; what results.json records under ``runtime``."""
    import torch

    from nlpcompress.measure import compare_latency, speedups, timing_environment
    from nlpcompress.runtime.backends import deployable_bytes, load_predictor
    from nlpcompress.runtime.evaluate import evaluate_predictor
    from nlpcompress.runtime.export import export_model

    record = export_model(
        folder,
        step.format,
        step.int8,
        task=task,
        data_dir=data_dir,
        calibration_samples=step.calibration_samples,
        max_length=max_length,
    )
    threads = torch.get_num_threads()
    runtime = load_predictor(folder, step.backend, threads)
    metrics = evaluate_predictor(runtime, task, evals, tokenizer, progress=progress)
    latency = compare_latency({"torch": load_predictor(folder, "torch", threads), step.backend: runtime})
    score, torch_score = task_score(task, metrics), task_score(task, torch_metrics)
    return {
        "backend": step.backend,
        "export": record,
        "metrics": metrics,
        "score": score,
        "score_vs_torch": round(score / torch_score, 4) if torch_score else None,
        "size_bytes": deployable_bytes(folder, step.backend),  # what a user ships for the runtime
        "latency_ms": latency,
        **speedups(latency["torch"], latency[step.backend]),
        **timing_environment(threads),
    }
