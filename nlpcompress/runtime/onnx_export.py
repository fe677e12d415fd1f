"""A saved classifier to ONNX: the graph traced from PyTorch, attention fused by ONNX Runtime's transformer
optimizer, and int8 weights by dynamic quantization.

The graph is traced by the TorchScript exporter on a right-padded example: the model skips its mask
when nothing is padded (``_mask_bias``), so an example without padding would trace a graph without the
``attention_mask`` input. The dynamo exporter stops at that data-dependent branch (and needs
onnxscript). Per-layer head counts and FFN widths are traced as they are; the optimizer reads each
layer's head count from its graph (``num_heads=0``), never one global count.
"""

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nlpcompress.compact.quantized import QuantizedEmbedding, QuantizedLinear, fake_quantize_input
from nlpcompress.compact.storage import StoredLinear
from nlpcompress.runtime.extras import require
from nlpcompress.runtime.inputs import input_names
from nlpcompress.surgery import HEAD_DENSE, packable_linears

OPSET = 17


class _Logits(nn.Module):
    """The classifier as a function of its inputs to its logits (what the graph computes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


class _OnInputGrid(nn.Module):
    """A dense linear computing on its input rounded to the packed linear's 8-bit grid (traced as arithmetic)."""

    def __init__(self, linear: nn.Module, scale: torch.Tensor, zero_point: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("scale", scale.clone())
        self.register_buffer("zero_point", zero_point.clone())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(fake_quantize_input(hidden, self.scale, self.zero_point))


class _AsMatMul(nn.Module):
    """The head's dense linear traced as a 3-D MatMul and Add with an (in, out) weight: on its 2-D input a
    linear traces as Gemm (a weight the QDQ rewrite would not find), and a 2-D MatMul + Add is fused into
    a float Gemm by ONNX Runtime before its QDQ fusions could give it an integer kernel."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().T.contiguous())
        self.register_buffer("bias", linear.bias.detach().clone())

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden.unsqueeze(1) @ self.weight + self.bias).squeeze(1)


def _with_dense_linears(model: nn.Module, input_grids: bool) -> nn.Module:
    """A copy whose linears of a storage kind not traced as it is (sparse, packed, ...), and packed
    embedding tables, are plain dense ones: the graph holds matrices, not the arithmetic that unpacks them.
    ``input_grids``: a packed linear that rounds its input to an 8-bit grid keeps doing so (else its input
    stays float, for ``runtime.qdq`` to quantize)."""
    model = copy.deepcopy(model)
    for name, block, attribute in packable_linears(model):
        stored = getattr(block, attribute)
        if isinstance(stored, StoredLinear) and not stored.traced_as_is:
            dense = stored.to_dense()
            if name == HEAD_DENSE:
                dense = _AsMatMul(dense)
            if input_grids and isinstance(stored, QuantizedLinear) and stored.input_bits is not None:
                dense = _OnInputGrid(dense, stored.input_scale, stored.input_zero_point)
            setattr(block, attribute, dense)
    embeddings = model.base_model.embeddings
    for name, packed in list(embeddings.named_children()):
        if isinstance(packed, QuantizedEmbedding):
            dense = nn.Embedding.from_pretrained(
                packed.weight.detach().clone(), freeze=True, padding_idx=packed.padding_idx
            )
            setattr(embeddings, name, dense)
    return model


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Only errors from these loggers meanwhile (ONNX Runtime's tools log advice meant for other models)."""
    previous = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def graph_inputs(path: Path) -> list[str]:
    """The input names of an ONNX file."""
    onnx = require("onnx", "reading an ONNX file")
    return [value.name for value in onnx.load(str(path), load_external_data=False).graph.input]


def trace(model: nn.Module, example: dict[str, np.ndarray], path: Path, input_grids: bool = True) -> None:
    """Write the fp32 graph of ``model`` (inputs as :func:`input_names`, batch and sequence dynamic); with
    ``input_grids`` false, packed linears' inputs are not rounded to their 8-bit grids (a QDQ graph's source)."""
    require("onnx", "ONNX export")
    names = input_names(model.config)
    if not (example["attention_mask"] == 0).any():
        raise ValueError("the tracing example must have padding, or the graph loses its attention_mask input")
    wrapper = _Logits(_with_dense_linears(model, input_grids)).eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter(
            "ignore"
        )  # the tracer's note on the padding branch, the legacy exporter's notice
        torch.onnx.export(
            wrapper,
            tuple(torch.from_numpy(example[name]) for name in names),
            str(path),
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    if graph_inputs(path) != names:
        raise RuntimeError(f"the traced graph takes {graph_inputs(path)}, not {names}")


def optimize(source: Path, target: Path) -> dict[str, int]:
    """ONNX Runtime's BERT optimizations (attention, embedding, LayerNorm and GELU fusion) from ``source``
    into ``target``; the counts of fused operators.

    ``num_heads=0, hidden_size=0``: each attention's head count is read from its own reshape, so
    layers pruned to different counts fuse right (a global count is wrong for all but some of them).
    """
    require("onnxruntime", "ONNX export")
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet("fusion_attention", "onnx_model", "onnx_model_bert"):  # it imports its modules by bare names
        optimized = optimize_model(str(source), model_type="bert", num_heads=0, hidden_size=0)
    optimized.save_model_to_file(str(target))
    return {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic quantization: signed int8 weights per output channel, activations quantized per batch.

    The fused operators (``com.microsoft`` domain) defeat ONNX shape inference, so tensors of unknown
    type are declared float.
    """
    onnx = require("onnx", "ONNX int8 export")
    require("onnxruntime", "ONNX int8 export")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet("", "onnxruntime.quantization"):  # "", the root logger: "consider pre-processing"
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
