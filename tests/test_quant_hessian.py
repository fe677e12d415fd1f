"""Q-BERT's Hessian sensitivity (power iteration, HVP, Hutchinson, per-layer Ω) and bit allocation."""

from __future__ import annotations

import itertools
import json
import math
import random
import sys

import numpy as np
import pytest
import torch
from _require import require_module
from _tiny import tiny_model

from nlpcompress.distributed import global_batches
from nlpcompress.errors import UserError
from nlpcompress.parametrize import Mask, attach
from nlpcompress.quant.allocation import allocate_bits, average_bits
from nlpcompress.quant.hessian import (
    Sensitivity,
    hessian_vector_product,
    hutchinson_trace,
    layer_parameters,
    layer_sensitivity,
    matrix_parameters,
    plot_sensitivity,
    save_sensitivity,
    top_eigenvalue,
)

# ---------------------------------------------------------------- Hessian cores


def symmetric(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """Q·diag(eigenvalues)·Qᵀ with a random orthogonal Q (float64)."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(
        torch.randn(len(eigenvalues), len(eigenvalues), generator=generator, dtype=torch.float64)
    )
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def quadratic(a: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """0.5·xᵀAx at a random x split into two parameters (so multi-tensor vectors are exercised)."""
    x = torch.randn(a.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    first, second = x[:2].clone().requires_grad_(), x[2:].clone().requires_grad_()
    full = torch.cat([first, second])
    return 0.5 * full @ a @ full, [first, second]


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic():
    a = symmetric([5.0, 2.0, 1.0, -0.5, 0.3])
    loss, params = quadratic(a)
    found = top_eigenvalue(
        loss, params, iterations=100, tolerance=1e-8, generator=torch.Generator().manual_seed(0)
    )
    assert found == pytest.approx(float(torch.linalg.eigvalsh(a).max()), abs=1e-3)


def test_power_iteration_finds_the_eigenvalue_largest_in_magnitude_even_when_negative():
    """Power iteration converges to the dominant |λ|: here −6, not the largest signed eigenvalue 3."""
    a = symmetric([-6.0, 3.0, 1.0, 0.5, -0.2], seed=3)
    loss, params = quadratic(a)
    found = top_eigenvalue(
        loss, params, iterations=100, tolerance=1e-8, generator=torch.Generator().manual_seed(0)
    )
    eigenvalues = torch.linalg.eigvalsh(a)
    assert found == pytest.approx(float(eigenvalues[eigenvalues.abs().argmax()]), abs=1e-3)
    assert found < 0


def test_power_iteration_stops_at_the_iteration_cap_and_on_a_zero_hessian():
    a = symmetric([1.0, 0.99, 0.98, 0.5, 0.1])  # tiny spectral gap: one step is far from converged
    loss, params = quadratic(a)
    one_step = top_eigenvalue(loss, params, iterations=1, generator=torch.Generator().manual_seed(0))
    assert abs(one_step - 1.0) > 1e-3
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    assert top_eigenvalue((x**3).sum(), [x]) == 0.0  # H = diag(6x) = 0 at x = 0


def mlp_loss(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    inputs = torch.linspace(-1, 1, 20, dtype=torch.float64).view(5, 4)
    labels = torch.tensor([0, 1, 1, 0, 1])
    return torch.nn.functional.cross_entropy(torch.tanh(inputs @ w1.T) @ w2.T, labels)


def test_hessian_vector_product_matches_a_finite_difference_of_the_gradient():
    generator = torch.Generator().manual_seed(0)
    w1 = torch.randn(3, 4, dtype=torch.float64, generator=generator).requires_grad_()
    w2 = torch.randn(2, 3, dtype=torch.float64, generator=generator).requires_grad_()
    v = [torch.randn_like(w1), torch.randn_like(w2)]
    gradients = torch.autograd.grad(mlp_loss(w1, w2), [w1, w2], create_graph=True)
    product = hessian_vector_product(gradients, [w1, w2], v)

    eps = 1e-5
    with torch.no_grad():
        plus = [w1 + eps * v[0], w2 + eps * v[1]]
        minus = [w1 - eps * v[0], w2 - eps * v[1]]
    grad_plus = torch.autograd.grad(mlp_loss(*[p.requires_grad_() for p in plus]), plus)
    grad_minus = torch.autograd.grad(mlp_loss(*[m.requires_grad_() for m in minus]), minus)
    for exact, gp, gm in zip(product, grad_plus, grad_minus, strict=True):
        difference = (gp - gm) / (2 * eps)
        assert torch.linalg.norm(exact - difference) <= 1e-4 * torch.linalg.norm(difference)
    assert w1.grad is None and w2.grad is None


def test_hutchinson_trace_estimates_the_trace():
    diagonal = torch.diag(torch.tensor([3.0, -1.0, 2.0, 0.5, 4.0], dtype=torch.float64))
    loss, params = quadratic(diagonal)  # zᵀDz = tr(D) for every ±1 vector z: exact with one sample
    assert hutchinson_trace(loss, params, samples=1) == pytest.approx(8.5, abs=1e-9)

    a = symmetric([5.0, 2.0, 1.0, -0.5, 0.3])
    loss, params = quadratic(a)
    samples = 400
    estimate = hutchinson_trace(loss, params, samples=samples, generator=torch.Generator().manual_seed(0))
    off_diagonal = a - torch.diag(torch.diag(a))
    std = math.sqrt(2 * float((off_diagonal**2).sum()) / samples)  # Var zᵀAz = 2 Σ_{i≠j} A_ij²
    assert abs(estimate - float(torch.trace(a))) < 4 * std


# ---------------------------------------------------------------- groups of the compact model


def test_layer_and_matrix_groups_of_the_compact_model():
    model = tiny_model(
        heads_per_layer=[4, 0], attention_owner=[0, 1], ffn_owner=[0, 0], intermediate_sizes=[37, 37]
    )
    groups = layer_parameters(model)
    layers = model.compact_bert.encoder.layers
    attention, ffn = layers[0].attention, layers[0].ffn
    own = [attention.query.weight, attention.key.weight, attention.value.weight, attention.output.weight]
    assert [id(p) for p in groups["layers.0"]] == [
        id(p) for p in [*own, ffn.intermediate.weight, ffn.output.weight]
    ]
    assert "layers.1" not in groups  # no heads (empty attention matrices) and a borrowed FFN: no weights
    assert set(matrix_parameters(model)) == {
        f"layers.0.{m}" for m in ("attention.query", "attention.key", "attention.value", "attention.output")
    } | {"layers.0.ffn.intermediate", "layers.0.ffn.output"}


def test_groups_hold_the_stored_weight_of_a_parametrized_linear():
    model = tiny_model()
    attach(model, r".*layers\.1\.attention\.query", lambda name, linear: Mask(torch.ones_like(linear.weight)))
    query = model.compact_bert.encoder.layers[1].attention.query
    groups = matrix_parameters(model)
    assert groups["layers.1.attention.query"] == [query.parametrizations.weight.original]
    assert len(layer_parameters(model)["layers.1"]) == 6


def batches(count: int = 2) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "input_ids": torch.randint(1, 50, (3, 7), generator=generator),
            "attention_mask": torch.ones(3, 7, dtype=torch.long),
            "token_type_ids": torch.zeros(3, 7, dtype=torch.long),
            "labels": torch.tensor([0, 1, 1]),
        }
        for _ in range(count)
    ]


def test_layer_sensitivity_of_a_tiny_compact_model():
    model = tiny_model().train()  # dropout on: layer_sensitivity must switch it off and back
    groups = layer_parameters(model)
    first = layer_sensitivity(
        model, batches(), groups, iterations=30, tolerance=1e-4, trace=True, progress=False
    )
    assert set(first) == {"layers.0", "layers.1"}
    for sensitivity in first.values():
        assert len(sensitivity.eigenvalues) == 2
        assert all(math.isfinite(e) and e != 0 for e in sensitivity.eigenvalues)
        values = np.array(sensitivity.eigenvalues)
        assert sensitivity.omega == pytest.approx(abs(values.mean()) + values.std())
        assert sensitivity.trace is not None and math.isfinite(sensitivity.trace)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    again = layer_sensitivity(
        model, batches(), groups, iterations=30, tolerance=1e-4, trace=True, progress=False
    )
    # same seed, no dropout: the same eigenvalues (dropout would change the loss, hence the Hessian)
    assert again == first

    # the first measurement is power iteration on the first batch's loss with the seed's first draws
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        loss = model.eval()(**batches()[0]).loss
    direct = top_eigenvalue(loss, groups["layers.0"], 30, 1e-4, torch.Generator().manual_seed(0))
    assert first["layers.0"].eigenvalues[0] == pytest.approx(direct, rel=1e-9)


def test_layer_sensitivity_needs_a_batch():
    model = tiny_model()
    with pytest.raises(ValueError, match="no batches"):
        layer_sensitivity(model, [], layer_parameters(model), progress=False)


ROW_HESSIANS = [symmetric([4.0, 1.0, -0.5], seed) for seed in range(5)]  # one row's Hessian each


def rows_loss(rows: list[int], x: torch.Tensor) -> torch.Tensor:
    """The mean over ``rows`` of 0.5·xᵀA_row·x: its Hessian is the mean of their A."""
    return torch.stack([0.5 * x @ ROW_HESSIANS[row] @ x for row in rows]).mean()


def _split_batch_worker(rank: int, store: str, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        batches = list(global_batches(list(range(5)), list, batch_size=5, rank=rank, world_size=2))
        ((rows, share),) = batches
        x = torch.ones(3, dtype=torch.float64, requires_grad=True)
        generator = torch.Generator().manual_seed(0)
        found = top_eigenvalue(rows_loss(rows, x), [x], 100, 1e-12, generator, share)
        queue.put((rank, rows, share, found))
    finally:
        torch.distributed.destroy_process_group()


def test_a_batch_split_across_processes_gives_the_whole_batch_eigenvalue(tmp_path):
    context = torch.multiprocessing.get_context("fork")  # fork: the children need not import torch again
    queue = context.SimpleQueue()
    torch.multiprocessing.start_processes(
        _split_batch_worker, args=(str(tmp_path / "store"), queue), nprocs=2, start_method="fork"
    )
    results = {rank: (rows, share, found) for rank, rows, share, found in (queue.get() for _ in range(2))}
    assert results[0][:2] == ([0, 2, 4], 0.6) and results[1][:2] == ([1, 3], 0.4)
    whole = torch.linalg.eigvalsh(torch.stack(ROW_HESSIANS).mean(0))
    expected = float(whole[whole.abs().argmax()])
    assert (
        results[0][2] == results[1][2] == pytest.approx(expected, rel=1e-9)
    )  # every process: the same value


def test_global_batches_split_each_batch_and_leave_out_a_last_batch_too_small_to_share():
    rows = list(range(7))
    assert list(global_batches(rows, list, 3)) == [([0, 1, 2], 1.0), ([3, 4, 5], 1.0), ([6], 1.0)]
    parts = [list(global_batches(rows, list, 3, rank, 2)) for rank in (0, 1)]
    assert parts[0] == [([0, 2], 2 / 3), ([3, 5], 2 / 3)]
    assert parts[1] == [([1], 1 / 3), ([4], 1 / 3)]  # row 6 alone cannot be split over two processes
    assert list(global_batches(rows, list, 3, 0, 1, limit=4)) == [([0, 1, 2], 1.0), ([3], 1.0)]


def test_save_and_plot_sensitivity(tmp_path, monkeypatch):
    sensitivities = {"layers.0": Sensitivity.of([2.0, 4.0]), "layers.1": Sensitivity.of([-1.0], [3.0])}
    assert sensitivities["layers.0"].omega == 4.0  # |3| + 1
    path = save_sensitivity(tmp_path / "s.json", sensitivities, bits={"layers.0": 8, "layers.1": 2})
    assert json.loads(path.read_text()) == {
        "layers.0": {"eigenvalues": [2.0, 4.0], "omega": 4.0, "trace": None, "bits": 8},
        "layers.1": {"eigenvalues": [-1.0], "omega": 1.0, "trace": 3.0, "bits": 2},
    }
    assert (
        "bits" not in json.loads(save_sensitivity(tmp_path / "t.json", sensitivities).read_text())["layers.0"]
    )

    require_module("matplotlib")
    plot = plot_sensitivity(tmp_path / "s.png", sensitivities, bits={"layers.0": 8, "layers.1": 2})
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UserError, match=r'pip install "nlpcompress\[plots\]"'):
        plot_sensitivity(tmp_path / "u.png", sensitivities)


# ---------------------------------------------------------------- bit allocation

CANDIDATES = [2, 3, 4, 8]


def objective(bits, omega, errors) -> float:
    return sum(omega[name] * errors[name][b] for name, b in bits.items())


def random_problem(seed: int, layers: int = 4):
    rng = random.Random(seed)
    names = [f"layers.{i}" for i in range(layers)]
    omega = {n: rng.uniform(0.1, 10) for n in names}
    sizes = {n: rng.randint(50, 500) for n in names}
    # quantization error shrinks about 4× per bit, with a per-layer scale
    errors = {n: {b: rng.uniform(0.5, 2) * 4.0 ** (-b) for b in CANDIDATES} for n in names}
    return omega, sizes, errors, rng.uniform(2, 8)


def test_hessian_rule_gives_more_bits_to_more_sensitive_layers():
    omega = {"a": 5.0, "b": 1.0, "c": 3.0, "d": 0.5}
    sizes = dict.fromkeys(omega, 100)
    bits = allocate_bits(omega, sizes, 4, CANDIDATES, "hessian")
    assert bits == {"a": 8, "b": 2, "c": 4, "d": 2}
    assert list(bits) == list(omega)
    reverse = allocate_bits(omega, sizes, 4, CANDIDATES, "reverse")
    assert reverse == {"a": 2, "b": 4, "c": 2, "d": 8}
    assert allocate_bits(omega, sizes, 8, CANDIDATES, "hessian") == dict.fromkeys(omega, 8)
    assert allocate_bits(omega, sizes, 2, CANDIDATES, "reverse") == dict.fromkeys(omega, 2)
    # the large sensitive layer cannot afford 8 bits; the small one could, but never outbids it
    assert allocate_bits({"big": 3.0, "small": 2.0}, {"big": 1000, "small": 10}, 3, [2, 8], "hessian") == {
        "big": 2,
        "small": 2,
    }


@pytest.mark.parametrize("seed", range(20))
def test_ranked_rules_respect_the_budget_and_mirror_each_other(seed):
    omega, sizes, _, avg = random_problem(seed, layers=6)
    bits = allocate_bits(omega, sizes, avg, CANDIDATES, "hessian")
    assert average_bits(bits, sizes) <= avg + 1e-12
    ranked = sorted(omega, key=omega.get, reverse=True)
    assert all(bits[x] >= bits[y] for x, y in itertools.pairwise(ranked))
    mirrored = {name: -value for name, value in omega.items()}
    assert allocate_bits(omega, sizes, avg, CANDIDATES, "reverse") == allocate_bits(
        mirrored, sizes, avg, CANDIDATES, "hessian"
    )


def test_uniform_bits():
    omega, sizes = {"a": 1.0, "b": 2.0}, {"a": 10, "b": 30}
    assert allocate_bits(omega, sizes, 5, CANDIDATES, "uniform") == {
        "a": 5,
        "b": 5,
    }  # 5 needs not be a candidate
    assert allocate_bits(omega, sizes, 8.0, CANDIDATES, "uniform") == {"a": 8, "b": 8}
    assert average_bits({"a": 2, "b": 6}, sizes) == 5.0


@pytest.mark.parametrize("seed", range(10))
def test_exact_matches_brute_force_and_beats_the_hessian_rule(seed):
    omega, sizes, errors, avg = random_problem(seed)
    names = list(omega)
    feasible = [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(CANDIDATES, repeat=len(names))
        if average_bits(dict(zip(names, combo, strict=True)), sizes) <= avg
    ]
    best = min(objective(bits, omega, errors) for bits in feasible)
    exact = allocate_bits(omega, sizes, avg, CANDIDATES, "exact", errors)
    assert average_bits(exact, sizes) <= avg + 1e-12
    assert objective(exact, omega, errors) == pytest.approx(best, rel=1e-9)
    hessian = allocate_bits(omega, sizes, avg, CANDIDATES, "hessian")
    assert objective(exact, omega, errors) <= objective(hessian, omega, errors) * (1 + 1e-12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"method": "greedy"}, "allocation method 'greedy'; allowed: hessian"),
        ({"candidate_bits": []}, r"candidate bits \[\]"),
        ({"candidate_bits": [1, 4]}, r"candidate bits \[1, 4\]: .* in 2..8"),
        ({"candidate_bits": [4, 9]}, r"candidate bits \[4, 9\]"),
        ({"avg_bits": 1.5}, "avg_bits 1.5 outside the candidate range 2..8"),
        ({"avg_bits": 5, "candidate_bits": [2, 4]}, "avg_bits 5 outside the candidate range 2..4"),
        ({"sizes": {"a": 1, "c": 1}}, r"different layers: \['b', 'c'\]"),
        ({"method": "uniform", "avg_bits": 4.5}, "avg_bits 4.5 for uniform bits: a whole number in 2..8"),
        ({"method": "uniform", "avg_bits": 9}, "avg_bits 9 for uniform"),
        ({"method": "exact"}, r"missing \['a:2'"),
        (
            {"method": "exact", "errors": {"a": dict.fromkeys(CANDIDATES, 1.0), "b": {2: 1.0}}},
            r"missing \['b:3', 'b:4', 'b:8'\]",
        ),
    ],
)
def test_bad_allocation_inputs(args, message):
    kwargs = {
        "omega": {"a": 1.0, "b": 2.0},
        "sizes": {"a": 1, "b": 1},
        "avg_bits": 4,
        "candidate_bits": CANDIDATES,
        "method": "hessian",
        **args,
    }
    with pytest.raises(ValueError, match=message):
        allocate_bits(**kwargs)
