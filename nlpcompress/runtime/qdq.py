"""A quantized model's int8 graph with its own scales: QuantizeLinear/DequantizeLinear (QDQ) pairs that ONNX
Runtime fuses into integer kernels and OpenVINO reads as int8.

Every packed linear (``QuantizedLinear``: the encoder's, and the head's dense matrix under ``head_bits``)
becomes its stored integer codes, kept as int8, with a DequantizeLinear per output channel: a b-bit code on
a grid with one scale per output row (or per group of rows: Q-BERT's per-head ranges of query, key and
value) is exactly an int8 code with that scale, so the runtime computes with the trained weights, not with
a re-quantization of them. A grid whose groups run
along the input (the attention output under ``groups: head``) has no per-output-channel equivalent; such
a matrix is re-quantized to 8 bits per output channel from its dequantized weight and named as not exact.
Each linear's input gets a QuantizeLinear/DequantizeLinear pair, unsigned 8 bits with the range of that
input (ONNX Runtime's static int8 for activations, as Q-BERT quantizes activations to 8 bits): learned in
quantization-aware training where the model carries it, else calibrated here on task rows. Packed
embedding tables (word, position, token type) are stored as their int8 codes and gathered before scaling,
so they ship at 8 bits.

``integer_kernels`` then reads the graph ONNX Runtime actually runs (its optimized model) and names the
operator that consumes each linear's codes: an integer kernel (``MatMulIntegerToFloat``, ``QLinearMatMul``,
...) or a fall-back to float.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nlpcompress.compact.quantized import QuantizedEmbedding, QuantizedLinear
from nlpcompress.quant.quantizers import InputRange
from nlpcompress.runtime.extras import require
from nlpcompress.surgery import packable_linears

INT8_MAX = 127
# Operators whose GEMM runs on integer inputs (ONNX Runtime's CPU kernels after its QDQ fusions).
INTEGER_OPS = frozenset(
    {"MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm", "QAttention"}
)


@dataclass(frozen=True)
class WeightGrid:
    """What the graph stores for one linear: (in, out) int8 codes, one float32 scale per output channel,
    and whether ``codes · scales`` is the trained weight exactly."""

    codes: np.ndarray
    scales: np.ndarray
    exact: bool


def quantized_linears(model: nn.Module) -> dict[str, QuantizedLinear]:
    """The model's packed linears by config name (``layers.<i>.<block>.<linear>``, ``classifier.dense``)."""
    found = {}
    for name, block, attribute in packable_linears(model):
        layer = getattr(block, attribute)
        if isinstance(layer, QuantizedLinear):
            found[name] = layer
    return found


@torch.no_grad()
def weight_grid(layer: QuantizedLinear) -> WeightGrid:
    """The layer's weight on a per-output-channel int8 grid: its own codes and scales when its groups are
    rows (exact), else an 8-bit re-quantization per output row of its dequantized weight."""
    if layer.group_dim == 0:
        scales = layer.scales.float().repeat_interleave(layer.group_size)
        return WeightGrid(layer.codes().T.contiguous().numpy(), scales.numpy(), exact=True)
    weight = layer.weight.float()
    scales = (weight.abs().amax(dim=1) / INT8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    codes = (weight / scales[:, None]).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return WeightGrid(codes.T.contiguous().numpy(), scales.numpy(), exact=False)


@torch.no_grad()
def calibrate_inputs(model: nn.Module, batches: Iterable[dict[str, np.ndarray]]) -> list[str]:
    """Give every packed linear without an input grid one (post-training static quantization): the
    unsigned 8-bit grid of the smallest and largest value its input takes on ``batches`` (padded positions
    count: the graph computes them too). The model then computes as its int8 export will; the names of the
    linears calibrated here (the others learned theirs in quantization-aware training)."""
    missing = {name: layer for name, layer in quantized_linears(model).items() if layer.input_bits is None}
    observers = {name: InputRange() for name in missing}
    for observer in observers.values():
        observer.calibrating = True
    handles = [
        layer.register_forward_pre_hook(lambda _module, args, seen=observers[name]: seen.observe(args[0]))
        for name, layer in missing.items()
    ]
    try:
        for batch in batches if missing else ():
            model(**{key: torch.from_numpy(value) for key, value in batch.items()})
    finally:
        for handle in handles:
            handle.remove()
    for name, layer in missing.items():
        layer.quantize_input(*observers[name].grid())
    return sorted(missing)


class _Graph:
    """An ONNX graph being rewritten: initializers by name, the consumers of a tensor, quantized inputs."""

    def __init__(self, model):
        self.onnx = require("onnx", "QDQ export")
        self.model = model
        self.graph = model.graph
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        self.quantized: dict[tuple[str, float, int], str] = {}  # (tensor, scale, zero point) -> dequantized

    def consumers(self, tensor: str) -> list:
        return [node for node in self.graph.node if tensor in node.input]

    def find_initializer(self, array: np.ndarray) -> str | None:
        """The float initializer holding exactly ``array`` (the traced model's copy of a weight)."""
        numpy_helper = self.onnx.numpy_helper
        for name, tensor in self.initializers.items():
            same_shape = tuple(tensor.dims) == array.shape and tensor.data_type == self.onnx.TensorProto.FLOAT
            if same_shape and np.array_equal(numpy_helper.to_array(tensor), array):
                return name
        return None

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        tensor = self.onnx.numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = tensor
        return name

    def remove_initializer(self, name: str) -> None:
        self.graph.initializer.remove(self.initializers.pop(name))

    def quantized_input(self, user, source: str, scale: np.float32, zero_point: np.uint8, prefix: str) -> str:
        """``source`` through QuantizeLinear/DequantizeLinear on the given grid, inserted before ``user``; one
        pair per tensor and grid (query, key and value share their input's)."""
        key = (source, float(scale), int(zero_point))
        if key not in self.quantized:
            arguments = [
                self.add_initializer(f"{prefix}.scale", np.array(scale, dtype=np.float32)),
                self.add_initializer(f"{prefix}.zero_point", np.array(zero_point, dtype=np.uint8)),
            ]
            helper = self.onnx.helper
            quantized, restored = f"{prefix}/quantized", f"{prefix}/dequantized"
            self.insert_before(
                user,
                [
                    helper.make_node(
                        "QuantizeLinear", [source, *arguments], [quantized], name=f"{quantized}_node"
                    ),
                    helper.make_node(
                        "DequantizeLinear", [quantized, *arguments], [restored], name=f"{restored}_node"
                    ),
                ],
            )
            self.quantized[key] = restored
        return self.quantized[key]

    def insert_before(self, anchor, nodes: list) -> None:
        """``nodes`` placed just before ``anchor`` (the graph stays topologically sorted)."""
        index = list(self.graph.node).index(anchor)
        for offset, node in enumerate(nodes):
            self.graph.node.insert(index + offset, node)


def _quantize_linear(graph: _Graph, name: str, layer: QuantizedLinear) -> dict:
    """Replace the traced float weight of ``layer`` by its int8 codes and a per-channel DequantizeLinear;
    quantize the input of every MatMul that uses it. The record of what was stored."""
    helper = graph.onnx.helper
    dense = layer.weight.detach().float().T.contiguous().numpy()
    weight = graph.find_initializer(dense)
    if weight is None:
        raise RuntimeError(f"the traced graph holds no initializer equal to the weight of {name}")
    matmuls = [node for node in graph.consumers(weight) if node.op_type == "MatMul"]
    if not matmuls:
        raise RuntimeError(f"no MatMul consumes the weight of {name} in the traced graph")
    grid = weight_grid(layer)
    codes = graph.add_initializer(f"{name}.weight_codes", grid.codes)
    graph.add_initializer(f"{name}.weight_scales", grid.scales.astype(np.float32))
    graph.add_initializer(f"{name}.weight_zero_points", np.zeros_like(grid.scales, dtype=np.int8))
    graph.remove_initializer(weight)
    dequantize = helper.make_node(
        "DequantizeLinear",
        [codes, f"{name}.weight_scales", f"{name}.weight_zero_points"],
        [weight],  # the traced name: every consumer reads the dequantized weight unchanged
        name=f"{name}/weight/DequantizeLinear",
        axis=1,
    )
    graph.insert_before(matmuls[0], [dequantize])
    scale, zero_point = np.float32(layer.input_scale), np.uint8(layer.input_zero_point)
    for index, matmul in enumerate(matmuls):
        matmul.input[0] = graph.quantized_input(
            matmul, matmul.input[0], scale, zero_point, f"{name}/input_{index}"
        )
    return {
        "bits": layer.bits,
        "weight_grid": "exact (its own codes and scales)"
        if grid.exact
        else "re-quantized to 8 bits per output channel",
        "input_grid": {"scale": float(scale), "zero_point": int(zero_point)},
        "codes": codes,
    }


def _quantize_embedding(graph: _Graph, name: str, table: QuantizedEmbedding) -> None:
    """The table's Gather reads its int8 codes and scales them after the lookup: the table ships at 8 bits."""
    helper = graph.onnx.helper
    dense = table.weight.detach().float().numpy()
    traced = graph.find_initializer(dense)
    if traced is None:
        raise RuntimeError(f"the traced graph holds no initializer equal to the packed {name}")
    (gather,) = [node for node in graph.consumers(traced) if node.op_type == "Gather"]
    codes = graph.add_initializer(f"{name}.codes", table.codes().numpy())
    scales = graph.add_initializer(f"{name}.scales", table.scales.float().numpy()[:, None])
    graph.remove_initializer(traced)
    ids, output = gather.input[1], gather.output[0]
    gather.input[0], gather.output[0] = codes, f"{name}/codes"
    after = [
        helper.make_node("Cast", [f"{name}/codes"], [f"{name}/codes_float"], to=1),
        helper.make_node("Gather", [scales, ids], [f"{name}/scales"], name=f"{name}/scale_lookup"),
        helper.make_node("Mul", [f"{name}/codes_float", f"{name}/scales"], [output]),
    ]
    index = list(graph.graph.node).index(gather) + 1
    for offset, node in enumerate(after):
        graph.graph.node.insert(index + offset, node)


def write_qdq(traced: Path, target: Path, model: nn.Module) -> dict[str, dict]:
    """``traced`` (the fp32 graph of ``model``) rewritten into ``target`` with every packed linear as int8
    codes + QDQ on its input grid and packed embedding tables as int8; per linear, what was stored."""
    onnx = require("onnx", "QDQ export")
    graph = _Graph(onnx.load(str(traced)))
    linears = quantized_linears(model)
    missing = sorted(name for name, layer in linears.items() if layer.input_bits is None)
    if missing:
        raise ValueError(f"no input grid on {', '.join(missing)}: calibrate_inputs first")
    record = {name: _quantize_linear(graph, name, layer) for name, layer in linears.items()}
    for name, table in model.base_model.embeddings.named_children():
        if isinstance(table, QuantizedEmbedding):
            _quantize_embedding(graph, name, table)
    onnx.checker.check_model(graph.model)
    onnx.save(graph.model, str(target))
    return record


def integer_kernels(path: Path, codes: dict[str, str]) -> dict[str, str]:
    """Per linear (name -> its codes' initializer), the operator that consumes its codes in the graph ONNX
    Runtime runs after its optimizations: an integer kernel, or ``float (<op>)`` where it fell back."""
    onnx = require("onnx", "QDQ export")
    ort = require("onnxruntime", "QDQ export")
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(options.optimized_model_filepath).graph.node
    kernels = {}
    for name, initializer in codes.items():
        users = [node.op_type for node in nodes if initializer in node.input]
        integer = [op for op in users if op in INTEGER_OPS]
        kernels[name] = integer[0] if integer else f"float ({', '.join(users) or 'constant-folded'})"
    return kernels
