"""Python-backend (CPU profile) wrapper: runs model.onnx beside this file in onnxruntime. Generated; do not edit."""

from hybridrec.serving_python import OnnxModel as TritonPythonModel  # noqa: F401
