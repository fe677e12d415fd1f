"""Q-BERT quantization (Shen et al. 2020): group-wise symmetric weight quantization.

``quantizers`` is the pure core (group layouts per Q-BERT §3.2, scales, codes, fake quantization with a
straight-through estimator, the ``FakeQuantize`` transform); the packed storage the finalized model
uses lives in ``nlpcompress.compact.quantized``.
"""

from nlpcompress.quant.quantizers import (
    CLIPS,
    FakeQuantize,
    GroupLayout,
    fake_quantize,
    layout_for,
    quantize_codes,
    symmetric_scales,
)

__all__ = [
    "CLIPS",
    "FakeQuantize",
    "GroupLayout",
    "fake_quantize",
    "layout_for",
    "quantize_codes",
    "symmetric_scales",
]
