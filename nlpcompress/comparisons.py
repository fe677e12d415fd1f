"""Honest comparisons: mean ± std over seeds, paired-bootstrap intervals over dev examples, Pareto fronts."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_bootstrap(
    score: Callable[[Mapping[str, np.ndarray]], float],
    reference: Callable[[Mapping[str, np.ndarray]], float],
    sizes: Mapping[str, int],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile interval of ``score / reference`` when the dev examples are drawn again with replacement.

    Both functions receive the same row indices per split (``{split: indices}``, ``sizes`` rows each), so
    the interval reflects which examples the dev set happens to hold, paired between the two models
    (Efron & Tibshirani 1993, §13; Koehn 2004 for its use on NLP test sets).
    """
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(resamples):
        rows = {split: rng.integers(0, size, size) for split, size in sizes.items()}
        base = reference(rows)
        ratios.append(score(rows) / base if base else float("nan"))
    finite = np.asarray([r for r in ratios if np.isfinite(r)])
    if not len(finite):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the points no other point dominates (at least as good in every objective, better in one);
    ``maximize[k]`` says whether objective ``k`` is to be maximised. Equal points are all kept."""
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # everything becomes "lower is better"
    costs = np.asarray(points, dtype=float).reshape(len(points), len(maximize)) * signs
    front = []
    for index, cost in enumerate(costs):
        dominated = np.any(np.all(costs <= cost, axis=1) & np.any(costs < cost, axis=1))
        if not dominated:
            front.append(index)
    return front
