"""What a head-pruning run does: target, strategy, score and the rules of selection, checked once."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nlpcompress.errors import ConfigError
from nlpcompress.pruning.heads import SCORES

STRATEGIES = ("oneshot", "iterative", "random")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def resolve_target(name: str, target: float | int, total: int, noun: str) -> int:
    """How many units a ``target`` means out of ``total``: a fraction in (0, 1) rounded, or a count."""
    if _is_int(target):
        if target > total:
            raise ConfigError(name, target, f"exceeds the {total} {noun} of the model")
        return int(target)
    return round(target * total)


@dataclass
class HeadPruningConfig:
    """Michel et al. (2019) head pruning: prune ``target`` heads ranked across layers by ``score``.

    ``target``: a fraction in (0, 1) of the heads, or an int count. ``strategy``: ``oneshot`` prunes at
    once; ``iterative`` prunes ``step_fraction`` of the live heads, re-scores and repeats (§4.2) until
    the target or until the metric falls below ``metric_floor`` × its value before pruning;
    ``random`` is the baseline with the same budget and rules. ``score``: ``gradient`` (§4.1) or
    ``entropy``. ``normalize``: per-layer L2 normalisation of the scores. Every layer keeps
    ``keep_per_layer`` heads unless ``allow_empty_layers``. Scores use the first ``score_samples``
    training rows. ``seed``: of the random baseline (None: the run's).
    ``neurons``: FFN neurons to prune as well (a fraction of all of them, or a count), each gated and
    scored like a head by E_x |∂L/∂ξ| and ranked across layers (one-shot and random strategies).
    """

    target: float | int = 0.5
    strategy: str = "oneshot"
    score: str = "gradient"
    normalize: bool = True
    step_fraction: float = 0.1
    metric_floor: float | None = None
    score_samples: int = 512
    score_batch_size: int = 32
    allow_empty_layers: bool = False
    keep_per_layer: int = 1
    seed: int | None = None
    neurons: float | int | None = None

    def __post_init__(self) -> None:
        if _is_int(self.target):
            if self.target < 0:
                raise ConfigError("target", self.target, "a count of heads must be >= 0")
        elif not (_is_number(self.target) and 0 < self.target < 1):
            raise ConfigError(
                "target", self.target, "must be a fraction in (0, 1), or a whole number of heads"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", self.strategy, f"allowed: {', '.join(STRATEGIES)}")
        if self.score not in SCORES:
            raise ConfigError("score", self.score, f"allowed: {', '.join(SCORES)}")
        if not (_is_number(self.step_fraction) and 0 < self.step_fraction <= 1):
            raise ConfigError("step_fraction", self.step_fraction, "must be a fraction in (0, 1]")
        if self.metric_floor is not None:
            if not (_is_number(self.metric_floor) and 0 < self.metric_floor <= 1):
                raise ConfigError(
                    "metric_floor",
                    self.metric_floor,
                    "must be a fraction in (0, 1] of the metric before pruning (e.g. 0.9), or null",
                )
            if self.strategy != "iterative":
                raise ConfigError("metric_floor", self.metric_floor, "applies to strategy 'iterative' only")
        for name in ("score_samples", "score_batch_size"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(name, getattr(self, name), "must be a positive integer")
        if not (_is_int(self.keep_per_layer) and self.keep_per_layer >= 0):
            raise ConfigError("keep_per_layer", self.keep_per_layer, "must be an integer >= 0")
        if self.keep_per_layer == 0 and not self.allow_empty_layers:
            raise ConfigError(
                "keep_per_layer",
                0,
                "0 lets layers lose every head; set allow_empty_layers: true to allow that",
            )
        if self.neurons is not None:
            if not (_is_int(self.neurons) and self.neurons >= 0) and not (
                _is_number(self.neurons) and not _is_int(self.neurons) and 0 < self.neurons < 1
            ):
                raise ConfigError(
                    "neurons", self.neurons, "must be a fraction in (0, 1), a count >= 0, or null"
                )
            if self.strategy == "iterative":
                raise ConfigError("neurons", self.neurons, "applies to strategies oneshot and random")
        if self.seed is not None and not (_is_int(self.seed) and self.seed >= 0):
            raise ConfigError("seed", self.seed, "must be an integer >= 0 or null (the run's seed)")

    @property
    def min_keep(self) -> int:
        """Heads every layer keeps."""
        return 0 if self.allow_empty_layers else self.keep_per_layer

    def target_count(self, counts: list[int]) -> int:
        """The number of heads to prune on a model with ``counts`` heads per layer; ConfigError if unreachable."""
        total = sum(counts)
        count = resolve_target("target", self.target, total, "heads")
        possible = sum(max(0, alive - self.min_keep) for alive in counts)
        if count > possible:
            raise ConfigError(
                "target",
                self.target,
                f"means {count} heads, but only {possible} of {total} can go while every layer keeps "
                f"{self.min_keep} (set allow_empty_layers: true or lower the target)",
            )
        return count

    def neuron_count(self, widths: list[int]) -> int:
        """The number of FFN neurons to prune on a model with ``widths`` neurons per layer (0 without ``neurons``)."""
        if self.neurons is None:
            return 0
        total = sum(widths)
        count = resolve_target("neurons", self.neurons, total, "FFN neurons")
        possible = sum(max(0, width - self.min_keep) for width in widths)
        if count > possible:
            raise ConfigError(
                "neurons", self.neurons, f"means {count} neurons, but only {possible} of {total} can go"
            )
        return count

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
