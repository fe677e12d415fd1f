"""N:M semi-structured sparsity (2:4 by default): the kept n of every m weights chosen by magnitude or by
movement scores; stored by the compact model's ``n_m`` storage kind."""

from nlpcompress.nm.config import NMConfig
from nlpcompress.nm.core import SCORES, NMScores, attach_nm, freeze_scores, nm_linears, nm_mask

__all__ = ["SCORES", "NMConfig", "NMScores", "attach_nm", "freeze_scores", "nm_linears", "nm_mask"]
