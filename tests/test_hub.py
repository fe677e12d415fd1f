"""Push to the Hub, against a Hub that the test starts on 127.0.0.1; the model card's metadata."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _fake_hub import FakeHub

TOKEN = "hf_test_token_that_must_never_be_printed_or_written"


@pytest.fixture
def hub():
    server = FakeHub(TOKEN)
    yield server
    server.close()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = Path(sys.executable).with_name("nlpcompress")
    return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=600, env=env)


def hub_env(hub: FakeHub, tmp_path: Path, token: str | None = TOKEN, offline: str = "0") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": offline}
    env |= {"HF_HUB_DISABLE_TELEMETRY": "1"} | ({"HF_TOKEN": token} if token else {})
    return env


def test_push_uploads_the_run_folder_and_the_token_appears_only_in_headers(hub, finished_run, tmp_path):
    done = cli(
        "push", str(finished_run), "--repo-id", "me/tiny-sst2", "--private", "--revision", "compressed",
        "--commit-message", "first upload", env=hub_env(hub, tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert hub.repos["me/tiny-sst2"]["private"] is True
    [commit] = hub.commits
    assert commit["revision"] == "compressed" and commit["message"] == "first upload"
    local = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    assert commit["files"] == {name: data for name, data in local.items()}  # every file, byte for byte
    assert f"{hub.url}/me/tiny-sst2/commit/" in done.stdout
    for request in hub.requests:
        assert request["headers"].get("Authorization") in (None, f"Bearer {TOKEN}")
        assert TOKEN.encode() not in request["body"]
    assert TOKEN not in done.stdout + done.stderr
    assert all(TOKEN.encode() not in data for data in local.values())


def test_push_uploads_the_deployed_exports_and_leaves_scratch_behind(hub, finished_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    exported = {"onnx/model.onnx": b"onnx", "onnx/export.json": b"{}", "openvino/model.xml": b"<xml/>",
                "openvino/model.bin": b"bin"}  # fmt: skip
    scratch = {".onnx-partial-1/traced.onnx": b"half", "work/finetune/checkpoint-1/optimizer.pt": b"state"}
    for name, data in {**exported, **scratch}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    done = cli("push", str(folder), "--repo-id", "me/deployed", env=hub_env(hub, tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    [commit] = hub.commits
    assert all(commit["files"].get(name) == data for name, data in exported.items())
    assert not any(name in commit["files"] for name in scratch)


@pytest.mark.parametrize(
    ("token", "offline", "expected"),
    [
        (None, "0", "no Hugging Face token: set HF_TOKEN"),
        (TOKEN, "1", "pushing needs the Hub, but HF_HUB_OFFLINE"),
    ],
    ids=["no-token", "offline"],
)
def test_push_without_a_token_or_offline_is_one_line(hub, finished_run, tmp_path, token, offline, expected):
    done = cli("push", str(finished_run), "--repo-id", "me/x", env=hub_env(hub, tmp_path, token, offline))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and expected in done.stderr
    assert hub.commits == []


def test_a_recipe_that_pushes_checks_it_can_before_training_then_pushes(
    hub, tmp_path, tiny_bert_dir, glue_root
):
    recipe = {
        "model": str(tiny_bert_dir), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 32,
        "max_eval_samples": 16, "max_length": 32, "output_dir": str(tmp_path / "out"),
        "training": {"max_steps": 1, "per_device_train_batch_size": 8}, "stages": [{"type": "finetune"}],
        "push_to_hub": {"repo_id": "me/from-recipe"},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    refused = cli("run", str(path), "--no-progress", env=hub_env(hub, tmp_path, token=None))
    assert refused.returncode == 2 and "no Hugging Face token" in refused.stderr
    assert not (tmp_path / "out").exists()  # refused before any work
    done = cli("run", str(path), "--no-progress", env=hub_env(hub, tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pushed to " in done.stdout and hub.commits[0]["repo"] == "me/from-recipe"
    assert "model.safetensors" in hub.commits[0]["files"]


def test_the_model_card_metadata_parses(finished_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(finished_run / "README.md")
    results = card.data.eval_results
    metrics = json.loads((finished_run / "results.json").read_text())["metrics"]
    assert results and results[0].dataset_type == "nyu-mll/glue" and results[0].dataset_config == "sst2"
    assert {r.metric_type: r.metric_value for r in results} == pytest.approx(
        {k: round(v, 4) for k, v in metrics.items()}
    )
    assert card.data.library_name == "transformers" and "nlpcompress" in card.data.tags
    assert results[0].dataset_split == "validation[:48]"  # the tiny run scored the first 48 rows
    assert "the first 48 validation rows" in card.text


def test_the_cards_loading_code_runs_without_asking_to_trust_code_for_the_tokenizer(finished_run):
    card = (finished_run / "README.md").read_text()
    code = (
        card.split("```python\n", 1)[1].split("```", 1)[0].replace("<this folder or repo>", str(finished_run))
    )
    assert "from transformers import AutoModelForSequenceClassification, BertTokenizer" in code
    code += "print(type(model).__name__, tokenizer('a film')['input_ids'])\n"
    done = subprocess.run(
        [sys.executable, "-c", code], input="", capture_output=True, text=True, cwd=finished_run, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Do you wish to run the custom code" not in done.stdout + done.stderr
    assert done.stdout.strip().startswith("CompactBertForSequenceClassification [101, ")


def test_the_license_comes_from_the_base_models_own_card(tmp_path, finished_run):
    from nlpcompress.card import base_license

    assert base_license("minilm-l6") == "apache-2.0"  # all-MiniLM-L6-v2's card
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# a model\n")
    assert base_license(str(tmp_path)) == "mit"
    assert base_license(str(finished_run)) is None  # its base, a tiny random model, has no card
    assert base_license("someone/not-on-this-machine") is None
