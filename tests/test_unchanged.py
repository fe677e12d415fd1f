"""What a refactor must leave as it was: folders saved by an earlier main load to the same logits, and every
recipe gives the metrics, structure and logits recorded before (``tests/_golden.py`` records them)."""

import json
from pathlib import Path

import torch
from _golden import RECORD, make_tiny_bert, run_all
from transformers import AutoModelForSequenceClassification

import nlpcompress  # noqa: F401  (registers the compact model)

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_folder_saved_by_main_e1c5c38_loads_to_its_logits():
    """Sparse, low-rank and packed 4- and 3-bit linears and 8-bit word embeddings, as that version stored them."""
    folder = FIXTURES / "compact-e1c5c38"
    expected = json.loads((folder / "expected.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor(expected["input_ids"]),
            attention_mask=torch.tensor(expected["attention_mask"]),
        ).logits
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), rtol=0, atol=1e-6)


def test_recipes_keep_their_tiny_budget_results(tmp_path: Path, minilm_path: str, glue_root: Path):
    """Each recipe in recipes/ on a 6-layer random BERT, 2 steps a stage: same stage metrics, same structure,
    same final logits (within float noise across CPUs) as recorded."""
    recorded = json.loads(RECORD.read_text())
    found = run_all(make_tiny_bert(tmp_path / "tiny", minilm_path), glue_root, tmp_path / "runs")
    assert sorted(found) == sorted(recorded), "a recipe was added or removed: run python tests/_golden.py"
    for name, expected in recorded.items():
        got = found[name]
        assert got["stages"] == expected["stages"], name
        assert got["structure"] == expected["structure"], name
        torch.testing.assert_close(
            torch.tensor(got["logits"]), torch.tensor(expected["logits"]), rtol=1e-3, atol=1e-4, msg=name
        )
