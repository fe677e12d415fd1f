"""Head importance pruning (Michel et al. 2019): gates, importance, selection, removal, callback, stage."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _require import require_module
from _tiny import tiny_model
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from nlpcompress.context import RunData, stage_context
from nlpcompress.distributed import dataset_batches
from nlpcompress.errors import ConfigError, UserError
from nlpcompress.parametrize import transforms
from nlpcompress.pruning import (
    HEADS,
    NEURONS,
    HeadPruningCallback,
    HeadPruningConfig,
    IterativePruning,
    gate_units,
    gated_off,
    gates_for,
    gradient_importance,
    head_importance,
    iterative_prune,
    plot_head_importance,
    random_importance,
    remove_units,
    select_least_important,
    set_gates,
)
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.stages.prune_heads import PruneHeadsStage
from nlpcompress.surgery import check_items

DIST_SCRIPT = Path(__file__).with_name("_dist_head_importance.py")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def tiny_batch(size: int = 6, length: int = 9, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (size, length), generator=generator)
    mask = torch.ones(size, length, dtype=torch.long)
    for row in range(size):
        mask[row, length - row % 4 :] = 0  # some rows padded
    ids = ids * mask
    labels = torch.randint(0, 2, (size,), generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def split_batch(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    count = batch["input_ids"].shape[0]
    return [{k: v[start : start + size] for k, v in batch.items()} for start in range(0, count, size)]


def example_losses(model, batch, gates, unit=HEADS) -> torch.Tensor:
    set_gates(model, unit, gates)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        losses = F.cross_entropy(model(**inputs).logits, batch["labels"], reduction="none")
    set_gates(model, unit, None)
    return losses


# ---------------------------------------------------------------- importance


@pytest.mark.parametrize("unit", ["heads", "neurons"])
@pytest.mark.parametrize("layer_map", [None, [0, 1, 0]], ids=["plain", "shared-layer"])
def test_gradient_importance_matches_finite_differences(layer_map, unit):
    """I = E_x |dL(x)/dξ| (§4.1) for head gates and FFN-neuron gates, against a central difference per
    example, in float64."""
    unit = HEADS if unit == "heads" else NEURONS
    overrides = {"layer_map": layer_map, "heads_per_layer": [4, 3]} if layer_map else {}
    model = tiny_model(torch.float64, **overrides)
    batch = tiny_batch()
    importance = gradient_importance(model, split_batch(batch, 4), unit)
    eps = 1e-5
    counts = unit.counts(model)
    for layer, count in enumerate(counts):
        for index in range(0, count, 1 if unit is HEADS else 5):
            up, down = ([g.double() for g in gates_for(counts)] for _ in range(2))
            up[layer][index] += eps
            down[layer][index] -= eps
            slope = (example_losses(model, batch, up, unit) - example_losses(model, batch, down, unit)) / (
                2 * eps
            )
            expected = slope.abs().mean()
            assert importance[layer][index].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-8)


def test_importance_independent_of_batching_and_normalised_per_layer():
    model = tiny_model()
    batch = tiny_batch(size=8)
    whole = head_importance(model, [batch], normalize=False)
    pieces = head_importance(model, split_batch(batch, 3), normalize=False)
    for a, b in zip(whole, pieces, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    normalised = head_importance(model, [batch], normalize=True)
    for layer, raw in zip(normalised, whole, strict=True):
        assert layer.norm().item() == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(layer, raw / raw.norm())


def test_importance_leaves_model_untouched_and_zeroes_pruned_heads():
    model = tiny_model()
    model.train()
    importance = head_importance(model, [tiny_batch()], pruned=[(0, 1), (1, 3)])
    assert importance[0][1] == 0 and importance[1][3] == 0
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert transforms(model) == {}  # the scoring gates are gone


def test_entropy_score_is_zero_for_uniform_attention_and_positive_otherwise():
    model = tiny_model()
    batch = tiny_batch()
    peaked = head_importance(model, [batch], score="entropy", normalize=False)
    assert all((layer > 0).all() for layer in peaked)
    for layer in model.compact_bert.encoder.layers:
        torch.nn.init.zeros_(layer.attention.query.weight)
        torch.nn.init.zeros_(layer.attention.query.bias)
    uniform = head_importance(model, [batch], score="entropy", normalize=False)
    for layer in uniform:
        torch.testing.assert_close(layer, torch.zeros_like(layer), atol=1e-6, rtol=0)


def test_unknown_score_and_unlabelled_batches_are_rejected():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown importance score 'taylor'"):
        head_importance(model, [tiny_batch()], score="taylor")
    batch = {k: v for k, v in tiny_batch().items() if k != "labels"}
    with pytest.raises(ValueError, match="labelled batches"):
        head_importance(model, [batch])


def test_two_processes_give_the_same_importance_as_one(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU), each rank half the rows, equals one process on all rows."""
    spec = importlib.util.spec_from_file_location("_dist_head_importance", DIST_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model, rows, collate = script.build()
    single = head_importance(model, dataset_batches(rows, collate, script.BATCH_SIZE), normalize=True)

    out = tmp_path / "importance.pt"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(DIST_SCRIPT), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out, weights_only=True)
    assert result["world_size"] == 2
    for a, b in zip(result["importance"], single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert select_least_important(result["importance"], 4) == select_least_important(single, 4)


# ---------------------------------------------------------------- selection


def test_global_ranking_keeps_one_head_per_layer():
    importance = [torch.tensor([0.1, 0.9, 0.5]), torch.tensor([0.2, 0.05, 0.3])]
    assert select_least_important(importance, 3) == [(0, 0), (1, 0), (1, 1)]
    assert select_least_important(importance, 4) == [
        (0, 0),
        (0, 2),
        (1, 0),
        (1, 1),
    ]  # (1, 2) is layer 1's last
    assert select_least_important(importance, 4, min_keep=0) == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert select_least_important(importance, 2, exclude=[(1, 1)]) == [(0, 0), (1, 0)]
    with pytest.raises(ValueError, match="at most 4 can go"):
        select_least_important(importance, 5)


def test_target_count_fractions_counts_and_errors():
    counts = [12] * 6
    assert HeadPruningConfig(target=0.5).target_count(counts) == 36
    assert HeadPruningConfig(target=36).target_count(counts) == 36
    assert HeadPruningConfig(target=0).target_count(counts) == 0
    for bad, message in [
        (1.0, "must be a fraction in \\(0, 1\\), or a whole number of heads \\(got 1.0\\)"),
        (1.5, "must be a fraction in \\(0, 1\\)"),
        (0.0, "must be a fraction in \\(0, 1\\)"),
        (-3, "a count of heads must be >= 0 \\(got -3\\)"),
        (True, "or a whole number of heads \\(got True\\)"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            HeadPruningConfig(target=bad)
        assert info.value.field == "target"
    with pytest.raises(ConfigError, match="exceeds the 72 heads of the model"):
        HeadPruningConfig(target=73).target_count(counts)
    with pytest.raises(
        ConfigError, match="means 67 heads, but only 66 of 72 can go while every layer keeps 1"
    ):
        HeadPruningConfig(target=67).target_count(counts)
    assert HeadPruningConfig(target=72, allow_empty_layers=True, keep_per_layer=0).target_count(counts) == 72


def test_layer_or_head_index_out_of_range_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(
        ValueError, match=r"layer index 5 is out of range: the model has 2 unique layers \(0..1\)"
    ):
        remove_units(model, HEADS, [(5, 0)])
    with pytest.raises(ValueError, match="head index 4 is out of range for layer 1, which has 4 heads"):
        gate_units(model, HEADS, [(1, 4)])
    with pytest.raises(ValueError, match="layer index -1"):
        check_items(HEADS, [4, 4], [(-1, 0)])
    assert HEADS.counts(model) == [4, 4] and transforms(model) == {}  # nothing was changed


def test_random_baseline_is_seeded_and_obeys_the_same_rules():
    first, again, other = (random_importance([4, 4, 4], seed) for seed in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    chosen = select_least_important(first, 9)
    assert len(chosen) == 9 and all(sum(1 for layer, _ in chosen if layer == i) <= 3 for i in range(3))


def test_iterative_pruning_stops_and_undoes_the_step_below_the_floor():
    model = tiny_model()

    def metric() -> float:  # 1.0, minus 0.1 for every gated-off head
        return 1.0 - 0.1 * len(gated_off(model, HEADS))

    def score(pruned):
        return head_importance(model, [tiny_batch()], pruned=pruned)

    floor = IterativePruning(target=6, step_fraction=0.25, metric_floor=0.75, reference=metric())
    result = iterative_prune(model, HEADS, floor, score, metric)
    assert result.stopped_by_floor and len(result.pruned) == 2  # 2 heads: 0.8; 4 heads: 0.6 < 0.75
    assert metric() == pytest.approx(0.8) and gated_off(model, HEADS) == result.pruned_items
    assert [(h["pruned"], h["metric"], h.get("undone", False)) for h in result.history] == [
        (2, pytest.approx(0.8), False),
        (4, pytest.approx(0.6), True),
    ]
    full = iterative_prune(model, HEADS, IterativePruning(target=6, step_fraction=0.25), score, metric)
    assert len(full.pruned) == 6 and not full.stopped_by_floor
    assert [h["pruned"] for h in full.history] == [2, 4, 5, 6]  # a quarter of the live heads, at least one
    assert all(
        count - sum(1 for layer, _ in full.pruned if layer == i) >= 1 for i, count in enumerate([4, 4])
    )


# ---------------------------------------------------------------- removal


@pytest.mark.parametrize("layer_map", [None, [0, 1, 1, 0]], ids=["plain", "shared-layers"])
def test_removal_keeps_logits_and_reloads_smaller(tmp_path, layer_map):
    model = tiny_model(**({"layer_map": layer_map} if layer_map else {}))
    batch = tiny_batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    pruned = [(0, 1), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]  # layer 1 loses every head
    model.save_pretrained(tmp_path / "full")
    gate_units(model, HEADS, pruned)
    with torch.no_grad():
        gated = model(**inputs).logits
        set_gates(model, HEADS, None)
        unpruned = model(**inputs).logits
        gate_units(model, HEADS, pruned)

    remove_units(model, HEADS, pruned)  # the gates are sliced along (all ones now)
    assert [len(g.gate) for g in transforms(model).values()] == [2, 0]
    set_gates(model, HEADS, None)
    attention = model.compact_bert.encoder.layers[0].attention
    assert model.config.heads_per_layer == [2, 0]
    assert attention.query.weight.shape == (2 * attention.head_size, 32)
    assert attention.output.weight.shape == (32, 2 * attention.head_size)
    with torch.no_grad():
        removed = model(**inputs).logits
        explicit = model(**inputs, output_attentions=True).logits
    assert (gated - unpruned).abs().max() > 1e-3  # pruning changed something
    torch.testing.assert_close(removed, gated, atol=1e-5, rtol=0)
    torch.testing.assert_close(explicit, gated, atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned").eval()
    assert reloaded.config.heads_per_layer == [2, 0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, gated, atol=1e-5, rtol=0)
    size = (tmp_path / "pruned" / "model.safetensors").stat().st_size
    assert size < (tmp_path / "full" / "model.safetensors").stat().st_size

    reloaded.train()
    reloaded(**batch).loss.backward()  # the smaller model still trains
    assert reloaded.compact_bert.encoder.layers[0].attention.query.weight.grad is not None


def test_removal_twice_uses_current_numbering():
    model = tiny_model()
    remove_units(model, HEADS, [(0, 0)])
    remove_units(model, HEADS, [(0, 2)])  # head 3 of the original layer
    assert model.config.heads_per_layer == [2, 4]
    with pytest.raises(ValueError, match="head index 2 is out of range for layer 0, which has 2 heads"):
        remove_units(model, HEADS, [(0, 2)])


# ---------------------------------------------------------------- Trainer callback


def _train(tmp_path: Path, resume: str | None = None, restore_flag: bool = False):
    model = tiny_model()
    generator = torch.Generator().manual_seed(3)
    data = Dataset.from_dict(
        {
            "input_ids": torch.randint(1, 50, (48, 8), generator=generator).tolist(),
            "attention_mask": [[1] * 8] * 48,
            "labels": torch.randint(0, 2, (48,), generator=generator).tolist(),
        }
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=12,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        eval_strategy="steps",
        eval_steps=3,
        save_strategy="steps",
        save_steps=3,
        logging_steps=100,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        restore_callback_states_from_checkpoint=restore_flag,
    )
    config = HeadPruningConfig(target=5, strategy="iterative", step_fraction=0.25, score_samples=16)
    callback = HeadPruningCallback(config, metric="loss")
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)
    live = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, HeadPruningCallback))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(data["input_ids"][:4])).logits
    return live, logits


@pytest.mark.parametrize("restore_flag", [False, True], ids=["self-restore", "trainer-restore"])
def test_callback_prunes_at_evaluations_and_resume_continues_identically(tmp_path, restore_flag):
    full, full_logits = _train(tmp_path / "a")
    assert len(full.pruned) == 5 and full.pruning.done
    assert [h["pruned"] for h in full.history] == [2, 4, 5]  # train begin, eval at 3, eval at 6
    assert [h["step"] for h in full.history] == [0, 3, 6]

    checkpoint = tmp_path / "a" / "run" / "checkpoint-3"
    resumed, resumed_logits = _train(tmp_path / "b", resume=str(checkpoint), restore_flag=restore_flag)
    assert resumed.pruned == full.pruned
    assert resumed.history == full.history
    torch.testing.assert_close(resumed_logits, full_logits)


def test_callback_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="step_fraction: must be a fraction in \\(0, 1\\]"):
        HeadPruningConfig(target=3, step_fraction=1.5)
    with pytest.raises(ValueError, match="metric_floor needs reference_metric"):
        HeadPruningCallback(HeadPruningConfig(target=3, strategy="iterative", metric_floor=0.9))


# ---------------------------------------------------------------- stage schema and artifacts


def _recipe_error(stage: dict) -> str:
    data = {"model": "m", "task": "sst2", "output_dir": "out", "stages": [{"type": "prune_heads", **stage}]}
    with pytest.raises(UserError) as info:
        recipe_from_dict(data)
    return str(info.value)


def test_stage_schema_rejects_bad_parameters_with_the_field_named():
    assert (
        "stages.0.target: must be a fraction in (0, 1), or a whole number of heads (got 1.0)"
        in _recipe_error({"target": 1.0})
    )
    assert "stages.0.target: a count of heads must be >= 0 (got -4)" in _recipe_error({"target": -4})
    assert "stages.0.target: must be a number or an integer (got 'half')" in _recipe_error({"target": "half"})
    assert "stages.0.metric_floor: applies to strategy 'iterative' only" in _recipe_error(
        {"metric_floor": 0.9}
    )
    assert "stages.0.keep_per_layer: 0 lets layers lose every head" in _recipe_error({"keep_per_layer": 0})
    assert "stages.0.step_fraction: must be a fraction in (0, 1]" in _recipe_error({"step_fraction": 0})
    assert "stages.0.strategy" in _recipe_error({"strategy": "greedy"})
    assert "stages.0.score_samples: must be a positive integer" in _recipe_error({"score_samples": 0})
    assert "stages.0.score: allowed: gradient, entropy (got 'taylor')" in _recipe_error({"score": "taylor"})
    recipe = recipe_from_dict(
        {
            "model": "m",
            "task": "sst2",
            "output_dir": "out",
            "stages": [
                {
                    "type": "prune_heads",
                    "target": 36,
                    "strategy": "iterative",
                    "metric_floor": 0.9,
                    "keep_per_layer": 0,
                    "allow_empty_layers": True,
                }
            ],
        }
    )
    stage = recipe.stages[0]
    assert isinstance(stage, PruneHeadsStage) and stage.target == 36 and stage.config().min_keep == 0


def test_stage_rejects_a_target_the_model_cannot_reach():
    stage = PruneHeadsStage(type="prune_heads", name="prune", target=7)
    with pytest.raises(ConfigError, match="target: means 7 heads, but only 6 of 8 can go"):
        stage.run(tiny_model(), ctx=None)


def test_heat_map_is_written_or_skipped_with_a_note(tmp_path, monkeypatch, caplog):
    require_module("matplotlib")
    importance = [torch.rand(4), torch.rand(2)]
    path = plot_head_importance(importance, [(0, 1)], tmp_path / "heads.png")
    assert path is not None and path.stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with caplog.at_level(logging.WARNING):
        assert plot_head_importance(importance, [], tmp_path / "none.png") is None
    assert "matplotlib is not installed" in caplog.text and not (tmp_path / "none.png").exists()


# ---------------------------------------------------------------- integration


@pytest.mark.integration
@pytest.mark.parametrize(
    "strategy",
    [{"strategy": "oneshot"}, {"strategy": "iterative", "step_fraction": 0.3}],
    ids=lambda s: s["strategy"],
)
def test_stage_on_minilm_sst2_prunes_half_and_saves_a_loadable_model(
    tmp_path, strategy, glue_root, minilm_path
):
    from nlpcompress.glue import get_task, load_task_data
    from nlpcompress.models import load_compact, load_tokenizer

    recipe = recipe_from_dict(
        {
            "model": "minilm-l6",
            "task": "sst2",
            "output_dir": str(tmp_path / "out"),
            "max_length": 64,
            "training": {"per_device_train_batch_size": 16, "max_steps": 8, "learning_rate": 1e-4},
            "stages": [{"type": "prune_heads", "target": 0.5, "score_samples": 64, **strategy}],
        }
    )
    task = get_task("sst2")
    tokenizer = load_tokenizer("minilm-l6")
    train, evals = load_task_data(task, tokenizer, glue_root, 64, max_train_samples=256, max_eval_samples=128)
    stage = recipe.stages[0]
    ctx = stage_context(recipe, stage, RunData(task, tokenizer, train, evals), tmp_path, progress=False)
    model = load_compact("minilm-l6", task)
    output = stage.run(model, ctx)

    heads = output.info["heads_per_layer"]
    assert sum(heads) == 36 and min(heads) >= 1 and len(output.info["pruned"]) == 36
    assert {"metric_before_pruning", "train_steps", "history"} <= set(output.info)
    if strategy["strategy"] == "iterative":  # two steps (22 + 14 heads) at train begin and at step 3 of 8
        assert [(h["step"], h["pruned"]) for h in output.info["history"]] == [(0, 22), (3, 36)]
    else:
        assert "metric_before_recovery" in output.info
    assert "accuracy" in output.metrics
    assert (tmp_path / "artifacts" / "prune_heads" / "prune_heads-head-importance.json").is_file()
    output.model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    sample = {k: torch.tensor(v[:2]) for k, v in evals["validation"][:1].items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**sample).logits, output.model.eval()(**sample).logits)
