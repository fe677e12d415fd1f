"""Movement pruning (Sanh et al. 2020) and its magnitude baseline on the compact model's encoder linears.

``binarizers`` (the threshold binarizer, straight-through; TopK as a threshold), ``schedule`` (cubic), ``config``
(MovementConfig), ``masks`` (score masks per weight, block, head or neuron), ``callback`` (the
Trainer face and soft movement's regulariser). The recipe stage is ``nlpcompress.stages.movement``.
"""

from nlpcompress.movement.binarizers import ThresholdBinarizer, topk_threshold
from nlpcompress.movement.callback import MovementCallback, ScoreL1, mask_density
from nlpcompress.movement.config import MovementConfig
from nlpcompress.movement.masks import (
    Expansion,
    ScoreMask,
    attach_score_masks,
    freeze_masks,
    refresh_magnitude_scores,
    score_masks,
)
from nlpcompress.movement.schedule import cubic_schedule

__all__ = [
    "Expansion",
    "MovementCallback",
    "MovementConfig",
    "ScoreL1",
    "ScoreMask",
    "ThresholdBinarizer",
    "attach_score_masks",
    "cubic_schedule",
    "freeze_masks",
    "mask_density",
    "refresh_magnitude_scores",
    "score_masks",
    "topk_threshold",
]
