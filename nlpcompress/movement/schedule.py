"""The cubic sparsity schedule (Zhu & Gupta 2017), as movement pruning uses it (Sanh et al. 2020, §5)."""

from __future__ import annotations


def cubic_schedule(step: int, total: int, start: float, end: float, warmup: int, cooldown: int) -> float:
    """``start`` for the first ``warmup`` steps, ``end`` for the last ``cooldown``, and in between
    v_t = v_end + (v_start − v_end) · (1 − (t − warmup) / (total − warmup − cooldown))³.

    For a keep fraction (start 1, end 1 − sparsity) most weights go early, while the model can still
    recover; for soft movement's threshold the same curve ramps it up.
    """
    ramp = total - warmup - cooldown
    if ramp <= 0 or step >= total - cooldown:
        return end  # too few steps to ramp: the target still holds at the end
    if step <= warmup:
        return start
    progress = (step - warmup) / ramp
    return end + (start - end) * (1.0 - progress) ** 3
