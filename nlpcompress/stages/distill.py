"""The `distill` stage: DistilBERT triple loss, TinyBERT (two phases) or plain KD from a frozen teacher.

Who is teacher and who is student:
- with ``student:``, the incoming model is the teacher and the student is built from it;
- without, the incoming model is the student; its teacher is ``teacher:`` (a model folder or name),
  else the teacher of the distill stage that produced it (TinyBERT's prediction phase after the
  intermediate one). That handoff is a weak map keyed by the student object, so it survives any
  stages in between that keep the model object, and needs nothing from the runner.
"""

import copy
import weakref
from dataclasses import fields
from typing import Any, Literal

from pydantic import create_model, model_validator

from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.distill import (
    DistillationConfig,
    DistillationConfigError,
    DistillationTrainer,
    every_other_layer,
    fresh_student,
    student_from_teacher,
)
from nlpcompress.errors import UserError
from nlpcompress.models import load_compact, load_tokenizer
from nlpcompress.recipe import StageBase, _Schema, _validation_error, register_stage
from nlpcompress.stages.base import StageContext, StageOutput, register_runner
from nlpcompress.training import build_trainer, evaluate

# student model -> its frozen teacher, for a following distill stage (entries vanish with the student).
_TEACHERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class StudentSpec(_Schema):
    """``layers``: teacher depths to keep (0-based; DistilBERT init), or a fresh config by ``num_layers``."""

    layers: list[int] | Literal["every_other"] | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "StudentSpec":
        fresh = {k: v for k, v in self.model_dump().items() if k != "layers" and v is not None}
        if self.layers is None and self.num_layers is None:
            raise _validation_error(
                [((), {}, "student", "give layers (from the teacher) or num_layers (fresh)")]
            )
        if self.layers is not None and fresh:
            name = next(iter(fresh))
            raise _validation_error(
                [((name,), fresh[name], "student", "only for a fresh student, not with layers")]
            )
        return self

    def build(self, teacher: CompactBertForSequenceClassification) -> CompactBertForSequenceClassification:
        if self.num_layers is not None:
            return fresh_student(
                teacher, self.num_layers, self.hidden_size, self.num_attention_heads, self.intermediate_size
            )
        depth = teacher.config.num_hidden_layers
        layers = every_other_layer(depth) if self.layers == "every_other" else self.layers
        return student_from_teacher(teacher, layers)


# The stage's distillation keys are DistillationConfig's own fields, so the two cannot drift apart. ``mlm``
# is left out: general distillation on raw text needs a masked-LM head, which GLUE classifiers lack.
_DistillationKeys = create_model(
    "_DistillationKeys",
    __base__=_Schema,
    **{f.name: (f.type, f.default) for f in fields(DistillationConfig) if f.init and f.name != "mlm"},
)


@register_stage
class DistillStage(StageBase, _DistillationKeys):
    """Distil a frozen teacher into a student; parameters as in ``DistillationConfig``."""

    type: Literal["distill"]
    student: StudentSpec | None = None
    teacher: str | None = None

    @model_validator(mode="after")
    def _valid_config(self) -> "DistillStage":
        try:
            self.distillation_config()
        except DistillationConfigError as err:
            raise _validation_error([((err.field,), err.value, "distill", err.message)]) from None
        if self.student is not None and self.teacher is not None:
            raise _validation_error(
                [(("teacher",), self.teacher, "distill", "with student: the incoming model is the teacher")]
            )
        return self

    def distillation_config(self) -> DistillationConfig:
        return DistillationConfig(**self.model_dump(include=set(_DistillationKeys.model_fields)))


def _teacher_and_student(
    stage: DistillStage, model: CompactBertForSequenceClassification, ctx: StageContext
) -> tuple[CompactBertForSequenceClassification, CompactBertForSequenceClassification, Any]:
    """(teacher, student, teacher tokenizer or None) for this stage; see the module docstring."""
    if stage.student is not None:
        teacher = copy.deepcopy(model)
        return teacher, stage.student.build(model), None
    if stage.teacher is not None:
        return load_compact(stage.teacher, ctx.task), model, load_tokenizer(stage.teacher)
    if model in _TEACHERS:
        return _TEACHERS[model], model, None
    raise UserError(
        f"stage {stage.name!r}: no teacher; give student: (the incoming model becomes the teacher), "
        "teacher: (a model folder or name), or place it after a distill stage that built the student"
    )


@register_runner("distill")
def run_distill(
    stage: DistillStage, model: CompactBertForSequenceClassification, ctx: StageContext
) -> StageOutput:
    teacher, student, teacher_tokenizer = _teacher_and_student(stage, model, ctx)
    config = stage.distillation_config()
    trainer = build_trainer(
        ctx,
        stage,
        student,
        trainer_class=DistillationTrainer,
        teacher=teacher,
        distillation=config,
        teacher_tokenizer=teacher_tokenizer,
    )
    result = trainer.train()
    student = trainer.student
    _TEACHERS[student] = trainer.teacher.float()
    terms = [log for log in trainer.state.log_history if any(k.startswith("loss_") for k in log)]
    return StageOutput(
        model=student,
        metrics=evaluate(student, ctx),
        info={
            "train_loss": result.training_loss,
            "train_steps": result.global_step,
            "distillation": config.as_dict(),
            "layer_map": trainer.layer_map,
            "student_layers": student.config.num_hidden_layers,
            "last_loss_terms": {
                k: v for k, v in (terms[-1] if terms else {}).items() if k.startswith("loss_")
            },
        },
    )
