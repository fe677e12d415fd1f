"""DistillationTrainer: the Hugging Face Trainer with a frozen teacher; only ``compute_loss`` changes."""

from typing import Any

import torch
from torch import nn
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, Trainer
from transformers.utils import ModelOutput

from nlpcompress.compact import CompactBertConfig
from nlpcompress.distill import losses
from nlpcompress.distill.config import DistillationConfig, DistillationConfigError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    student_size, teacher_size = student.config.vocab_size, teacher.config.vocab_size
    if student_size != teacher_size:
        raise DistillationConfigError(
            "teacher", f"vocab_size {teacher_size}", f"the student's vocabulary has {student_size} tokens"
        )
    if (
        tokenizer is not None
        and teacher_tokenizer is not None
        and tokenizer.get_vocab() != teacher_tokenizer.get_vocab()
    ):
        raise DistillationConfigError(
            "teacher",
            type(teacher_tokenizer).__name__,
            "the teacher's tokenizer has a different vocabulary; distillation needs the same tokenization",
        )


class DistillationTrainer(Trainer):
    """Trainer that distils ``teacher`` into ``model`` (DistilBERT triple loss, TinyBERT, plain KD).

    The teacher is frozen (eval mode, no gradients, on the training device, optionally half
    precision). Only ``compute_loss`` and ``log`` are overridden, so callbacks, gradient accumulation,
    DDP and checkpoints behave as in the plain Trainer. Each loss term's mean since the last log is
    added to the logs as ``loss_<term>``. With TinyBERT's intermediate phase and different widths, the
    trained model is a ``ProjectedStudent``; ``trainer.student`` and ``save_model`` give the bare student.
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
        self.layer_map = _resolve_layer_map(model, teacher, distillation)
        if distillation.mlm and kwargs.get("data_collator") is None:
            if kwargs.get("processing_class") is None:
                raise DistillationConfigError("mlm", True, "masking needs the tokenizer as processing_class=")
            kwargs["data_collator"] = mlm_collator(kwargs["processing_class"])
        widths = model.config.hidden_size, teacher.config.hidden_size
        needs_projection = widths[0] != widths[1] and {"embd", "hidn"} & set(distillation.weights)
        if needs_projection:
            model = ProjectedStudent(model, widths[1])
        super().__init__(*args, model=model, **kwargs)
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        self.teacher = teacher.to(device=self.args.device, dtype=_DTYPES[distillation.teacher_dtype])
        self.teacher.eval().requires_grad_(False)
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_batches = 0

    @property
    def student(self) -> nn.Module:
        """The student without training-only parts (TinyBERT projections)."""
        return self.model.student if isinstance(self.model, ProjectedStudent) else self.model

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Σ_term weight · term on the batch while training; the student's own loss when evaluating."""
        if not model.training:
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        weights = self.distillation.weights
        flags = self._output_flags()
        outputs = model(**inputs, **flags)
        with torch.no_grad():
            teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            teacher_outputs = self.teacher(**teacher_inputs, **flags)
        terms = self._terms(outputs, teacher_outputs, inputs.get("attention_mask"))
        loss = sum(weights[name] * value for name, value in terms.items())
        self._accumulate(terms)
        return (loss, outputs) if return_outputs else loss

    def _output_flags(self) -> dict[str, bool]:
        weights = self.distillation.weights
        flags = {}
        if {"cos", "embd", "hidn"} & set(weights):
            flags["output_hidden_states"] = True
        if "attn" in weights:
            flags["output_attention_scores"] = True
        return flags

    def _terms(
        self, student: ModelOutput, teacher: ModelOutput, mask: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Each weighted term's unweighted value on this batch."""
        config, weights, terms = self.distillation, self.distillation.weights, {}
        if "ce" in weights:
            s_logits, t_logits = student.logits, teacher.logits.float()
            if s_logits.shape[-1] == 1:
                terms["ce"] = losses.regression_distill(s_logits, t_logits)
            elif config.method == "tinybert":
                terms["ce"] = losses.soft_cross_entropy(s_logits, t_logits, config.temperature, mask)
            else:
                terms["ce"] = losses.soft_target_kl(s_logits, t_logits, config.temperature, mask)
        if "task" in weights:
            if student.loss is None:
                raise DistillationConfigError("alpha_task", weights["task"], "the batch has no labels")
            terms["task"] = student.loss
        if "cos" in weights:
            terms["cos"] = losses.cosine_hidden(student.hidden_states[-1], teacher.hidden_states[-1], mask)
        if "embd" in weights:
            terms["embd"] = losses.hidden_mse(student.hidden_states[0], teacher.hidden_states[0], mask)
        if "hidn" in weights:
            terms["hidn"] = sum(
                losses.hidden_mse(student.hidden_states[m], teacher.hidden_states[g], mask)
                for m, g in enumerate(self.layer_map, start=1)
            )
        if "attn" in weights:
            terms["attn"] = sum(
                losses.attention_mse(student.attention_scores[m - 1], teacher.attention_scores[g - 1], mask)
                for m, g in enumerate(self.layer_map, start=1)
            )
        return terms

    def _accumulate(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            self._term_sums[name] = self._term_sums.get(name, 0.0) + value.detach().float()
        self._term_batches += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``loss_<term>`` (mean since the last training log, averaged over processes) to training logs."""
        if "loss" in logs and self._term_batches:
            names = sorted(self._term_sums)
            means = torch.stack([self._term_sums[n] for n in names]) / self._term_batches
            means = self.accelerator.reduce(means, reduction="mean")
            logs.update({f"loss_{n}": round(v, 6) for n, v in zip(names, means.tolist(), strict=True)})
            self._term_sums, self._term_batches = {}, 0
        super().log(logs, start_time)

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


def _resolve_layer_map(student: nn.Module, teacher: nn.Module, config: DistillationConfig) -> list[int]:
    """The checked teacher layer for each student layer; also checks widths and heads the terms need."""
    depth, teacher_depth = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    layer_map = config.layer_map or losses.uniform_layer_map(depth, teacher_depth)
    try:
        layer_map = losses.check_layer_map(layer_map, depth, teacher_depth)
    except ValueError as err:
        raise DistillationConfigError("layer_map", layer_map, str(err)) from None
    if student.config.num_labels != teacher.config.num_labels and "ce" in config.weights:
        raise DistillationConfigError(
            "teacher", f"{teacher.config.num_labels} labels", f"the student has {student.config.num_labels}"
        )
    if "cos" in config.weights and student.config.hidden_size != teacher.config.hidden_size:
        raise DistillationConfigError(
            "alpha_cos",
            config.alpha_cos,
            f"the cosine term needs equal widths (student {student.config.hidden_size}, teacher "
            f"{teacher.config.hidden_size}); set alpha_cos: 0 or use method tinybert",
        )
    if "attn" in config.weights:
        _check_heads(student.config, teacher.config, layer_map)
    return layer_map


def _check_heads(student: Any, teacher: Any, layer_map: list[int]) -> None:
    """The attention term compares head by head: compact models with equal head counts per mapped layer."""
    if not (isinstance(student, CompactBertConfig) and isinstance(teacher, CompactBertConfig)):
        raise DistillationConfigError(
            "alpha_attn", "non-compact model", "attention scores need compact models on both sides"
        )

    def heads(config: CompactBertConfig, depth: int) -> int:
        return config.heads_per_layer[config.layer_map[depth]]

    for m, g in enumerate(layer_map, start=1):
        if heads(student, m - 1) != heads(teacher, g - 1):
            raise DistillationConfigError(
                "alpha_attn",
                layer_map,
                f"student layer {m} has {heads(student, m - 1)} heads, teacher layer {g} has "
                f"{heads(teacher, g - 1)}; the attention term needs equal head counts (or alpha_attn: 0)",
            )
