"""Predictors: one interface over PyTorch, ONNX Runtime and OpenVINO, so eval and bench run any of them.

A backend name says what runs and in which precision; the exported files it needs come from
``nlpcompress export``:

==================  ==========================  ======================================
backend             runs                        needs
==================  ==========================  ======================================
torch               the PyTorch model, fp32     the model folder
torch-bf16          the PyTorch model, bf16     the model folder
onnxruntime         ``onnx/model.onnx``         ``nlpcompress export DIR --format onnx``
onnxruntime-int8    ``onnx/model_int8.onnx``    ``... --format onnx --int8``
openvino            ``openvino/model.xml``      ``... --format openvino``
openvino-int8       ``openvino/model_int8.xml`` ``... --format openvino --int8``
==================  ==========================  ======================================
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from nlpcompress.errors import UserError
from nlpcompress.measure import support_files, torch_model_files
from nlpcompress.runtime.extras import require
from nlpcompress.runtime.inputs import input_names

EXPORT_FILES = {
    "onnxruntime": ("onnx", "model.onnx"),
    "onnxruntime-int8": ("onnx", "model_int8.onnx"),
    "openvino": ("openvino", "model.xml"),
    "openvino-int8": ("openvino", "model_int8.xml"),
}
BACKENDS = ("torch", "torch-bf16", *EXPORT_FILES)


class Predictor(nn.Module):
    """Logits (a float32 tensor) for a batch of token ids, whatever runs them.

    A module, so ``measure.compare_latency`` times it as it times a model; ``files`` are what it loads
    from disk (for sizes); ``config`` is the model's.
    """

    def __init__(self, backend: str, config, files: list[Path]):
        super().__init__()
        self.backend, self.config, self.files = backend, config, files

    def _feed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> dict[str, np.ndarray]:
        """The graph's inputs as int64 arrays (an all-ones mask and zero token types where none is given)."""
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return {
            name: (
                given[name]
                if given[name] is not None
                else torch.full_like(input_ids, int(name != "token_type_ids"))
            )
            .numpy()
            .astype(np.int64, copy=False)
            for name in input_names(self.config)
        }


class TorchPredictor(Predictor):
    """The PyTorch model, fp32 or with its weights and activations in bfloat16."""

    def __init__(self, model: nn.Module, folder: Path, bf16: bool):
        super().__init__("torch-bf16" if bf16 else "torch", model.config, torch_model_files(folder))
        self.model = model.to(torch.bfloat16 if bf16 else torch.float32).eval()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        types = token_type_ids if self.config.type_vocab_size > 0 else None
        with torch.inference_mode():
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types)
        return output.logits.float()


class OnnxRuntimePredictor(Predictor):
    """An ONNX file on ONNX Runtime's CPU provider: ``threads`` intra-op threads that sleep, not spin,
    between runs (spinning threads would steal the cores of whatever is timed beside them)."""

    def __init__(self, path: Path, config, threads: int, backend: str = "onnxruntime"):
        ort = require("onnxruntime", f"backend {backend!r}")
        super().__init__(backend, config, [path])
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], self._feed(input_ids, attention_mask, token_type_ids))
        return torch.from_numpy(logits)


class OpenVinoPredictor(Predictor):
    """An OpenVINO IR on the CPU plugin with ``threads`` threads, computing in f32 as the IR says (the plugin
    would otherwise pick bf16 on CPUs that have it)."""

    def __init__(self, path: Path, config, threads: int, backend: str = "openvino"):
        ov = require("openvino", f"backend {backend!r}")
        super().__init__(backend, config, [path, path.with_suffix(".bin")])
        settings = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = ov.Core().compile_model(str(path), "CPU", settings)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        result = self.compiled(self._feed(input_ids, attention_mask, token_type_ids))
        return torch.from_numpy(np.asarray(result[self.compiled.output(0)], dtype=np.float32))


def deployable_files(folder: str | Path, backend: str) -> list[Path]:
    """What a user ships to run the folder's model on ``backend``: the files that backend loads, and the
    config and tokenizer (one definition of deployable size for every backend, tables and cards)."""
    check_backend(backend)
    if backend in ("torch", "torch-bf16"):
        model = torch_model_files(folder)
    else:
        directory, name = EXPORT_FILES[backend]
        path = Path(folder) / directory / name
        model = [path, path.with_suffix(".bin")] if directory == "openvino" else [path]
        model = [f for f in model if f.is_file()]  # ONNX may keep large weights beside it: not here
    return [*model, *support_files(folder)]


def deployable_bytes(folder: str | Path, backend: str) -> int:
    """The deployable size on ``backend`` (``deployable_files``), in bytes."""
    return sum(f.stat().st_size for f in deployable_files(folder, backend))


def check_backend(backend: str) -> None:
    """A UserError listing the backends unless ``backend`` is one."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def export_command(folder: str | Path, backend: str) -> str:
    """The command that writes the files ``backend`` needs."""
    directory, name = EXPORT_FILES[backend]
    return f"nlpcompress export {folder} --format {directory}{' --int8' if 'int8' in name else ''}"


def file_predictor(path: Path, config, threads: int, backend: str) -> Predictor:
    """The predictor of an exported file (``backend`` one of the exported kinds)."""
    predictor = OpenVinoPredictor if backend.startswith("openvino") else OnnxRuntimePredictor
    return predictor(path, config, threads, backend)


def load_predictor(folder: str | Path, backend: str, threads: int | None = None) -> Predictor:
    """The predictor ``backend`` makes of a saved model folder (``threads``: default torch's count)."""
    from nlpcompress.models import load_model_dir

    check_backend(backend)
    threads = threads or torch.get_num_threads()
    if backend in ("torch", "torch-bf16"):
        return TorchPredictor(load_model_dir(str(folder)), Path(folder), bf16=backend == "torch-bf16")
    directory, name = EXPORT_FILES[backend]
    require("openvino" if directory == "openvino" else "onnxruntime", f"backend {backend!r}")
    path = Path(folder) / directory / name
    if not path.is_file():
        raise UserError(
            f"{folder} has no {directory}/{name} for backend {backend!r}; run: {export_command(folder, backend)}"
        )
    from transformers import AutoConfig

    return file_predictor(path, AutoConfig.from_pretrained(str(folder)), threads, backend)
