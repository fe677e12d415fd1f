"""The `distill` stage: DistilBERT triple loss, TinyBERT (two phases) or plain KD from a frozen teacher.

Who is teacher and who is student:
- with ``student:``, the incoming model is the teacher and the student is built from it;
- without, the incoming model is the student; its teacher is ``teacher:`` (a model folder or name),
  else the run's teacher (``ctx.teacher``): the teacher of the previous distill stage (TinyBERT's
  prediction phase after the intermediate one) or the model of the last finetune stage.
The stage hands its teacher on (``StageOutput.teacher``), so a following distill stage finds it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from nlpcompress.distill import (
    DistillationConfig,
    DistillationTrainer,
    every_other_layer,
    fresh_student,
    student_from_teacher,
)
from nlpcompress.errors import UserError
from nlpcompress.models import load_compact, load_tokenizer
from nlpcompress.schema import Schema, config_keys, one_of, validation_error
from nlpcompress.stages.registry import Model, Stage, StageContext, StageOutput, register_stage
from nlpcompress.stages.teachers import check_teacher
from nlpcompress.stages.training import build_trainer, evaluate, run_training, train_facts


class StudentSpec(Schema):
    """``layers``: teacher depths to keep (0-based; DistilBERT init), or a fresh config by ``num_layers``."""

    layers: one_of(list[int] | Literal["every_other"] | None) = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StudentSpec:
        fresh = {k: v for k, v in self.model_dump().items() if k != "layers" and v is not None}
        if self.layers is None and self.num_layers is None:
            raise validation_error([((), {}, "give layers (from the teacher) or num_layers (fresh)")])
        if self.layers is not None and fresh:
            name = next(iter(fresh))
            raise validation_error([((name,), fresh[name], "only for a fresh student, not with layers")])
        return self

    def build(self, teacher: Model) -> Model:
        if self.num_layers is not None:
            return fresh_student(
                teacher, self.num_layers, self.hidden_size, self.num_attention_heads, self.intermediate_size
            )
        depth = teacher.config.num_hidden_layers
        layers = every_other_layer(depth) if self.layers == "every_other" else self.layers
        return student_from_teacher(teacher, layers)


# ``mlm`` is left out of the keys: general distillation on raw text needs a masked-LM head, which GLUE
# classifiers lack (DistillationTrainer(..., DistillationConfig(mlm=True)) serves masked-LM pairs).
@register_stage
class DistillStage(config_keys(DistillationConfig, exclude=("mlm",)), Stage):
    """Distil a frozen teacher into a student (DistilBERT triple loss, TinyBERT's two phases, or plain KD)."""

    type: Literal["distill"]
    student: StudentSpec | None = None
    teacher: str | None = None
    config_class: ClassVar[type] = DistillationConfig
    provides_teacher: ClassVar[bool] = True

    @model_validator(mode="after")
    def _one_teacher(self) -> DistillStage:
        if self.student is not None and self.teacher is not None:
            raise validation_error(
                [(("teacher",), self.teacher, "with student: the incoming model is the teacher")]
            )
        return self

    def needs_teacher(self) -> bool:
        return self.student is None and self.teacher is None

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: DistillationConfig = self.config()
        teacher, student, teacher_tokenizer = self._teacher_and_student(model, ctx)
        taught = {}
        if not self.needs_teacher() and any(
            name != "task" for name in config.weights
        ):  # else the runner checked
            which = "the incoming model" if self.student is not None else f"teacher {self.teacher!r}"
            taught = {"teacher": check_teacher(self, teacher, ctx, which)}
        trainer = build_trainer(
            ctx,
            self,
            student,
            trainer_class=DistillationTrainer,
            teacher=teacher,
            distillation=config,
            teacher_tokenizer=teacher_tokenizer,
            augment=config.augment,
        )
        result = run_training(trainer, ctx)
        student = trainer.student
        return StageOutput(
            model=student,
            metrics=evaluate(student, ctx),
            info={
                **train_facts(trainer, result),
                "distillation": config.as_dict(),
                "teacher_layers": trainer.teacher_layers,
                "student_layers": student.config.num_hidden_layers,
                **taught,
            },
            teacher=teacher,
        )

    def _teacher_and_student(self, model: Model, ctx: StageContext):
        """(teacher, student, teacher tokenizer or None) for this stage; see the module docstring."""
        if self.student is not None:
            return model, self.student.build(model), None
        if self.teacher is not None:
            return load_compact(self.teacher, ctx.task), model, load_tokenizer(self.teacher)
        if ctx.teacher is None:
            raise UserError(
                f"stage {self.name!r}: no teacher; give student: (the incoming model becomes the teacher), "
                "teacher: (a model folder or name), or place it after a finetune or distill stage"
            )
        return ctx.teacher, model, None
