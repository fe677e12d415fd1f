"""The `quantize` stage's settings, checked once when the recipe is parsed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nlpcompress.errors import ConfigError
from nlpcompress.quant.quantizers import CLIPS

METHODS = ("qbert", "uniform", "ptq")
ALLOCATIONS = ("hessian", "exact", "reverse")
GROUP_KINDS = ("head", "matrix", "channel")
MIN_BITS, MAX_BITS = 2, 8


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class QuantizationConfig:
    """Which bits each encoder layer gets, how its weights are grouped, and whether to train after.

    ``method``: ``qbert`` measures each layer's Hessian sensitivity Ω (Shen et al. 2020, §3.1) and
    gives bits by ``allocation`` (``hessian``: higher Ω, more bits, the paper's rule; ``exact``: the
    least Σ Ω·‖Q(W) − W‖² under the budget, HAWQ-V3's ILP; ``reverse``: the paper's reverse-order
    baseline) from ``candidate_bits`` with a parameter-weighted average of at most ``avg_bits``;
    ``uniform`` gives every layer ``avg_bits``; ``ptq`` is ``uniform`` without training (post-training
    quantization, the baseline QAT must beat). ``groups`` (§3.2): ``head`` = one range per attention
    head (rows of Q, K, V; columns of the attention output) and per FFN row, an integer k = each head
    split into k groups, ``matrix`` = one range per matrix, ``channel`` = one per output row of every
    matrix (the grid ONNX Runtime's and OpenVINO's int8 GEMMs compute with, so the export runs exactly the
    trained weights; ``head`` differs only in the attention output, grouped by input columns). ``embedding_bits`` quantizes the word
    embeddings per row (8 in the paper; null keeps them float); ``position_embedding_bits`` the position and
    token-type tables per row (Q-BERT's ablation of its modules, §4, gives word and position embeddings bits
    of their own; null keeps them float). ``head_bits`` quantizes the classification head's dense (pooler)
    matrix per output row, its input on an 8-bit grid like the encoder's (null keeps it float; the
    small output projection stays float). ``clip``: ranges from the largest
    |w| of a group or its ``percentile``. ``activation_bits: 8`` also fake-quantizes the input of every
    encoder linear to unsigned 8 bits (Q-BERT §4 quantizes activations to 8 bits): ranges start at the
    min and max over the first ``calibration_samples`` training rows and follow the training batches (an
    exponential moving average), and are stored with the packed weights, so the saved model and its int8
    export compute on the same grids. Whether to fine-tune with fake quantization (straight-through
    estimator) is the stage's ``recovery``.
    """

    method: str = "qbert"
    avg_bits: float = 4
    candidate_bits: list[int] = field(default_factory=lambda: [2, 3, 4, 8])
    allocation: str = "hessian"
    groups: str | int = "head"
    embedding_bits: int | None = 8
    position_embedding_bits: int | None = None
    head_bits: int | None = None
    clip: str = "minmax"
    percentile: float = 99.9
    hessian_samples: int = 64
    hessian_batch_size: int = 32
    hessian_iterations: int = 20
    hessian_tolerance: float = 1e-2
    hessian_trace: bool = False
    activation_bits: int | None = None
    calibration_samples: int = 256

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("method", self.method, f"allowed: {', '.join(METHODS)}")
        self._check_bits()
        if self.allocation not in ALLOCATIONS:
            raise ConfigError("allocation", self.allocation, f"allowed: {', '.join(ALLOCATIONS)}")
        if self.groups not in GROUP_KINDS and not (_whole(self.groups) and self.groups >= 1):
            raise ConfigError(
                "groups", self.groups, "allowed: head, matrix, channel, or a number of groups per head (>= 1)"
            )
        if self.clip not in CLIPS:
            raise ConfigError("clip", self.clip, f"allowed: {', '.join(CLIPS)}")
        if not (isinstance(self.percentile, int | float) and 50 < self.percentile <= 100):
            raise ConfigError("percentile", self.percentile, "must be in (50, 100]")
        if self.activation_bits not in (None, 8):
            raise ConfigError("activation_bits", self.activation_bits, "allowed: 8, or null (float inputs)")
        for name in ("hessian_samples", "hessian_batch_size", "hessian_iterations", "calibration_samples"):
            if not (_whole(getattr(self, name)) and getattr(self, name) >= 1):
                raise ConfigError(name, getattr(self, name), "must be a whole number >= 1")
        if not (isinstance(self.hessian_tolerance, int | float) and self.hessian_tolerance > 0):
            raise ConfigError("hessian_tolerance", self.hessian_tolerance, "must be > 0")

    def _check_bits(self) -> None:
        bits = self.candidate_bits
        if not (
            isinstance(bits, list) and bits and all(_whole(b) and MIN_BITS <= b <= MAX_BITS for b in bits)
        ):
            raise ConfigError("candidate_bits", bits, f"a list of bit widths in {MIN_BITS}..{MAX_BITS}")
        self.candidate_bits = sorted(set(bits))
        if not isinstance(self.avg_bits, int | float) or isinstance(self.avg_bits, bool):
            raise ConfigError("avg_bits", self.avg_bits, "must be a number of bits")
        if self.method == "qbert":
            low, high = self.candidate_bits[0], self.candidate_bits[-1]
            if not low <= self.avg_bits <= high:
                raise ConfigError(
                    "avg_bits", self.avg_bits, f"outside the candidate range {low}..{high} ({bits})"
                )
        elif not (float(self.avg_bits).is_integer() and MIN_BITS <= self.avg_bits <= MAX_BITS):
            raise ConfigError(
                "avg_bits",
                self.avg_bits,
                f"method {self.method} gives every layer the same bits: a whole number in {MIN_BITS}..{MAX_BITS}",
            )
        for key in ("embedding_bits", "position_embedding_bits", "head_bits"):
            bits = getattr(self, key)
            if bits is not None and not (_whole(bits) and MIN_BITS <= bits <= MAX_BITS):
                raise ConfigError(key, bits, f"a bit width in {MIN_BITS}..{MAX_BITS}, or null")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
