"""Movement pruning (Sanh et al. 2020): binarizers, schedule, score masks, the callback, finalize and sparse storage."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from _tiny import logits_without_nlpcompress, tiny_model
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, TrainingArguments

from nlpcompress.errors import ConfigError, UserError
from nlpcompress.finalize import finalize
from nlpcompress.loss_terms import LossBatch, TaskLoss
from nlpcompress.measure import sparsity, zero_counts
from nlpcompress.movement import (
    MovementCallback,
    MovementConfig,
    ScoreL1,
    ThresholdBinarizer,
    attach_score_masks,
    cubic_schedule,
    freeze_masks,
    mask_density,
    score_masks,
    topk_threshold,
)
from nlpcompress.parametrize import Mask, stored_weight, transforms
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.trainer import CompressionTrainer, ParamGroup


def rows(count: int = 64) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (count, 8), generator=generator)
    labels = (ids[:, 0] > 25).long()
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * count, "labels": labels.tolist()}
    )


def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(9)
    ids = torch.randint(1, 50, (4, 8), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def train(model, config: MovementConfig, folder: Path, steps: int = 12, resume: str | None = None, **args):
    values = dict(
        output_dir=str(folder), report_to="none", max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-3,
        logging_steps=2, disable_tqdm=True, save_strategy="no", use_cpu=True, seed=0,
    )  # fmt: skip
    arguments = TrainingArguments(**{**values, **args})
    terms = [TaskLoss()] + (
        [ScoreL1(config.lambda_l1, config.threshold)] if config.method == "soft_movement" else []
    )
    groups = (
        [ParamGroup("scores", r"\.scores$", config.scores_learning_rate, 0.0)] if config.uses_scores else []
    )
    trainer = CompressionTrainer(
        model=model, args=arguments, train_dataset=rows(), loss_terms=terms, param_groups=groups,
        callbacks=[MovementCallback(config)],
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    return trainer


# ---------------------------------------------------------------- binarizers and schedule


def test_topk_threshold_keeps_exactly_floor_keep_n_largest_with_a_straight_through_gradient():
    scores = torch.randn(7, 13, generator=torch.Generator().manual_seed(1), requires_grad=True)
    mask = ThresholdBinarizer.apply(scores, topk_threshold(scores, 0.3), False)
    assert int(mask.sum()) == int(0.3 * 91) == 27
    assert scores[mask.bool()].min() > scores[~mask.bool()].max()
    upstream = torch.randn(7, 13)
    (mask * upstream).sum().backward()
    torch.testing.assert_close(scores.grad, upstream)  # straight-through
    for keep, kept in ((0.0, 0), (1.0, 91), (0.999, 90)):
        assert (
            int(ThresholdBinarizer.apply(scores.detach(), topk_threshold(scores, keep), False).sum()) == kept
        )


def test_threshold_binarizer_on_scores_and_on_their_sigmoid():
    scores = torch.tensor([-3.0, -1.0, 0.0, 2.0], requires_grad=True)
    assert ThresholdBinarizer.apply(scores, 0.0, False).tolist() == [0, 0, 1, 1]
    soft = ThresholdBinarizer.apply(scores, 0.1, True)  # sigmoid(-3) = 0.047 < 0.1 < sigmoid(-1) = 0.27
    assert soft.tolist() == [0, 1, 1, 1]
    (soft * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert scores.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_cubic_schedule_values():
    keep = [cubic_schedule(step, 100, 1.0, 0.1, warmup=10, cooldown=20) for step in range(101)]
    assert keep[:11] == [1.0] * 11 and keep[80:] == [0.1] * 21
    assert keep[45] == pytest.approx(0.1 + 0.9 * (1 - 35 / 70) ** 3)
    assert all(a >= b for a, b in itertools.pairwise(keep))  # monotone
    assert cubic_schedule(3, 4, 1.0, 0.2, warmup=2, cooldown=2) == 0.2  # no room to ramp: the target


# ---------------------------------------------------------------- score masks


def test_scores_receive_the_straight_through_movement_gradient():
    """∂L/∂S = ∂L/∂W' ⊙ W (Eq. 4): the scores accumulate the weights' movement."""
    model = tiny_model().train()
    attach_score_masks(model, MovementConfig(method="movement", sparsity=0.5))
    query = model.compact_bert.encoder.layers[0].attention.query
    mask = next(m for m in score_masks(model) if m is query.parametrizations.weight[0])
    weight = stored_weight(query)
    with (
        torch.nn.utils.parametrize.cached()
    ):  # W' computed once, so the test sees the tensor the forward used
        output = model(**inputs(), labels=torch.tensor([0, 1, 1, 0]))
        masked = query.weight
        grad_masked = torch.autograd.grad(output.loss, masked, retain_graph=True)[0]
        output.loss.backward()
    torch.testing.assert_close(mask.scores.grad, grad_masked * weight.detach())


@pytest.mark.parametrize("scope", ["local", "global"])
def test_per_weight_topk_reaches_the_target_exactly(scope: str):
    model = tiny_model()
    config = MovementConfig(method="movement", sparsity=0.8, scope=scope)
    attach_score_masks(model, config)
    generator = torch.Generator().manual_seed(3)
    for mask in score_masks(model):
        mask.scores.data = torch.randn(mask.scores.shape, generator=generator)
    MovementCallback(config).apply(model, 0.2)
    counts = zero_counts(model)
    if scope == "local":
        for zeros, size in counts.values():
            assert size - zeros == int(0.2 * size)
    else:
        size = sum(s for _, s in counts.values())
        assert size - sum(z for z, _ in counts.values()) == int(0.2 * size)


def test_head_and_neuron_granularity_mask_whole_units_in_every_linear_they_span():
    model = tiny_model()
    config = MovementConfig(method="movement", sparsity=0.5, attention="head", ffn="neuron")
    attach_score_masks(model, config)
    assert len(score_masks(model)) == 12 and len(transforms(model)) == 12
    owners = [m for m in score_masks(model) if m.owner]
    assert sorted(m.scores.numel() for m in owners) == [4, 4, 37, 37]  # one score per head, per neuron
    for mask in owners:
        mask.scores.data = torch.arange(mask.scores.numel(), dtype=torch.float)  # the last units win
    MovementCallback(config).apply(model, 0.5)
    attention = model.compact_bert.encoder.layers[0].attention
    size = attention.head_size
    for rows in (attention.query.weight, attention.key.weight, attention.value.weight):
        assert not rows[: 2 * size].any() and rows[2 * size :].all()  # heads 0 and 1 out, 2 and 3 kept
    assert not attention.output.weight[:, : 2 * size].any() and attention.output.weight[:, 2 * size :].all()
    ffn = model.compact_bert.encoder.layers[1].ffn
    kept = ffn.intermediate.weight.any(1)
    assert int(kept.sum()) == int(0.5 * 37) and torch.equal(kept, ffn.output.weight.any(0))


def test_block_granularity_masks_whole_tiles_and_refuses_shapes_it_does_not_divide():
    model = tiny_model(intermediate_size=40)
    config = MovementConfig(
        method="magnitude", sparsity=0.75, attention="block", ffn="block", block_shape=[8, 4]
    )
    attach_score_masks(model, config)
    MovementCallback(config).apply(model, 0.25)
    weight = model.compact_bert.encoder.layers[0].ffn.intermediate.weight  # 40 × 32
    tiles = (weight != 0).reshape(5, 8, 8, 4).permute(0, 2, 1, 3).reshape(40, 32)
    assert all(bool(tile.all()) or not bool(tile.any()) for tile in tiles)
    assert int((weight != 0).sum()) == 8 * 4 * int(0.25 * 40)
    with pytest.raises(
        ConfigError, match=r"does not divide the 37×32 weight of layers\.0\.ffn\.intermediate"
    ):
        attach_score_masks(tiny_model(), config)


def test_magnitude_keeps_the_largest_weights_of_each_matrix():
    model = tiny_model()
    config = MovementConfig(method="magnitude", sparsity=0.9)
    attach_score_masks(model, config)
    MovementCallback(config).apply(model, 0.1)
    query = model.compact_bert.encoder.layers[1].attention.query
    weight, kept = stored_weight(query).detach().abs(), query.weight != 0
    assert weight[kept].min() >= weight[~kept].max()


def test_soft_movement_regulariser_is_the_mean_sigmoid_and_ramps_with_the_threshold():
    model = tiny_model()
    config = MovementConfig(method="soft_movement", threshold=0.2, lambda_l1=8.0)
    attach_score_masks(model, config)
    for index, mask in enumerate(m for m in score_masks(model) if m.owner):
        mask.scores.data.fill_(float(index) - 5.0)
    MovementCallback(config).apply(model, 0.1)  # halfway up the threshold ramp
    term = ScoreL1(config.lambda_l1, config.threshold)
    value = term(LossBatch(None, None, None, model))
    expected = torch.sigmoid(torch.arange(12, dtype=torch.float) - 5.0).mean()
    torch.testing.assert_close(value, expected)
    assert term.weight == pytest.approx(4.0)  # λ · τ_t / τ
    masks = score_masks(model)
    assert all(m.threshold == 0.1 for m in masks)  # sigmoid(S) > 0.1 keeps S > -2.197
    assert [bool(m.small_mask().all()) for m in masks if m.owner] == [False, False, False] + [True] * 9


# ---------------------------------------------------------------- training, finalize, storage, resume


def test_training_reaches_the_target_then_finalize_keeps_logits_and_saves_smaller(tmp_path: Path):
    model = tiny_model(dtype=torch.float32)
    config = MovementConfig(method="movement", sparsity=0.9, warmup_fraction=0.25, cooldown_fraction=0.25)
    attach_score_masks(model, config)
    train(model, config, tmp_path / "run", steps=12)
    for zeros, size in zero_counts(model).values():
        assert size - zeros == int(0.1 * size)
    assert freeze_masks(model) == 12 and all(isinstance(t, Mask) for t in transforms(model).values())
    masked = model.eval()(**inputs()).logits.detach()
    dense = tiny_model()
    dense.save_pretrained(tmp_path / "dense")
    report = finalize(model)
    assert report["baked_transforms"] == 12 and report["sparse_linears"] == 12
    assert (
        sparsity(model) == pytest.approx(0.9, abs=0.01) and transforms(model) == {}
    )  # fully pruned units went
    torch.testing.assert_close(model(**inputs()).logits, masked, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path / "sparse")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "sparse").eval()
    torch.testing.assert_close(reloaded(**inputs()).logits, masked, atol=1e-5, rtol=0)
    assert reloaded.config.stored_linears == model.config.stored_linears
    assert {entry["kind"] for entry in model.config.stored_linears.values()} == {"sparse"}
    encoder_dense = sum(s * 4 for _, s in zero_counts(dense).values())
    encoder_sparse = sum(s * 4 * 0.1 + s / 8 for _, s in zero_counts(dense).values())
    saved = (tmp_path / "sparse" / "model.safetensors").stat().st_size
    full = (tmp_path / "dense" / "model.safetensors").stat().st_size
    assert full - saved == pytest.approx(
        encoder_dense - encoder_sparse, rel=0.05
    )  # the encoder shrinks with density

    torch.testing.assert_close(
        logits_without_nlpcompress(tmp_path / "sparse", inputs()), masked, atol=1e-5, rtol=0
    )


def test_a_sparse_model_loaded_for_more_compression_keeps_its_zeros(tmp_path: Path):
    from nlpcompress.finalize import densify

    model = tiny_model()
    config = MovementConfig(method="magnitude", sparsity=0.7)
    attach_score_masks(model, config)
    MovementCallback(config).apply(model, 0.3)
    freeze_masks(model)
    finalize(model)
    before = model(**inputs()).logits.detach()
    assert densify(model) == 12 and model.config.stored_linears == {}
    torch.testing.assert_close(model(**inputs()).logits, before, atol=1e-6, rtol=0)
    query = model.compact_bert.encoder.layers[0].attention.query
    zeros = query.weight == 0
    model.train()(**inputs(), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    assert not bool(stored_weight(query).grad[zeros].any())  # pruned weights get no gradient
    with torch.no_grad():
        stored_weight(query).add_(1.0)  # even a step that moves every stored weight keeps them zero
    assert torch.equal(query.weight == 0, zeros)
    assert sparsity(model) == pytest.approx(0.7, abs=0.01)


def test_structured_movement_removes_heads_and_neurons_at_finalize(tmp_path: Path):
    model = tiny_model()
    config = MovementConfig(
        method="movement", sparsity=0.5, attention="head", ffn="neuron", warmup_fraction=0.0
    )
    attach_score_masks(model, config)
    train(model, config, tmp_path, steps=8)
    freeze_masks(model)
    masked = model.eval()(**inputs()).logits.detach()
    report = finalize(model)
    assert report["removed_heads"] == 4 and report["removed_neurons"] == 2 * (37 - int(0.5 * 37))
    assert model.config.heads_per_layer == [2, 2] and model.config.intermediate_sizes == [18, 18]
    assert report["sparse_linears"] == 0 and sparsity(model) == 0.0  # removed, not stored sparse
    torch.testing.assert_close(model(**inputs()).logits, masked, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["movement", "magnitude", "soft_movement"])
def test_resume_from_a_checkpoint_gives_the_same_masks(tmp_path: Path, method: str):
    settings = (
        {"sparsity": 0.75}
        if method != "soft_movement"
        else {"lambda_l1": 50.0, "threshold": 0.4, "scores_learning_rate": 0.1}
    )
    config = MovementConfig(method=method, warmup_fraction=0.0, cooldown_fraction=0.0, **settings)

    def run(folder: Path, resume: str | None = None):
        model = tiny_model()
        attach_score_masks(model, config)
        train(model, config, folder, steps=10, resume=resume, save_strategy="steps", save_steps=4)
        masks = [m.small_mask().detach().clone() for m in score_masks(model)]
        return masks, model(**inputs()).logits.detach(), sparsity(model)

    full_masks, full_logits, full_sparsity = run(tmp_path / "a")
    resumed_masks, resumed_logits, _ = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-4"))
    assert all(torch.equal(a, b) for a, b in zip(full_masks, resumed_masks, strict=True))
    torch.testing.assert_close(resumed_logits, full_logits)
    if method != "soft_movement":
        assert full_sparsity == pytest.approx(0.75, abs=0.005)
    else:
        assert full_sparsity > 0.05  # λ pushed some scores under τ


# ---------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"method": "movement", "sparsity": 1.0}, "stages.0.sparsity: movement needs a fraction of weights to remove in [0, 1) (got 1.0)"),
        ({"method": "movement", "sparsity": -0.1}, "stages.0.sparsity: movement needs a fraction"),
        ({"method": "movement"}, "stages.0.sparsity: movement needs a fraction"),
        ({"method": "snip", "sparsity": 0.5}, "stages.0.method: allowed: magnitude, movement, soft_movement (got 'snip')"),
        ({"method": "soft_movement", "sparsity": 0.9}, "stages.0.sparsity: soft movement's sparsity follows"),
        ({"method": "movement", "sparsity": 0.5, "attention": "block"}, "stages.0.block_shape: block granularity needs"),
        ({"method": "movement", "sparsity": 0.5, "attention": "block", "block_shape": [32, 0]}, "two positive integers"),
        ({"method": "movement", "sparsity": 0.5, "ffn": "head"}, "stages.0.ffn: allowed: weight, block, neuron"),
        ({"method": "movement", "sparsity": 0.5, "lambda_l1": 5.0}, "stages.0.lambda_l1: applies to method soft_movement only"),
        ({"method": "movement", "sparsity": 0.5, "warmup_fraction": 0.5, "cooldown_fraction": 0.5}, "must be below 1"),
        ({"method": "movement", "sparsity": 0.5, "recovery": {"distillation": {"temperature": 0}}}, "stages.0.recovery.distillation.temperature: must be > 0"),
        ({"method": "movement", "sparsity": 0.5, "recovery": {"distillation": {"method": "tinybert", "phase": "prediction"}}}, "use kd or distilbert"),
        ({"method": "movement", "sparsity": 0.5, "recovery": {"train": False}}, "stages.0.recovery.train: movement works while it trains"),
    ],
)  # fmt: skip
def test_bad_parameters_are_one_line_naming_the_key(stage: dict, message: str):
    data = {"model": "m", "task": "sst2", "output_dir": "o", "stages": [{"type": "movement", **stage}]}
    with pytest.raises(UserError) as info:
        recipe_from_dict(data, "r.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_block_shape_that_does_not_fit_the_model_is_refused_before_training():
    recipe = recipe_from_dict(
        {"model": "m", "task": "sst2", "output_dir": "o",
         "stages": [{"type": "movement", "method": "movement", "sparsity": 0.5, "ffn": "block", "block_shape": [8, 8]}]}
    )  # fmt: skip
    with pytest.raises(ConfigError, match="block_shape: does not divide the 37×32 weight"):
        recipe.stages[0].run(tiny_model(), ctx=None)


def test_training_logs_record_the_mask_density(tmp_path: Path):
    model = tiny_model()
    config = MovementConfig(method="magnitude", sparsity=0.5, warmup_fraction=0.0, cooldown_fraction=0.5)
    attach_score_masks(model, config)
    trainer = train(model, config, tmp_path, steps=8)
    densities = [log["mask_density"] for log in trainer.state.log_history if "mask_density" in log]
    assert len(densities) == 4 and densities[-1] == pytest.approx(0.5, abs=0.01)
    assert all(a >= b for a, b in itertools.pairwise(densities)) and densities[0] < 1.0


@pytest.mark.parametrize(
    ("scores_learning_rate", "pruned"), [(1e-2, False), (1.0, True)]
)  # reach over 12 steps: 0.065, then 6.5, against -logit(0.1) = 2.197
def test_soft_movement_warns_when_its_scores_cannot_reach_the_threshold_however_large_lambda(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, scores_learning_rate: float, pruned: bool
):
    model = tiny_model()
    config = MovementConfig(
        method="soft_movement",
        lambda_l1=1e6,
        scores_learning_rate=scores_learning_rate,
        cooldown_fraction=0.5,
    )
    attach_score_masks(model, config)
    with caplog.at_level("WARNING", logger="nlpcompress.movement.callback"):
        trainer = train(model, config, tmp_path, steps=12)
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, MovementCallback))
    assert (mask_density(model) < 0.5) is pruned
    if pruned:
        assert callback.warnings == [] and caplog.records == []
    else:
        assert mask_density(model) == 1.0
        before, after = callback.warnings
        assert "will likely prune nothing" in before and "0.07 over these 12 steps" in before
        assert "removed 0.00% of the masked weights in 12 steps" in after
        assert [r.getMessage() for r in caplog.records] == callback.warnings
