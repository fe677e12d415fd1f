"""What a movement-pruning run does: method, target, granularity, schedule, scores, distillation; checked once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from nlpcompress.errors import ConfigError

METHODS = ("magnitude", "movement", "soft_movement")
SCOPES = ("local", "global")
ATTENTION_GRANULARITY = ("weight", "block", "head")
FFN_GRANULARITY = ("weight", "block", "neuron")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class MovementConfig:
    """Movement pruning (Sanh et al. 2020) of the encoder's linears, and its magnitude baseline.

    ``method``: ``magnitude`` (TopK on |W|), ``movement`` (hard: TopK on learned scores S, §4) or
    ``soft_movement`` (sigmoid(S) > τ with λ · mean sigmoid(S) added to the loss, §4).
    ``sparsity``: the fraction of the pruned weights removed at the end (TopK methods; soft movement's
    sparsity follows from ``threshold`` and ``lambda_l1``). ``scope``: ``local`` (each matrix, or each
    layer's heads / neurons, keeps the same fraction) or ``global`` (one ranking over the encoder;
    heads and neurons each ranked among their kind). Granularity: ``attention`` ``weight | block | head``
    (a head: its Q, K, V rows and output-projection columns together), ``ffn`` ``weight | block | neuron``
    (a neuron: its intermediate row and output column together), ``block_shape`` rows × columns.
    Schedule (§5, cubic): dense for ``warmup_fraction`` of the steps, at the target for the last
    ``cooldown_fraction``; soft movement ramps τ from ``initial_threshold`` to ``threshold`` and λ with
    it (λ_t = ``lambda_l1`` · τ_t / τ). Scores start at 0 and train at ``scores_learning_rate``.
    The stage's ``recovery`` is the training the masks are learned in (the task loss, or distillation).
    """

    method: str = "movement"
    sparsity: float | None = None
    scope: str = "local"
    attention: str = "weight"
    ffn: str = "weight"
    block_shape: list[int] | None = None
    warmup_fraction: float = 0.1
    cooldown_fraction: float = 0.2
    scores_learning_rate: float = 1e-2
    initial_threshold: float = 0.0
    threshold: float = 0.1
    lambda_l1: float = 1.0

    def __post_init__(self) -> None:
        self._check_choice("method", METHODS)
        self._check_choice("scope", SCOPES)
        self._check_choice("attention", ATTENTION_GRANULARITY)
        self._check_choice("ffn", FFN_GRANULARITY)
        if self.method == "soft_movement":
            if self.sparsity is not None:
                raise ConfigError(
                    "sparsity",
                    self.sparsity,
                    "soft movement's sparsity follows from threshold and lambda_l1; leave it out",
                )
        elif not (_number(self.sparsity) and 0 <= self.sparsity < 1):
            raise ConfigError(
                "sparsity", self.sparsity, f"{self.method} needs a fraction of weights to remove in [0, 1)"
            )
        blocks = "block" in (self.attention, self.ffn)
        if blocks and not (
            isinstance(self.block_shape, list)
            and len(self.block_shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.block_shape)
        ):
            raise ConfigError(
                "block_shape",
                self.block_shape,
                "block granularity needs [rows, columns], two positive integers",
            )
        if not blocks and self.block_shape is not None:
            raise ConfigError(
                "block_shape", self.block_shape, "applies to attention: block or ffn: block only"
            )
        for name in ("warmup_fraction", "cooldown_fraction"):
            if not (_number(getattr(self, name)) and 0 <= getattr(self, name) < 1):
                raise ConfigError(
                    name, getattr(self, name), "must be a fraction of the training steps in [0, 1)"
                )
        if self.warmup_fraction + self.cooldown_fraction >= 1:
            raise ConfigError(
                "cooldown_fraction",
                self.cooldown_fraction,
                "warmup_fraction + cooldown_fraction must be below 1",
            )
        if not (_number(self.scores_learning_rate) and self.scores_learning_rate > 0):
            raise ConfigError("scores_learning_rate", self.scores_learning_rate, "must be > 0")
        if not (_number(self.threshold) and 0 < self.threshold < 1):
            raise ConfigError("threshold", self.threshold, "τ on sigmoid(S) must be in (0, 1)")
        if not (_number(self.initial_threshold) and 0 <= self.initial_threshold <= self.threshold):
            raise ConfigError("initial_threshold", self.initial_threshold, "must be in [0, threshold]")
        if not (_number(self.lambda_l1) and self.lambda_l1 >= 0):
            raise ConfigError("lambda_l1", self.lambda_l1, "must be >= 0")
        if self.method != "soft_movement":
            for name in ("initial_threshold", "threshold", "lambda_l1"):
                if getattr(self, name) != getattr(MovementConfig, name):
                    raise ConfigError(name, getattr(self, name), "applies to method soft_movement only")
        if self.method == "soft_movement" and self.scope != "local":
            raise ConfigError(
                "scope", self.scope, "soft movement thresholds every score alike; scope applies to TopK"
            )

    def _check_choice(self, name: str, allowed: tuple[str, ...]) -> None:
        if getattr(self, name) not in allowed:
            raise ConfigError(name, getattr(self, name), f"allowed: {', '.join(allowed)}")

    @property
    def score_to_prune(self) -> float:
        """How far a score must fall from its start at 0 before soft movement drops its weight: −logit(τ)."""
        return math.log((1.0 - self.threshold) / self.threshold)

    @property
    def uses_scores(self) -> bool:
        """Learned scores (movement, soft movement); magnitude ranks |W| instead."""
        return self.method != "magnitude"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
