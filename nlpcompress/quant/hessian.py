"""Q-BERT's Hessian sensitivity of each encoder layer (Shen et al. 2020, §3.1).

For a group of weights W_i (one encoder layer's matrices), the top eigenvalue λ_i of the loss Hessian
restricted to W_i is found by power iteration on Hessian-vector products: H·v is the gradient of
gᵀv, with g = ∂L/∂W_i computed with ``create_graph=True`` (double back-propagation), so H is never
formed. Eigenvalues vary across data, so λ_i is measured on several batches and the sensitivity is
Ω_i = |mean λ_i| + std λ_i (§3.1, eq. 3). HAWQ-V2's (Dong et al. 2020) average Hessian trace, by
Hutchinson's estimator with Rademacher vectors, is the optional second measure.

Under several processes each batch is split across them and every H·v is the share-weighted sum of
the processes' products: the Hessian of the whole batch's mean loss, so every process computes the
eigenvalues one process would (to float rounding) and takes the same bit decision.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from nlpcompress.compact.storage import StoredLinear
from nlpcompress.distributed import all_reduce_sum
from nlpcompress.errors import UserError
from nlpcompress.parametrize import stored_weight
from nlpcompress.surgery import encoder_linears

Tensor = torch.Tensor


def hessian_vector_product(
    gradients: Sequence[Tensor], params: Sequence[Tensor], vectors: Sequence[Tensor], share: float = 1.0
) -> list[Tensor]:
    """H·v for the Hessian of the loss whose ``gradients`` w.r.t. ``params`` were taken with
    ``create_graph=True``: the gradient of Σ gᵀv (Pearlmutter's trick, Q-BERT §3.1).

    The graph is retained so that the product can be taken again (power iteration). A parameter the
    gradients do not depend on (a Hessian block of zeros) gets a zero product. ``share`` is this
    process's fraction of the batch's rows; under several processes the products are summed weighted
    by it, which gives the whole batch's H·v on every process.
    """
    products = torch.autograd.grad(gradients, params, vectors, retain_graph=True, allow_unused=True)
    products = [torch.zeros_like(p) if h is None else h for h, p in zip(products, params, strict=True)]
    if share == 1.0:
        return products
    return [all_reduce_sum(h * share) for h in products]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b, strict=True)))


def _random_like(
    params: Sequence[Tensor], generator: torch.Generator | None, rademacher: bool = False
) -> list[Tensor]:
    """Standard normal (or ±1) tensors shaped as ``params``, drawn on the CPU so any ``generator`` works."""
    if rademacher:
        draws = [torch.randint(0, 2, p.shape, generator=generator) * 2 - 1 for p in params]
    else:
        draws = [torch.randn(p.shape, generator=generator) for p in params]
    return [d.to(device=p.device, dtype=p.dtype) for d, p in zip(draws, params, strict=True)]


def _gradients(loss: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return torch.autograd.grad(loss, params, create_graph=True)


def top_eigenvalue(
    loss: Tensor,
    params: Sequence[Tensor],
    iterations: int = 20,
    tolerance: float = 1e-3,
    generator: torch.Generator | None = None,
    share: float = 1.0,
) -> float:
    """The Hessian's eigenvalue of largest magnitude on ``params`` by power iteration (Q-BERT §3.1).

    Starts from a random normalised v; each step takes the Rayleigh quotient λ = vᵀHv and v ← Hv/‖Hv‖,
    stopping once λ changes by less than ``tolerance`` relative to its previous value, or after
    ``iterations`` steps. Power iteration converges to the eigenvalue largest in *magnitude*, so a
    dominant negative curvature is returned as that negative value. ``loss``'s graph is kept.
    ``share``: this process's fraction of the batch (see ``hessian_vector_product``).
    """
    gradients = _gradients(loss, params)
    vector = _random_like(params, generator)
    norm = _dot(vector, vector) ** 0.5
    vector = [v / norm for v in vector]
    eigenvalue: float | None = None
    for _ in range(iterations):
        product = hessian_vector_product(gradients, params, vector, share)
        rayleigh = _dot(product, vector)
        norm = _dot(product, product) ** 0.5
        if norm == 0.0:  # v lies in the Hessian's null space (a random start does so only when H = 0)
            return 0.0
        vector = [h / norm for h in product]
        converged = eigenvalue is not None and abs(rayleigh - eigenvalue) <= tolerance * abs(eigenvalue)
        eigenvalue = rayleigh
        if converged:
            break
    return float(eigenvalue)


def hutchinson_trace(
    loss: Tensor,
    params: Sequence[Tensor],
    samples: int = 20,
    generator: torch.Generator | None = None,
    share: float = 1.0,
) -> float:
    """tr(H) on ``params`` ≈ mean of zᵀHz over Rademacher vectors z (HAWQ-V2, Dong et al. 2020, §3.1)."""
    gradients = _gradients(loss, params)
    total = 0.0
    for _ in range(samples):
        z = _random_like(params, generator, rademacher=True)
        total += _dot(hessian_vector_product(gradients, params, z, share), z)
    return total / samples


def _weights(linear: nn.Module) -> list[nn.Parameter]:
    """The stored weight parameters of an encoder linear (before any transform), without the bias."""
    return linear.trainable_weights() if isinstance(linear, StoredLinear) else [stored_weight(linear)]


def matrix_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``{"layers.<i>.<attention|ffn>.<linear>": weights}`` for every non-empty encoder matrix of every
    unique layer (a borrowed block once, at its owner); the per-matrix granularity of Q-BERT §3.1."""
    groups = {}
    for name, block, attribute in encoder_linears(model):
        weights = [w for w in _weights(getattr(block, attribute)) if w.numel() > 0]
        if weights:
            groups[name] = weights
    return groups


def layer_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``{"layers.<i>": weights}``: the query, key, value, attention output, FFN intermediate and output
    matrices of each unique encoder layer (Q-BERT §3.1's groups). Borrowed blocks belong to their owner,
    empty matrices (all heads or neurons pruned) are left out, and so is a layer with no weights left."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, weights in matrix_parameters(model).items():
        layer = ".".join(name.split(".")[:2])
        groups.setdefault(layer, []).extend(weights)
    return groups


@dataclass
class Sensitivity:
    """One group's top Hessian eigenvalue per batch, Ω = |mean| + std of them, and the mean trace if asked."""

    eigenvalues: list[float]
    omega: float
    trace: float | None = None

    @classmethod
    def of(cls, eigenvalues: list[float], traces: list[float] | None = None) -> Sensitivity:
        """Ω from the per-batch eigenvalues (Q-BERT §3.1, eq. 3; population std, so one batch gives std 0)."""
        omega = abs(statistics.fmean(eigenvalues)) + statistics.pstdev(eigenvalues)
        return cls(list(eigenvalues), omega, statistics.fmean(traces) if traces else None)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def layer_sensitivity(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor] | tuple[Mapping[str, Tensor], float]],
    groups: dict[str, list[nn.Parameter]],
    iterations: int = 20,
    tolerance: float = 1e-3,
    trace: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Sensitivity]:
    """Ω of each group of ``groups`` (Q-BERT §3.1) over ``batches`` (the Trainer's dict batches, labels
    included; the loss is ``model(**batch).loss``). Under several processes a batch is this process's
    part of it with its share of the rows, ``(batch, share)`` (``distributed.global_batches``).

    The model runs in eval mode (no dropout) and its mode is restored; gradients are taken with
    ``torch.autograd.grad``, so no parameter's ``.grad`` changes; attention runs on the math kernel of
    ``scaled_dot_product_attention`` (the fused ones cannot be differentiated twice).
    ``trace`` adds Hutchinson's trace estimate (HAWQ-V2) per group, averaged over batches.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    eigenvalues: dict[str, list[float]] = {name: [] for name in groups}
    traces: dict[str, list[float]] = {name: [] for name in groups}
    was_training = model.training
    model.eval()
    try:
        for item in tqdm(batches, desc="Hessian eigenvalues", disable=not progress):
            batch, share = item if isinstance(item, tuple) else (item, 1.0)
            # the fused attention kernels have no double backward; the math one is plain autograd ops
            with sdpa_kernel(SDPBackend.MATH):
                loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
            for name, params in groups.items():
                eigenvalues[name].append(
                    top_eigenvalue(loss, params, iterations, tolerance, generator, share)
                )
                if trace:
                    traces[name].append(hutchinson_trace(loss, params, generator=generator, share=share))
            del loss  # free this batch's graph before the next forward pass
    finally:
        model.train(was_training)
    if groups and not next(iter(eigenvalues.values())):
        raise ValueError("layer_sensitivity got no batches; the Hessian needs at least one")
    return {name: Sensitivity.of(eigenvalues[name], traces[name] if trace else None) for name in groups}


def save_sensitivity(
    path: str | Path, sensitivities: Mapping[str, Sensitivity], bits: Mapping[str, int] | None = None
) -> Path:
    """Write ``{group: {eigenvalues, omega, trace[, bits]}}`` as JSON; returns the path."""
    record = {
        name: {**s.as_dict(), **({"bits": bits[name]} if bits is not None else {})}
        for name, s in sensitivities.items()
    }
    path = Path(path)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def plot_sensitivity(
    path: str | Path, sensitivities: Mapping[str, Sensitivity], bits: Mapping[str, int] | None = None
) -> Path:
    """Save a bar chart of Ω per group (as Q-BERT's Fig. 2 per layer), each bar labelled with its bits if
    given; needs matplotlib (the ``plots`` extra). Returns the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise UserError(
            'plotting the Hessian sensitivity needs matplotlib: pip install "nlpcompress[plots]"'
        ) from error
    names = list(sensitivities)
    figure = Figure(figsize=(1.5 + 0.6 * max(len(names), 1), 3.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    bars = axes.bar(range(len(names)), [sensitivities[n].omega for n in names], color="tab:blue")
    if bits is not None:
        axes.bar_label(bars, labels=[f"{bits[n]}b" for n in names], padding=2)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_ylabel("Ω = |mean λ| + std λ")
    axes.set_title("Hessian sensitivity" + (" and bits" if bits is not None else ""))
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path
