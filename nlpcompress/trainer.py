"""CompressionTrainer: the Hugging Face Trainer with loss terms, an optional frozen teacher and named parameter groups.

Only ``compute_loss``, ``create_optimizer`` and ``log`` are overridden, so callbacks, gradient
accumulation, DDP and checkpoints behave as in the plain Trainer. Techniques configure it: the
distillation terms (``DistillationTrainer``), a score regulariser and a score learning rate
(movement pruning). Schedules stay in callbacks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from nlpcompress.errors import UserError
from nlpcompress.loss_terms import LossBatch, LossTerm, TaskLoss
from nlpcompress.parametrize import clone


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; training stops with the step and the terms named."""


TEACHER_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ParamGroup:
    """Parameters whose names match ``pattern`` (a regex, searched) train at their own ``learning_rate``.

    ``weight_decay`` None keeps the Trainer's rule (decay except biases and LayerNorms).
    """

    name: str
    pattern: str
    learning_rate: float
    weight_decay: float | None = None


class CompressionTrainer(Trainer):
    """Trainer whose training loss is Σ weight · term over ``loss_terms`` (default: the task loss alone).

    ``teacher``: frozen (eval mode, no gradients, on the training device, in ``teacher_dtype``), run
    on every training batch when a term needs it. Each term's mean since the last log is logged as
    ``loss_<name>`` (averaged over processes). Evaluation uses the model's own loss. A non-finite
    training loss stops training (``TrainingDiverged``, naming the step and every term's value).
    ``param_groups``: optimizer groups with their own learning rates; the rest is grouped as usual.
    """

    def __init__(
        self,
        *args: Any,
        loss_terms: Sequence[LossTerm] = (),
        teacher: nn.Module | None = None,
        teacher_dtype: str = "float32",
        param_groups: Sequence[ParamGroup] = (),
        **kwargs: Any,
    ):
        self.loss_terms = list(loss_terms) or [TaskLoss()]
        names = [term.name for term in self.loss_terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss terms need distinct names; got {names}")
        if teacher is None and any(term.uses_teacher for term in self.loss_terms):
            needing = [term.name for term in self.loss_terms if term.uses_teacher]
            raise ValueError(f"loss terms {needing} need a teacher; pass teacher=")
        if teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype {teacher_dtype!r}; allowed: {', '.join(TEACHER_DTYPES)}")
        self.param_groups = list(param_groups)
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean
        self.teacher = teacher
        if teacher is not None:
            dtype = TEACHER_DTYPES[teacher_dtype]
            if (
                next(teacher.parameters()).dtype != dtype
            ):  # converting in place would change the caller's model
                teacher = clone(teacher)
            self.teacher = teacher.to(device=self.args.device, dtype=dtype)
            self.teacher.eval().requires_grad_(False)
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_batches = 0

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Σ_term weight · term on the batch while training; the model's own loss when evaluating."""
        if not model.training:
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        flags = {flag: True for term in self.loss_terms for flag in term.outputs}
        outputs = model(**inputs, **flags)
        teacher_outputs = None
        if any(term.uses_teacher for term in self.loss_terms):
            with torch.no_grad():
                teacher_outputs = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}, **flags)
        batch = LossBatch(
            outputs, teacher_outputs, inputs.get("attention_mask"), self.accelerator.unwrap_model(model)
        )
        values = {term.name: term(batch) for term in self.loss_terms}
        loss = sum(term.weight * values[term.name] for term in self.loss_terms)
        if not torch.isfinite(loss.detach()):
            terms = ", ".join(f"{name}={float(value.detach()):.4g}" for name, value in values.items())
            raise TrainingDiverged(
                f"the training loss became {float(loss.detach()):.4g} at step {self.state.global_step + 1} ({terms}); "
                "lower the learning rate or the loss weights (the last saved checkpoint is kept)"
            )
        self._accumulate(values)
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
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

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer class and settings, with one parameter group per ``ParamGroup``."""
        if self.optimizer is None and self.param_groups:
            opt_model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(self.grouped_parameters(opt_model), **optimizer_kwargs)
        return super().create_optimizer(model)

    def grouped_parameters(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer groups: each ``ParamGroup`` (first match wins), then the rest with and without decay."""
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[str, float], dict[str, Any]] = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            group = next((g for g in self.param_groups if re.search(g.pattern, name)), None)
            weight_decay = self.args.weight_decay if name in decay else 0.0
            if group is not None and group.weight_decay is not None:
                weight_decay = group.weight_decay
            label = group.name if group is not None else "default"
            lr = group.learning_rate if group is not None else self.args.learning_rate
            entry = groups.setdefault(
                (label, weight_decay), {"params": [], "weight_decay": weight_decay, "lr": lr, "name": label}
            )
            entry["params"].append(parameter)
        return list(groups.values())
