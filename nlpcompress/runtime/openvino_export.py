"""ONNX to OpenVINO IR (fp32), and int8 by NNCF post-training quantization on calibration batches."""

import logging
from pathlib import Path

import numpy as np

from nlpcompress.runtime.extras import require


def convert(onnx_path: Path, xml_path: Path) -> None:
    """The traced (unfused: OpenVINO reads standard ONNX operators) graph as an fp32 IR."""
    ov = require("openvino", "OpenVINO export")
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)


def quantize_int8(xml_path: Path, calibration: list[dict[str, np.ndarray]], target: Path) -> None:
    """NNCF's post-training int8 quantization (transformer preset) of an IR, calibrated on ``calibration``."""
    ov = require("openvino", "OpenVINO int8 export")
    nncf = require("nncf", "OpenVINO int8 export")
    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(xml_path))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
    )
    ov.save_model(quantized, str(target), compress_to_fp16=False)


def matmul_precisions(xml_path: Path) -> dict[str, int]:
    """How many of the compiled CPU graph's matrix products run in each precision (``u8``/``i8``: integer
    kernels), from OpenVINO's runtime model compiled as the ``openvino-int8`` backend runs it (f32 hint)."""
    ov = require("openvino", "OpenVINO int8 export")
    compiled = ov.Core().compile_model(str(xml_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # as run
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) in ("FullyConnected", "MatMul"):
            precision = str(info["runtimePrecision"].astype(str))
            counts[precision] = counts.get(precision, 0) + 1
    return counts
