"""Distillation: loss terms against hand-computed values, the trainer, student init, the stage, DDP."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _require import missing
from datasets import Dataset
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from nlpcompress import distillation_losses as losses
from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.context import RunData
from nlpcompress.context import stage_context as build_context
from nlpcompress.distill import (
    DistillationConfig,
    DistillationTrainer,
    ProjectedStudent,
    every_other_layer,
    fresh_student,
    mlm_collator,
    student_from_teacher,
)
from nlpcompress.errors import ConfigError, UserError
from nlpcompress.glue import get_task
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import check_teachers, run_stages
from nlpcompress.stages import StageContext

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


def tokenizer(vocab: list[str] = VOCAB) -> BertTokenizer:
    return BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})


def compact(layers: int = 4, hidden: int = 16, heads: int = 4, vocab: int = 50, seed: int = 0):
    torch.manual_seed(seed)
    config = CompactBertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        num_labels=2,
    )
    return CompactBertForSequenceClassification(config)


def batch(size: int = 4, length: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (size, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0  # one padded row
    ids[0, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(size) % 2}


def dataset(rows: int = 32, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (rows, 8), generator=generator)
    labels = (ids[:, 0] > 27).long()  # learnable
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * 8] * rows, "labels": labels.tolist()}
    )


def trainer_for(student, teacher, config: DistillationConfig, tmp_path: Path, **args) -> DistillationTrainer:
    from transformers import DataCollatorWithPadding, TrainingArguments

    arguments = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        max_steps=4,
        disable_tqdm=True,
        **args,
    )
    tok = tokenizer()
    return DistillationTrainer(
        model=student,
        args=arguments,
        train_dataset=dataset(),
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
        teacher=teacher,
        distillation=config,
    )


# ---------------------------------------------------------------- loss terms, by hand


def test_soft_target_kl_hand_value_and_t_squared_scaling():
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])

    def kl(t: float) -> float:
        ps = [math.exp(1 / t) / (math.exp(1 / t) + 1), 1 / (math.exp(1 / t) + 1)]
        pt = ps[::-1]
        return sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))

    assert losses.soft_target_kl(student, teacher, 1.0).item() == pytest.approx(kl(1.0), rel=1e-5)
    # T = 2: softened distributions, multiplied by T² = 4
    assert losses.soft_target_kl(student, teacher, 2.0).item() == pytest.approx(4 * kl(2.0), rel=1e-5)
    assert losses.soft_target_kl(teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_target_kl_token_level_excludes_padding():
    student = torch.zeros(1, 2, 2)
    teacher = torch.tensor([[[0.0, math.log(3.0)], [50.0, -50.0]]])  # second token padded: huge if counted
    mask = torch.tensor([[1, 0]])
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # teacher (1/4, 3/4) vs uniform
    assert losses.soft_target_kl(student, teacher, 1.0, mask).item() == pytest.approx(expected, rel=1e-5)


def test_soft_cross_entropy_hand_value_without_t_squared():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2 * math.log(3.0)]])
    # t = 2: teacher (1/4, 3/4), student uniform -> -(1/4 + 3/4) log(1/2) = log 2, no T² factor
    assert losses.soft_cross_entropy(student, teacher, 2.0).item() == pytest.approx(math.log(2), rel=1e-5)


def test_cosine_hidden_matches_cosine_embedding_loss_and_masks():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [-5.0, -5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert losses.cosine_hidden(student, teacher, mask).item() == pytest.approx(0.5)  # (0 + 1) / 2
    reference = torch.nn.CosineEmbeddingLoss()(student[0, :2], teacher[0, :2], torch.ones(2))
    assert losses.cosine_hidden(student, teacher, mask).item() == pytest.approx(reference.item())


def test_hidden_mse_hand_value_with_mask():
    student = torch.tensor([[[1.0, 2.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    assert losses.hidden_mse(student, teacher, torch.tensor([[1, 0]])).item() == pytest.approx(2.5)
    assert losses.hidden_mse(student, teacher, None).item() == pytest.approx((1 + 4 + 81 + 81) / 4)


def test_attention_mse_averages_heads_over_unpadded_pairs():
    student = torch.zeros(1, 2, 2, 2)
    teacher = torch.full((1, 2, 2, 2), 100.0)  # every pair touching the padded token: excluded
    teacher[0, 0, 0, 0], teacher[0, 1, 0, 0] = 1.0, 3.0
    mask = torch.tensor([[1, 0]])
    assert losses.attention_mse(student, teacher, mask).item() == pytest.approx((1 + 9) / 2)


def test_regression_distill_is_mse():
    assert losses.regression_distill(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).item() == 2.5


@pytest.mark.parametrize(
    ("student", "teacher", "expected"),
    [
        (3, 6, [2, 4, 6]),
        (4, 12, [3, 6, 9, 12]),
        (6, 6, [1, 2, 3, 4, 5, 6]),
        (4, 6, [1, 3, 4, 6]),
        (2, 7, [3, 7]),
    ],
)
def test_uniform_layer_map(student: int, teacher: int, expected: list[int]):
    assert losses.uniform_layer_map(student, teacher) == expected


@pytest.mark.parametrize(
    ("layer_map", "needle"), [([1, 2], "3 layers"), ([0, 2, 4], "out of range"), ([2, 4, 7], "1..6")]
)
def test_check_layer_map_rejects(layer_map: list[int], needle: str):
    with pytest.raises(ValueError, match=needle):
        losses.check_layer_map(layer_map, 3, 6)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"temperature": 0.0}, "temperature: must be > 0"),
        ({"temperature": -1.0}, "temperature: must be > 0"),
        ({"method": "bert-of-theseus"}, "unknown method; allowed: distilbert, tinybert, kd"),
        ({"alpha_ce": -0.5}, "alpha_ce: must be >= 0"),
        ({"alpha_ce": 0.0, "alpha_task": 0.0, "alpha_cos": 0.0}, "all loss weights are zero"),
        ({"method": "tinybert"}, "tinybert needs phase"),
        ({"method": "kd", "alpha_attn": 1.0}, "alpha_attn: does not apply to method kd"),
        ({"teacher_dtype": "int8"}, "teacher_dtype"),
    ],
)
def test_bad_parameters_rejected_in_one_line(kwargs: dict, needle: str):
    with pytest.raises(ConfigError, match=needle) as info:
        DistillationConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_method_defaults():
    assert DistillationConfig().weights == {"ce": 5.0, "task": 2.0, "cos": 1.0}
    tiny = DistillationConfig(method="tinybert", phase="intermediate")
    assert tiny.weights == {"embd": 1.0, "hidn": 1.0, "attn": 1.0}
    assert DistillationConfig(method="tinybert", phase="prediction").weights == {"ce": 1.0}


# ---------------------------------------------------------------- student initialisation


def test_student_from_teacher_copies_chosen_layers():
    teacher = compact(layers=4)
    student = student_from_teacher(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for new, old in ((0, 1), (1, 3)):
        key = "compact_bert.encoder.layers.{}.attention.query.weight"
        assert torch.equal(s_state[key.format(new)], t_state[key.format(old)])
    assert torch.equal(s_state["classifier.out_proj.weight"], t_state["classifier.out_proj.weight"])
    assert every_other_layer(6) == [1, 3, 5] and every_other_layer(5) == [0, 2, 4]


def test_student_from_teacher_follows_pruned_heads():
    teacher = compact(layers=4)
    pruned = CompactBertConfig(**{**teacher.config.to_dict(), "heads_per_layer": [4, 2, 4, 1]})
    student = student_from_teacher(CompactBertForSequenceClassification(pruned), [1, 3])
    assert student.config.heads_per_layer == [2, 1]


@pytest.mark.parametrize("layers", [[], [4], [3, 1], [1, 1]])
def test_student_from_teacher_rejects_bad_layers(layers: list[int]):
    with pytest.raises(ConfigError, match=r"0\.\.3"):
        student_from_teacher(compact(layers=4), layers)


def test_fresh_student_shape():
    student = fresh_student(compact(layers=4, hidden=16), num_layers=2, hidden_size=8)
    config = student.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 8, 4)
    assert config.vocab_size == 50 and config.num_labels == 2 and config.intermediate_size == 32


# ---------------------------------------------------------------- the trainer


def test_gradients_flow_to_student_only(tmp_path: Path):
    teacher, student = compact(seed=1), compact(layers=2, hidden=8, seed=2)
    config = DistillationConfig(method="tinybert", phase="intermediate")
    trainer = trainer_for(student, teacher, config, tmp_path)
    assert isinstance(trainer.model, ProjectedStudent)  # widths differ: W_e, W_h are trained
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch())
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    assert student.compact_bert.encoder.layers[0].attention.query.weight.grad is not None
    assert trainer.model.hidden_projection.weight.grad is not None


def test_distilbert_training_logs_each_term_and_changes_student_only(tmp_path: Path):
    teacher = compact(seed=1)
    student = student_from_teacher(teacher, [1, 3])
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = trainer_for(student, teacher, DistillationConfig(), tmp_path)
    trainer.train()
    logged = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logged) == 4
    for log in logged:
        assert {"loss_ce", "loss_task", "loss_cos"} <= set(log)
        weighted = 5 * log["loss_ce"] + 2 * log["loss_task"] + log["loss_cos"]
        assert log["loss"] == pytest.approx(weighted, rel=1e-3)  # logging_steps 1: the same batch
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in student_before.items())


def test_projections_removed_on_save(tmp_path: Path):
    teacher, student = compact(seed=1), compact(layers=2, hidden=8, seed=2)
    trainer = trainer_for(
        student, teacher, DistillationConfig(method="tinybert", phase="intermediate"), tmp_path
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    keys = load_file(tmp_path / "saved" / "model.safetensors").keys()
    assert not any("projection" in key for key in keys)
    assert set(keys) == set(student.state_dict())
    reloaded = CompactBertForSequenceClassification.from_pretrained(tmp_path / "saved")
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    student.eval()
    assert torch.allclose(reloaded.eval()(**inputs).logits, student(**inputs).logits, atol=1e-6)
    assert trainer.student is student


def test_teacher_half_precision(tmp_path: Path):
    """A bfloat16 teacher gives the float32 teacher's soft-target loss within bfloat16 precision; the
    caller's teacher stays float32 (the trainer converts a copy)."""
    first_losses = {}
    for dtype in ("float32", "bfloat16"):
        teacher = compact(seed=1)
        student = student_from_teacher(teacher, [1, 3])
        trainer = trainer_for(
            student, teacher, DistillationConfig(method="kd", teacher_dtype=dtype), tmp_path / dtype
        )
        trainer.train()
        assert next(trainer.teacher.parameters()).dtype == getattr(torch, dtype)
        assert next(teacher.parameters()).dtype == torch.float32
        logged = [log["loss_ce"] for log in trainer.state.log_history if "loss" in log]
        assert len(logged) == 4 and all(math.isfinite(value) for value in logged)
        first_losses[dtype] = logged[0]
    assert first_losses["bfloat16"] == pytest.approx(first_losses["float32"], rel=0.05, abs=1e-3)


def test_evaluation_returns_logits_only(tmp_path: Path):
    teacher = compact(seed=1)
    trainer = trainer_for(student_from_teacher(teacher, [1, 3]), teacher, DistillationConfig(), tmp_path)
    trainer.model.eval()  # as Trainer.evaluate does
    loss, logits, labels = trainer.prediction_step(trainer.model, batch(), prediction_loss_only=False)
    assert logits.shape == (4, 2) and labels.shape == (4,) and loss.ndim == 0


@pytest.mark.parametrize(
    ("teacher", "student", "config", "needle"),
    [
        (compact(vocab=60), compact(layers=2), DistillationConfig(), "vocabulary has 50 tokens"),
        (compact(), compact(layers=2, hidden=8), DistillationConfig(), "cosine term needs equal widths"),
        (
            compact(),
            compact(layers=2, hidden=16, heads=2),
            DistillationConfig(method="tinybert", phase="intermediate"),
            "equal head counts",
        ),
        (compact(), compact(layers=2), DistillationConfig(teacher_layers=[2, 5]), "out of range"),
    ],
)
def test_incompatible_pairs_rejected(tmp_path: Path, teacher, student, config, needle: str):
    with pytest.raises(ConfigError, match=needle):
        trainer_for(student, teacher, config, tmp_path)


def test_teacher_tokenizer_with_other_vocabulary_rejected(tmp_path: Path):
    other = tokenizer([*VOCAB[:-1], "zzz"])  # same size, one token differs
    with pytest.raises(ConfigError, match="different vocabulary"):
        DistillationTrainer(
            model=compact(layers=2),
            args=training_arguments_for(tmp_path),
            processing_class=tokenizer(),
            teacher=compact(),
            teacher_tokenizer=other,
            distillation=DistillationConfig(),
        )


def training_arguments_for(tmp_path: Path):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")


# ---------------------------------------------------------------- MLM (general distillation)


def test_mlm_collator_masks_15_percent_80_10_10():
    torch.manual_seed(0)
    tok = tokenizer()
    rows = [{"input_ids": list(range(5, 50)) * 4} for _ in range(64)]
    out = mlm_collator(tok)(rows)
    original = torch.tensor([row["input_ids"] for row in rows])
    chosen = out["labels"] != -100
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(out["labels"][chosen], original[chosen])
    replaced = out["input_ids"][chosen]
    masked = (replaced == tok.mask_token_id).float().mean().item()
    kept = (replaced == original[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03)
    assert kept == pytest.approx(0.1 + 0.1 / 45, abs=0.03)  # 10% kept, plus random draws of the same token


def test_mlm_distillation_with_masked_lm_models(tmp_path: Path):
    """General distillation on masked text: batches are masked, the task term is the student's MLM loss,
    the soft-target and cosine terms are token-level, and they vanish for a student equal to its teacher."""

    def masked_lm(layers: int, seed: int) -> BertForMaskedLM:
        torch.manual_seed(seed)
        return BertForMaskedLM(
            BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4,
                       intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
        )  # fmt: skip

    from transformers import TrainingArguments

    def distil(student, teacher, folder: str) -> DistillationTrainer:
        trainer = DistillationTrainer(
            model=student,
            args=TrainingArguments(output_dir=str(tmp_path / folder), report_to="none", max_steps=3, logging_steps=1,
                                   per_device_train_batch_size=8, disable_tqdm=True, seed=0),
            train_dataset=Dataset.from_dict({"input_ids": dataset()["input_ids"]}),
            processing_class=tokenizer(),
            teacher=teacher,
            distillation=DistillationConfig(mlm=True),
        )  # fmt: skip
        trainer.train()
        return trainer

    trainer = distil(masked_lm(2, 1), masked_lm(4, 2), "pair")
    batch = trainer.data_collator([{"input_ids": row} for row in dataset()["input_ids"][:8]])
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # masked, MLM labels
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 3
    for log in logs:
        weighted = 5 * log["loss_ce"] + 2 * log["loss_task"] + log["loss_cos"]
        assert log["loss"] == pytest.approx(weighted, rel=1e-3)
        assert log["loss_ce"] > 1e-3 and log["loss_cos"] > 1e-3
        assert log["loss_task"] > 2.0  # MLM cross-entropy over a 50-token vocabulary, untrained

    twin = distil(masked_lm(2, 1), masked_lm(2, 1), "twin")  # the teacher is the student's copy
    first = next(log for log in twin.state.log_history if "loss" in log)
    assert first["loss_ce"] == pytest.approx(0.0, abs=1e-5) and first["loss_cos"] == pytest.approx(
        0.0, abs=1e-5
    )


# ---------------------------------------------------------------- the recipe stage


def stage_recipe(tmp_path: Path, stages: list[dict]):
    return recipe_from_dict(
        {"model": "m", "task": "sst2", "output_dir": str(tmp_path), "stages": stages,
         "training": {"max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                      "logging_steps": 1, "report_to": "none"}}
    )  # fmt: skip


def stage_context(tmp_path: Path, recipe, stage, teacher=None) -> StageContext:
    data = RunData(get_task("sst2"), tokenizer(), dataset(), {"validation": dataset(16, seed=3)})
    return build_context(recipe, stage, data, tmp_path, teacher, progress=False)


def test_two_phase_tinybert_stage_passes_teacher_to_phase_two(tmp_path: Path):
    recipe = stage_recipe(
        tmp_path,
        [
            {"type": "distill", "method": "tinybert", "phase": "intermediate", "student": {"num_layers": 2, "hidden_size": 8}},
            {"type": "distill", "method": "tinybert", "phase": "prediction"},
        ],
    )  # fmt: skip
    teacher = compact(seed=1)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teachers_seen = []

    def context(stage, run_teacher):
        teachers_seen.append(run_teacher)
        return stage_context(tmp_path, recipe, stage, run_teacher)

    (_, first, _, _), (_, second, _, _) = run_stages(recipe.stages, teacher, context)
    assert teachers_seen == [None, teacher]  # phase two distils from phase one's teacher
    assert isinstance(first.model, CompactBertForSequenceClassification)
    assert first.model.config.hidden_size == 8 and first.info["teacher_layers"] == [2, 4]
    assert {"loss_embd", "loss_hidn", "loss_attn"} == set(first.info["last_loss_terms"])
    assert second.model is first.model and set(second.info["last_loss_terms"]) == {"loss_ce"}
    assert "accuracy" in second.metrics
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())


def test_stage_without_teacher_is_a_clear_error(tmp_path: Path):
    recipe = stage_recipe(tmp_path, [{"type": "distill", "method": "kd"}])
    with pytest.raises(UserError, match="no teacher; give student:"):
        recipe.stages[0].run(compact(), stage_context(tmp_path, recipe, recipe.stages[0]))
    with pytest.raises(
        UserError, match="stage 'distill' \\(distill\\) distils from the run's teacher, but no earlier"
    ):
        check_teachers(recipe.stages)  # the runner's check, before any data or model is loaded
    finetuned_first = stage_recipe(tmp_path, [{"type": "finetune"}, {"type": "distill", "method": "kd"}])
    assert check_teachers(finetuned_first.stages) == [True, False]


def test_recipe_errors_point_at_the_key():
    base = {"model": "m", "task": "sst2", "output_dir": "o"}
    with pytest.raises(UserError, match=r"stages\.0\.temperature: must be > 0 \(got -2\.0\)"):
        recipe_from_dict({**base, "stages": [{"type": "distill", "temperature": -2}]})
    with pytest.raises(UserError, match=r"stages\.0\.method: unknown method"):
        recipe_from_dict({**base, "stages": [{"type": "distill", "method": "patient"}]})


def test_shipped_recipes_load():
    from nlpcompress.recipe import load_recipe

    root = Path(__file__).parents[1] / "recipes"
    distil = load_recipe(root / "distilbert.yaml")
    tiny = load_recipe(root / "tinybert.yaml")
    assert [s.type for s in distil.stages] == ["finetune", "distill"]
    assert [getattr(s, "phase", None) for s in tiny.stages] == [None, "intermediate", "prediction"]


# ---------------------------------------------------------------- two processes (gloo, CPU)


def test_two_process_training(tmp_path: Path):
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        missing(f"torchrun beside {sys.executable}", "make setup (torch installs torchrun)")
    script = Path(__file__).with_name("_dist_distill.py")
    report = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(report)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(report.read_text())
    assert set(runs) == {"distilbert", "tinybert-intermediate"}
    for run in runs.values():
        assert run["world_size"] == 2
        assert run["losses_finite"] and run["logged_terms"]
        assert run["student_changed"] and not run["teacher_changed"]
        assert run["ranks_agree"]


# ---------------------------------------------------------------- MiniLM on real SST-2 rows


@pytest.mark.integration
def test_minilm_distilbert_stage_on_sst2(tmp_path: Path, glue_root: Path, minilm_path: str):
    from transformers import DataCollatorWithPadding

    from nlpcompress.glue import load_task_data
    from nlpcompress.models import load_compact, load_tokenizer

    torch.set_num_threads(2)
    task = get_task("sst2")
    tok = load_tokenizer("minilm-l6")
    train, evals = load_task_data(task, tok, glue_root, 64, max_train_samples=256, max_eval_samples=128)
    recipe = recipe_from_dict(
        {"model": "minilm-l6", "task": "sst2", "output_dir": str(tmp_path),
         "training": {"max_steps": 8, "per_device_train_batch_size": 32, "learning_rate": 1e-4, "report_to": "none",
                      "logging_steps": 4},
         "allow_untrained_teacher": True,  # the cosine term only needs the encoder; the head is not trained
         "stages": [{"type": "distill", "alpha_cos": 5.0, "student": {"layers": "every_other"}}]}
    )  # fmt: skip
    stage = recipe.stages[0]
    ctx = build_context(recipe, stage, RunData(task, tok, train, evals), tmp_path, progress=False)
    teacher = load_compact("minilm-l6", task)
    rows = evals["validation"].remove_columns("labels")
    probe = dict(DataCollatorWithPadding(tok)([rows[i] for i in range(32)]))

    def cosine_gap(student) -> float:
        student.eval()
        with torch.no_grad():
            s = student(**probe, output_hidden_states=True).hidden_states[-1]
            t = teacher.eval()(**probe, output_hidden_states=True).hidden_states[-1]
        return losses.cosine_hidden(s, t, probe["attention_mask"]).item()

    before = cosine_gap(student_from_teacher(teacher, [1, 3, 5]))
    out = stage.run(teacher, ctx)
    assert out.model.config.num_hidden_layers == 3
    assert {"loss_ce", "loss_task", "loss_cos"} == set(out.info["last_loss_terms"])
    assert cosine_gap(out.model) < 0.8 * before  # the student's last layer moved towards the teacher's
