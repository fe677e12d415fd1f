"""Distillation (DistilBERT triple loss, TinyBERT layer-wise, plain KD) as a Trainer subclass.

Pure loss terms in ``losses``, student initialisation in ``student``, settings in ``config``, the
Trainer face in ``trainer``; the recipe stage ``distill`` lives in ``nlpcompress.stages.distill``.
"""

from nlpcompress.distill.config import DistillationConfig, DistillationConfigError
from nlpcompress.distill.student import every_other_layer, fresh_student, student_from_teacher
from nlpcompress.distill.trainer import (
    DistillationTrainer,
    ProjectedStudent,
    check_vocabularies,
    mlm_collator,
)

__all__ = [
    "DistillationConfig",
    "DistillationConfigError",
    "DistillationTrainer",
    "ProjectedStudent",
    "check_vocabularies",
    "every_other_layer",
    "fresh_student",
    "mlm_collator",
    "student_from_teacher",
]
