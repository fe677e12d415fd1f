"""DistillationTrainer: the compression Trainer configured with a frozen teacher and the distillation terms."""

from typing import Any

import torch
from torch import nn
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from nlpcompress import distillation_losses as losses
from nlpcompress.compact import CompactBertConfig
from nlpcompress.distill.config import DistillationConfig
from nlpcompress.errors import ConfigError
from nlpcompress.loss_terms import (
    AttentionMSE,
    CosineHidden,
    EmbeddingMSE,
    HiddenMSE,
    LossTerm,
    SoftCrossEntropy,
    SoftTargetKL,
    TaskLoss,
)
from nlpcompress.trainer import CompressionTrainer
from nlpcompress.vocab import token_ids_read


class ProjectedStudent(nn.Module):
    """The student with TinyBERT's learned projections W_e and W_h (Jiao et al. 2020, Eq. 9-10).

    One module, so the optimizer, DDP and checkpoints see the projections; its forward returns the
    student's output with ``hidden_states`` mapped into the teacher's width. Only ``student`` is kept
    after training.
    """

    def __init__(self, student: nn.Module, teacher_width: int):
        super().__init__()
        self.student = student
        width = student.config.hidden_size
        self.embedding_projection = nn.Linear(width, teacher_width)
        self.hidden_projection = nn.Linear(width, teacher_width)

    @property
    def config(self):
        return self.student.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attention_scores: bool = False,
    ) -> ModelOutput:
        output = self.student(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            labels=labels,
            output_hidden_states=output_hidden_states,
            output_attention_scores=output_attention_scores,
        )
        if output.hidden_states is not None:
            embeddings, *layers = output.hidden_states
            output.hidden_states = (
                self.embedding_projection(embeddings),
                *(self.hidden_projection(h) for h in layers),
            )
        return output


def mlm_collator(
    tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15
) -> DataCollatorForLanguageModeling:
    """DistilBERT/BERT masking (Devlin et al. 2019 §3.1): 15% of tokens, of which 80% [MASK], 10% random, 10% kept."""
    return DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=mlm_probability, mask_replace_prob=0.8, random_replace_prob=0.1
    )


def check_vocabularies(
    student: nn.Module,
    teacher: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None = None,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
) -> None:
    """Teacher and student must read the same token ids: same vocabulary size and, when given, same vocab."""
    student_size, teacher_size = token_ids_read(student.config), token_ids_read(teacher.config)
    if student_size != teacher_size:
        raise ConfigError(
            "teacher", f"vocab_size {teacher_size}", f"the student's vocabulary has {student_size} tokens"
        )
    if (
        tokenizer is not None
        and teacher_tokenizer is not None
        and tokenizer.get_vocab() != teacher_tokenizer.get_vocab()
    ):
        raise ConfigError(
            "teacher",
            type(teacher_tokenizer).__name__,
            "the teacher's tokenizer has a different vocabulary; distillation needs the same tokenization",
        )


def distillation_terms(config: DistillationConfig, teacher_layers: list[int]) -> list[LossTerm]:
    """The weighted loss terms of ``config``, named after their weights (``ce``, ``task``, ``cos``, ...).

    ``ce`` is T²·KL for distilbert and kd, TinyBERT's soft cross-entropy for tinybert (MSE on one
    regression output in both cases); ``hidn`` and ``attn`` pair student layer m with teacher layer
    ``teacher_layers[m - 1]``.
    """
    soft = SoftCrossEntropy if config.method == "tinybert" else SoftTargetKL
    makers = {
        "ce": lambda w: soft(w, temperature=config.temperature, name="ce"),
        "task": TaskLoss,
        "cos": CosineHidden,
        "embd": EmbeddingMSE,
        "hidn": lambda w: HiddenMSE(w, teacher_layers),
        "attn": lambda w: AttentionMSE(w, teacher_layers),
    }
    return [makers[name](weight) for name, weight in config.weights.items()]


class DistillationTrainer(CompressionTrainer):
    """Distils ``teacher`` into ``model`` (DistilBERT triple loss, TinyBERT, plain KD): a CompressionTrainer
    whose loss terms come from ``distillation`` (``distillation_terms``).

    With TinyBERT's intermediate phase and different widths, the trained model is a
    ``ProjectedStudent``; ``trainer.student`` and ``save_model`` give the bare student. With ``mlm``,
    batches are masked as in BERT pre-training (``mlm_collator``).
    """

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module,
        distillation: DistillationConfig,
        teacher_tokenizer: PreTrainedTokenizerBase | None = None,
        **kwargs: Any,
    ):
        model = kwargs.pop("model", None)
        if model is None:
            raise TypeError("DistillationTrainer needs the student as model=")
        check_vocabularies(model, teacher, kwargs.get("processing_class"), teacher_tokenizer)
        self.distillation = distillation
        self.teacher_layers = _resolve_teacher_layers(model, teacher, distillation)
        if distillation.mlm and kwargs.get("data_collator") is None:
            if kwargs.get("processing_class") is None:
                raise ConfigError("mlm", True, "masking needs the tokenizer as processing_class=")
            kwargs["data_collator"] = mlm_collator(kwargs["processing_class"])
        widths = model.config.hidden_size, teacher.config.hidden_size
        if widths[0] != widths[1] and {"embd", "hidn"} & set(distillation.weights):
            model = ProjectedStudent(model, widths[1])
        super().__init__(
            *args,
            model=model,
            loss_terms=distillation_terms(distillation, self.teacher_layers),
            teacher=teacher,
            teacher_dtype=distillation.teacher_dtype,
            **kwargs,
        )

    @property
    def student(self) -> nn.Module:
        """The student without training-only parts (TinyBERT projections)."""
        return self.model.student if isinstance(self.model, ProjectedStudent) else self.model

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints keep the projections (exact resume); a final save writes the bare student only."""
        if _internal_call or not isinstance(self.model, ProjectedStudent):
            super().save_model(output_dir, _internal_call)
            return
        if self.args.should_save:
            output_dir = output_dir or self.args.output_dir
            self.student.save_pretrained(output_dir)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)


def _resolve_teacher_layers(student: nn.Module, teacher: nn.Module, config: DistillationConfig) -> list[int]:
    """The checked teacher layer for each student layer; also checks widths and heads the terms need."""
    depth, teacher_depth = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    teacher_layers = config.teacher_layers or losses.uniform_layer_map(depth, teacher_depth)
    try:
        teacher_layers = losses.check_layer_map(teacher_layers, depth, teacher_depth)
    except ValueError as err:
        raise ConfigError("teacher_layers", teacher_layers, str(err)) from None
    if student.config.num_labels != teacher.config.num_labels and "ce" in config.weights:
        raise ConfigError(
            "teacher", f"{teacher.config.num_labels} labels", f"the student has {student.config.num_labels}"
        )
    if "cos" in config.weights and student.config.hidden_size != teacher.config.hidden_size:
        raise ConfigError(
            "alpha_cos",
            config.alpha_cos,
            f"the cosine term needs equal widths (student {student.config.hidden_size}, teacher "
            f"{teacher.config.hidden_size}); set alpha_cos: 0 or use method tinybert",
        )
    if "attn" in config.weights:
        _check_heads(student.config, teacher.config, teacher_layers)
    return teacher_layers


def _check_heads(student: Any, teacher: Any, teacher_layers: list[int]) -> None:
    """The attention term compares head by head: compact models with equal head counts per mapped layer."""
    if not (isinstance(student, CompactBertConfig) and isinstance(teacher, CompactBertConfig)):
        raise ConfigError(
            "alpha_attn", "non-compact model", "attention scores need compact models on both sides"
        )

    def heads(config: CompactBertConfig, depth: int) -> int:
        return config.heads_per_layer[config.layer_map[depth]]

    for m, g in enumerate(teacher_layers, start=1):
        if heads(student, m - 1) != heads(teacher, g - 1):
            raise ConfigError(
                "alpha_attn",
                teacher_layers,
                f"student layer {m} has {heads(student, m - 1)} heads, teacher layer {g} has "
                f"{heads(teacher, g - 1)}; the attention term needs equal head counts (or alpha_attn: 0)",
            )
