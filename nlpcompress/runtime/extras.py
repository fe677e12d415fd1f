"""Optional dependencies: imported on demand, a missing one is one line naming the pip command."""

import importlib
import importlib.util
from types import ModuleType

from nlpcompress.errors import UserError

EXTRAS = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "nncf": "openvino",
}


def require(module: str, purpose: str) -> ModuleType:
    """``import module``, or a UserError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f'{purpose} needs the Python package {module!r}: pip install "nlpcompress[{EXTRAS[module]}]"'
        ) from None


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None
