"""CompressionTrainer: loss terms, the teacher, named optimizer groups; the loss-term registry."""

from pathlib import Path

import pytest
import torch
from _tiny import tiny_model
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from nlpcompress.loss_terms import LossBatch, LossTerm, SoftTargetKL, TaskLoss
from nlpcompress.trainer import CompressionTrainer, ParamGroup


def rows(count: int = 32) -> Dataset:
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 50, (count, 6), generator=generator)
    return Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * 6] * count,
            "labels": (ids[:, 0] > 25).long().tolist(),
        }
    )


def arguments(tmp_path: Path, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(tmp_path), report_to="none", max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3,
        logging_steps=1, disable_tqdm=True, save_strategy="no", use_cpu=True, seed=0,
    )  # fmt: skip
    return TrainingArguments(**{**values, **overrides})


def batch() -> dict[str, torch.Tensor]:
    data = rows(8)
    return {key: torch.tensor(data[key]) for key in ("input_ids", "attention_mask", "labels")}


def test_default_loss_is_the_task_loss_of_the_plain_trainer(tmp_path: Path):
    model = tiny_model().train()
    plain = Trainer(model=model, args=arguments(tmp_path / "a"))
    compression = CompressionTrainer(model=model, args=arguments(tmp_path / "b"))
    assert [type(term) for term in compression.loss_terms] == [TaskLoss]
    torch.manual_seed(0)
    expected = plain.compute_loss(model, batch())
    torch.manual_seed(0)
    torch.testing.assert_close(compression.compute_loss(model, batch()), expected)


def test_weighted_terms_are_summed_and_logged_per_term(tmp_path: Path):
    teacher = tiny_model()
    with torch.no_grad():
        teacher.classifier.out_proj.bias += torch.tensor([1.0, -1.0])  # a teacher that disagrees
    terms = [TaskLoss(0.5), SoftTargetKL(2.0, temperature=3.0)]
    trainer = CompressionTrainer(
        model=tiny_model(), args=arguments(tmp_path), train_dataset=rows(), loss_terms=terms, teacher=teacher
    )
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 3
    for log in logs:
        assert log["loss_kd"] > 0
        assert log["loss"] == pytest.approx(0.5 * log["loss_task"] + 2.0 * log["loss_kd"], rel=1e-3)


def test_param_groups_get_their_own_learning_rate_and_keep_decay_rules(tmp_path: Path):
    model = tiny_model()
    groups = [ParamGroup("classifier", r"^classifier\.", learning_rate=0.05)]
    trainer = CompressionTrainer(
        model=model, args=arguments(tmp_path, weight_decay=0.01), train_dataset=rows(), param_groups=groups
    )
    optimizer = trainer.create_optimizer()
    by_group = {(g["name"], g["weight_decay"]): g for g in optimizer.param_groups}
    assert set(by_group) == {("classifier", 0.01), ("classifier", 0.0), ("default", 0.01), ("default", 0.0)}
    assert by_group[("classifier", 0.01)]["lr"] == 0.05 and by_group[("default", 0.01)]["lr"] == 1e-3
    classifier = {id(p) for p in model.classifier.parameters()}
    assert {id(p) for g in by_group.values() if g["name"] == "classifier" for p in g["params"]} == classifier
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    trainer.train()  # the scheduler scales each group from its own rate
    rates = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert rates["classifier"] == pytest.approx(50 * rates["default"])


def test_a_term_that_needs_a_teacher_without_one_and_duplicate_names_are_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match=r"loss terms \['kd'\] need a teacher"):
        CompressionTrainer(model=tiny_model(), args=arguments(tmp_path), loss_terms=[SoftTargetKL()])
    with pytest.raises(ValueError, match="distinct names"):
        CompressionTrainer(
            model=tiny_model(), args=arguments(tmp_path), loss_terms=[TaskLoss(), TaskLoss(2.0)]
        )


def test_layered_terms_pair_student_layer_m_with_teacher_layer_g():
    """TinyBERT's map: hidden states are indexed from the embeddings (0), attention scores from layer 1 (0)."""
    from types import SimpleNamespace

    from nlpcompress import distillation_losses as losses
    from nlpcompress.loss_terms import AttentionMSE, HiddenMSE

    generator = torch.Generator().manual_seed(2)
    hidden = [torch.randn(2, 5, 4, generator=generator) for _ in range(7)]  # embeddings + 6 teacher layers
    scores = [torch.randn(2, 3, 5, 5, generator=generator) for _ in range(6)]
    student = SimpleNamespace(
        hidden_states=(hidden[0], hidden[1], hidden[5]), attention_scores=(scores[0], scores[4])
    )
    teacher = SimpleNamespace(hidden_states=tuple(hidden), attention_scores=tuple(scores))
    mask = torch.ones(2, 5)
    batch = LossBatch(student, teacher, mask, model=None)
    hidden_term, attention_term = HiddenMSE(1.0, [3, 6])(batch), AttentionMSE(1.0, [3, 6])(batch)
    expected_hidden = losses.hidden_mse(hidden[1], hidden[3], mask) + losses.hidden_mse(
        hidden[5], hidden[6], mask
    )
    expected_attention = losses.attention_mse(scores[0], scores[2], mask) + losses.attention_mse(
        scores[4], scores[5], mask
    )
    torch.testing.assert_close(hidden_term, expected_hidden)
    torch.testing.assert_close(attention_term, expected_attention)
    assert HiddenMSE(1.0, [2, 6])(LossBatch(teacher, teacher, mask, None)) > 0
    same = SimpleNamespace(
        hidden_states=(hidden[0], hidden[2], hidden[6]), attention_scores=(scores[1], scores[5])
    )
    assert HiddenMSE(1.0, [2, 6])(LossBatch(same, teacher, mask, None)) == 0
    assert AttentionMSE(1.0, [2, 6])(LossBatch(same, teacher, mask, None)) == 0


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_terms(tmp_path: Path):
    from nlpcompress.trainer import TrainingDiverged

    class Explodes(LossTerm):
        kind = "explodes"
        uses_teacher = False

        def __call__(self, batch: LossBatch) -> torch.Tensor:
            step = trainer.state.global_step
            return batch.student.loss * (float("nan") if step == 2 else 1.0)

    trainer = CompressionTrainer(
        model=tiny_model(),
        args=arguments(tmp_path, max_steps=5),
        train_dataset=rows(),
        loss_terms=[Explodes()],
    )
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3 \(explodes=nan\)"):
        trainer.train()


def test_resume_skips_a_checkpoint_the_trainer_did_not_finish_writing(tmp_path):
    from nlpcompress.stages.training import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "absent") is None
    for step, complete in ((4, True), (8, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / ("trainer_state.json" if complete else "rng_state_1.pth")).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
