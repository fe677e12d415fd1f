"""Quantization that is the runtime's (#23): QAT learns 8-bit input grids beside per-channel weight grids, the
saved model computes on them, and the int8 export is a QDQ graph with the model's own codes and scales that
ONNX Runtime runs with an integer kernel per linear and that matches the quantized PyTorch model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _require import require_module
from _runs import write_recipe
from _tiny import logits_without_nlpcompress, tiny_model

from nlpcompress import cli
from nlpcompress.compact.quantized import QuantizedLinear, fake_quantize_input
from nlpcompress.errors import UserError
from nlpcompress.models import load_model_dir
from nlpcompress.quant.qat import (
    attach_input_ranges,
    attach_quantizers,
    calibrate_input_ranges,
    store_quantized,
)
from nlpcompress.quant.quantizers import InputRange, input_grid
from nlpcompress.runtime import qdq
from nlpcompress.runtime.export import export_model
from nlpcompress.runtime.inputs import example_batches, random_batches

onnx = require_module("onnx")
ort = require_module("onnxruntime")

BITS = {"layers.0": 4, "layers.1": 8}


def quantized_tiny(groups: str = "channel", learn_inputs: bool = True) -> torch.nn.Module:
    """The tiny model with 4/8-bit weights; with ``learn_inputs``, input grids calibrated on random rows."""
    model = tiny_model()
    attach_quantizers(model, BITS, groups=groups, embedding_bits=8, position_embedding_bits=8, head_bits=8)
    if learn_inputs:
        ranges = attach_input_ranges(model)
        batches = random_batches(model.config, 16, 4, 32).batches
        calibrate_input_ranges(
            model, ranges, ({k: torch.from_numpy(v) for k, v in b.items()} for b in batches)
        )
    store_quantized(model)
    return model.eval()


def assert_computes_as(folder: Path, model: torch.nn.Module) -> None:
    """``folder``'s ONNX int8 file gives ``model``'s logits on the export's verification rows: exactly (1e-4)
    on nearly every row; a row may differ by one 8-bit input code that lies on a rounding boundary, where
    the order of float operations decides (a small logit difference, never a different label)."""
    batch = example_batches(folder, model.config, None, "validation", None, 64, 64, 128).batches[0]
    session = ort.InferenceSession(
        str(folder / "onnx" / "model_int8.onnx"), providers=["CPUExecutionProvider"]
    )
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    rows = np.abs(session.run(None, batch)[0] - reference).max(axis=1)
    assert (rows < 1e-4).mean() >= 0.9 and rows.max() < 0.05, np.sort(rows)[-8:]


def test_a_channel_grid_is_its_own_int8_grid_and_a_column_grid_is_named_inexact():
    model = quantized_tiny("head", learn_inputs=False)
    for name, layer in qdq.quantized_linears(model).items():
        grid = qdq.weight_grid(layer)
        if name.endswith("attention.output"):  # per head along the input: no per-output-channel equivalent
            assert not grid.exact
            assert np.abs(grid.codes.astype(np.float32) * grid.scales - layer.weight.T.numpy()).max() > 0
        else:
            assert grid.exact and grid.codes.dtype == np.int8
            assert np.array_equal(
                grid.codes.astype(np.float32) * grid.scales, layer.weight.detach().T.numpy()
            )
    channel = quantized_tiny("channel", learn_inputs=False)
    assert all(qdq.weight_grid(layer).exact for layer in qdq.quantized_linears(channel).values())


def test_the_input_grid_rounds_as_onnx_quantize_and_dequantize_do():
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    scale, zero_point = input_grid(torch.tensor(-1.3), torch.tensor(2.1))
    values = torch.cat(
        [torch.linspace(-2, 3, 2001), (torch.arange(-40, 60) - zero_point) * scale + scale / 2]
    )
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None])],
        [
            numpy_helper.from_array(np.array(scale.item(), np.float32), "s"),
            numpy_helper.from_array(np.array(int(zero_point), np.uint8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": values.numpy()})[0]
    assert np.array_equal(fake_quantize_input(values, scale, zero_point).numpy(), expected)
    assert fake_quantize_input(torch.zeros(3), scale, zero_point).eq(0).all()  # zero stays exactly zero


def test_an_input_range_calibrates_to_min_max_then_follows_training_batches_and_is_fixed_in_eval():
    input_range = InputRange(momentum=0.5)
    input_range.calibrating = True
    input_range(torch.tensor([-1.0, 2.0]))
    input_range(torch.tensor([-3.0, 1.0]))
    assert (input_range.low.item(), input_range.high.item()) == (-3.0, 2.0)
    input_range.calibrating = False
    input_range.train()
    input_range(torch.tensor([-1.0, 4.0]))
    assert (input_range.low.item(), input_range.high.item()) == (-2.0, 3.0)
    input_range.eval()
    input_range(torch.tensor([-10.0, 10.0]))
    assert (input_range.low.item(), input_range.high.item()) == (-2.0, 3.0)
    hidden = torch.tensor([0.3, 1.7], requires_grad=True)
    input_range.train()
    input_range(hidden).sum().backward()
    assert torch.equal(hidden.grad, torch.ones(2))  # straight through


def test_a_saved_model_keeps_its_input_grids_and_computes_on_them(tmp_path: Path):
    model = quantized_tiny()
    layer = model.compact_bert.encoder.layers[0].attention.query
    assert isinstance(layer, QuantizedLinear) and layer.input_bits == 8
    batch = {k: torch.from_numpy(v) for k, v in random_batches(model.config, 4, 4, 32).batches[0].items()}
    model.save_pretrained(tmp_path)
    assert (
        json.loads((tmp_path / "config.json").read_text())["stored_linears"]["layers.0.attention.query"][
            "input_bits"
        ]
        == 8
    )
    reloaded = load_model_dir(str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)
        float_inputs = quantized_tiny(learn_inputs=False)(**batch).logits
    assert not torch.allclose(model(**batch).logits, float_inputs, atol=1e-6)  # the grids are really used
    without = logits_without_nlpcompress(tmp_path, batch)  # the folder's own modeling files, remote code
    assert torch.allclose(without, model(**batch).logits, atol=1e-6)


def test_the_onnx_int8_export_runs_the_models_own_codes_on_integer_kernels_and_matches_it(tmp_path: Path):
    model = quantized_tiny()
    model.save_pretrained(tmp_path)
    record = export_model(tmp_path, "onnx", int8=True)
    quantization = record["quantization"]
    assert (
        quantization["activations"]
        == "unsigned 8 bits per tensor, grids learned in quantization-aware training"
    )
    assert quantization["float_fallbacks"] == []
    assert {facts["kernel"] for facts in quantization["linears"].values()} == {"MatMulIntegerToFloat"}
    assert len(quantization["linears"]) == 12 + 1  # the encoder's and the head's dense matrix
    assert all(facts["weight_grid"].startswith("exact") for facts in quantization["linears"].values())
    assert record["files"]["model_int8.onnx"]["verification"]["label_agreement"] == 1.0
    assert_computes_as(tmp_path, model)
    fp32 = record["files"]["model.onnx"][
        "verification"
    ]  # rounding at grid boundaries moves with fused floats
    assert (
        fp32["criterion"] == "int8 (the model rounds its inputs to 8-bit grids)" and "label_agreement" in fp32
    )
    graph = onnx.load(str(tmp_path / "onnx" / "model_int8.onnx")).graph
    codes = {t.name: t for t in graph.initializer if t.name.endswith("weight_codes")}
    assert len(codes) == 13 and {t.data_type for t in codes.values()} == {onnx.TensorProto.INT8}
    tables = {t.name: t for t in graph.initializer if t.name.endswith("_embeddings.codes")}
    assert set(tables) == {f"{name}_embeddings.codes" for name in ("word", "position", "token_type")}
    assert {t.data_type for t in tables.values()} == {onnx.TensorProto.INT8}  # every table ships at 8 bits
    matrices = {
        t.name
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and min(t.dims) > 1
    }
    assert matrices == {"model.classifier.out_proj.weight"}  # only the (labels x hidden) projection is float
    head = onnx.numpy_helper.to_array(codes["classifier.dense.weight_codes"])
    assert np.array_equal(head, model.classifier.dense.codes().T.numpy())
    stored = onnx.numpy_helper.to_array(codes["layers.0.ffn.intermediate.weight_codes"])
    assert np.array_equal(stored, model.compact_bert.encoder.layers[0].ffn.intermediate.codes().T.numpy())
    assert np.abs(stored).max() <= 7  # a 4-bit layer's codes, as trained
    lines = cli.deployed_lines(tmp_path)
    assert any(
        line.startswith("deployable on onnxruntime-int8: onnx/model_int8.onnx")
        and line.endswith("; 13 of 13 quantized linears on integer kernels")
        for line in lines
    ), lines


def test_a_model_without_learned_input_grids_is_calibrated_at_export_and_says_so(tmp_path: Path):
    quantized_tiny(learn_inputs=False).save_pretrained(tmp_path)
    record = export_model(tmp_path, "onnx", int8=True, calibration_samples=32)
    assert record["quantization"]["activations"] == (
        "unsigned 8 bits per tensor, grids calibrated (min/max) on 32 random token sequences of 8 to 32 tokens"
    )
    assert record["files"]["model_int8.onnx"]["verification"]["label_agreement"] == 1.0
    calibrated = load_model_dir(str(tmp_path)).eval()  # the export's calibration, repeated on the same rows
    qdq.calibrate_inputs(
        calibrated, example_batches(tmp_path, calibrated.config, None, "train", None, 32, 1, 128).batches
    )
    assert_computes_as(tmp_path, calibrated)


def test_an_export_that_does_not_compute_what_the_quantized_model_does_is_refused(tmp_path, monkeypatch):
    quantized_tiny().save_pretrained(tmp_path)
    real = qdq.weight_grid

    def off_grid(layer):
        grid = real(layer)
        return qdq.WeightGrid(grid.codes, grid.scales * 1.5, grid.exact)

    monkeypatch.setattr(qdq, "weight_grid", off_grid)
    with pytest.raises(UserError, match=r"model_int8\.onnx does not match the PyTorch model") as error:
        export_model(tmp_path, "onnx", int8=True)
    assert "\n" not in str(error.value) and not (tmp_path / "onnx").exists()


def test_the_openvino_int8_export_reads_the_same_grids_as_int8(tmp_path: Path):
    require_module("openvino")
    quantized_tiny().save_pretrained(tmp_path)
    record = export_model(tmp_path, "openvino", int8=True)
    precisions = record["quantization"]["openvino_matmul_precisions"]
    assert precisions.get("u8", 0) + precisions.get("i8", 0) >= 12  # every encoder linear on an int8 kernel


def test_a_quantize_stage_with_activation_bits_saves_its_learned_grids(tmp_path, tiny_bert_dir, glue_root):
    stages = [
        {"type": "finetune"},
        {
            "type": "quantize",
            "method": "uniform",
            "avg_bits": 4,
            "groups": "channel",
            "activation_bits": 8,
            "calibration_samples": 32,
        },
    ]
    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root), stages=stages)
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    folder = tmp_path / "out"
    results = json.loads((folder / "results.json").read_text())
    assert results["stages"][1]["activation_bits"] == 8
    entries = json.loads((folder / "config.json").read_text())["stored_linears"]
    assert {entry["input_bits"] for entry in entries.values()} == {8}
    assert cli.main(["eval", str(folder), "--no-progress"]) == 0
