"""The CPU runtime: verified ONNX / OpenVINO exports of tiny compact models, the predictors, and the CLI."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _require import require_module
from _tiny import tiny_model

from nlpcompress import cli
from nlpcompress.errors import UserError
from nlpcompress.runtime import BACKENDS, export_model, load_predictor, onnx_export, verify
from nlpcompress.runtime.onnx_export import graph_inputs

onnx = require_module("onnx")
require_module("onnxruntime")

UNEVEN = dict(num_hidden_layers=3, heads_per_layer=[4, 2, 0], intermediate_sizes=[37, 11, 20])


def _padded_batch(vocab: int, rows: int = 5, length: int = 23, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ids with right padding, one row full, one a single token, and token types 0/1."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, length), generator=generator)
    lengths = torch.tensor([length, 1, *torch.randint(2, length, (rows - 2,), generator=generator).tolist()])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    types = (torch.arange(length)[None, :] >= lengths[:, None] // 2).long() * mask
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}


def _saved(tmp_path: Path, **overrides) -> Path:
    folder = tmp_path / "model"
    tiny_model(**overrides).save_pretrained(folder)
    return folder


def _torch_logits(folder: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    return load_predictor(folder, "torch")(**batch).numpy()


def test_onnx_export_of_uneven_layers_matches_pytorch_on_padded_batches(tmp_path):
    folder = _saved(tmp_path, **UNEVEN)
    record = export_model(folder, "onnx", max_length=32)
    path = folder / "onnx" / "model.onnx"
    assert graph_inputs(path) == ["input_ids", "attention_mask", "token_type_ids"]
    # Each attention fused with its own layer's head count; the layer without heads has none to fuse.
    attention = [node for node in onnx.load(str(path)).graph.node if node.op_type == "Attention"]
    assert [next(a.i for a in node.attribute if a.name == "num_heads") for node in attention] == [4, 2]
    assert record["fused_operators"]["Attention"] == 2
    assert record["files"]["model.onnx"]["verification"]["max_abs_diff"] <= verify.FP32_TOLERANCE
    assert (folder / "onnx").stat().st_mode & 0o777 == folder.stat().st_mode & 0o777
    saved = json.loads((folder / "onnx" / "export.json").read_text())
    assert (
        saved["format"] == "onnx" and saved["opset"] == onnx_export.OPSET and saved["versions"]["onnxruntime"]
    )
    predictor = load_predictor(folder, "onnxruntime")
    for rows, length in ((5, 23), (2, 7), (3, 32)):  # shapes the trace never saw
        batch = _padded_batch(50, rows, length)
        np.testing.assert_allclose(predictor(**batch).numpy(), _torch_logits(folder, batch), atol=1e-5)
    single = {"input_ids": torch.tensor([[5, 6, 7, 8, 9, 10, 11]])}  # no mask, no token types given
    np.testing.assert_allclose(predictor(**single).numpy(), _torch_logits(folder, single), atol=1e-5)
    padded = _padded_batch(50)
    unmasked = predictor(
        padded["input_ids"], torch.ones_like(padded["attention_mask"]), padded["token_type_ids"]
    )
    assert not torch.allclose(unmasked, predictor(**padded), atol=1e-3)  # the mask input is used


def test_a_model_without_token_types_exports_two_inputs(tmp_path):
    folder = _saved(tmp_path, type_vocab_size=0, intermediate_sizes=[8, 30])
    export_model(folder, "onnx", max_length=32)
    assert graph_inputs(folder / "onnx" / "model.onnx") == ["input_ids", "attention_mask"]
    batch = _padded_batch(50)
    np.testing.assert_allclose(
        load_predictor(folder, "onnxruntime")(**batch).numpy(), _torch_logits(folder, batch), atol=1e-5
    )


def test_int8_export_agrees_on_labels(tmp_path):
    folder = _saved(tmp_path, **UNEVEN)
    record = export_model(folder, "onnx", int8=True, max_length=32)
    check = record["files"]["model_int8.onnx"]["verification"]
    assert check["label_agreement"] >= verify.INT8_MIN_AGREEMENT and check["max_abs_diff"] > 0
    quantized = onnx.load(str(folder / "onnx" / "model_int8.onnx"))
    assert any(i.data_type == onnx.TensorProto.INT8 for i in quantized.graph.initializer)
    batch = _padded_batch(50, rows=16, length=32)
    labels = load_predictor(folder, "onnxruntime-int8")(**batch).argmax(-1).numpy()
    assert (labels == _torch_logits(folder, batch).argmax(-1)).mean() >= 0.9


def test_a_wrong_graph_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    folder = _saved(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    optimize = onnx_export.optimize

    def corrupted(source, target):
        fused = optimize(source, target)
        graph = onnx.load(str(target))
        bias = next(i for i in graph.graph.initializer if i.name.endswith("classifier.out_proj.bias"))
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 0.01, bias.name))
        onnx.save(graph, str(target))
        return fused

    monkeypatch.setattr(onnx_export, "optimize", corrupted)
    with pytest.raises(UserError, match=r"export refused: model.onnx does not match .* > 0.001"):
        export_model(folder, "onnx", max_length=32)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_refused_int8_keeps_the_earlier_export(tmp_path, monkeypatch):
    folder = _saved(tmp_path)
    export_model(folder, "onnx", max_length=32)
    earlier = (folder / "onnx" / "model.onnx").read_bytes()
    monkeypatch.setattr(verify, "INT8_MIN_AGREEMENT", 1.01)
    with pytest.raises(UserError, match=r"model_int8\.onnx does not match .*labels agree on"):
        export_model(folder, "onnx", int8=True, max_length=32)
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == ["export.json", "model.onnx"]
    assert (folder / "onnx" / "model.onnx").read_bytes() == earlier
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no partial export left


def test_openvino_export_and_its_int8(tmp_path):
    pytest.importorskip("openvino", reason='enable with: pip install -e ".[openvino]"')
    pytest.importorskip("nncf", reason='enable with: pip install -e ".[openvino]"')
    folder = _saved(tmp_path, **UNEVEN)
    record = export_model(folder, "openvino", int8=True, calibration_samples=16, max_length=32)
    assert record["calibration"].startswith("16 random token sequences")
    assert {"model.xml", "model.bin", "model_int8.xml", "model_int8.bin", "export.json"} == {
        p.name for p in (folder / "openvino").iterdir()
    }
    batch = _padded_batch(50)
    np.testing.assert_allclose(
        load_predictor(folder, "openvino")(**batch).numpy(), _torch_logits(folder, batch), atol=1e-4
    )
    assert record["files"]["model_int8.xml"]["verification"]["label_agreement"] >= verify.INT8_MIN_AGREEMENT


def test_bf16_predictor_stays_close_to_fp32(tmp_path):
    folder = _saved(tmp_path, **UNEVEN)
    batch = _padded_batch(50, rows=16)
    bf16 = load_predictor(folder, "torch-bf16")(**batch)
    assert bf16.dtype == torch.float32 and np.abs(bf16.numpy() - _torch_logits(folder, batch)).max() < 0.1


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda f: load_predictor(f, "tensorrt"),
            "unknown backend 'tensorrt'; allowed: torch, torch-bf16, onnxruntime",
        ),
        (lambda f: load_predictor(f, "onnxruntime-int8"), "run: nlpcompress export {f} --format onnx --int8"),
        (lambda f: load_predictor(f, "openvino"), "run: nlpcompress export {f} --format openvino"),
        (lambda f: export_model(f, "tflite"), "unknown export format 'tflite'; allowed: onnx, openvino"),
        (
            lambda f: export_model(f, "onnx", calibration_samples=8),
            "--calibration-samples applies to --int8 exports only",
        ),
        (
            lambda f: export_model(f, "onnx", int8=True, calibration_samples=8),
            "this model has no quantized linears, so its ONNX int8 export is dynamic quantization",
        ),
    ],
    ids=[
        "unknown-backend",
        "missing-int8-export",
        "missing-openvino-export",
        "unknown-format",
        "calibration-for-fp32",
        "calibration-for-dynamic-int8",
    ],
)
def test_bad_runtime_requests_are_one_line(tmp_path, call, expected):
    if expected.endswith("--format openvino"):
        pytest.importorskip(
            "openvino", reason='enable with: pip install -e ".[openvino]"'
        )  # without the extra, the missing package is what the line names
    folder = _saved(tmp_path)
    with pytest.raises(UserError) as error:
        call(folder)
    assert expected.format(f=folder) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("module", "backend", "extra"),
    [("onnxruntime", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino")],
)
def test_a_missing_extra_names_the_install_command(tmp_path, monkeypatch, module, backend, extra):
    folder = _saved(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(UserError, match=rf'backend {backend!r} needs .*pip install "nlpcompress\[{extra}\]"'):
        load_predictor(folder, backend)
    with pytest.raises(UserError, match=rf'pip install "nlpcompress\[{extra}\]"'):
        export_model(folder, backend.replace("onnxruntime", "onnx"))


def test_cli_help_lists_every_backend():
    assert ", ".join(BACKENDS) == cli.BACKENDS_HELP


# ---------------------------------------------------------------- the CLI end to end on real SST-2 rows


@pytest.fixture
def sst2_model(tmp_path, tiny_bert_dir) -> Path:
    """An uneven compact classifier (vocabulary and tokenizer of MiniLM) saved with its tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path / "sst2-model"
    tiny_model(vocab_size=30522, max_position_embeddings=128, **UNEVEN).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    (folder / "results.json").write_text(json.dumps({"task": "sst2"}))
    return folder


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_export_bench_and_eval_through_onnxruntime(sst2_model, glue_root, capsys):
    assert (
        cli.main(
            ["export", str(sst2_model), "--format", "onnx", "--int8", "--data-dir", str(glue_root), "--json"]
        )
        == 0
    )
    record = _json_out(capsys)
    assert record["verified_on"] == "64 sst2 validation examples"
    assert set(record["files"]) == {"model.onnx", "model_int8.onnx"}

    assert (
        cli.main(
            [
                "bench",
                str(sst2_model),
                "--backend",
                "onnxruntime-int8",
                "--repeats",
                "2",
                "--threads",
                "1",
                "--json",
            ]
        )
        == 0
    )
    report = _json_out(capsys)
    assert report["model"]["backend"] == "onnxruntime-int8" and report["baseline"]["backend"] == "torch"
    assert report["model"]["path"] == report["baseline"]["path"] == str(sst2_model.resolve())
    assert report["speedup_bs1_seq128"] > 0 and report["cpu"]["model"] and report["threads"] == 1
    shipped = [sst2_model / "onnx" / "model_int8.onnx", sst2_model / "config.json", sst2_model / "tokenizer.json",
               sst2_model / "tokenizer_config.json"]  # fmt: skip
    assert report["model"]["size_bytes"] == sum(
        f.stat().st_size for f in shipped
    )  # the model, config, tokenizer

    arguments = ["eval", str(sst2_model), "--task", "sst2", "--data-dir", str(glue_root), "--max-eval-samples", "48",
                 "--max-length", "32", "--json", "--no-progress"]  # fmt: skip
    assert cli.main(arguments) == 0
    pytorch = _json_out(capsys)
    assert cli.main([*arguments, "--backend", "onnxruntime"]) == 0
    runtime = _json_out(capsys)
    assert runtime["backend"] == "onnxruntime" and runtime["metrics"] == pytest.approx(
        pytorch["metrics"], abs=1e-9
    )


def test_cli_bench_without_the_export_is_one_line_and_exit_2(sst2_model, capsys):
    assert cli.main(["bench", str(sst2_model), "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run: nlpcompress export {sst2_model} --format onnx" in err[0]


def test_deploy_benchmark_runs_the_model_in_bf16_beside_its_exports(tmp_path):
    from benchmarks.deploy import DYNAMIC, predictors

    folder = _saved(tmp_path, **UNEVEN)
    export_model(folder, "onnx", max_length=32)
    ways = predictors(folder, threads=1, scratch=tmp_path)
    assert set(ways) == {"torch", "torch-bf16", "onnxruntime", DYNAMIC}
    assert ways["torch-bf16"][1] == ways["torch"][1]  # the same files, cast to bf16 at load
    batch = _padded_batch(50, rows=16)
    fp32, bf16 = (ways[name][0](**batch).numpy() for name in ("torch", "torch-bf16"))
    assert 0 < np.abs(bf16 - fp32).max() < 0.1


@pytest.mark.parametrize("file", ["model.onnx", "model.xml"])
def test_per_operator_profile_accounts_for_every_kernel_of_the_runtime(tmp_path, monkeypatch, file):
    import benchmarks.profile_runtime as profile_runtime

    if file.endswith(".xml"):
        pytest.importorskip("openvino", reason='enable with: pip install -e ".[openvino]"')
    folder = _saved(tmp_path, **UNEVEN)
    export_model(folder, "openvino" if file.endswith(".xml") else "onnx", max_length=32)
    monkeypatch.setattr(profile_runtime, "OUT", tmp_path / "profiles")
    profile_runtime.main([str(folder), "--file", file, "--seq", "32", "--passes", "3", "--threads", "1"])
    suffix = "-openvino" if file.endswith(".xml") else ""
    record = json.loads((tmp_path / "profiles" / f"model-{Path(file).stem}{suffix}-bs1.json").read_text())
    operators = record["operators"]
    assert record["runtime"] == ("openvino" if file.endswith(".xml") else "onnxruntime")
    assert sum(op["share"] for op in operators.values()) == pytest.approx(1.0, abs=1e-3)
    assert record["total_us_per_pass"] == pytest.approx(sum(op["us_per_pass"] for op in operators.values()))
    assert list(operators) == sorted(operators, key=lambda op: -operators[op]["us_per_pass"])
    assert any("MatMul" in op or "FullyConnected" in op for op in operators)  # the linears are in it
    if file.endswith(".xml"):
        assert all(op["exec_types"] for op in operators.values())  # each with the kernel that ran it
