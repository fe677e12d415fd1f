"""Distillation (DistilBERT triple loss, TinyBERT layer-wise, plain KD) as a Trainer subclass.

Student initialisation in ``student``, settings in ``config``, the Trainer face in ``trainer`` (a
configuration of ``nlpcompress.trainer.CompressionTrainer``; the tensor arithmetic is in
``nlpcompress.distillation_losses``); the recipe stage ``distill`` lives in ``nlpcompress.stages.distill``.
"""

from nlpcompress.distill.config import DistillationConfig
from nlpcompress.distill.student import every_other_layer, fresh_student, student_from_teacher
from nlpcompress.distill.trainer import (
    DistillationTrainer,
    ProjectedStudent,
    check_vocabularies,
    distillation_terms,
    mlm_collator,
)

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "ProjectedStudent",
    "check_vocabularies",
    "distillation_terms",
    "every_other_layer",
    "fresh_student",
    "mlm_collator",
    "student_from_teacher",
]
