"""The model card (README.md) written beside every saved run, ready for the Hub."""

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.repocard import metadata_load

from nlpcompress.measure import BATCH_1, BATCH_32
from nlpcompress.models import HUB_IDS, resolve_model
from nlpcompress.recipe import Recipe
from nlpcompress.structure import layer_table, summary_line
from nlpcompress.user_data import OWN_VALIDATION_SPLIT


def _dataset(recipe: Recipe, results: dict[str, Any]) -> dict[str, Any]:
    """The model index's dataset: a GLUE config, or the user's data (a Hub id, or local files named as such)."""
    task = results["task"]
    if isinstance(recipe.task, str):
        return {
            "type": "nyu-mll/glue",
            "name": f"GLUE {task.upper()}",
            "config": task,
            "split": _split(recipe, results),
        }
    block = recipe.task
    hub = isinstance(block.data, str) and not Path(block.data).expanduser().exists()
    dataset = {"type": block.data if hub else "local", "name": task, "split": _split(recipe, results)}
    return dataset | ({"config": block.config} if block.config else {})


def _data_words(recipe: Recipe, results: dict[str, Any]) -> str:
    """Which data the scores are on, in words."""
    if isinstance(recipe.task, str):
        return f"GLUE {results['task'].upper()}"
    data = results.get("data", {})
    return f"{results['task']} (`{data.get('source')}`, scored on {data.get('validation')})"


def _front_matter(recipe: Recipe, results: dict[str, Any]) -> str:
    dataset = _dataset(recipe, results)
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["nlpcompress", "model-compression", *sorted({s["type"] for s in results["stages"]})],
        "model-index": [
            {
                "name": Path(recipe.output_dir).name,
                "results": [
                    {
                        "task": {"type": "text-classification", "name": "Text Classification"},
                        "dataset": dataset,
                        "metrics": [
                            {"type": name, "value": round(value, 4)}
                            for name, value in results["metrics"].items()
                        ],
                    }
                ],
            }
        ],
    }
    if dataset["type"] != "local":
        meta["datasets"] = [dataset["type"]]
    if recipe.model in HUB_IDS or not Path(recipe.model).exists():
        meta["base_model"] = HUB_IDS.get(recipe.model, recipe.model)
    license_ = base_license(recipe.model)
    if license_:
        meta["license"] = license_
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def base_license(model: str) -> str | None:
    """The license in the base model's own card (a short name's package, a local folder, an earlier run);
    None when no local card names one (a Hub id is not fetched)."""
    readme = Path(resolve_model(model)) / "README.md"
    license_ = (metadata_load(readme) or {}).get("license") if readme.is_file() else None
    return str(license_) if license_ else None


def _partial(recipe: Recipe, results: dict[str, Any]) -> bool:
    """Whether only the first ``max_eval_samples`` rows were scored."""
    rows = results.get("eval_rows", {})
    return recipe.max_eval_samples is not None and any(n == recipe.max_eval_samples for n in rows.values())


def _split(recipe: Recipe, results: dict[str, Any]) -> str:
    """The scored split in Hub notation: ``validation``, or ``validation[:N]`` when only the first N rows
    were; for the user's data without a validation split, the rows held out of train, in words."""
    partial = _partial(recipe, results)
    held_out = results.get("data", {}).get("validation", OWN_VALIDATION_SPLIT)
    if held_out != OWN_VALIDATION_SPLIT:
        return f"the first {recipe.max_eval_samples} rows of {held_out}" if partial else held_out
    return f"validation[:{recipe.max_eval_samples}]" if partial else "validation"


def _split_words(recipe: Recipe, results: dict[str, Any]) -> str:
    return (
        f"the first {recipe.max_eval_samples} validation rows" if _partial(recipe, results) else "validation"
    )


def _stage_rows(results: dict[str, Any]) -> str:
    rows = ["| stage | type | metrics | wall time |", "|---|---|---|---|"]
    for stage in results["stages"]:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in stage["metrics"].items())
        rows.append(f"| {stage['name']} | {stage['type']} | {metrics} | {stage['wall_s']:.0f} s |")
    return "\n".join(rows)


def _input_model_line(results: dict[str, Any]) -> str:
    given = results.get("input_model")
    if given is None:
        return ""
    metrics = ", ".join(f"{k} = {v:.4f}" for k, v in given["metrics"].items())
    return f"\nThe model it was compressed from scored {metrics} on the same rows (retention {given['retention']}).\n"


def _teacher_notes(results: dict[str, Any]) -> str:
    """What the card must say about the teachers: the override of the teacher check, and weak teachers."""
    lines = []
    if results.get("overrides", {}).get("allow_untrained_teacher"):
        lines.append(
            "**Research setting:** `allow_untrained_teacher: true` let a stage distil from a teacher whose "
            "classification head was never trained for this task."
        )
    for stage in results["stages"]:
        warning = stage.get("teacher", {}).get("warning")
        if warning:
            lines.append(f"**Warning:** the teacher of stage `{stage['name']}` {warning}")
    return "\n".join(f"\n{line}" for line in lines) + ("\n" if lines else "")


def render_model_card(recipe: Recipe, results: dict[str, Any], tokenizer_class: str = "AutoTokenizer") -> str:
    """The card; ``tokenizer_class`` is the saved tokenizer's own class, which loads without the custom model
    code (``AutoTokenizer`` would first read config.json and ask whether to trust that code)."""
    structure = results["structure"]
    params = structure["params"]
    table = "\n".join(layer_table(structure, markdown=True))
    latency = results["latency_ms"]
    metrics = ", ".join(f"{k} = {v:.4f}" for k, v in results["metrics"].items())
    return f"""{_front_matter(recipe, results)}
# {Path(recipe.output_dir).name}

`{recipe.model}` compressed with [nlpcompress](https://pypi.org/project/nlpcompress/) on
{_data_words(recipe, results)}: {metrics} ({_split_words(recipe, results)}).
{_teacher_notes(results)}{_input_model_line(results)}
| | |
|---|---|
| parameters (total / encoder / embeddings / non-zero) | {params["total"]:,} / {params["encoder"]:,} / {params["embeddings"]:,} / {params["nonzero"]:,} |
| size on disk | {results["size_bytes"] / 1e6:.1f} MB |
| structure | {summary_line(structure)} |
| CPU latency, seq 128 (batch 1 / batch 32) | {latency[BATCH_1]:.1f} ms / {latency[BATCH_32]:.1f} ms ({latency["threads"]} threads) |
{_runtime_row(results)}
## Layers

{table}

## Stages

{_stage_rows(results)}

The full recipe is in `recipe.yaml`; rerun it with `nlpcompress run recipe.yaml`.

## Use

```python
from transformers import AutoModelForSequenceClassification, {tokenizer_class}

# With nlpcompress installed (`import nlpcompress` registers the model class):
#   import nlpcompress
# Without it, the modeling code shipped in this folder is used:
model = AutoModelForSequenceClassification.from_pretrained("<this folder or repo>", trust_remote_code=True)
tokenizer = {tokenizer_class}.from_pretrained("<this folder or repo>")
```
"""


def _runtime_row(results: dict[str, Any]) -> str:
    """The exported runtime's row (its files, accuracy through it, its speedup over PyTorch fp32), if any."""
    runtime = results.get("runtime")
    if runtime is None:
        return ""
    folder = runtime["export"]["format"]
    files = ", ".join(f"`{folder}/{name}`" for name in runtime["export"]["files"])
    score = runtime["score"]
    return (
        f"| {runtime['backend']} runtime ({files}) | score {score:.4f}; "
        f"{runtime[f'speedup_{BATCH_1}']:.2f}× / {runtime[f'speedup_{BATCH_32}']:.2f}× PyTorch fp32 "
        f"at batch 1 / 32 on {runtime['cpu']['model']} |\n"
    )


def write_model_card(folder: Path, recipe: Recipe, results: dict[str, Any]) -> None:
    tokenizer_config = folder / "tokenizer_config.json"
    saved = json.loads(tokenizer_config.read_text()) if tokenizer_config.is_file() else {}
    tokenizer_class = saved.get("tokenizer_class") or "AutoTokenizer"
    (folder / "README.md").write_text(render_model_card(recipe, results, tokenizer_class))
