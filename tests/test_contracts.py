"""Stage contracts: a recipe whose stage would get a model state it cannot take is refused before anything
trains, with one line naming the stage, the state and the order that works; the reference's table is generated."""

import re
from pathlib import Path

import pytest
from _runs import fresh_cli, write_recipe

import nlpcompress.stages.builtin  # noqa: F401  (registers the stages)
from nlpcompress.errors import UserError
from nlpcompress.stages import parse_stage
from nlpcompress.stages.contracts import check_order, contract_table

REFERENCE = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()


def stages(*specs: dict):
    return [parse_stage({"name": f"{spec['type']}-{i}", **spec}) for i, spec in enumerate(specs)]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [{"type": "quantize", "method": "uniform", "avg_bits": 4}, {"type": "prune_heads", "target": 2}],
            "stage 'prune_heads-1' (prune_heads) cannot take a model that is quantized (weights are stored as "
            "packed integer codes): put prune_heads before quantize 'quantize-0', which makes it quantized",
        ),
        (
            [{"type": "factorize", "linears_rank": 4}, {"type": "movement", "sparsity": 0.5}],
            "stage 'movement-1' (movement) cannot take a model that is factorized",
        ),
        (
            [{"type": "share_layers", "num_groups": 1}, {"type": "prune_heads", "target": 2}],
            "put prune_heads before share_layers 'share_layers-0', which makes it shared",
        ),
        (
            [{"type": "share_layers", "num_groups": 1}, {"type": "share_layers", "num_groups": 1}],
            "stage 'share_layers-1' (share_layers) cannot take a model that is shared",
        ),
    ],
    ids=["quantize-then-prune", "factorized-linears-then-movement", "shared-then-prune", "share-twice"],
)
def test_a_stage_order_the_contracts_refuse(specs: list[dict], message: str):
    with pytest.raises(UserError, match=re.escape(message)):
        check_order(stages(*specs))


@pytest.mark.parametrize(
    "specs",
    [
        [
            {"type": "factorize", "embeddings_rank": 8},
            {"type": "prune_heads", "target": 2},
        ],  # embeddings only
        [{"type": "movement", "sparsity": 0.5}, {"type": "quantize", "method": "uniform", "avg_bits": 4}],
        [
            {"type": "nm_sparsity"},
            {"type": "prune_heads", "target": 2},
            {"type": "factorize", "linears_rank": 4},
        ],
        [{"type": "share_layers", "num_groups": 1}, {"type": "quantize", "method": "uniform", "avg_bits": 4}],
    ],
    ids=["embeddings-then-prune", "movement-then-quantize", "nm-prune-factorize", "share-then-quantize"],
)
def test_a_stage_order_the_contracts_take(specs: list[dict]):
    check_order(stages(*specs))


def test_the_cli_refuses_a_bad_order_in_one_line_before_loading_anything(tmp_path: Path):
    recipe = write_recipe(
        tmp_path,
        model=str(tmp_path / "never-read"),
        data_dir=str(tmp_path / "no-data"),
        stages=[
            {"type": "quantize", "method": "uniform", "avg_bits": 4},
            {"type": "movement", "sparsity": 0.5},
        ],
    )
    done = fresh_cli("run", str(recipe), "--no-progress")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "(movement) cannot take a model that is quantized" in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_the_reference_shows_the_generated_contract_table():
    assert "\n".join(contract_table()) in REFERENCE
