"""How an encoder linear is stored: one small class per storage kind, and one table of them.

A linear of the compact model is a plain ``nn.Linear`` (the ``dense`` kind), or a :class:`StoredLinear`
subclass registered in ``STORAGE_KINDS`` under its ``kind``: the config names it in
``stored_linears[name] = {"kind": kind, **spec}`` and the modeling file builds it from that entry. Every
kind gives its dense view (``weight``), the weights it stores, its init, a dense copy, and (optionally)
how to store a trained dense linear exactly in fewer bytes. Everything that measures, describes,
exports or finalizes a model asks these methods; nothing lists the kinds.

Self-contained (imports only torch): it is copied into a saved model folder beside the modeling file.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

DENSE = "dense"


class StoredLinear(nn.Module):
    """An encoder linear stored in another form than one float matrix; subclasses register a ``kind``.

    ``state``: what a model holding one is (``structure.STATES``: the stage contracts read it).
    ``traced_as_is``: exports keep the module's own arithmetic (two factors stay two matmuls); otherwise the
    graph holds its dense view. ``structured``: its zeros follow a pattern a runtime can exploit, so it wins
    over an unstructured kind that stores the same matrix in as many bytes.
    """

    kind: ClassVar[str] = ""
    state: ClassVar[str] = ""
    traced_as_is: ClassVar[bool] = False
    structured: ClassVar[bool] = False
    in_features: int
    out_features: int
    bias: nn.Parameter

    def spec(self) -> dict[str, int]:
        """The config entry's fields besides ``kind``: what the constructor needs to rebuild the layer."""
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) matrix the layer computes with."""
        raise NotImplementedError

    def stored_elements(self) -> int:
        """How many weights the layer holds (its parameter count, bias excluded)."""
        raise NotImplementedError

    def stored_bytes(self) -> int:
        """Bytes of its stored weights and their index or scale data (bias excluded)."""
        return sum(t.numel() * t.element_size() for n, t in self.state_dict().items() if n != "bias")

    def nonzero_elements(self) -> int:
        """How many of the weights it holds are not zero."""
        return int(torch.count_nonzero(self.weight))

    def trainable_weights(self) -> list[nn.Parameter]:
        """The stored weight parameters a gradient reaches, before any parametrization (none for integer codes)."""
        return []

    def fixed_mask(self) -> torch.Tensor | None:
        """The (out, in) pattern of weights it can hold, for a dense copy that must keep its zeros."""
        return None

    def init_weights(self, init: Any, std: float) -> None:
        """Initialise a freshly built layer with ``init`` (``transformers.initialization``, which leaves loaded
        tensors alone): float weights normal with ``std``, the bias zero."""
        init.zeros_(self.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight, self.bias)

    def to_dense(self) -> nn.Linear:
        """A plain linear computing the same function, on the same device and dtype, in the same mode."""
        weight = self.weight.detach()
        linear = nn.Linear(self.in_features, self.out_features).to(weight.device, weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(self.bias)
        return linear.train(self.training)

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> StoredLinear | None:
        """``linear`` stored exactly in this kind, or None when it cannot be (or the kind is made elsewhere)."""
        return None


STORAGE_KINDS: dict[str, type[StoredLinear]] = {}


def register_storage(kind_class: type[StoredLinear]) -> type[StoredLinear]:
    """Add ``kind_class`` to ``STORAGE_KINDS`` under its ``kind``; usable as a decorator."""
    if not kind_class.kind or kind_class.kind == DENSE or not kind_class.state:
        raise TypeError(
            f"{kind_class.__name__} needs a kind other than {DENSE!r} and the state it gives a model"
        )
    if STORAGE_KINDS.get(kind_class.kind, kind_class) is not kind_class:
        raise ValueError(f"storage kind {kind_class.kind!r} is already registered")
    STORAGE_KINDS[kind_class.kind] = kind_class
    return kind_class


def build_linear(entry: dict[str, Any] | None, in_features: int, out_features: int) -> nn.Module:
    """The linear a ``stored_linears`` entry describes (None: dense; an empty one without init warning)."""
    if entry is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            return nn.Linear(in_features, out_features)
    fields = dict(entry)
    kind = fields.pop("kind")
    if kind not in STORAGE_KINDS:
        raise ValueError(f"storage kind {kind!r} is unknown; known: {', '.join(STORAGE_KINDS)}")
    kind_class = STORAGE_KINDS[kind]
    try:
        return kind_class(in_features, out_features, **fields)
    except TypeError:
        needs = [
            p for p in inspect.signature(kind_class).parameters if p not in ("in_features", "out_features")
        ]
        raise ValueError(f"stored_linears entry {entry}: kind {kind!r} needs {', '.join(needs)}") from None


def kind_of(linear: nn.Module) -> str:
    return linear.kind if isinstance(linear, StoredLinear) else DENSE


def storage_entry(linear: nn.Module) -> dict[str, Any] | None:
    """The ``stored_linears`` entry of a built linear (None for a dense one)."""
    return {"kind": linear.kind, **linear.spec()} if isinstance(linear, StoredLinear) else None


def set_linear(model: nn.Module, name: str, block: nn.Module, attribute: str, linear: nn.Module) -> None:
    """Put ``linear`` at ``block.<attribute>`` (the encoder linear ``name``) and record how it is stored."""
    setattr(block, attribute, linear)
    entry = storage_entry(linear)
    if entry is None:
        model.config.stored_linears.pop(name, None)
    else:
        model.config.stored_linears[name] = entry


def weight_bits(linear: nn.Module) -> int:
    """Bits per stored weight: a packed kind's code width, otherwise its float width."""
    bits = getattr(linear, "bits", None) if isinstance(linear, StoredLinear) else None
    return int(bits) if bits is not None else linear.weight.element_size() * 8


def _leaf(linear: nn.Linear) -> nn.Parameter:
    """A linear's weight parameter before any parametrization."""
    if torch.nn.utils.parametrize.is_parametrized(linear, "weight"):
        return linear.parametrizations.weight.original
    return linear.weight


def smallest_storage(linear: nn.Module, budget_bytes: float) -> StoredLinear | None:
    """The registered kind that stores dense ``linear`` exactly in the fewest bytes, at most ``budget_bytes``
    (a structured kind wins a tie); None when none does."""
    candidates = [kind.from_dense(linear) for kind in STORAGE_KINDS.values()]
    fitting = [c for c in candidates if c is not None and c.stored_bytes() <= budget_bytes]
    return min(fitting, key=lambda c: (c.stored_bytes(), not c.structured), default=None)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as flat bytes, bit i of byte j holding element 8·j + i (row-major)."""
    flat = mask.flatten()
    padded = torch.zeros((flat.numel() + 7) // 8 * 8, dtype=torch.uint8, device=flat.device)
    padded[: flat.numel()] = flat.to(torch.uint8)
    shifts = torch.arange(8, device=flat.device, dtype=torch.uint8)
    return (padded.view(-1, 8) << shifts).sum(1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The boolean (rows, cols) mask ``pack_mask`` stored."""
    bits = (packed[:, None] >> torch.arange(8, device=packed.device)) & 1
    return bits.flatten()[: shape[0] * shape[1]].bool().view(shape)


class KeptValues:
    """Mixin of the kinds that store their kept weights as one flat ``values`` parameter (plus where they go):
    they count, train and initialise those values, and rebuild the dense view only when they change and
    no gradient is needed."""

    values: nn.Parameter
    bias: nn.Parameter
    _cache: tuple[tuple, torch.Tensor] | None = None

    def _cached(self, key: tuple, build) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == key and not torch.is_grad_enabled():
            return self._cache[1]
        dense = build()
        self._cache = (key, dense.detach()) if not torch.is_grad_enabled() else None
        return dense

    def stored_elements(self) -> int:
        return self.values.numel()

    def nonzero_elements(self) -> int:
        return int(torch.count_nonzero(self.values))

    def trainable_weights(self) -> list[nn.Parameter]:
        return [self.values]

    def init_weights(self, init: Any, std: float) -> None:
        init.normal_(self.values, mean=0.0, std=std)
        init.zeros_(self.bias)


@register_storage
class SparseLinear(KeptValues, StoredLinear):
    """Stored as a bitmask of its non-zero weights and their values (row-major order).

    The file shrinks with the density (32 + 1 bits per kept weight, 1 bit per pruned one). Training
    updates ``values``; the zeros stay zeros.
    """

    kind = "sparse"
    state = "sparse-stored"

    def __init__(self, in_features: int, out_features: int, nonzeros: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.values = nn.Parameter(torch.empty(nonzeros))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.register_buffer("bitmask", torch.zeros((in_features * out_features + 7) // 8, dtype=torch.uint8))

    def spec(self) -> dict[str, int]:
        return {"nonzeros": self.values.numel()}

    def mask(self) -> torch.Tensor:
        """The (out, in) boolean mask of stored weights (bit i of byte j is weight 8·j + i)."""
        return unpack_mask(self.bitmask, (self.out_features, self.in_features))

    @property
    def weight(self) -> torch.Tensor:
        key = (self.values.data_ptr(), self.values._version, self.bitmask._version, self.values.dtype)
        return self._cached(
            key,
            lambda: self.values.new_zeros(self.out_features, self.in_features).masked_scatter(
                self.mask(), self.values
            ),
        )

    def fixed_mask(self) -> torch.Tensor:
        return self.mask()

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> SparseLinear | None:
        weight = linear.weight.detach()
        mask = weight != 0
        sparse = cls(linear.in_features, linear.out_features, int(mask.sum())).to(weight.device, weight.dtype)
        with torch.no_grad():
            sparse.values.copy_(weight[mask])
            sparse.bias.copy_(linear.bias)
            sparse.bitmask.copy_(pack_mask(mask))
        return sparse.train(linear.training)


@register_storage
class LowRankLinear(StoredLinear):
    """Stored as two factors, ``up(down(x))``: (in + out) · rank weights instead of in · out.

    ``weight`` is their product (out × in), for code that reads a linear's matrix.
    """

    kind = "low_rank"
    state = "factorized"
    traced_as_is = True

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features)

    def spec(self) -> dict[str, int]:
        return {"rank": self.rank}

    @property
    def weight(self) -> torch.Tensor:
        return self.up.weight @ self.down.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.up.bias

    def stored_elements(self) -> int:
        return self.down.weight.numel() + self.up.weight.numel()

    def nonzero_elements(self) -> int:
        return int(torch.count_nonzero(self.down.weight)) + int(torch.count_nonzero(self.up.weight))

    def trainable_weights(self) -> list[nn.Parameter]:
        return [_leaf(self.down), _leaf(self.up)]

    def init_weights(self, init: Any, std: float) -> None:
        """Nothing: its two factors are initialised as the linears they are."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(hidden))
