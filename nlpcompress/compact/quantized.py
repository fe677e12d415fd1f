"""Packed storage of group-wise quantized weights (Q-BERT, Shen et al. 2020, §3.2 group-wise quantization).

A quantized matrix is kept as signed symmetric integer codes, densely bit-packed (``bits`` bits per
weight, any width 1..8), plus one float scale per group of consecutive rows or columns; the weight is
``code · scale of its group``. A linear may also carry the 8-bit grid of its input (``input_bits``: scale
and zero point, learned in quantization-aware training or calibrated): it then computes on its input
rounded to that grid, as an int8 runtime does. Self-contained (imports only torch and its sibling ``storage``): it is copied into a saved model
folder beside the modeling file, which imports it relatively, so the folder loads with
``trust_remote_code=True`` where nlpcompress is not installed.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .storage import StoredLinear, register_storage


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits {bits}: packed codes take 1..8 bits")


def _shifts(count: int, step: int, device: torch.device) -> torch.Tensor:
    return torch.arange(count, dtype=torch.int64, device=device) * step


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes in ±(2**(bits-1) - 1), any shape, as a flat uint8 little-endian bit stream.

    Code ``k`` (row-major) is stored offset to unsigned (``code + 2**(bits-1)``) in stream bits
    ``k·bits .. k·bits + bits - 1``, least significant first; bit ``i`` of byte ``j`` is stream bit
    ``8·j + i``. The result has ``ceil(numel · bits / 8)`` bytes. Works on blocks of 8 codes, which
    fill exactly ``bits`` bytes (one int64 word).
    """
    _check_bits(bits)
    count = codes.numel()
    unsigned = codes.flatten().to(torch.int64) + 2 ** (bits - 1)
    blocks = F.pad(unsigned, (0, -count % 8)).view(-1, 8)
    words = (blocks << _shifts(8, bits, codes.device)).sum(dim=1)  # disjoint bit ranges: sum = or
    stream = (words[:, None] >> _shifts(bits, 8, codes.device)) & 0xFF
    return stream.flatten()[: -(-count * bits // 8)].to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The ``count`` signed int8 codes ``pack_bits(codes, bits)`` stored in ``packed`` (flat)."""
    _check_bits(bits)
    stream = F.pad(packed.to(torch.int64), (0, -packed.numel() % bits)).view(-1, bits)
    words = (stream << _shifts(bits, 8, packed.device)).sum(dim=1)
    unsigned = (words[:, None] >> _shifts(8, bits, packed.device)) & (2**bits - 1)
    return (unsigned.flatten()[:count] - 2 ** (bits - 1)).to(torch.int8)


def expand_scales(
    scales: torch.Tensor, group_dim: int, group_size: int, shape: tuple[int, int]
) -> torch.Tensor:
    """The per-group ``scales`` broadcastable to a (out, in) matrix of ``shape``: group ``g`` covers indices
    ``g·group_size .. (g+1)·group_size - 1`` along ``group_dim`` (0 = rows, 1 = columns)."""
    if shape[group_dim] != scales.numel() * group_size:
        raise ValueError(
            f"{scales.numel()} groups of {group_size} do not cover dimension {group_dim} of shape {tuple(shape)}"
        )
    per_index = scales.repeat_interleave(group_size)
    return per_index[:, None] if group_dim == 0 else per_index[None, :]


INPUT_QMAX = 255  # inputs: unsigned 8 bits, as ONNX Runtime's static int8 activations


def fake_quantize_input(hidden: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``hidden`` rounded to the unsigned 8-bit grid (``scale``, ``zero_point``) and dequantized: what an
    int8 runtime's QuantizeLinear/DequantizeLinear make of it (round half to even, as ONNX). The gradient
    passes straight through (the straight-through estimator), so training through it still works."""
    codes = torch.clamp(torch.round(hidden / scale) + zero_point, 0, INPUT_QMAX)
    return hidden + ((codes - zero_point) * scale - hidden).detach()


def dequantize(
    codes: torch.Tensor, scales: torch.Tensor, group_dim: int, group_size: int, shape: tuple[int, int]
) -> torch.Tensor:
    """The (out, in) weight ``codes · scale of its group``, in the dtype of ``scales``."""
    scale = expand_scales(scales, group_dim, group_size, shape)
    return codes.reshape(shape).to(scales.dtype) * scale


class _Packed(nn.Module):
    """A (rows, cols) matrix stored as packed codes and one scale per group, rebuilt (and cached) on access.

    The rebuilt matrix depends only on the two buffers, through which no gradient flows, so it is cached
    until either buffer changes, moves or is cast.
    """

    def __init__(self, shape: tuple[int, int], bits: int, group_dim: int, group_size: int):
        super().__init__()
        _check_bits(bits)
        if group_dim not in (0, 1) or group_size < 1:
            raise ValueError(f"group_dim {group_dim}, group_size {group_size}: need 0 or 1, and a size >= 1")
        self.bits, self.group_dim, self.group_size = bits, group_dim, group_size
        self.shape = shape
        groups = shape[group_dim] // group_size
        # Zero scales: an unloaded matrix is all zeros whatever its codes.
        self.register_buffer("packed", torch.zeros(-(-shape[0] * shape[1] * bits // 8), dtype=torch.uint8))
        self.register_buffer("scales", torch.zeros(groups, dtype=torch.float32))
        expand_scales(self.scales, group_dim, group_size, shape)  # the groups must tile the dimension
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def load_codes(self, codes: torch.Tensor, scales: torch.Tensor) -> None:
        """Store ``codes`` (the matrix's shape) and ``scales`` (one per group)."""
        if tuple(codes.shape) != self.shape or scales.shape != self.scales.shape:
            raise ValueError(
                f"codes {tuple(codes.shape)} and scales {tuple(scales.shape)} do not fit "
                f"{self.shape} with {self.scales.numel()} groups"
            )
        with torch.no_grad():
            self.packed.copy_(pack_bits(codes, self.bits))
            self.scales.copy_(scales)

    def codes(self) -> torch.Tensor:
        """The stored int8 codes, shaped as the matrix."""
        return unpack_bits(self.packed, self.bits, self.shape[0] * self.shape[1]).view(self.shape)

    @property
    def weight(self) -> torch.Tensor:
        key = (
            self.packed.data_ptr(),
            self.packed._version,
            self.scales.data_ptr(),
            self.scales._version,
            self.scales.dtype,
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (
                key,
                dequantize(self.codes(), self.scales, self.group_dim, self.group_size, self.shape),
            )
        return self._cache[1]

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, bits={self.bits}, group_dim={self.group_dim}, group_size={self.group_size}"
        )


@register_storage
class QuantizedLinear(_Packed, StoredLinear):
    """A linear layer whose (out, in) weight is stored group-wise quantized and bit-packed; the bias stays float.

    A 4-bit matrix takes ``numel / 2`` bytes plus 4 per group instead of ``4 · numel``. It counts as the
    weights it packs; it is made by quantizing (``quant.qat.store_quantized``), never from a dense matrix.
    """

    kind = "quantized"
    state = "quantized"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_dim: int,
        group_size: int,
        input_bits: int | None = None,
    ):
        super().__init__((out_features, in_features), bits, group_dim, group_size)
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.input_bits: int | None = None
        if input_bits is not None:
            self.quantize_input(torch.tensor(1.0), torch.tensor(0.0), input_bits)

    def quantize_input(self, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8) -> None:
        """From now on compute on the input rounded to the unsigned ``bits``-bit grid (``scale``, integer
        ``zero_point``); stored with the weights (``input_scale``, ``input_zero_point``)."""
        if bits != 8:
            raise ValueError(f"input_bits {bits}: inputs are quantized to 8 bits")
        device = self.bias.device
        self.register_buffer("input_scale", scale.detach().to(device, torch.float32).reshape(()).clone())
        self.register_buffer(
            "input_zero_point", zero_point.detach().to(device, torch.float32).reshape(()).clone()
        )
        self.input_bits = bits

    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor,
        bits: int,
        group_dim: int,
        group_size: int,
    ) -> "QuantizedLinear":
        """The layer storing (out, in) ``codes`` with per-group ``scales`` and ``bias`` (finalizing a
        quantized linear), on the device of ``codes``."""
        out_features, in_features = codes.shape
        layer = cls(in_features, out_features, bits, group_dim, group_size).to(codes.device)
        layer.load_codes(codes, scales)
        with torch.no_grad():
            layer.bias.copy_(bias)
        return layer

    def spec(self) -> dict[str, int]:
        spec = {"bits": self.bits, "group_dim": self.group_dim, "group_size": self.group_size}
        return spec | ({"input_bits": self.input_bits} if self.input_bits is not None else {})

    def stored_elements(self) -> int:
        return self.shape[0] * self.shape[1]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.input_bits is not None:
            hidden = fake_quantize_input(hidden, self.input_scale, self.input_zero_point)
        return F.linear(hidden, self.weight, self.bias)


class QuantizedEmbedding(_Packed):
    """Word embeddings stored quantized and bit-packed with one scale per token (row)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, padding_idx: int | None = None):
        super().__init__((num_embeddings, embedding_dim), bits, group_dim=0, group_size=1)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx

    @classmethod
    def from_codes(
        cls, codes: torch.Tensor, scales: torch.Tensor, bits: int, padding_idx: int | None = None
    ) -> "QuantizedEmbedding":
        """The embedding storing (vocab, dim) ``codes`` with one scale per row, on the device of ``codes``."""
        layer = cls(codes.shape[0], codes.shape[1], bits, padding_idx).to(codes.device)
        layer.load_codes(codes, scales)
        return layer

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight, self.padding_idx)
