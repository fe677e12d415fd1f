"""The settings of N:M semi-structured sparsity, checked once."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nlpcompress.errors import ConfigError
from nlpcompress.nm.core import SCORES


@dataclass
class NMConfig:
    """Keep ``n`` of every ``m`` consecutive input weights of each row (2:4 by default).

    ``score``: ``magnitude`` (the largest |W| of each group, fixed, then recovery) or ``movement`` (learned
    scores that start at |W| and move during recovery, at ``scores_learning_rate``). ``include``: a regex
    the linear's name (``layers.<i>.<attention|ffn>.<query|key|value|output|intermediate>``) fully
    matches; linears whose inputs do not split into groups of ``m`` stay dense. The stage's
    ``recovery`` trains afterwards (movement scores need it).
    """

    n: int = 2
    m: int = 4
    score: str = "magnitude"
    include: str = ".*"
    scores_learning_rate: float = 1e-2

    def __post_init__(self) -> None:
        for key in ("n", "m"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(key, value, "must be a whole number >= 1")
        if not self.n < self.m:
            raise ConfigError("n", self.n, f"must be below m ({self.m}): n of every m weights are kept")
        if self.score not in SCORES:
            raise ConfigError("score", self.score, f"allowed: {', '.join(SCORES)}")
        if not self.scores_learning_rate > 0:
            raise ConfigError("scores_learning_rate", self.scores_learning_rate, "must be > 0")
        try:
            re.compile(self.include)
        except (re.error, TypeError) as err:
            raise ConfigError("include", self.include, f"not a regular expression ({err})") from None
