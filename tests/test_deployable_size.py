"""One definition of deployable size (#23 item 4): the bytes a user ships to run a model on a backend,
its config and tokenizer included, the run's records (results, card, recipe, artifacts) not."""

import shutil

from nlpcompress.measure import size_on_disk
from nlpcompress.runtime.backends import deployable_bytes, deployable_files


def test_the_deployable_files_of_each_backend(finished_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model_int8.onnx").write_bytes(b"x" * 1000)
    (folder / "onnx" / "export.json").write_text("{}")
    (folder / "openvino").mkdir()
    (folder / "openvino" / "model.xml").write_bytes(b"x" * 300)
    (folder / "openvino" / "model.bin").write_bytes(b"x" * 700)
    (folder / "artifacts").mkdir(exist_ok=True)
    (folder / "artifacts" / "plot.png").write_bytes(b"x" * 5000)

    support = {"config.json", "tokenizer.json", "tokenizer_config.json"}
    assert support <= {f.name for f in folder.iterdir()}  # what the run saved beside the model
    shipped = {f.relative_to(folder).as_posix() for f in deployable_files(folder, "torch")}
    code = {f.name for f in folder.glob("*.py")}
    assert shipped == {"model.safetensors", *code, *support}  # not results.json, README.md, recipe.yaml
    assert (
        size_on_disk(folder)
        == deployable_bytes(folder, "torch")
        == sum((folder / name).stat().st_size for name in shipped)
    )
    config_and_tokenizer = sum((folder / name).stat().st_size for name in support)
    assert deployable_bytes(folder, "onnxruntime-int8") == 1000 + config_and_tokenizer
    assert deployable_bytes(folder, "openvino") == 300 + 700 + config_and_tokenizer
    assert {f.name for f in deployable_files(folder, "openvino")} == {"model.xml", "model.bin", *support}
