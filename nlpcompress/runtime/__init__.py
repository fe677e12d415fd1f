"""A fast CPU runtime for saved classifiers: verified ONNX / OpenVINO exports (fp32 and int8) and the
predictors that run them (``torch``, ``torch-bf16``, ``onnxruntime``, ``onnxruntime-int8``, ``openvino``,
``openvino-int8``).

Exports live in the model folder: ``onnx/model.onnx`` (+ ``model_int8.onnx``) or ``openvino/model.xml``
(+ ``model_int8.xml``), each folder with an ``export.json`` that records how it was made and verified.
"""

from nlpcompress.runtime.backends import BACKENDS, Predictor, load_predictor
from nlpcompress.runtime.export import FORMATS, export_model

__all__ = ["BACKENDS", "FORMATS", "Predictor", "export_model", "load_predictor"]
