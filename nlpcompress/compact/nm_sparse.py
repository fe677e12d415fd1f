"""N:M semi-structured sparse storage: at most N non-zero weights in every M consecutive inputs of a row.

Stored as the N kept values of each group and, per kept value, its position in the group in
ceil(log2 M) bits (the 2-bit metadata of 2:4 sparse tensor cores; Mishra et al. 2021, "Accelerating
Sparse Deep Neural Networks", §3). A 2:4 float32 matrix takes 2 × 32 + 2 × 2 = 68 bits per 4 weights.
Self-contained (imports only torch and its sibling ``storage``): copied into a saved model folder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .storage import KeptValues, StoredLinear, pack_mask, register_storage, unpack_mask

GROUP_SIZES = (2, 4, 8, 16)  # the M that a trained dense matrix is tried against


def index_bits(m: int) -> int:
    return max(1, math.ceil(math.log2(m)))


def pack_indices(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integers below 2**bits as a flat bit stream, ``bits`` per value, least significant first."""
    shifts = torch.arange(bits, device=indices.device)
    return pack_mask((indices.flatten()[:, None].long() >> shifts) & 1)


def unpack_indices(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The ``count`` integers ``pack_indices`` stored."""
    flags = unpack_mask(packed, (count, bits)).long()
    return (flags << torch.arange(bits, device=packed.device)).sum(1)


@register_storage
class NMSparseLinear(KeptValues, StoredLinear):
    """A linear whose every row keeps ``n`` values in each group of ``m`` consecutive inputs."""

    kind = "n_m"
    state = "sparse-stored"
    structured = True

    def __init__(self, in_features: int, out_features: int, n: int, m: int):
        super().__init__()
        if not 1 <= n < m or in_features % m:
            raise ValueError(f"n {n}, m {m}: need 1 <= n < m and m dividing the {in_features} inputs")
        self.in_features, self.out_features, self.n, self.m = in_features, out_features, n, m
        groups = out_features * (in_features // m)
        self.values = nn.Parameter(torch.empty(groups * n))
        self.bias = nn.Parameter(torch.empty(out_features))
        first = torch.arange(n).repeat(groups)  # a fresh layer keeps the first n of each group
        self.register_buffer("indices", pack_indices(first, index_bits(m)))

    def spec(self) -> dict[str, int]:
        return {"n": self.n, "m": self.m}

    def positions(self) -> torch.Tensor:
        """The kept positions, (out, in / m, n), each in 0..m-1."""
        groups = self.in_features // self.m
        count = self.out_features * groups * self.n
        return unpack_indices(self.indices, index_bits(self.m), count).view(self.out_features, groups, self.n)

    @property
    def weight(self) -> torch.Tensor:
        key = (self.values.data_ptr(), self.values._version, self.indices._version, self.values.dtype)
        return self._cached(key, self._dense)

    def _dense(self) -> torch.Tensor:
        positions = self.positions()
        grouped = self.values.new_zeros(*positions.shape[:2], self.m)
        values = self.values.view(positions.shape)
        return grouped.scatter(2, positions.to(self.values.device), values).view(self.out_features, -1)

    def fixed_mask(self) -> torch.Tensor:
        positions = self.positions()
        mask = torch.zeros(*positions.shape[:2], self.m, dtype=torch.bool, device=positions.device)
        return mask.scatter(2, positions, True).view(self.out_features, self.in_features)

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> NMSparseLinear | None:
        """The smallest N:M storage (M in ``GROUP_SIZES``, N the most non-zeros any group holds) when N < M."""
        weight = linear.weight.detach()
        best = None
        for m in GROUP_SIZES:
            if weight.shape[1] % m:
                continue
            n = int((weight != 0).view(weight.shape[0], -1, m).sum(-1).max())
            bits = n * (weight.element_size() * 8 + index_bits(m)) / m
            if 0 < n < m and (best is None or bits < best[0]):
                best = (bits, n, m)
        return None if best is None else cls.of(linear, best[1], best[2])

    @classmethod
    def of(cls, linear: nn.Linear, n: int, m: int) -> NMSparseLinear:
        """``linear`` stored n:m: in each group its n largest-magnitude weights (all of its non-zeros when it
        fits the pattern, so the layer is unchanged)."""
        weight = linear.weight.detach()
        rows, columns = weight.shape
        grouped = weight.reshape(rows, columns // m, m)
        positions = grouped.abs().topk(n, dim=-1).indices.sort(dim=-1).values
        layer = cls(columns, rows, n, m).to(weight.device, weight.dtype)
        with torch.no_grad():
            layer.values.copy_(grouped.gather(2, positions).flatten())
            layer.bias.copy_(linear.bias)
            layer.indices.copy_(pack_indices(positions, index_bits(m)))
        return layer.train(linear.training)
