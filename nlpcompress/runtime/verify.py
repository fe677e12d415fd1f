"""Does an exported model compute what the PyTorch model computes? fp32: the same logits within
``FP32_TOLERANCE``; int8: the same predicted labels on at least ``INT8_MIN_AGREEMENT`` of the examples
(regression: scores within ``INT8_REGRESSION_TOLERANCE``)."""

import numpy as np

from nlpcompress.errors import UserError

FP32_TOLERANCE = 1e-3
INT8_MIN_AGREEMENT = 0.95
INT8_REGRESSION_TOLERANCE = 0.25  # score units: 5% of STS-B's 0-5 scale


def compare(
    reference: np.ndarray, exported: np.ndarray, int8: bool, what: str, source: str
) -> dict[str, float]:
    """The verification record of ``exported`` logits against the ``reference`` ones; a UserError naming the
    file, the inputs and the failed criterion when they disagree."""
    diff = float(np.abs(reference - exported).max())
    record: dict[str, float] = {"max_abs_diff": diff}
    if not int8:
        failed = diff > FP32_TOLERANCE and f"max |logit difference| {diff:.3g} > {FP32_TOLERANCE}"
    elif reference.shape[1] == 1:
        failed = (
            diff > INT8_REGRESSION_TOLERANCE
            and f"max |score difference| {diff:.3g} > {INT8_REGRESSION_TOLERANCE}"
        )
    else:
        agreement = float((reference.argmax(axis=1) == exported.argmax(axis=1)).mean())
        record["label_agreement"] = agreement
        failed = (
            agreement < INT8_MIN_AGREEMENT and f"labels agree on {agreement:.1%} < {INT8_MIN_AGREEMENT:.0%}"
        )
    if failed:
        raise UserError(
            f"export refused: {what} does not match the PyTorch model on {source} ({failed}); nothing was written"
        )
    return record
