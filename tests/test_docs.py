"""The README is a front page a newcomer reads in minutes, the rest lives in docs/: the recipe reference is
generated from the parser's schemas and every key it lists is accepted, every recipe shown in the docs uses
only keys of the reference, every link resolves, and the README's table of recipes is its results file's."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import nlpcompress.stages.builtin  # noqa: F401  (registers the stages)
from benchmarks.glue_report import recipe_table
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.recipe_reference import reference
from nlpcompress.stages import STAGES, parse_stage

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
REFERENCE = (REPO / "docs" / "reference.md").read_text()


def test_the_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.encode()) <= 12_000
    for part in ("## Two commands", "## Compress your own model", "## Use a compressed model", "## Recipes"):
        assert part in text


def test_the_reference_is_what_the_generator_writes():
    assert reference() == REFERENCE, "regenerate: python -m nlpcompress.recipe_reference > docs/reference.md"


def reference_tables() -> dict[str, dict[str, str]]:
    """Per section of the reference (``stage:prune_heads``, ``top``, ``task``, ``recovery`` ...): key -> default."""
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in REFERENCE.splitlines():
        heading = re.match(r"^#+ (.*)$", line)
        if heading:
            title = heading.group(1)
            name = re.match(r"`([a-z_]+):?`", title)
            current = (
                "top"
                if title == "Top-level keys"
                else f"stage:{name.group(1)}"
                if name and name.group(1) in STAGES
                else name.group(1)
                if name
                else "task"
                if title.startswith("`task:`")
                else title
            )
        row = re.match(r"^\| `([a-z0-9_.]+)` \| (.*) \| (.*) \|$", line)
        if row:
            sections.setdefault(current, {})[row.group(1)] = row.group(3)
    return sections


def nested(key: str, value: Any) -> dict:
    """``a.b.c`` = v as ``{a: {b: {c: v}}}``."""
    head, _, rest = key.partition(".")
    return {head: nested(rest, value) if rest else value}


def default_value(text: str) -> Any:
    return yaml.safe_load(text.strip("`"))


def test_every_stage_key_of_the_reference_is_accepted_with_its_default_and_an_unknown_one_is_refused():
    tables = reference_tables()
    for name in STAGES:
        assert f"### `{name}`" in REFERENCE
        keys = tables.get(f"stage:{name}", {})
        top_level = {key for key in keys if "." not in key}
        assert top_level == set(STAGES[name].model_fields) - {"type", "name", "training"}, name
        for key, default in keys.items():
            value = default_value(default) if default != "required" else 1
            try:  # a key alone may miss keys it needs beside it (a rank to factorize); it must be known all the same
                parse_stage({"type": name, **nested(key, value)})
            except ValueError as error:
                assert "unknown key" not in str(error), f"{name}.{key}: {error}"
        with pytest.raises(ValueError, match="not_a_key\n  unknown key"):
            parse_stage({"type": name, "not_a_key": 1})
    assert {"train", "distillation", "distillation.method", "training"} <= set(tables["recovery"])
    parse_stage({"type": "factorize", "embeddings_rank": 8, "recovery": {"distillation": {"method": "kd"}}})


def test_every_top_level_key_of_the_reference_is_a_recipe_key():
    tables = reference_tables()
    base = {"model": "m", "task": "sst2", "output_dir": "out", "stages": [{"type": "finetune"}]}
    for key, default in tables["top"].items():
        if default != "required":
            recipe_from_dict({**base, key: default_value(default)})
    assert {"model", "task", "output_dir", "stages", "export", "push_to_hub"} <= set(tables["top"])
    assert {"name", "data", "text", "label", "metric"} <= set(tables["task"])


def documented_recipes() -> list[tuple[str, dict]]:
    """Every YAML block in the README and docs/ that is a whole recipe or a list of stages."""
    found = []
    for page in [README, *DOCS]:
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.DOTALL)):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and "search" in data:
                continue  # a search space: its own schema (tests/test_search.py)
            if isinstance(data, dict) and "stages" in data:
                found.append((f"{page.name} yaml block {index}", data))
            elif isinstance(data, list) and all(isinstance(s, dict) and "type" in s for s in data):
                found.append((f"{page.name} yaml block {index}", {"stages": data}))
    return found


def keys_of(mapping: dict, prefix: str = "") -> list[str]:
    """Dotted keys of a nested mapping (lists of stages excluded)."""
    keys = []
    for key, value in mapping.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict) and key not in ("training", "data"):
            keys += keys_of(value, f"{prefix}{key}.")
    return keys


def test_every_recipe_shown_in_the_docs_uses_keys_of_the_reference():
    tables = reference_tables()
    recipes = documented_recipes()
    assert len(recipes) >= 3
    for where, recipe in recipes:
        for key in keys_of({k: v for k, v in recipe.items() if k != "stages"}):
            section, _, rest = key.partition(".")
            if section in ("task", "export", "push_to_hub") and rest:
                assert rest in tables[section], f"{where}: {key}"
            else:
                assert key in tables["top"], f"{where}: {key}"
        for stage in recipe["stages"]:
            known = tables.get(f"stage:{stage['type']}", {})
            for key in keys_of({k: v for k, v in stage.items() if k not in ("type", "name")}):
                if key.startswith("recovery."):
                    assert key.removeprefix("recovery.") in tables["recovery"], f"{where}: {key}"
                elif key != "training":
                    assert key in known, f"{where}: {stage['type']}.{key}"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page."""
    slugs = set()
    for line in page.read_text().splitlines():
        heading = re.match(r"^#+ (.*)$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            slugs.add(text.replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_resolves(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"https?://", link)]
    for link in local:
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: {link} does not exist"
        if anchor:
            assert anchor in anchors(path), f"{page.name}: {link} names no heading of {path.name}"


def test_the_readmes_table_of_recipes_is_its_results_file():
    source = "benchmarks/results/small/sst2.json"
    results = json.loads((REPO / source).read_text())
    table = recipe_table(results, source)
    assert table in README.read_text()
    summary = results["summary"]
    full = next(line for line in table.splitlines() if line.startswith("| [`full-stack`]"))
    smaller = summary["baseline"]["size_bytes"] / summary["full-stack"]["size_bytes"]
    assert f"| {smaller:.1f}× |" in full and f"{100 * summary['full-stack']['retention']:.1f}%" in full
    seeds = len(summary["full-stack"]["seeds"])
    assert f"| {seeds} |" in full and ("±" in full) == (seeds > 1)  # one seed: no spread is shown


def test_the_runtimes_page_shows_the_deploy_results_as_generated():
    from benchmarks.deploy import deploy_table

    sources = sorted((REPO / "benchmarks" / "results" / "deploy").glob("*.json"))
    records = {path.relative_to(REPO).as_posix(): json.loads(path.read_text()) for path in sources}
    assert deploy_table(records, "../") in (REPO / "docs" / "runtimes.md").read_text()
    fast = records["benchmarks/results/deploy/sst2-full-stack-fast.json"]
    row = fast["runs_on"]["openvino-int8"]
    assert row["smaller"] == round(fast["baseline"]["size_bytes"] / row["size_bytes"], 1)
    assert row["retention"] == round(row["score"] / fast["baseline"]["score"], 4)
    table = deploy_table(records, "../")
    for source, record in records.items():  # each row names the CPU its own file was timed on
        rows = [line for line in table.splitlines() if f"]({'../' + source})" in line]
        assert rows
        assert all(f"| {record['cpu']['model']} ({', '.join(record['cpu']['instruction_sets'])}) |" in line
                   for line in rows)  # fmt: skip


def test_the_readmes_own_data_recipe_is_a_valid_recipe():
    (where, recipe), *_ = documented_recipes()
    assert where == "README.md yaml block 0"
    parsed = recipe_from_dict(recipe, where)
    assert parsed.task.name == "tickets" and parsed.export.int8 and parsed.stages[0].type == "prune_heads"


def test_the_runtimes_page_shows_the_seeds_front_as_generated():
    from benchmarks.deploy import front_table

    deploy = REPO / "benchmarks" / "results" / "deploy"
    variants = ("sst2-full-stack-s", "sst2-full-stack-fast-s", "sst2-full-stack-vocab-s")
    files = [path for variant in variants for path in sorted(deploy.glob(f"{variant}*.json"))]
    records = {path.name: json.loads(path.read_text()) for path in files}
    assert len(records) == 9  # three seeds of each variant
    text = (REPO / "docs" / "runtimes.md").read_text()
    block = text.split("<!-- deploy-front:start -->\n")[1].split("<!-- deploy-front:end -->")[0]
    assert block == front_table(records)
