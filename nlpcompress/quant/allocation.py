"""Bits per layer under a budget of average weight bits (Q-BERT's mixed precision, Shen et al. 2020).

The budget is the parameter-weighted average Σ size_i·b_i / Σ size_i ≤ ``avg_bits``, each b_i from the
candidate bit widths. Q-BERT (§3.1, §4 "mixed precision") gives layers with larger Hessian
sensitivity Ω more bits; ``exact`` solves HAWQ-V3's integer program (Yao et al. 2021, §3.3) instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from nlpcompress.quant.config import MAX_BITS, MIN_BITS

METHODS = ("hessian", "reverse", "uniform", "exact")


def average_bits(bits: dict[str, int], sizes: dict[str, int]) -> float:
    """Σ size_i·b_i / Σ size_i over the layers of ``bits``."""
    total = sum(sizes[name] for name in bits)
    return sum(sizes[name] * b for name, b in bits.items()) / total


def allocate_bits(
    omega: dict[str, float],
    sizes: dict[str, int],
    avg_bits: float,
    candidate_bits: Sequence[int],
    method: str,
    errors: dict[str, dict[int, float]] | None = None,
) -> dict[str, int]:
    """Bits for each layer of ``omega`` with a size-weighted average of at most ``avg_bits``.

    ``hessian``: Q-BERT's rule, layers with larger Ω get higher bits; ``reverse``: the paper's reverse
    order baseline (smaller Ω, higher bits); ``uniform``: every layer ``avg_bits`` (a whole number in
    2..8, not necessarily a candidate); ``exact``: the least Σ Ω_i·errors[i][b_i] under the budget,
    ``errors[i][b]`` being ‖Q_b(W_i) − W_i‖² (HAWQ-V3's ILP). Raises ValueError for a bad input.
    """
    candidates = _check(omega, sizes, avg_bits, candidate_bits, method, errors)
    if method == "uniform":
        return dict.fromkeys(omega, int(avg_bits))
    if method == "exact":
        return _exact(omega, sizes, avg_bits, candidates, errors)
    return _greedy(omega, sizes, avg_bits, candidates, descending=method == "hessian")


def _check(
    omega: dict[str, float],
    sizes: dict[str, int],
    avg_bits: float,
    candidate_bits: Sequence[int],
    method: str,
    errors: dict[str, dict[int, float]] | None,
) -> list[int]:
    """The sorted distinct candidates, after checking every input (one ValueError line each)."""
    if method not in METHODS:
        raise ValueError(f"allocation method {method!r}; allowed: {', '.join(METHODS)}")
    if not candidate_bits or any(not MIN_BITS <= b <= MAX_BITS for b in candidate_bits):
        raise ValueError(
            f"candidate bits {list(candidate_bits)}: a non-empty list of widths in {MIN_BITS}..{MAX_BITS}"
        )
    candidates = sorted(set(candidate_bits))
    if set(omega) != set(sizes):
        raise ValueError(
            f"omega and sizes name different layers: {sorted(set(omega) ^ set(sizes))} are in only one"
        )
    if method == "uniform":
        if not (float(avg_bits).is_integer() and MIN_BITS <= avg_bits <= MAX_BITS):
            raise ValueError(
                f"avg_bits {avg_bits} for uniform bits: a whole number in {MIN_BITS}..{MAX_BITS}"
            )
    elif not candidates[0] <= avg_bits <= candidates[-1]:
        raise ValueError(f"avg_bits {avg_bits} outside the candidate range {candidates[0]}..{candidates[-1]}")
    if method == "exact":
        missing = sorted(
            f"{name}:{b}" for name in omega for b in candidates if b not in (errors or {}).get(name, {})
        )
        if missing:
            raise ValueError(
                f"method exact needs errors[layer][bits] for every layer and candidate; missing {missing}"
            )
    return candidates


def _greedy(
    omega: dict[str, float], sizes: dict[str, int], avg_bits: float, candidates: list[int], descending: bool
) -> dict[str, int]:
    """Our reading of Q-BERT's "layers with larger Ω get higher bits" (§3.1, §4 mixed precision).

    Layers are taken in order of Ω (descending; ascending for the reverse baseline); each gets the
    highest candidate that still lets every later layer take the lowest candidate within the budget,
    and no more than the layer before it got, so bits never rise as Ω falls (with equal layer sizes the
    cap never binds; with pruned layers of unequal sizes a small layer could otherwise outbid a larger,
    more sensitive one). The lowest candidate always fits, since ``avg_bits`` is at least it.
    """
    budget = avg_bits * sum(sizes.values())
    order = sorted(omega, key=omega.__getitem__, reverse=descending)
    remaining = sum(sizes.values())
    used = 0
    cap = candidates[-1]
    bits = {}
    for name in order:
        remaining -= sizes[name]
        floor = used + candidates[0] * remaining
        bits[name] = max(
            b for b in candidates if b <= cap and (b == candidates[0] or floor + b * sizes[name] <= budget)
        )
        cap = bits[name]
        used += bits[name] * sizes[name]
    return {name: bits[name] for name in omega}


def _exact(
    omega: dict[str, float],
    sizes: dict[str, int],
    avg_bits: float,
    candidates: list[int],
    errors: dict[str, dict[int, float]],
) -> dict[str, int]:
    """min Σ_i Σ_b Ω_i·errors[i][b]·x_{i,b} s.t. Σ_b x_{i,b} = 1, Σ size_i·b·x_{i,b} ≤ avg_bits·Σ size_i,
    x binary (HAWQ-V3 §3.3), solved exactly by branch and bound (``scipy.optimize.milp``, HiGHS)."""
    names = list(omega)
    n, k = len(names), len(candidates)
    cost = np.array([omega[name] * errors[name][b] for name in names for b in candidates], dtype=float)
    one_hot = np.kron(np.eye(n), np.ones(k))
    total = sum(sizes.values())
    # the budget row in average bits (coefficients size_i / Σ size · b ≤ 8) keeps HiGHS's tolerances small
    weight = np.array([sizes[name] / total * b for name in names for b in candidates])
    result = milp(
        cost,
        constraints=[LinearConstraint(one_hot, 1, 1), LinearConstraint(weight[None, :], -np.inf, avg_bits)],
        integrality=np.ones(n * k),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if result.x is None:
        raise RuntimeError(f"the bit-allocation ILP found no solution: {result.message}")
    choice = result.x.reshape(n, k).argmax(axis=1)
    return {name: candidates[c] for name, c in zip(names, choice, strict=True)}
